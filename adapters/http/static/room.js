// The lobby, and entering and leaving a room (including the /client1/ and /client2/ demo pages).

import { $, MAX_USERNAME_CHARS, state } from "./state.js";
import { ROOM_RE, validUsername } from "./rules.js";
import { connect, disconnect } from "./connection.js";
import { closeDrawer } from "./drawer.js";
import { cancelEdit, restoreOutbox } from "./outbox.js";
import { clearTyping } from "./presence.js";
import { clearTimeline, renderOlderControls } from "./render.js";
import { renderRooms, stopRooms } from "./rooms.js";
import { capChars } from "./ui.js";

const SAVED_NAME = "banter.username";

function showLobby(message) {
  state.stopped = true;
  stopRooms();
  $("chat").hidden = true;
  $("lobby").hidden = false;
  const saved = localStorage.getItem(SAVED_NAME);
  if (saved && !$("lobby-username").value) $("lobby-username").value = saved;
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
  $("input").focus();
}

/** Leaves the room on screen for `room` (picked from the room list). */
export function switchRoom(room) {
  disconnect("switched rooms");
  history.replaceState(null, "", `/?room=${encodeURIComponent(room)}${state.token ? `&token=${encodeURIComponent(state.token)}` : ""}`);
  enter(state.username, room);
}

export function initLobby() {
  capChars($("lobby-username"), MAX_USERNAME_CHARS);
  $("lobby-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const username = $("lobby-username").value.trim();
    const room = $("lobby-room").value.trim();
    if (!validUsername(username)) {
      return showLobby("Names are 1–32 letters or digits (any script), '_', '-' or '.'.");
    }
    if (!ROOM_RE.test(room)) {
      return showLobby("Rooms are 1–64 of a–z, 0–9, '-' and '_'.");
    }
    localStorage.setItem(SAVED_NAME, username);
    history.replaceState(null, "", `/?room=${encodeURIComponent(room)}`);
    return enter(username, room);
  });
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
  if (room && saved && validUsername(saved) && ROOM_RE.test(room)) return enter(saved, room);
  return showLobby();
}
