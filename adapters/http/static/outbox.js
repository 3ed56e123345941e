// Sending: the composer, and the outbox of messages not yet acknowledged, kept across reloads
// and sent again with their client_id until the server has them (no doubles).

import { $, MAX_MESSAGE_CHARS, state } from "./state.js";
import { contentProblem, newClientId } from "./rules.js";
import { send } from "./connection.js";
import { renderBubble } from "./render.js";
import { autosize, capChars, scrollToBottom, showNotice } from "./ui.js";

function outboxKey() {
  return `banter.outbox.${state.room}.${state.username}`;
}

function saveOutbox() {
  const items = state.outbox.map(({ clientId, text }) => ({ clientId, text }));
  if (items.length) localStorage.setItem(outboxKey(), JSON.stringify(items));
  else localStorage.removeItem(outboxKey());
}

/** Messages that were never acknowledged (the page was closed) are queued again. */
export function restoreOutbox() {
  try {
    for (const { clientId, text } of JSON.parse(localStorage.getItem(outboxKey()) || "[]")) {
      queue(text, clientId);
    }
  } catch (_) {
    localStorage.removeItem(outboxKey());
  }
}

function queue(text, clientId) {
  const el = renderBubble({ username: state.username, content: text, timestamp: null }, true);
  el.classList.add("pending");
  const item = { clientId, text, el };
  state.outbox.push(item);
  markPending(item, "sending…");
  $("messages").append(el);
  saveOutbox();
  transmit(item);
}

/** Sends `item` if the connection allows; otherwise it waits for the next welcome. */
export function transmit(item) {
  if (!state.outbox.includes(item)) return;
  if (!send({ type: "chat_message", message: item.text, client_id: item.clientId })) {
    markPending(item, "waiting for the connection…");
  }
}

export function markPending(item, text) {
  let note = item.el.querySelector(".state");
  if (!note) {
    note = document.createElement("div");
    note.className = "state";
    item.el.append(note);
  }
  note.textContent = text;
}

/** The server has the message (or refused it for good): it leaves the outbox. */
export function settle(clientId) {
  const index = state.outbox.findIndex((o) => o.clientId === clientId);
  if (index < 0) return;
  const [item] = state.outbox.splice(index, 1);
  item.el.remove();
  saveOutbox();
}

function submit() {
  const input = $("input");
  const text = input.value;
  const problem = contentProblem(text);
  if (problem) return showNotice(problem);
  input.value = "";
  autosize(input);
  state.typingActive = false; // the server ends typing when a message is posted
  queue(text, newClientId());
  scrollToBottom();
  return undefined;
}

export function initComposer() {
  const input = $("input");
  capChars(input, MAX_MESSAGE_CHARS, () =>
    showNotice(`Messages are at most ${MAX_MESSAGE_CHARS} characters; the rest was cut.`));
  input.addEventListener("input", () => autosize(input));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  $("composer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
}
