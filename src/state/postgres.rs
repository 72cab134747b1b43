//! The Postgres backend: row writes go as arrays through `UNNEST`, in statements kept under 12 KiB.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use futures::TryStreamExt;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool, Row};

use super::{
    ADD_BATCH_COUNTS, Accepted, BatchOutcome, FingerprintSink, RUN_EXISTS, Rejection, RunId,
    StateError, SyncedRow, count_to_db, from_db, on_conflict_update_row, to_db,
};

static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    super::migrator(&[
        (
            1,
            "init",
            include_str!("../../migrations/postgres/0001_init.sql"),
        ),
        (
            2,
            "task_outbox",
            include_str!("../../migrations/postgres/0002_task_outbox.sql"),
        ),
        (
            3,
            "synced_rows_without_id",
            include_str!("../../migrations/postgres/0003_synced_rows_without_id.sql"),
        ),
    ])
});

/// Bytes of bound values per statement. sqlx 0.9.0 leaves Nagle's algorithm on (sqlx
/// issue 4335, fixed upstream after 0.9.0), and over TLS a message larger than one 16 KiB record goes out
/// in two writes, the second held until the server's delayed ACK: 40 ms per statement.
/// Statements that fit one record avoid it and cost a fraction of that in round trips.
pub(super) const MESSAGE_BUDGET: usize = 12 * 1024;

/// Array elements carry a 4-byte length; i64s are 8 more.
const HASH_BYTES: usize = 12;

const MAX_CONNECTIONS: u32 = 10;

const UPSERT_ROWS: &str = concat!(
    "INSERT INTO synced_rows (sync, key_hash, key, fingerprint, record_id, synced_at_ms) \
     SELECT $1, t.key_hash, t.key, t.fingerprint, t.record_id, $6 \
     FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[]) \
     AS t (key_hash, key, fingerprint, record_id)",
    on_conflict_update_row!()
);

const DELETE_ROWS: &str = "DELETE FROM synced_rows WHERE sync = $1 AND key_hash = ANY($2)";

// WITH ORDINALITY + ORDER BY: identity ids follow the input order, which is the order
// `rejections()` reports them in.
const INSERT_REJECTIONS: &str = "INSERT INTO run_rejections \
     (run_id, sync, key, category, message, at_ms) \
     SELECT $1, $2, t.key, t.category, t.message, $6 \
     FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY \
     AS t (key, category, message, n) ORDER BY t.n";

