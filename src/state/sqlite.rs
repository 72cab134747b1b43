//! The SQLite backend: one writer connection, a few readers, WAL so they never block each other.

use std::ffi::CStr;
use std::ptr::NonNull;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use libsqlite3_sys as ffi;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{
    ADD_BATCH_COUNTS, BatchOutcome, RUN_EXISTS, Rejection, RunId, StateError, SyncedRow,
    count_to_db, from_db, on_conflict_update_row, to_db,
};

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    super::migrator(&[
        (
            1,
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
        ),
        (
            2,
            "task_outbox",
            include_str!("../../migrations/sqlite/0002_task_outbox.sql"),
        ),
        (
            3,
            "synced_rows_without_id",
            include_str!("../../migrations/sqlite/0003_synced_rows_without_id.sql"),
        ),
    ])
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

/// Every stored fingerprint of a sync. One statement is one snapshot.
/// The two halves of a sync's fingerprints (`diff::previous::half`: the key hash's top
/// bit, the sign of its stored i64), each a range of the primary key.
const LOAD_FINGERPRINTS: [&CStr; 2] = [
    c"SELECT key_hash, fingerprint FROM synced_rows WHERE sync = ?1 AND key_hash >= 0 ORDER BY key_hash",
    c"SELECT key_hash, fingerprint FROM synced_rows WHERE sync = ?1 AND key_hash < 0 ORDER BY key_hash",
];

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

/// Reads through SQLite's C API on a reader connection that sqlx hands over: sqlx
/// decodes a row in about 2 µs, and packing rows into text (`group_concat`) and
/// parsing it back costs about 0.8 s per million rows, where stepping a prepared
/// statement and reading two integers costs about 0.1 s.
pub(super) async fn load_fingerprints(
    pools: &Pools,
    sync: &str,
) -> Result<[Vec<(u64, u64)>; 2], StateError> {
    // Two reader connections, one per half, read at once on two threads; a pool with
    // one reader (an in-memory database) reads the halves one after the other. The two
    // snapshots may differ only if this sync's rows change meanwhile, which nothing
    // does during its plan.
    let mut low_conn = pools.reader.acquire().await?;
    let mut high_conn = pools.reader.try_acquire();
    let mut low_handle = low_conn.lock_handle().await?;
    let mut high_handle = match &mut high_conn {
        Some(conn) => Some(conn.lock_handle().await?),
        None => None,
    };
    let low_db = Connection(low_handle.as_raw_handle());
    let high_db = high_handle.as_mut().map(|h| Connection(h.as_raw_handle()));
    let read = || match high_db {
        Some(high_db) => std::thread::scope(|s| {
            let high = s.spawn(move || read_fingerprints(high_db, LOAD_FINGERPRINTS[1], sync));
            let low = read_fingerprints(low_db, LOAD_FINGERPRINTS[0], sync);
            let high = high.join().expect("reading fingerprints panicked");
            Ok([low?, high?])
        }),
        None => Ok([
            read_fingerprints(low_db, LOAD_FINGERPRINTS[0], sync)?,
            read_fingerprints(low_db, LOAD_FINGERPRINTS[1], sync)?,
        ]),
    };
    // A long read blocks its thread: let the runtime move other tasks off it.
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
        _ => read(),
    }
}

/// A raw connection handed to the thread that reads through it.
#[derive(Clone, Copy)]
struct Connection(NonNull<ffi::sqlite3>);

// SAFETY: SQLite connections may move between threads (sqlx opens them in multi-thread
// mode); the caller holds sqlx's lock on the connection (`lock_handle`) for as long as
// the reading thread uses it, so no other thread touches it meanwhile.
unsafe impl Send for Connection {}

