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
  bubble.textContent = message.content; // never innerHTML: content is shown exactly as sent
  li.append(meta, bubble);
  return li;
}

/** Puts a stored message in its place by seq (once), before any pending bubbles. */
export function insertMessage(message) {
  if (state.rendered.has(message.seq)) return;
  const li = renderBubble(message, message.username === state.username);
  li.dataset.seq = String(message.seq);
  li.dataset.time = message.timestamp;
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
  entry.textContent = `${message.username}: ${message.content}`;
  log.append(entry);
  while (log.childElementCount > ANNOUNCED_KEPT) log.firstElementChild.remove();
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
