//! The command line: help, migrate, defaults.

use std::process::Command;

use crate::helpers::*;

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let output = Command::new(BANTER)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--database-url",
        "--broker",
        "--auth",
        "--allowed-origins",
        "--max-connections",
        "--max-connections-per-ip",
        "--rate-limit",
        "--trusted-proxies",
        "--drain-delay",
        "--database-read-url",
        "--replica-max-lag",
        "BANTER_LISTEN",
        "BANTER_DATABASE_URL",
        "BANTER_BROKER",
        "BANTER_AUTH",
        "BANTER_JWT_SECRET",
        "BANTER_RATE_LIMIT",
        "BANTER_TRUSTED_PROXIES",
        "BANTER_DRAIN_DELAY",
        "BANTER_DATABASE_READ_URL",
        "BANTER_REPLICA_MAX_LAG",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
    let top = Command::new(BANTER).arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("serve") && top.contains("migrate"), "{top}");
}

#[test]
fn migrate_creates_the_database_and_exits() {
    let database = Database::sqlite();
    let output = Command::new(BANTER)
        .args(["migrate", "--database-url", &database.url])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(std::path::Path::new(&database.path()).exists());
    // Running it again is a no-op.
    let again = Command::new(BANTER)
        .args(["migrate", "--database-url", &database.url])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("up to date"));
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    for (args, needle) in [
        (vec!["serve", "--rate-limit", "fast"], "BURST:PER_SECOND"),
        (vec!["serve", "--broker", "kafka://x"], "memory"),
        (
            vec!["serve", "--trusted-proxies", "10.0.0.0/8,10.0.0.0/33"],
            "\"10.0.0.0/33\" is not a CIDR block",
        ),
        (
            vec!["serve", "--drain-delay", "soon"],
            "expected a duration",
        ),
        (
            vec!["serve", "--replica-max-lag", "soon"],
            "expected a duration",
        ),
        (
            vec![
                "serve",
                "--database-read-url",
                "postgres://127.0.0.1:1/x",
                "--listen",
                "127.0.0.1:0",
            ],
            "needs a postgres:// --database-url",
        ),
        (
            vec![
                "serve",
                "--database-url",
                "postgres://127.0.0.1:1/x",
                "--database-read-url",
                "sqlite://replica.db",
                "--listen",
                "127.0.0.1:0",
            ],
            "--database-read-url must be a postgres:// URL",
        ),
        (
            vec!["serve", "--auth", "jwt", "--listen", "127.0.0.1:0"],
            "BANTER_JWT_SECRET",
        ),
        (
            vec![
                "serve",
                "--database-url",
                "mysql://x",
                "--listen",
                "127.0.0.1:0",
            ],
            "sqlite://",
        ),
    ] {
        let output = Command::new(BANTER)
            .args(&args)
            .env_remove("BANTER_JWT_SECRET")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn serve_runs_on_postgres_too() {
    let Some(db) = banter_testkit::TestDatabase::create().await else {
        return;
    };
    let database = Database {
        url: db.url.clone(),
        ..Database::sqlite()
    };
    let server = TestServer::start_on(&database, &[], &[]).await;
    let (mut alice, _) = connect(&server, "general", "alice", "").await;
    alice.post("on postgres", Some("pg-1")).await;
    assert_eq!(alice.recv().await["message"]["seq"], 1);
    drop(alice);
    assert!(server.terminate().await.success());
    db.drop_now().await;
}
