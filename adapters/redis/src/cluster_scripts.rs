//! The presence scripts for a Redis Cluster.
//!
//! A script runs on one shard and may touch only the keys of one slot, so the one-server
//! scripts ([`crate::scripts`]), which change a room and the node registry in one step, are
//! split in two kinds here (the key names are [`crate::keys::Keys`]'):
//!
//! - **Room scripts** run in the room's slot. They change the room's counts and announce joins
//!   and leaves on the room's shard channel (`SPUBLISH`) in the same step, so every node still
//!   sees a room's presence events in the order its shard decided them. A node's connections
//!   in a room are a hash in the room's slot, named after the node's *incarnation*
//!   (`<node id>.<n>`).
//! - **Index scripts** run in the namespace's own slot: the nodes and their heartbeats (on that
//!   shard's clock), the rooms each node has had connections in, the sweeps under way.
//!
//! A dead node is swept in three steps: a heartbeat *claims* it (removes it from the nodes and
//! moves its rooms to a sweep list, atomically), then each room is swept by a room script,
//! then the sweep is finished. Any node's heartbeat picks up a sweep that is not finished, and
//! sweeping a room twice changes nothing, so a sweeper that dies half-way leaves nothing behind.
//! A node that learns it was claimed (its heartbeat finds it unknown, or a connect has to
//! register it) takes a new incarnation and restores its counts under it, so a sweep still
//! running on its old hashes cannot remove what it restores.

use std::sync::LazyLock;

use redis::Script;

use crate::scripts::{CLOCK, FILL};

/// The room scripts' prelude (after [`FILL`]). KEYS: users, online, typing, typing-by, channel (then what the
/// script adds); ARGV[1]: the event templates, ARGV[2]: the room.
///
/// `add_user`/`drop_user` answer `{1 joined | 2 left | 0 unchanged, online count}`.
const ROOM: &str = r#"
local users, online, typing, channel = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local T = cjson.decode(ARGV[1])
local room = ARGV[2]
local function announce(name, user, count)
  redis.call('SPUBLISH', channel, fill(T, name, room, user, count))
end
local function add_user(user, n)
  local total = redis.call('HINCRBY', users, user, n)
  if total == n then
    redis.call('ZADD', online, 0, user)
    local count = redis.call('ZCARD', online)
    announce('join', user, count)
    return {1, count}
  end
  return {0, redis.call('ZCARD', online)}
end
local function drop_user(user, n)
  local total = redis.call('HINCRBY', users, user, -n)
  if total > 0 then
    return {0, redis.call('ZCARD', online)}
  end
  redis.call('HDEL', users, user)
  redis.call('ZREM', online, user)
  -- Someone who left is not listed as typing (their node ends the indicator itself).
  redis.call('ZREM', typing, user)
  local count = redis.call('ZCARD', online)
  if count == 0 then
    redis.call('DEL', users)
  end
  announce('leave', user, count)
  return {2, count}
end
"#;

/// KEYS[6]: the node's connections in the room. ARGV[3]: user.
const CONNECT: &str = r#"
redis.call('HINCRBY', KEYS[6], ARGV[3], 1)
return add_user(ARGV[3], 1)
"#;

/// KEYS[6]: the node's connections in the room. ARGV[3]: user. A connection this incarnation
/// does not hold (swept, or counted under an older incarnation) changes nothing.
const DISCONNECT: &str = r#"
local user = ARGV[3]
local mine = tonumber(redis.call('HGET', KEYS[6], user) or '0')
if mine <= 0 then
  return {0, redis.call('ZCARD', online)}
end
if mine == 1 then
  redis.call('HDEL', KEYS[6], user)
else
  redis.call('HINCRBY', KEYS[6], user, -1)
end
return drop_user(user, 1)
"#;

/// KEYS[6]: the node's connections in the room. ARGV[3…]: (user, connections) pairs, the
/// node's own count of each. Sets the node's counts to them, announcing the joins and leaves
/// this causes. Returns `{joined (0/1), online count}`.
const RESTORE: &str = r#"
local joined = 0
for i = 3, #ARGV, 2 do
  local user, want = ARGV[i], tonumber(ARGV[i + 1])
  local have = tonumber(redis.call('HGET', KEYS[6], user) or '0')
  if want ~= have then
    if want > 0 then
      redis.call('HSET', KEYS[6], user, want)
    else
      redis.call('HDEL', KEYS[6], user)
    end
    if want > have then
      if add_user(user, want - have)[1] == 1 then joined = 1 end
    else
      drop_user(user, have - want)
    end
  end
