//! The Lua scripts that keep presence in Redis, and what their answers mean. Each runs
//! atomically on the server, so a decision (first connection, last connection, a dead node's
//! users) and its announcement on the room's channel happen in one step: every subscriber sees
//! joins and leaves in the order Redis decided them, whichever node caused them.
//!
//! Keys, under the namespace `P` (default `banter`):
//! - `P:nodes` — sorted set, node id → last heartbeat (Redis server time, ms);
//! - `P:node:<node>:rooms` — set of rooms where the node has connections;
//! - `P:node:<node>:room:<room>` — hash, user → the node's connections of that user;
//! - `P:users:<room>` — hash, user → connections on all nodes;
//! - `P:online:<room>` — sorted set (all scores 0, so ordered by bytes), the online users;
//! - `P:rooms` — sorted set (scores 0), rooms with someone online;
//! - `P:typing:<room>` — sorted set, typist → when their listing lapses (server time, ms);
//! - `P:room:<room>` — the room's pub/sub channel (events as [`crate::wire::RedisEvent`] JSON).
//!
//! The scripts that announce take the event templates of [`crate::wire::script_templates`] as
//! their second argument and only paste names and counts into them: the payload's shape is
//! defined in Rust alone.
//!
//! These scripts build the node-level keys inside, so they serve one server (or a primary with
//! replicas) only; a Redis Cluster runs [`crate::cluster_scripts`] instead. The typing and
//! online scripts take their keys as `KEYS` and serve both ([`crate::keys::Keys`] names them).

use std::sync::LazyLock;

use banter_domain::PresenceChange;
use redis::Script;

use crate::RedisAdapterError;

/// The namespace, prepended to every one-server script that changes presence.
const BASE: &str = r#"
local P = ARGV[1]
"#;

/// Pastes names and counts into an event template of [`crate::wire::script_templates`]
/// (`T`, decoded): the payload's shape stays defined in Rust alone. Shared by both
/// topologies' announcing scripts.
pub(crate) const FILL: &str = r#"
local function fill(T, name, room, user, count)
  local values = { room = cjson.encode(room), user = cjson.encode(user) }
  if count then values.count = string.format('%d', count) end
  local parts, out = T[name], {}
  for i = 1, #parts do
    if i % 2 == 1 then out[i] = parts[i] else out[i] = values[parts[i]] end
  end
  return table.concat(out)
end
"#;

/// Shared helpers of the scripts that change presence (after [`BASE`]); `ARGV[2]` holds the
/// event templates.
///
/// `drop_user` takes `n` connections of `user` off the room's total and announces a leave when
/// none are left; returns `{2, count}` for a leave, `{0, count}` otherwise.
const ANNOUNCING: &str = r#"
local T = cjson.decode(ARGV[2])
-- Publishes the event of template `name` (join, leave or typing_stopped) on the room's channel.
local function announce(name, room, user, count)
  redis.call('PUBLISH', P .. ':room:' .. room, fill(T, name, room, user, count))
end
local function add_user(room, user, n)
  local total = redis.call('HINCRBY', P .. ':users:' .. room, user, n)
  local online = P .. ':online:' .. room
  if total == n then
    redis.call('ZADD', online, 0, user)
    redis.call('ZADD', P .. ':rooms', 0, room)
    local count = redis.call('ZCARD', online)
    announce('join', room, user, count)
    return {1, count}
  end
  return {0, redis.call('ZCARD', online)}
end
local function drop_user(room, user, n)
  local users = P .. ':users:' .. room
  local online = P .. ':online:' .. room
  local total = redis.call('HINCRBY', users, user, -n)
  if total > 0 then
    return {0, redis.call('ZCARD', online)}
  end
  redis.call('HDEL', users, user)
  redis.call('ZREM', online, user)
  -- Someone who left is not listed as typing (their node ends the indicator itself).
  redis.call('ZREM', P .. ':typing:' .. room, user)
  local count = redis.call('ZCARD', online)
  if count == 0 then
    redis.call('ZREM', P .. ':rooms', room)
    redis.call('DEL', users)
  end
  announce('leave', room, user, count)
  return {2, count}
end
-- Removes `node` and every connection it holds, announcing the leaves; with `end_typing`, also
-- the end of the typing of those who left (a dead node cannot send it). Returns how many
-- (room, user) entries the node held.
local function remove_node(node, end_typing)
  local removed = 0
  local rooms_key = P .. ':node:' .. node .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', rooms_key)) do
    local mine_key = P .. ':node:' .. node .. ':room:' .. room
    local entries = redis.call('HGETALL', mine_key)
    for i = 1, #entries, 2 do
      local user = entries[i]
      local outcome = drop_user(room, user, tonumber(entries[i + 1]))
      if end_typing and outcome[1] == 2 then
        announce('typing_stopped', room, user)
      end
      removed = removed + 1
    end
    redis.call('DEL', mine_key)
  end
  redis.call('DEL', rooms_key)
  redis.call('ZREM', P .. ':nodes', node)
  return removed
