// The page's one state object, the element lookup and the limits every module shares.

export const $ = (id) => document.getElementById(id);

// The contract's limits, counted in Unicode scalar values as the server counts them (not in
// UTF-16 units, which is what `maxlength` counts: an emoji is two of those).
export const MAX_MESSAGE_CHARS = 4000;
export const MAX_USERNAME_CHARS = 32;
// Messages per history page: the welcome's and each REST page's.
export const PAGE = 50;

export const state = {
  room: "",
  username: "",
  token: null, // with auth `jwt`: from `?token=` or the lobby (room.js)
  ws: null,
  welcomed: false, // this page has had a welcome since entering the room
  live: false, // the current connection has been welcomed
  lastSeq: 0,
  lastRev: 0, // the newest change (edit or delete) seen: resumes pass it as `rev`
  readSeq: 0, // how far this user has read the room, as far as this page knows
  editing: null, // the seq of the message in the composer being edited
  private: false, // the room on screen is a private room (only with a token)
  oldestSeq: null,
  hasOlder: false,
  rendered: new Map(), // seq -> <li>
  online: new Set(),
  onlineCount: 0,
  typing: new Map(), // username -> fallback timer
  outbox: [], // {clientId, text, el}
  attempts: 0,
  reconnectTimer: null,
  keepalive: null,
  awaitingPong: false,
  stopped: true,
  typingActive: false,
  typingSentAt: 0,
  noticeTimer: null,
};
