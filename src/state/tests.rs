//! State store tests, each run against SQLite and, when `HANDOFF_TEST_POSTGRES_URL` is set, Postgres.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::*;

/// A database for one test: a fresh SQLite file, or a fresh schema in the test Postgres.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        // A nested path: connect must create the directories.
        let path = dir.path().join("nested/dir/state.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
        }
    }

    async fn store(&self) -> StateStore {
        StateStore::connect(&self.url).await.expect("connect")
    }
}

/// Runs `body` in its own Postgres schema (dropped afterwards, even if `body` panics).
async fn with_postgres<F, Fut>(test: &str, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(base) = std::env::var("HANDOFF_TEST_POSTGRES_URL") else {
        crate::test_support::skipped(
            "HANDOFF_TEST_POSTGRES_URL not set (the Postgres variant of this state test did not run)",
        );
        return;
    };
    // Per test and per process, so parallel tests and parallel `cargo test`s never meet.
    let schema = format!("handoff_state_{test}_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await.expect("connect admin");
    let drop_schema = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    sqlx::query(sqlx::AssertSqlSafe(drop_schema.clone()))
        .execute(&admin)
        .await
        .expect("drop old schema");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create schema");
    let separator = if base.contains('?') { '&' } else { '?' };
    let db = TestDb {
        url: format!("{base}{separator}options[search_path]={schema}"),
        _dir: None,
    };
    let outcome = AssertUnwindSafe(body(db)).catch_unwind().await;
    sqlx::query(sqlx::AssertSqlSafe(drop_schema))
        .execute(&admin)
        .await
        .expect("drop schema");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Declares each test body once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::TestDb::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_postgres(stringify!($name), super::$name).await;
                }
            )*
        }
    };
}

backend_tests!(
    migrations_are_idempotent,
    batch_round_trip,
    record_id_survives_an_accept_without_one,
    rows_without_a_record_id_are_listed,
    failed_batch_leaves_nothing,
    run_lifecycle,
    recovers_interrupted_runs,
    u64_values_round_trip,
    loads_many_fingerprints,
    invalid_key_rejections,
    readers_work_beside_a_writer,
);

fn accepted(key: &str, key_hash: u64, fingerprint: u64, record_id: Option<&str>) -> Accepted {
    Accepted {
        key: key.to_owned(),
        key_hash,
        fingerprint,
        record_id: record_id.map(str::to_owned),
    }
}

fn rejection(key: &str, category: &str, message: &str) -> Rejection {
    Rejection {
        key: key.to_owned(),
        category: category.to_owned(),
        message: message.to_owned(),
    }
}

fn sorted(mut rows: Vec<SyncedRow>) -> Vec<SyncedRow> {
    rows.sort_by_key(|r| r.key_hash);
    rows
}

async fn migrations_are_idempotent(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    let again = db.store().await;
    assert_eq!(again.backend(), store.backend());
    assert_eq!(again.run(run).await.unwrap().sync, "contacts");
    // And once more while the first handle is still open.
    db.store().await;
}

