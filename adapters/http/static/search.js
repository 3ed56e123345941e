// Message search: the form in the header (this room, or every room the user may read), the
// results panel with the matches in <mark>s, and jumping from a result to the message.

import { $, state } from "./state.js";
import { request } from "./api.js";
import { loadUntil } from "./history.js";
import { showNotice } from "./ui.js";

// Results per request, and the most one request may ask for (the contract's limits).
const PAGE = 20;
const MAX_LIMIT = 100;
// Longer messages are shown as an excerpt of this many characters around the first match.
const EXCERPT = 240;
// How long a message jumped to stays highlighted.
const FOUND_MS = 3000;
// How long a jump into another room waits for its welcome.
const SWITCH_TIMEOUT_MS = 15000;

let enterRoom = () => {};
let last = null; // the search on screen: {q, all, room, results}
let asked = 0; // numbers the requests: the answer to an older one is dropped

function setStatus(text, refused = false) {
  const status = $("search-status");
  status.textContent = text;
  status.classList.toggle("error", refused);
}

/** `content` as text nodes and <mark>s; `highlights` count code points, not UTF-16 units. */
function marked(content, highlights) {
  const chars = Array.from(content);
  const ranges = [...highlights].sort((a, b) => a[0] - b[0]);
  let from = 0;
  let to = chars.length;
  if (to > EXCERPT) {
    from = Math.max(0, Math.min((ranges[0]?.[0] ?? 0) - EXCERPT / 4, to - EXCERPT));
    to = from + EXCERPT;
  }
  const text = document.createElement("span");
  text.className = "text";
  if (from > 0) text.append("…");
  let at = from;
  for (const [start, end] of ranges) {
    const s = Math.max(start, at);
    const e = Math.min(end, to);
    if (e <= s) continue;
    const mark = document.createElement("mark");
    mark.textContent = chars.slice(s, e).join("");
    text.append(chars.slice(at, s).join(""), mark);
    at = e;
  }
  text.append(chars.slice(at, to).join(""));
  if (to < chars.length) text.append("…");
  return text;
}

function resultItem(result) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "hit";
  button.dataset.room = result.room;
  button.dataset.seq = String(result.seq);
  const meta = document.createElement("span");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = result.username;
  const when = document.createElement("time");
  when.dateTime = result.timestamp;
  when.textContent = new Date(result.timestamp).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  meta.append(who, " ", when);
  if (last.all || result.room !== state.room) {
    const room = document.createElement("span");
    room.className = "in-room";
    room.textContent = `#${result.room}`;
    meta.append(" · ", room);
  }
  if (result.edited_at) meta.append(" · edited");
  button.append(meta, marked(result.content, result.highlights ?? []));
  button.addEventListener("click", () => jump(result.room, result.seq));
  const li = document.createElement("li");
  li.append(button);
  return li;
}

/** Runs the search in the form, or with `more` the next results of the one on screen. */
async function search(more = false) {
  const q = more ? last.q : $("search-input").value.trim();
  if (!q) return;
  const all = more ? last.all : $("search-all").checked;
  const room = more ? last.room : state.room;
  const shown = more ? last.results.length : 0;
  // A room's search pages with `before`; the global one has no cursor, so it asks for more.
  const params = new URLSearchParams({ q, limit: String(all ? Math.min(MAX_LIMIT, shown + PAGE) : PAGE) });
  if (more && !all) params.set("before", String(last.results[shown - 1].seq));
  const mine = ++asked;
  const panel = $("search-results");
  panel.hidden = false;
  panel.setAttribute("aria-busy", "true");
  setStatus("Searching…");
  const path = all ? "/api/search" : `/api/rooms/${encodeURIComponent(room)}/search`;
  const answer = await request("GET", `${path}?${params}`);
  if (mine !== asked) return;
  panel.setAttribute("aria-busy", "false");
  if (!answer.ok) {
    if (!more) {
      last = null;
      $("search-list").replaceChildren();
      $("search-more").hidden = true;
    }
    setStatus(answer.status === 0 ? "Could not reach the server." : answer.body.detail || `The server answered ${answer.status}.`, true);
    return;
  }
  const kept = more && !all ? last.results : [];
  last = { q, all, room, results: [...kept, ...(answer.body.results ?? [])] };
  $("search-list").replaceChildren(...last.results.map(resultItem));
  const hasMore = Boolean(answer.body.has_more) && !(all && last.results.length >= MAX_LIMIT);
  $("search-more").hidden = !hasMore;
  const count = last.results.length;
  setStatus(count ? `${count}${hasMore ? "+" : ""} message${count === 1 ? "" : "s"} found` : "No messages found");
  // "More results" keeps the keyboard where the new results start.
  if (more) $("search-list").children[shown]?.querySelector("button").focus();
}

function close(refocus) {
  $("search-results").hidden = true;
  if (refocus) $("search-input").focus();
}

/** Waits for the welcome of `room`, just switched to; false if it did not come. */
async function welcomed(room) {
  for (let waited = 0; waited < SWITCH_TIMEOUT_MS; waited += 50) {
    if (state.room !== room || state.stopped) return false;
    if (state.welcomed) return true;
    await new Promise((ok) => { setTimeout(ok, 50); });
  }
  return false;
}

/** Shows message `seq` of `room`: switches rooms, loads older history until it is there. */
async function jump(room, seq) {
  close(false);
  if (room !== state.room) {
    enterRoom(room);
    if (!(await welcomed(room))) return;
  }
  if (!(await loadUntil(seq))) {
    showNotice("That message could not be shown.");
    return;
  }
  const li = state.rendered.get(seq);
  li.scrollIntoView({ block: "center" });
  li.classList.add("found");
  li.tabIndex = -1;
  li.focus({ preventScroll: true });
  setTimeout(() => li.classList.remove("found"), FOUND_MS);
}

/** Escape closes the panel; the arrow keys move through the results. */
function onKey(event) {
  if ($("search-results").hidden) return;
  if (event.key === "Escape") {
    event.preventDefault();
    event.stopPropagation(); // the drawer, under the panel, stays as it is
    close(true);
    return;
  }
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const hits = [...$("search-list").querySelectorAll(".hit")];
  const at = hits.indexOf(document.activeElement);
  if (!hits.length || (at < 0 && event.key === "ArrowUp")) return;
  event.preventDefault();
  const next = at < 0 ? 0 : Math.max(0, Math.min(hits.length - 1, at + (event.key === "ArrowDown" ? 1 : -1)));
  hits[next].focus();
}

/** `onSwitch(room)` enters another room, for a result from there. */
export function initSearch(onSwitch) {
  enterRoom = onSwitch;
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("search-all").addEventListener("change", () => search());
  $("search-more").addEventListener("click", () => search(true));
  $("search-close").addEventListener("click", () => close(true));
  $("search").addEventListener("keydown", onKey);
  $("search-results").addEventListener("keydown", onKey);
}
