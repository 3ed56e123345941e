//! A Redis Cluster of the test's own, as `.ci/run` and operators start one (STACK.md,
//! docs/operations.md): `redis-server --cluster-enabled yes` per node, then
//! `redis-cli --cluster create`, then wait for `cluster_state:ok`.
//!
//! Each node runs under a small shell that kills it when the test process's end of its stdin
//! closes, so a cluster shared by a whole test binary ([`RedisCluster::shared`]) does not
//! outlive it, even though statics are never dropped.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One node: its port and the shell that holds its `redis-server`.
struct Node {
    port: u16,
    keeper: Option<(Child, ChildStdin)>,
}

impl Node {
    fn stop(&mut self) {
        if let Some((mut shell, stdin)) = self.keeper.take() {
            drop(stdin); // the shell reads end of file and kills its redis-server
            let _ = shell.wait();
        }
    }
}

/// A running cluster; stopped when dropped.
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
    masters: usize,
}

/// Nodes of a cluster must use ports whose bus port (port + 10000) is valid too.
const PORTS: std::ops::Range<u16> = 21000..45000;

/// A port free now, whose bus port is free too.
fn free_port() -> u16 {
    loop {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let span = u32::from(PORTS.end - PORTS.start);
        let port = PORTS.start + u16::try_from((seed ^ std::process::id()) % span).unwrap_or(0);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn sync_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

impl RedisCluster {
    /// Starts `masters` primaries with `replicas` replicas each (`cluster-node-timeout` 2 s, so
    /// a failover takes a few seconds), or reports the missing binary
    /// ([`crate::missing_service`]) and returns `None`. Blocks while the cluster forms.
    pub fn start(masters: usize, replicas: usize) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "banter-redis-cluster-{}",
            crate::unique_suffix("-")
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster");
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
            masters,
        };
        for _ in 0..masters * (1 + replicas) {
            let port = free_port();
            match cluster.spawn(port) {
                Ok(keeper) => cluster.nodes.push(Node {
                    port,
                    keeper: Some(keeper),
                }),
                Err(e) => {
                    crate::missing_service("redis-server (cluster mode)", &e.to_string());
                    return None;
                }
            }
        }
        for node in &cluster.nodes {
            wait_for(
                &format!("redis-server on port {} to answer", node.port),
                || {
                    sync_connection(node.port)
                        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                        .is_ok()
                },
            );
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match created {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => {
                crate::missing_service("redis-cli", &e.to_string());
                return None;
            }
        }
        cluster.wait_until_settled();
        Some(cluster)
    }

    /// One cluster of three primaries for the whole test binary, started by the first test
    /// that asks. Tests share it through namespaces of their own; none may stop its nodes.
    pub fn shared() -> Option<&'static RedisCluster> {
        static SHARED: OnceLock<Option<RedisCluster>> = OnceLock::new();
        SHARED.get_or_init(|| RedisCluster::start(3, 0)).as_ref()
    }

    fn spawn(&self, port: u16) -> std::io::Result<(Child, ChildStdin)> {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" & pid=$!; read -r _; kill -9 "$pid"; wait "$pid""#)
            .arg("sh")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--cluster-config-file", &format!("{dir}/nodes-{port}.conf")])
            .args(["--dir", &dir, "--save", "", "--appendonly", "no"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = shell.stdin.take().expect("the keeper's stdin is piped");
        // Fails fast when `redis-server` is missing: the shell is then gone.
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(Some(status)) = shell.try_wait() {
            return Err(std::io::Error::other(format!(
                "redis-server exited at once ({status})"
            )));
        }
        Ok((shell, stdin))
    }

    /// `redis-cluster://` with every node, as `banter serve --broker` takes it.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.keeper.is_some())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// The ports of the nodes still running.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.keeper.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The port of the primary that serves `key`'s slot now.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.ports()[0];
        let mut connection = sync_connection(port).expect("a cluster node answers");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .expect("CLUSTER KEYSLOT");
        master_of_slot(&mut connection, slot).expect("a primary serves every slot")
    }

    /// Kills (SIGKILL) the primary that serves `key`'s slot and waits until one of its
    /// replicas took over and the cluster is whole again. Returns the killed port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key);
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.stop();
        }
        let survivor = self.ports()[0];
        wait_for(&format!("a replica to take over from {port}"), || {
            let Ok(mut connection) = sync_connection(survivor) else {
                return false;
            };
            let slot: i64 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(&mut connection)
                .unwrap_or(-1);
            master_of_slot(&mut connection, slot).is_some_and(|p| p != port)
                && cluster_ok(&mut connection)
        });
        port
    }

    /// Gives the slot of `key` to another primary (`CLUSTER SETSLOT … NODE`, told to every
    /// primary, the new owner first), as a resharding does for an empty slot. Returns the old
    /// and the new owner's ports.
    pub fn move_slot_of(&self, key: &str) -> (u16, u16) {
        let from = self.master_of(key);
        let masters: Vec<u16> = self
            .ports()
            .into_iter()
            .filter(|&port| {
                sync_connection(port).is_ok_and(|mut c| {
                    redis::cmd("ROLE")
                        .query::<Vec<redis::Value>>(&mut c)
                        .is_ok_and(|role| {
                            matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
                        })
                })
            })
            .collect();
        let to = *masters
            .iter()
            .find(|&&port| port != from)
            .expect("another primary");
        let mut target = sync_connection(to).expect("the new owner answers");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut target)
            .expect("CLUSTER KEYSLOT");
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut target)
            .expect("CLUSTER MYID");
        let order = std::iter::once(to).chain(masters.iter().copied().filter(|&p| p != to));
        for port in order {
            let mut connection = sync_connection(port).expect("a primary answers");
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&id)
                .query(&mut connection)
                .expect("CLUSTER SETSLOT … NODE");
        }
        wait_for("every node to agree on the slot's owner", || {
            masters.iter().all(|&port| {
                sync_connection(port).is_ok_and(|mut c| master_of_slot(&mut c, slot) == Some(to))
            })
        });
        (from, to)
    }

    fn wait_until_settled(&self) {
        for node in &self.nodes {
            wait_for(&format!("node {} to see the cluster ok", node.port), || {
                sync_connection(node.port).is_ok_and(|mut c| cluster_ok(&mut c))
            });
        }
        // Replicas in sync with their primaries, so a failover loses nothing written before.
        let replicas = self.nodes.len() - self.masters;
        wait_for("every replica to be in sync", || {
            let up = self
                .nodes
                .iter()
                .filter(|n| {
                    sync_connection(n.port).is_ok_and(|mut c| {
                        redis::cmd("INFO")
                            .arg("replication")
                            .query::<String>(&mut c)
                            .is_ok_and(|info| info.contains("master_link_status:up"))
                    })
                })
                .count();
            up == replicas
        });
    }
}

fn cluster_ok(connection: &mut redis::Connection) -> bool {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(connection)
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}

/// The port of the primary serving `slot`, from `CLUSTER SLOTS`.
fn master_of_slot(connection: &mut redis::Connection, slot: i64) -> Option<u16> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(connection).ok()?;
    ranges.into_iter().find_map(|range| {
        let redis::Value::Array(parts) = range else {
            return None;
        };
        let int = |v: &redis::Value| match v {
            redis::Value::Int(i) => Some(*i),
            _ => None,
        };
        let (start, end) = (int(parts.first()?)?, int(parts.get(1)?)?);
        if !(start..=end).contains(&slot) {
            return None;
        }
        let redis::Value::Array(master) = parts.get(2)? else {
            return None;
        };
        u16::try_from(int(master.get(1)?)?).ok()
    })
}

/// Waits up to 60 s for `done`, asking every 100 ms.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .finish_non_exhaustive()
    }
}
