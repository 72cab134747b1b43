//! One sync run end to end: model → diff → connector → per-batch commit → run record.
//!
//! This is the only module that knows the order of the stages. A row's new
//! fingerprint reaches the state store only in the transaction that records the
//! batch the destination accepted; anything rejected or unsent keeps its old
//! fingerprint and is picked up again by the next run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::execution::context::SessionContext;
use futures::StreamExt;
use serde::Serialize;
use tracing::Instrument;

use crate::connectors::{BatchReport, ConnectorError, Destination, OutRecord, Outcome};
use crate::diff::{ChangeSet, Differ, Previous, Record};
use crate::model::{self, ModelError, Renderer};
use crate::project::{ConfigError, ModelConfig, SyncConfig};
use crate::state::{
    Accepted, BatchOutcome, Rejection, RunCounts, RunId, StateError, StateStore, SyncedRow,
};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Resend every row, whatever the state says.
    pub full: bool,
    /// Plan only: send nothing, record nothing.
    pub dry_run: bool,
    /// Once cancelled, no new batch starts; batches in flight finish and commit,
    /// and the rest stays unsent for the next run (status `interrupted`).
    pub stop: Option<tokio_util::sync::CancellationToken>,
    /// Told the run id as soon as the run is recorded, before anything is sent (the
    /// daemon's trigger API answers with it). Plans and runs that fail before being
    /// recorded send nothing.
    pub started: Option<tokio::sync::mpsc::UnboundedSender<RunId>>,
}

/// A change shown in `plan` output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SampleChange {
    /// `add`, `change` or `remove`.
    pub op: &'static str,
    pub key: String,
    pub properties: Vec<(String, Option<String>)>,
}

/// What a run did (or, for a plan, would do).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub sync: String,
    pub run_id: Option<RunId>,
    /// `planned`, `ok`, `rejections`, `failed`, `interrupted`.
    pub status: String,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub invalid: u64,
    pub rejected: u64,
    /// Rows that needed a write but were not sent because the run stopped.
    pub unsent: u64,
    pub api_calls: u64,
    pub throttled: u64,
    /// Requests the plan needs (before retries).
    pub requests_planned: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// A few of the changes (plan) for a human to eyeball.
    pub sample: Vec<SampleChange>,
    /// The first rejections and invalid rows, with key and message.
    pub rejections: Vec<Rejection>,
}