end
"#;

/// ARGV: namespace, templates, node, room, user. Returns `{1 joined | 0 unchanged, online
/// count, 1 if the node had to be registered}`. Registering an unknown node (Redis restarted,
/// or swept it) means its connections are swept if it dies before its next heartbeat.
const CONNECT: &str = r#"
local node, room, user = ARGV[3], ARGV[4], ARGV[5]
local registered = redis.call('ZADD', P .. ':nodes', 'NX', now_ms(), node)
redis.call('HINCRBY', P .. ':node:' .. node .. ':room:' .. room, user, 1)
redis.call('SADD', P .. ':node:' .. node .. ':rooms', room)
local result = add_user(room, user, 1)
table.insert(result, registered)
return result
"#;

/// ARGV: namespace, templates, node, room, user. Returns `{2 left | 0 unchanged, online
/// count}`. A connection this node does not hold (already swept as dead) changes nothing.
const DISCONNECT: &str = r#"
local node, room, user = ARGV[3], ARGV[4], ARGV[5]
local mine_key = P .. ':node:' .. node .. ':room:' .. room
local mine = tonumber(redis.call('HGET', mine_key, user) or '0')
if mine <= 0 then
  return {0, redis.call('ZCARD', P .. ':online:' .. room)}
end
if mine == 1 then
  redis.call('HDEL', mine_key, user)
  if redis.call('HLEN', mine_key) == 0 then
    redis.call('SREM', P .. ':node:' .. node .. ':rooms', room)
  end
else
  redis.call('HINCRBY', mine_key, user, -1)
end
return drop_user(room, user, 1)
"#;

/// What a connect or disconnect script answered: `{code, online count[, node registered]}`.
pub(crate) struct ChangeAnswer {
    pub(crate) change: PresenceChange,
    /// Redis did not know this node (it restarted, or swept us): the connect registered it
    /// again, and its other connections must follow.
    pub(crate) node_registered: bool,
}

impl ChangeAnswer {
    pub(crate) fn read(answer: &[i64]) -> Result<Self, RedisAdapterError> {
        let (code, count, node_registered) = match answer {
            [code, count] => (*code, *count, false),
            [code, count, registered] => (*code, *count, *registered == 1),
            other => {
                return Err(RedisAdapterError::Protocol(format!(
                    "presence script answered {other:?}"
                )));
            }
        };
        let online_count = u64::try_from(count).unwrap_or(0);
        let change = match code {
            1 => PresenceChange::Joined { online_count },
            2 => PresenceChange::Left { online_count },
            _ => PresenceChange::Unchanged { online_count },
        };
        Ok(Self {
            change,
            node_registered,
        })
    }
}

/// ARGV: namespace, templates, node, dead-after ms. Refreshes the node, then removes every
/// node silent for longer than dead-after, with its connections (announcing the leaves).
/// Returns `{1 if the node was known | 0, connections swept}`.
const HEARTBEAT: &str = r#"
local node, dead_after = ARGV[3], tonumber(ARGV[4])
local nodes = P .. ':nodes'
local now = now_ms()
local known = redis.call('ZSCORE', nodes, node)
redis.call('ZADD', nodes, now, node)
local swept = 0
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', now - dead_after)) do
  swept = swept + remove_node(dead, true)
end
if known then return {1, swept} end
return {0, swept}
"#;

/// ARGV: namespace, templates, node, then (room, user, connections) triples. Sets the node's
/// counts to what the node knows it holds: after Redis forgot it (a restart, or the node was
/// swept while it was only slow), or after a change whose outcome the node never heard (a
/// timeout). Announces the joins and leaves this causes.
const RESTORE: &str = r#"
local node = ARGV[3]
for i = 4, #ARGV, 3 do
  local room, user, want = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local mine_key = P .. ':node:' .. node .. ':room:' .. room
  local have = tonumber(redis.call('HGET', mine_key, user) or '0')
  if want ~= have then
    if want > 0 then
      redis.call('HSET', mine_key, user, want)
      redis.call('SADD', P .. ':node:' .. node .. ':rooms', room)
    else
      redis.call('HDEL', mine_key, user)
      if redis.call('HLEN', mine_key) == 0 then
        redis.call('SREM', P .. ':node:' .. node .. ':rooms', room)
      end
    end
    if want > have then
      add_user(room, user, want - have)
    else
      drop_user(room, user, have - want)
    end
  end
end
return 0
"#;

