//! Loading and validating project directories.

use super::*;

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn env(k: &str) -> Option<String> {
    match k {
        "HUBSPOT_TOKEN" => Some("pat-secret".into()),
        _ => None,
    }
}

const GOOD_CONNECTOR: &str = r#"kind = "hubspot"
base_url = "${HUBSPOT_BASE_URL:-http://127.0.0.1:4010}"
token = "${HUBSPOT_TOKEN}"
"#;

const GOOD_MODEL: &str = r#"primary_key = "lead_id"
schedule = "0 */5 * * * *"

[[sync]]
connector = "hubspot"
object = "contacts"
match = { column = "email", property = "email" }
mapping = { score = "lead_score" }
set = { nurture_status = "exited" }
on_remove = { set = { nurture_status = "re-entered" } }
"#;

#[test]
fn loads_a_good_project() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "handoff.toml",
                "[warehouse]\npath = \"wh\"\n[warehouse.tables.extra]\npath = \"x.csv\"\ndelimiter = \";\"\n",
            ),
            ("connectors/hubspot.toml", GOOD_CONNECTOR),
            ("models/hot.sql", "SELECT 1"),
            ("models/hot.toml", GOOD_MODEL),
        ],
    );
    let p = load_with_env(dir.path(), &env).unwrap();
    assert_eq!(p.state_url, DEFAULT_STATE_URL);
    assert_eq!(p.warehouse.dir, Some(dir.path().join("wh")));
    assert_eq!(p.warehouse.tables[0].csv_delimiter, b';');
    let (m, s) = p.find_sync("hot").unwrap();
    assert_eq!(m.primary_key[0].value, "lead_id");
    assert_eq!(s.match_on, MatchOn::Property("email".into()));
    assert_eq!(s.mapping[0].0.value, "score");
    assert_eq!(s.mapping[0].0.line, 8);
    assert_eq!(
        s.set,
        vec![("nurture_status".to_string(), "exited".to_string())]
    );
    assert_eq!(s.on_remove_set[0].1, "re-entered");
    let c = &p.connectors["hubspot"];
    assert_eq!(c.base_url, "http://127.0.0.1:4010");
    assert_eq!(c.token.expose(), "pat-secret");
    assert_eq!(c.batch_size, 100);
    // The token never shows in debug output.
    assert!(!format!("{c:?}").contains("pat-secret"));
}

#[test]
fn a_broken_project_reports_every_fault_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "handoff.toml",
                "[project]\nname = \"x\"\ncolour = \"blue\"\n\n[state]\nurl = \"mysql://nope\"\n",
            ),
            (
                "connectors/hubspot.toml",
                "kind = \"hubspot\"\nbase_url = \"${HUBSPOT_BASE_URL:-http://127.0.0.1:4010}\"\ntoken = \"${MISSING_TOKEN}\"\nbatch_size = 500\n",
            ),
            (
                "connectors/broken.toml",
                "kind = \"hubspot\"\nbase_url = [1, 2\n",
            ),
            ("models/a.sql", "SELECT 1 AS lead_id"),
            (
                "models/a.toml",
                "primary_key = \"lead_id\"\nschedule = \"every tuesday\"\n\n[[sync]]\nconnector = \"salesforce\"\nobject = \"contacts\"\nmatch = { column = \"email\", property = \"email\" }\nmapping = { score = \"lead_score\" }\nmode = \"sideways\"\nextra_key = 1\n",
            ),
            ("models/orphan.toml", GOOD_MODEL),
        ],
    );
    let errs = load_with_env(dir.path(), &env).unwrap_err().0;
    let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let expect = [
        "handoff.toml:3: unknown key `colour` in [project]",
        "handoff.toml:6: `state.url` must start with sqlite:// or postgres://",
        "connectors/broken.toml:2: TOML syntax error",
        "connectors/hubspot.toml:3: `token` references environment variable MISSING_TOKEN which is not set",
        "connectors/hubspot.toml:4: `batch_size` must be between 1 and 100, found 500",
        "models/a.toml:2: `schedule` \"every tuesday\" is not a valid cron expression",
        "models/a.toml:9: unknown mode \"sideways\"",
        "models/a.toml:10: unknown key `extra_key` in [[sync]]",
        "models/orphan.toml: model `orphan` has no SQL",
    ];
    for want in expect {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "missing {want:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        got.len(),
        expect.len(),
        "unexpected extra errors:\n{}",
        got.join("\n")
    );
}

