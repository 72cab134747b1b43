//! The state store: what each sync last sent, and a record of every run (sqlx; SQLite or Postgres).
//!
//! Only this module writes to the store. Rows are keyed by a 64-bit hash of the
//! model's primary key so a 10M-row sync's state fits in memory; the key text is
//! kept beside it for reports and `on_remove`.
//!
//! Both backends share one schema (`migrations/sqlite`, `migrations/postgres`) and,
//! where the dialects agree, one SQL text (sqlx binds `$N` on SQLite too). The bulk
//! paths differ, each shaped by where its time goes: Postgres writes arrays through
//! `UNNEST` (a statement is a network round trip), SQLite multi-row `VALUES` (a
//! statement is a hop to sqlx's worker thread), and each loads fingerprints its own
//! way (`postgres.rs`, `sqlite.rs`). u64 hashes and fingerprints are stored as their
//! i64 bit pattern, so values above `i64::MAX` come back exactly.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use futures::TryStreamExt;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{PgPool, Row};

/// Identifies one run in the store.
pub type RunId = i64;

/// The rejection category for rows handoff refused itself (null or duplicate keys).
pub const INVALID_KEY: &str = "INVALID_KEY";

/// The store's errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The URL is not `sqlite:` or `postgres:`.
    #[error("state store URL {0:?} is not supported: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The database refused or failed.
    #[error("state store: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("state store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A run id that does not exist.
    #[error("run {0} not found")]
    RunNotFound(RunId),
    /// The directory for a SQLite file could not be created.
    #[error("state store: cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the store remembers about one synced row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedRow {
    pub key: String,
    pub key_hash: u64,
    pub fingerprint: u64,
    /// The destination's id for the record, when it told us.
    pub record_id: Option<String>,
}

/// A row the destination accepted: its fingerprint becomes the new truth.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub key: String,
    pub key_hash: u64,
    pub fingerprint: u64,
    pub record_id: Option<String>,
}

/// A row the destination refused (or never answered for); its old fingerprint stays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub key: String,
    /// e.g. HubSpot's `category` (`VALIDATION_ERROR`), or [`INVALID_KEY`] for rows handoff itself refused.
    pub category: String,
    pub message: String,
}

/// Everything one connector batch produced, committed in one transaction.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub accepted: Vec<Accepted>,
    /// Rows that left the model and whose removal the destination accepted (or that
    /// needed no request): their state rows are deleted.
    pub removed: Vec<u64>,
    pub rejected: Vec<Rejection>,
    /// Follow-up tasks the accepted rows call for, queued in the same transaction.
    pub tasks: Vec<NewTask>,
    pub api_calls: u64,
    pub throttled: u64,
}

/// A follow-up task to create exactly once, queued with the handoff that calls for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Deterministic: the same handoff always yields the same key.
    pub task_key: String,
    /// The row's key, for reports.
    pub key: String,
    /// The CRM record the task is attached to.
    pub record_id: String,
    /// The task's properties as a JSON object.
    pub properties: String,
}

/// A queued task not yet known to exist in the CRM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTask {
    pub task_key: String,
    pub key: String,
    pub record_id: String,
    pub properties: String,
    /// Create requests sent so far; above zero the task may already exist.
    pub attempts: u32,
    /// Unix ms of the last create request.
    pub last_attempt_ms: Option<i64>,
}

/// How queued tasks stand for one sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TaskCounts {
    pub pending: u64,
    pub sent: u64,
    pub failed: u64,
}

/// Binds: task key, sync, key, record id, properties, now. A key already queued is left as it is.
const INSERT_TASK: &str = "INSERT INTO task_outbox (task_key, sync, key, record_id, properties, \
     state, created_at_ms) VALUES ($1, $2, $3, $4, $5, 'pending', $6) \
     ON CONFLICT (task_key) DO NOTHING";

impl BatchOutcome {
    /// Folds another batch's outcome into this one, to commit both in one transaction.
    pub fn merge(&mut self, other: BatchOutcome) {
        self.accepted.extend(other.accepted);
        self.removed.extend(other.removed);
        self.rejected.extend(other.rejected);
        self.tasks.extend(other.tasks);
        self.api_calls += other.api_calls;
        self.throttled += other.throttled;
    }
}

