// Who is online and who is typing: the side list, the typing line, and this page's own typing
// signal to the others.

import { $, state } from "./state.js";
import { send } from "./connection.js";

const TYPING_REFRESH_MS = 2000;
// The server ends typing after 6 s; this only guards against a lost "false".
const TYPING_FALLBACK_MS = 7000;

export function onTyping(username, isTyping) {
  if (username === state.username) return;
  clearTimeout(state.typing.get(username));
  if (isTyping) {
    state.typing.set(username, setTimeout(() => onTyping(username, false), TYPING_FALLBACK_MS));
  } else {
    state.typing.delete(username);
  }
  renderTyping();
}

export function clearTyping() {
  for (const timer of state.typing.values()) clearTimeout(timer);
  state.typing.clear();
  renderTyping();
}

function renderTyping() {
  const names = [...state.typing.keys()].sort();
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  $("typing").textContent = text;
  for (const li of $("online").children) li.classList.toggle("typing", state.typing.has(li.dataset.username));
}

/** The welcome's picture of the room: who is online and who is typing. */
export function resetPresence(welcome) {
  state.online = new Set(welcome.online);
  state.onlineCount = welcome.online_count;
  renderOnline();
  clearTyping();
  for (const name of welcome.typing) if (name !== state.username) onTyping(name, true);
}

export function onPresence(frame) {
  if (frame.event === "join") state.online.add(frame.username);
  else {
    state.online.delete(frame.username);
    onTyping(frame.username, false);
  }
  state.onlineCount = frame.online_count;
  renderOnline();
}

function renderOnline() {
  const list = $("online");
  const names = [...state.online].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  list.replaceChildren(...names.map((name) => {
    const li = document.createElement("li");
    li.dataset.username = name;
    li.textContent = name;
    if (name === state.username) li.classList.add("me");
    if (state.typing.has(name)) li.classList.add("typing");
    return li;
  }));
  $("online-count").textContent = String(state.onlineCount);
  $("online-count-side").textContent = `(${state.onlineCount})`;
}

/** Tells the others while this page's composer holds text, refreshed while typing goes on. */
export function sendTypingFrom(input) {
  input.addEventListener("input", () => {
    const now = Date.now();
    if (input.value.trim()) {
      if (!state.typingActive || now - state.typingSentAt >= TYPING_REFRESH_MS) {
        if (send({ type: "typing", is_typing: true })) {
          state.typingActive = true;
          state.typingSentAt = now;
        }
      }
    } else if (state.typingActive) {
      send({ type: "typing", is_typing: false });
      state.typingActive = false;
    }
  });
}
