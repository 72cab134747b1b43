//! Sync runs against the sandbox over real HTTP: what travels, what is committed, what is retried.

use handoff::sandbox::SandboxConfig;
use handoff::state::{Accepted, BatchOutcome, RunCounts};
use handoff::sync::RunOptions;
use serde_json::json;

use crate::common::{Fixture, connector_toml, leads};

#[tokio::test]
async fn first_run_sends_everything_and_a_rerun_sends_nothing() {
    let rows = leads(250);
    let f = Fixture::new(&rows).await;

    let first = f.sync().await;
    assert_eq!(first.status, "ok", "{first:?}");
    assert_eq!(
        (first.added, first.changed, first.removed, first.unchanged),
        (250, 0, 0, 0)
    );
    assert_eq!(first.api_calls, 3, "250 rows in batches of 100");
    assert_eq!(f.records_written().await, 250);
    let contacts = f.contacts().await;
    assert_eq!(contacts.len(), 250);
    let c = &contacts["lead7@example.com"];
    assert_eq!(c["firstname"], "Lead 7");
    assert_eq!(c["lead_score"], "87");
    assert_eq!(c["nurture_status"], "exited");

    let second = f.sync().await;
    assert_eq!(second.status, "ok");
    assert_eq!(
        (second.added, second.changed, second.unchanged),
        (0, 0, 250)
    );
    assert_eq!(second.api_calls, 0, "no change, no request");
    assert_eq!(f.records_written().await, 250);
}

#[tokio::test]
async fn only_edited_rows_travel_and_unmapped_edits_do_not() {
    let mut rows = leads(300);
    let f = Fixture::new(&rows).await;
    f.sync().await;

    // 7 mapped edits, 11 edits to a column the sync does not map.
    for l in rows.iter_mut().step_by(40).take(7) {
        l.score += 1;
    }
    for l in rows.iter_mut().skip(1).step_by(25).take(11) {
        l.notes = "edited".into();
    }
    f.write_leads(&rows);
    let before = f.records_written().await;
    let run = f.sync().await;
    assert_eq!((run.added, run.changed, run.removed), (0, 7, 0), "{run:?}");
    assert_eq!(run.unchanged, 293);
    assert_eq!(run.api_calls, 1);
    assert_eq!(
        f.records_written().await - before,
        7,
        "exactly the edited rows were sent"
    );
    assert_eq!(f.contacts().await["lead1@example.com"]["lead_score"], "82");

    let again = f.sync().await;
    assert_eq!(again.api_calls, 0);
}

#[tokio::test]
async fn a_rejected_record_is_reported_kept_unsynced_and_retried() {
    let mut rows = leads(50);
    rows[9].email = "not-an-email".into();
    let f = Fixture::new(&rows).await;

    let first = f.sync().await;
    assert_eq!(first.status, "rejections");
    assert_eq!(first.rejected, 1);
    assert_eq!(first.added, 50);
    let r = &first.rejections[0];
    assert_eq!(r.key, "10");
    assert_eq!(r.category, "VALIDATION_ERROR");
    assert!(
        r.message.contains("not-an-email"),
        "HubSpot's message is kept: {}",
        r.message
    );
    assert_eq!(
        f.contacts().await.len(),
        49,
        "the good rows of the batch were applied"
    );

    // The state store has the rejection with its run, and no fingerprint for the row.
    let state = f.state().await;
    let stored = state.rejections(first.run_id.unwrap()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].key, "10");
    assert_eq!(state.load_fingerprints("leads").await.unwrap().len(), 49);

    // Not synced, so the next run sends it again (and only it).
    let before = f.records_written().await;
    let second = f.sync().await;
    assert_eq!(
        (second.added, second.unchanged, second.rejected),
        (1, 49, 1)
    );
    assert_eq!(second.api_calls, 1);
    assert_eq!(f.records_written().await, before);

    // Fixed at the source: it goes through.
    rows[9].email = "lead10@example.com".into();
    f.write_leads(&rows);
    let third = f.sync().await;
    assert_eq!(
        (third.added, third.rejected, third.status.as_str()),
        (1, 0, "ok")
    );
    assert_eq!(f.contacts().await.len(), 50);
}

#[tokio::test]
async fn a_429_burst_is_waited_out_and_nothing_is_lost() {
    let rows = leads(1000);
    let f = Fixture::with(
        &rows,
        SandboxConfig::ephemeral(),
        &connector_toml(1000, 1, 4),
    )
    .await;
    // The client may send 1000/s; the sandbox allows 3 per 300 ms window.
    f.configure(json!({"burst_per_10s": 3, "window_ms": 300}))
        .await;

    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert!(run.throttled > 0, "the burst was throttled: {run:?}");
    assert_eq!(run.api_calls, 10 + run.throttled, "every 429 was retried");
    assert_eq!(run.added, 1000);
    assert_eq!(f.contacts().await.len(), 1000);
    assert_eq!(f.records_written().await, 1000, "nothing sent twice");
    let stats = f.inspect("/_sandbox/stats").await;
    assert_eq!(stats["throttled"].as_u64(), Some(run.throttled));

    let again = f.sync().await;
    assert_eq!((again.unchanged, again.api_calls), (1000, 0));
}