/// Rejections and sample rows kept in a summary; the state store has them all.
const SUMMARY_LIMIT: usize = 20;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Model(ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<ModelError> for SyncError {
    fn from(e: ModelError) -> Self {
        SyncError::Model(e.0)
    }
}

/// Runs the model and diffs it against the state store.
///
/// Each output partition of the model is read, hashed and looked up in the stored
/// state on its own task (the engine's `target_partitions`, one per core by
/// default); one differ takes their verdicts, so duplicates across partitions are
/// still found. Rows are rendered as text only when the differ needs them (invalid
/// rows, the sample, restamps).
pub async fn plan(
    ctx: &SessionContext,
    state: &StateStore,
    model: &ModelConfig,
    sync: &SyncConfig,
    full: bool,
) -> Result<ChangeSet, SyncError> {
    let previous = Arc::new(Previous::from_pairs(
        state.load_fingerprint_pairs(&sync.name).await?,
    ));
    let df = model::plan(ctx, model).await?;
    let streams = model::run_partitioned(df, model).await?;
    let renderer = Arc::new(Renderer::new(model, sync));
    let model_error =
        |e: &datafusion::error::DataFusionError| SyncError::Model(model::sql_error(model, e));
    // A couple of batches per partition in flight keeps every core busy without
    // letting memory grow with the model.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2 * streams.len().max(1));
    // Dropping the set (an error below) aborts the partitions still running.
    let mut partitions = tokio::task::JoinSet::new();
    for mut stream in streams {
        let (tx, renderer, previous) = (tx.clone(), Arc::clone(&renderer), Arc::clone(&previous));
        partitions.spawn(async move {
            let mut scratch = model::Scratch::default();
            while let Some(batch) = stream.next().await {
                let hashed = batch.and_then(|b| {
                    let prepared = renderer.prepare(&b)?;
                    let probes = renderer.probe(&prepared, &previous, full, &mut scratch);
                    Ok((prepared, probes))
                });
                let failed = hashed.is_err();
                if tx.send(hashed).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut differ = Differ::with_previous(Arc::clone(&previous), full);
    while let Some(hashed) = rx.recv().await {
        let (prepared, probes) = hashed.map_err(|e| model_error(&e))?;
        for (i, probe) in probes.into_iter().enumerate() {
            differ.push_probe(probe, || renderer.row(&prepared, i));
        }
    }
    while let Some(done) = partitions.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    Ok(differ.finish())
}

/// Runs one sync: plan, then (unless `dry_run`) send and commit batch by batch.
pub async fn run(
    ctx: &SessionContext,
    state: &StateStore,
    dest: Arc<dyn Destination>,
    model: &ModelConfig,
    sync: &SyncConfig,
    opts: RunOptions,
) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let cs = plan(ctx, state, model, sync, opts.full).await?;
    let removed_rows = if cs.removed.is_empty() {
        Vec::new()
    } else {
        state.synced_rows(&sync.name, &cs.removed).await?
    };
    let batch = dest.batch_size().max(1);
    let remove_requests = if sync.on_remove_set.is_empty() {
        0
    } else {
        removed_rows
            .iter()
            .filter(|r| r.record_id.is_some())
            .count()
            .div_ceil(batch)
    };
    let to_send = cs.added.len() + cs.changed.len();
    let mut summary = Summary {
        sync: sync.name.clone(),
        run_id: None,
        status: "planned".into(),
        added: cs.added.len() as u64,
        changed: cs.changed.len() as u64,
        removed: cs.removed.len() as u64,
        unchanged: cs.unchanged,
        invalid: cs.invalid.len() as u64,
        rejected: 0,
        unsent: 0,
        api_calls: 0,
        throttled: 0,
        requests_planned: (to_send.div_ceil(batch) + remove_requests) as u64,
        duration_ms: 0,
        error: None,
        sample: sample(&cs, &removed_rows, sync),
        rejections: invalid_rejections(&cs)
            .into_iter()
            .take(SUMMARY_LIMIT)
            .collect(),
    };
    if opts.dry_run {
        summary.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(summary);
    }

    let run_id = state.begin_run(&sync.name, opts.full).await?;
    summary.run_id = Some(run_id);
    if let Some(started) = &opts.started {
        // The listener may be gone (a trigger that gave up waiting); the run goes on.
        let _ = started.send(run_id);
    }
    state
        .record_rejections(run_id, &sync.name, &invalid_rejections(&cs))
        .await?;

    let span = tracing::info_span!("run", sync = %sync.name, run_id);
    let stop = opts.stop.clone();
    let source = Source { ctx, model, sync };
    let result = send(
        state,
        dest.as_ref(),
        &source,
        run_id,
        &cs,
        removed_rows,
        batch,
        stop.as_ref(),
        &mut summary,
    )
    .instrument(span)
    .await;
    restamp(state, run_id, &sync.name, &cs).await;
    summary.status = match &result {
        Ok(()) if summary.error.is_some() => "failed".into(),
        Ok(()) if summary.unsent > 0 => {
            summary.error = Some(format!(
                "stopped before sending {} row(s); the next run sends them",
                summary.unsent
            ));
            "interrupted".into()
        }
        Ok(()) if summary.rejected > 0 => "rejections".into(),
        Ok(()) => "ok".into(),
        Err(e) => {
            summary.error = Some(e.to_string());
            "failed".into()
        }
    };
    let counts = RunCounts {
        added: summary.added,
        changed: summary.changed,
        removed: summary.removed,
        unchanged: summary.unchanged,
        invalid: summary.invalid,
        rejected: summary.rejected,
        api_calls: summary.api_calls,
        throttled: summary.throttled,
    };
    state
        .finish_run(run_id, &summary.status, &counts, summary.error.as_deref())
        .await?;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// Rows of restamps per transaction: big enough to amortise a commit, small enough
/// not to hold the write lock for long.
const RESTAMP_CHUNK: usize = 10_000;

/// Rewrites the stored fingerprints of unchanged rows that were still in the legacy
/// scheme (see `diff`): the payload they describe is the one the destination last
/// accepted, so this records no new fact, sends nothing, and only makes later plans
/// cheaper. A failure is logged and harmless: those rows keep matching through the
/// legacy scheme, and the next run tries again.
async fn restamp(state: &StateStore, run_id: RunId, sync: &str, cs: &ChangeSet) {
    if cs.restamp.is_empty() {
        return;
    }
    let mut rows: Vec<&crate::diff::Restamp> = cs.restamp.iter().collect();
    // In the store's key order, so each transaction touches neighbouring pages.
    rows.sort_unstable_by_key(|r| r.key_hash as i64);
    for chunk in rows.chunks(RESTAMP_CHUNK) {
        let outcome = BatchOutcome {
            accepted: chunk
                .iter()
                .map(|r| Accepted {
                    key: r.key.clone(),
                    key_hash: r.key_hash,
                    fingerprint: r.fingerprint,
                    record_id: None,
                })
                .collect(),
            ..BatchOutcome::default()
        };
        if let Err(e) = state.commit_batch(run_id, sync, &outcome).await {
            tracing::warn!(sync, run_id, "restamping fingerprints failed: {e}");
            return;
        }
    }
    tracing::info!(
        sync,
        run_id,
        restamped = cs.restamp.len(),
        legacy = cs.legacy,
        "stored fingerprints rewritten in the current scheme"
    );
}

/// The rows handoff refused itself, as rejections for the run record.
fn invalid_rejections(cs: &ChangeSet) -> Vec<Rejection> {
    cs.invalid
        .iter()
        .map(|i| Rejection {
            key: i.key.clone().unwrap_or_else(|| "<NULL>".into()),
            category: "INVALID_KEY".into(),
            message: i.reason.message().into(),
        })
        .collect()
}

fn sample(cs: &ChangeSet, removed: &[SyncedRow], sync: &SyncConfig) -> Vec<SampleChange> {
    cs.sample
        .iter()
        .map(|(op, r)| SampleChange {
            op,
            key: r.key.clone(),
            properties: r.properties.clone(),
        })
        .chain(removed.iter().take(SUMMARY_LIMIT / 2).map(|r| {
            SampleChange {
                op: "remove",
                key: r.key.clone(),
                properties: sync
                    .on_remove_set
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            }
        }))
        .collect()
}

/// A unit of work for the connector: the records, and how to commit what comes back.
enum Job {
    Upsert(Vec<Record>),
    Remove(Vec<SyncedRow>),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Upsert(r) => r.len(),
            Job::Remove(r) => r.len(),
        }
    }
}

/// Where the rows to send come from: the model, rendered for this sync.
struct Source<'a> {
    ctx: &'a SessionContext,
    model: &'a ModelConfig,
    sync: &'a SyncConfig,
}

/// Sends the changes and commits each batch as its answer arrives.
///
/// The plan kept only key hashes and fingerprints, so the model is read a second
/// time and the rows to send are rendered again as they stream past: memory is
/// bounded by the batches in flight, not by the number of changes. A row whose
/// payload changed between the two reads is not sent (the next run plans it again).
#[allow(clippy::too_many_arguments)]
async fn send(
    state: &StateStore,
    dest: &dyn Destination,
    src: &Source<'_>,
    run_id: RunId,
    cs: &ChangeSet,
    removed: Vec<SyncedRow>,
    batch: usize,
    stop: Option<&tokio_util::sync::CancellationToken>,
    summary: &mut Summary,
) -> Result<(), ConnectorError> {
    let sync = src.sync;
    // Rows that left the model: without an on_remove action there is nothing to send,
    // and forgetting them means a row that comes back is sent again in full.
    let mut remove_jobs = Vec::new();
    let mut forget: Vec<u64> = Vec::new();
    let mut unknown_id: Vec<Rejection> = Vec::new();
    if sync.on_remove_set.is_empty() {
        forget.extend(removed.iter().map(|r| r.key_hash));
    } else {
        let (with_id, without_id): (Vec<SyncedRow>, Vec<SyncedRow>) =
            removed.into_iter().partition(|r| r.record_id.is_some());
        for chunk in with_id.chunks(batch) {
            remove_jobs.push(Job::Remove(chunk.to_vec()));
        }
        for r in without_id {
            // Without the CRM's id the record cannot be found safely; keep it so an operator can see it.
            unknown_id.push(Rejection {
                key: r.key,
                category: "NO_RECORD_ID".into(),
                message:
                    "left the model, but the CRM never told us its record id: on_remove not applied"
                        .into(),
            });
        }
    }
    if !forget.is_empty() || !unknown_id.is_empty() {
        summary.rejected += unknown_id.len() as u64;
        let outcome = BatchOutcome {
            removed: forget,
            rejected: unknown_id,
            ..BatchOutcome::default()
        };
        commit(state, run_id, &sync.name, &outcome, summary).await;
    }

    let mut wanted: HashMap<u64, u64> = cs.to_send().map(|c| (c.key_hash, c.fingerprint)).collect();
    let total = wanted.len() + remove_jobs.iter().map(Job::len).sum::<usize>();
    let mut done = 0usize;
    // Set when the connector fails: the producer stops reading the model.
    let halt = tokio_util::sync::CancellationToken::new();
    let stopped = || halt.is_cancelled() || stop.is_some_and(|t| t.is_cancelled());
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(dest.concurrency().max(1));

    let produce = async {
        let tx = tx;
        for job in remove_jobs {
            if stopped() || tx.send(job).await.is_err() {
                return Ok(());
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let df = model::plan(src.ctx, src.model).await?;
        let mut stream = model::run(df, src.model).await?;
        let renderer = Renderer::new(src.model, sync);
        let mut pending: Vec<Record> = Vec::with_capacity(batch);
        while let Some(b) = stream.next().await {
            if stopped() {
                return Ok(());
            }
            let b = b.map_err(|e| SyncError::Model(model::sql_error(src.model, &e)))?;
            let mut ready: Vec<Vec<Record>> = Vec::new();
            renderer
                .render(&b, |row| {
                    let Some((kh, fp)) = Differ::fingerprint_of(&row) else {
                        return;
                    };
                    // `remove` also guards against a key that turned up twice since the plan.
                    if wanted.get(&kh) == Some(&fp) {
                        wanted.remove(&kh);
                        let (Some(key), Some(match_value)) = (row.key, row.match_value) else {
                            return;
                        };
                        pending.push(Record {
                            key,
                            key_hash: kh,
                            fingerprint: fp,
                            match_value,
                            properties: row.properties,
                        });
                        if pending.len() == batch {
                            ready.push(std::mem::replace(&mut pending, Vec::with_capacity(batch)));
                        }
                    }
                })
                .map_err(|e| SyncError::Model(model::sql_error(src.model, &e)))?;
            for job in ready {
                if stopped() || tx.send(Job::Upsert(job)).await.is_err() {
                    return Ok(());
                }
            }
            if wanted.is_empty() && pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() && !stopped() {
            let _ = tx.send(Job::Upsert(pending)).await;
        }
        Ok::<(), SyncError>(())
    };

    // Commits run beside the requests, so a slow state store never holds up the
    // next request; batches that finish during a commit share the next transaction.
    let (commit_tx, mut commit_rx) = tokio::sync::mpsc::unbounded_channel::<BatchOutcome>();
    let committer = async {
        let mut error: Option<String> = None;
        while let Some(mut merged) = commit_rx.recv().await {
            while let Ok(more) = commit_rx.try_recv() {
                merged.merge(more);
            }
            if let Err(e) = state.commit_batch(run_id, &sync.name, &merged).await {
                tracing::error!(sync = %sync.name, run_id, "state commit failed: {e}");
                error.get_or_insert_with(|| format!("state commit failed: {e}"));
            }
        }
        error
    };

    let consume = async {
        let commit_tx = commit_tx;
        let mut failure: Option<ConnectorError> = None;
        let halt = &halt;
        let mut results = tokio_stream_from(rx)
            .map(|job| async move {
                if halt.is_cancelled() {
                    return (job, None);
                }
                let report = match &job {
                    Job::Upsert(recs) => {
                        let out: Vec<OutRecord> = recs
                            .iter()
                            .map(|r| OutRecord {
                                key: r.key.clone(),
                                id: r.match_value.clone(),
                                properties: r.properties.clone(),
                            })
                            .collect();
                        dest.upsert(&sync.object, &sync.match_property, &out).await
                    }
                    Job::Remove(rows) => {
                        let props: Vec<(String, Option<String>)> = sync
                            .on_remove_set
                            .iter()
                            .map(|(k, v)| (k.clone(), Some(v.clone())))
                            .collect();
                        let out: Vec<OutRecord> = rows
                            .iter()
                            .map(|r| OutRecord {
                                key: r.key.clone(),
                                id: r.record_id.clone().unwrap_or_default(),
                                properties: props.clone(),
                            })
                            .collect();
                        dest.update(&sync.object, &out).await
                    }
                };
                (job, Some(report))
            })
            .buffer_unordered(dest.concurrency().max(1));
        while let Some((job, report)) = results.next().await {
            match report {
                None => {}
                Some(Ok(report)) => {
                    done += job.len();
                    let outcome = to_outcome(&job, &report, summary);
                    // The committer only stops after this loop ends.
                    let _ = commit_tx.send(outcome);
                }
                Some(Err(e)) => {
                    let (calls, throttled) = e.counts();
                    summary.api_calls += calls;
                    summary.throttled += throttled;
                    // Stop starting new batches; those in flight finish and commit.
                    halt.cancel();
                    failure.get_or_insert(e);
                }
            }
        }
        failure
    };

    let (produced, failure, commit_error) = tokio::join!(produce, consume, committer);
    summary.unsent = (total - done) as u64;
    if let Some(e) = commit_error {
        // Those rows keep their old fingerprints: the next run resends them (upserts are idempotent).
        summary.error.get_or_insert(e);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if let Err(e) = produced {
        // The model failed on its second read: what was sent is committed, the rest is unsent.
        summary.error.get_or_insert(e.to_string());
    }
    Ok(())
}

/// A stream of the jobs the producer hands over.
fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Job>) -> impl futures::Stream<Item = Job> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn to_outcome(job: &Job, report: &BatchReport, summary: &mut Summary) -> BatchOutcome {
    let mut out = BatchOutcome {
        api_calls: report.api_calls,
        throttled: report.throttled,
        ..BatchOutcome::default()
    };
    let keys: Vec<(&str, u64)> = match job {
        Job::Upsert(recs) => recs.iter().map(|r| (r.key.as_str(), r.key_hash)).collect(),
        Job::Remove(rows) => rows.iter().map(|r| (r.key.as_str(), r.key_hash)).collect(),
    };
    for (i, outcome) in report.outcomes.iter().enumerate() {
        let (key, kh) = keys[i];
        match outcome {
            Outcome::Accepted { record_id } => match job {
                Job::Upsert(recs) => out.accepted.push(Accepted {
                    key: key.to_string(),
                    key_hash: kh,
                    fingerprint: recs[i].fingerprint,
                    record_id: record_id.clone(),
                }),
                Job::Remove(_) => out.removed.push(kh),
            },
            // The record was deleted in the CRM: there is nothing left to flag, and
            // keeping the row would retry a hopeless update on every run.
            Outcome::Rejected { category, .. }
                if matches!(job, Job::Remove(_)) && category == "OBJECT_NOT_FOUND" =>
            {
                tracing::info!(
                    key,
                    "left the model, but its CRM record no longer exists; forgotten"
                );
                out.removed.push(kh)
            }
            Outcome::Rejected { category, message } => out.rejected.push(Rejection {
                key: key.to_string(),
                category: category.clone(),
                message: message.clone(),
            }),
        }
    }
    summary.api_calls += report.api_calls;
    summary.throttled += report.throttled;
    summary.rejected += out.rejected.len() as u64;
    for r in &out.rejected {
        if summary.rejections.len() < SUMMARY_LIMIT {
            summary.rejections.push(r.clone());
        }
    }
    out
}

/// Commits one batch's outcome. A commit that fails leaves the rows unsynced, so
/// they are resent next run (upserts are idempotent); the run reports it.
async fn commit(
    state: &StateStore,
    run_id: RunId,
    sync: &str,
    outcome: &BatchOutcome,
    summary: &mut Summary,
) {
    if let Err(e) = state.commit_batch(run_id, sync, outcome).await {
        tracing::error!(sync, run_id, "state commit failed: {e}");
        summary
            .error
            .get_or_insert_with(|| format!("state commit failed: {e}"));
    }
}
