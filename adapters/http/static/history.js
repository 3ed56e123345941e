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

async function loadOlder() {
  if (state.loadingOlder || !state.hasOlder || state.oldestSeq === null) return;
  state.loadingOlder = true;
  const timeline = $("timeline");
  const fromBottom = timeline.scrollHeight - timeline.scrollTop;
  const page = await api(`messages?before=${state.oldestSeq}&limit=${PAGE}`);
  if (page) {
    for (const message of page.messages) insertMessage(message);
    if (page.messages.length) state.oldestSeq = page.messages[0].seq;
    state.hasOlder = page.has_more;
    renderOlderControls();
    // Keep the reader's place while older messages appear above.
    timeline.scrollTop = timeline.scrollHeight - fromBottom;
  }
  state.loadingOlder = false;
}

export function initHistoryPaging() {
  $("load-older").addEventListener("click", loadOlder);
  $("timeline").addEventListener("scroll", () => {
    if ($("timeline").scrollTop < LOAD_OLDER_WITHIN_PX) loadOlder();
  });
}
