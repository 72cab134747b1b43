//! The HubSpot connector against the sandbox over real HTTP: modes, matching, owners,
//! tasks, nurture flags, the daily limit and batches HubSpot refuses whole.

use std::collections::BTreeMap;

use handoff::sandbox::{Faults, SandboxConfig, Seed};
use serde_json::{Value, json};

use crate::common::{Fixture, Lead, connector_toml, leads};

fn fast() -> String {
    connector_toml(1000, 1, 4)
}

/// A sandbox that already holds contacts with these emails (and properties).
fn seeded(contacts: &[(&str, &[(&str, &str)])]) -> SandboxConfig {
    let mut config = SandboxConfig::ephemeral();
    config.seed = Seed {
        contacts: contacts
            .iter()
            .map(|(email, props)| {
                let mut m: BTreeMap<String, String> = props
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                m.insert("email".into(), email.to_string());
                m
            })
            .collect(),
        ..Seed::demo()
    };
    config
}

pub(crate) fn model(sync: &str) -> String {
    format!("primary_key = \"lead_id\"\n\n[[sync]]\nconnector = \"hubspot\"\n{sync}\n")
}

/// Leads whose `notes` column holds an owner (an email or an id).
pub(crate) fn owned(n: u32, owner: impl Fn(u32) -> String) -> Vec<Lead> {
    leads(n)
        .into_iter()
        .map(|mut l| {
            l.notes = owner(l.id);
            l
        })
        .collect()
}

#[tokio::test]
async fn update_mode_never_creates_and_names_the_missing_record() {
    let rows = leads(5);
    let config = seeded(&[("lead1@example.com", &[]), ("lead2@example.com", &[])]);
    let m = model(
        r#"object = "contacts"
mode = "update"
match = { column = "email", property = "email" }
mapping = { name = "firstname" }"#,
    );
    let f = Fixture::with_model(&rows, config, &fast(), &m).await;
    let run = f.sync().await;
    assert_eq!(run.status, "rejections", "{run:?}");
    assert_eq!(run.rejected, 3);
    let missing: Vec<&str> = run.rejections.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(missing, ["3", "4", "5"]);
    assert!(
        run.rejections
            .iter()
            .all(|r| r.category == "OBJECT_NOT_FOUND"),
        "{:?}",
        run.rejections
    );
    let contacts = f.contacts().await;
    assert_eq!(contacts.len(), 2, "nothing was created");
    assert_eq!(contacts["lead1@example.com"]["firstname"], "Lead 1");
}

#[tokio::test]
async fn update_by_record_id_writes_to_the_named_record() {
    let config = seeded(&[("a@example.com", &[]), ("b@example.com", &[])]);
    let m = model(
        r#"object = "contacts"
mode = "update"
match = { column = "notes", property = "hs_object_id" }
mapping = { name = "firstname" }"#,
    );
    let f = Fixture::with_model(&[], config, &fast(), &m).await;
    let stored = f.stored_contacts().await;
    let id_of = |email: &str| stored[email]["id"].as_str().unwrap().to_string();
    let mut rows = leads(2);
    rows[0].notes = id_of("b@example.com");
    rows[1].notes = id_of("a@example.com");
    f.write_leads(&rows);
    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    let contacts = f.contacts().await;
    assert_eq!(contacts["b@example.com"]["firstname"], "Lead 1");
    assert_eq!(contacts["a@example.com"]["firstname"], "Lead 2");
}

#[tokio::test]
async fn create_mode_creates_once_then_updates_the_record_it_made() {
    let mut rows = leads(5);
    let m = model(
        r#"object = "deals"
mode = "create"
mapping = { name = "dealname", score = "amount" }"#,
    );
    let f = Fixture::with_model(&rows, SandboxConfig::ephemeral(), &fast(), &m).await;
    let first = f.sync().await;
    assert_eq!((first.status.as_str(), first.added), ("ok", 5), "{first:?}");
    let deals = f.objects("deals").await;
    assert_eq!(deals.len(), 5);
    let id_of_lead_3 = deals
        .iter()
        .find(|d| d["properties"]["dealname"] == "Lead 3")
        .unwrap()["id"]
        .clone();

    rows[2].score = 7;
    rows[2].name = "Renamed".into();
    f.write_leads(&rows);
    let second = f.sync().await;
    assert_eq!(
        (second.status.as_str(), second.changed),
        ("ok", 1),
        "{second:?}"
    );
    let deals = f.objects("deals").await;
    assert_eq!(deals.len(), 5, "the change updated, it did not create");
    let d = deals.iter().find(|d| d["id"] == id_of_lead_3).unwrap();
    assert_eq!(d["properties"]["dealname"], "Renamed");
    assert_eq!(d["properties"]["amount"], "7");
}

