// A client-side single-page app: no SSR, no prerendering. adapter-static
// writes build/index.html as the fallback, which forge serves for every page.
export const ssr = false;
export const prerender = false;