#[test]
fn unknown_connector_is_reported_at_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("handoff.toml", ""),
            ("connectors/hubspot.toml", GOOD_CONNECTOR),
            ("models/m.sql", "SELECT 1"),
            (
                "models/m.toml",
                &GOOD_MODEL.replace("connector = \"hubspot\"", "connector = \"hubspot_eu\""),
            ),
        ],
    );
    let errs = load_with_env(dir.path(), &env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].file, PathBuf::from("models/m.toml"));
    assert_eq!(errs[0].line, 4);
    assert!(
        errs[0].message.contains("unknown connector \"hubspot_eu\""),
        "{}",
        errs[0].message
    );
    assert!(errs[0].message.contains("known: hubspot"));
}

#[test]
fn a_literal_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("handoff.toml", ""),
            (
                "connectors/hubspot.toml",
                "kind = \"hubspot\"\nbase_url = \"http://x\"\ntoken = \"pat-na1-123\"\n",
            ),
            ("models/m.sql", "SELECT 1"),
            ("models/m.toml", GOOD_MODEL),
        ],
    );
    let errs = load_with_env(dir.path(), &env).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .to_string()
            .starts_with("connectors/hubspot.toml:3: `token` must come from the environment")
    );
    assert!(!errs[0].to_string().contains("pat-na1-123"));
}

#[test]
fn duplicate_properties_and_sync_names() {
    let dir = tempfile::tempdir().unwrap();
    let two = r#"primary_key = ["a", "b"]

[[sync]]
name = "s"
connector = "hubspot"
object = "contacts"
match = { column = "email", property = "email" }
mapping = { x = "p", y = "p" }

[[sync]]
connector = "hubspot"
object = "contacts"
match = { column = "email", property = "email" }
set = { q = "1" }
"#;
    write(
        dir.path(),
        &[
            ("handoff.toml", ""),
            ("connectors/hubspot.toml", GOOD_CONNECTOR),
            ("models/m.sql", "SELECT 1"),
            ("models/m.toml", two),
        ],
    );
    let got: Vec<String> = load_with_env(dir.path(), &env)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(
        got.iter()
            .any(|e| e.starts_with("models/m.toml:8: property \"p\" is mapped twice")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|e| e.starts_with("models/m.toml:10: model `m` has 2 syncs: give each a `name`")),
        "{got:?}"
    );
}

#[test]
fn missing_project_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let errs = load_with_env(dir.path(), &env).unwrap_err().0;
    assert_eq!(errs.len(), 1);
    assert!(errs[0].to_string().contains("is this a handoff project?"));
}