#[tokio::test]
async fn rows_leaving_the_model_get_the_on_remove_values() {
    let mut rows = leads(20);
    let f = Fixture::new(&rows).await;
    f.sync().await;
    rows.retain(|l| l.id != 5 && l.id != 6);
    f.write_leads(&rows);
    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(run.removed, 2);
    assert_eq!(run.api_calls, 1);
    let contacts = f.contacts().await;
    assert_eq!(
        contacts["lead5@example.com"]["nurture_status"],
        "re-entered"
    );
    assert_eq!(contacts["lead7@example.com"]["nurture_status"], "exited");
    // Forgotten once handled: a third run does nothing.
    let third = f.sync().await;
    assert_eq!((third.removed, third.api_calls), (0, 0));
}

#[tokio::test]
async fn full_resends_every_row() {
    let rows = leads(120);
    let f = Fixture::new(&rows).await;
    f.sync().await;
    let full = f
        .run(RunOptions {
            full: true,
            dry_run: false,
            ..Default::default()
        })
        .await;
    assert_eq!((full.changed, full.api_calls), (120, 2));
    assert_eq!(f.records_written().await, 240);
}

#[tokio::test]
async fn a_plan_sends_and_records_nothing() {
    let rows = leads(30);
    let f = Fixture::new(&rows).await;
    let plan = f.plan().await;
    assert_eq!(plan.status, "planned");
    assert_eq!(
        (plan.added, plan.requests_planned, plan.api_calls),
        (30, 1, 0)
    );
    assert!(!plan.sample.is_empty());
    assert_eq!(f.inspect("/_sandbox/stats").await["requests"], 0);
    assert_eq!(f.sync().await.added, 30, "the plan committed nothing");
}

#[tokio::test]
async fn a_plan_counts_removals_as_the_sync_then_sends_them() {
    let mut rows = leads(250);
    let f = Fixture::new(&rows).await;
    f.sync().await;
    // Three stored rows the CRM never gave an id for (no longer in the model either).
    let state = f.state().await;
    let sync_name = f.project().syncs().next().unwrap().1.name.clone();
    let run = state.begin_run(&sync_name, false).await.unwrap();
    let orphans = BatchOutcome {
        accepted: (901..=903)
            .map(|i: u32| Accepted {
                key: i.to_string(),
                key_hash: handoff::diff::key_hash(&i.to_string()),
                fingerprint: 1,
                record_id: None,
            })
            .collect(),
        ..BatchOutcome::default()
    };
    state.commit_batch(run, &sync_name, &orphans).await.unwrap();
    let counts = RunCounts::default();
    state.finish_run(run, "ok", &counts, None).await.unwrap();
    drop(state);
    rows.retain(|l| l.id > 100);
    f.write_leads(&rows);

    let plan = f.plan().await;
    assert_eq!((plan.removed, plan.unchanged), (103, 150), "{plan:?}");
    assert_eq!(
        plan.requests_planned, 1,
        "100 removals with a record id in batches of 100; the 3 without one send nothing"
    );
    let removes = |s: &handoff::sync::Summary| -> Vec<String> {
        s.sample
            .iter()
            .filter(|c| c.op == "remove")
            .map(|c| c.key.clone())
            .collect()
    };
    let plan_removes = removes(&plan);
    assert_eq!(plan_removes.len(), 10, "{:?}", plan.sample);

    let run = f.sync().await;
    assert_eq!(run.status, "rejections", "{run:?}");
    assert_eq!((run.removed, run.api_calls), (103, plan.requests_planned));
    assert_eq!(run.rejected, 3, "the rows without a record id are reported");
    assert_eq!(
        removes(&run),
        plan_removes,
        "the plan shows what the sync shows"
    );
    let contacts = f.contacts().await;
    assert!(
        (1..=100)
            .all(|i| contacts[&format!("lead{i}@example.com")]["nurture_status"] == "re-entered")
    );
}

#[tokio::test]
async fn invalid_keys_are_counted_and_never_sent() {
    let mut rows = leads(10);
    rows[3].id = 3; // duplicates lead 3
    let f = Fixture::new(&rows).await;
    let mut csv = std::fs::read_to_string(f.path().join("wh/leads.csv")).unwrap();
    csv.push_str(",nokey@example.com,No Key,90,x\n");
    std::fs::write(f.path().join("wh/leads.csv"), csv).unwrap();
    let run = f.sync().await;
    assert_eq!(run.invalid, 3, "two rows with key 3, one NULL key: {run:?}");
    assert_eq!(run.added, 8);
    let contacts = f.contacts().await;
    assert!(!contacts.contains_key("lead3@example.com"));
    assert!(!contacts.contains_key("lead4@example.com"));
    assert!(!contacts.contains_key("nokey@example.com"));
    let keys: Vec<&str> = run.rejections.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["3", "3", "<NULL>"]);
    assert!(run.rejections.iter().all(|r| r.category == "INVALID_KEY"));
}