#[tokio::test]
async fn mirror_archives_only_the_records_handoff_wrote() {
    let rows = leads(5);
    let config = seeded(&[("someone-else@example.com", &[])]);
    let m = model(
        r#"object = "contacts"
mode = "mirror"
match = { column = "email", property = "email" }
mapping = { name = "firstname" }"#,
    );
    let f = Fixture::with_model(&rows, config, &fast(), &m).await;
    assert_eq!(f.sync().await.status, "ok");
    assert_eq!(f.contacts().await.len(), 6);

    f.write_leads(&rows[..3]);
    let run = f.sync().await;
    assert_eq!((run.status.as_str(), run.removed), ("ok", 2), "{run:?}");
    let live = f.contacts().await;
    let emails: Vec<&str> = live.keys().map(String::as_str).collect();
    assert_eq!(
        emails,
        [
            "lead1@example.com",
            "lead2@example.com",
            "lead3@example.com",
            "someone-else@example.com"
        ]
    );
    let archived = f.inspect("/_sandbox/contacts?archived=true").await;
    assert_eq!(archived["total"], 2);
    // Forgotten once archived: nothing more to do.
    assert_eq!(f.sync().await.api_calls, 0);
}

#[tokio::test]
async fn a_changed_email_moves_the_same_contact() {
    let mut rows = leads(3);
    let f = Fixture::new(&rows).await;
    f.sync().await;
    let before = f.stored_contacts().await;
    let id = before["lead2@example.com"]["id"].clone();

    rows[1].email = "lead2-new@example.com".into();
    f.write_leads(&rows);
    let run = f.sync().await;
    assert_eq!((run.status.as_str(), run.changed), ("ok", 1), "{run:?}");
    let after = f.stored_contacts().await;
    assert_eq!(after.len(), 3, "no second contact for the same lead");
    assert_eq!(after["lead2-new@example.com"]["id"], id);
}

const OWNER_SYNC: &str = r#"object = "contacts"
match = { column = "email", property = "email" }
mapping = { name = "firstname", notes = "hubspot_owner_id" }"#;

#[tokio::test]
async fn owner_emails_resolve_and_unknown_or_archived_owners_are_rejected() {
    let rows = owned(5, |i| match i {
        1 => "rep1@demo.handoff.dev".into(),
        2 => "REP2@Demo.Handoff.dev".into(),
        3 => "103".into(),
        4 => "nobody@example.com".into(),
        _ => "rep9@demo.handoff.dev".into(),
    });
    let f = Fixture::with_model(
        &rows,
        SandboxConfig::ephemeral(),
        &fast(),
        &model(OWNER_SYNC),
    )
    .await;
    let run = f.sync().await;
    assert_eq!(run.status, "rejections", "{run:?}");
    let contacts = f.contacts().await;
    assert_eq!(contacts["lead1@example.com"]["hubspot_owner_id"], "101");
    assert_eq!(contacts["lead2@example.com"]["hubspot_owner_id"], "102");
    assert_eq!(contacts["lead3@example.com"]["hubspot_owner_id"], "103");
    assert!(
        !contacts.contains_key("lead4@example.com"),
        "never a silent blank owner"
    );
    assert!(!contacts.contains_key("lead5@example.com"));
    let by_key: BTreeMap<&str, &str> = run
        .rejections
        .iter()
        .map(|r| (r.key.as_str(), r.message.as_str()))
        .collect();
    assert!(by_key["4"].contains("nobody@example.com"), "{by_key:?}");
    assert!(by_key["5"].contains("rep9@demo.handoff.dev") && by_key["5"].contains("archived"));
    assert!(run.rejections.iter().all(|r| r.category == "INVALID_OWNER"));
}

#[tokio::test]
async fn fill_empty_keeps_an_existing_owner_and_overwrite_replaces_it() {
    for (policy, expected, kept) in [("fill_empty", "105", 1), ("overwrite", "101", 0)] {
        let rows = owned(3, |_| "rep1@demo.handoff.dev".into());
        let config = seeded(&[("lead1@example.com", &[("hubspot_owner_id", "105")])]);
        let m = model(&format!("{OWNER_SYNC}\nowner_policy = \"{policy}\""));
        let f = Fixture::with_model(&rows, config, &fast(), &m).await;
        let run = f.sync().await;
        assert_eq!(run.status, "ok", "{policy}: {run:?}");
        assert_eq!(run.owners_kept, kept, "{policy}");
        let contacts = f.contacts().await;
        assert_eq!(
            contacts["lead1@example.com"]["hubspot_owner_id"], expected,
            "{policy}"
        );
        assert_eq!(contacts["lead1@example.com"]["firstname"], "Lead 1");
        assert_eq!(contacts["lead2@example.com"]["hubspot_owner_id"], "101");
    }
}

