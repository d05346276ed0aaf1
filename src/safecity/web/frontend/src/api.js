// HTTP to our own node: the API key on every request, problem+json errors as ApiError (never swallowed).
import { language } from "./i18n.js";

const KEY_STORE = "safecity.key";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE);
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

// A `#key=...` fragment (what `safecity demo` prints) logs in and is removed from the address bar at once.
export function takeKeyFromFragment() {
  const match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
  if (!match) return false;
  setApiKey(decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

export async function api(path, { method = "GET", body, params } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((item) => url.searchParams.append(k, item));
    else if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  const headers = { "X-API-Key": apiKey() || "", "Accept-Language": language() === "en" ? "en" : "zh-CN" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof data === "object" ? data : { detail: data });
  return data;
}

// Requests MapLibre makes (tiles, TileJSON) carry the key too; nothing leaves this origin.
export function transformRequest(url) {
  if (url.startsWith(location.origin)) return { url, headers: { "X-API-Key": apiKey() || "" } };
  return { url };
}
