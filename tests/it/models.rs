//! Models on DataFusion over real files: the seed query, read-only enforcement, errors with positions.

use chrono::Utc;
use handoff::cli;
use handoff::demo::data;
use handoff::project;

use crate::common::{Fixture, leads, write};

/// The mission's query, exactly as the seed states it.
const SEED_QUERY: &str = "SELECT lead_id, email, last_event_time, lead_score FROM marketing_leads WHERE lead_score > 80 AND owner_id IS NULL AND last_event_time > CURRENT_DATE - INTERVAL '1 hour'";

#[tokio::test]
async fn the_seed_query_runs_verbatim_as_a_model() {
    let f = Fixture::new(&[]).await;
    let spec = data::Spec {
        leads: 5000,
        seed: 1,
        now: Utc::now(),
        changes: None,
    };
    data::write_leads(&f.path().join("wh/marketing_leads.parquet"), &spec).unwrap();
    std::fs::remove_file(f.path().join("wh/leads.csv")).unwrap();
    write(f.path(), "models/leads.sql", SEED_QUERY);
    write(
        f.path(),
        "models/leads.toml",
        "primary_key = \"lead_id\"\n[[sync]]\nconnector = \"hubspot\"\nobject = \"contacts\"\nmatch = { column = \"email\", property = \"email\" }\nmapping = { lead_score = \"lead_score\", last_event_time = \"last_event_time\" }\n",
    );
    let plan = f.plan().await;
    // About 19% score > 80, 70% unowned, 12% active in the last hour: ~80 of 5000.
    assert!(plan.added > 20 && plan.added < 250, "{plan:?}");
    assert_eq!(plan.invalid, 0);
    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(run.added, plan.added);
    let contacts = f.contacts().await;
    assert_eq!(contacts.len() as u64, run.added);
    for c in contacts.values() {
        let score: i32 = c["lead_score"].as_str().unwrap().parse().unwrap();
        assert!(score > 80);
    }
}

async fn check_errors(f: &Fixture) -> Vec<String> {
    let project = f.project();
    match cli::open_checked(&project).await {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

#[tokio::test]
async fn models_are_read_only() {
    let f = Fixture::new(&leads(3)).await;
    for sql in [
        "CREATE TABLE stolen AS SELECT * FROM leads",
        "INSERT INTO leads VALUES (9, 'x@y.z', 'x', 1, 'n')",
        "COPY leads TO '/tmp/handoff-copy-test.csv'",
        "DROP TABLE leads",
        "SET datafusion.execution.batch_size = 1",
    ] {
        write(f.path(), "models/leads.sql", sql);
        let errs = check_errors(&f).await;
        assert_eq!(errs.len(), 1, "{sql}: {errs:?}");
        assert!(
            errs[0].starts_with("models/leads.sql:"),
            "{sql}: {}",
            errs[0]
        );
        assert!(
            errs[0].contains("read-only") || errs[0].contains("not supported"),
            "{sql}: {}",
            errs[0]
        );
    }
    assert!(!std::path::Path::new("/tmp/handoff-copy-test.csv").exists());
}

#[tokio::test]
async fn sql_errors_point_at_the_model_file_line_and_column() {
    let f = Fixture::new(&leads(3)).await;
    write(
        f.path(),
        "models/leads.sql",
        "SELECT lead_id, email,\n       nmae, score\nFROM leads",
    );
    let errs = check_errors(&f).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("models/leads.sql:2:8: "), "{}", errs[0]);
    assert!(errs[0].contains("nmae"), "{}", errs[0]);

    write(
        f.path(),
        "models/leads.sql",
        "SELECT lead_id\nFROM leads\nWHERE score >> 3 AND (",
    );
    let errs = check_errors(&f).await;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("models/leads.sql:3:"), "{}", errs[0]);

    write(f.path(), "models/leads.sql", "SELECT * FROM no_such_table");
    let errs = check_errors(&f).await;
    assert!(errs[0].starts_with("models/leads.sql:1:"), "{}", errs[0]);
    assert!(errs[0].contains("no_such_table"), "{}", errs[0]);
}

#[tokio::test]
async fn columns_the_config_names_must_exist_in_the_result() {
    let f = Fixture::new(&leads(3)).await;
    write(
        f.path(),
        "models/leads.sql",
        "SELECT lead_id AS id, email FROM leads",
    );
    let errs = check_errors(&f).await;
    let want = [
        "models/leads.toml:1: primary key column `lead_id` is not in the result",
        "models/leads.toml:7: mapped column `name` is not in the result",
        "models/leads.toml:7: mapped column `score` is not in the result",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[tokio::test]
async fn csv_ndjson_and_parquet_tables_register_from_files_and_directories() {
    let f = Fixture::new(&leads(4)).await;
    // NDJSON in a directory of two files; Parquet as a single file declared explicitly.
    write(
        f.path(),
        "wh/scores/part-1.ndjson",
        "{\"lead_id\": 1, \"bonus\": 5}\n{\"lead_id\": 2, \"bonus\": 7}\n",
    );
    write(
        f.path(),
        "wh/scores/part-2.ndjson",
        "{\"lead_id\": 3, \"bonus\": 9}\n",
    );
    let spec = data::Spec {
        leads: 10,
        seed: 3,
        now: Utc::now(),
        changes: None,
    };
    data::write_reps(&f.path().join("elsewhere/reps.parquet")).unwrap();
    data::write_leads(&f.path().join("elsewhere/ignored.parquet"), &spec).unwrap();
    write(
        f.path(),
        "handoff.toml",
        "[state]\nurl = \"sqlite://.handoff/state.db\"\n[warehouse]\npath = \"wh\"\n[warehouse.tables.owners]\npath = \"elsewhere/reps.parquet\"\n",
    );
    write(
        f.path(),
        "models/leads.sql",
        "SELECT l.lead_id, l.email, l.name, l.score + COALESCE(s.bonus, 0) AS score, o.email AS notes\nFROM leads l LEFT JOIN scores s ON s.lead_id = l.lead_id JOIN owners o ON o.rep_id = l.lead_id",
    );
    let run = f.sync().await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(run.added, 4);
    let contacts = f.contacts().await;
    assert_eq!(contacts["lead1@example.com"]["lead_score"], "86");
    assert_eq!(contacts["lead4@example.com"]["lead_score"], "84");
}

#[tokio::test]
async fn the_shipped_project_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = project::load_with_env(root, &|_| None)
        .expect("the repository's project loads with no environment");
    assert_eq!(p.connectors["hubspot"].base_url, "http://127.0.0.1:4010");
    let (_, sync) = p.find_sync("hot_leads").expect("hot_leads sync");
    assert_eq!(sync.object, "contacts");
    assert!(
        sync.mapping
            .iter()
            .any(|(_, prop)| prop == "hubspot_owner_id")
    );
    assert!(
        sync.set
            .iter()
            .any(|(prop, v)| prop == "nurture_status" && v == "exited")
    );
    // The model keeps the seed's WHERE clause verbatim.
    let sql = &p.models[0].sql.text;
    assert!(sql.contains("FROM marketing_leads WHERE lead_score > 80 AND owner_id IS NULL AND last_event_time > CURRENT_DATE - INTERVAL '1 hour'"));
}
