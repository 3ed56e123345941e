// The WebSocket: connect, resume after a drop with `after` and `rev`, back off with jitter, keep the
// connection honest with pings, and send frames only on a welcomed connection.

import { PAGE, state } from "./state.js";
import { request } from "./api.js";
import { setStatus } from "./ui.js";

const KEEPALIVE_MS = 20000;

let handlers = { frame: () => {}, closed: () => {}, ended: () => {} };

/**
 * `frame(parsed)` runs for each frame from the server, `closed()` when a connection is lost,
 * `ended(reason)` when the room cannot be had and no reconnect follows: `"removed"` (closed with
 * 4403: removed from a private room), `"not_found"` (the handshake was refused with 404: no such
 * room for us, e.g. a private room we are not a member of) or `"unauthorized"` (refused with
 * 401: no token, or a bad one, on a server with auth `jwt`).
 */
export function onSocket(frame, closed, ended) {
  handlers = { frame, closed, ended };
  window.addEventListener("online", () => {
    if (!state.ws && !state.stopped) connect();
  });
}

function socketUrl() {
  const params = new URLSearchParams();
  // With auth `jwt` the token names us and `username` is ignored; sending both also works on a
  // server without auth, where the token is ignored instead.
  if (state.token) params.set("token", state.token);
  if (state.username) params.set("username", state.username);
  // After the first welcome, resume from the last message seen: nothing lost, nothing twice.
  // With `rev`, edits and deletes made meanwhile to messages already shown come first.
  if (state.welcomed) {
    params.set("after", String(state.lastSeq));
    params.set("rev", String(state.lastRev));
  } else params.set("history", String(PAGE));
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/chat/${encodeURIComponent(state.room)}/?${params}`;
}

export function connect() {
  clearTimeout(state.reconnectTimer);
  if (state.stopped) return;
  setStatus(state.attempts ? "reconnecting" : "connecting", state.attempts ? "reconnecting…" : "connecting…");
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  state.live = false;
  ws.onmessage = (event) => {
    if (state.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    handlers.frame(frame);
  };
  ws.onclose = async (event) => {
    if (state.ws !== ws) return;
    const wasLive = state.live;
    state.ws = null;
    state.live = false;
    stopKeepalive();
    handlers.closed();
    if (state.stopped) return;
    if (event.code === 4403) {
      state.stopped = true;
      handlers.ended("removed");
      return;
    }
    setStatus("offline", event.code === 1001 ? "server restarting…" : "offline");
    if (!wasLive && event.code === 1006) {
      // A refused handshake looks like any other failure to a page: ask the REST API why.
      const room = state.room;
      const answer = await request("GET", `/api/rooms/${encodeURIComponent(room)}/messages?limit=1`);
      if (state.stopped || state.ws || room !== state.room) return;
      if (answer.status === 404 || answer.status === 401) {
        state.stopped = true;
        handlers.ended(answer.status === 404 ? "not_found" : "unauthorized");
        return;
      }
    }
    scheduleReconnect();
  };
}

/** Leaves for good: no reconnect. */
export function disconnect(reason) {
  state.stopped = true;
  clearTimeout(state.reconnectTimer);
  if (state.ws) state.ws.close(1000, reason);
}

/** Drops the current connection; the usual reconnect follows. */
export function reconnect(reason) {
  if (state.ws) state.ws.close(1000, reason);
}

function scheduleReconnect() {
  // Exponential backoff with jitter, so a restarted server is not hit by everyone at once.
  const base = Math.min(30000, 500 * 2 ** Math.min(state.attempts, 6));
  const delay = base * (0.5 + Math.random());
  state.attempts += 1;
  state.reconnectTimer = setTimeout(connect, delay);
}

/** The connection was welcomed: it is live, and the backoff starts over. */
export function markLive() {
  state.live = true;
  state.attempts = 0;
  startKeepalive();
}

function startKeepalive() {
  stopKeepalive();
  state.keepalive = setInterval(() => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (state.awaitingPong) {
      // No answer to the last ping: the connection is dead even if the browser has not noticed.
      ws.close(4000, "no pong");
      return;
    }
    state.awaitingPong = true;
    ws.send(JSON.stringify({ type: "ping" }));
  }, KEEPALIVE_MS);
}

function stopKeepalive() {
  clearInterval(state.keepalive);
  state.awaitingPong = false;
}

export function onPong() {
  state.awaitingPong = false;
}

/** Sends `frame` if the connection is open and welcomed; says whether it went. */
export function send(frame) {
  const ws = state.ws;
  if (ws && ws.readyState === WebSocket.OPEN && state.live) {
    ws.send(JSON.stringify(frame));
    return true;
  }
  return false;
}