/// Final counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub invalid: u64,
    pub rejected: u64,
    pub api_calls: u64,
    pub throttled: u64,
    pub tasks_created: u64,
    pub owners_kept: u64,
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub sync: String,
    /// `running`, `ok`, `rejections`, `failed`.
    pub status: String,
    pub full: bool,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub counts: RunCounts,
    pub error: Option<String>,
}

/// A handle on the state store; cloning shares the connection pools.
#[derive(Debug, Clone)]
pub struct StateStore {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Pools),
    Postgres(PgPool),
}

/// Expands `$body` once per backend with `$pool` bound to that backend's pool, so SQL
/// both dialects accept is written once. `read` may use SQLite's reader pool.
macro_rules! on_pool {
    ($store:expr, read $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite(pools) => {
                let $pool = &pools.reader;
                $body
            }
            Backend::Postgres($pool) => $body,
        }
    };
    ($store:expr, write $pool:ident => $body:expr) => {
        match &$store.backend {
            Backend::Sqlite(pools) => {
                let $pool = &pools.writer;
                $body
            }
            Backend::Postgres($pool) => $body,
        }
    };
}

/// The columns [`run_record`] decodes, as a macro so queries can `concat!` it into static SQL.
macro_rules! run_columns {
    () => {
        "id, sync, status, full_refresh, started_at_ms, finished_at_ms, added, changed, removed, \
         unchanged, invalid, rejected, api_calls, throttled, error, tasks_created, owners_kept"
    };
}

/// How an accepted row lands on an existing one: the new fingerprint wins, the old
/// record id survives an accept that did not report one.
macro_rules! on_conflict_update_row {
    () => {
        " ON CONFLICT (sync, key_hash) DO UPDATE SET key = excluded.key, \
         fingerprint = excluded.fingerprint, \
         record_id = COALESCE(excluded.record_id, synced_rows.record_id), \
         synced_at_ms = excluded.synced_at_ms"
    };
}
use on_conflict_update_row;

/// Binds: run id, api calls, throttled, rejected.
const ADD_BATCH_COUNTS: &str = "UPDATE runs SET api_calls = api_calls + $2, \
     throttled = throttled + $3, rejected = rejected + $4 WHERE id = $1";

const RUN_EXISTS: &str = "SELECT 1 FROM runs WHERE id = $1";

