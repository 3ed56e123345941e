// The lobby, and entering and leaving a room (including the /client1/ and /client2/ demo pages).

import { $, MAX_USERNAME_CHARS, state } from "./state.js";
import { ROOM_RE, validUsername } from "./rules.js";
import { connect, disconnect } from "./connection.js";
import { closeDrawer } from "./drawer.js";
import { cancelEdit, restoreOutbox } from "./outbox.js";
import { clearTyping } from "./presence.js";
import { clearTimeline, renderOlderControls } from "./render.js";
import { renderRooms, stopRooms } from "./rooms.js";
import { loadMembers } from "./members.js";
import { capChars, clearNotice, setStatus, showNotice } from "./ui.js";

const SAVED_NAME = "banter.username";
// The token (auth `jwt`), kept for this tab only.
const SAVED_TOKEN = "banter.token";

/** The `sub` of a JWT, read without checking it (the server checks it), or null. */
function tokenSubject(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(Uint8Array.from(atob(payload), (c) => c.charCodeAt(0)));
    const sub = JSON.parse(json).sub;
    return typeof sub === "string" ? sub : null;
  } catch (_) {
    return null;
  }
}

function setToken(token) {
  state.token = token || null;
  if (state.token) sessionStorage.setItem(SAVED_TOKEN, state.token);
  else sessionStorage.removeItem(SAVED_TOKEN);
}

function showLobby(message) {
  state.stopped = true;
  stopRooms();
  $("chat").hidden = true;
  $("lobby").hidden = false;
  const saved = localStorage.getItem(SAVED_NAME);
  if (saved && !$("lobby-username").value) $("lobby-username").value = saved;
  if (state.token && !$("lobby-token").value) $("lobby-token").value = state.token;
  syncLobbyToken();
  const error = $("lobby-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("lobby-username").focus();
}

function enter(username, room) {
  cancelEdit();
  Object.assign(state, {
    username, room, welcomed: false, lastSeq: 0, lastRev: 0, readSeq: 0, editing: null, oldestSeq: null, hasOlder: false,
    attempts: 0, stopped: false, outbox: [],
  });
  state.online.clear();
  clearTyping();
  clearTimeline();
  closeDrawer();
  $("lobby").hidden = true;
  $("chat").hidden = false;
  $("room-name").textContent = `#${room}`;
  $("me").textContent = `as ${username}`;
  document.title = `#${room} · banter`;
  restoreOutbox();
  renderOlderControls();
  renderRooms();
  connect();
  $("input").disabled = false;
  $("send").disabled = false;
  clearNotice();
  loadMembers();
  $("input").focus();
}

/** The connection ended for good (see `onSocket`): say why, and do not reconnect. */
export function roomEnded(reason) {
  if (reason === "removed") {
    setStatus("offline", "removed");
    $("input").disabled = true;
    $("send").disabled = true;
    showNotice("You were removed from this room.", true);
    return;
  }
  if (reason === "unauthorized") {
    setToken(null);
    showLobby("This server requires sign-in: paste a valid token (yours was missing, expired or refused).");
    return;
  }
  showLobby(`Room #${state.room} was not found: it is a private room you are not a member of, or it does not exist.`);
}

/** With a token, the name is the token's: the name field follows it and is not required. */
function syncLobbyToken() {
  const token = $("lobby-token").value.trim();
  const name = $("lobby-username");
  name.required = !token;
  const sub = token ? tokenSubject(token) : null;
  if (sub) name.value = sub;
}

/** Leaves the room on screen for `room` (picked from the room list). */
export function switchRoom(room) {
  disconnect("switched rooms");
  history.replaceState(null, "", `/?room=${encodeURIComponent(room)}`);
  enter(state.username, room);
}

export function initLobby() {
  capChars($("lobby-username"), MAX_USERNAME_CHARS);
  $("lobby-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("lobby-token").value.trim();
    const username = (token && tokenSubject(token)) || $("lobby-username").value.trim();
    const room = $("lobby-room").value.trim();
    if (!token && !validUsername(username)) {
      return showLobby("Names are 1–32 letters or digits (any script), '_', '-' or '.'.");
    }
    if (!ROOM_RE.test(room)) {
      return showLobby("Rooms are 1–64 of a–z, 0–9, '-' and '_'.");
    }
    setToken(token);
    if (!token) localStorage.setItem(SAVED_NAME, username);
    history.replaceState(null, "", `/?room=${encodeURIComponent(room)}`);
    return enter(username, room);
  });
  $("lobby-token").addEventListener("input", syncLobbyToken);
  $("leave").addEventListener("click", () => {
    disconnect("left the room");
    history.replaceState(null, "", "/");
    showLobby();
  });
}

/** Where the page starts: a demo page, a saved name with `?room=`, or the lobby. */
export function start() {
  const path = location.pathname.replace(/\/+$/, "");
  const params = new URLSearchParams(location.search);
  // The original demo's pages: two people side by side in one room.
  if (path === "/client1") return enter("alice", "general");
  if (path === "/client2") return enter("bob", "general");
  const saved = localStorage.getItem(SAVED_NAME);
  const room = params.get("room");
  if (room && ROOM_RE.test(room)) $("lobby-room").value = room;
  // A token from the address (then kept for this tab) or from earlier in this tab.
  setToken(params.get("token") || sessionStorage.getItem(SAVED_TOKEN));
  if (room && state.token && ROOM_RE.test(room)) return enter(tokenSubject(state.token) || "", room);
  if (room && saved && validUsername(saved) && ROOM_RE.test(room)) return enter(saved, room);
  return showLobby();
}
