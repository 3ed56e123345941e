// Older history over REST: paging back on scroll or the "Load older" button, keeping the
// reader's place, and filling a gap in the live stream.

import { $, PAGE, state } from "./state.js";
import { insertMessage, renderOlderControls } from "./render.js";
import { showNotice } from "./ui.js";
import { authHeaders } from "./api.js";

// The REST API's largest page.
const MAX_PAGE = 200;
// How close to the top of the timeline (px) a scroll asks for older messages.
const LOAD_OLDER_WITHIN_PX = 60;

async function api(path) {
  const headers = authHeaders();
  try {
    const response = await fetch(`/api/rooms/${encodeURIComponent(state.room)}/${path}`, { headers });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      showNotice(problem.detail || `The server answered ${response.status}.`);
      return null;
    }
    return await response.json();
  } catch (_) {
    showNotice("Could not reach the server.");
    return null;
  }
}

/** Fetches the messages strictly between seqs `from` and `to`. */
export async function fillGap(from, to) {
  const page = await api(`messages?after=${from}&limit=${Math.min(MAX_PAGE, to - from - 1)}`);
  if (page) for (const message of page.messages) if (message.seq < to) insertMessage(message);
}

// The older page being loaded, if any: one at a time, and a second caller waits for it.
let loading = null;

/** Loads the page of `limit` messages before the oldest shown; resolves true if one came. */
function loadOlder(limit = PAGE) {
  if (!loading && state.hasOlder && state.oldestSeq !== null) {
    loading = loadPage(limit).finally(() => { loading = null; });
  }
  return loading ?? Promise.resolve(false);
}

async function loadPage(limit) {
  const timeline = $("timeline");
  const fromBottom = timeline.scrollHeight - timeline.scrollTop;
  const page = await api(`messages?before=${state.oldestSeq}&limit=${limit}`);
  if (!page) return false;
  for (const message of page.messages) insertMessage(message);
  if (page.messages.length) state.oldestSeq = page.messages[0].seq;
  state.hasOlder = page.has_more;
  renderOlderControls();
  // Keep the reader's place while older messages appear above.
  timeline.scrollTop = timeline.scrollHeight - fromBottom;
  return true;
}

/** Loads older pages until message `seq` is shown (a search jumps to it); true if it is. */
export async function loadUntil(seq) {
  const room = state.room;
  while (!state.rendered.has(seq) && state.hasOlder && state.room === room && state.oldestSeq > seq) {
    // Pages ending a little past `seq`, as big as allowed: a jump far back takes few requests.
    const limit = Math.min(MAX_PAGE, Math.max(PAGE, state.oldestSeq - seq + 10));
    if (!(await loadOlder(limit))) break;
  }
  return state.room === room && state.rendered.has(seq);
}

export function initHistoryPaging() {
  $("load-older").addEventListener("click", () => loadOlder());
  $("timeline").addEventListener("scroll", () => {
    if ($("timeline").scrollTop < LOAD_OLDER_WITHIN_PX) loadOlder();
  });
}