async fn batch_round_trip(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    let batch = BatchOutcome {
        accepted: vec![
            accepted("a@x.io", 1, 11, Some("101")),
            accepted("b@x.io", 2, 22, None),
            accepted("c@x.io", 3, 33, Some("103")),
        ],
        removed: vec![],
        rejected: vec![rejection("d@x.io", "VALIDATION_ERROR", "bad email")],
        tasks: Vec::new(),
        api_calls: 2,
        throttled: 1,
    };
    store.commit_batch(run, "contacts", &batch).await.unwrap();
    assert_eq!(
        store.load_fingerprints("contacts").await.unwrap(),
        HashMap::from([(1, 11), (2, 22), (3, 33)])
    );
    // Another sync's state is separate.
    assert!(store.load_fingerprints("leads").await.unwrap().is_empty());

    let second = BatchOutcome {
        // Repeated hash in one batch: the last accept wins.
        accepted: vec![
            accepted("a@x.io", 1, 12, None),
            accepted("a@x.io", 1, 13, None),
        ],
        removed: vec![2, 99],
        rejected: vec![
            rejection("e@x.io", "VALIDATION_ERROR", "bad phone"),
            rejection("f@x.io", "RATE_LIMIT", "gave up"),
        ],
        tasks: Vec::new(),
        api_calls: 3,
        throttled: 0,
    };
    store.commit_batch(run, "contacts", &second).await.unwrap();
    assert_eq!(
        store.load_fingerprints("contacts").await.unwrap(),
        HashMap::from([(1, 13), (3, 33)])
    );
    assert_eq!(
        sorted(store.synced_rows("contacts", &[3, 1, 2, 1]).await.unwrap()),
        vec![
            SyncedRow {
                key: "a@x.io".into(),
                key_hash: 1,
                fingerprint: 13,
                record_id: Some("101".into()),
            },
            SyncedRow {
                key: "c@x.io".into(),
                key_hash: 3,
                fingerprint: 33,
                record_id: Some("103".into()),
            },
        ]
    );
    assert_eq!(
        store.rejections(run).await.unwrap(),
        vec![
            rejection("d@x.io", "VALIDATION_ERROR", "bad email"),
            rejection("e@x.io", "VALIDATION_ERROR", "bad phone"),
            rejection("f@x.io", "RATE_LIMIT", "gave up"),
        ]
    );
    let counts = store.run(run).await.unwrap().counts;
    assert_eq!(
        (counts.api_calls, counts.throttled, counts.rejected),
        (5, 1, 3)
    );
}

async fn record_id_survives_an_accept_without_one(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    let commit = |rows: Vec<Accepted>| {
        let store = store.clone();
        async move {
            let batch = BatchOutcome {
                accepted: rows,
                ..BatchOutcome::default()
            };
            store.commit_batch(run, "contacts", &batch).await.unwrap();
            store.synced_rows("contacts", &[7]).await.unwrap()
        }
    };
    let rows = commit(vec![accepted("a@x.io", 7, 1, Some("rec-1"))]).await;
    assert_eq!(rows[0].record_id.as_deref(), Some("rec-1"));
    let rows = commit(vec![accepted("a@x.io", 7, 2, None)]).await;
    assert_eq!(
        (rows[0].fingerprint, rows[0].record_id.as_deref()),
        (2, Some("rec-1"))
    );
    // A new id from the destination replaces the old one.
    let rows = commit(vec![accepted("a@x.io", 7, 3, Some("rec-2"))]).await;
    assert_eq!(rows[0].record_id.as_deref(), Some("rec-2"));
}

async fn rows_without_a_record_id_are_listed(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    // Hashes in both halves (top bit clear and set); every other row without an id.
    let hashes = [u64::MAX, 3, 1 << 63, 9, i64::MAX as u64, 0];
    let batch = BatchOutcome {
        accepted: hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let id = (i % 2 == 1).then(|| format!("rec-{i}"));
                accepted(&format!("k{i}"), h, 1, id.as_deref())
            })
            .collect(),
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "contacts", &batch).await.unwrap();
    let other = BatchOutcome {
        accepted: vec![accepted("elsewhere", 5, 1, None)],
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "leads", &other).await.unwrap();
    assert_eq!(
        store.without_record_id("contacts").await.unwrap(),
        [i64::MAX as u64, 1 << 63, u64::MAX],
        "ascending as u64, this sync's only"
    );
    // An id given later takes the row off the list; removing a row does too.
    let later = BatchOutcome {
        accepted: vec![accepted("k0", u64::MAX, 2, Some("rec-0"))],
        removed: vec![1 << 63],
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "contacts", &later).await.unwrap();
    assert_eq!(
        store.without_record_id("contacts").await.unwrap(),
        [i64::MAX as u64]
    );
    assert_eq!(store.without_record_id("leads").await.unwrap(), [5]);
    assert!(store.without_record_id("none").await.unwrap().is_empty());
}