/// ARGV: namespace, templates, node. Removes the node and its connections (a clean shutdown).
const LEAVE: &str = r#"
remove_node(ARGV[3], false)
return 0
"#;

/// The clock of the server that runs the script (on a cluster, the shard of the keys it is
/// given: every script that reads or writes a room's typing list runs on the room's).
pub(crate) const CLOCK: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// KEYS: typing, typing-by ([`crate::keys::Keys::room`]). ARGV: user, listed for (ms; 0 when
/// they stopped typing), node. Returns 1 when the user was listed (not lapsed) before. A
/// listing remembers the node that refreshed it last, which alone announces its lapse (see
/// END_TYPING). Both topologies.
const SET_TYPING: &str = r#"
local key, owners = KEYS[1], KEYS[2]
local user, ttl, node = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local listed_until = tonumber(redis.call('ZSCORE', key, user))
local was_listed = 0
if listed_until and listed_until > now then
  was_listed = 1
end
if ttl > 0 then
  redis.call('ZADD', key, now + ttl, user)
  redis.call('HSET', owners, user, node)
  -- The whole set goes when its last typist lapses, so idle rooms leave nothing behind.
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
  if redis.call('PTTL', owners) < ttl then
    redis.call('PEXPIRE', owners, ttl)
  end
else
  redis.call('ZREM', key, user)
  redis.call('HDEL', owners, user)
end
return was_listed
"#;

/// KEYS: typing, typing-by. ARGV: user, node. The node's indicator for the user lapsed: ends
/// the listing and returns 1 if this node refreshed it last; returns 0 (and leaves the listing
/// to its owner) if another node did, or if it was ended already (a post, a stop).
const END_TYPING: &str = r#"
local key, owners = KEYS[1], KEYS[2]
local user, node = ARGV[1], ARGV[2]
local owner = redis.call('HGET', owners, user)
if owner ~= node then
  return 0
end
redis.call('ZREM', key, user)
redis.call('HDEL', owners, user)
return 1
"#;

/// KEYS: typing. Returns the typists whose listing has not lapsed.
const TYPING: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// KEYS: online. ARGV: lex start (`-` or `(name`), count. Returns `{online count, names…}`.
const ONLINE: &str = r#"
local online, start, count = KEYS[1], ARGV[1], tonumber(ARGV[2])
local names = redis.call('ZRANGEBYLEX', online, start, '+', 'LIMIT', 0, count)
table.insert(names, 1, redis.call('ZCARD', online))
return names
"#;

/// ARGV: namespace, lex start, count. Returns `{room, count, room, count, …}`.
const OCCUPIED: &str = r#"
local P, start, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for _, room in ipairs(redis.call('ZRANGEBYLEX', P .. ':rooms', start, '+', 'LIMIT', 0, count)) do
  table.insert(out, room)
  table.insert(out, redis.call('ZCARD', P .. ':online:' .. room))
end
return out
"#;

fn with_clock(body: &str) -> Script {
    Script::new(&format!("{CLOCK}{body}"))
}

fn announcing(body: &str) -> Script {
    Script::new(&format!("{BASE}{CLOCK}{FILL}{ANNOUNCING}{body}"))
}

pub(crate) static CONNECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| announcing(CONNECT));
pub(crate) static DISCONNECT_SCRIPT: LazyLock<Script> = LazyLock::new(|| announcing(DISCONNECT));
pub(crate) static HEARTBEAT_SCRIPT: LazyLock<Script> = LazyLock::new(|| announcing(HEARTBEAT));
pub(crate) static RESTORE_SCRIPT: LazyLock<Script> = LazyLock::new(|| announcing(RESTORE));
pub(crate) static LEAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| announcing(LEAVE));
pub(crate) static SET_TYPING_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_clock(SET_TYPING));
pub(crate) static TYPING_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_clock(TYPING));
pub(crate) static END_TYPING_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(END_TYPING));
pub(crate) static ONLINE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ONLINE));
pub(crate) static OCCUPIED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(OCCUPIED));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_answers_are_read_by_their_code() {
        let read =
            |answer: &[i64]| ChangeAnswer::read(answer).map(|a| (a.change, a.node_registered));
        assert_eq!(
            read(&[1, 3, 1]).ok(),
            Some((PresenceChange::Joined { online_count: 3 }, true))
        );
        assert_eq!(
            read(&[2, 0]).ok(),
            Some((PresenceChange::Left { online_count: 0 }, false))
        );
        assert_eq!(
            read(&[0, 2, 0]).ok(),
            Some((PresenceChange::Unchanged { online_count: 2 }, false))
        );
        assert!(matches!(read(&[1]), Err(RedisAdapterError::Protocol(_))));
    }
}
