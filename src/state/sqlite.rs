//! The SQLite backend: one writer connection, a few readers, WAL so they never block each other.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{
    ADD_BATCH_COUNTS, BatchOutcome, FingerprintSink, RUN_EXISTS, Rejection, RunId, StateError,
    SyncedRow, count_to_db, from_db, on_conflict_update_row, to_db,
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

/// Rows per write statement. Each statement is a round trip to sqlx's SQLite worker
/// thread, which costs more than SQLite's own work for a row, so rows go in groups.
const WRITE_CHUNK: usize = 64;

/// Bound parameters per `IN (...)` lookup, well under SQLite's limit.
const LOOKUP_CHUNK: usize = 500;

/// Rows per page when loading fingerprints.
const LOAD_PAGE: i64 = 100_000;

// sqlx decodes a SQLite row in about 2 µs, which would make a 10M-row load take 20 s;
// SQLite packs a page of rows into one `hash,fingerprint,hash,...` string far faster.
// Pages follow the primary key, which in a WITHOUT ROWID table is the table itself.
const FIRST_PAGE: &str = "SELECT count(*), max(key_hash), \
     group_concat(key_hash || ',' || fingerprint, ',') \
     FROM (SELECT key_hash, fingerprint FROM synced_rows WHERE sync = $1 \
     ORDER BY key_hash LIMIT $2)";
const NEXT_PAGE: &str = "SELECT count(*), max(key_hash), \
     group_concat(key_hash || ',' || fingerprint, ',') \
     FROM (SELECT key_hash, fingerprint FROM synced_rows WHERE sync = $1 AND key_hash > $3 \
     ORDER BY key_hash LIMIT $2)";

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

    // An in-memory database has no WAL, and connections sharing one lock each other out
    // with SQLITE_LOCKED, which the busy timeout does not cover: one connection serves
    // reads and writes, and is never retired since the database would die with it.
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

pub(super) async fn load_fingerprints(
    pools: &Pools,
    sync: &str,
    sink: &mut FingerprintSink,
) -> Result<(), StateError> {
    // One read transaction, so every page comes from the same snapshot.
    let mut tx = pools.reader.begin().await?;
    let mut after: Option<i64> = None;
    loop {
        let page = match after {
            None => sqlx::query(FIRST_PAGE).bind(sync).bind(LOAD_PAGE),
            Some(last) => sqlx::query(NEXT_PAGE).bind(sync).bind(LOAD_PAGE).bind(last),
        };
        let row = page.fetch_one(&mut *tx).await?;
        let rows: i64 = row.try_get(0)?;
        if rows == 0 {
            break;
        }
        after = Some(row.try_get(1)?);
        sink.reserve(rows as usize);
        let packed: &str = row.try_get(2)?;
        let mut numbers = packed.split(',').map(str::parse::<i64>);
        while let Some(key_hash) = numbers.next() {
            let Some(fingerprint) = numbers.next() else {
                return Err(sqlx::Error::Decode(
                    "odd number of values in a fingerprint page".into(),
                )
                .into());
            };
            let decode = |err| sqlx::Error::Decode(Box::new(err));
            sink.push(key_hash.map_err(decode)?, fingerprint.map_err(decode)?)
                .await;
        }
        if rows < LOAD_PAGE {
            break;
        }
    }
    tx.commit().await?;
    Ok(())
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
    for chunk in batch.accepted.chunks(WRITE_CHUNK) {
        let mut upsert = sqlx::query(AssertSqlSafe(UPSERT_SQL[chunk.len()].as_str()))
            .bind(sync)
            .bind(now_ms);
        for row in chunk {
            upsert = upsert
                .bind(to_db(row.key_hash))
                .bind(&row.key)
                .bind(to_db(row.fingerprint))
                .bind(&row.record_id);
        }
        upsert.execute(&mut *tx).await?;
    }
    for chunk in batch.removed.chunks(WRITE_CHUNK) {
        let mut delete = sqlx::query(AssertSqlSafe(DELETE_SQL[chunk.len()].as_str())).bind(sync);
        for &hash in chunk {
            delete = delete.bind(to_db(hash));
        }
        delete.execute(&mut *tx).await?;
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
    for chunk in rejections.chunks(WRITE_CHUNK) {
        let mut insert = sqlx::query(AssertSqlSafe(REJECTION_SQL[chunk.len()].as_str()))
            .bind(run)
            .bind(sync)
            .bind(now_ms);
        for rejection in chunk {
            insert = insert
                .bind(&rejection.key)
                .bind(&rejection.category)
                .bind(&rejection.message);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `[n]` upserts n rows; binds: sync, now, then key_hash, key, fingerprint, record_id per row.
static UPSERT_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    statements_by_rows(|rows| {
        let values = row_tuples(rows, 2, 4, |p| format!("($1, {p}, $2)"));
        format!(
            "INSERT INTO synced_rows (sync, key_hash, key, fingerprint, record_id, synced_at_ms) \
             VALUES {values}{}",
            on_conflict_update_row!()
        )
    })
});

/// `[n]` deletes n rows; binds: sync, then the key hashes.
static DELETE_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    statements_by_rows(|rows| {
        let hashes = row_tuples(rows, 1, 1, |p| p.to_owned());
        format!("DELETE FROM synced_rows WHERE sync = $1 AND key_hash IN ({hashes})")
    })
});

/// `[n]` records n rejections; binds: run, sync, now, then key, category, message per row.
static REJECTION_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    statements_by_rows(|rows| {
        let values = row_tuples(rows, 3, 3, |p| format!("($1, $2, {p}, $3)"));
        format!(
            "INSERT INTO run_rejections (run_id, sync, key, category, message, at_ms) \
             VALUES {values}"
        )
    })
});

/// One statement per row count up to [`WRITE_CHUNK`], built once: the texts are constant,
/// so sqlx's per-connection statement cache keeps them prepared.
fn statements_by_rows(statement: impl Fn(usize) -> String) -> Vec<String> {
    (0..=WRITE_CHUNK).map(statement).collect()
}

/// `rows` comma-separated groups of `per_row` numbered placeholders, each shaped by
/// `tuple`; numbering starts after the `shared` parameters every row reuses.
fn row_tuples(
    rows: usize,
    shared: usize,
    per_row: usize,
    tuple: impl Fn(&str) -> String,
) -> String {
    (0..rows)
        .map(|row| {
            let first = shared + 1 + row * per_row;
            let params: Vec<String> = (first..first + per_row).map(|n| format!("${n}")).collect();
            tuple(&params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
