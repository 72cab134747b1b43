//! The `handoff` binary as a user runs it: exit codes, JSON Lines, error output.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{Fixture, leads, write};

fn handoff(f: &Fixture, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.arg("--project").arg(f.path()).args(args);
    cmd.env_remove("HANDOFF_STATE_URL")
        .env("HANDOFF_LOG", "error");
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    cmd.output().expect("handoff runs")
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_exits_zero_on_a_clean_project_and_two_with_every_error() {
    let f = Fixture::new(&leads(3)).await;
    let ok = handoff(&f, &["validate"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    write(
        f.path(),
        "models/leads.sql",
        "SELECT lead_id, email FROM leads",
    );
    write(
        f.path(),
        "connectors/hubspot.toml",
        "kind = \"hubspot\"\nbase_url = \"${HUBSPOT_BASE_URL}\"\ntoken = \"${HUBSPOT_TOKEN}\"\nretries = 3\n",
    );
    let bad = handoff(&f, &["validate"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("connectors/hubspot.toml:4: unknown key `retries`"),
        "{err}"
    );
    // Config errors stop before the warehouse; once fixed, the column errors show.
    write(
        f.path(),
        "connectors/hubspot.toml",
        &crate::common::connector_toml(1000, 1, 2),
    );
    let bad = handoff(&f, &["validate"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("models/leads.toml:7: mapped column `name` is not in the result"),
        "{err}"
    );
    assert!(
        err.contains("models/leads.toml:7: mapped column `score` is not in the result"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_sync_print_one_json_object_per_sync() {
    let mut rows = leads(40);
    rows[0].email = "broken@".into();
    let f = Fixture::new(&rows).await;

    let plan = handoff(&f, &["plan", "leads", "--json"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let lines = json_lines(&plan);
    assert_eq!(lines.len(), 1);
    for key in [
        "sync",
        "added",
        "changed",
        "removed",
        "unchanged",
        "invalid",
        "rejected",
        "api_calls",
        "throttled",
        "duration_ms",
    ] {
        assert!(lines[0].get(key).is_some(), "missing {key}: {}", lines[0]);
    }
    assert_eq!(lines[0]["added"], 40);
    assert_eq!(lines[0]["api_calls"], 0);
    assert_eq!(f.records_written().await, 0, "plan sent nothing");

    let sync = handoff(&f, &["sync", "--all", "--json"]);
    assert_eq!(sync.status.code(), Some(1), "a rejection makes exit code 1");
    let lines = json_lines(&sync);
    assert_eq!(lines[0]["sync"], "leads");
    assert_eq!(lines[0]["added"], 40);
    assert_eq!(lines[0]["rejected"], 1);
    assert_eq!(lines[0]["rejections"][0]["key"], "1");

    let human = handoff(&f, &["sync", "leads"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("rejected 1: VALIDATION_ERROR"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_two() {
    let f = Fixture::new(&leads(1)).await;
    assert_eq!(handoff(&f, &["sync", "nope"]).status.code(), Some(2));
    assert_eq!(handoff(&f, &["sync"]).status.code(), Some(2));
    assert_eq!(handoff(&f, &["frobnicate"]).status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_offline_in_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .arg("--project")
        .arg(dir.path())
        .args(["demo", "--leads", "5000"])
        .env("HANDOFF_LOG", "error")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("== first run"), "{text}");
    assert!(text.contains("== second run"), "{text}");
    assert!(dir.path().join("models/hot_leads.sql").exists());
    assert!(
        dir.path()
            .join("warehouse/marketing_leads.parquet")
            .exists()
    );
}
