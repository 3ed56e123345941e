// banter web app: plain JavaScript, no build step. User content is only ever set with
// textContent, never parsed as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ROOM_RE = /^[a-z0-9_-]{1,64}$/;
  const NAME_CHAR_RE = /^[\p{Alphabetic}\p{N}_.-]$/u;
  const PAGE = 50;
  const TYPING_REFRESH_MS = 2000;
  const TYPING_FALLBACK_MS = 7000;
  const KEEPALIVE_MS = 20000;

  const state = {
    room: "",
    username: "",
    token: new URLSearchParams(location.search).get("token"),
    ws: null,
    welcomed: false, // this page has had a welcome since entering the room
    live: false, // the current connection has been welcomed
    lastSeq: 0,
    oldestSeq: null,
    hasOlder: false,
    loadingOlder: false,
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

  // ---------- validation (the contract's rules, checked before anything is sent) ----------

  function validUsername(name) {
    const chars = [...name];
    return chars.length >= 1 && chars.length <= 32 && chars.every((c) => NAME_CHAR_RE.test(c));
  }

  function contentProblem(text) {
    const chars = [...text];
    if (chars.length === 0) return "Write something first.";
    if (chars.length > 4000) return `Messages are at most 4000 characters (this one has ${chars.length}).`;
    if (/^\s+$/u.test(text)) return "A message cannot be only spaces.";
    if (/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u.test(text)) return "The message contains a control character.";
    return null;
  }

  function newClientId() {
    const random = crypto.getRandomValues(new Uint32Array(2));
    return `w-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
  }

  // ---------- the lobby ----------

  function showLobby(message) {
    state.stopped = true;
    $("chat").hidden = true;
    $("lobby").hidden = false;
    const saved = localStorage.getItem("banter.username");
    if (saved && !$("lobby-username").value) $("lobby-username").value = saved;
    const error = $("lobby-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("lobby-username").focus();
  }

  $("lobby-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const username = $("lobby-username").value.trim();
    const room = $("lobby-room").value.trim();
    if (!validUsername(username)) {
      return showLobby("Names are 1–32 letters or digits (any script), '_', '-' or '.'.");
    }
    if (!ROOM_RE.test(room)) {
      return showLobby("Rooms are 1–64 of a–z, 0–9, '-' and '_'.");
    }
    localStorage.setItem("banter.username", username);
    history.replaceState(null, "", `/?room=${encodeURIComponent(room)}`);
    enter(username, room);
  });

  // ---------- entering and leaving a room ----------

  function outboxKey() {
    return `banter.outbox.${state.room}.${state.username}`;
  }

  function saveOutbox() {
    const items = state.outbox.map(({ clientId, text }) => ({ clientId, text }));
    if (items.length) localStorage.setItem(outboxKey(), JSON.stringify(items));
    else localStorage.removeItem(outboxKey());
  }

  function enter(username, room) {
    Object.assign(state, {
      username, room, welcomed: false, lastSeq: 0, oldestSeq: null, hasOlder: false,
      attempts: 0, stopped: false, outbox: [],
    });
    state.rendered.clear();
    state.online.clear();
    clearTyping();
    $("messages").replaceChildren();
    $("lobby").hidden = true;
    $("chat").hidden = false;
    $("room-name").textContent = `#${room}`;
    $("me").textContent = `as ${username}`;
    document.title = `#${room} · banter`;
    // Messages that were never acknowledged (the page was closed) are sent again.
    try {
      for (const { clientId, text } of JSON.parse(localStorage.getItem(outboxKey()) || "[]")) {
        queue(text, clientId);
      }
    } catch (_) {
      localStorage.removeItem(outboxKey());
    }
    renderOlderControls();
    connect();
    $("input").focus();
  }

  $("leave").addEventListener("click", () => {
    state.stopped = true;
    clearTimeout(state.reconnectTimer);
    if (state.ws) state.ws.close(1000, "left the room");
    history.replaceState(null, "", "/");
    showLobby();
  });

  // ---------- the connection ----------

  function setStatus(kind, text) {
    const status = $("status");
    status.dataset.state = kind;
    status.textContent = text;
  }

  function socketUrl() {
    const params = new URLSearchParams();
    if (state.token) params.set("token", state.token);
    else params.set("username", state.username);
    // After the first welcome, resume from the last message seen: nothing lost, nothing twice.
    if (state.welcomed) params.set("after", String(state.lastSeq));
    else params.set("history", String(PAGE));
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/chat/${encodeURIComponent(state.room)}/?${params}`;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (state.stopped) return;
    setStatus(state.attempts ? "reconnecting" : "connecting", state.attempts ? "reconnecting…" : "connecting…");
    const ws = new WebSocket(socketUrl());
    state.ws = ws;
    state.live = false;
    ws.onmessage = (event) => {
      if (state.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      handle(frame);
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.live = false;
      stopKeepalive();
      clearTyping();
      if (state.stopped) return;
      setStatus("offline", event.code === 1001 ? "server restarting…" : "offline");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    // Exponential backoff with jitter, so a restarted server is not hit by everyone at once.
    const base = Math.min(30000, 500 * 2 ** Math.min(state.attempts, 6));
    const delay = base * (0.5 + Math.random());
    state.attempts += 1;
    state.reconnectTimer = setTimeout(connect, delay);
  }

  window.addEventListener("online", () => {
    if (!state.ws && !state.stopped) connect();
  });

  function startKeepalive() {
    stopKeepalive();
    state.keepalive = setInterval(() => {
      const ws = state.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) return;
      if (state.awaitingPong) {
        // No answer to the last ping: the connection is dead even if the browser has not noticed.
        ws.close(4000, "no pong");
        return;
      }
      state.awaitingPong = true;
      ws.send(JSON.stringify({ type: "ping" }));
    }, KEEPALIVE_MS);
  }

  function stopKeepalive() {
    clearInterval(state.keepalive);
    state.awaitingPong = false;
  }

  function send(frame) {
    const ws = state.ws;
    // Frames go out only on a connection that has been welcomed.
    if (ws && ws.readyState === WebSocket.OPEN && state.live) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // ---------- frames from the server ----------

  function handle(frame) {
    switch (frame.type) {
      case "welcome": return onWelcome(frame);
      case "chat_message": return onMessage(frame.message);
      case "duplicate": return settle(frame.message.client_id);
      case "typing": return onTyping(frame.username, frame.is_typing);
      case "presence": return onPresence(frame);
      case "error": return onError(frame);
      case "pong": state.awaitingPong = false; return undefined;
      default: return undefined;
    }
  }

  function onWelcome(welcome) {
    if (state.welcomed && welcome.last_seq < state.lastSeq) {
      // The server's history is shorter than what we showed: start over from its state.
      state.welcomed = false;
      state.lastSeq = 0;
      state.oldestSeq = null;
      state.rendered.clear();
      $("messages").replaceChildren();
      for (const item of state.outbox) $("messages").append(item.el);
      state.ws.close(1000, "reloading");
      return;
    }
    if (!state.welcomed) {
      for (const message of welcome.messages) insertMessage(message);
      state.lastSeq = welcome.messages.length ? welcome.messages[welcome.messages.length - 1].seq : welcome.last_seq;
      state.oldestSeq = welcome.messages.length ? welcome.messages[0].seq : state.lastSeq + 1;
      state.hasOlder = welcome.has_more;
    }
    // With a token the server names us (its `sub`); that is the name our echoes carry.
    state.username = welcome.username;
    state.welcomed = true;
    state.live = true;
    renderOlderControls();
    scrollToBottom();
    state.attempts = 0;
    state.online = new Set(welcome.online);
    state.onlineCount = welcome.online_count;
    renderOnline();
    clearTyping();
    for (const name of welcome.typing) if (name !== state.username) onTyping(name, true);
    setStatus("online", "online");
    startKeepalive();
    // Everything not yet acknowledged goes again, with its client_id: no doubles.
    for (const item of state.outbox) transmit(item);
  }

  function onMessage(message) {
    if (message.seq <= state.lastSeq && state.rendered.has(message.seq)) return;
    const nearBottom = isNearBottom();
    if (message.seq > state.lastSeq + 1 && state.welcomed) {
      // Should not happen (the server orders and fills gaps); fetch the missing ones anyway.
      fillGap(state.lastSeq, message.seq);
    }
    insertMessage(message);
    state.lastSeq = Math.max(state.lastSeq, message.seq);
    if (message.username === state.username && message.client_id) settle(message.client_id);
    onTyping(message.username, false);
    if (nearBottom || message.username === state.username) scrollToBottom();
  }

  async function fillGap(from, to) {
    const page = await api(`messages?after=${from}&limit=${Math.min(200, to - from - 1)}`);
    if (page) for (const message of page.messages) if (message.seq < to) insertMessage(message);
  }

  function onPresence(frame) {
    if (frame.event === "join") state.online.add(frame.username);
    else {
      state.online.delete(frame.username);
      onTyping(frame.username, false);
    }
    state.onlineCount = frame.online_count;
    renderOnline();
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

  // ---------- typing ----------

  function onTyping(username, isTyping) {
    if (username === state.username) return;
    clearTimeout(state.typing.get(username));
    if (isTyping) {
      // The server ends typing after 6 s; this only guards against a lost "false".
      state.typing.set(username, setTimeout(() => onTyping(username, false), TYPING_FALLBACK_MS));
    } else {
      state.typing.delete(username);
    }
    renderTyping();
  }

  function clearTyping() {
    for (const timer of state.typing.values()) clearTimeout(timer);
    state.typing.clear();
    renderTyping();
  }

  function renderTyping() {
    const names = [...state.typing.keys()].sort();
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    $("typing").textContent = text;
    for (const li of $("online").children) li.classList.toggle("typing", state.typing.has(li.dataset.username));
  }

  $("input").addEventListener("input", () => {
    const input = $("input");
    autosize(input);
    const now = Date.now();
    if (input.value.trim()) {
      if (!state.typingActive || now - state.typingSentAt >= TYPING_REFRESH_MS) {
        if (send({ type: "typing", is_typing: true })) {
          state.typingActive = true;
          state.typingSentAt = now;
        }
      }
    } else if (state.typingActive) {
      send({ type: "typing", is_typing: false });
      state.typingActive = false;
    }
  });

  // ---------- sending ----------

  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });

  $("composer-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });

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

  function transmit(item) {
    if (!state.outbox.includes(item)) return;
    if (!send({ type: "chat_message", message: item.text, client_id: item.clientId })) {
      markPending(item, "waiting for the connection…");
    }
  }

  function markPending(item, text) {
    let note = item.el.querySelector(".state");
    if (!note) {
      note = document.createElement("div");
      note.className = "state";
      item.el.append(note);
    }
    note.textContent = text;
  }

  function settle(clientId) {
    const index = state.outbox.findIndex((o) => o.clientId === clientId);
    if (index < 0) return;
    const [item] = state.outbox.splice(index, 1);
    item.el.remove();
    saveOutbox();
  }

  // ---------- rendering ----------

  function formatTime(timestamp) {
    if (!timestamp) return "";
    return new Date(timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function renderBubble(message, mine) {
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

  function insertMessage(message) {
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
      new Date(li.dataset.time) - new Date(prev.dataset.time) < 5 * 60 * 1000;
    li.classList.toggle("continued", Boolean(close) && !li.classList.contains("pending"));
  }

  function renderOnline() {
    const list = $("online");
    const names = [...state.online].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    list.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      li.dataset.username = name;
      li.textContent = name;
      if (name === state.username) li.classList.add("me");
      if (state.typing.has(name)) li.classList.add("typing");
      return li;
    }));
    $("online-count").textContent = String(state.onlineCount);
    $("online-count-side").textContent = `(${state.onlineCount})`;
  }

  function renderOlderControls() {
    $("load-older").hidden = !state.hasOlder;
    $("history-start").hidden = state.hasOlder || !state.welcomed;
  }

  function showNotice(text) {
    const notice = $("notice");
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(state.noticeTimer);
    state.noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
  }

  function autosize(textarea) {
    textarea.style.height = "auto";
    textarea.style.height = `${Math.min(textarea.scrollHeight, 160)}px`;
  }

  function isNearBottom() {
    const t = $("timeline");
    return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
  }

  function scrollToBottom() {
    const t = $("timeline");
    t.scrollTop = t.scrollHeight;
  }

  // ---------- older history over REST ----------

  async function api(path) {
    const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
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

  $("load-older").addEventListener("click", loadOlder);
  $("timeline").addEventListener("scroll", () => {
    if ($("timeline").scrollTop < 60) loadOlder();
  });

  $("toggle-people").addEventListener("click", () => {
    const people = $("people");
    const open = !people.classList.contains("open");
    people.classList.toggle("open", open);
    $("toggle-people").setAttribute("aria-expanded", String(open));
  });

  // ---------- start ----------

  function start() {
    const path = location.pathname.replace(/\/+$/, "");
    const params = new URLSearchParams(location.search);
    // The original demo's pages: two people side by side in one room.
    if (path === "/client1") return enter("alice", "general");
    if (path === "/client2") return enter("bob", "general");
    const saved = localStorage.getItem("banter.username");
    const room = params.get("room");
    if (room && ROOM_RE.test(room)) $("lobby-room").value = room;
    if (room && saved && validUsername(saved) && ROOM_RE.test(room)) return enter(saved, room);
    return showLobby();
  }

  start();
})();