pub(crate) const TASK_SYNC: &str = r#"object = "contacts"
match = { column = "email", property = "email" }
mapping = { name = "firstname", score = "lead_score", notes = "hubspot_owner_id" }
set = { nurture_status = "exited" }
on_remove = { set = { nurture_status = "re-entered" } }
handoff_timestamp = "handoff_date"
task = { subject = "Call {{name}}", body = "Score {{lead_score}}, handed off by handoff", due = "2h", priority = "high", type = "call" }"#;

/// Tasks by the contact id they are attached to.
pub(crate) async fn tasks_by_contact(f: &Fixture) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in f.objects("tasks").await {
        for a in t["associations"].as_array().cloned().unwrap_or_default() {
            assert_eq!(a["type_id"], 204, "{t}");
            out.entry(a["id"].as_str().unwrap().to_string())
                .or_default()
                .push(t.clone());
        }
    }
    out
}

#[tokio::test]
async fn each_handed_off_contact_gets_one_task_and_the_nurture_flags() {
    let mut rows = owned(30, |i| format!("rep{}@demo.handoff.dev", 1 + i % 8));
    let f = Fixture::with_model(
        &rows,
        SandboxConfig::ephemeral(),
        &fast(),
        &model(TASK_SYNC),
    )
    .await;
    let started = chrono::Utc::now();
    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!((run.tasks_created, run.tasks_pending), (30, 0));

    let contacts = f.stored_contacts().await;
    let tasks = tasks_by_contact(&f).await;
    assert_eq!(tasks.len(), 30);
    let c = &contacts["lead7@example.com"];
    assert_eq!(c["properties"]["nurture_status"], "exited");
    let handoff: chrono::DateTime<chrono::Utc> = c["properties"]["handoff_date"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(handoff >= started - chrono::Duration::seconds(1));
    let t = &tasks[c["id"].as_str().unwrap()];
    assert_eq!(t.len(), 1);
    let p = &t[0]["properties"];
    assert_eq!(p["hs_task_subject"], "Call Lead 7");
    assert_eq!(p["hs_task_body"], "Score 87, handed off by handoff");
    assert_eq!(p["hs_task_priority"], "HIGH");
    assert_eq!(p["hs_task_type"], "CALL");
    assert_eq!(p["hs_task_status"], "NOT_STARTED");
    assert_eq!(p["hubspot_owner_id"], c["properties"]["hubspot_owner_id"]);
    let due: chrono::DateTime<chrono::Utc> = p["hs_timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!((due - handoff).num_seconds(), 7200);

    // A change is not a new handoff: no task, and the handoff time stays.
    rows[6].score = 99;
    f.write_leads(&rows);
    let run = f.sync().await;
    assert_eq!((run.changed, run.tasks_created), (1, 0), "{run:?}");
    let again = f.contacts().await;
    assert_eq!(again["lead7@example.com"]["lead_score"], "99");
    assert_eq!(
        again["lead7@example.com"]["handoff_date"],
        c["properties"]["handoff_date"]
    );
    assert_eq!(f.objects("tasks").await.len(), 30);

    // Leaving the model re-enters nurture.
    f.write_leads(&rows[1..]);
    let run = f.sync().await;
    assert_eq!(run.removed, 1);
    assert_eq!(
        f.contacts().await["lead1@example.com"]["nurture_status"],
        "re-entered"
    );
}

#[tokio::test]
async fn connections_dropped_after_the_task_was_made_never_double_it() {
    let rows = owned(300, |i| format!("rep{}@demo.handoff.dev", 1 + i % 8));
    let mut config = SandboxConfig::ephemeral();
    config.faults = Faults {
        seed: 7,
        drop_after_apply_rate: 0.3,
        ..Faults::default()
    };
    // The sandbox's search sees a task at once; HubSpot's may take seconds.
    let connector =
        connector_toml(1000, 1, 4).replace("[rate_limit]", "search_settle_ms = 0\n\n[rate_limit]");
    let f = Fixture::with_model(&rows, config, &connector, &model(TASK_SYNC)).await;
    let mut created = 0;
    for _ in 0..5 {
        let run = f.sync().await;
        created += run.tasks_created;
        if run.tasks_pending == 0 && run.status == "ok" {
            break;
        }
    }
    let stats = f.inspect("/_sandbox/stats").await;
    assert!(
        stats["by_endpoint"]["POST /crm/v3/objects/tasks/batch/create"]["dropped"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "the fault hit task creates: {stats}"
    );
    let dups = f.inspect("/_sandbox/duplicates").await;
    assert_eq!(dups["total"], 0, "{dups}");
    let tasks = tasks_by_contact(&f).await;
    assert_eq!(tasks.len(), 300);
    assert!(tasks.values().all(|t| t.len() == 1));
    assert_eq!(created, 300);
    assert_eq!(f.contacts().await.len(), 300);
}

#[tokio::test]
async fn the_daily_limit_pauses_the_account_and_says_until_when() {
    let rows = leads(500);
    let mut config = SandboxConfig::ephemeral();
    config.daily_limit = 2;
    let f = Fixture::with(&rows, config, &fast()).await;
    let run = f.sync().await;
    assert_eq!(run.status, "paused", "{run:?}");
    let err = run.error.clone().unwrap();
    assert!(
        err.contains("daily API limit") && err.contains("paused until"),
        "{err}"
    );
    assert_eq!(
        f.contacts().await.len(),
        200,
        "the two batches before the limit landed"
    );

    let state = f.state().await;
    let recorded = state.run(run.run_id.unwrap()).await.unwrap();
    assert_eq!(recorded.status, "paused");
    assert!(recorded.error.unwrap().contains("paused until"));
}

#[tokio::test]
async fn a_conflict_is_isolated_by_splitting_the_batch() {
    let rows = leads(40);
    let config = seeded(&[("lead17@example.com", &[])]);
    let m = model(
        r#"object = "contacts"
mode = "create"
mapping = { email = "email", name = "firstname" }"#,
    );
    let f = Fixture::with_model(&rows, config, &fast(), &m).await;
    let run = f.sync().await;
    assert_eq!(run.status, "rejections", "{run:?}");
    assert_eq!(run.rejected, 1);
    assert_eq!(run.rejections[0].key, "17");
    assert_eq!(run.rejections[0].category, "CONFLICT");
    assert_eq!(
        f.contacts().await.len(),
        40,
        "39 created beside the one that existed"
    );
    // 40 → 20 + 20 → the bad half down to one row: a handful of requests, not 40.
    assert!(run.api_calls <= 12, "{}", run.api_calls);
}

#[tokio::test]
async fn a_property_the_account_lacks_stops_the_sync_with_its_name() {
    let rows = leads(250);
    let m = model(
        r#"object = "contacts"
match = { column = "email", property = "email" }
mapping = { name = "firstname", score = "lead_scor" }"#,
    );
    let f = Fixture::with_model(&rows, SandboxConfig::ephemeral(), &fast(), &m).await;
    let run = f.sync().await;
    assert_eq!(run.status, "failed", "{run:?}");
    let err = run.error.unwrap();
    assert!(
        err.contains("lead_scor") && err.contains("PROPERTY_DOESNT_EXIST"),
        "{err}"
    );
    assert!(
        run.api_calls <= 4,
        "no bisection of a setup error: {}",
        run.api_calls
    );
    assert_eq!(f.contacts().await.len(), 0);
}

#[tokio::test]
async fn the_connector_corrects_its_budget_from_the_headers() {
    // The file says 1000 per second; the sandbox enforces (and reports) 20 per second.
    let rows = leads(2_500);
    let mut config = SandboxConfig::ephemeral();
    config.burst_per_10s = 20;
    let f = Fixture::with(&rows, config, &connector_toml(1000, 1, 8)).await;
    f.configure(json!({ "window_ms": 1000 })).await;
    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(f.contacts().await.len(), 2_500);
    // 25 requests: the first window's 20 may be spent at the configured pace before the
    // headers arrive, but after that the connector keeps to the reported rate.
    assert!(run.throttled <= 3, "throttled {}", run.throttled);
}

#[tokio::test]
async fn owners_are_read_across_every_page() {
    // 250 owners: three pages of /crm/v3/owners; the ones assigned are on the last.
    let mut config = SandboxConfig::ephemeral();
    let template = config.seed.owners[0].clone();
    config.seed.owners = (0..250)
        .map(|i| handoff::sandbox::Owner {
            id: (5_000 + i).to_string(),
            email: format!("owner{i}@corp.example"),
            user_id: 70_000 + i,
            archived: i == 249,
            ..template.clone()
        })
        .collect();
    let rows = owned(3, |i| match i {
        1 => "owner230@corp.example".into(),
        2 => "5240".into(),
        _ => "owner249@corp.example".into(),
    });
    let f = Fixture::with_model(&rows, config, &fast(), &model(OWNER_SYNC)).await;
    let run = f.sync().await;
    let contacts = f.contacts().await;
    assert_eq!(contacts["lead1@example.com"]["hubspot_owner_id"], "5230");
    assert_eq!(contacts["lead2@example.com"]["hubspot_owner_id"], "5240");
    assert_eq!(run.rejected, 1, "{run:?}");
    assert!(
        run.rejections[0].message.contains("archived"),
        "{:?}",
        run.rejections
    );
}
