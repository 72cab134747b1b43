//! Fixtures: a temporary project with a CSV warehouse, and a sandbox to sync it to.

use std::path::{Path, PathBuf};

use handoff::cli;
use handoff::project::{self, Project};
use handoff::sandbox::{Sandbox, SandboxConfig};
use handoff::state::StateStore;
use handoff::sync::{RunOptions, Summary};
use serde_json::Value;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
}

/// A lead row of the fixture's CSV warehouse.
#[derive(Clone)]
pub struct Lead {
    pub id: u32,
    pub email: String,
    pub name: String,
    pub score: u32,
    /// Not mapped: changing it must not cause a write.
    pub notes: String,
}

pub fn leads(n: u32) -> Vec<Lead> {
    (1..=n)
        .map(|i| Lead {
            id: i,
            email: format!("lead{i}@example.com"),
            name: format!("Lead {i}"),
            score: 80 + i % 20,
            notes: "first".into(),
        })
        .collect()
}

pub const MODEL_SQL: &str =
    "SELECT lead_id, email, name, score, notes FROM leads WHERE score >= 0\n";

pub const MODEL_TOML: &str = r#"primary_key = "lead_id"

[[sync]]
connector = "hubspot"
object = "contacts"
match = { column = "email", property = "email" }
mapping = { name = "firstname", score = "lead_score" }
set = { nurture_status = "exited" }
on_remove = { set = { nurture_status = "re-entered" } }
"#;

pub fn connector_toml(requests: u32, per_secs: u32, concurrency: u32) -> String {
    format!(
        r#"kind = "hubspot"
base_url = "${{HUBSPOT_BASE_URL}}"
token = "${{HUBSPOT_TOKEN}}"
concurrency = {concurrency}
max_retries = 20

[rate_limit]
requests = {requests}
per_secs = {per_secs}
"#
    )
}

impl Fixture {
    pub async fn new(rows: &[Lead]) -> Fixture {
        Self::with(
            rows,
            SandboxConfig::ephemeral(),
            &connector_toml(1000, 1, 4),
        )
        .await
    }

    pub async fn with(rows: &[Lead], config: SandboxConfig, connector: &str) -> Fixture {
        Self::with_model(rows, config, connector, MODEL_TOML).await
    }

    /// A fixture whose model file (`models/leads.toml`) is `model_toml`.
    pub async fn with_model(
        rows: &[Lead],
        config: SandboxConfig,
        connector: &str,
        model_toml: &str,
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "handoff.toml",
            "[state]\nurl = \"sqlite://.handoff/state.db\"\n\n[warehouse]\npath = \"wh\"\n",
        );
        write(dir.path(), "connectors/hubspot.toml", connector);
        write(dir.path(), "models/leads.sql", MODEL_SQL);
        write(dir.path(), "models/leads.toml", model_toml);
        handoff::connectors::http::install_crypto_provider();
        let sandbox = Sandbox::start(config).await.expect("sandbox starts");
        let f = Fixture {
            dir,
            sandbox,
            http: reqwest::Client::new(),
        };
        f.write_leads(rows);
        f
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_leads(&self, rows: &[Lead]) {
        let mut csv = String::from("lead_id,email,name,score,notes\n");
        for l in rows {
            csv.push_str(&format!(
                "{},{},{},{},{}\n",
                l.id, l.email, l.name, l.score, l.notes
            ));
        }
        write(self.path(), "wh/leads.csv", &csv);
    }

    /// The environment a user would export to point the project at this sandbox.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("HUBSPOT_BASE_URL".into(), self.sandbox.base_url()),
            ("HUBSPOT_TOKEN".into(), self.token()),
        ]
    }

    /// A token of this fixture's own, so its rate budget is not shared with other tests'.
    pub fn token(&self) -> String {
        format!("test-token-{}", self.sandbox.base_url())
    }

    pub fn project(&self) -> Project {
        let env = self.env();
        project::load_with_env(self.path(), &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .expect("fixture project is valid")
    }

    pub async fn state(&self) -> StateStore {
        cli::open_state(&self.project(), false)
            .await
            .expect("state store")
    }

    /// One run of every sync, as `handoff sync --all` does it.
    pub async fn run(&self, opts: RunOptions) -> Summary {
        let project = self.project();
        let ctx = cli::open_checked(&project).await.expect("project checks");
        let state = cli::open_state(&project, !opts.dry_run)
            .await
            .expect("state");
        let names: Vec<String> = project.syncs().map(|(_, s)| s.name.clone()).collect();
        let mut out = cli::run_named(&project, &ctx, &state, &names, opts, |_| {})
            .await
            .expect("run");
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    pub async fn sync(&self) -> Summary {
        self.run(RunOptions::default()).await
    }

    pub async fn inspect(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sandbox.base_url()))
            .send()
            .await
            .expect("sandbox answers")
            .json()
            .await
            .expect("json")
    }

    pub async fn configure(&self, patch: Value) {
        let r = self
            .http
            .post(format!("{}/_sandbox/config", self.sandbox.base_url()))
            .json(&patch)
            .send()
            .await
            .expect("sandbox answers");
        assert!(r.status().is_success(), "config {patch}: {}", r.status());
    }

    /// Contacts the sandbox holds, by email: the whole stored object (`id`, `properties`).
    pub async fn stored_contacts(&self) -> std::collections::BTreeMap<String, Value> {
        let v = self.inspect("/_sandbox/contacts").await;
        v["results"]
            .as_array()
            .expect("contacts array")
            .iter()
            .map(|c| {
                let email = c["properties"]["email"].as_str().unwrap_or_default();
                (email.to_string(), c.clone())
            })
            .collect()
    }

    /// The properties of the sandbox's contacts, by email.
    pub async fn contacts(&self) -> std::collections::BTreeMap<String, Value> {
        let mut all = self.stored_contacts().await;
        all.values_mut().for_each(|c| *c = c["properties"].take());
        all
    }

    /// A plan: everything up to the connector, nothing sent.
    pub async fn plan(&self) -> Summary {
        self.run(RunOptions {
            dry_run: true,
            ..Default::default()
        })
        .await
    }

    /// The live records of one object type, as the sandbox stores them.
    pub async fn objects(&self, path: &str) -> Vec<Value> {
        self.inspect(&format!("/_sandbox/{path}")).await["results"]
            .as_array()
            .expect("results")
            .clone()
    }

    pub async fn records_written(&self) -> u64 {
        self.inspect("/_sandbox/stats").await["records_written"]
            .as_u64()
            .expect("records_written")
    }
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let p: PathBuf = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}