fn read_fingerprints(
    db: Connection,
    sql: &CStr,
    sync: &str,
) -> Result<Vec<(u64, u64)>, StateError> {
    /// Finalizes the statement however the read ends.
    struct Statement(*mut ffi::sqlite3_stmt);
    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: the statement came from sqlite3_prepare_v2 and is finalized once.
            unsafe { ffi::sqlite3_finalize(self.0) };
        }
    }
    let db = db.0.as_ptr();
    let mut out = Vec::new();
    let error = |rc: i32| {
        // SAFETY: `db` is a live connection; sqlite3_errmsg returns a NUL-terminated string it owns.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }.to_string_lossy();
        StateError::Db(sqlx::Error::Protocol(format!(
            "loading fingerprints: {message} (SQLite code {rc})"
        )))
    };
    let mut raw = std::ptr::null_mut();
    // SAFETY: the caller holds sqlx's lock on this connection (`lock_handle`), so no
    // other thread uses `db` meanwhile; the SQL is NUL-terminated and the statement is
    // finalized by `Statement` before the lock is released.
    unsafe {
        let rc = ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut raw, std::ptr::null_mut());
        let stmt = Statement(raw);
        if rc != ffi::SQLITE_OK {
            return Err(error(rc));
        }
        let len = i32::try_from(sync.len()).map_err(|_| {
            StateError::Db(sqlx::Error::InvalidArgument("sync name too long".into()))
        })?;
        let rc = ffi::sqlite3_bind_text(
            stmt.0,
            1,
            sync.as_ptr().cast(),
            len,
            ffi::SQLITE_TRANSIENT(),
        );
        if rc != ffi::SQLITE_OK {
            return Err(error(rc));
        }
        loop {
            match ffi::sqlite3_step(stmt.0) {
                ffi::SQLITE_ROW => out.push((
                    from_db(ffi::sqlite3_column_int64(stmt.0, 0)),
                    from_db(ffi::sqlite3_column_int64(stmt.0, 1)),
                )),
                ffi::SQLITE_DONE => return Ok(out),
                rc => return Err(error(rc)),
            }
        }
    }
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
        let mut upsert = sqlx::query(AssertSqlSafe(UPSERT_SQL[chunk.len()].as_str()));
        for row in chunk {
            upsert = upsert
                .bind(sync)
                .bind(to_db(row.key_hash))
                .bind(&row.key)
                .bind(to_db(row.fingerprint))
                .bind(&row.record_id)
                .bind(now_ms);
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
    for task in &batch.tasks {
        sqlx::query(super::INSERT_TASK)
            .bind(&task.task_key)
            .bind(sync)
            .bind(&task.key)
            .bind(&task.record_id)
            .bind(&task.properties)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
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
        let mut insert = sqlx::query(AssertSqlSafe(REJECTION_SQL[chunk.len()].as_str()));
        for rejection in chunk {
            insert = insert
                .bind(run)
                .bind(sync)
                .bind(&rejection.key)
                .bind(&rejection.category)
                .bind(&rejection.message)
                .bind(now_ms);
        }
        insert.execute(&mut *conn).await?;
    }
    Ok(())
}

// The write statements use anonymous `?` placeholders, bound in order, and repeat the
// values every row shares: SQLite finds a numbered (`$N`) parameter's name by a linear
// scan, and sqlx asks for every parameter's name, so numbered placeholders made binding
// a 64-row statement quadratic (5 % of a first sync's profile).

/// `[n]` upserts n rows; binds per row: sync, key_hash, key, fingerprint, record_id, now.
static UPSERT_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    statements_by_rows(|rows| {
        format!(
            "INSERT INTO synced_rows (sync, key_hash, key, fingerprint, record_id, synced_at_ms) \
             VALUES {}{}",
            placeholders(rows, 6),
            on_conflict_update_row!()
        )
    })
});

/// `[n]` deletes n rows; binds: sync, then the key hashes.
static DELETE_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    statements_by_rows(|rows| {
        format!(
            "DELETE FROM synced_rows WHERE sync = ? AND key_hash IN ({})",
            vec!["?"; rows].join(", ")
        )
    })
});

/// `[n]` records n rejections; binds per row: run, sync, key, category, message, now.
static REJECTION_SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
    statements_by_rows(|rows| {
        format!(
            "INSERT INTO run_rejections (run_id, sync, key, category, message, at_ms) \
             VALUES {}",
            placeholders(rows, 6)
        )
    })
});

fn statements_by_rows(statement: impl Fn(usize) -> String) -> Vec<String> {
    (0..=WRITE_CHUNK).map(statement).collect()
}

/// `rows` comma-separated tuples of `per_row` anonymous placeholders: `(?, ?), (?, ?)`.
fn placeholders(rows: usize, per_row: usize) -> String {
    let tuple = format!("({})", vec!["?"; per_row].join(", "));
    vec![tuple; rows].join(", ")
}
