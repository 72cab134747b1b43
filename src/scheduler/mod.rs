//! The daemon's scheduler: one task per sync runs it on its schedule and on triggers, never twice at once.
//!
//! Each sync has a task that sleeps until its next tick, runs the sync through a
//! [`Runner`], and computes the next tick from the time the run *started*: ticks
//! that fell inside a long run (or a suspended machine) are therefore in the past
//! when the run ends and fire exactly once, right away — coalesced, never queued,
//! never run in parallel. Triggers that arrive while a run is going are refused
//! with that run's id. Syncs are independent tasks, so syncs on different
//! connectors run concurrently; the runner shares one destination (one rate
//! budget) between the syncs of a connector.
//!
//! Shutdown follows the mini-redis pattern: one [`CancellationToken`] is handed to
//! every task and every run. Once it is cancelled no run starts, runs in progress
//! start no new batch, and [`Scheduler::wait`] gives them a grace period to commit
//! what is in flight before they are dropped (a dropped state transaction rolls
//! back: a batch is recorded whole or not at all).

pub mod daemon;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use schedule::Schedule;

use crate::state::RunId;

/// The wall clock, injected so tests can run on tokio's paused time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Longest sleep before the wall clock is read again: tokio's timers follow the
/// monotonic clock, which stands still while a machine is suspended, so a long
/// sleep would otherwise oversleep a tick after a resume.
const MAX_NAP: Duration = Duration::from_secs(30);

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Schedule,
    Trigger,
}

/// One run to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub sync: String,
    pub full: bool,
    pub reason: Reason,
}

/// How a run ended, as far as the scheduler cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// `None` when the run failed before it was recorded (e.g. the warehouse is unreadable).
    pub run_id: Option<RunId>,
    /// `ok`, `rejections`, `failed`, `interrupted`.
    pub status: String,
    pub error: Option<String>,
}

/// Runs one sync to its end.
#[async_trait::async_trait]
pub trait Runner: Send + Sync + 'static {
    /// Sends the run id on `started` as soon as the run is recorded. Once `stop` is
    /// cancelled the run starts no new batch, commits what is in flight and returns.
    async fn run(
        &self,
        request: RunRequest,
        stop: CancellationToken,
        started: mpsc::UnboundedSender<RunId>,
    ) -> RunOutcome;
}

/// A sync the scheduler keeps: without a schedule it runs on triggers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSpec {
    pub name: String,
    pub schedule: Option<Schedule>,
}

/// Why a trigger did not start a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("no sync named {0:?}")]
    UnknownSync(String),
    /// A run of the sync is in progress; its id, once it has one.
    #[error("sync {sync:?} is already running")]
    Busy { sync: String, run_id: Option<RunId> },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// The run failed before it was recorded.
    #[error("the run failed before it started: {0}")]
    NotStarted(String),
}

/// What the scheduler knows about one sync now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncState {
    pub name: String,
    pub schedule: Option<String>,
    pub next_run: Option<DateTime<Utc>>,
    pub running: bool,
    /// The run in progress, once recorded.
    pub run_id: Option<RunId>,
    /// The last run this process made: status and end time.
    pub last_status: Option<String>,
    pub last_finished: Option<DateTime<Utc>>,
}

struct Trigger {
    full: bool,
    reply: oneshot::Sender<Result<RunId, TriggerError>>,
}

#[derive(Debug, Clone)]
struct Control {
    schedule: Option<Schedule>,
    tz: Tz,
    retired: bool,
}

struct Slot {
    control: watch::Sender<Control>,
    triggers: mpsc::Sender<Trigger>,
    state: Arc<Mutex<SyncState>>,
}

