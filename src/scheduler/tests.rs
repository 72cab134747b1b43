//! Scheduler tests on tokio's paused clock: ticks, coalescing, concurrency, triggers, shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// Wall time that follows tokio's (paused) clock from a fixed instant, and can jump like a resumed laptop.
struct TestClock {
    anchor: DateTime<Utc>,
    start: tokio::time::Instant,
    jumped: Mutex<chrono::Duration>,
}

impl TestClock {
    fn new() -> Arc<TestClock> {
        Arc::new(TestClock {
            anchor: "2025-01-01T00:00:00Z".parse().unwrap(),
            start: tokio::time::Instant::now(),
            jumped: Mutex::new(chrono::Duration::zero()),
        })
    }

    fn jump(&self, by: Duration) {
        *self.jumped.lock().unwrap() += chrono::Duration::from_std(by).unwrap();
    }

    /// Seconds since the anchor, as the scheduler sees them.
    fn secs(&self) -> f64 {
        (self.now() - self.anchor).num_milliseconds() as f64 / 1000.0
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.anchor + chrono::Duration::from_std(elapsed).unwrap() + *self.jumped.lock().unwrap()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Event {
    sync: String,
    reason: Reason,
    full: bool,
    started: f64,
    ended: Option<f64>,
    status: Option<String>,
    batches: u32,
}

/// A runner whose runs are `batches` sleeps of `batch` each, checking `stop` between them like sync::run.
struct FakeRunner {
    clock: Arc<TestClock>,
    shape: HashMap<String, (u32, Duration)>,
    ignore_stop: bool,
    fail_before_start: bool,
    events: Mutex<Vec<Event>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    next_id: AtomicI64,
}

impl FakeRunner {
    fn new(clock: &Arc<TestClock>, shape: &[(&str, u32, u64)]) -> FakeRunner {
        FakeRunner {
            clock: Arc::clone(clock),
            shape: shape
                .iter()
                .map(|(s, n, secs)| (s.to_string(), (*n, Duration::from_secs(*secs))))
                .collect(),
            ignore_stop: false,
            fail_before_start: false,
            events: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            next_id: AtomicI64::new(1),
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn starts(&self, sync: &str) -> Vec<f64> {
        self.events()
            .iter()
            .filter(|e| e.sync == sync)
            .map(|e| e.started)
            .collect()
    }
}

#[async_trait::async_trait]
impl Runner for FakeRunner {
    async fn run(
        &self,
        request: RunRequest,
        stop: CancellationToken,
        started: mpsc::UnboundedSender<RunId>,
    ) -> RunOutcome {
        if self.fail_before_start {
            return RunOutcome {
                run_id: None,
                status: "failed".into(),
                error: Some("warehouse unreadable".into()),
            };
        }
        let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(n, Ordering::SeqCst);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let index = {
            let mut events = self.events.lock().unwrap();
            events.push(Event {
                sync: request.sync.clone(),
                reason: request.reason,
                full: request.full,
                started: self.clock.secs(),
                ended: None,
                status: None,
                batches: 0,
            });
            events.len() - 1
        };
        let _ = started.send(id);
        // Decrements even when the scheduler drops this run at the end of the grace period.
        struct Running<'a>(&'a AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _running = Running(&self.running);
        let (batches, each) = self.shape[&request.sync];
        let mut done = 0;
        for _ in 0..batches {
            if stop.is_cancelled() && !self.ignore_stop {
                break;
            }
            tokio::time::sleep(each).await;
            done += 1;
            self.events.lock().unwrap()[index].batches = done;
        }
        let status = if done < batches { "interrupted" } else { "ok" };
        let mut events = self.events.lock().unwrap();
        events[index].ended = Some(self.clock.secs());
        events[index].status = Some(status.into());
        RunOutcome {
            run_id: Some(id),
            status: status.into(),
            error: None,
        }
    }
}

fn spec(name: &str, schedule: Option<&str>) -> SyncSpec {
    SyncSpec {
        name: name.into(),
        schedule: schedule.map(|s| Schedule::parse(s).unwrap()),
    }
}

fn start(runner: &Arc<FakeRunner>, syncs: Vec<SyncSpec>) -> (Scheduler, CancellationToken) {
    let shutdown = CancellationToken::new();
    let s = Scheduler::start(
        Arc::clone(runner) as Arc<dyn Runner>,
        Arc::clone(&runner.clock) as Arc<dyn Clock>,
        Tz::UTC,
        syncs,
        shutdown.clone(),
    );
    (s, shutdown)
}

async fn stop(s: &Scheduler, shutdown: &CancellationToken) {
    shutdown.cancel();
    assert!(s.wait(Duration::from_secs(60)).await, "stopped in time");
}

async fn advance_to(clock: &TestClock, secs: f64) {
    let now = clock.secs();
    tokio::time::sleep(Duration::from_secs_f64(secs - now)).await;
}

#[tokio::test(start_paused = true)]
async fn cron_ticks_run_the_sync_on_schedule() {
    let clock = TestClock::new();
    let runner = Arc::new(FakeRunner::new(&clock, &[("leads", 1, 1)]));
    let (s, shutdown) = start(&runner, vec![spec("leads", Some("*/10 * * * * *"))]);
    advance_to(&clock, 5.0).await;
    let state = &s.syncs()[0];
    assert_eq!(
        state.next_run,
        Some("2025-01-01T00:00:10Z".parse().unwrap())
    );
    assert_eq!(state.schedule.as_deref(), Some("*/10 * * * * *"));
    advance_to(&clock, 35.0).await;
    stop(&s, &shutdown).await;
    assert_eq!(runner.starts("leads"), vec![10.0, 20.0, 30.0]);
    assert!(
        runner
            .events()
            .iter()
            .all(|e| e.reason == Reason::Schedule && !e.full)
    );
}

#[tokio::test(start_paused = true)]
async fn ticks_during_a_long_run_are_coalesced_into_one_catch_up_run() {
    let clock = TestClock::new();
    // 25 s runs on a 10 s schedule: each run swallows two ticks.
    let runner = Arc::new(FakeRunner::new(&clock, &[("leads", 1, 25)]));
    let (s, shutdown) = start(&runner, vec![spec("leads", Some("*/10 * * * * *"))]);
    advance_to(&clock, 62.0).await;
    stop(&s, &shutdown).await;
    // 10 → 35 (ticks 20 and 30 missed: one run at 35) → 60 (ticks 40, 50, 60: one run at 60).
    assert_eq!(runner.starts("leads"), vec![10.0, 35.0, 60.0]);
    assert_eq!(
        runner.max_running.load(Ordering::SeqCst),
        1,
        "never in parallel"
    );
}

#[tokio::test(start_paused = true)]
async fn ticks_missed_while_the_machine_was_suspended_fire_once() {
    let clock = TestClock::new();
    let runner = Arc::new(FakeRunner::new(&clock, &[("leads", 1, 1)]));
    let (s, shutdown) = start(&runner, vec![spec("leads", Some("@every 10s"))]);
    advance_to(&clock, 12.0).await;
    // Five minutes pass on the wall clock and none on the monotonic one: thirty ticks missed.
    clock.jump(Duration::from_secs(300));
    tokio::time::sleep(Duration::from_secs(19)).await;
    stop(&s, &shutdown).await;
    assert_eq!(runner.starts("leads"), vec![10.0, 320.0, 330.0]);
}

#[tokio::test(start_paused = true)]
async fn syncs_run_concurrently_each_one_at_a_time() {
    let clock = TestClock::new();
    let runner = Arc::new(FakeRunner::new(
        &clock,
        &[("hubspot_leads", 3, 5), ("salesforce_leads", 3, 5)],
    ));
    let (s, shutdown) = start(
        &runner,
        vec![
            spec("hubspot_leads", Some("*/10 * * * * *")),
            spec("salesforce_leads", Some("*/10 * * * * *")),
        ],
    );
    advance_to(&clock, 12.0).await;
    let states = s.syncs();
    assert!(
        states.iter().all(|s| s.running && s.run_id.is_some()),
        "{states:?}"
    );
    advance_to(&clock, 41.0).await;
    stop(&s, &shutdown).await;
    // Both start on the tick; each 15 s run swallows the next tick and catches up at 25.
    assert_eq!(runner.starts("hubspot_leads"), vec![10.0, 25.0, 40.0]);
    assert_eq!(runner.starts("salesforce_leads"), vec![10.0, 25.0, 40.0]);
    assert_eq!(runner.max_running.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_run_lets_the_batch_in_flight_finish() {
    let clock = TestClock::new();
    let runner = Arc::new(FakeRunner::new(&clock, &[("leads", 10, 1)]));
    let (s, shutdown) = start(&runner, vec![spec("leads", Some("*/10 * * * * *"))]);
    advance_to(&clock, 13.5).await;
    shutdown.cancel();
    assert!(s.wait(Duration::from_secs(30)).await);
    assert_eq!(
        clock.secs(),
        14.0,
        "waited for the batch in flight, no longer"
    );
    let events = runner.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].batches, 4);
    assert_eq!(events[0].status.as_deref(), Some("interrupted"));
    // Nothing starts after the shutdown, whatever the schedule says.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runner.events().len(), 1);
    assert_eq!(
        s.trigger("leads", false).await,
        Err(TriggerError::ShuttingDown)
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_that_outlives_the_grace_period_is_dropped() {
    let clock = TestClock::new();
    let mut r = FakeRunner::new(&clock, &[("leads", 100, 1)]);
    r.ignore_stop = true;
    let runner = Arc::new(r);
    let (s, shutdown) = start(&runner, vec![spec("leads", Some("*/10 * * * * *"))]);
    advance_to(&clock, 12.0).await;
    shutdown.cancel();
    assert!(!s.wait(Duration::from_secs(5)).await);
    assert_eq!(clock.secs(), 17.0);
    let events = runner.events();
    assert_eq!((events[0].batches, events[0].ended), (7, None));
    assert_eq!(
        runner.running.load(Ordering::SeqCst),
        0,
        "the run was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trigger_answers_with_the_run_id_and_a_second_one_is_refused() {
    let clock = TestClock::new();
    let runner = Arc::new(FakeRunner::new(&clock, &[("leads", 10, 1)]));
    let (s, shutdown) = start(&runner, vec![spec("leads", None)]);
    assert_eq!(s.syncs()[0].next_run, None, "trigger-only");
    let id = s.trigger("leads", true).await.unwrap();
    assert_eq!(id, 1);
    assert_eq!(
        clock.secs(),
        0.0,
        "answered as soon as the run was recorded"
    );
    advance_to(&clock, 3.0).await;
    assert_eq!(
        s.trigger("leads", false).await,
        Err(TriggerError::Busy {
            sync: "leads".into(),
            run_id: Some(1)
        })
    );
    assert_eq!(
        s.trigger("nope", false).await,
        Err(TriggerError::UnknownSync("nope".into()))
    );
    advance_to(&clock, 11.0).await;
    assert_eq!(s.trigger("leads", false).await, Ok(2));
    stop(&s, &shutdown).await;
    let events = runner.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].reason, events[0].full, events[1].full),
        (Reason::Trigger, true, false)
    );
    assert_eq!(s.syncs()[0].last_status.as_deref(), Some("interrupted"));
}

#[tokio::test(start_paused = true)]
async fn a_trigger_says_why_a_run_could_not_start() {
    let clock = TestClock::new();
    let mut r = FakeRunner::new(&clock, &[("leads", 1, 1)]);
    r.fail_before_start = true;
    let runner = Arc::new(r);
    let (s, shutdown) = start(&runner, vec![spec("leads", None)]);
    assert_eq!(
        s.trigger("leads", false).await,
        Err(TriggerError::NotStarted("warehouse unreadable".into()))
    );
    stop(&s, &shutdown).await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_schedules_adds_and_removes_syncs() {
    let clock = TestClock::new();
    let runner = Arc::new(FakeRunner::new(&clock, &[("a", 1, 1), ("b", 1, 1)]));
    let (s, shutdown) = start(&runner, vec![spec("a", Some("*/10 * * * * *"))]);
    advance_to(&clock, 12.0).await;
    s.update(Tz::UTC, vec![spec("b", Some("*/5 * * * * *"))]);
    advance_to(&clock, 12.5).await;
    let names: Vec<String> = s.syncs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["b".to_string()]);
    s.update(Tz::UTC, vec![spec("b", Some("@every 20s"))]);
    advance_to(&clock, 41.0).await;
    stop(&s, &shutdown).await;
    assert_eq!(runner.starts("a"), vec![10.0]);
    assert_eq!(runner.starts("b"), vec![20.0, 40.0]);
}

#[test]
fn the_project_reads_its_time_zone_and_interval_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "handoff.toml",
        "[project]\ntimezone = \"Europe/Berlin\"\n\n[warehouse]\npath = \"wh\"\n",
    );
    write(
        "connectors/hubspot.toml",
        "kind = \"hubspot\"\nbase_url = \"http://127.0.0.1:1\"\ntoken = \"${T}\"\n",
    );
    write("models/m.sql", "SELECT 1 AS id, 'a@b.c' AS email");
    let model = |schedule: &str| {
        format!(
            "primary_key = \"id\"\nschedule = \"{schedule}\"\n\n[[sync]]\nconnector = \"hubspot\"\nobject = \"contacts\"\nmatch = {{ column = \"email\", property = \"email\" }}\nmapping = {{ id = \"lead_id\" }}\n"
        )
    };
    write("models/m.toml", &model("@every 30s"));
    let env = |k: &str| (k == "T").then(|| "t".to_string());
    let p = crate::project::load_with_env(dir.path(), &env).unwrap();
    assert_eq!(p.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(
        p.models[0].schedule.as_ref().map(|s| s.value.as_str()),
        Some("@every 30s")
    );

    write(
        "handoff.toml",
        "[project]\ntimezone = \"Mars/Olympus\"\n\n[warehouse]\npath = \"wh\"\n",
    );
    write("models/m.toml", &model("@every 5x"));
    let errors = crate::project::load_with_env(dir.path(), &env)
        .unwrap_err()
        .0;
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.contains(
            &"handoff.toml:2: `project.timezone` \"Mars/Olympus\" is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")".to_string()
        ),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t
                .starts_with("models/m.toml:2: `schedule` \"@every 5x\" is not a valid interval")),
        "{text:?}"
    );
}
