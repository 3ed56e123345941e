//! Embedded migrations for both backends, applied by `Store::migrate` (and `banter migrate`).

use diesel_async::RunQueryDsl;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::StorageError;
use crate::pool::Pools;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Postgres advisory lock key serialising migrations of several starting processes.
const MIGRATION_LOCK: i64 = 0x6261_6e74_6572; // "banter"

pub(crate) async fn migrate(pools: &Pools) -> Result<Vec<String>, StorageError> {
    let failed = |e: &dyn std::fmt::Display| StorageError::Migration(e.to_string());
    match pools {
        Pools::Sqlite(pool) => {
            let mut pooled = pool.get().await?;
            pooled
                .spawn_blocking(|conn| {
                    let applied = conn
                        .run_pending_migrations(SQLITE_MIGRATIONS)
                        .map_err(diesel::result::Error::QueryBuilderError)?;
                    Ok(applied.iter().map(ToString::to_string).collect())
                })
                .await
                .map_err(|e| failed(&e))
        }
        Pools::Postgres(pool) => {
            let mut conn = pool.dedicated_connection().await.map_err(|e| failed(&e))?;
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .await?;
            // The harness blocks on the async connection; run it off the async workers.
            let runtime = tokio::runtime::Handle::current();
            let (result, mut conn) = tokio::task::spawn_blocking(move || {
                let _entered = runtime.enter();
                let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
                let result = harness
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|applied| applied.iter().map(ToString::to_string).collect::<Vec<_>>())
                    .map_err(|e| e.to_string());
                (result, harness.into_inner())
            })
            .await
            .map_err(|e| failed(&e))?;
            diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .execute(&mut conn)
                .await?;
            result.map_err(|e| failed(&e))
        }
    }
}