pub(super) async fn connect(url: &str) -> Result<PgPool, StateError> {
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect(url)
        .await?;
    // sqlx takes an advisory lock here, so replicas starting together migrate once.
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// One streamed query: decoding is the cost here (about 0.5 µs a row), and the sink
/// hashes on another thread meanwhile.
pub(super) async fn load_fingerprints(
    pool: &PgPool,
    sync: &str,
    sink: &mut FingerprintSink,
) -> Result<(), StateError> {
    // In key order, as the plan's table keeps them (`diff::Previous`): the primary key's order.
    let mut rows = sqlx::query(
        "SELECT key_hash, fingerprint FROM synced_rows WHERE sync = $1 ORDER BY key_hash",
    )
    .bind(sync)
    .fetch(pool);
    while let Some(row) = rows.try_next().await? {
        sink.push(row.try_get(0)?, row.try_get(1)?);
    }
    Ok(())
}

pub(super) async fn synced_rows(
    pool: &PgPool,
    sync: &str,
    hashes: &[i64],
) -> Result<Vec<SyncedRow>, StateError> {
    let mut rows = Vec::with_capacity(hashes.len());
    for chunk in hashes.chunks(MESSAGE_BUDGET / HASH_BYTES) {
        let found = sqlx::query(
            "SELECT key, key_hash, fingerprint, record_id FROM synced_rows \
             WHERE sync = $1 AND key_hash = ANY($2)",
        )
        .bind(sync)
        .bind(chunk)
        .fetch_all(pool)
        .await?;
        for row in found {
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
    pool: &PgPool,
    run: RunId,
    sync: &str,
    batch: &BatchOutcome,
    now_ms: i64,
) -> Result<(), StateError> {
    let mut tx = pool.begin().await?;
    let accepted = fold_repeats(&batch.accepted);
    let row_bytes =
        |r: &Accepted| 4 * 4 + 16 + r.key.len() + r.record_id.as_ref().map_or(0, String::len);
    for chunk in wire_chunks(&accepted, row_bytes) {
        let key_hashes: Vec<i64> = chunk.iter().map(|r| to_db(r.key_hash)).collect();
        let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
        let fingerprints: Vec<i64> = chunk.iter().map(|r| to_db(r.fingerprint)).collect();
        let record_ids: Vec<Option<&str>> = chunk.iter().map(|r| r.record_id.as_deref()).collect();
        sqlx::query(UPSERT_ROWS)
            .bind(sync)
            .bind(key_hashes)
            .bind(keys)
            .bind(fingerprints)
            .bind(record_ids)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
    for chunk in batch.removed.chunks(MESSAGE_BUDGET / HASH_BYTES) {
        let key_hashes: Vec<i64> = chunk.iter().map(|&h| to_db(h)).collect();
        sqlx::query(DELETE_ROWS)
            .bind(sync)
            .bind(key_hashes)
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
    pool: &PgPool,
    run: RunId,
    sync: &str,
    rejections: &[Rejection],
    now_ms: i64,
) -> Result<(), StateError> {
    let mut tx = pool.begin().await?;
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
    conn: &mut PgConnection,
    run: RunId,
    sync: &str,
    rejections: &[Rejection],
    now_ms: i64,
) -> Result<(), StateError> {
    let row_bytes = |r: &Rejection| 3 * 4 + r.key.len() + r.category.len() + r.message.len();
    for chunk in wire_chunks(rejections, row_bytes) {
        let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
        let categories: Vec<&str> = chunk.iter().map(|r| r.category.as_str()).collect();
        let messages: Vec<&str> = chunk.iter().map(|r| r.message.as_str()).collect();
        sqlx::query(INSERT_REJECTIONS)
            .bind(run)
            .bind(sync)
            .bind(keys)
            .bind(categories)
            .bind(messages)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Splits `items` into runs whose bound values stay within [`MESSAGE_BUDGET`] (at least
/// one item each, however large).
pub(super) fn wire_chunks<'a, T>(
    items: &'a [T],
    bytes: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut total = bytes(&rest[0]);
        let mut len = 1;
        while let Some(item) = rest.get(len) {
            total += bytes(item);
            if total > MESSAGE_BUDGET {
                break;
            }
            len += 1;
        }
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// Postgres refuses an `ON CONFLICT DO UPDATE` that touches one row twice in a
/// statement, so repeated key hashes are folded the way one-by-one upserts would
/// land: the last accept wins, keeping an earlier record id if it reported none.
fn fold_repeats(accepted: &[Accepted]) -> Cow<'_, [Accepted]> {
    let mut position: HashMap<u64, usize> = HashMap::with_capacity(accepted.len());
    if accepted
        .iter()
        .enumerate()
        .all(|(i, row)| position.insert(row.key_hash, i).is_none())
    {
        return Cow::Borrowed(accepted);
    }
    position.clear();
    let mut folded: Vec<Accepted> = Vec::with_capacity(accepted.len());
    for row in accepted {
        match position.get(&row.key_hash) {
            Some(&i) => {
                let earlier = std::mem::replace(&mut folded[i], row.clone());
                if folded[i].record_id.is_none() {
                    folded[i].record_id = earlier.record_id;
                }
            }
            None => {
                position.insert(row.key_hash, folded.len());
                folded.push(row.clone());
            }
        }
    }
    Cow::Owned(folded)
}