impl StateStore {
    /// Opens the store at `sqlite://PATH` (relative paths are resolved by the caller; the
    /// parent directories and the file are created on first use) or `postgres://...`,
    /// and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<StateStore, StateError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(sqlite::connect(url).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres(postgres::connect(url).await?)
        } else {
            return Err(StateError::UnsupportedUrl(url.to_owned()));
        };
        let store = StateStore { backend };
        tracing::debug!(backend = store.backend(), "state store ready");
        Ok(store)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// key_hash → fingerprint for every row the sync has synced.
    pub async fn load_fingerprints(&self, sync: &str) -> Result<HashMap<u64, u64>, StateError> {
        let [low, high] = self.load_fingerprint_halves(sync).await?;
        Ok(low.into_iter().chain(high).collect())
    }

    /// (key_hash, fingerprint) of every row the sync has synced, split by
    /// [`crate::diff::previous::half`] of the key hash: what a
    /// plan builds its lookup table from (`diff::Previous::from_halves`), each sorted by
    /// key hash. SQLite reads the two halves on two connections at once, as two ranges
    /// of its primary key.
    pub async fn load_fingerprint_halves(
        &self,
        sync: &str,
    ) -> Result<[Vec<(u64, u64)>; 2], StateError> {
        match &self.backend {
            Backend::Sqlite(pools) => sqlite::load_fingerprints(pools, sync).await,
            Backend::Postgres(pool) => {
                let mut sink = FingerprintSink::default();
                postgres::load_fingerprints(pool, sync, &mut sink).await?;
                Ok(sink.halves)
            }
        }
    }

    /// The stored rows for these key hashes, in no particular order; unknown hashes are skipped.
    pub async fn synced_rows(
        &self,
        sync: &str,
        key_hashes: &[u64],
    ) -> Result<Vec<SyncedRow>, StateError> {
        // Sorted and deduplicated: a hash repeated across chunks would otherwise come back
        // twice, and sorted lookups walk the primary key in order.
        let mut hashes: Vec<i64> = key_hashes.iter().map(|&h| to_db(h)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        match &self.backend {
            Backend::Sqlite(pools) => sqlite::synced_rows(pools, sync, &hashes).await,
            Backend::Postgres(pool) => postgres::synced_rows(pool, sync, &hashes).await,
        }
    }

    /// Key hashes, ascending, of the sync's stored rows the destination never gave a
    /// record id for: a removal cannot reach those. Read through a partial index of just
    /// those rows (migration 0003), so it costs next to nothing when there are none.
    pub async fn without_record_id(&self, sync: &str) -> Result<Vec<u64>, StateError> {
        // SQLite's planner, without statistics, would rather scan the sync's whole
        // primary-key range (a second or more at 10M rows) than the partial index.
        const SQLITE: &str = "SELECT key_hash FROM synced_rows INDEXED BY synced_rows_without_id \
                              WHERE sync = $1 AND record_id IS NULL";
        const POSTGRES: &str =
            "SELECT key_hash FROM synced_rows WHERE sync = $1 AND record_id IS NULL";
        let hashes: Vec<i64> = match &self.backend {
            Backend::Sqlite(pools) => {
                sqlx::query_scalar(SQLITE)
                    .bind(sync)
                    .fetch_all(&pools.reader)
                    .await?
            }
            Backend::Postgres(pool) => {
                sqlx::query_scalar(POSTGRES)
                    .bind(sync)
                    .fetch_all(pool)
                    .await?
            }
        };
        let mut hashes: Vec<u64> = hashes.into_iter().map(from_db).collect();
        hashes.sort_unstable();
        Ok(hashes)
    }

    /// Records the start of a run (status `running`, started now).
    pub async fn begin_run(&self, sync: &str, full: bool) -> Result<RunId, StateError> {
        const SQL: &str = "INSERT INTO runs (sync, status, full_refresh, started_at_ms) \
                           VALUES ($1, 'running', $2, $3) RETURNING id";
        let id: i64 = on_pool!(self, write pool => {
            sqlx::query_scalar(SQL)
                .bind(sync)
                .bind(full)
                .bind(now_ms())
                .fetch_one(pool)
                .await?
        });
        Ok(id)
    }

    /// In one transaction: upserts the accepted rows (an accepted row without a record id
    /// keeps the stored one), deletes the removed ones, records the rejections, and adds the
    /// batch's API calls, throttles and rejections to the run. All of it lands or none.
    pub async fn commit_batch(
        &self,
        run: RunId,
        sync: &str,
        batch: &BatchOutcome,
    ) -> Result<(), StateError> {
        match &self.backend {
            Backend::Sqlite(pools) => sqlite::commit_batch(pools, run, sync, batch, now_ms()).await,
            Backend::Postgres(pool) => {
                postgres::commit_batch(pool, run, sync, batch, now_ms()).await
            }
        }
    }

    /// Closes a run: status, finish time, the run's total counts and an optional error.
    pub async fn finish_run(
        &self,
        run: RunId,
        status: &str,
        counts: &RunCounts,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        const SQL: &str = "UPDATE runs SET status = $2, finished_at_ms = $3, \
             added = $4, changed = $5, removed = $6, unchanged = $7, invalid = $8, \
             rejected = $9, api_calls = $10, throttled = $11, error = $12, \
             tasks_created = $13, owners_kept = $14 WHERE id = $1";
        let updated = on_pool!(self, write pool => {
            sqlx::query(SQL)
                .bind(run)
                .bind(status)
                .bind(now_ms())
                .bind(count_to_db(counts.added))
                .bind(count_to_db(counts.changed))
                .bind(count_to_db(counts.removed))
                .bind(count_to_db(counts.unchanged))
                .bind(count_to_db(counts.invalid))
                .bind(count_to_db(counts.rejected))
                .bind(count_to_db(counts.api_calls))
                .bind(count_to_db(counts.throttled))
                .bind(error)
                .bind(count_to_db(counts.tasks_created))
                .bind(count_to_db(counts.owners_kept))
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            return Err(StateError::RunNotFound(run));
        }
        Ok(())
    }

    /// Records rows handoff refused itself for the run; callers use category [`INVALID_KEY`].
    /// The run's counts are left alone: these rows are `invalid`, set by [`Self::finish_run`].
    pub async fn record_rejections(
        &self,
        run: RunId,
        sync: &str,
        rejections: &[Rejection],
    ) -> Result<(), StateError> {
        if rejections.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite(pools) => {
                sqlite::record_rejections(pools, run, sync, rejections, now_ms()).await
            }
            Backend::Postgres(pool) => {
                postgres::record_rejections(pool, run, sync, rejections, now_ms()).await
            }
        }
    }

    /// One run.
    pub async fn run(&self, id: RunId) -> Result<RunRecord, StateError> {
        const SQL: &str = concat!("SELECT ", run_columns!(), " FROM runs WHERE id = $1");
        let record = on_pool!(self, read pool => {
            match sqlx::query(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await?
            {
                Some(row) => run_record(&row)?,
                None => return Err(StateError::RunNotFound(id)),
            }
        });
        Ok(record)
    }

    /// The latest `limit` runs, newest first, of one sync or (`None`) of all syncs.
    pub async fn recent_runs(
        &self,
        sync: Option<&str>,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError> {
        // Ids are handed out in start order, and unlike start times they never tie.
        const OF_SYNC: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE sync = $1 ORDER BY id DESC LIMIT $2"
        );
        const OF_ALL: &str = concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs ORDER BY id DESC LIMIT $1"
        );
        let limit = i64::from(limit);
        let records = on_pool!(self, read pool => {
            let rows = match sync {
                Some(sync) => {
                    sqlx::query(OF_SYNC)
                        .bind(sync)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
                None => {
                    sqlx::query(OF_ALL)
                        .bind(limit)
                        .fetch_all(pool)
                        .await?
                }
            };
            rows.iter().map(run_record).collect::<Result<Vec<_>, _>>()?
        });
        Ok(records)
    }

    /// The run's rejections in the order they were recorded.
    pub async fn rejections(&self, run: RunId) -> Result<Vec<Rejection>, StateError> {
        const SQL: &str = "SELECT key, category, message FROM run_rejections \
                           WHERE run_id = $1 ORDER BY id";
        let rejections = on_pool!(self, read pool => {
            let mut rejections = Vec::new();
            let mut rows = sqlx::query(SQL).bind(run).fetch(pool);
            while let Some(row) = rows.try_next().await? {
                rejections.push(Rejection {
                    key: row.try_get(0)?,
                    category: row.try_get(1)?,
                    message: row.try_get(2)?,
                });
            }
            rejections
        });
        Ok(rejections)
    }

    /// Up to `limit` queued tasks of the sync, oldest first.
    pub async fn pending_tasks(
        &self,
        sync: &str,
        limit: u32,
    ) -> Result<Vec<OutboxTask>, StateError> {
        const SQL: &str = "SELECT task_key, key, record_id, properties, attempts, last_attempt_ms \
             FROM task_outbox WHERE sync = $1 AND state = 'pending' \
             ORDER BY created_at_ms, task_key LIMIT $2";
        let tasks = on_pool!(self, read pool => {
            let rows = sqlx::query(SQL)
                .bind(sync)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(OutboxTask {
                        task_key: row.try_get(0)?,
                        key: row.try_get(1)?,
                        record_id: row.try_get(2)?,
                        properties: row.try_get(3)?,
                        attempts: u32::try_from(row.try_get::<i64, _>(4)?).unwrap_or(u32::MAX),
                        last_attempt_ms: row.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(tasks)
    }

    /// Records, before the request goes out, that these tasks are about to be created:
    /// from now on a crash leaves them marked as possibly existing.
    pub async fn mark_tasks_attempted(&self, task_keys: &[String]) -> Result<(), StateError> {
        const SQL: &str = "UPDATE task_outbox SET attempts = attempts + 1, last_attempt_ms = $2 \
             WHERE task_key = $1";
        let now = now_ms();
        on_pool!(self, write pool => {
            let mut tx = pool.begin().await?;
            for k in task_keys {
                sqlx::query(SQL).bind(k).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Closes tasks: `sent` (task key, CRM task id) exist in the CRM; `failed` were refused
    /// for good and are recorded as rejections of the run (with the row's key).
    pub async fn finish_tasks(
        &self,
        run: RunId,
        sync: &str,
        sent: &[(String, String)],
        failed: &[(String, Rejection)],
    ) -> Result<(), StateError> {
        const SENT: &str = "UPDATE task_outbox SET state = 'sent', task_id = $2, done_at_ms = $3 \
             WHERE task_key = $1";
        const FAILED: &str = "UPDATE task_outbox SET state = 'failed', error = $2, done_at_ms = $3 \
             WHERE task_key = $1";
        const REJECT: &str = "INSERT INTO run_rejections (run_id, sync, key, category, message, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)";
        const COUNT: &str = "UPDATE runs SET rejected = rejected + $2 WHERE id = $1";
        if sent.is_empty() && failed.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        on_pool!(self, write pool => {
            let mut tx = pool.begin().await?;
            for (k, id) in sent {
                sqlx::query(SENT).bind(k).bind(id).bind(now).execute(&mut *tx).await?;
            }
            for (k, r) in failed {
                let msg = format!("{}: {}", r.category, r.message);
                sqlx::query(FAILED).bind(k).bind(&msg).bind(now).execute(&mut *tx).await?;
                sqlx::query(REJECT)
                    .bind(run)
                    .bind(sync)
                    .bind(&r.key)
                    .bind(&r.category)
                    .bind(&r.message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            if !failed.is_empty() {
                sqlx::query(COUNT)
                    .bind(run)
                    .bind(count_to_db(failed.len() as u64))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Queued, created and refused tasks of one sync.
    pub async fn task_counts(&self, sync: &str) -> Result<TaskCounts, StateError> {
        const SQL: &str = "SELECT state, count(*) FROM task_outbox WHERE sync = $1 GROUP BY state";
        let mut counts = TaskCounts::default();
        on_pool!(self, read pool => {
            for row in sqlx::query(SQL).bind(sync).fetch_all(pool).await? {
                let state: String = row.try_get(0)?;
                let n = count_from_db(row.try_get::<i64, _>(1)?);
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "sent" => counts.sent = n,
                    "failed" => counts.failed = n,
                    _ => {}
                }
            }
        });
        Ok(counts)
    }

    /// Marks runs left `running` by a crashed process as `failed` ("interrupted"); returns
    /// how many. Call at start-up, before this process begins runs of its own.
    pub async fn recover_interrupted(&self) -> Result<u64, StateError> {
        const SQL: &str = "UPDATE runs SET status = 'failed', error = 'interrupted', \
                           finished_at_ms = $1 WHERE status = 'running'";
        let recovered = on_pool!(self, write pool => {
            sqlx::query(SQL).bind(now_ms()).execute(pool).await?.rows_affected()
        });
        Ok(recovered)
    }
}

/// Collects the fingerprints a backend decodes, split into the halves the lookup table
/// is built from (`diff::Previous::from_halves`), each in the order they arrive.
#[derive(Default)]
struct FingerprintSink {
    halves: [Vec<(u64, u64)>; 2],
}

impl FingerprintSink {
    fn push(&mut self, key_hash: i64, fingerprint: i64) {
        let key_hash = from_db(key_hash);
        self.halves[crate::diff::previous::half(key_hash)].push((key_hash, from_db(fingerprint)));
    }
}

/// Decodes a row selected with [`run_columns`] on either backend.
fn run_record<R: Row>(row: &R) -> Result<RunRecord, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let count = |i: usize| row.try_get::<i64, _>(i).map(count_from_db);
    Ok(RunRecord {
        id: row.try_get(0)?,
        sync: row.try_get(1)?,
        status: row.try_get(2)?,
        full: row.try_get(3)?,
        started_at_ms: row.try_get(4)?,
        finished_at_ms: row.try_get(5)?,
        counts: RunCounts {
            added: count(6)?,
            changed: count(7)?,
            removed: count(8)?,
            unchanged: count(9)?,
            invalid: count(10)?,
            rejected: count(11)?,
            api_calls: count(12)?,
            throttled: count(13)?,
            tasks_created: count(15)?,
            owners_kept: count(16)?,
        },
        error: row.try_get(14)?,
    })
}

/// Hashes and fingerprints keep their bits; the sign is meaningless.
fn to_db(value: u64) -> i64 {
    value as i64
}

fn from_db(value: i64) -> u64 {
    value as u64
}

/// Counts are real quantities, so clamp rather than wrap into negative numbers.
fn count_to_db(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn count_from_db(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Migrations are listed by hand because `sqlx::migrate!` needs sqlx's `macros` feature.
/// Versions and descriptions follow the file names, so the checksums match what
/// `migrate!` or `sqlx migrate` would record.
fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sqlx::SqlSafeStr::into_sql_str(sql),
                    false,
                )
            })
            .collect(),
    )
}
