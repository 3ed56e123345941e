//! A PostgreSQL primary and its streaming replica, of the test's own: `initdb`, then
//! `pg_basebackup -R -X stream`, each server on a free loopback port, in a temporary directory
//! owned by the `postgres` user (the server refuses to run as root). Stopped and removed on
//! drop. The machine's own Postgres is not touched: it has no replication access configured,
//! and tests must not depend on what only one machine happens to allow.
//!
//! The binaries come from `BANTER_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// The primary and its replica, both running.
#[derive(Debug)]
pub struct PostgresPair {
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    pub primary_port: u16,
    pub replica_port: u16,
}

const DATABASE: &str = "banter";

impl PostgresPair {
    /// Starts the pair, or reports the missing binaries ([`crate::missing_service`]) and
    /// returns `None`.
    pub fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            crate::missing_service(
                "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup)",
                "no /usr/lib/postgresql/*/bin/initdb and BANTER_TEST_PG_BIN not set",
            );
            return None;
        };
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!(
            "banter-pg-pair-{}-{}",
            std::process::id(),
            PAIR_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the pair's directory");
        let mut pair = Self {
            dir,
            bin,
            as_postgres,
            primary_port: free_port(),
            replica_port: 0,
        };
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&pair.dir));
        }
        let primary = pair.dir.join("primary");
        pair.run_pg(
            "initdb",
            &[
                "-D",
                path_str(&primary),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        // `fsync = off` only skips the disk flush: a killed server (the campaign crashes it)
        // still finds every acknowledged commit in the OS's cache. `synchronous_commit` stays
        // on: off, a crash loses commits that were already acknowledged.
        append(
            &primary.join("postgresql.conf"),
            &format!(
                "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 wal_level = replica\nmax_wal_senders = 4\nfsync = off\n",
                pair.primary_port,
                path_str(&pair.dir)
            ),
        );
        append(
            &primary.join("pg_hba.conf"),
            "host replication all 127.0.0.1/32 trust\n",
        );
        pair.pg_ctl_start("primary");
        pair.run_pg(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pair.primary_port.to_string(),
                "-U",
                "postgres",
                DATABASE,
            ],
        );
        let replica = pair.dir.join("replica");
        pair.run_pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pair.primary_port.to_string(),
                "-U",
                "postgres",
                "-D",
                path_str(&replica),
                "-R",
                "-X",
                "stream",
                // An immediate checkpoint: the default spread one takes minutes.
                "--checkpoint=fast",
            ],
        );
        pair.replica_port = free_port();
        append(
            &replica.join("postgresql.conf"),
            &format!("port = {}\n", pair.replica_port),
        );
        pair.pg_ctl_start("replica");
        Some(pair)
    }

    pub fn primary_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{DATABASE}",
            self.primary_port
        )
    }

    pub fn replica_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{DATABASE}",
            self.replica_port
        )
    }

    /// Stops replaying WAL on the replica: it answers, but falls behind. Returns once the
    /// replica says it has paused (the request alone takes effect a moment later).
    pub async fn pause_replay(&self) {
        #[derive(diesel::QueryableByName)]
        struct State {
            #[diesel(sql_type = diesel::sql_types::Text)]
            state: String,
        }
        self.on_replica("SELECT pg_wal_replay_pause()::text").await;
        let mut conn = AsyncPgConnection::establish(&self.replica_url())
            .await
            .expect("connect to the replica");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let state: State = diesel::sql_query("SELECT pg_get_wal_replay_pause_state() AS state")
                .get_result(&mut conn)
                .await
                .expect("replay pause state");
            if state.state == "paused" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica never paused: {}",
                state.state
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn resume_replay(&self) {
        self.on_replica("SELECT pg_wal_replay_resume()::text").await;
    }

    /// Kills the replica at once (`pg_ctl stop -m immediate`).
    pub fn kill_replica(&self) {
        self.pg_ctl_stop("replica");
    }

    /// Every message of `room` as the primary holds it, read with SQL rather than through
    /// banter: `(seq, username, content, client_id)` by seq.
    pub async fn stored_messages(&self, room: &str) -> Vec<(u64, String, String, String)> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            seq: i64,
            #[diesel(sql_type = diesel::sql_types::Text)]
            username: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            content: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            client_id: String,
        }
        let mut conn = AsyncPgConnection::establish(&self.primary_url())
            .await
            .expect("connect to the primary");
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT seq, username, content, COALESCE(client_id, '') AS client_id \
             FROM messages WHERE room = $1 ORDER BY seq",
        )
        .bind::<diesel::sql_types::Text, _>(room)
        .load(&mut conn)
        .await
        .expect("read the messages");
        rows.into_iter()
            .map(|r| (r.seq as u64, r.username, r.content, r.client_id))
            .collect()
    }

    /// Kills the primary at once and starts it again (a crash and recovery); the replica
    /// reconnects by itself.
    pub fn restart_primary(&self) {
        self.pg_ctl_stop("primary");
        self.pg_ctl_start("primary");
    }

    /// Starts the replica again after [`PostgresPair::kill_replica`].
    pub fn restart_replica(&self) {
        self.pg_ctl_start("replica");
    }

    async fn on_replica(&self, sql: &str) {
        let mut conn = AsyncPgConnection::establish(&self.replica_url())
            .await
            .expect("connect to the replica");
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .expect("replica statement");
    }

    fn pg_ctl_start(&self, which: &str) {
        let data = self.dir.join(which);
        let log = self.dir.join(format!("{which}.log"));
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `tool` from the PostgreSQL binaries, run as `postgres` when this process is root.
    fn pg_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Stops one server at once (`-m immediate`: a crash, as far as it knows).
    fn pg_ctl_stop(&self, which: &str) {
        self.run_pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.dir.join(which)),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    fn run_pg(&self, tool: &str, args: &[&str]) {
        let mut command = self.pg_command(tool);
        command.args(args).current_dir(&self.dir);
        let output = command.output().expect("run a PostgreSQL tool");
        if !output.status.success() {
            panic!(
                "{tool} {args:?} failed: {}\n{}\nlogs: {}",
                output.status,
                describe(&output),
                self.logs()
            );
        }
    }

    fn logs(&self) -> String {
        ["primary.log", "replica.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
                format!("--- {name}\n{text}")
            })
            .collect()
    }
}

impl Drop for PostgresPair {
    fn drop(&mut self) {
        for which in ["replica", "primary"] {
            let data = self.dir.join(which);
            if data.join("postmaster.pid").exists() {
                let _ = self
                    .pg_command("pg_ctl")
                    .args(["-D", path_str(&data), "-m", "immediate", "-w", "stop"])
                    .output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static PAIR_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn pg_bin() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("BANTER_TEST_PG_BIN") {
        return Some(PathBuf::from(bin));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_basebackup").exists())
        .collect();
    // The newest major version last (directory names are the versions).
    candidates.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open a PostgreSQL config file");
    file.write_all(text.as_bytes()).expect("write the config");
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        describe(&output)
    );
}

fn describe(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}
