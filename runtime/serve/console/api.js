// The service's HTTP API as the page uses it: the access token (localStorage + a cookie for
// <img>/<video>), JSON requests, and errors shown in the banner with the API's own detail.

const TOKEN_KEY = "adedge_token";
const COOKIE = "adedge_token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

// What the page does on a 401 (ask for a token) and on any error (show it); set by app.js.
const hooks = { unauthorized: () => {}, error: () => {} };

export function onUnauthorized(fn) {
  hooks.unauthorized = fn;
}

export function onError(fn) {
  hooks.error = fn;
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

/** Keep the token (empty: forget it) and mirror it in the cookie the media tags send. */
export function setToken(token) {
  const value = (token || "").trim();
  const secure = location.protocol === "https:" ? "; Secure" : "";
  if (value) {
    localStorage.setItem(TOKEN_KEY, value);
    // as typed (base64's + / = are fine in a cookie); only what would break it is escaped
    const cookie = value.replace(/[;,"\\%\s]/g, (c) => encodeURIComponent(c));
    document.cookie = `${COOKIE}=${cookie}; path=/; SameSite=Strict${secure}`;
  } else {
    localStorage.removeItem(TOKEN_KEY);
    document.cookie = `${COOKIE}=; path=/; SameSite=Strict; Max-Age=0${secure}`;
  }
}

/** The cookie follows localStorage (a cleared cookie, a token set in another tab). */
export function syncCookie() {
  setToken(getToken());
}

function detailOf(body, status) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    // FastAPI's validation errors: "<where>: <what>" for each
    return body.detail
      .map((item) => `${(item.loc || []).slice(1).join(".")}: ${item.msg}`)
      .join("; ");
  }
  return `HTTP ${status}`;
}

/** fetch() with the token; the parsed JSON (null for 204), or ApiError. Errors also go to
 * the banner unless quiet is set; a 401 asks for a token. */
export async function request(method, path, { body, quiet = false, accept = [] } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    const failure = new ApiError(0, `the service does not answer (${error.message})`);
    if (!quiet) hooks.error(failure);
    throw failure;
  }
  if (response.status === 204) return null;
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (response.ok || accept.includes(response.status)) return data;
  const failure = new ApiError(response.status, detailOf(data, response.status));
  if (response.status === 401) hooks.unauthorized(failure);
  if (!quiet) hooks.error(failure, method, path);
  throw failure;
}

export const api = {
  get: (path, options) => request("GET", path, options),
  post: (path, body, options) => request("POST", path, { ...options, body }),
  patch: (path, body, options) => request("PATCH", path, { ...options, body }),
  del: (path, options) => request("DELETE", path, options),
};

/** A path with its query (keys with empty values left out). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export const enc = encodeURIComponent;

// Who the page is talking as: {scope: "admin"|"viewer", name, via}, or null (no access).
export const session = { who: null };

export function isAdmin() {
  return session.who !== null && session.who.scope === "admin";
}

export async function whoami() {
  try {
    session.who = await api.get("/api/auth/whoami", { quiet: true });
  } catch (error) {
    session.who = null;
    if (error.status !== 401) hooks.error(error);
  }
  return session.who;
}
