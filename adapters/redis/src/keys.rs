//! Where the shared state lives: the names of keys and channels, which differ between one Redis
//! server and a Redis Cluster.
//!
//! On one server the names are those the first version used (`P:users:<room>`, …), so a
//! deployment keeps its data and its nodes agree across an upgrade. On a cluster every key and
//! the channel of a room carry the room as a hash tag (`P:{<room>}:users`, …): they live in one
//! slot, so a script may touch them all and announce on the room's shard channel in the same
//! step. What is not a room's — the nodes and their heartbeats, each node's rooms, the sweeps
//! under way, the rooms with someone online — lives in one slot of its own, tagged with the
//! namespace (`{P}:nodes`, …).

use banter_domain::RoomName;

/// One Redis server (or a primary with replicas), or a Redis Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    Single,
    Cluster,
}

/// The names of a namespace's keys and channels.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    namespace: String,
    topology: Topology,
}

impl Keys {
    pub(crate) fn new(namespace: &str, topology: Topology) -> Self {
        Self {
            namespace: namespace.to_owned(),
            topology,
        }
    }

    pub(crate) fn topology(&self) -> Topology {
        self.topology
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    fn of_room(&self, room: &str, what: &str) -> String {
        let p = &self.namespace;
        match self.topology {
            Topology::Single => format!("{p}:{what}:{room}"),
            Topology::Cluster => format!("{p}:{{{room}}}:{what}"),
        }
    }

    /// The room's pub/sub channel: `PUBLISH` on one server, `SPUBLISH` on a cluster.
    pub(crate) fn channel(&self, room: &str) -> String {
        match self.topology {
            Topology::Single => format!("{}:room:{room}", self.namespace),
            Topology::Cluster => self.of_room(room, "events"),
        }
    }

    /// The room whose channel this is.
    pub(crate) fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let rest = channel.strip_prefix(self.namespace.as_str())?;
        let name = match self.topology {
            Topology::Single => rest.strip_prefix(":room:")?,
            Topology::Cluster => rest.strip_prefix(":{")?.strip_suffix("}:events")?,
        };
        RoomName::parse(name).ok()
    }

    /// The room's keys, in the order the room scripts take them: users (hash, user →
    /// connections on all nodes), online (sorted set), typing (sorted set, typist → when the
    /// listing lapses), typing-by (hash, typist → the node that refreshed it last), channel.
    pub(crate) fn room(&self, room: &str) -> [String; 5] {
        [
            self.of_room(room, "users"),
            self.of_room(room, "online"),
            self.typing(room),
            self.typing_by(room),
            self.channel(room),
        ]
    }

    pub(crate) fn online(&self, room: &str) -> String {
        self.of_room(room, "online")
    }

    pub(crate) fn typing(&self, room: &str) -> String {
        self.of_room(room, "typing")
    }

    pub(crate) fn typing_by(&self, room: &str) -> String {
        self.of_room(room, "typing-by")
    }

    /// Cluster: a node's connections in a room (hash, user → connections), in the room's slot.
    pub(crate) fn node_in_room(&self, room: &str, node: &str) -> String {
        format!("{}:{{{room}}}:node:{node}", self.namespace)
    }

    /// Cluster: the prefix of the keys in the namespace's own slot.
    pub(crate) fn index_prefix(&self) -> String {
        format!("{{{}}}:", self.namespace)
    }

    /// Cluster: node id → last heartbeat (sorted set, the index shard's clock in ms).
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.index_prefix())
    }

    /// Cluster: the rooms where a node has had connections (set).
    pub(crate) fn node_rooms(&self, node: &str) -> String {
        format!("{}node:{node}:rooms", self.index_prefix())
    }

    /// Cluster: nodes declared dead (or leaving) whose rooms are still being swept (set).
    pub(crate) fn sweeping(&self) -> String {
        format!("{}sweeping", self.index_prefix())
    }

    /// Cluster: the rooms of a node under sweep that are still to do (set).
    pub(crate) fn sweep(&self, node: &str) -> String {
        format!("{}sweep:{node}:rooms", self.index_prefix())
    }

    /// Cluster: rooms that may have someone online (sorted set, scores 0); a reader checks
    /// each room's own count.
    pub(crate) fn occupied(&self) -> String {
        format!("{}rooms", self.index_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CRC16 slot of a key as Redis Cluster computes it (the hash tag, when there is one).
    fn slot(key: &str) -> redis::cluster_routing::Slot {
        redis::cluster_routing::Slot::for_key(key)
    }

    #[test]
    fn one_server_keeps_the_first_versions_names() {
        let keys = Keys::new("banter", Topology::Single);
        assert_eq!(
            keys.room("lobby"),
            [
                "banter:users:lobby",
                "banter:online:lobby",
                "banter:typing:lobby",
                "banter:typing-by:lobby",
                "banter:room:lobby",
            ]
        );
        assert_eq!(
            keys.room_of_channel("banter:room:lobby")
                .map(|r| r.as_str().to_owned()),
            Some("lobby".to_owned())
        );
        assert_eq!(keys.room_of_channel("other:room:lobby"), None);
    }

    #[test]
    fn on_a_cluster_a_rooms_keys_and_channel_share_its_slot_and_the_index_has_its_own() {
        let keys = Keys::new("banter", Topology::Cluster);
        for room in ["lobby", "general", "a-b_c9"] {
            let expected = slot(&keys.channel(room));
            for key in keys.room(room) {
                assert_eq!(slot(&key), expected, "{key}");
            }
            assert_eq!(slot(&keys.node_in_room(room, "n1.0")), expected);
        }
        assert_ne!(slot(&keys.channel("lobby")), slot(&keys.channel("general")));
        assert_eq!(
            keys.room_of_channel(&keys.channel("a-b_c9"))
                .map(|r| r.as_str().to_owned()),
            Some("a-b_c9".to_owned())
        );
        assert_eq!(keys.room_of_channel("banter:{lobby}:users"), None);
        let index = slot(&keys.nodes());
        for key in [
            keys.node_rooms("n1.0"),
            keys.sweeping(),
            keys.sweep("n2.3"),
            keys.occupied(),
        ] {
            assert_eq!(slot(&key), index, "{key}");
        }
    }
}
