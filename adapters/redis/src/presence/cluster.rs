//! Presence on a Redis Cluster: the scripts of [`crate::cluster_scripts`], run room by room,
//! and the node's incarnations.

use std::sync::atomic::Ordering;

use banter_domain::{OccupiedRoom, RoomName};
use redis::{Script, ScriptInvocation};

use super::{Beat, RedisPresence, lex_after, protocol};
use crate::cluster_scripts::{
    CLAIM_SCRIPT, CONNECT_SCRIPT, DISCONNECT_SCRIPT, HEARTBEAT_SCRIPT, REGISTER_SCRIPT,
    RESTORE_SCRIPT, SWEEP_SCRIPT, SWEPT_SCRIPT,
};
use crate::node_book::Key;
use crate::scripts::ChangeAnswer;
use crate::{RedisAdapterError, timed};

/// Most (user, count) pairs sent in one restore call of a room.
const RESTORE_CHUNK: usize = 500;

impl RedisPresence {
    /// This node's name in the registry: its id and its incarnation.
    fn node_key(&self) -> (String, u64) {
        let incarnation = self.shared.incarnation.load(Ordering::SeqCst);
        (
            format!("{}.{incarnation}", self.shared.node_id),
            incarnation,
        )
    }

    /// A room script with the room's keys and its first arguments (templates, room).
    fn room_script<'a>(&self, script: &'a Script, room: &str, node: &str) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in self.shared.keys.room(room) {
            invocation.key(key);
        }
        invocation
            .key(self.shared.keys.node_in_room(room, node))
            .arg(&self.shared.templates)
            .arg(room);
        invocation
    }

    /// An index script with the keys both take first: the registry and the sweeps under way.
    fn index_script<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.shared.keys.nodes())
            .key(self.shared.keys.sweeping());
        invocation
    }

    /// Runs one plain command within the command timeout.
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisAdapterError> {
        let mut commands = self.commands.clone();
        timed(
            self.shared.command_timeout,
            command.query_async(&mut commands),
        )
        .await
    }

    /// How many are online in `room`, from the room's own sorted set.
    async fn online_count(&self, room: &str) -> Result<u64, RedisAdapterError> {
        self.query(redis::cmd("ZCARD").arg(self.shared.keys.online(room)))
            .await
    }

    /// Records the rooms in the node's list (before counting anything there) and registers
    /// the node if the registry did not hold it. Returns whether it had to.
    async fn register(&self, node: &str, rooms: &[&str]) -> Result<bool, RedisAdapterError> {
        let keys = &self.shared.keys;
        let mut commands = self.commands.clone();
        let registered: i64 = timed(
            self.shared.command_timeout,
            REGISTER_SCRIPT
                .key(keys.nodes())
                .key(keys.node_rooms(node))
                .arg(node)
                .arg(rooms)
                .invoke_async(&mut commands),
        )
        .await?;
        Ok(registered == 1)
    }

    /// The cluster no longer held incarnation `seen` of this node (it was swept as dead, or the
    /// cluster lost its data): counts go under a new incarnation from now on, and the old one's
    /// remains are swept like a dead node's. (The caller books that Redis forgot the node, so
    /// every count is sent again.)
    async fn new_incarnation(&self, seen: u64) -> Result<(), RedisAdapterError> {
        // Several tasks may find out at once; the first moves on, the others follow it.
        let _ = self.shared.incarnation.compare_exchange(
            seen,
            seen.saturating_add(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let (node, _) = self.node_key();
        tracing::warn!(%node, "the Redis Cluster had forgotten this node; continuing as a new incarnation");
        self.register(&node, &[]).await.map(drop)
    }

    pub(super) async fn cluster_heartbeat(&self) -> Result<Beat, RedisAdapterError> {
        let keys = &self.shared.keys;
        let (node, incarnation) = self.node_key();
        let mut commands = self.commands.clone();
        let answer: Vec<redis::Value> = timed(
            self.shared.command_timeout,
            self.index_script(&HEARTBEAT_SCRIPT)
                .arg(&node)
                .arg(self.dead_after_ms())
                .arg(keys.index_prefix())
                .invoke_async(&mut commands),
        )
        .await?;
        let mut values = answer.into_iter();
        let known: i64 = match values.next() {
            Some(value) => redis::from_redis_value(value).map_err(protocol)?,
            None => return Err(protocol("the heartbeat answered nothing")),
        };
        let to_sweep = values
            .map(|value| redis::from_redis_value::<String>(value).map_err(protocol))
            .collect::<Result<Vec<_>, _>>()?;
        if known == 0 {
            self.new_incarnation(incarnation).await?;
        }
        Ok(Beat {
            known: known == 1,
            swept: 0,
            to_sweep,
        })
    }

    /// Removes a claimed node's connections room by room, then takes the swept rooms off its
    /// list. Returns how many (room, user) entries it removed.
    pub(super) async fn sweep(
        &self,
        node: &str,
        end_typing: bool,
    ) -> Result<u64, RedisAdapterError> {
        let keys = &self.shared.keys;
        let list = keys.sweep(node);
        let mut commands = self.commands.clone();
        let limit = self.shared.command_timeout;
        let rooms: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&list)).await?;
        let mut removed = 0;
        for room in &rooms {
            let answer: Vec<i64> = timed(
                limit,
                self.room_script(&SWEEP_SCRIPT, room, node)
                    .arg(if end_typing { "1" } else { "0" })
                    .invoke_async(&mut commands),
            )
            .await?;
            let [entries, online] = answer[..] else {
                return Err(protocol(format!("a sweep answered {answer:?}")));
            };
            removed += u64::try_from(entries).unwrap_or(0);
            if online == 0 {
                self.unlist_if_empty(room).await?;
            }
        }
        let _: i64 = timed(
            limit,
            SWEPT_SCRIPT
                .key(keys.sweeping())
                .key(&list)
                .arg(node)
                .arg(&rooms)
                .invoke_async(&mut commands),
        )
        .await?;
        Ok(removed)
    }

    /// Takes a room whose online count reached zero off the list of occupied rooms, unless
    /// someone came meanwhile. A join lists its room after its room script ran, and this checks
    /// the count again after unlisting: whichever runs last, an occupied room stays listed.
    async fn unlist_if_empty(&self, room: &str) -> Result<(), RedisAdapterError> {
        if self.online_count(room).await? > 0 {
            return Ok(());
        }
        let occupied = self.shared.keys.occupied();
        let _: i64 = self
            .query(redis::cmd("ZREM").arg(&occupied).arg(room))
            .await?;
        if self.online_count(room).await? > 0 {
            self.list_occupied(room).await?;
        }
        Ok(())
    }

    async fn list_occupied(&self, room: &str) -> Result<(), RedisAdapterError> {
        let occupied = self.shared.keys.occupied();
        let _: i64 = self
            .query(redis::cmd("ZADD").arg(&occupied).arg(0).arg(room))
            .await?;
        Ok(())
    }

    pub(super) async fn cluster_change(
        &self,
        connecting: bool,
        (room, user): &Key,
    ) -> Result<ChangeAnswer, RedisAdapterError> {
        let (mut node, incarnation) = self.node_key();
        let mut node_registered = false;
        if connecting && self.register(&node, &[room.as_str()]).await? {
            // The cluster did not hold this node: its other connections were swept, or lost.
            node_registered = true;
            self.new_incarnation(incarnation).await?;
            node = self.node_key().0;
            self.register(&node, &[room.as_str()]).await?;
        }
        let script = if connecting {
            &*CONNECT_SCRIPT
        } else {
            &*DISCONNECT_SCRIPT
        };
        let mut commands = self.commands.clone();
        let answer: Vec<i64> = timed(
            self.shared.command_timeout,
            self.room_script(script, room.as_str(), &node)
                .arg(user.as_str())
                .invoke_async(&mut commands),
        )
        .await?;
        let mut answer = ChangeAnswer::read(&answer)?;
        answer.node_registered = node_registered;
        match answer.change {
            banter_domain::PresenceChange::Joined { .. } => {
                self.list_occupied(room.as_str()).await?;
            }
            banter_domain::PresenceChange::Left { online_count: 0 } => {
                self.unlist_if_empty(room.as_str()).await?;
            }
            _ => {}
        }
        Ok(answer)
    }

    /// Sends absolute counts, room by room.
    pub(super) async fn cluster_send_counts(
        &self,
        entries: &[(Key, u32)],
    ) -> Result<(), RedisAdapterError> {
        let mut by_room: std::collections::BTreeMap<&str, Vec<(&str, u32)>> =
            std::collections::BTreeMap::new();
        for ((room, user), count) in entries {
            by_room
                .entry(room.as_str())
                .or_default()
                .push((user.as_str(), *count));
        }
        let (node, _) = self.node_key();
        let rooms: Vec<&str> = by_room.keys().copied().collect();
        self.register(&node, &rooms).await?;
        let mut commands = self.commands.clone();
        for (room, users) in &by_room {
            for chunk in users.chunks(RESTORE_CHUNK) {
                let mut invocation = self.room_script(&RESTORE_SCRIPT, room, &node);
                for (user, count) in chunk {
                    invocation.arg(*user).arg(*count);
                }
                let answer: Vec<i64> = timed(
                    self.shared.command_timeout,
                    invocation.invoke_async(&mut commands),
                )
                .await?;
                match answer[..] {
                    [1, _] => self.list_occupied(room).await?,
                    [_, 0] => self.unlist_if_empty(room).await?,
                    [_, _] => {}
                    _ => return Err(protocol(format!("a restore answered {answer:?}"))),
                }
            }
        }
        Ok(())
    }

    /// A clean shutdown: claims this node and sweeps its rooms itself (a sweep left unfinished
    /// is finished by the others' heartbeats).
    pub(super) async fn cluster_leave(&self) -> Result<(), RedisAdapterError> {
        let keys = &self.shared.keys;
        let (node, _) = self.node_key();
        let mut commands = self.commands.clone();
        let _: i64 = timed(
            self.shared.command_timeout,
            self.index_script(&CLAIM_SCRIPT)
                .arg(&node)
                .arg(keys.index_prefix())
                .invoke_async(&mut commands),
        )
        .await?;
        self.sweep(&node, false).await.map(drop)
    }

    /// The rooms with someone online, in name order: candidates from the list, each checked
    /// against the room's own count (the list may hold a room that just emptied).
    pub(super) async fn cluster_occupied(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<OccupiedRoom>, RedisAdapterError> {
        let occupied = self.shared.keys.occupied();
        let mut start = lex_after(after.map(RoomName::as_str));
        let mut rooms = Vec::new();
        while rooms.len() < limit {
            let batch = (limit - rooms.len()).max(16);
            let names: Vec<String> = self
                .query(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(&occupied)
                        .arg(&start)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(batch),
                )
                .await?;
            for name in &names {
                let online_count = self.online_count(name).await?;
                if online_count > 0 && rooms.len() < limit {
                    let room = RoomName::parse(name)
                        .map_err(|e| protocol(format!("stored room {name:?}: {e}")))?;
                    rooms.push(OccupiedRoom { room, online_count });
                }
            }
            match names.last() {
                Some(last) if names.len() == batch => start = lex_after(Some(last)),
                _ => break,
            }
        }
        Ok(rooms)
    }
}
