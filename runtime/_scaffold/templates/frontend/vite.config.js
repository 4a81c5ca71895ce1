import { sveltekit } from '@sveltejs/kit/vite';
import { defineConfig } from 'vite';

// `npm run dev` answers the pages and passes API calls on to the app
// (forge run / forge dev); BACKEND_URL overrides where it is.
const backend = process.env.BACKEND_URL || 'http://127.0.0.1:8000';

export default defineConfig({
	plugins: [sveltekit()],
	server: {
		proxy: {
			'/api': backend,
			'/_api': backend
		}
	}
});