end
return {joined, redis.call('ZCARD', online)}
"#;

/// KEYS[6]: a claimed node's connections in the room. ARGV[3]: `1` to also announce the end of
/// the typing of those who left (a dead node cannot). Removes them; returns `{entries removed,
/// online count}`. A second sweep of the same room finds nothing.
const SWEEP: &str = r#"
local entries = redis.call('HGETALL', KEYS[6])
local removed = 0
for i = 1, #entries, 2 do
  local user = entries[i]
  local outcome = drop_user(user, tonumber(entries[i + 1]))
  if ARGV[3] == '1' and outcome[1] == 2 then
    announce('typing_stopped', user)
  end
  removed = removed + 1
end
redis.call('DEL', KEYS[6])
return {removed, redis.call('ZCARD', online)}
"#;

/// The index scripts' prelude (after [`CLOCK`], the index shard's clock): `claim`. KEYS[1]: nodes, KEYS[2]:
/// sweeping; `prefix` the index slot's key prefix.
///
/// `claim` takes a node out of the registry and moves its rooms onto its sweep list (merged
/// with one a sweeper left unfinished). The keys it builds carry the index's hash tag, so they
/// are in the script's slot.
const INDEX: &str = r#"
local function claim(prefix, node)
  redis.call('ZREM', KEYS[1], node)
  local rooms = prefix .. 'node:' .. node .. ':rooms'
  if redis.call('EXISTS', rooms) == 1 then
    local sweep = prefix .. 'sweep:' .. node .. ':rooms'
    redis.call('SUNIONSTORE', sweep, sweep, rooms)
    redis.call('DEL', rooms)
  end
  redis.call('SADD', KEYS[2], node)
end
"#;

/// KEYS[1]: nodes, KEYS[2]: the node's rooms. ARGV: node, rooms…. Records that the node has
/// connections in these rooms (before it adds them, so a sweep finds them) and registers the
/// node if the registry did not hold it. Returns 1 when it had to register it.
const REGISTER: &str = r#"
local registered = redis.call('ZADD', KEYS[1], 'NX', now_ms(), ARGV[1])
for i = 2, #ARGV do
  redis.call('SADD', KEYS[2], ARGV[i])
end
return registered
"#;

/// KEYS[1]: nodes, KEYS[2]: sweeping. ARGV: node, dead-after ms, prefix. Refreshes the node if
/// the registry holds it (one it does not hold takes a new incarnation instead), claims every
/// node silent for longer than dead-after, and returns `{1 known | 0, nodes to sweep…}`.
const HEARTBEAT: &str = r#"
local node, dead_after, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local known = 0
if redis.call('ZSCORE', KEYS[1], node) then
  known = 1
  redis.call('ZADD', KEYS[1], now, node)
end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - dead_after)) do
  claim(prefix, dead)
end
local out = { known }
for _, pending in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  table.insert(out, pending)
end
return out
"#;

/// KEYS[1]: nodes, KEYS[2]: sweeping. ARGV: node, prefix. Claims the node itself (a clean
/// shutdown: it sweeps its own rooms next).
const CLAIM: &str = r#"
claim(ARGV[2], ARGV[1])
return 0
"#;

/// KEYS[1]: sweeping, KEYS[2]: the node's sweep list. ARGV: node, rooms swept…. Takes the swept
/// rooms off the list; once it is empty the sweep is finished. (Rooms a new claim added
/// meanwhile stay for the next sweeper.)
const SWEPT: &str = r#"
for i = 2, #ARGV do
  redis.call('SREM', KEYS[2], ARGV[i])
end
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[1], ARGV[1])
end
return 0
"#;

fn room(body: &str) -> Script {
    Script::new(&format!("{FILL}{ROOM}{body}"))
}

fn index(body: &str) -> Script {
    Script::new(&format!("{CLOCK}{INDEX}{body}"))
}

pub(crate) static CONNECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(CONNECT));
pub(crate) static DISCONNECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(DISCONNECT));
pub(crate) static RESTORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(RESTORE));
pub(crate) static SWEEP_SCRIPT: LazyLock<Script> = LazyLock::new(|| room(SWEEP));
pub(crate) static REGISTER_SCRIPT: LazyLock<Script> = LazyLock::new(|| index(REGISTER));
pub(crate) static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| index(HEARTBEAT));
pub(crate) static CLAIM_SCRIPT: LazyLock<Script> = LazyLock::new(|| index(CLAIM));
pub(crate) static SWEPT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SWEPT));
