// Private rooms (servers run with `--auth jwt`, where the app has a token): creating one, and
// its member list with a form to add people. A room's members are shown only if it is private
// (the members endpoints answer 404 on a public room).

import { $, state } from "./state.js";
import { request } from "./api.js";
import { ROOM_RE, validUsername } from "./rules.js";
import { showNotice } from "./ui.js";

let enterRoom = () => {};

function renderMembers(members) {
  $("members").replaceChildren(...members.map((name) => {
    const li = document.createElement("li");
    li.dataset.username = name;
    li.textContent = name;
    if (name === state.username) li.classList.add("me");
    return li;
  }));
}

function showPrivate(isPrivate) {
  state.private = isPrivate;
  $("members-section").hidden = !isPrivate;
  $("room-private").hidden = !isPrivate;
}

/** On entering a room: with a token, ask whether it is private and who its members are. */
export async function loadMembers() {
  showPrivate(false);
  $("new-room-form").hidden = !state.token;
  if (!state.token) return;
  const room = state.room;
  const answer = await request("GET", `/api/rooms/${encodeURIComponent(room)}/members`);
  if (room !== state.room) return;
  if (answer.ok) {
    showPrivate(true);
    renderMembers(answer.body.members ?? []);
  }
}

async function addMember(event) {
  event.preventDefault();
  const field = $("add-member");
  const name = field.value.trim();
  if (!validUsername(name)) return showNotice("Names are 1–32 letters or digits (any script), '_', '-' or '.'.");
  const answer = await request("PUT", `/api/rooms/${encodeURIComponent(state.room)}/members/${encodeURIComponent(name)}`);
  if (!answer.ok) return showNotice(answer.body.detail || `Could not add ${name} (the server answered ${answer.status}).`);
  field.value = "";
  renderMembers(answer.body.members ?? []);
  $("members-status").textContent = `${name} was added to #${state.room}.`;
  return undefined;
}

async function createRoom(event) {
  event.preventDefault();
  const field = $("new-room");
  const room = field.value.trim();
  if (!ROOM_RE.test(room)) return showNotice("Rooms are 1–64 of a–z, 0–9, '-' and '_'.");
  const answer = await request("POST", "/api/rooms", { room, private: true });
  if (answer.status === 409) return showNotice(`#${room} already exists; pick another name.`);
  if (!answer.ok) return showNotice(answer.body.detail || `Could not create #${room} (the server answered ${answer.status}).`);
  field.value = "";
  enterRoom(room);
  return undefined;
}

/** `onCreated(room)` enters a room just created. */
export function initMembers(onCreated) {
  enterRoom = onCreated;
  $("add-member-form").addEventListener("submit", addMember);
  $("new-room-form").addEventListener("submit", createRoom);
}
