import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

// Backend for the dev/preview proxy; override with BACKEND_URL if needed.
const backend = process.env.BACKEND_URL || 'http://127.0.0.1:8000';

export default defineConfig({
	plugins: [sveltekit()],
	server: {
		proxy: {
			'/api': backend,
			'/_api': backend
		}
	},
	preview: {
		proxy: {
			'/api': backend,
			'/_api': backend
		}
	}
});