#[tokio::test]
async fn refused_credentials_stop_the_sync_without_printing_the_token() {
    let rows = leads(10);
    let config = SandboxConfig {
        token: Some("the-right-token".into()),
        ..SandboxConfig::ephemeral()
    };
    let f = Fixture::with(&rows, config, &connector_toml(1000, 1, 1)).await;
    let run = f.sync().await;
    assert_eq!(run.status, "failed");
    let err = run.error.clone().unwrap();
    assert!(err.contains("credentials refused (HTTP 401)"), "{err}");
    assert!(!err.contains("test-token"));
    assert_eq!(run.unsent, 10);
    assert_eq!(
        f.state()
            .await
            .load_fingerprints("leads")
            .await
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a_stopped_run_starts_no_new_batch_and_the_next_run_sends_the_rest() {
    let rows = leads(500);
    let f = Fixture::new(&rows).await;
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    let run = f
        .run(RunOptions {
            stop: Some(stop),
            ..Default::default()
        })
        .await;
    assert_eq!(run.status, "interrupted", "{run:?}");
    assert_eq!((run.unsent, run.api_calls), (500, 0));
    assert!(run.error.unwrap().contains("the next run sends them"));
    let next = f.sync().await;
    assert_eq!((next.added, next.status.as_str()), (500, "ok"));
    assert_eq!(f.records_written().await, 500);
}

#[tokio::test]
async fn a_removed_row_whose_record_was_deleted_in_the_crm_is_forgotten() {
    let mut rows = leads(5);
    let f = Fixture::new(&rows).await;
    f.sync().await;
    let id = f.stored_contacts().await["lead2@example.com"]["id"].clone();
    let r = f
        .http
        .post(format!(
            "{}/crm/v3/objects/contacts/batch/archive",
            f.sandbox.base_url()
        ))
        .bearer_auth("test-token")
        .json(&serde_json::json!({"inputs": [{"id": id}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    rows.retain(|l| l.id != 2);
    f.write_leads(&rows);
    let run = f.sync().await;
    assert_eq!(
        (run.removed, run.rejected, run.status.as_str()),
        (1, 0, "ok"),
        "{run:?}"
    );
    let again = f.sync().await;
    assert_eq!((again.removed, again.api_calls), (0, 0));
}

#[tokio::test]
async fn a_state_from_before_the_xxh64_fingerprints_is_restamped_not_resent() {
    use handoff::diff::{Differ, key_hash, legacy_fingerprint};
    use handoff::state::{Accepted, BatchOutcome, RunCounts};

    let rows = leads(120);
    let f = Fixture::new(&rows).await;
    assert_eq!(f.sync().await.added, 120);

    // Rewrite the state as releases before the XXH64 scheme left it: BLAKE3 fingerprints.
    let project = f.project();
    let (model, sync) = project.syncs().next().expect("one sync");
    let ctx = handoff::cli::open_checked(&project).await.expect("project");
    let renderer = handoff::model::Renderer::new(model, sync);
    let batches = handoff::model::plan(&ctx, model)
        .await
        .expect("model plans")
        .collect()
        .await
        .expect("model runs");
    let (mut legacy, mut current) = (Vec::new(), Vec::new());
    for b in &batches {
        renderer
            .render(b, |row| {
                current.push(Differ::fingerprint_of(&row).expect("valid row"));
                let key = row.key.clone().expect("key");
                legacy.push(Accepted {
                    key_hash: key_hash(&key),
                    key,
                    fingerprint: legacy_fingerprint(
                        row.match_value.as_deref().expect("match"),
                        row.properties
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_deref())),
                    ),
                    record_id: None,
                });
            })
            .expect("render");
    }
    let state = f.state().await;
    let run = state.begin_run(&sync.name, false).await.expect("run");
    let outcome = BatchOutcome {
        accepted: legacy,
        ..BatchOutcome::default()
    };
    state
        .commit_batch(run, &sync.name, &outcome)
        .await
        .expect("commit");
    state
        .finish_run(run, "ok", &RunCounts::default(), None)
        .await
        .expect("finish");

    let before = f.records_written().await;
    let rerun = f.sync().await;
    assert_eq!(
        (rerun.added, rerun.changed, rerun.removed, rerun.unchanged),
        (0, 0, 0, 120),
        "{rerun:?}"
    );
    assert_eq!(rerun.api_calls, 0);
    assert_eq!(f.records_written().await, before, "nothing was resent");
    let stored = state.load_fingerprints(&sync.name).await.expect("load");
    let want: std::collections::HashMap<u64, u64> = current.into_iter().collect();
    assert_eq!(stored, want, "every row now holds its XXH64 fingerprint");
    assert!(
        state
            .synced_rows(&sync.name, &want.keys().copied().collect::<Vec<_>>())
            .await
            .expect("rows")
            .iter()
            .all(|r| r.record_id.is_some()),
        "restamping keeps the CRM's record ids"
    );
}
