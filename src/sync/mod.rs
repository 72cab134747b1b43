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

use chrono::{DateTime, Utc};

use crate::connectors::{
    ConnectorError, Destination, OutRecord, Outcome, TaskInput, TaskOutcome, WriteOp,
};
use crate::diff::{ChangeSet, Differ, Previous, Record};
use crate::model::{self, ModelError, Renderer};
use crate::project::{
    ConfigError, MatchOn, ModelConfig, OWNER_PROPERTY, OwnerPolicy, SyncConfig, SyncMode,
    TaskConfig,
};
use crate::state::{
    Accepted, BatchOutcome, NewTask, OutboxTask, Rejection, RunCounts, RunId, StateError,
    StateStore, SyncedRow,
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
    /// Follow-up tasks created in the CRM by this run.
    pub tasks_created: u64,
    /// Follow-up tasks still queued after the run (their create got no clear answer, or the run stopped).
    pub tasks_pending: u64,
    /// Records whose existing owner was kept (`owner_policy = "fill_empty"`).
    pub owners_kept: u64,
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
    let previous = Arc::new(Previous::from_halves(
        state.load_fingerprint_halves(&sync.name).await?,
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
        differ.push_probes(&probes, |i| renderer.row(&prepared, i));
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
    // A plan looks up only the few removed rows its summary shows: at 10M stored rows,
    // looking up 1 % of them at random cost a seventh of the whole plan. A sync needs
    // them all to send.
    let shown = &cs.removed[..cs.removed.len().min(SUMMARY_LIMIT / 2)];
    let mut removed_shown = state.synced_rows(&sync.name, shown).await?;
    removed_shown.sort_unstable_by_key(|r| r.key_hash);
    let removed_rows = if opts.dry_run {
        Vec::new()
    } else {
        state.synced_rows(&sync.name, &cs.removed).await?
    };
    let batch = dest.batch_size().max(1);
    let remove_requests = if cs.removed.is_empty()
        || (sync.on_remove_set.is_empty() && sync.mode != SyncMode::Mirror)
    {
        0
    } else {
        // Rows without a record id are reported, not sent.
        let unreachable = state.without_record_id(&sync.name).await?;
        (cs.removed.len() - count_common(&cs.removed, &unreachable)).div_ceil(batch)
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
        tasks_created: 0,
        tasks_pending: 0,
        owners_kept: 0,
        requests_planned: (to_send.div_ceil(batch) + remove_requests) as u64,
        duration_ms: 0,
        error: None,
        sample: sample(&cs, &removed_shown, sync),
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
    let result = async {
        if let Some(until) = dest.paused_until() {
            return Err(ConnectorError::DailyLimit {
                connector: sync.connector.clone(),
                until,
                api_calls: 0,
                throttled: 0,
            });
        }
        // Tasks an earlier run queued but could not confirm come first: they are the oldest handoffs.
        drain_tasks(state, dest.as_ref(), sync, run_id, &mut summary).await?;
        send(
            state,
            &dest,
            &source,
            run_id,
            &cs,
            removed_rows,
            batch,
            stop.as_ref(),
            &mut summary,
        )
        .await?;
        drain_tasks(state, dest.as_ref(), sync, run_id, &mut summary).await
    }
    .instrument(span)
    .await;
    restamp(state, run_id, &sync.name, &cs).await;
    if sync.task.is_some() {
        summary.tasks_pending = state.task_counts(&sync.name).await?.pending;
    }
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
            if summary.unsent == 0 && summary.api_calls == 0 {
                summary.unsent = to_send as u64;
            }
            summary.error = Some(e.to_string());
            e.run_status().into()
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
        tasks_created: summary.tasks_created,
        owners_kept: summary.owners_kept,
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

/// How many values two ascending lists share.
fn count_common(a: &[u64], b: &[u64]) -> usize {
    let (mut rest, mut n) = (a, 0);
    for v in b {
        rest = &rest[rest.partition_point(|x| x < v)..];
        if rest.first() == Some(v) {
            n += 1;
        }
    }
    n
}

fn sample(cs: &ChangeSet, removed: &[SyncedRow], sync: &SyncConfig) -> Vec<SampleChange> {
    cs.sample
        .iter()
        .map(|(op, r)| SampleChange {
            op,
            key: r.key.clone(),
            properties: r.properties.clone(),
        })
        .chain(removed.iter().map(|r| {
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
    /// Rows new to the sync (`added`) or changed since their last sync, each with the
    /// CRM record id stored for it (changed rows only).
    Write {
        rows: Vec<(Record, Option<String>)>,
        added: bool,
    },
    /// Rows that left the model: `on_remove` properties to set, or (mirror) records to archive.
    Remove(Vec<SyncedRow>),
}

impl Job {
    fn len(&self) -> usize {
        match self {
            Job::Write { rows, .. } => rows.len(),
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

/// An outcome for the committer, and (for batches that queue tasks) who waits for it to land.
type ToCommit = (BatchOutcome, Option<tokio::sync::oneshot::Sender<bool>>);

/// Sends the changes and commits each batch as its answer arrives.
///
/// The plan kept only key hashes and fingerprints, so the model is read a second
/// time and the rows to send are rendered again as they stream past: memory is
/// bounded by the batches in flight, not by the number of changes. A row whose
/// payload changed between the two reads is not sent (the next run plans it again).
#[allow(clippy::too_many_arguments)]
async fn send(
    state: &StateStore,
    dest: &Arc<dyn Destination>,
    src: &Source<'_>,
    run_id: RunId,
    cs: &ChangeSet,
    removed: Vec<SyncedRow>,
    batch: usize,
    stop: Option<&tokio_util::sync::CancellationToken>,
    summary: &mut Summary,
) -> Result<(), ConnectorError> {
    let sync = src.sync;
    let mirror = sync.mode == SyncMode::Mirror;
    let handoff_at = Utc::now();
    // Rows that left the model: without an on_remove action there is nothing to send,
    // and forgetting them means a row that comes back is sent again in full.
    let mut remove_jobs = Vec::new();
    let mut forget: Vec<u64> = Vec::new();
    let mut unknown_id: Vec<Rejection> = Vec::new();
    if sync.on_remove_set.is_empty() && !mirror {
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
                message: format!(
                    "left the model, but the CRM never told us its record id: {} not applied",
                    if mirror { "archive" } else { "on_remove" }
                ),
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

    let added: std::collections::HashSet<u64> = cs.added.iter().map(|c| c.key_hash).collect();
    let wanted: HashMap<u64, u64> = cs.to_send().map(|c| (c.key_hash, c.fingerprint)).collect();
    let total = wanted.len() + remove_jobs.iter().map(Job::len).sum::<usize>();
    let mut done = 0usize;
    // Set when the connector fails: the producer stops reading the model.
    let halt = tokio_util::sync::CancellationToken::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(dest.concurrency().max(1));
    let sync_config = Arc::new(sync.clone());

    // The second read of the model and the rendering run on their own task, so they
    // use another core than the requests and their answers.
    // Spawned tasks keep the run's span, so their log lines still name the sync and run.
    let producer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        produce(Producer {
            ctx: src.ctx.clone(),
            model: src.model.clone(),
            sync: Arc::clone(&sync_config),
            state: state.clone(),
            remove_jobs,
            wanted,
            added,
            batch,
            // Stored record ids of changed rows let updates find their record even when the
            // matched value itself changed (a new email); `update` mode matches on the model's value.
            want_record_ids: sync.mode != SyncMode::Update,
            halt: halt.clone(),
            stop: stop.cloned(),
            tx,
        })
        .in_current_span(),
    ));

    // Commits run beside the requests, so a slow state store never holds up the
    // next request; batches that finish during a commit share the next transaction.
    // A batch that queued tasks waits for its commit before creating them.
    let (commit_tx, mut commit_rx) = tokio::sync::mpsc::unbounded_channel::<ToCommit>();
    let committer = async {
        let mut error: Option<String> = None;
        while let Some((mut merged, ack)) = commit_rx.recv().await {
            let mut acks: Vec<tokio::sync::oneshot::Sender<bool>> = ack.into_iter().collect();
            while let Ok((more, ack)) = commit_rx.try_recv() {
                merged.merge(more);
                acks.extend(ack);
            }
            let ok = match state.commit_batch(run_id, &sync.name, &merged).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(sync = %sync.name, run_id, "state commit failed: {e}");
                    error.get_or_insert_with(|| format!("state commit failed: {e}"));
                    false
                }
            };
            for a in acks {
                let _ = a.send(ok);
            }
        }
        error
    };

    // Each batch is written, committed and followed by its tasks on a task of its own,
    // so building requests and reading answers spread over the cores.
    let jobs = Arc::new(JobContext {
        state: state.clone(),
        dest: Arc::clone(dest),
        sync: sync_config,
        run_id,
        handoff_at,
        commit_tx,
    });
    let consume = async {
        let mut failure: Option<ConnectorError> = None;
        let halt = &halt;
        let jobs = jobs;
        let jobs = &jobs;
        let mut results = tokio_stream_from(rx)
            .map(|job| async move {
                if halt.is_cancelled() {
                    return (job.len(), None);
                }
                let n = job.len();
                let jobs = Arc::clone(jobs);
                let task = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    async move {
                        process(
                            &jobs.state,
                            jobs.dest.as_ref(),
                            &jobs.sync,
                            jobs.run_id,
                            job,
                            jobs.handoff_at,
                            &jobs.commit_tx,
                        )
                        .await
                    }
                    .in_current_span(),
                ));
                match task.await {
                    Ok(r) => (n, Some(r)),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => (n, None),
                }
            })
            .buffer_unordered(dest.concurrency().max(1));
        while let Some((n, report)) = results.next().await {
            match report {
                None => {}
                Some(Ok(p)) => {
                    done += n;
                    summary.api_calls += p.api_calls;
                    summary.throttled += p.throttled;
                    summary.rejected += p.rejected.len() as u64;
                    summary.tasks_created += p.tasks_created;
                    summary.owners_kept += p.owners_kept;
                    for r in p.rejected {
                        if summary.rejections.len() < SUMMARY_LIMIT {
                            summary.rejections.push(r);
                        }
                    }
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

    let (failure, commit_error) = tokio::join!(consume, committer);
    let produced = match producer.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(SyncError::Model(src.model.sql.error_at_line(
            0,
            format!("reading the model to send its rows was cancelled: {e}"),
        ))),
    };
    summary.unsent = (total - done) as u64;
    if let Some(e) = commit_error {
        // Those rows keep their old fingerprints: the next run resends them (writes are idempotent).
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

/// What the producer task owns: the model to read again and the rows to pick from it.
struct Producer {
    ctx: SessionContext,
    model: ModelConfig,
    sync: Arc<SyncConfig>,
    state: StateStore,
    remove_jobs: Vec<Job>,
    /// Key hash → fingerprint of every row to send.
    wanted: HashMap<u64, u64>,
    /// Key hashes of rows new to the sync.
    added: std::collections::HashSet<u64>,
    batch: usize,
    want_record_ids: bool,
    halt: tokio_util::sync::CancellationToken,
    stop: Option<tokio_util::sync::CancellationToken>,
    tx: tokio::sync::mpsc::Sender<Job>,
}

/// Reads the model a second time and hands the rows the plan chose to the consumer,
/// in batches: removals first, then added and changed rows (in separate batches,
/// since they are written differently). Rows not chosen are hashed in place and
/// never rendered; a row whose payload changed since the plan is not sent.
async fn produce(p: Producer) -> Result<(), SyncError> {
    let Producer {
        ctx,
        model,
        sync,
        state,
        remove_jobs,
        mut wanted,
        added,
        batch,
        want_record_ids,
        halt,
        stop,
        tx,
    } = p;
    let stopped = || halt.is_cancelled() || stop.as_ref().is_some_and(|t| t.is_cancelled());
    for job in remove_jobs {
        if stopped() || tx.send(job).await.is_err() {
            return Ok(());
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let model_error =
        |e: &datafusion::error::DataFusionError| SyncError::Model(model::sql_error(&model, e));
    let df = model::plan(&ctx, &model).await?;
    let mut stream = model::run(df, &model).await?;
    let renderer = Renderer::new(&model, &sync);
    let mut pending: [Vec<Record>; 2] = [Vec::with_capacity(batch), Vec::with_capacity(batch)];
    while let Some(b) = stream.next().await {
        if stopped() {
            return Ok(());
        }
        let b = b.map_err(|e| model_error(&e))?;
        let mut ready: Vec<(Vec<Record>, bool)> = Vec::new();
        renderer
            .records(
                &b,
                // `remove` also guards against a key that turned up twice since the plan.
                |kh, fp| wanted.get(&kh) == Some(&fp) && wanted.remove(&kh).is_some(),
                |rec| {
                    let is_added = added.contains(&rec.key_hash);
                    let slot = &mut pending[usize::from(!is_added)];
                    slot.push(rec);
                    if slot.len() == batch {
                        ready.push((std::mem::replace(slot, Vec::with_capacity(batch)), is_added));
                    }
                },
            )
            .map_err(|e| model_error(&e))?;
        for (recs, is_added) in ready {
            let job = with_record_ids(&state, &sync, recs, is_added, want_record_ids).await?;
            if stopped() || tx.send(job).await.is_err() {
                return Ok(());
            }
        }
        if wanted.is_empty() && pending.iter().all(Vec::is_empty) {
            break;
        }
    }
    for (i, recs) in pending.into_iter().enumerate() {
        if !recs.is_empty() && !stopped() {
            let job = with_record_ids(&state, &sync, recs, i == 0, want_record_ids).await?;
            let _ = tx.send(job).await;
        }
    }
    Ok(())
}

/// What every batch's task shares.
struct JobContext {
    state: StateStore,
    dest: Arc<dyn Destination>,
    sync: Arc<SyncConfig>,
    run_id: RunId,
    handoff_at: DateTime<Utc>,
    commit_tx: tokio::sync::mpsc::UnboundedSender<ToCommit>,
}

/// Attaches the stored record ids to a batch of changed rows.
async fn with_record_ids(
    state: &StateStore,
    sync: &SyncConfig,
    recs: Vec<Record>,
    added: bool,
    wanted: bool,
) -> Result<Job, SyncError> {
    let mut ids: HashMap<u64, String> = HashMap::new();
    if !added && wanted {
        let hashes: Vec<u64> = recs.iter().map(|r| r.key_hash).collect();
        for row in state.synced_rows(&sync.name, &hashes).await? {
            if let Some(id) = row.record_id {
                ids.insert(row.key_hash, id);
            }
        }
    }
    let rows = recs
        .into_iter()
        .map(|r| {
            let id = ids.remove(&r.key_hash);
            (r, id)
        })
        .collect();
    Ok(Job::Write { rows, added })
}

/// What one job did, for the summary (its outcome went to the committer).
#[derive(Default)]
struct Processed {
    api_calls: u64,
    throttled: u64,
    rejected: Vec<Rejection>,
    tasks_created: u64,
    owners_kept: u64,
}

/// One row on its way out: where it goes, what it sends, and whose it is.
struct Outgoing {
    row: usize,
    /// The matched value or record id; empty for a create.
    id: String,
    properties: Vec<(String, Option<String>)>,
    /// The record's owner after this write (for its task).
    owner: Option<String>,
}

/// How a row is written, by mode and by what the state knows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Upsert,
    UpdateByProperty,
    UpdateById,
    Create,
}

fn route(sync: &SyncConfig, added: bool, stored_id: Option<&str>) -> Route {
    match (&sync.match_on, sync.mode) {
        (_, SyncMode::Update) | (MatchOn::RecordId, _) => match &sync.match_on {
            MatchOn::RecordId => Route::UpdateById,
            _ => Route::UpdateByProperty,
        },
        _ if !added && stored_id.is_some() => Route::UpdateById,
        (MatchOn::Property(_), _) => Route::Upsert,
        (MatchOn::Nothing, _) => Route::Create,
    }
}

/// Writes one job's rows, commits the outcome, and creates the tasks it queued.
#[allow(clippy::too_many_arguments)]
async fn process(
    state: &StateStore,
    dest: &dyn Destination,
    sync: &SyncConfig,
    run_id: RunId,
    job: Job,
    handoff_at: DateTime<Utc>,
    commit_tx: &tokio::sync::mpsc::UnboundedSender<ToCommit>,
) -> Result<Processed, ConnectorError> {
    let mut p = Processed::default();
    let mut outcome = BatchOutcome::default();
    match job {
        Job::Remove(rows) => {
            let out: Vec<OutRecord> = rows
                .iter()
                .map(|r| OutRecord {
                    key: r.key.clone(),
                    id: r.record_id.clone().unwrap_or_default(),
                    properties: sync
                        .on_remove_set
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect(),
                })
                .collect();
            let report = if sync.mode == SyncMode::Mirror {
                dest.archive(&sync.object, &out).await?
            } else {
                dest.write(&sync.object, WriteOp::Update { id_property: None }, &out)
                    .await?
            };
            p.api_calls += report.api_calls;
            p.throttled += report.throttled;
            for (r, o) in rows.iter().zip(&report.outcomes) {
                match o {
                    Outcome::Accepted { .. } => outcome.removed.push(r.key_hash),
                    // The record was deleted in the CRM: there is nothing left to flag, and
                    // keeping the row would retry a hopeless update on every run.
                    Outcome::Rejected { category, .. } if category == "OBJECT_NOT_FOUND" => {
                        tracing::info!(
                            key = r.key,
                            "left the model, but its CRM record no longer exists; forgotten"
                        );
                        outcome.removed.push(r.key_hash)
                    }
                    Outcome::Rejected { category, message } => outcome.rejected.push(Rejection {
                        key: r.key.clone(),
                        category: category.clone(),
                        message: message.clone(),
                    }),
                }
            }
        }
        Job::Write { mut rows, added } => {
            let mut outgoing: Vec<(Route, Outgoing)> = Vec::with_capacity(rows.len());
            for (i, (rec, stored)) in rows.iter_mut().enumerate() {
                let r = route(sync, added, stored.as_deref());
                let id = match r {
                    Route::UpdateById
                        if stored.is_some() && !matches!(sync.match_on, MatchOn::RecordId) =>
                    {
                        stored.clone().unwrap_or_default()
                    }
                    Route::Create => String::new(),
                    _ => rec.match_value.clone(),
                };
                // Moved, not copied: from here on a row's properties live in its `Outgoing`.
                let mut properties = std::mem::take(&mut rec.properties);
                // Found by its id, the record still takes the matched value (a changed email).
                if r == Route::UpdateById
                    && let MatchOn::Property(prop) = &sync.match_on
                    && !properties.iter().any(|(k, _)| k == prop)
                {
                    properties.push((prop.clone(), Some(rec.match_value.clone())));
                }
                if added && let Some(prop) = &sync.handoff_timestamp {
                    properties.push((prop.clone(), Some(iso_ms(handoff_at))));
                }
                outgoing.push((
                    r,
                    Outgoing {
                        row: i,
                        id,
                        properties,
                        owner: None,
                    },
                ));
            }
            let mut rejected: HashMap<usize, (String, String)> = HashMap::new();
            if sync.sets_owner() {
                assign_owners(dest, sync, &mut outgoing, &mut rejected, &mut p).await?;
            }
            let mut accepted: HashMap<usize, Option<String>> = HashMap::new();
            let mut retry_as_upsert: Vec<usize> = Vec::new();
            for r in [
                Route::Upsert,
                Route::UpdateByProperty,
                Route::UpdateById,
                Route::Create,
            ] {
                let group: Vec<usize> = outgoing
                    .iter()
                    .enumerate()
                    .filter(|(_, (rt, o))| *rt == r && !rejected.contains_key(&o.row))
                    .map(|(j, _)| j)
                    .collect();
                if group.is_empty() {
                    continue;
                }
                let op = match (r, &sync.match_on) {
                    (Route::Upsert, MatchOn::Property(prop)) => {
                        WriteOp::Upsert { id_property: prop }
                    }
                    (Route::UpdateByProperty, MatchOn::Property(prop)) => WriteOp::Update {
                        id_property: Some(prop),
                    },
                    (Route::Create, _) => WriteOp::Create,
                    _ => WriteOp::Update { id_property: None },
                };
                // The request takes the records by value for its body; they are moved
                // there and back rather than copied.
                let mut out: Vec<OutRecord> = group
                    .iter()
                    .map(|&j| {
                        let o = &mut outgoing[j].1;
                        OutRecord {
                            key: std::mem::take(&mut rows[o.row].0.key),
                            id: std::mem::take(&mut o.id),
                            properties: std::mem::take(&mut o.properties),
                        }
                    })
                    .collect();
                let report = dest.write(&sync.object, op, &out).await;
                for (&j, sent) in group.iter().zip(out.iter_mut()) {
                    let o = &mut outgoing[j].1;
                    rows[o.row].0.key = std::mem::take(&mut sent.key);
                    o.id = std::mem::take(&mut sent.id);
                    o.properties = std::mem::take(&mut sent.properties);
                }
                let report = report?;
                p.api_calls += report.api_calls;
                p.throttled += report.throttled;
                for (o, res) in group.iter().map(|&j| &outgoing[j].1).zip(report.outcomes) {
                    match res {
                        Outcome::Accepted { record_id } => {
                            accepted.insert(o.row, record_id);
                        }
                        // A record merged or deleted in the CRM since we stored its id:
                        // find it again by the matched value.
                        Outcome::Rejected { category, .. }
                            if category == "OBJECT_NOT_FOUND"
                                && r == Route::UpdateById
                                && matches!(sync.match_on, MatchOn::Property(_))
                                && sync.mode != SyncMode::Update =>
                        {
                            retry_as_upsert.push(o.row)
                        }
                        Outcome::Rejected { category, message } => {
                            rejected.insert(o.row, (category, message));
                        }
                    }
                }
            }
            if !retry_as_upsert.is_empty()
                && let MatchOn::Property(prop) = &sync.match_on
            {
                let out: Vec<OutRecord> = retry_as_upsert
                    .iter()
                    .map(|&i| {
                        let o = &outgoing.iter().find(|(_, o)| o.row == i).expect("row").1;
                        OutRecord {
                            key: rows[i].0.key.clone(),
                            id: rows[i].0.match_value.clone(),
                            properties: o.properties.clone(),
                        }
                    })
                    .collect();
                let report = dest
                    .write(&sync.object, WriteOp::Upsert { id_property: prop }, &out)
                    .await?;
                p.api_calls += report.api_calls;
                p.throttled += report.throttled;
                for (&i, res) in retry_as_upsert.iter().zip(report.outcomes) {
                    match res {
                        Outcome::Accepted { record_id } => {
                            accepted.insert(i, record_id);
                        }
                        Outcome::Rejected { category, message } => {
                            rejected.insert(i, (category, message));
                        }
                    }
                }
            }
            for (_, o) in &outgoing {
                let rec = &rows[o.row].0;
                if let Some(record_id) = accepted.remove(&o.row) {
                    if added && let (Some(task), Some(id)) = (&sync.task, &record_id) {
                        outcome
                            .tasks
                            .push(new_task(sync, task, run_id, rec, id, o, handoff_at));
                    }
                    outcome.accepted.push(Accepted {
                        key: rec.key.clone(),
                        key_hash: rec.key_hash,
                        fingerprint: rec.fingerprint,
                        record_id,
                    });
                } else {
                    let (category, message) = rejected.remove(&o.row).unwrap_or_else(|| {
                        (
                            "NO_RESULT".into(),
                            "no answer for this record; it will be resent".into(),
                        )
                    });
                    outcome.rejected.push(Rejection {
                        key: rec.key.clone(),
                        category,
                        message,
                    });
                }
            }
        }
    }
    outcome.api_calls = p.api_calls;
    outcome.throttled = p.throttled;
    p.rejected = outcome.rejected.clone();
    let tasks = std::mem::take(&mut outcome.tasks);
    if tasks.is_empty() {
        // The committer only stops after every job has ended.
        let _ = commit_tx.send((outcome, None));
        return Ok(p);
    }
    // The tasks are queued in the transaction that records their handoff; only once
    // that has landed may they be created.
    let outcome_tasks = tasks.clone();
    outcome.tasks = tasks;
    let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
    let _ = commit_tx.send((outcome, Some(ack_tx)));
    if ack_rx.await != Ok(true) {
        return Ok(p);
    }
    let queued: Vec<OutboxTask> = outcome_tasks
        .into_iter()
        .map(|t| OutboxTask {
            task_key: t.task_key,
            key: t.key,
            record_id: t.record_id,
            properties: t.properties,
            attempts: 0,
            last_attempt_ms: None,
        })
        .collect();
    let t = create_queued_tasks(state, dest, sync, run_id, queued).await?;
    p.api_calls += t.api_calls;
    p.throttled += t.throttled;
    p.tasks_created += t.created;
    p.rejected.extend(t.rejected);
    Ok(p)
}

/// Resolves owner emails to ids (an unknown or archived owner rejects the row) and,
/// under `fill_empty`, keeps the owner a record already has.
async fn assign_owners(
    dest: &dyn Destination,
    sync: &SyncConfig,
    outgoing: &mut [(Route, Outgoing)],
    rejected: &mut HashMap<usize, (String, String)>,
    p: &mut Processed,
) -> Result<(), ConnectorError> {
    let owner_of = |o: &Outgoing| -> Option<String> {
        o.properties
            .iter()
            .find(|(k, _)| k == OWNER_PROPERTY)
            .and_then(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty())
    };
    let mut values: Vec<String> = outgoing.iter().filter_map(|(_, o)| owner_of(o)).collect();
    values.sort();
    values.dedup();
    if !values.is_empty() {
        let r = dest.resolve_owners(&values).await?;
        p.api_calls += r.api_calls;
        p.throttled += r.throttled;
        for (_, o) in outgoing.iter_mut() {
            let Some(v) = owner_of(o) else { continue };
            match r.value.get(&v) {
                Some(Ok(id)) => {
                    for (k, val) in o.properties.iter_mut() {
                        if k == OWNER_PROPERTY {
                            *val = Some(id.clone());
                        }
                    }
                    o.owner = Some(id.clone());
                }
                Some(Err(why)) => {
                    rejected.insert(o.row, ("INVALID_OWNER".into(), why.clone()));
                }
                None => {
                    rejected.insert(
                        o.row,
                        (
                            "INVALID_OWNER".into(),
                            format!("owner {v:?} could not be resolved"),
                        ),
                    );
                }
            }
        }
    }
    if sync.owner_policy == OwnerPolicy::Overwrite {
        return Ok(());
    }
    // fill_empty: read the owners of records that may exist already, grouped by how they are found.
    for by_property in [true, false] {
        let id_property = match (&sync.match_on, by_property) {
            (MatchOn::Property(p), true) => Some(p.as_str()),
            (_, true) => continue,
            (_, false) => None,
        };
        let members: Vec<usize> = outgoing
            .iter()
            .enumerate()
            .filter(|(_, (r, o))| {
                !rejected.contains_key(&o.row)
                    && o.owner.is_some()
                    && match r {
                        Route::Upsert | Route::UpdateByProperty => by_property,
                        Route::UpdateById => !by_property,
                        Route::Create => false,
                    }
            })
            .map(|(i, _)| i)
            .collect();
        if members.is_empty() {
            continue;
        }
        let ids: Vec<String> = members.iter().map(|&i| outgoing[i].1.id.clone()).collect();
        let current = dest.current_owners(&sync.object, id_property, &ids).await?;
        p.api_calls += current.api_calls;
        p.throttled += current.throttled;
        for &i in &members {
            let o = &mut outgoing[i].1;
            if let Some(Some(existing)) = current.value.get(&o.id)
                && Some(existing) != o.owner.as_ref()
            {
                // A lead has one active owner: the one it has stays, and its task goes to them.
                o.properties.retain(|(k, _)| k != OWNER_PROPERTY);
                o.owner = Some(existing.clone());
                p.owners_kept += 1;
            }
        }
    }
    Ok(())
}

/// The task a handoff calls for, with its deterministic idempotency key: the same
/// sync, row and accepting run always give the same key.
fn new_task(
    sync: &SyncConfig,
    task: &TaskConfig,
    run_id: RunId,
    rec: &Record,
    record_id: &str,
    o: &Outgoing,
    handoff_at: DateTime<Utc>,
) -> NewTask {
    let mut h = blake3::Hasher::new();
    h.update(sync.name.as_bytes());
    h.update(&[0]);
    h.update(rec.key.as_bytes());
    h.update(&[0]);
    h.update(&run_id.to_le_bytes());
    let task_key = h.finalize().to_hex()[..32].to_string();
    let due = handoff_at + chrono::Duration::seconds(task.due_after_secs as i64);
    let mut props = serde_json::Map::new();
    props.insert(
        "hs_task_subject".into(),
        task.subject.render(&o.properties).into(),
    );
    if let Some(body) = &task.body {
        props.insert("hs_task_body".into(), body.render(&o.properties).into());
    }
    props.insert("hs_timestamp".into(), iso_ms(due).into());
    props.insert("hs_task_status".into(), "NOT_STARTED".into());
    props.insert("hs_task_priority".into(), task.priority.clone().into());
    props.insert("hs_task_type".into(), task.task_type.clone().into());
    if let Some(owner) = &o.owner {
        props.insert(OWNER_PROPERTY.into(), owner.clone().into());
    }
    NewTask {
        task_key,
        key: rec.key.clone(),
        record_id: record_id.to_string(),
        properties: serde_json::Value::Object(props).to_string(),
    }
}

fn iso_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What creating queued tasks did.
#[derive(Default)]
struct TasksDone {
    api_calls: u64,
    throttled: u64,
    created: u64,
    /// Still pending: the create got no clear answer.
    unknown: u64,
    rejected: Vec<Rejection>,
}

/// Creates queued tasks exactly once. A task that was attempted before may exist
/// already (a crash, a timeout, a dropped connection after HubSpot applied it): it is
/// searched for by its key first, and created only if it is not there.
async fn create_queued_tasks(
    state: &StateStore,
    dest: &dyn Destination,
    sync: &SyncConfig,
    run_id: RunId,
    queued: Vec<OutboxTask>,
) -> Result<TasksDone, ConnectorError> {
    let Some(task) = &sync.task else {
        return Ok(TasksDone::default());
    };
    let mut done = TasksDone::default();
    let (attempted, mut fresh): (Vec<OutboxTask>, Vec<OutboxTask>) =
        queued.into_iter().partition(|t| t.attempts > 0);
    let mut sent: Vec<(String, String)> = Vec::new();
    let mut failed: Vec<(String, Rejection)> = Vec::new();
    if !attempted.is_empty() {
        // A task created moments ago may not show in search yet.
        let settle = dest.search_settle();
        let newest = attempted
            .iter()
            .filter_map(|t| t.last_attempt_ms)
            .max()
            .unwrap_or(0);
        let age = Utc::now().timestamp_millis().saturating_sub(newest);
        let wait = settle.saturating_sub(std::time::Duration::from_millis(age.max(0) as u64));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let keys: Vec<String> = attempted.iter().map(|t| t.task_key.clone()).collect();
        let found = dest.find_tasks(&task.key_property, &keys).await?;
        done.api_calls += found.api_calls;
        done.throttled += found.throttled;
        for t in attempted {
            match found.value.get(&t.task_key) {
                Some(id) => sent.push((t.task_key.clone(), id.clone())),
                None => fresh.push(t),
            }
        }
    }
    let result = async {
        for chunk in fresh.chunks(dest.batch_size().max(1)) {
            let keys: Vec<String> = chunk.iter().map(|t| t.task_key.clone()).collect();
            // Recorded before the request: from here on the task may exist.
            state
                .mark_tasks_attempted(&keys)
                .await
                .map_err(|e| ConnectorError::Unavailable {
                    connector: sync.connector.clone(),
                    message: format!("state store: {e}"),
                    api_calls: 0,
                    throttled: 0,
                })?;
            let inputs: Vec<TaskInput> = chunk
                .iter()
                .map(|t| TaskInput {
                    task_key: t.task_key.clone(),
                    properties: serde_json::from_str(&t.properties).unwrap_or_default(),
                    record_id: t.record_id.clone(),
                    association_type_id: task.association_type_id,
                })
                .collect();
            let report = dest.create_tasks(&task.key_property, &inputs).await?;
            done.api_calls += report.api_calls;
            done.throttled += report.throttled;
            for (t, o) in chunk.iter().zip(report.outcomes) {
                match o {
                    TaskOutcome::Created { task_id } => sent.push((t.task_key.clone(), task_id)),
                    TaskOutcome::Rejected { category, message } => failed.push((
                        t.task_key.clone(),
                        Rejection {
                            key: t.key.clone(),
                            category,
                            message: format!("follow-up task not created: {message}"),
                        },
                    )),
                    TaskOutcome::Unknown { message } => {
                        done.unknown += 1;
                        tracing::warn!(key = t.key, "task create got no clear answer ({message}); it is checked by its key before any retry");
                    }
                }
            }
        }
        Ok::<(), ConnectorError>(())
    }
    .await;
    done.created += sent.len() as u64;
    done.rejected = failed.iter().map(|(_, r)| r.clone()).collect();
    if let Err(e) = state.finish_tasks(run_id, &sync.name, &sent, &failed).await {
        // They stay pending and attempted: the next run finds them by key, creating none twice.
        tracing::error!(sync = %sync.name, "recording created tasks failed: {e}");
        done.created = 0;
    }
    result.map(|()| done)
}

/// Creates the sync's queued tasks left by earlier runs or by unclear answers in this one.
async fn drain_tasks(
    state: &StateStore,
    dest: &dyn Destination,
    sync: &SyncConfig,
    run_id: RunId,
    summary: &mut Summary,
) -> Result<(), ConnectorError> {
    if sync.task.is_none() {
        return Ok(());
    }
    // A few rounds: an unclear answer in one round is looked up in the next.
    for _ in 0..3 {
        let queued = state.pending_tasks(&sync.name, 10_000).await.map_err(|e| {
            ConnectorError::Unavailable {
                connector: sync.connector.clone(),
                message: format!("state store: {e}"),
                api_calls: 0,
                throttled: 0,
            }
        })?;
        if queued.is_empty() {
            break;
        }
        let t = create_queued_tasks(state, dest, sync, run_id, queued).await?;
        summary.api_calls += t.api_calls;
        summary.throttled += t.throttled;
        summary.tasks_created += t.created;
        summary.rejected += t.rejected.len() as u64;
        for r in t.rejected {
            if summary.rejections.len() < SUMMARY_LIMIT {
                summary.rejections.push(r);
            }
        }
        if t.unknown == 0 {
            break;
        }
    }
    Ok(())
}

/// A stream of the jobs the producer hands over.
fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Job>) -> impl futures::Stream<Item = Job> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Commits one batch's outcome. A commit that fails leaves the rows unsynced, so
/// they are resent next run (writes are idempotent); the run reports it.
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

#[cfg(test)]
mod tests {
    use super::count_common;

    #[test]
    fn count_common_counts_shared_values_of_ascending_lists() {
        assert_eq!(count_common(&[], &[1, 2]), 0);
        assert_eq!(count_common(&[1, 2], &[]), 0);
        assert_eq!(
            count_common(&[1, 3, 5, 7, u64::MAX], &[0, 3, 4, 7, u64::MAX]),
            3
        );
        assert_eq!(count_common(&[2, 4, 6], &[1, 3, 5, 7]), 0);
        assert_eq!(count_common(&[5], &[5]), 1);
    }
}
