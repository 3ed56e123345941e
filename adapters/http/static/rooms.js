// The room list: the rooms this user posted in or read (GET /api/users/{username}/rooms), newest
// activity first, with unread badges; refreshed on entering a room, every few seconds while the
// page is visible, and when it becomes visible again. Picking one switches rooms.

import { $, state } from "./state.js";
import { request } from "./api.js";

const REFRESH_MS = 8000;

let rooms = [];
let timer = null;
let pick = () => {};

export async function refreshRooms() {
  clearTimeout(timer);
  if (state.stopped || !state.username) return;
  timer = setTimeout(refreshRooms, REFRESH_MS);
  if (document.visibilityState !== "visible") return;
  const forRoom = state.room;
  const answer = await request("GET", `/api/users/${encodeURIComponent(state.username)}/rooms`);
  if (!answer.ok || forRoom !== state.room) return;
  rooms = answer.body.rooms ?? [];
  renderRooms();
}

export function stopRooms() {
  clearTimeout(timer);
}

function unreadText(count) {
  return count >= 1000 ? "999+" : String(count);
}

export function renderRooms() {
  // The room on screen is always listed (a room just entered has no position yet), and read.
  const listed = rooms.some((r) => r.room === state.room) ? rooms : [{ room: state.room, unread: 0 }, ...rooms];
  let elsewhere = 0;
  $("rooms").replaceChildren(...listed.map((entry) => {
    const current = entry.room === state.room;
    const unread = current ? 0 : entry.unread;
    elsewhere += unread;
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room";
    button.dataset.room = entry.room;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `#${entry.room}`;
    button.append(name);
    if (unread > 0) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = unreadText(unread);
      badge.setAttribute("aria-label", `${unreadText(unread)} unread`);
      button.append(badge);
    }
    if (current) button.setAttribute("aria-current", "page");
    button.addEventListener("click", () => { if (entry.room !== state.room) pick(entry.room); });
    li.append(button);
    return li;
  }));
  const total = $("unread-total");
  total.hidden = elsewhere === 0;
  total.textContent = elsewhere ? unreadText(elsewhere) : "";
}

/** `onPick(room)` runs when another room is picked from the list. */
export function initRooms(onPick) {
  pick = onPick;
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") refreshRooms();
  });
}
