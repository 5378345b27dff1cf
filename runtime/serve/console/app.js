// The console's shell: hash routing between the views, the error banner, and the access
// token dialog. Views live in their own modules; each mount(main, route) returns a
// cleanup function that stops its timers and live streams.

import { api, getToken, onError, onUnauthorized, session, setToken, syncCookie, whoami } from "./api.js";
import * as cameras from "./cameras.js";
import { h, fill } from "./dom.js";
import * as events from "./events.js";
import * as node from "./node.js";

const main = document.getElementById("view");
const banner = document.getElementById("banner");
const bannerText = document.getElementById("banner-text");
const dialog = document.getElementById("token-dialog");
const tokenInput = document.getElementById("token-input");
const whoButton = document.getElementById("who");

// --- banner --------------------------------------------------------------------------------

function showError(error, method, path) {
  const where = method && path ? `${method} ${path.split("?")[0]}: ` : "";
  const status = error.status ? ` (HTTP ${error.status})` : "";
  bannerText.textContent = `${where}${error.detail || error.message}${status}`;
  banner.hidden = false;
}

document.getElementById("banner-close").addEventListener("click", () => {
  banner.hidden = true;
});

// --- token ---------------------------------------------------------------------------------

function askToken(reason) {
  document.getElementById("token-reason").textContent = reason || "";
  tokenInput.value = getToken();
  if (!dialog.open) dialog.showModal();
  tokenInput.focus();
}

dialog.addEventListener("close", async () => {
  if (dialog.returnValue === "save") setToken(tokenInput.value);
  else if (dialog.returnValue === "clear") setToken("");
  else return;
  banner.hidden = true;
  await refreshWho();
  route();
});

whoButton.addEventListener("click", () => askToken(""));

// A 401 (no token, a wrong or revoked one): stop every view's polling, which would only
// collect more refusals (wrong tokens get an address blocked), and ask for a token.
onUnauthorized((error) => {
  const wasIn = session.who !== null;
  session.who = null;
  showWho(null);
  if (wasIn) route();
  if (!dialog.open) askToken(`The service asks for a token: ${error.detail}`);
});
onError(showError);

function showWho(who) {
  whoButton.textContent = who ? `${who.scope} · ${who.name}` : "Token";
  whoButton.classList.toggle("needs-token", !who);
  document.body.classList.toggle("is-admin", Boolean(who) && who.scope === "admin");
  document.body.classList.toggle("is-viewer", Boolean(who) && who.scope !== "admin");
}

async function refreshWho() {
  const who = await whoami();
  showWho(who);
  if (who && !document.getElementById("node-name").textContent) {
    api.get("/api/stats", { quiet: true }).then((stats) => {
      document.getElementById("node-name").textContent = stats.node;
      document.title = `adedge · ${stats.node}`;
    }).catch(() => {});
  }
  return who;
}

function signInPanel() {
  return h("section", { class: "panel", id: "sign-in" },
    h("h1", {}, "A token is needed"),
    h("p", {}, "This service asks for an access token (viewer or admin) before it shows anything."),
    h("div", { class: "buttons" },
      h("button", { type: "button", class: "primary", onclick: () => askToken("") }, "Enter a token")));
}

// --- routing -------------------------------------------------------------------------------

const VIEWS = [
  { match: /^$/, nav: "cameras", mount: cameras.mountGrid },
  { match: /^events$/, nav: "events", mount: events.mountList },
  { match: /^event\/(.+)$/, nav: "events", mount: events.mountDetail },
  { match: /^camera\/(.+)$/, nav: "cameras", mount: cameras.mountCamera },
  { match: /^node$/, nav: "node", mount: node.mountNode },
];

let cleanup = null;
let generation = 0;

/** The route of location.hash: "#/event/<id>?a=b" -> {path: "event/<id>", query}. */
export function currentRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  return { path: path.replace(/\/+$/, ""), query: new URLSearchParams(query) };
}

async function route() {
  generation += 1;
  const mine = generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.warn(error);
    }
    cleanup = null;
  }
  banner.hidden = true; // a message about the previous view
  const { path, query } = currentRoute();
  const view = VIEWS.find((candidate) => candidate.match.test(path));
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", Boolean(view) && link.dataset.nav === view.nav);
    if (view && link.dataset.nav === view.nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  fill(main);
  if (session.who === null) {
    fill(main, signInPanel());
    return;
  }
  if (!view) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the cameras")));
    return;
  }
  const args = path.match(view.match).slice(1).map(decodeURIComponent);
  const stop = await view.mount(main, { args, query, alive: () => mine === generation });
  if (mine === generation) cleanup = stop || null;
  else if (stop) stop();
}

window.addEventListener("hashchange", route);

async function start() {
  syncCookie();
  await refreshWho();
  route();
}

// For a person (or a test) at the browser's console: the page's own API client.
window.adedge = { api, session, refreshWho };

start();