async fn failed_batch_leaves_nothing(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    let first = BatchOutcome {
        accepted: vec![accepted("a@x.io", 1, 11, Some("101"))],
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "contacts", &first).await.unwrap();

    // The run id is unknown, which the store only finds out after the row writes: the
    // transaction must take those back.
    let failing = BatchOutcome {
        accepted: vec![
            accepted("a@x.io", 1, 12, Some("999")),
            accepted("b@x.io", 2, 22, None),
        ],
        removed: vec![1],
        rejected: vec![rejection("c@x.io", "VALIDATION_ERROR", "bad")],
        tasks: Vec::new(),
        api_calls: 1,
        throttled: 0,
    };
    let missing = run + 1_000;
    let err = store
        .commit_batch(missing, "contacts", &failing)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::RunNotFound(id) if id == missing),
        "{err}"
    );
    assert_eq!(
        store.load_fingerprints("contacts").await.unwrap(),
        HashMap::from([(1, 11)])
    );
    assert_eq!(
        store.synced_rows("contacts", &[1, 2]).await.unwrap(),
        vec![SyncedRow {
            key: "a@x.io".into(),
            key_hash: 1,
            fingerprint: 11,
            record_id: Some("101".into()),
        }]
    );
    assert!(store.rejections(missing).await.unwrap().is_empty());
    assert_eq!(store.run(run).await.unwrap().counts, RunCounts::default());

    // The store is still usable afterwards (the failed transaction did not leak).
    store.commit_batch(run, "contacts", &failing).await.unwrap();
    assert_eq!(
        store.load_fingerprints("contacts").await.unwrap(),
        HashMap::from([(2, 22)])
    );
}

