//! `handoff demo`: the offline quickstart — sample warehouse, in-process sandbox, a run, a few percent of changes, a second run.

pub mod data;

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::cli::{self, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE};
use crate::project;
use crate::report;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::sync::{RunOptions, Summary};

/// The default project, embedded so `handoff demo` works in an empty directory too.
pub const DEFAULT_PROJECT: [(&str, &str); 4] = [
    ("handoff.toml", include_str!("../../handoff.toml")),
    (
        "models/hot_leads.sql",
        include_str!("../../models/hot_leads.sql"),
    ),
    (
        "models/hot_leads.toml",
        include_str!("../../models/hot_leads.toml"),
    ),
    (
        "connectors/hubspot.toml",
        include_str!("../../connectors/hubspot.toml"),
    ),
];

/// Marks a warehouse directory as the demo's own, so it may be regenerated.
const MANIFEST: &str = ".handoff-demo.json";

/// Writes the default project into `dir` where it has none.
pub fn scaffold(dir: &Path) -> std::io::Result<bool> {
    if dir.join("handoff.toml").exists() {
        return Ok(false);
    }
    for (rel, text) in DEFAULT_PROJECT {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(true)
}

/// Generates the sample warehouse into `dir` (the demo's own, or empty/missing).
pub fn generate(dir: &Path, spec: &data::Spec) -> Result<(), String> {
    let owned = dir.join(MANIFEST).exists();
    let has_files = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_files && !owned {
        return Err(format!(
            "{} holds data the demo did not generate; not overwriting it (point HANDOFF_WAREHOUSE elsewhere or remove it)",
            dir.display()
        ));
    }
    let io = |e: std::io::Error| format!("writing {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    data::write_leads(&dir.join("marketing_leads.parquet"), spec).map_err(io)?;
    data::write_reps(&dir.join("reps.parquet")).map_err(io)?;
    data::write_accounts(&dir.join("accounts.parquet"), spec.seed).map_err(io)?;
    let manifest = serde_json::json!({
        "leads": spec.leads,
        "seed": spec.seed,
        "now": spec.now.to_rfc3339(),
        "changed": spec.changes.map(|c| c.0),
    });
    std::fs::write(dir.join(MANIFEST), manifest.to_string()).map_err(io)?;
    Ok(())
}

pub async fn run(dir: &Path, leads: usize, change_percent: f64) -> u8 {
    match run_inner(dir, leads, change_percent).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report::term_safe(&e));
            EXIT_USAGE
        }
    }
}

async fn run_inner(dir: &Path, leads: usize, change_percent: f64) -> Result<u8, String> {
    if scaffold(dir).map_err(|e| format!("creating the project in {}: {e}", dir.display()))? {
        println!("created a handoff project in {}", dir.display());
    }
    let sandbox = Sandbox::start(SandboxConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..SandboxConfig::default()
    })
    .await
    .map_err(|e| format!("starting the sandbox: {e}"))?;
    let base_url = sandbox.base_url();
    let state_path: PathBuf = dir.join(".handoff").join("demo-state.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", state_path.display()));
    }
    let state_url = format!("sqlite://{}", state_path.display());
    // The demo always talks to its own sandbox and state, whatever the shell exports.
    let env = move |k: &str| match k {
        "HUBSPOT_BASE_URL" => Some(base_url.clone()),
        "HUBSPOT_TOKEN" => Some("demo-token".to_string()),
        "HANDOFF_STATE_URL" => Some(state_url.clone()),
        _ => std::env::var(k).ok(),
    };
    let project = project::load_with_env(dir, &env).map_err(|e| e.to_string())?;
    let warehouse = project
        .warehouse
        .dir
        .clone()
        .ok_or("handoff.toml has no [warehouse] path for the sample data")?;

    let mut spec = data::Spec {
        leads,
        seed: 42,
        now: Utc::now(),
        changes: None,
    };
    println!("generating {leads} sample leads in {}", warehouse.display());
    generate(&warehouse, &spec)?;

    let state = cli::open_state(&project, true).await?;
    let names: Vec<String> = project.syncs().map(|(_, s)| s.name.clone()).collect();
    let first = run_once(&project, &state, &names, "first run: everything is new").await?;

    spec.changes = Some((change_percent / 100.0, 7));
    println!("\nchanging {change_percent}% of the leads (scores and names) in the warehouse");
    generate(&warehouse, &spec)?;
    let second = run_once(
        &project,
        &state,
        &names,
        "second run: only the changes travel",
    )
    .await?;

    let sent = |s: &[Summary]| {
        s.iter()
            .map(|x| x.added + x.changed + x.removed)
            .sum::<u64>()
    };
    let calls = |s: &[Summary]| s.iter().map(|x| x.api_calls).sum::<u64>();
    println!(
        "\nfirst run: {} records in {} API calls; second run: {} records in {} API calls.",
        sent(&first),
        calls(&first),
        sent(&second),
        calls(&second)
    );
    println!("Run `handoff sandbox` and `handoff sync --all` to try it on your own models.");
    sandbox.shutdown().await;
    let failed = first.iter().chain(&second).any(|s| s.status == "failed");
    Ok(if failed { EXIT_RUN_FAILED } else { EXIT_OK })
}

async fn run_once(
    project: &project::Project,
    state: &crate::state::StateStore,
    names: &[String],
    title: &str,
) -> Result<Vec<Summary>, String> {
    println!("\n== {title}");
    // The warehouse files changed: a fresh context re-reads them.
    let ctx = cli::open_checked(project).await.map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    cli::run_named(project, &ctx, state, names, RunOptions::default(), |s| {
        print!("{}", report::human(s));
    })
    .await
}