#[test]
fn modes_tasks_owners_and_tiers_load() {
    let dir = tempfile::tempdir().unwrap();
    let connector = format!(
        "{GOOD_CONNECTOR}tier = \"professional\"\naccount_timezone = \"America/New_York\"\n[rate_limit]\ndaily = 700000\n"
    );
    let model = r#"primary_key = "lead_id"

[[sync]]
name = "deals"
connector = "hubspot"
object = "deals"
mode = "create"
mapping = { name = "dealname", rep = "hubspot_owner_id" }
owner_policy = "overwrite"
handoff_timestamp = "handoff_date"

[sync.task]
subject = "Call {{name}} about {{ dealname }} {not a placeholder}"
due = "90m"
priority = "low"

[[sync]]
name = "by_id"
connector = "hubspot"
object = "contacts"
mode = "update"
match = { column = "hs_id", property = "hs_object_id" }
mapping = { name = "firstname" }
"#;
    write(
        dir.path(),
        &[
            ("handoff.toml", ""),
            ("connectors/hubspot.toml", &connector),
            ("models/m.sql", "SELECT 1"),
            ("models/m.toml", model),
        ],
    );
    let p = load_with_env(dir.path(), &env).unwrap();
    let c = &p.connectors["hubspot"];
    assert_eq!(c.tier.as_deref(), Some("professional"));
    assert_eq!(
        c.budget,
        RateBudget {
            requests: 190,
            per_secs: 10,
            daily: 700_000,
            search_per_second: 4
        }
    );
    assert_eq!(c.concurrency, 19, "enough in flight for the tier's rate");
    assert_eq!(c.account_timezone, chrono_tz::America::New_York);
    let (_, deals) = p.find_sync("deals").unwrap();
    assert_eq!(deals.mode, SyncMode::Create);
    assert_eq!(deals.match_on, MatchOn::Nothing);
    assert_eq!(deals.match_column.value, "lead_id", "falls back to the key");
    assert_eq!(deals.owner_policy, OwnerPolicy::Overwrite);
    assert!(deals.sets_owner());
    assert_eq!(deals.handoff_timestamp.as_deref(), Some("handoff_date"));
    let task = deals.task.as_ref().unwrap();
    assert_eq!(task.association_type_id, 216);
    assert_eq!(
        (
            task.due_after_secs,
            task.priority.as_str(),
            task.task_type.as_str()
        ),
        (5400, "LOW", "CALL")
    );
    assert_eq!(task.key_property, DEFAULT_TASK_KEY_PROPERTY);
    let props = vec![
        ("dealname".to_string(), Some("Big".to_string())),
        ("hubspot_owner_id".to_string(), None),
    ];
    assert_eq!(
        task.subject.render(&props),
        "Call Big about Big {not a placeholder}"
    );
    let (_, by_id) = p.find_sync("by_id").unwrap();
    assert_eq!(
        (by_id.mode, &by_id.match_on),
        (SyncMode::Update, &MatchOn::RecordId)
    );
    assert_eq!(by_id.owner_policy, OwnerPolicy::FillEmpty);
}

#[test]
fn impossible_modes_and_tasks_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = r#"primary_key = "lead_id"

[[sync]]
name = "a"
connector = "hubspot"
object = "contacts"
mode = "upsert"
match = { column = "id", property = "hs_object_id" }
mapping = { name = "firstname" }

[[sync]]
name = "b"
connector = "hubspot"
object = "leads"
mode = "mirror"
mapping = { name = "hs_lead_name" }
on_remove = { set = { x = "y" } }
task = { subject = "Call {{nobody}}" }

[[sync]]
name = "c"
connector = "hubspot"
object = "tickets"
mode = "create"
match = { column = "email", property = "email" }
mapping = { name = "firstname" }
handoff_timestamp = "firstname"
task = { subject = "x", due = "soon", type = "FAX" }
"#;
    write(
        dir.path(),
        &[
            ("handoff.toml", ""),
            (
                "connectors/hubspot.toml",
                &format!("{GOOD_CONNECTOR}tier = \"platinum\"\n"),
            ),
            ("models/m.sql", "SELECT 1"),
            ("models/m.toml", model),
        ],
    );
    let errs = load_with_env(dir.path(), &env).unwrap_err().0;
    let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let expect = [
        "connectors/hubspot.toml:4: unknown tier \"platinum\"",
        "models/m.toml:7: mode \"upsert\" needs a unique property",
        "models/m.toml:15: mode \"mirror\" archives the records",
        "models/m.toml:18: tasks can be attached to contacts, companies or deals, not \"leads\"",
        "models/m.toml:18: `task.subject`: {{nobody}} is neither a mapped column",
        "models/m.toml:23: object \"tickets\" is not supported",
        "models/m.toml:24: mode \"create\" never matches existing records",
        "models/m.toml:27: handoff_timestamp property \"firstname\" is also mapped or set",
        "models/m.toml:28: `task.due` must be a duration",
        "models/m.toml:28: `task.type` must be one of CALL, EMAIL, TODO",
    ];
    for want in expect {
        assert!(
            got.iter().any(|g| g.starts_with(want)),
            "missing {want:?} in:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(
        got.len(),
        expect.len(),
        "unexpected extra errors:\n{}",
        got.join("\n")
    );
}
