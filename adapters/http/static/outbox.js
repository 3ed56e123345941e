// Sending: the composer, and the outbox of messages not yet acknowledged, kept across reloads
// and sent again with their client_id until the server has them (no doubles).

import { $, MAX_MESSAGE_CHARS, state } from "./state.js";
import { contentProblem, newClientId } from "./rules.js";
import { send } from "./connection.js";
import { onMessageActions, renderBubble } from "./render.js";
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

/** Your newest message that can still be edited (stored, not deleted), or null. */
function lastOwnSeq() {
  let last = null;
  for (const [seq, li] of state.rendered) {
    if (li.dataset.username === state.username && !li.classList.contains("deleted") && (last === null || seq > last)) last = seq;
  }
  return last;
}

/** Puts message `seq` into the composer for editing; Enter saves, Escape cancels. */
export function startEdit(seq) {
  const li = state.rendered.get(seq);
  if (!li || li.classList.contains("deleted")) return;
  const input = $("input");
  state.editing = seq;
  input.value = li.querySelector(".bubble").textContent;
  autosize(input);
  $("editing").hidden = false;
  $("send").textContent = "Save";
  li.classList.add("being-edited");
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

export function cancelEdit() {
  if (state.editing === null) return;
  state.rendered.get(state.editing)?.classList.remove("being-edited");
  state.editing = null;
  $("editing").hidden = true;
  $("send").textContent = "Send";
  const input = $("input");
  input.value = "";
  autosize(input);
}

function deleteMessage(seq) {
  if (!send({ type: "delete", seq })) showNotice("Not connected: the message was not deleted. Try again when online.");
  if (state.editing === seq) cancelEdit();
  $("input").focus();
}

function submit() {
  const input = $("input");
  const text = input.value;
  const problem = contentProblem(text);
  if (problem) return showNotice(problem);
  if (state.editing !== null) {
    if (!send({ type: "edit", seq: state.editing, message: text })) {
      return showNotice("Not connected: the edit was not saved. Try again when online.");
    }
    cancelEdit();
    return undefined;
  }
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
    } else if (event.key === "ArrowUp" && !input.value && state.editing === null && !event.isComposing) {
      const seq = lastOwnSeq();
      if (seq !== null) {
        event.preventDefault();
        startEdit(seq);
      }
    } else if (event.key === "Escape" && state.editing !== null) {
      event.preventDefault();
      cancelEdit();
    }
  });
  $("cancel-edit").addEventListener("click", () => {
    cancelEdit();
    input.focus();
  });
  onMessageActions(startEdit, deleteMessage);
  // A click elsewhere closes an open message menu.
  document.addEventListener("click", (event) => {
    if (event.target.closest?.(".message .actions, .message .menu")) return;
    for (const menu of document.querySelectorAll(".message .menu:not([hidden])")) {
      menu.hidden = true;
      menu.parentElement.querySelector(".actions")?.setAttribute("aria-expanded", "false");
    }
  });
  $("composer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
}
