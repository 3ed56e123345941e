//! Presence shared by every node, in Redis.
//!
//! Each node counts its own connections per user per room under its node id, and the scripts
//! keep the room's totals: a user is online while any node holds a connection of theirs. Joins
//! and leaves are announced by the scripts themselves (see [`crate::scripts`]).
//!
//! Nodes send a heartbeat every few seconds; each heartbeat also removes the nodes that went
//! silent, with their users. The node keeps a copy of its own counts (its
//! [`NodeBook`](crate::node_book::NodeBook)), so when Redis forgot it
//! (a Redis restart, or a pause long enough to be declared dead) the next heartbeat puts its
//! connections back. A connect or disconnect whose outcome the node never heard (Redis down,
//! a timeout) is counted locally anyway and sent again, as an absolute count, by the next
//! heartbeat: a connection that closed while Redis was away does not stay online forever.
//!
//! Typing-list updates are best effort: for a few seconds after Redis failed they are refused
//! at once instead of each waiting out the command timeout (a post ends its poster's typing,
//! and must not hang on a Redis that hangs); the heartbeats find out when Redis is back.

mod cluster;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use banter_domain::ports::{PresenceError, PresenceRegistry};
use banter_domain::{OccupiedRoom, OnlinePage, PresenceChange, RoomName, Username};
use redis::{Script, ScriptInvocation};

use crate::commands::Commands;
use crate::keys::{Keys, Topology};
use crate::node_book::{Key, NodeBook, Resync};
use crate::scripts::{
    CONNECT_SCRIPT, ChangeAnswer, DISCONNECT_SCRIPT, END_TYPING_SCRIPT, HEARTBEAT_SCRIPT,
    LEAVE_SCRIPT, OCCUPIED_SCRIPT, ONLINE_SCRIPT, RESTORE_SCRIPT, SET_TYPING_SCRIPT, TYPING_SCRIPT,
};
use crate::{RedisAdapterError, RedisConfig, timed};

impl From<RedisAdapterError> for PresenceError {
    fn from(e: RedisAdapterError) -> Self {
        PresenceError::Unavailable {
            reason: e.to_string(),
        }
    }
}

/// Most (room, user) entries sent in one restore call.
const RESTORE_CHUNK: usize = 500;

struct Shared {
    keys: Keys,
    node_id: String,
    /// Cluster: how many times the cluster forgot this node; its connections are counted under
    /// `<node id>.<incarnation>` (see [`crate::cluster_scripts`]).
    incarnation: AtomicU64,
    /// The event templates the announcing scripts fill in (see [`crate::wire`]).
    templates: String,
    dead_after: Duration,
    command_timeout: Duration,
    book: Mutex<NodeBook>,
    /// Connects and disconnects take it shared; a restore takes it alone, so the copy it sends
    /// matches what the scripts have counted.
    restoring: tokio::sync::RwLock<()>,
}

