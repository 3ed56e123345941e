// Read positions: tells the server how far this page has read the room (debounced, only ever
// upward), and follows the position reported by this user's other tabs.

import { $, state } from "./state.js";
import { send } from "./connection.js";

// Reports wait for scrolling and arrivals to settle.
const REPORT_MS = 600;

let timer = null;

/** The newest message on screen or above it, 0 when the page is not being looked at. */
function seenUpTo() {
  if (document.visibilityState !== "visible" || $("chat").hidden) return 0;
  const bottom = $("timeline").getBoundingClientRect().bottom;
  let seen = 0;
  for (const [seq, li] of state.rendered) {
    if (seq > seen && li.getBoundingClientRect().top < bottom - 8) seen = seq;
  }
  return seen;
}

function report() {
  const seq = seenUpTo();
  if (seq > state.readSeq && send({ type: "read", seq })) state.readSeq = seq;
}

/** Something may have come into view: report it once things settle. */
export function noteSeen() {
  clearTimeout(timer);
  timer = setTimeout(report, REPORT_MS);
}

/** Another tab of this user read further. */
export function onRead(seq) {
  state.readSeq = Math.max(state.readSeq, seq);
}

export function initReads() {
  $("timeline").addEventListener("scroll", noteSeen, { passive: true });
  document.addEventListener("visibilitychange", noteSeen);
  window.addEventListener("focus", noteSeen);
}
