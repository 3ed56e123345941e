// Node.js peer of the side-by-side benchmark (bench/run).
//
// node server.js LISTEN DB_PATH   (e.g. 127.0.0.1:8093 /tmp/node.db)
//
// Speaks the benchmark's protocol subset: GET /ws/chat/{room}/?username=NAME upgrades, the
// first frame is a welcome, and each {"type":"chat_message","message":TEXT} is stored in SQLite
// (WAL, synchronous=FULL like banter unless BENCH_SQLITE_SYNCHRONOUS says NORMAL: one commit per
// message, synchronously, on the event loop) and only then sent to every connection of the room, the sender's included.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');
const Database = require('better-sqlite3');

const [host, port] = (process.argv[2] || '127.0.0.1:8093').split(':');
const dbPath = process.argv[3] || 'node-bench.db';

const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
// FULL by default, like banter (better-sqlite3 builds SQLite with NORMAL as the WAL default);
// bench/run passes BENCH_SQLITE_SYNCHRONOUS=NORMAL when asked to.
const synchronous = (process.env.BENCH_SQLITE_SYNCHRONOUS || 'FULL').toUpperCase();
if (!['FULL', 'NORMAL'].includes(synchronous)) throw new Error(`BENCH_SQLITE_SYNCHRONOUS=${synchronous}`);
db.pragma(`synchronous = ${synchronous}`);
db.pragma('busy_timeout = 5000');
db.exec(`CREATE TABLE IF NOT EXISTS messages (
  room TEXT NOT NULL,
  seq INTEGER NOT NULL,
  username TEXT NOT NULL,
  content TEXT NOT NULL,
  client_id TEXT,
  timestamp TEXT NOT NULL,
  PRIMARY KEY (room, seq)
)`);
const insert = db.prepare(
  'INSERT INTO messages (room, seq, username, content, client_id, timestamp) VALUES (?, ?, ?, ?, ?, ?)');
const lastSeq = db.prepare('SELECT COALESCE(MAX(seq), 0) AS seq FROM messages WHERE room = ?');

// room name -> { seq, clients: Set<WebSocket> }
const rooms = new Map();

function roomOf(name) {
  let room = rooms.get(name);
  if (!room) {
    room = { seq: lastSeq.get(name).seq, clients: new Set() };
    rooms.set(name, room);
  }
  return room;
}

const ROOM = /^[a-z0-9_-]{1,64}$/;
const USERNAME = /^[\p{L}\p{N}_.-]{1,32}$/u;

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
const wss = new WebSocketServer({ noServer: true, maxPayload: 65536, perMessageDeflate: false });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const m = /^\/ws\/chat\/([^/]+)\/?$/.exec(url.pathname);
  const username = url.searchParams.get('username') || '';
  if (!m || !ROOM.test(m[1]) || !USERNAME.test(username)) {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => connected(ws, m[1], username));
});

function connected(ws, name, username) {
  const room = roomOf(name);
  room.clients.add(ws);
  ws.send(JSON.stringify({
    type: 'welcome', room: name, username, messages: [], has_more: room.seq > 0,
    last_seq: room.seq, online: [], online_count: 0, typing: [],
  }));
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || frame.type !== 'chat_message' || typeof frame.message !== 'string') return;
    const clientId = typeof frame.client_id === 'string' ? frame.client_id : null;
    const message = {
      room: name, seq: room.seq + 1, username, content: frame.message,
      timestamp: new Date().toISOString(), client_id: clientId,
    };
    insert.run(name, message.seq, username, message.content, clientId, message.timestamp);
    room.seq = message.seq;
    const out = JSON.stringify({ type: 'chat_message', message });
    for (const client of room.clients) {
      if (client.readyState === 1) client.send(out);
    }
  });
  ws.on('close', () => {
    room.clients.delete(ws);
    if (room.clients.size === 0) rooms.delete(name);
  });
  ws.on('error', () => {});
}

server.listen(Number(port), host, 4096, () => {
  console.error(`node listening on http://${host}:${port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { db.close(); process.exit(0); });
}
