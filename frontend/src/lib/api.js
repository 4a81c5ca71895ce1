// Small fetch helpers for the same-origin backend API.

// The session lives in cookies (handlers/auth.py): the access and refresh tokens
// are HttpOnly, but this one scripts can read. Every POST, PUT, PATCH and DELETE
// echoes it in X-CSRF-Token, and its presence tells that a session may be there.
// Its name is [auth].cookie's (forge.toml) followed by "_csrf".
const CSRF_COOKIE = 'session_csrf';
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
// A 401 from these says nothing about an expired session: no refresh for them.
const NO_REFRESH = ['/api/auth/login', '/api/auth/register', '/api/auth/refresh', '/api/auth/logout'];

/** An API answer that was not 2xx: `status` is 0 for a network error. */
export class ApiError extends Error {
	/**
	 * @param {string} message
	 * @param {number} status
	 */
	constructor(message, status) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
	}
}

/** The CSRF cookie's value, '' when there is none (signed out). */
function csrfToken() {
	for (const part of document.cookie.split(';')) {
		const [name, ...value] = part.trim().split('=');
		if (name === CSRF_COOKIE) return value.join('=');
	}
	return '';
}

/** Whether the browser holds a session, as far as scripts can tell. */
export const hasSession = () => csrfToken() !== '';

/**
 * Headers for a request with `method`: the CSRF token on unsafe ones.
 * @param {string} method
 * @param {HeadersInit} [extra]
 */
function headersFor(method, extra = {}) {
	/** @type {Record<string, string>} */
	const headers = { Accept: 'application/json', ...Object.fromEntries(new Headers(extra)) };
	const csrf = csrfToken();
	if (csrf && UNSAFE.has(method)) headers['X-CSRF-Token'] = csrf;
	return headers;
}

async function parseBody(res) {
	// Read even an empty body: the request is over only then (a page that navigates
	// away right after a 204 would otherwise abort it).
	const text = await res.text();
	if (res.status === 204 || !text) return null;
	try {
		return JSON.parse(text);
	} catch {
		return text;
	}
}

function errorMessage(res, body) {
	if (body && typeof body === 'object' && 'detail' in body) {
		const d = body.detail;
		let message = typeof d === 'string' ? d : JSON.stringify(d);
		// A validation error names each field that failed: "password: Expected ...".
		if (Array.isArray(body.extra)) {
			const fields = body.extra
				.filter((e) => e && e.message)
				.map((e) => (e.key ? `${e.key}: ${e.message}` : e.message));
			if (fields.length) message += ` (${fields.join('; ')})`;
		}
		return message;
	}
	return `Request failed: ${res.status} ${res.statusText}`.trim();
}

/** @type {Promise<boolean> | null} */
let refreshing = null;

/**
 * New tokens for the session (one request, however many callers wait for it).
 * When they cannot be had, the session is over: logging out clears its cookies.
 * @returns {Promise<boolean>} whether the session goes on
 */
function refreshSession() {
	refreshing ??= (async () => {
		try {
			const res = await fetch('/api/auth/refresh', { method: 'POST', headers: headersFor('POST') });
			if (res.ok) return true;
			await fetch('/api/auth/logout', { method: 'POST', headers: headersFor('POST') });
		} catch {
			// Offline: the caller reports its own 401.
		}
		return false;
	})().finally(() => {
		refreshing = null;
	});
	return refreshing;
}

/**
 * Perform a request and return the parsed JSON body.
 * Throws an ApiError with a readable message on network failure or non-2xx status.
 * A 401 while signed in refreshes the session once and tries again.
 * @param {string} url
 * @param {RequestInit & { allowStatus?: number[], retry?: boolean }} [options]
 */
export async function request(url, options = {}) {
	const { allowStatus = [], retry = true, ...init } = options;
	const method = (init.method ?? 'GET').toUpperCase();
	let res;
	try {
		res = await fetch(url, { ...init, headers: headersFor(method, init.headers) });
	} catch (e) {
		throw new ApiError(`Network error: ${e instanceof Error ? e.message : String(e)}`, 0);
	}
	if (res.status === 401 && retry && hasSession() && !NO_REFRESH.includes(url)) {
		// The refresh rotates the CSRF cookie too: the retry reads it anew.
		if (await refreshSession()) return request(url, { ...options, retry: false });
	}
	const body = await parseBody(res);
	if (!res.ok && !allowStatus.includes(res.status)) {
		throw new ApiError(errorMessage(res, body), res.status);
	}
	return body;
}

/** @typedef {{id: number, email: string, roles: string[]}} Account */

/**
 * The signed-in account, or null when signed out (then no request is made at all).
 * @returns {Promise<Account | null>}
 */
export async function getMe() {
	if (!hasSession()) return null;
	try {
		return await request('/api/auth/me');
	} catch (e) {
		if (e instanceof ApiError && e.status === 401) return null;
		throw e;
	}
}

/**
 * POST `data` as JSON.
 * @param {string} url
 * @param {unknown} data
 */
const postJson = (url, data) =>
	request(url, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json' },
		body: JSON.stringify(data)
	});

/**
 * Sign in: the session's cookies are set by the answer.
 * @param {{email: string, password: string}} credentials
 * @returns {Promise<Account>}
 */
export const login = (credentials) => postJson('/api/auth/login', credentials);

/**
 * Create an account (it is not signed in yet: `login` next).
 * @param {{email: string, password: string}} credentials
 * @returns {Promise<Account>}
 */
export const register = (credentials) => postJson('/api/auth/register', credentials);

/** Sign out: the answer clears the session's cookies. */
export const logout = () => request('/api/auth/logout', { method: 'POST' });

export const listNotes = () => request('/api/notes');

/** @param {{title: string, body: string}} note */
export const createNote = (note) => postJson('/api/notes', note);

/** @param {number} id */
export const deleteNote = (id) => request(`/api/notes/${id}`, { method: 'DELETE' });

/** @typedef {{id: number, action: 'created' | 'deleted'}} NoteChange */

/**
 * Follow the changes to notes (GET /api/notes/live, server-sent events).
 * `onChange` gets each change (only the note's id: each page reads what it may
 * see), or null when any note may have changed: the stream lost events ("reset").
 * EventSource reconnects by itself, resuming after the last event it had.
 * @param {(change: NoteChange | null) => void} onChange
 * @returns {() => void} stops following
 */
export function followNotes(onChange) {
	const source = new EventSource('/api/notes/live');
	source.addEventListener('reset', () => onChange(null));
	source.addEventListener('notes', (event) => {
		/** @type {NoteChange | null} */
		let change = null;
		try {
			change = JSON.parse(event.data);
		} catch {
			// Not ours to read: reload as after a reset.
		}
		onChange(change && typeof change.id === 'number' ? change : null);
	});
	return () => source.close();
}

/**
 * A function that runs `fn` `ms` after it is called: the calls made meanwhile (a
 * burst) run it only that once.
 * @param {() => void} fn
 * @param {number} ms
 * @returns {{ (): void, cancel(): void }}
 */
export function coalesce(fn, ms) {
	/** @type {ReturnType<typeof setTimeout> | undefined} */
	let timer;
	const call = () => {
		timer ??= setTimeout(() => {
			timer = undefined;
			fn();
		}, ms);
	};
	call.cancel = () => {
		clearTimeout(timer);
		timer = undefined;
	};
	return call;
}

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
