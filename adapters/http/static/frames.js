// Frames from the server: the welcome (first or on resume), messages, edits and deletes,
// acknowledgements,
// presence, typing and refusals.

import { $, state } from "./state.js";
import { markLive, onPong, reconnect } from "./connection.js";
import { fillGap } from "./history.js";
import { noteSeen, onRead } from "./reads.js";
import { refreshRooms } from "./rooms.js";
import { cancelEdit, markPending, settle, transmit } from "./outbox.js";
import { onPresence, onTyping, resetPresence } from "./presence.js";
import { announce, clearTimeline, insertMessage, placeDivider, renderOlderControls, updateMessage } from "./render.js";
import { isNearBottom, scrollToBottom, setStatus, showNotice } from "./ui.js";

export function handle(frame) {
  switch (frame.type) {
    case "welcome": return onWelcome(frame);
    case "chat_message": return onMessage(frame.message);
    case "message_updated": return onUpdated(frame);
    case "read": return onRead(frame.seq);
    case "duplicate": return settle(frame.message.client_id);
    case "typing": return onTyping(frame.username, frame.is_typing);
    case "presence": return onPresence(frame);
    case "error": return onError(frame);
    case "pong": return onPong();
    default: return undefined;
  }
}

function onWelcome(welcome) {
  if (state.welcomed && welcome.last_seq < state.lastSeq) {
    // The server's history is shorter than what we showed: start over from its state.
    state.welcomed = false;
    state.lastSeq = 0;
    state.lastRev = 0;
    state.oldestSeq = null;
    clearTimeline();
    for (const item of state.outbox) $("messages").append(item.el);
    reconnect("reloading");
    return;
  }
  // With a token the server names us (its `sub`); that is the name our echoes carry.
  state.username = welcome.username;
  $("me").textContent = `as ${welcome.username}`;
  let divider = null;
  const entering = !state.welcomed;
  if (entering) {
    // The welcome's messages reflect every change up to `last_rev`.
    state.lastRev = welcome.last_rev ?? 0;
    for (const message of welcome.messages) insertMessage(message);
    state.readSeq = welcome.read_seq ?? 0;
    divider = placeDivider(state.readSeq);
    state.lastSeq = welcome.messages.length ? welcome.messages[welcome.messages.length - 1].seq : welcome.last_seq;
    state.oldestSeq = welcome.messages.length ? welcome.messages[0].seq : state.lastSeq + 1;
    state.hasOlder = welcome.has_more;
  } else {
    state.readSeq = Math.max(state.readSeq, welcome.read_seq ?? 0);
  }
  state.welcomed = true;
  markLive();
  renderOlderControls();
  // Entering with unread messages: show the first of them; otherwise the newest.
  if (divider) $("timeline").scrollTop += divider.getBoundingClientRect().top - $("timeline").getBoundingClientRect().top - 8;
  else scrollToBottom();
  resetPresence(welcome);
  setStatus("online", "online");
  // Everything not yet acknowledged goes again, with its client_id: no doubles.
  for (const item of state.outbox) transmit(item);
  noteSeen();
  if (entering) refreshRooms();
}

function onMessage(message) {
  if (message.seq <= state.lastSeq && state.rendered.has(message.seq)) return;
  const nearBottom = isNearBottom();
  if (message.seq > state.lastSeq + 1 && state.welcomed) {
    // Should not happen (the server orders and fills gaps); fetch the missing ones anyway.
    fillGap(state.lastSeq, message.seq);
  }
  const mine = message.username === state.username;
  if (!state.rendered.has(message.seq) && !mine) announce(message);
  insertMessage(message);
  state.lastSeq = Math.max(state.lastSeq, message.seq);
  if (mine && message.client_id) settle(message.client_id);
  onTyping(message.username, false);
  if (nearBottom || mine) scrollToBottom();
  noteSeen();
}

/** An edit or delete: the bubble shows the message as it now is; the rev is remembered. */
function onUpdated(frame) {
  state.lastRev = Math.max(state.lastRev, frame.rev);
  updateMessage(frame.message);
  if (frame.message.deleted && state.editing === frame.message.seq) cancelEdit();
}

function onError(frame) {
  const item = state.outbox.find((o) => o.clientId === frame.client_id);
  if (!item) return showNotice(frame.detail);
  if (frame.code === "rate_limited" || frame.code === "unavailable") {
    markPending(item, frame.code === "rate_limited" ? "sending soon (slow down)…" : "server busy, retrying…");
    setTimeout(() => transmit(item), frame.code === "rate_limited" ? 1500 : 3000);
    return showNotice(frame.code === "rate_limited" ? "You are sending too fast; your message will go out in a moment." : frame.detail);
  }
  // Refused for its content: it will never be accepted, so it leaves the outbox.
  settle(item.clientId);
  showNotice(`Not sent: ${frame.detail}`);
}
