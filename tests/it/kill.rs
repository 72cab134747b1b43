//! `kill -9` of a sync process at random points of a 20,000-row sync with tasks, then a
//! rerun to completion: every contact right, exactly one task per handed-off contact.

use std::process::Stdio;
use std::time::{Duration, Instant};

use handoff::sandbox::{Faults, SandboxConfig};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::{Fixture, connector_toml};
use crate::connector::{TASK_SYNC, model, owned, tasks_by_contact};

const ROWS: u32 = 20_000;

fn owner_of(i: u32) -> u32 {
    101 + i % 8
}

/// One `handoff sync --json`; killed with SIGKILL after `kill_after` unless it ends first.
/// Returns the summary line when it ended by itself.
async fn sync_process(f: &Fixture, kill_after: Option<Duration>, log: &str) -> Option<Value> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.arg("--project")
        .arg(f.path())
        .args(["--log-format", "json", "sync", "leads", "--json"])
        .env_remove("HANDOFF_STATE_URL")
        .envs(f.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(f.path().join(log)).expect("log file"))
        .kill_on_drop(true);
    let child = cmd.spawn().expect("handoff sync starts");
    let out = async { child.wait_with_output().await.expect("sync runs") };
    let output = match kill_after {
        Some(after) => match tokio::time::timeout(after, out).await {
            Ok(o) => o,
            // Dropping the future drops the child, which kill_on_drop kills with SIGKILL.
            Err(_) => return None,
        },
        None => out.await,
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().last().unwrap_or_default();
    Some(serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}): {text}\n{}",
            std::fs::read_to_string(f.path().join(log)).unwrap_or_default()
        )
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_a_sync_with_tasks_loses_and_doubles_nothing() {
    let rows = owned(ROWS, |i| {
        format!("rep{}@demo.handoff.dev", owner_of(i) - 100)
    });
    let mut config = SandboxConfig::ephemeral();
    // Some connections also drop after HubSpot applied the write, as on a flaky network.
    config.faults = Faults {
        seed: 11,
        drop_after_apply_rate: 0.02,
        ..Faults::default()
    };
    let connector = connector_toml(100_000, 1, 4).replace(
        "[rate_limit]",
        "search_settle_ms = 0\ntimeout_secs = 5\n\n[rate_limit]",
    );
    let f = Fixture::with_model(&rows, config, &connector, &model(TASK_SYNC)).await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut kills = 0;
    for round in 0..8 {
        let after = Duration::from_millis(rng.random_range(150..2_500));
        match sync_process(&f, Some(after), &format!("round{round}.log")).await {
            None => kills += 1,
            Some(summary) if summary["status"] == "ok" && summary["tasks_pending"] == 0 => break,
            Some(_) => {}
        }
    }
    assert!(
        kills >= 3,
        "the sync was killed mid-run at least three times ({kills})"
    );

    // Rerun to completion.
    let started = Instant::now();
    let last = loop {
        let s = sync_process(&f, None, "final.log").await.expect("ran");
        if s["tasks_pending"] == 0 && s["unsent"] == 0 && s["status"] != "failed" {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{s}");
    };
    assert_eq!(last["rejected"], 0, "{last}");

    let contacts = f.stored_contacts().await;
    assert_eq!(contacts.len(), ROWS as usize);
    for l in &rows {
        let c = &contacts[&l.email]["properties"];
        assert_eq!(c["firstname"], l.name.as_str());
        assert_eq!(c["lead_score"], l.score.to_string().as_str());
        assert_eq!(c["nurture_status"], "exited");
        assert_eq!(c["hubspot_owner_id"], owner_of(l.id).to_string().as_str());
    }
    let dups = f.inspect("/_sandbox/duplicates").await;
    assert_eq!(dups["total"], 0, "{dups}");
    let tasks = tasks_by_contact(&f).await;
    assert_eq!(
        tasks.len(),
        ROWS as usize,
        "one task per handed-off contact"
    );
    for (contact, t) in &tasks {
        assert_eq!(t.len(), 1, "contact {contact} has {} tasks", t.len());
    }
    assert_eq!(f.objects("tasks").await.len(), ROWS as usize);
}
