//! `handoff run` as a process against the sandbox: health, metrics, triggers, SIGTERM mid-run, restart, reload.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{Fixture, MODEL_TOML, connector_toml, leads, write};

const API_TOKEN: &str = "daemon-test-token";

/// A running `handoff run`; its log lines go to a file so a full pipe never blocks it.
struct Daemon {
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Daemon {
    async fn start(f: &Fixture, name: &str) -> Daemon {
        let log = f.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
        cmd.arg("--project")
            .arg(f.path())
            .args(["--log-format", "json", "run", "--listen", "127.0.0.1:0"])
            .args(["--grace-secs", "30", "--watch-secs", "1"])
            .env_remove("HANDOFF_STATE_URL")
            .env("HANDOFF_LOG", "info")
            .env("HANDOFF_API_TOKEN", API_TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true);
        for (k, v) in f.env() {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("handoff run starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the daemon announces its address")
            .expect("stdout")
            .unwrap_or_else(|| {
                panic!(
                    "the daemon exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Daemon {
            child,
            base,
            log,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("daemon answers")
    }

    async fn json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("json")
    }

    async fn metrics(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    async fn trigger(&self, sync: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/api/syncs/{sync}/trigger", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("daemon answers");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    /// Polls `GET /api/runs/{id}` until the run has ended.
    async fn finished_run(&self, id: i64) -> Value {
        for _ in 0..600 {
            let run = self.json(&format!("/api/runs/{id}")).await;
            if run["status"] != "running" {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {id} did not finish: {}", self.logs());
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit code.
    async fn terminate(mut self) -> (i32, String) {
        let pid = self.child.id().expect("still running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the daemon exits within its grace period")
            .expect("wait");
        (status.code().unwrap_or(-1), self.logs())
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_triggers_stops_mid_run_and_resumes_without_loss_or_duplicates() {
    const ROWS: u32 = 1000;
    // Two requests a second, one at a time: ten batches take about five seconds.
    let f = Fixture::with(
        &leads(ROWS),
        handoff::sandbox::SandboxConfig::ephemeral(),
        &connector_toml(2, 1, 1),
    )
    .await;
    let d = Daemon::start(&f, "first").await;

    assert_eq!(d.get("/healthz").await.status(), 200);
    assert_eq!(d.get("/readyz").await.status(), 200);
    let text = d.metrics().await;
    for family in [
        "# TYPE handoff_runs_total counter",
        "# TYPE handoff_rows_total counter",
        "# TYPE handoff_api_requests_total counter",
        "# TYPE handoff_throttled_total counter",
        "# TYPE handoff_run_duration_seconds histogram",
        "# TYPE handoff_last_success_timestamp_seconds gauge",
        "# TYPE handoff_rate_budget_remaining gauge",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert_eq!(
        metric(&text, "handoff_sync_running{sync=\"leads\"}"),
        Some(0.0)
    );

    // The control API wants the token.
    let anonymous = d
        .http
        .get(format!("{}/api/syncs", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let syncs = d.json("/api/syncs").await;
    assert_eq!(syncs[0]["name"], "leads");
    assert_eq!(syncs[0]["connector"], "hubspot");
    assert_eq!(syncs[0]["last_run"], Value::Null);
    assert_eq!(d.trigger("nope").await.0, 404);

    let (code, body) = d.trigger("leads").await;
    assert_eq!(code, 202, "{body}");
    let first_id = body["run_id"].as_i64().expect("run id");
    let (code, busy) = d.trigger("leads").await;
    assert_eq!((code, busy["run_id"].as_i64()), (409, Some(first_id)));
    // The CLI, meanwhile, sees the daemon and leaves its run in progress alone.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--project")
        .arg(f.path())
        .args(["status", "--json"])
        .env_remove("HANDOFF_STATE_URL")
        .envs(f.env())
        .output()
        .expect("status runs");
    let line: Value = serde_json::from_slice(&status.stdout).expect("one JSON line");
    assert_eq!(line["last_run"]["status"], "running");
    assert_eq!(
        handoff::scheduler::daemon::running_daemon(f.path()).await,
        Some(d.base.clone())
    );

    // SIGTERM once a couple of batches have landed.
    for _ in 0..600 {
        if f.records_written().await >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, logs) = d.terminate().await;
    assert_eq!(code, 0, "{logs}");
    assert_eq!(
        handoff::scheduler::daemon::running_daemon(f.path()).await,
        None
    );
    assert!(!logs.contains(API_TOKEN), "the token is never logged");
    assert!(
        !logs.contains("test-token"),
        "the CRM token is never logged"
    );

    let written = f.records_written().await;
    assert!(
        (200..u64::from(ROWS)).contains(&written),
        "stopped mid-run: {written}"
    );
    let state = f.state().await;
    let run = state.run(first_id).await.unwrap();
    assert_eq!(run.status, "interrupted", "{run:?}");
    // Every record the CRM took was committed with its batch; nothing half-recorded.
    let synced = state.load_fingerprints("leads").await.unwrap();
    assert_eq!(synced.len() as u64, written);

    // Restart: the next run sends exactly what the first one did not.
    let d = Daemon::start(&f, "second").await;
    let before = d.json(&format!("/api/runs/{first_id}")).await;
    assert_eq!(before["status"], "interrupted");
    let (code, body) = d.trigger("leads").await;
    assert_eq!(code, 202, "{body}");
    let second_id = body["run_id"].as_i64().unwrap();
    let run = d.finished_run(second_id).await;
    assert_eq!(run["status"], "ok", "{run}");
    assert_eq!(
        run["counts"]["added"].as_u64(),
        Some(u64::from(ROWS) - written)
    );
    assert_eq!(
        f.records_written().await,
        u64::from(ROWS),
        "nothing sent twice"
    );
    assert_eq!(f.contacts().await.len(), ROWS as usize, "nothing lost");

    let text = d.metrics().await;
    assert_eq!(
        metric(&text, "handoff_runs_total{sync=\"leads\",status=\"ok\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "handoff_rows_total{sync=\"leads\",outcome=\"added\"}"
        ),
        Some((u64::from(ROWS) - written) as f64)
    );
    assert!(
        metric(
            &text,
            "handoff_api_requests_total{connector=\"hubspot\",status=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            "handoff_last_success_timestamp_seconds{sync=\"leads\"}"
        )
        .is_some()
    );
    assert!(
        metric(
            &text,
            "handoff_rate_budget_remaining{connector=\"hubspot\"}"
        )
        .is_some()
    );
    assert_eq!(
        metric(&text, "handoff_run_duration_seconds_count{sync=\"leads\"}"),
        Some(1.0)
    );
    let syncs = d.json("/api/syncs").await;
    assert_eq!(syncs[0]["last_run"]["id"].as_i64(), Some(second_id));

    let (code, logs) = d.terminate().await;
    assert_eq!(code, 0, "{logs}");
    // JSON lines, the run's span carrying the sync and the run id.
    let finished: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "run finished")
        .collect();
    assert_eq!(finished.len(), 1, "{logs}");
    assert_eq!(finished[0]["span"]["sync"], "leads");
    assert_eq!(finished[0]["span"]["run_id"].as_i64(), Some(second_id));
    assert_eq!(finished[0]["fields"]["status"], "ok");

    // `handoff status` reads the same state store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--project")
        .arg(f.path())
        .args(["status", "--json"])
        .env_remove("HANDOFF_STATE_URL")
        .envs(f.env())
        .output()
        .expect("status runs");
    assert_eq!(out.status.code(), Some(0));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["sync"], "leads");
    assert_eq!(line["last_run"]["id"].as_i64(), Some(second_id));
    assert_eq!(line["last_run"]["status"], "ok");
    assert_eq!(line["next_run"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_on_schedule_and_keeps_the_last_valid_project_on_a_bad_reload() {
    let f = Fixture::new(&leads(30)).await;
    write(
        f.path(),
        "models/leads.toml",
        &format!("schedule = \"@every 1s\"\n{MODEL_TOML}"),
    );
    let d = Daemon::start(&f, "scheduled").await;
    let mut ran = false;
    for _ in 0..200 {
        let syncs = d.json("/api/syncs").await;
        if syncs[0]["last_run"]["status"] == "ok" {
            assert_eq!(syncs[0]["schedule"], "@every 1s");
            assert!(syncs[0]["next_run"].is_string() || syncs[0]["running"] == true);
            ran = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ran, "a scheduled run happened: {}", d.logs());
    assert_eq!(f.contacts().await.len(), 30);

    // A broken model: the daemon says so, and keeps running the last valid project.
    write(
        f.path(),
        "models/leads.toml",
        &format!("schedule = \"@every 1s\"\n{MODEL_TOML}")
            .replace("column = \"email\"", "column = \"nope\""),
    );
    let mut refused = false;
    for _ in 0..200 {
        let r = d.get("/readyz").await;
        if r.status() == 503 {
            let body: Value = r.json().await.unwrap();
            let errors = body["project"]["errors"].to_string();
            assert!(errors.contains("models/leads.toml"), "{body}");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the bad reload was noticed: {}", d.logs());
    let ids_before = d.json("/api/syncs").await[0]["last_run"]["id"].as_i64();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let ids_after = d.json("/api/syncs").await[0]["last_run"]["id"].as_i64();
    assert!(ids_after > ids_before, "still scheduling the old project");

    // Fixed: applied, ready again, and the new schedule shows.
    write(
        f.path(),
        "models/leads.toml",
        &format!("schedule = \"0 0 0 1 1 *\"\n{MODEL_TOML}"),
    );
    let mut applied = false;
    for _ in 0..200 {
        if d.get("/readyz").await.status() == 200
            && d.json("/api/syncs").await[0]["schedule"] == "0 0 0 1 1 *"
        {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "the fixed project was applied: {}", d.logs());
    let (code, logs) = d.terminate().await;
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("reload refused"), "{logs}");
    assert!(logs.contains("project reloaded"), "{logs}");
}

#[test]
fn a_public_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--project")
        .arg(dir.path())
        .args(["run", "--listen", "0.0.0.0:0"])
        .env_remove("HANDOFF_API_TOKEN")
        .output()
        .expect("handoff runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set HANDOFF_API_TOKEN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_sync_while_the_daemon_runs_goes_through_the_daemon() {
    let f = Fixture::new(&leads(30)).await;
    let d = Daemon::start(&f, "cli-through-daemon").await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.arg("--project")
        .arg(f.path())
        .args(["sync", "leads", "--json"])
        .env_remove("HANDOFF_STATE_URL")
        .env("HANDOFF_API_TOKEN", API_TOKEN);
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("handoff sync runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("running through it"), "{stderr}");
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(
        (line["added"].as_u64(), line["status"].as_str()),
        (Some(30), Some("ok"))
    );
    // The daemon ran it: its last run is the one the CLI printed.
    let syncs = d.json("/api/syncs").await;
    assert_eq!(syncs[0]["last_run"]["id"], line["run_id"]);
    assert_eq!(f.records_written().await, 30);
    let (code, logs) = d.terminate().await;
    assert_eq!(code, 0, "{logs}");
}
