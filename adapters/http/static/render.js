// The timeline: message bubbles in seq order, grouped by author, the older-history controls, and
// the screen-reader log of messages as they arrive. User content is only ever set with
// textContent, never parsed as HTML.

import { $, state } from "./state.js";

// Entries kept in the screen-reader log; older ones have been read out already.
const ANNOUNCED_KEPT = 20;
// Bubbles of one author closer together than this share one name line.
const GROUP_GAP_MS = 5 * 60 * 1000;

function formatTime(timestamp) {
  if (!timestamp) return "";
  return new Date(timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function renderBubble(message, mine) {
  const li = document.createElement("li");
  li.className = `message${mine ? " mine" : ""}`;
  li.dataset.username = message.username;
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.username;
  const when = document.createElement("time");
  when.textContent = formatTime(message.timestamp);
  if (message.timestamp) {
    when.dateTime = message.timestamp;
    when.title = new Date(message.timestamp).toLocaleString();
  }
  meta.append(who, when);
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  if (message.deleted) {
    li.classList.add("deleted");
    bubble.textContent = "message deleted";
  } else {
    bubble.textContent = message.content; // never innerHTML: content is shown exactly as sent
  }
  // The bubble's row: the bubble, then "(edited)" and the actions button (shown even when the
  // name line is folded into the previous bubble's).
  const row = document.createElement("div");
  row.className = "row";
  row.append(bubble);
  if (message.edited_at && !message.deleted) {
    const edited = document.createElement("span");
    edited.className = "edited";
    edited.textContent = "(edited)";
    edited.title = `edited ${new Date(message.edited_at).toLocaleString()}`;
    row.append(edited);
  }
  li.append(meta, row);
  return li;
}

/** The actions on one of your own stored messages: a button opening a small menu. */
function addMenu(li, message) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "icon actions";
  button.textContent = "⋯";
  button.setAttribute("aria-label", "Message actions");
  button.setAttribute("aria-haspopup", "menu");
  button.setAttribute("aria-expanded", "false");
  const menu = document.createElement("div");
  menu.className = "menu";
  menu.setAttribute("role", "menu");
  menu.hidden = true;
  const item = (label, action) => {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "menuitem");
    b.textContent = label;
    b.addEventListener("click", () => {
      close(false);
      action(message.seq);
    });
    return b;
  };
  const close = (refocus) => {
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  };
  menu.append(item("Edit", (seq) => actions.edit(seq)), item("Delete", (seq) => actions.remove(seq)));
  button.addEventListener("click", () => {
    const opening = menu.hidden;
    for (const other of document.querySelectorAll(".message .menu:not([hidden])")) other.hidden = true;
    menu.hidden = !opening;
    button.setAttribute("aria-expanded", String(opening));
    if (opening) menu.firstElementChild.focus();
  });
  menu.addEventListener("keydown", (event) => {
    const items = [...menu.children];
    const at = items.indexOf(document.activeElement);
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      close(true);
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const next = (at + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items[next].focus();
    }
  });
  li.querySelector(".row").append(button);
  li.append(menu);
}

// What the message menu does; set by the composer (outbox.js).
const actions = { edit: () => {}, remove: () => {} };
export function onMessageActions(edit, remove) {
  actions.edit = edit;
  actions.remove = remove;
}

function storedBubble(message) {
  const mine = message.username === state.username;
  const li = renderBubble(message, mine);
  li.dataset.seq = String(message.seq);
  li.dataset.time = message.timestamp;
  if (mine && !message.deleted) addMenu(li, message);
  return li;
}

/** A message was edited or deleted: its bubble shows it as it now is (if we hold it). */
export function updateMessage(message) {
  const old = state.rendered.get(message.seq);
  if (!old) return;
  const li = storedBubble(message);
  if (old.classList.contains("continued")) li.classList.add("continued");
  old.replaceWith(li);
  state.rendered.set(message.seq, li);
  regroup(li);
}

/** Puts a stored message in its place by seq (once), before any pending bubbles. */
export function insertMessage(message) {
  if (state.rendered.has(message.seq)) return;
  const li = storedBubble(message);
  const list = $("messages");
  // Usually the newest: append before any pending bubbles; otherwise find its place.
  let before = null;
  for (const [seq, el] of state.rendered) {
    if (seq > message.seq && (!before || seq < Number(before.dataset.seq))) before = el;
  }
  if (!before) before = list.querySelector(".message.pending");
  list.insertBefore(li, before);
  state.rendered.set(message.seq, li);
  regroup(li);
  if (li.nextElementSibling) regroup(li.nextElementSibling);
}

function regroup(li) {
  const prev = li.previousElementSibling;
  const sameAuthor = prev && !prev.classList.contains("pending") && prev.dataset.username === li.dataset.username;
  const close = sameAuthor && li.dataset.time && prev.dataset.time &&
    new Date(li.dataset.time) - new Date(prev.dataset.time) < GROUP_GAP_MS;
  li.classList.toggle("continued", Boolean(close) && !li.classList.contains("pending"));
}

/**
 * Reads a message that has just arrived out to screen readers. The visible list is not a live
 * region, because history loads add to it too and must not be read out; this log gets only
 * arrivals.
 */
export function announce(message) {
  const log = $("announcer");
  const entry = document.createElement("p");
  entry.textContent = `${message.username}: ${message.deleted ? "message deleted" : message.content}`;
  log.append(entry);
  while (log.childElementCount > ANNOUNCED_KEPT) log.firstElementChild.remove();
}

/**
 * The "New messages" divider, before the first message after `readSeq` by someone else (when
 * there was a position to be after). Returns it, or null.
 */
export function placeDivider(readSeq) {
  $("messages").querySelector(".divider")?.remove();
  if (!readSeq) return null;
  let first = null;
  for (const [seq, li] of state.rendered) {
    if (seq > readSeq && li.dataset.username !== state.username && (!first || seq < Number(first.dataset.seq))) first = li;
  }
  if (!first) return null;
  const divider = document.createElement("li");
  divider.className = "divider";
  divider.setAttribute("role", "separator");
  divider.setAttribute("aria-label", "New messages");
  const label = document.createElement("span");
  label.textContent = "New messages";
  divider.append(label);
  first.before(divider);
  first.classList.remove("continued");
  return divider;
}

export function clearTimeline() {
  state.rendered.clear();
  $("messages").replaceChildren();
  $("announcer").replaceChildren();
}

export function renderOlderControls() {
  $("load-older").hidden = !state.hasOlder;
  $("history-start").hidden = state.hasOlder || !state.welcomed;
}