/// The [`PresenceRegistry`] for several nodes. Cheap to clone.
#[derive(Clone)]
pub struct RedisPresence {
    shared: Arc<Shared>,
    commands: Commands,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("namespace", &self.shared.keys.namespace())
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

fn protocol(e: impl std::fmt::Display) -> RedisAdapterError {
    RedisAdapterError::Protocol(e.to_string())
}

/// A username read back from Redis; one that no longer parses means the data is not ours.
fn stored_username(name: &str) -> Result<Username, RedisAdapterError> {
    Username::parse(name).map_err(|e| protocol(format!("stored username {name:?}: {e}")))
}

/// A `ZRANGEBYLEX` start strictly after `name`, or from the beginning.
fn lex_after(name: Option<&str>) -> String {
    name.map_or_else(|| "-".to_owned(), |n| format!("({n}"))
}

impl RedisPresence {
    /// `templates`: the events the scripts announce, from [`crate::wire::script_templates`].
    pub(crate) fn new(
        commands: Commands,
        config: &RedisConfig,
        keys: Keys,
        templates: String,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                keys,
                node_id: config.node_id.clone(),
                incarnation: AtomicU64::new(0),
                templates,
                dead_after: config.dead_after,
                command_timeout: config.command_timeout,
                book: Mutex::new(NodeBook::default()),
                restoring: tokio::sync::RwLock::new(()),
            }),
            commands,
        }
    }

    fn book(&self) -> MutexGuard<'_, NodeBook> {
        // Every NodeBook method completes under the lock; a poisoned lock still holds
        // consistent counts.
        self.shared
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An announcing script with its first arguments: the namespace, the event templates and
    /// this node's id.
    fn announcing<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(self.shared.keys.namespace())
            .arg(&self.shared.templates)
            .arg(&self.shared.node_id);
        invocation
    }

    /// Refreshes this node, removes dead ones, and puts this node's connections back if Redis
    /// had forgotten it.
    pub(crate) async fn heartbeat_now(&self) -> Result<(), RedisAdapterError> {
        let beat = match self.shared.keys.topology() {
            Topology::Single => self.single_heartbeat().await,
            Topology::Cluster => self.cluster_heartbeat().await,
        };
        let beat = match beat {
            Ok(beat) => beat,
            Err(e) => {
                if !matches!(e, RedisAdapterError::Protocol(_)) {
                    self.book().heartbeat_failed(Instant::now());
                }
                return Err(e);
            }
        };
        // One server: the heartbeat script swept already, whatever happens next.
        count_swept(beat.swept);
        let resync = self.book().heartbeat_answered(beat.known);
        match resync {
            Resync::Nothing => {}
            Resync::Unsynced => self.restore(false).await?,
            Resync::Everything => self.restore(true).await?,
        }
        // Cluster: dead nodes are swept after this node's own counts are back, so that its
        // users, counted under an older incarnation too, do not flicker out and in.
        for node in &beat.to_sweep {
            count_swept(self.sweep(node, true).await?);
        }
        Ok(())
    }

    async fn single_heartbeat(&self) -> Result<Beat, RedisAdapterError> {
        let mut commands = self.commands.clone();
        let answer: Vec<i64> = timed(
            self.shared.command_timeout,
            self.announcing(&HEARTBEAT_SCRIPT)
                .arg(self.dead_after_ms())
                .invoke_async(&mut commands),
        )
        .await?;
        match answer.as_slice() {
            [known, swept] => Ok(Beat {
                known: *known == 1,
                swept: u64::try_from(*swept).unwrap_or(0),
                to_sweep: Vec::new(),
            }),
            other => Err(RedisAdapterError::Protocol(format!(
                "heartbeat answered {other:?}"
            ))),
        }
    }

    fn dead_after_ms(&self) -> u64 {
        u64::try_from(self.shared.dead_after.as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends this node's counts as absolute values: all of them when Redis forgot the node,
    /// else those whose last change may not have arrived.
    async fn restore(&self, everything: bool) -> Result<(), RedisAdapterError> {
        let _alone = self.shared.restoring.write().await;
        let resend = self.book().take_resend(everything);
        let sent = if resend.entries().is_empty() {
            Ok(())
        } else {
            tracing::warn!(
                entries = resend.entries().len(),
                forgotten = resend.is_everything(),
                "sending this node's presence to Redis again"
            );
            self.send_counts(resend.entries()).await
        };
        self.book().resend_finished(resend, sent.is_ok());
        sent
    }

    async fn send_counts(&self, entries: &[(Key, u32)]) -> Result<(), RedisAdapterError> {
        if self.shared.keys.topology() == Topology::Cluster {
            return self.cluster_send_counts(entries).await;
        }
        let mut commands = self.commands.clone();
        for chunk in entries.chunks(RESTORE_CHUNK) {
            let mut invocation = self.announcing(&RESTORE_SCRIPT);
            for ((room, user), count) in chunk {
                invocation.arg(room.as_str()).arg(user.as_str()).arg(*count);
            }
            let _: i64 = timed(
                self.shared.command_timeout,
                invocation.invoke_async(&mut commands),
            )
            .await?;
        }
        Ok(())
    }

    /// Removes this node and its remaining connections (announcing the leaves): for a clean
    /// shutdown, so the others need not wait for the heartbeat to lapse.
    ///
    /// # Errors
    /// [`RedisAdapterError`] when Redis does not answer.
    pub async fn leave_cluster(&self) -> Result<(), RedisAdapterError> {
        match self.shared.keys.topology() {
            Topology::Single => {
                let mut commands = self.commands.clone();
                let _: i64 = timed(
                    self.shared.command_timeout,
                    self.announcing(&LEAVE_SCRIPT).invoke_async(&mut commands),
                )
                .await?;
            }
            Topology::Cluster => self.cluster_leave().await?,
        }
        self.book().left_cluster();
        Ok(())
    }

    /// Runs a connect or disconnect script and books its outcome. The work runs in its own
    /// task, so a caller that gives up waiting (a client that drops during the handshake) does
    /// not leave Redis counting a connection this node never booked.
    async fn change(
        &self,
        connecting: bool,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, RedisAdapterError> {
        if connecting && self.book().has_left() {
            return Err(RedisAdapterError::Connect(
                "this node left the cluster".to_owned(),
            ));
        }
        let this = self.clone();
        let key = (room.clone(), user.clone());
        tokio::spawn(async move { this.change_to_completion(connecting, key).await })
            .await
            .map_err(|e| RedisAdapterError::Connect(format!("presence task failed: {e}")))?
    }

    async fn change_to_completion(
        &self,
        connecting: bool,
        key: Key,
    ) -> Result<PresenceChange, RedisAdapterError> {
        let _shared = self.shared.restoring.read().await;
        let answer = match self.shared.keys.topology() {
            Topology::Single => self.single_change(connecting, &key).await,
            Topology::Cluster => self.cluster_change(connecting, &key).await,
        };
        let mut book = self.book();
        match (&answer, connecting) {
            (Ok(answer), true) => book.connect_heard(key, answer.node_registered),
            (Err(_), true) => book.connect_unheard(key),
            (heard, false) => book.disconnected(key, heard.is_ok()),
        }
        answer.map(|answer| answer.change)
    }

    async fn single_change(
        &self,
        connecting: bool,
        (room, user): &Key,
    ) -> Result<ChangeAnswer, RedisAdapterError> {
        let script = if connecting {
            &*CONNECT_SCRIPT
        } else {
            &*DISCONNECT_SCRIPT
        };
        let mut commands = self.commands.clone();
        let answer = timed(
            self.shared.command_timeout,
            self.announcing(script)
                .arg(room.as_str())
                .arg(user.as_str())
                .invoke_async::<Vec<i64>>(&mut commands),
        )
        .await?;
        ChangeAnswer::read(&answer)
    }
}

/// Counts and logs the connections of dead nodes a sweep removed.
fn count_swept(connections: u64) {
    if connections > 0 {
        metrics::counter!("banter_presence_swept_total").increment(connections);
        tracing::warn!(
            connections,
            "removed the users of nodes that stopped sending heartbeats"
        );
    }
}

/// What a heartbeat found.
struct Beat {
    /// Redis knew this node (else it forgot it, or swept it).
    known: bool,
    /// Connections of dead nodes the heartbeat removed itself.
    swept: u64,
    /// Cluster: dead nodes whose rooms are still to sweep.
    to_sweep: Vec<String>,
}

impl PresenceRegistry for RedisPresence {
    const ANNOUNCES_CHANGES: bool = true;

    async fn connect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        Ok(self.change(true, room, user).await?)
    }

    async fn disconnect(
        &self,
        room: &RoomName,
        user: &Username,
    ) -> Result<PresenceChange, PresenceError> {
        Ok(self.change(false, room, user).await?)
    }

    async fn online(
        &self,
        room: &RoomName,
        after: Option<&Username>,
        limit: usize,
    ) -> Result<OnlinePage, PresenceError> {
        let mut commands = self.commands.clone();
        let answer: Vec<redis::Value> = timed(
            self.shared.command_timeout,
            ONLINE_SCRIPT
                .key(self.shared.keys.online(room.as_str()))
                .arg(lex_after(after.map(Username::as_str)))
                .arg(limit.saturating_add(1))
                .invoke_async(&mut commands),
        )
        .await?;
        let mut values = answer.into_iter();
        let online_count: u64 = match values.next() {
            Some(value) => redis::from_redis_value(value).map_err(protocol)?,
            None => 0,
        };
        let mut users = Vec::new();
        for value in values {
            let name: String = redis::from_redis_value(value).map_err(protocol)?;
            users.push(stored_username(&name)?);
        }
        let has_more = users.len() > limit;
        users.truncate(limit);
        Ok(OnlinePage {
            users,
            online_count,
            has_more,
        })
    }

    async fn occupied_rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<Vec<OccupiedRoom>, PresenceError> {
        if self.shared.keys.topology() == Topology::Cluster {
            return Ok(self.cluster_occupied(after, limit).await?);
        }
        let mut commands = self.commands.clone();
        let answer: Vec<(String, u64)> = timed(
            self.shared.command_timeout,
            OCCUPIED_SCRIPT
                .arg(self.shared.keys.namespace())
                .arg(lex_after(after.map(RoomName::as_str)))
                .arg(limit)
                .invoke_async(&mut commands),
        )
        .await?;
        answer
            .into_iter()
            .map(|(name, online_count)| {
                let room = RoomName::parse(&name)
                    .map_err(|e| protocol(format!("stored room {name:?}: {e}")))?;
                Ok(OccupiedRoom { room, online_count })
            })
            .collect::<Result<_, RedisAdapterError>>()
            .map_err(PresenceError::from)
    }

    async fn set_typing(
        &self,
        room: &RoomName,
        user: &Username,
        at_most: Option<Duration>,
    ) -> Result<bool, PresenceError> {
        if self.book().typing_paused(Instant::now()) {
            return Err(PresenceError::Unavailable {
                reason: "Redis failed moments ago; typing lists wait for a heartbeat to succeed"
                    .to_owned(),
            });
        }
        let ttl_ms = at_most.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let mut commands = self.commands.clone();
        let answer: Result<i64, _> = timed(
            self.shared.command_timeout,
            SET_TYPING_SCRIPT
                .key(self.shared.keys.typing(room.as_str()))
                .key(self.shared.keys.typing_by(room.as_str()))
                .arg(user.as_str())
                .arg(ttl_ms)
                .arg(&self.shared.node_id)
                .invoke_async(&mut commands),
        )
        .await;
        self.book().typing_answered(answer.is_ok(), Instant::now());
        Ok(answer? == 1)
    }

    async fn end_typing(&self, room: &RoomName, user: &Username) -> Result<bool, PresenceError> {
        let mut commands = self.commands.clone();
        let answer: i64 = timed(
            self.shared.command_timeout,
            END_TYPING_SCRIPT
                .key(self.shared.keys.typing(room.as_str()))
                .key(self.shared.keys.typing_by(room.as_str()))
                .arg(user.as_str())
                .arg(&self.shared.node_id)
                .invoke_async(&mut commands),
        )
        .await?;
        Ok(answer == 1)
    }

    async fn typing(&self, room: &RoomName) -> Result<Vec<Username>, PresenceError> {
        let mut commands = self.commands.clone();
        let names: Vec<String> = timed(
            self.shared.command_timeout,
            TYPING_SCRIPT
                .key(self.shared.keys.typing(room.as_str()))
                .invoke_async(&mut commands),
        )
        .await?;
        let mut typists = names
            .iter()
            .map(|name| stored_username(name))
            .collect::<Result<Vec<_>, _>>()?;
        typists.sort();
        Ok(typists)
    }

    async fn heartbeat(&self) -> Result<(), PresenceError> {
        Ok(self.heartbeat_now().await?)
    }
}
