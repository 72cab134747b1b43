//! The command line: validate | plan | sync | demo | sandbox.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use datafusion::execution::context::SessionContext;

use crate::connectors::{self, Destination};
use crate::project::{self, ConfigError, Project};
use crate::state::StateStore;
use crate::sync::{self, RunOptions, Summary};
use crate::{model, report, sandbox, warehouse};

/// Exit codes.
pub const EXIT_OK: u8 = 0;
pub const EXIT_RUN_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "handoff",
    version,
    about = "Reverse-ETL for revenue handoffs: SQL models → diff → HubSpot"
)]
pub struct Cli {
    /// The project directory (holds handoff.toml, models/, connectors/).
    #[arg(long, global = true, default_value = ".")]
    pub project: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the project: config, connectors, SQL and columns; report every error.
    Validate,
    /// Dry run: what a sync would send; sends nothing and records nothing.
    Plan(RunArgs),
    /// Run syncs once now.
    Sync(RunArgs),
    /// The offline quickstart: sample warehouse, local sandbox, two runs.
    Demo(DemoArgs),
    /// Serve the local HubSpot API emulator.
    Sandbox(SandboxArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sync to run (see models/*.toml).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub sync: Option<String>,
    /// Every sync in the project.
    #[arg(long)]
    pub all: bool,
    /// Resend every row, not just the changes.
    #[arg(long)]
    pub full: bool,
    /// One JSON object per sync per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leads in the generated sample warehouse.
    #[arg(long, default_value_t = 50_000)]
    pub leads: usize,
    /// Share of source rows changed between the two runs, in percent.
    #[arg(long, default_value_t = 3.0)]
    pub change_percent: f64,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = sandbox::DEFAULT_PORT)]
    pub port: u16,
    /// Requests per rolling 10 seconds before 429 (0 = unlimited).
    #[arg(long, default_value_t = 100)]
    pub burst_per_10s: u32,
    /// Requests per day before 429 DAILY (0 = unlimited).
    #[arg(long, default_value_t = 250_000)]
    pub daily_limit: u64,
    /// Accept only the token in this environment variable (default: any token).
    #[arg(long)]
    pub token_env: Option<String>,
}

/// Parses arguments and runs; returns the process exit code.
pub async fn main() -> u8 {
    let cli = Cli::parse();
    run(cli).await
}

pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Validate => validate(&cli.project).await,
        Command::Plan(a) => run_syncs(&cli.project, &a, true).await,
        Command::Sync(a) => run_syncs(&cli.project, &a, false).await,
        Command::Demo(a) => crate::demo::run(&cli.project, a.leads, a.change_percent).await,
        Command::Sandbox(a) => serve_sandbox(a).await,
    }
}

fn print_errors(errors: &[ConfigError]) {
    let mut err = std::io::stderr().lock();
    for e in errors {
        let _ = writeln!(err, "error: {}", report::term_safe(&e.to_string()));
    }
    let _ = writeln!(err, "{} error(s)", errors.len());
}

/// Loads the project and its warehouse and checks every model; all errors at once.
pub async fn load_checked(dir: &Path) -> Result<(Project, SessionContext), Vec<ConfigError>> {
    let project = project::load(dir).map_err(|e| e.0)?;
    let ctx = open_checked(&project).await?;
    Ok((project, ctx))
}

/// Opens the warehouse of a loaded project and checks every model against it.
pub async fn open_checked(project: &Project) -> Result<SessionContext, Vec<ConfigError>> {
    let ctx = warehouse::open(project).await.map_err(|errs| {
        errs.into_iter()
            .map(|e| ConfigError {
                file: PathBuf::from("handoff.toml"),
                line: match &e {
                    warehouse::WarehouseError::Table { line, .. } => *line,
                    warehouse::WarehouseError::Dir { .. } => 0,
                },
                column: None,
                message: match e {
                    warehouse::WarehouseError::Table { table, message, .. } => {
                        format!("table `{table}`: {message}")
                    }
                    warehouse::WarehouseError::Dir { path, message } => {
                        format!("warehouse.path {}: {message}", path.display())
                    }
                },
            })
            .collect::<Vec<_>>()
    })?;
    let errors = model::check_project(&ctx, project).await;
    if errors.is_empty() {
        Ok(ctx)
    } else {
        Err(errors)
    }
}

async fn validate(dir: &Path) -> u8 {
    match load_checked(dir).await {
        Ok((p, _)) => {
            println!(
                "ok: {} model(s), {} sync(s), {} connector(s)",
                p.models.len(),
                p.syncs().count(),
                p.connectors.len()
            );
            EXIT_OK
        }
        Err(errors) => {
            print_errors(&errors);
            EXIT_USAGE
        }
    }
}

/// `sqlite://` paths in the project are relative to the project directory.
pub fn resolve_state_url(project: &Project) -> String {
    let url = &project.state_url;
    if let Some(path) = url.strip_prefix("sqlite://")
        && !path.starts_with('/')
        && !path.starts_with(":memory:")
    {
        return format!("sqlite://{}", project.dir.join(path).display());
    }
    url.clone()
}

/// Opens the state store. With `recover`, runs a crashed process left open are
/// marked failed — only for commands that are about to run syncs themselves.
pub async fn open_state(project: &Project, recover: bool) -> Result<StateStore, String> {
    let store = StateStore::connect(&resolve_state_url(project))
        .await
        .map_err(|e| format!("handoff.toml: [state] url: {e}"))?;
    if !recover {
        return Ok(store);
    }
    match store.recover_interrupted().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            "{n} run(s) were interrupted by a crash; marked failed (their committed batches stand)"
        ),
        Err(e) => return Err(format!("state store: {e}")),
    }
    Ok(store)
}

async fn run_syncs(dir: &Path, args: &RunArgs, dry_run: bool) -> u8 {
    let (project, ctx) = match load_checked(dir).await {
        Ok(x) => x,
        Err(errors) => {
            print_errors(&errors);
            return EXIT_USAGE;
        }
    };
    let selected: Vec<_> = match &args.sync {
        Some(name) => match project.find_sync(name) {
            Some(s) => vec![s],
            None => {
                let known: Vec<&str> = project.syncs().map(|(_, s)| s.name.as_str()).collect();
                eprintln!(
                    "error: no sync named {:?} (syncs: {})",
                    report::term_safe(name),
                    known.join(", ")
                );
                return EXIT_USAGE;
            }
        },
        None => project.syncs().collect(),
    };
    let state = match open_state(&project, !dry_run).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", report::term_safe(&e));
            return EXIT_USAGE;
        }
    };
    let opts = RunOptions {
        full: args.full,
        dry_run,
        stop: None,
    };
    let names: Vec<String> = selected.iter().map(|(_, s)| s.name.clone()).collect();
    let mut code = EXIT_OK;
    let result = run_named(&project, &ctx, &state, &names, opts, |summary| {
        if matches!(
            summary.status.as_str(),
            "failed" | "rejections" | "interrupted"
        ) {
            code = EXIT_RUN_FAILED;
        }
        if args.json {
            println!("{}", report::json_line(summary));
        } else {
            print!("{}", report::human(summary));
        }
    })
    .await;
    if let Err(e) = result {
        eprintln!("error: {}", report::term_safe(&e));
        return EXIT_USAGE;
    }
    code
}

/// Runs the named syncs one after another; connectors are built once and shared
/// by the syncs that use them (one rate budget per account).
pub async fn run_named(
    project: &Project,
    ctx: &SessionContext,
    state: &StateStore,
    names: &[String],
    opts: RunOptions,
    mut each: impl FnMut(&Summary),
) -> Result<Vec<Summary>, String> {
    let mut destinations: HashMap<String, Arc<dyn Destination>> = HashMap::new();
    let mut out = Vec::new();
    for name in names {
        let (model, sync) = project
            .find_sync(name)
            .ok_or_else(|| format!("no sync named {name:?}"))?;
        let dest = match destinations.get(&sync.connector) {
            Some(d) => Arc::clone(d),
            None => {
                let cfg = &project.connectors[&sync.connector];
                let d =
                    connectors::build(cfg).map_err(|e| format!("{}: {e}", cfg.file.display()))?;
                destinations.insert(sync.connector.clone(), Arc::clone(&d));
                d
            }
        };
        let summary = match sync::run(ctx, state, dest, model, sync, opts.clone()).await {
            Ok(s) => s,
            Err(e) => failed_summary(&sync.name, &e.to_string()),
        };
        each(&summary);
        out.push(summary);
    }
    Ok(out)
}

fn failed_summary(sync: &str, error: &str) -> Summary {
    Summary {
        sync: sync.to_string(),
        run_id: None,
        status: "failed".into(),
        added: 0,
        changed: 0,
        removed: 0,
        unchanged: 0,
        invalid: 0,
        rejected: 0,
        unsent: 0,
        api_calls: 0,
        throttled: 0,
        requests_planned: 0,
        duration_ms: 0,
        error: Some(error.to_string()),
        sample: Vec::new(),
        rejections: Vec::new(),
    }
}

async fn serve_sandbox(a: SandboxArgs) -> u8 {
    let token = match &a.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.is_empty() => Some(t),
            _ => {
                eprintln!("error: --token-env {var}: the variable is not set");
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let config = sandbox::SandboxConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], a.port)),
        burst_per_10s: a.burst_per_10s,
        daily_limit: a.daily_limit,
        token,
        ..sandbox::SandboxConfig::default()
    };
    eprintln!(
        "sandbox: HubSpot API on http://127.0.0.1:{} (Ctrl-C to stop)",
        a.port
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match sandbox::serve(config, shutdown).await {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: sandbox on 127.0.0.1:{}: {e}", a.port);
            EXIT_RUN_FAILED
        }
    }
}
