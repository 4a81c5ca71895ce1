// Small fetch helpers for the same-origin backend API.

async function parseBody(res) {
	if (res.status === 204) return null;
	const text = await res.text();
	if (!text) return null;
	try {
		return JSON.parse(text);
	} catch {
		return text;
	}
}

function errorMessage(res, body) {
	if (body && typeof body === 'object' && 'detail' in body) {
		const d = body.detail;
		return typeof d === 'string' ? d : JSON.stringify(d);
	}
	return `Request failed: ${res.status} ${res.statusText}`.trim();
}

/**
 * Perform a request and return the parsed JSON body.
 * Throws an Error with a readable message on network failure or non-2xx status.
 * @param {string} url
 * @param {RequestInit & { allowStatus?: number[] }} [options]
 */
export async function request(url, options = {}) {
	const { allowStatus = [], ...init } = options;
	let res;
	try {
		res = await fetch(url, {
			...init,
			headers: { Accept: 'application/json', ...(init.headers ?? {}) }
		});
	} catch (e) {
		throw new Error(`Network error: ${e instanceof Error ? e.message : String(e)}`);
	}
	const body = await parseBody(res);
	if (!res.ok && !allowStatus.includes(res.status)) {
		throw new Error(errorMessage(res, body));
	}
	return body;
}

export const listNotes = () => request('/api/notes');

/** @param {{title: string, body: string}} note */
export const createNote = (note) =>
	request('/api/notes', {
		method: 'POST',
		headers: { 'Content-Type': 'application/json' },
		body: JSON.stringify(note)
	});

/** @param {number} id */
export const deleteNote = (id) => request(`/api/notes/${id}`, { method: 'DELETE' });

/**
 * Start publishing a note (a durable workflow); a second call gets the same run.
 * @param {number} id
 */
export const publishNote = (id) => request(`/api/notes/${id}/publish`, { method: 'POST' });

/**
 * The note's publication run and its steps so far (status null: never published).
 * @param {number} id
 */
export const getPublication = (id) => request(`/api/notes/${id}/publication`);

export const getHello = () => request('/api/hello');

// 503 responses from the readiness endpoint still carry a JSON body.
export const getReady = () => request('/_api/ready', { allowStatus: [503] });

/** @param {string} value */
export function formatDate(value) {
	const d = new Date(value);
	return Number.isNaN(d.getTime()) ? value : d.toLocaleString();
}
