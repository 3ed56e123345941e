// The REST API: requests with the bearer token when the app has one (auth `jwt`), answers as
// {status, body} so callers can tell a 404 from a 409 from a network failure.

import { state } from "./state.js";

export function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

/** `status` is 0 when the server could not be reached; `body` is the parsed JSON or {}. */
export async function request(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers["content-type"] = "application/json";
  try {
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const parsed = await response.json().catch(() => ({}));
    return { status: response.status, ok: response.ok, body: parsed };
  } catch (_) {
    return { status: 0, ok: false, body: {} };
  }
}