async fn run_lifecycle(db: TestDb) {
    let store = db.store().await;
    let before = chrono::Utc::now().timestamp_millis();
    let first = store.begin_run("contacts", true).await.unwrap();
    let other = store.begin_run("deals", false).await.unwrap();
    let second = store.begin_run("contacts", false).await.unwrap();

    let running = store.run(first).await.unwrap();
    assert_eq!(running.status, "running");
    assert!(running.full);
    assert!(running.started_at_ms >= before);
    assert_eq!(running.finished_at_ms, None);
    assert_eq!(running.error, None);

    let counts = RunCounts {
        added: 1,
        changed: 2,
        removed: 3,
        unchanged: 4,
        invalid: 5,
        rejected: 6,
        api_calls: 7,
        throttled: 8,
        tasks_created: 9,
        owners_kept: 10,
    };
    store
        .finish_run(first, "rejections", &counts, None)
        .await
        .unwrap();
    store
        .finish_run(
            other,
            "failed",
            &RunCounts::default(),
            Some("HubSpot said 401"),
        )
        .await
        .unwrap();

    let done = store.run(first).await.unwrap();
    assert_eq!(done.status, "rejections");
    assert_eq!(done.counts, counts);
    assert!(done.finished_at_ms.unwrap() >= done.started_at_ms);
    assert_eq!(
        store.run(other).await.unwrap().error.as_deref(),
        Some("HubSpot said 401")
    );

    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.recent_runs(Some("contacts"), 10).await.unwrap()),
        vec![second, first]
    );
    assert_eq!(
        ids(store.recent_runs(None, 2).await.unwrap()),
        vec![second, other]
    );
    assert!(
        store
            .recent_runs(Some("nope"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let missing = second + 1_000;
    assert!(matches!(
        store.run(missing).await,
        Err(StateError::RunNotFound(_))
    ));
    assert!(matches!(
        store.finish_run(missing, "ok", &counts, None).await,
        Err(StateError::RunNotFound(_))
    ));
}

async fn recovers_interrupted_runs(db: TestDb) {
    let store = db.store().await;
    let crashed = store.begin_run("contacts", false).await.unwrap();
    let also_crashed = store.begin_run("deals", false).await.unwrap();
    let finished = store.begin_run("contacts", false).await.unwrap();
    store
        .finish_run(finished, "ok", &RunCounts::default(), None)
        .await
        .unwrap();

    // As a restarted process would see it.
    let restarted = db.store().await;
    assert_eq!(restarted.recover_interrupted().await.unwrap(), 2);
    for id in [crashed, also_crashed] {
        let run = restarted.run(id).await.unwrap();
        assert_eq!(run.status, "failed");
        assert_eq!(run.error.as_deref(), Some("interrupted"));
        assert!(run.finished_at_ms.is_some());
    }
    let untouched = restarted.run(finished).await.unwrap();
    assert_eq!((untouched.status.as_str(), untouched.error), ("ok", None));
    assert_eq!(restarted.recover_interrupted().await.unwrap(), 0);
}

async fn u64_values_round_trip(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    let values = [
        0,
        1,
        i64::MAX as u64,
        i64::MAX as u64 + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let batch = BatchOutcome {
        accepted: values
            .iter()
            .enumerate()
            .map(|(i, &v)| accepted(&format!("k{i}"), v, u64::MAX - v, None))
            .collect(),
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "contacts", &batch).await.unwrap();
    let expected: HashMap<u64, u64> = values.iter().map(|&v| (v, u64::MAX - v)).collect();
    assert_eq!(store.load_fingerprints("contacts").await.unwrap(), expected);
    // Split by the top bit, as the plan's lookup table wants them.
    let mut halves = store.load_fingerprint_halves("contacts").await.unwrap();
    halves.iter_mut().for_each(|h| h.sort_unstable());
    let half = |top: bool| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = values
            .iter()
            .filter(|&&v| (v >> 63 == 1) == top)
            .map(|&v| (v, u64::MAX - v))
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(halves, [half(false), half(true)]);
    let rows = store.synced_rows("contacts", &values).await.unwrap();
    assert_eq!(rows.len(), values.len());
    for row in rows {
        assert_eq!(row.fingerprint, u64::MAX - row.key_hash);
    }
    let removal = BatchOutcome {
        removed: vec![u64::MAX, i64::MAX as u64 + 1],
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "contacts", &removal).await.unwrap();
    assert_eq!(store.load_fingerprints("contacts").await.unwrap().len(), 4);
}

/// A cheap, well-spread u64 (splitmix64), so hashes cover the whole range including the top bit.
fn spread(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn loads_many_fingerprints(db: TestDb) {
    // Past one SQLite load page (100k), so the paging continues from a key.
    const ROWS: u64 = 100_500;
    const BATCH: u64 = 500;
    let store = db.store().await;
    let run = store.begin_run("contacts", true).await.unwrap();
    for start in (0..ROWS).step_by(BATCH as usize) {
        let batch = BatchOutcome {
            accepted: (start..start + BATCH)
                .map(|i| accepted(&format!("lead{i}@x.io"), spread(i), i, None))
                .collect(),
            tasks: Vec::new(),
            api_calls: 1,
            ..BatchOutcome::default()
        };
        store.commit_batch(run, "contacts", &batch).await.unwrap();
    }
    let fingerprints = store.load_fingerprints("contacts").await.unwrap();
    assert_eq!(fingerprints.len() as u64, ROWS);
    for i in (0..ROWS).step_by(997) {
        assert_eq!(fingerprints[&spread(i)], i);
    }
    // Lookups larger than one IN-list chunk, with unknown hashes mixed in.
    let wanted: Vec<u64> = (0..1_200).map(spread).chain([1, 2, 3]).collect();
    let rows = store.synced_rows("contacts", &wanted).await.unwrap();
    assert_eq!(rows.len(), 1_200);
    assert!(
        rows.iter()
            .all(|r| r.key == format!("lead{}@x.io", r.fingerprint))
    );
    assert_eq!(store.run(run).await.unwrap().counts.api_calls, ROWS / BATCH);
}

async fn invalid_key_rejections(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    store.record_rejections(run, "contacts", &[]).await.unwrap();
    // More than one multi-row statement's worth, to check the order across statements.
    let invalid: Vec<Rejection> = (0..150)
        .map(|i| {
            rejection(
                &format!("k{i}"),
                INVALID_KEY,
                &format!("duplicate key (row {i})"),
            )
        })
        .chain([rejection("", INVALID_KEY, "null primary key (row 3)")])
        .collect();
    store
        .record_rejections(run, "contacts", &invalid)
        .await
        .unwrap();
    assert_eq!(store.rejections(run).await.unwrap(), invalid);
    // Invalid rows are counted as `invalid` by finish_run, not as destination rejections.
    assert_eq!(store.run(run).await.unwrap().counts.rejected, 0);
    assert!(matches!(
        store
            .record_rejections(run + 1_000, "contacts", &invalid)
            .await,
        Err(StateError::RunNotFound(_))
    ));
}

/// Loads and report queries keep working while batches commit (no SQLITE_BUSY).
async fn readers_work_beside_a_writer(db: TestDb) {
    let store = db.store().await;
    let run = store.begin_run("contacts", false).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for b in 0..50u64 {
                let batch = BatchOutcome {
                    accepted: (b * 100..b * 100 + 100)
                        .map(|i| accepted(&format!("k{i}"), i, i, None))
                        .collect(),
                    removed: (0..b).collect(),
                    tasks: Vec::new(),
                    api_calls: 1,
                    ..BatchOutcome::default()
                };
                store.commit_batch(run, "contacts", &batch).await.unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    store.load_fingerprints("contacts").await.unwrap();
                    store.recent_runs(None, 5).await.unwrap();
                    store.synced_rows("contacts", &[1, 2, 3]).await.unwrap();
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    assert_eq!(store.run(run).await.unwrap().counts.api_calls, 50);
    assert_eq!(
        store.load_fingerprints("contacts").await.unwrap().len(),
        5_000 - 49
    );
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    let err = StateStore::connect("mysql://localhost/handoff")
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::UnsupportedUrl(_)), "{err}");
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let store = StateStore::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    let run = store.begin_run("contacts", false).await.unwrap();
    let batch = BatchOutcome {
        accepted: vec![accepted("a@x.io", 1, 2, None)],
        ..BatchOutcome::default()
    };
    store.commit_batch(run, "contacts", &batch).await.unwrap();
    assert_eq!(
        store.load_fingerprints("contacts").await.unwrap(),
        HashMap::from([(1, 2)])
    );
}

#[test]
fn wire_chunks_stay_within_the_budget() {
    use super::postgres::{MESSAGE_BUDGET, wire_chunks};
    let sizes: Vec<usize> = (0..1_000)
        .map(|i| 1 + (i * 37) % 400)
        .chain([MESSAGE_BUDGET * 2, 5])
        .collect();
    let chunks: Vec<&[usize]> = wire_chunks(&sizes, |&n| n).collect();
    assert_eq!(chunks.concat(), sizes);
    for chunk in &chunks {
        let total: usize = chunk.iter().sum();
        assert!(!chunk.is_empty());
        assert!(
            total <= MESSAGE_BUDGET || chunk.len() == 1,
            "{total} bytes in {} items",
            chunk.len()
        );
    }
    assert!(wire_chunks(&[] as &[usize], |&n| n).next().is_none());
}

/// Migrations are listed by hand in each backend; a file added to `migrations/` but not
/// to the list would silently never run.
#[test]
fn every_migration_file_is_embedded() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for (backend, source) in [
        ("sqlite", include_str!("sqlite.rs")),
        ("postgres", include_str!("postgres.rs")),
    ] {
        for entry in std::fs::read_dir(root.join(backend)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let included = format!("migrations/{backend}/{name}\"");
            assert!(
                source.contains(&included),
                "{backend}: {name} is not embedded"
            );
        }
    }
}
