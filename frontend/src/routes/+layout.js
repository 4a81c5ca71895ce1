// Pure client-side SPA: no SSR, no prerendering; adapter-static serves
// the fallback index.html for every route.
export const ssr = false;
export const prerender = false;
