// The Forge dashboard's script: keeps the server-rendered page live, and sends the actions.
//
// A stream (server-sent events) brings a fresh snapshot every couple of seconds;
// while it cannot be had, the page polls. Each snapshot carries every section's
// HTML, made and escaped by the server; a section is replaced only when it changed,
// and the <details> the reader opened stay open.
"use strict";

(() => {
  const base = document.body.dataset.base;
  const POLL_MS = 2000;
  const STREAM_RETRY_MS = 15000;
  const QUIET_MS = 8000;

  // Opened with ?token=...: the cookie now holds the access, so take the token
  // out of the address bar (and of the history, bookmarks, and screens shared).
  if (new URLSearchParams(location.search).has("token")) {
    history.replaceState(null, "", location.pathname);
  }

  const live = document.getElementById("live");
  const liveText = document.getElementById("live-text");
  const updated = document.getElementById("updated");
  const banner = document.getElementById("banner");
  const flash = document.getElementById("flash");

  function setState(state, words) {
    live.dataset.state = state;
    liveText.textContent = words;
  }

  const shown = {};
  for (const section of document.querySelectorAll("section[data-section]")) {
    shown[section.dataset.section] = section.outerHTML;
  }

  let lastUpdate = Date.now();

  function apply(snapshot) {
    lastUpdate = Date.now();
    for (const [name, html] of Object.entries(snapshot.sections)) {
      if (shown[name] === html) continue;
      const current = document.getElementById(name);
      if (!current) continue;
      const open = new Set(
        [...current.querySelectorAll("details[open]")].map((item) => item.dataset.key),
      );
      const template = document.createElement("template");
      template.innerHTML = html;
      const fresh = template.content.firstElementChild;
      for (const item of fresh.querySelectorAll("details[data-key]")) {
        if (open.has(item.dataset.key)) item.open = true;
      }
      current.replaceWith(fresh);
      shown[name] = html;
    }
    if (banner.innerHTML !== snapshot.banner) banner.innerHTML = snapshot.banner;
    updated.textContent = snapshot.updated;
  }

  // --- the stream, and polling while it is down -------------------------------------

  let source = null;
  let poller = null;

  function openStream() {
    if (source) return;
    source = new EventSource(base + "/stream");
    source.addEventListener("snapshot", (event) => {
      apply(JSON.parse(event.data));
      stopPolling();
      setState("live", "live");
    });
    source.addEventListener("error", () => {
      // The browser reconnects by itself unless the server refused (CLOSED).
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(openStream, STREAM_RETRY_MS);
      }
      startPolling();
    });
  }

  async function poll() {
    try {
      const response = await fetch(base + "/snapshot", {
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      apply(await response.json());
      if (!source || source.readyState !== EventSource.OPEN) setState("polling", "polling");
    } catch (error) {
      setState("offline", "cannot reach this node (" + error.message + "), retrying");
    }
  }

  function startPolling() {
    if (poller) return;
    setState("polling", "polling");
    poller = setInterval(poll, POLL_MS);
    poll();
  }

  function stopPolling() {
    if (!poller) return;
    clearInterval(poller);
    poller = null;
  }

  // A stream that went quiet without an error (a proxy buffering it): poll meanwhile.
  setInterval(() => {
    if (Date.now() - lastUpdate > QUIET_MS) startPolling();
  }, QUIET_MS / 2);

  // --- actions ----------------------------------------------------------------------

  function say(message, bad) {
    flash.textContent = message;
    flash.classList.toggle("bad", Boolean(bad));
  }

  const QUESTIONS = {
    discard: (job) => "Discard job #" + job + " for good? It will not run again.",
  };

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, job } = button.dataset;
    const question = QUESTIONS[action];
    if (question && !window.confirm(question(job))) return;
    button.disabled = true;
    try {
      const response = await fetch(base + "/jobs/" + encodeURIComponent(job) + "/" + action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-Forge-Dashboard": "1" },
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        say(body.detail || body.error || "HTTP " + response.status, true);
        button.disabled = false;
        return;
      }
      say(body.message);
      // This worker's stream has been woken; another worker's may be the one open.
      poll();
    } catch (error) {
      say("The request failed: " + error.message, true);
      button.disabled = false;
    }
  });

  if ("EventSource" in window) {
    openStream();
  } else {
    startPolling();
  }
})();
