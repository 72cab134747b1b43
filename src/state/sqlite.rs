//! The SQLite backend: one writer connection, a few readers, WAL so they never block each other.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{
    ADD_BATCH_COUNTS, BatchOutcome, RUN_EXISTS, Rejection, RunId, StateError, SyncedRow,
    count_to_db, from_db, on_conflict_update_row, to_db,
};

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    super::migrator(&[(
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    )])
});

/// Another process (a CLI `handoff sync` beside the daemon) may hold the write lock
/// for a whole batch; waiting is better than failing the run.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const READERS: u32 = 4;

const UPSERT_ROW: &str = concat!(
    "INSERT INTO synced_rows (sync, key_hash, key, fingerprint, record_id, synced_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6)",
    on_conflict_update_row!()
);

/// Bound parameters per `IN (...)` lookup, well under SQLite's limit.
const LOOKUP_CHUNK: usize = 500;

/// Writes queue in-process on the single writer instead of spinning on SQLITE_BUSY;
/// reads go to their own connections, which WAL lets run beside the writer.
#[derive(Debug, Clone)]
pub(super) struct Pools {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
}

pub(super) async fn connect(url: &str) -> Result<Pools, StateError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT);

    // Each connection to an in-memory database would see its own database, and WAL does
    // not apply: one connection serves reads and writes, and is never retired since the
    // database dies with it.
    if url.contains(":memory:") || url.contains("mode=memory") {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        return Ok(Pools {
            writer: pool.clone(),
            reader: pool,
        });
    }

    if let Some(dir) = options.get_filename().parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    // NORMAL is durable across process crashes in WAL mode; only an OS crash or power
    // loss can lose the last commits, and those rows are then simply sent again.
    // FULL would cost an fsync per batch.
    let options = options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    MIGRATOR.run(&writer).await?;
    let reader = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_lazy_with(options);
    Ok(Pools { writer, reader })
}

pub(super) async fn synced_rows(
    pools: &Pools,
    sync: &str,
    hashes: &[i64],
) -> Result<Vec<SyncedRow>, StateError> {
    let mut rows = Vec::with_capacity(hashes.len());
    for chunk in hashes.chunks(LOOKUP_CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT key, key_hash, fingerprint, record_id FROM synced_rows WHERE sync = ",
        );
        query.push_bind(sync).push(" AND key_hash IN (");
        let mut list = query.separated(", ");
        for &hash in chunk {
            list.push_bind(hash);
        }
        query.push(")");
        for row in query.build().fetch_all(&pools.reader).await? {
            rows.push(SyncedRow {
                key: row.try_get(0)?,
                key_hash: from_db(row.try_get(1)?),
                fingerprint: from_db(row.try_get(2)?),
                record_id: row.try_get(3)?,
            });
        }
    }
    Ok(rows)
}

pub(super) async fn commit_batch(
    pools: &Pools,
    run: RunId,
    sync: &str,
    batch: &BatchOutcome,
    now_ms: i64,
) -> Result<(), StateError> {
    // IMMEDIATE takes the write lock up front (waiting out other processes with the busy
    // timeout) rather than upgrading mid-transaction, where SQLite may fail at once.
    let mut tx = pools.writer.begin_with("BEGIN IMMEDIATE").await?;
    for row in &batch.accepted {
        sqlx::query(UPSERT_ROW)
            .bind(sync)
            .bind(to_db(row.key_hash))
            .bind(&row.key)
            .bind(to_db(row.fingerprint))
            .bind(&row.record_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
    for &hash in &batch.removed {
        sqlx::query("DELETE FROM synced_rows WHERE sync = $1 AND key_hash = $2")
            .bind(sync)
            .bind(to_db(hash))
            .execute(&mut *tx)
            .await?;
    }
    let counted = sqlx::query(ADD_BATCH_COUNTS)
        .bind(run)
        .bind(count_to_db(batch.api_calls))
        .bind(count_to_db(batch.throttled))
        .bind(count_to_db(batch.rejected.len() as u64))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if counted == 0 {
        // Dropping the transaction rolls back the rows written above.
        return Err(StateError::RunNotFound(run));
    }
    insert_rejections(&mut tx, run, sync, &batch.rejected, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn record_rejections(
    pools: &Pools,
    run: RunId,
    sync: &str,
    rejections: &[Rejection],
    now_ms: i64,
) -> Result<(), StateError> {
    let mut tx = pools.writer.begin_with("BEGIN IMMEDIATE").await?;
    // Checked so a bad id reads as such rather than as a foreign-key violation.
    if sqlx::query(RUN_EXISTS)
        .bind(run)
        .fetch_optional(&mut *tx)
        .await?
        .is_none()
    {
        return Err(StateError::RunNotFound(run));
    }
    insert_rejections(&mut tx, run, sync, rejections, now_ms).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_rejections(
    conn: &mut SqliteConnection,
    run: RunId,
    sync: &str,
    rejections: &[Rejection],
    now_ms: i64,
) -> Result<(), StateError> {
    for rejection in rejections {
        sqlx::query(
            "INSERT INTO run_rejections (run_id, sync, key, category, message, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(run)
        .bind(sync)
        .bind(&rejection.key)
        .bind(&rejection.category)
        .bind(&rejection.message)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