struct Inner {
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    /// Cancelled by the owner: no new runs, runs in progress stop between batches.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: runs still going are dropped.
    kill: CancellationToken,
    tracker: TaskTracker,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// One per sync name, never removed: a sync removed by a reload and added back
    /// by the next cannot overlap with its old task's last run.
    run_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A handle on the running scheduler; clones share it.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// Starts one task per sync. Cancel `shutdown` to stop, then [`Scheduler::wait`].
    pub fn start(
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
        tz: Tz,
        syncs: Vec<SyncSpec>,
        shutdown: CancellationToken,
    ) -> Scheduler {
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                runner,
                clock,
                shutdown,
                kill: CancellationToken::new(),
                tracker: TaskTracker::new(),
                slots: Mutex::new(BTreeMap::new()),
                run_locks: Mutex::new(BTreeMap::new()),
            }),
        };
        scheduler.update(tz, syncs);
        scheduler
    }

    /// Applies a reloaded project: new syncs start, removed ones stop after their
    /// current run, changed schedules apply from the next tick.
    pub fn update(&self, tz: Tz, syncs: Vec<SyncSpec>) {
        let mut slots = self.inner.slots.lock().expect("scheduler lock");
        let keep: Vec<&str> = syncs.iter().map(|s| s.name.as_str()).collect();
        slots.retain(|name, slot| {
            let kept = keep.contains(&name.as_str());
            if !kept {
                slot.control.send_modify(|c| c.retired = true);
            }
            kept
        });
        for spec in syncs {
            match slots.get(&spec.name) {
                Some(slot) => {
                    slot.control.send_if_modified(|c| {
                        let changed = c.schedule != spec.schedule || c.tz != tz;
                        c.schedule = spec.schedule.clone();
                        c.tz = tz;
                        changed
                    });
                    slot.state.lock().expect("sync state").schedule =
                        spec.schedule.as_ref().map(|s| s.to_string());
                }
                None => {
                    let slot = self.spawn(spec.name.clone(), spec.schedule, tz);
                    slots.insert(spec.name, slot);
                }
            }
        }
    }

    fn spawn(&self, name: String, schedule: Option<Schedule>, tz: Tz) -> Slot {
        let state = Arc::new(Mutex::new(SyncState {
            name: name.clone(),
            schedule: schedule.as_ref().map(|s| s.to_string()),
            next_run: None,
            running: false,
            run_id: None,
            last_status: None,
            last_finished: None,
        }));
        let (control, control_rx) = watch::channel(Control {
            schedule,
            tz,
            retired: false,
        });
        // One waiting trigger at most: the task answers the rest while it runs.
        let (triggers, triggers_rx) = mpsc::channel(1);
        let lock = Arc::clone(
            self.inner
                .run_locks
                .lock()
                .expect("scheduler lock")
                .entry(name.clone())
                .or_default(),
        );
        let task = SyncTask {
            inner: Arc::clone(&self.inner),
            name,
            control: control_rx,
            triggers: triggers_rx,
            state: Arc::clone(&state),
            lock,
        };
        self.inner.tracker.spawn(task.run());
        Slot {
            control,
            triggers,
            state,
        }
    }

    /// Starts a run of `sync` now and answers with its id once it is recorded.
    pub async fn trigger(&self, sync: &str, full: bool) -> Result<RunId, TriggerError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(TriggerError::ShuttingDown);
        }
        let (triggers, state) = {
            let slots = self.inner.slots.lock().expect("scheduler lock");
            let slot = slots
                .get(sync)
                .ok_or_else(|| TriggerError::UnknownSync(sync.to_string()))?;
            (slot.triggers.clone(), Arc::clone(&slot.state))
        };
        let (reply, answer) = oneshot::channel();
        match triggers.try_send(Trigger { full, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(TriggerError::Busy {
                    sync: sync.to_string(),
                    run_id: state.lock().expect("sync state").run_id,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(TriggerError::ShuttingDown),
        }
        // The task drops the reply only when it stops.
        answer.await.unwrap_or(Err(TriggerError::ShuttingDown))
    }

    /// Every sync's state, by name.
    pub fn syncs(&self) -> Vec<SyncState> {
        self.inner
            .slots
            .lock()
            .expect("scheduler lock")
            .values()
            .map(|s| s.state.lock().expect("sync state").clone())
            .collect()
    }

    /// After the shutdown token is cancelled: waits up to `grace` for runs in progress
    /// to commit their in-flight batches, then drops whatever is still running.
    /// True when everything finished within the grace period.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.inner.tracker.close();
        let clean = tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok();
        if !clean {
            self.inner.kill.cancel();
            self.inner.tracker.wait().await;
        }
        clean
    }
}

struct SyncTask {
    inner: Arc<Inner>,
    name: String,
    control: watch::Receiver<Control>,
    triggers: mpsc::Receiver<Trigger>,
    state: Arc<Mutex<SyncState>>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl SyncTask {
    async fn run(mut self) {
        let clock = Arc::clone(&self.inner.clock);
        let mut due = self.next_due(clock.now());
        loop {
            self.state.lock().expect("sync state").next_run = due;
            let nap = due.map(|d| {
                (d - clock.now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_NAP)
            });
            let (request, reply) = tokio::select! {
                biased;
                _ = self.inner.shutdown.cancelled() => break,
                changed = self.control.changed() => {
                    if changed.is_err() || self.control.borrow().retired {
                        break;
                    }
                    self.control.mark_unchanged();
                    due = self.next_due(clock.now());
                    continue;
                }
                Some(t) = self.triggers.recv() => (
                    RunRequest { sync: self.name.clone(), full: t.full, reason: Reason::Trigger },
                    Some(t.reply),
                ),
                _ = sleep(nap) => {
                    // A nap is capped, and the wall clock may have moved: look again.
                    if due.is_none_or(|d| clock.now() < d) {
                        continue;
                    }
                    (RunRequest { sync: self.name.clone(), full: false, reason: Reason::Schedule }, None)
                }
            };
            let started_at = clock.now();
            if !self.run_once(request, reply).await {
                break;
            }
            // From the start: ticks that fell inside the run are now due, and fire once.
            due = self.next_due(started_at);
        }
        let mut state = self.state.lock().expect("sync state");
        state.next_run = None;
    }

    fn next_due(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let c = self.control.borrow();
        c.schedule.as_ref().and_then(|s| s.next_after(after, c.tz))
    }

    /// Runs once, answering triggers meanwhile; false when the run was dropped at the end of the grace period.
    async fn run_once(
        &mut self,
        request: RunRequest,
        mut reply: Option<oneshot::Sender<Result<RunId, TriggerError>>>,
    ) -> bool {
        let _one_at_a_time = self.lock.lock().await;
        {
            let mut s = self.state.lock().expect("sync state");
            s.running = true;
            s.run_id = None;
        }
        tracing::debug!(sync = %self.name, reason = ?request.reason, "run starting");
        let (started, mut run_ids) = mpsc::unbounded_channel();
        let run = self
            .inner
            .runner
            .run(request, self.inner.shutdown.clone(), started);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut run => break Some(outcome),
                _ = self.inner.kill.cancelled() => break None,
                Some(id) = run_ids.recv() => {
                    self.state.lock().expect("sync state").run_id = Some(id);
                    if let Some(r) = reply.take() {
                        let _ = r.send(Ok(id));
                    }
                }
                Some(t) = self.triggers.recv() => {
                    let run_id = self.state.lock().expect("sync state").run_id;
                    let _ = t.reply.send(Err(TriggerError::Busy { sync: self.name.clone(), run_id }));
                }
            }
        };
        // The id may have been sent in the same poll the run finished.
        let late_id = run_ids.try_recv().ok();
        let mut s = self.state.lock().expect("sync state");
        s.running = false;
        s.run_id = None;
        match outcome {
            Some(outcome) => {
                s.last_status = Some(outcome.status.clone());
                s.last_finished = Some(self.inner.clock.now());
                if let Some(r) = reply {
                    let answer = match outcome.run_id.or(late_id) {
                        Some(id) => Ok(id),
                        None => Err(TriggerError::NotStarted(
                            outcome.error.unwrap_or_else(|| outcome.status.clone()),
                        )),
                    };
                    let _ = r.send(answer);
                }
                true
            }
            None => {
                tracing::warn!(sync = %self.name, "grace period over: run dropped; its committed batches stand");
                if let Some(r) = reply {
                    let _ = r.send(Err(TriggerError::ShuttingDown));
                }
                false
            }
        }
    }
}

/// Sleeps for `nap`, or forever when there is no next tick.
async fn sleep(nap: Option<Duration>) {
    match nap {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
