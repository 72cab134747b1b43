//! The command line: validate | plan | sync | run | status | demo | sandbox.

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
    /// Log lines on stderr: `human`, `json` (one object per line), or `auto`: human on a terminal, JSON otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
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
    /// The daemon: every sync on its schedule, an HTTP server for health, metrics and triggers.
    Run(DaemonArgs),
    /// Each sync's schedule, last run and next run, from the state store.
    Status(StatusArgs),
    /// The offline quickstart: sample warehouse, local sandbox, two runs.
    Demo(DemoArgs),
    /// Serve the local HubSpot and Salesforce API emulator.
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Address of the HTTP server (health, metrics, control API). Beyond loopback, the
    /// control API requires a bearer token in HANDOFF_API_TOKEN.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Seconds a shutdown waits for batches in flight to finish and commit.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
    /// Seconds between checks of the project files for changes (0: reload on SIGHUP only).
    #[arg(long, default_value_t = 2)]
    pub watch_secs: u64,
}

/// The daemon's default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4020";

#[derive(Debug, Args)]
pub struct StatusArgs {
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
    /// Start with the owners, contacts and companies in this JSON file
    /// (`{"owners": [...], "contacts": [{...}], "companies": [{...}], "salesforce": {...},
    /// "slack_channels": [...]}`;
    /// without `owners` or `salesforce`, the demo's owners and users are kept).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// Salesforce API requests allowed in any rolling 24 hours before 403 REQUEST_LIMIT_EXCEEDED.
    #[arg(long, default_value_t = sandbox::DEFAULT_DAILY_API_REQUESTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub salesforce_daily_api_requests: u32,
    /// How long a Salesforce access token from /services/oauth2/token stays valid.
    #[arg(long, default_value_t = sandbox::DEFAULT_TOKEN_LIFETIME_SECS)]
    pub salesforce_token_lifetime_secs: u64,
    /// Accept only this client id (consumer key) at the Salesforce token endpoint (default: any).
    #[arg(long)]
    pub salesforce_client_id: Option<String>,
    /// Accept only the client secret in this environment variable (default: any).
    #[arg(long)]
    pub salesforce_client_secret_env: Option<String>,
    /// How long after UploadComplete a Salesforce Bulk API job is processed.
    #[arg(long, default_value_t = sandbox::DEFAULT_BULK_PROCESSING_MS)]
    pub salesforce_bulk_processing_ms: u64,
    /// Slack messages per second per channel before 429 (0 = unlimited).
    #[arg(long, default_value_t = 1)]
    pub slack_per_second: u32,
    /// How many recent requests `GET /_sandbox/requests` keeps (0 = no log).
    #[arg(long, default_value_t = sandbox::DEFAULT_REQUEST_LOG_SIZE)]
    pub request_log_size: usize,
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
        Command::Run(a) => run_daemon(&cli.project, &a).await,
        Command::Status(a) => status(&cli.project, &a).await,
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
    // A live daemon owns this project's runs: one run of a sync at a time, so the
    // run is handed to it rather than started beside it.
    if !dry_run && let Some(url) = crate::scheduler::daemon::running_daemon(dir).await {
        let names: Vec<String> = selected.iter().map(|(_, s)| s.name.clone()).collect();
        return run_via_daemon(&url, &names, args).await;
    }
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
        ..RunOptions::default()
    };
    let names: Vec<String> = selected.iter().map(|(_, s)| s.name.clone()).collect();
    let mut code = EXIT_OK;
    let result = run_named(&project, &ctx, &state, &names, opts, |summary| {
        if print_summary(summary, args.json) {
            code = EXIT_RUN_FAILED;
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

/// The summary of a run that failed before it was recorded.
/// Prints a run as JSON Lines or for people; true when it should make the exit code 1.
fn print_summary(summary: &Summary, json: bool) -> bool {
    if json {
        println!("{}", report::json_line(summary));
    } else {
        print!("{}", report::human(summary));
    }
    matches!(
        summary.status.as_str(),
        "failed" | "rejections" | "interrupted" | "paused"
    )
}

/// Triggers each sync on the daemon at `url` and waits for its run, printing it like a local one.
async fn run_via_daemon(url: &str, names: &[String], args: &RunArgs) -> u8 {
    crate::connectors::http::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let token = std::env::var(crate::server::TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let auth = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    eprintln!("a daemon serves this project at {url}: running through it");
    let mut code = EXIT_OK;
    for name in names {
        let summary = match daemon_run(&client, &auth, url, name, args.full).await {
            Ok(s) => s,
            Err(e) => failed_summary(name, &e),
        };
        if print_summary(&summary, args.json) {
            code = EXIT_RUN_FAILED;
        }
    }
    code
}

async fn daemon_run(
    client: &reqwest::Client,
    auth: &dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    url: &str,
    name: &str,
    full: bool,
) -> Result<Summary, String> {
    let get_json = |resp: reqwest::Response| async move {
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("daemon answered HTTP {status}: {e}"))?;
        Ok::<_, String>((status, body))
    };
    let run_id = loop {
        let resp = auth(client.post(format!("{url}/api/syncs/{name}/trigger")))
            .json(&serde_json::json!({ "full": full }))
            .send()
            .await
            .map_err(|e| format!("daemon at {url}: {e}"))?;
        let (status, body) = get_json(resp).await?;
        match status.as_u16() {
            202 | 200 => break body["run_id"].as_i64().ok_or("daemon gave no run id")?,
            // Already running: wait for that run, then start ours so it sees every change.
            409 => {
                if let Some(busy) = body["run_id"].as_i64() {
                    wait_for_run(client, auth, url, busy).await?;
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            _ => {
                return Err(format!(
                    "daemon refused the trigger (HTTP {status}): {}",
                    body["error"].as_str().unwrap_or_default()
                ));
            }
        }
    };
    let run = wait_for_run(client, auth, url, run_id).await?;
    let counts = &run["counts"];
    let n = |k: &str| counts[k].as_u64().unwrap_or(0);
    let rejections = run["rejections"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(Summary {
        sync: name.to_string(),
        run_id: Some(run_id),
        status: run["status"].as_str().unwrap_or("failed").to_string(),
        added: n("added"),
        changed: n("changed"),
        removed: n("removed"),
        unchanged: n("unchanged"),
        invalid: n("invalid"),
        rejected: n("rejected"),
        unsent: 0,
        api_calls: n("api_calls"),
        throttled: n("throttled"),
        tasks_created: n("tasks_created"),
        tasks_pending: 0,
        owners_kept: n("owners_kept"),
        requests_planned: 0,
        duration_ms: (run["finished_at_ms"].as_i64().unwrap_or(0)
            - run["started_at_ms"].as_i64().unwrap_or(0))
        .max(0) as u64,
        error: run["error"].as_str().map(str::to_string),
        sample: Vec::new(),
        rejections,
    })
}

/// Polls `GET /api/runs/{id}` until the run is no longer running.
async fn wait_for_run(
    client: &reqwest::Client,
    auth: &dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    url: &str,
    id: i64,
) -> Result<serde_json::Value, String> {
    loop {
        let resp = auth(client.get(format!("{url}/api/runs/{id}")))
            .send()
            .await
            .map_err(|e| format!("daemon at {url}: {e}"))?;
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("daemon answered HTTP {status}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "run {id}: HTTP {status}: {}",
                body["error"].as_str().unwrap_or_default()
            ));
        }
        if body["status"] != "running" {
            return Ok(body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

pub fn failed_summary(sync: &str, error: &str) -> Summary {
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
        tasks_created: 0,
        tasks_pending: 0,
        owners_kept: 0,
        requests_planned: 0,
        duration_ms: 0,
        error: Some(error.to_string()),
        sample: Vec::new(),
        rejections: Vec::new(),
    }
}

/// The sandbox's configuration from its arguments; `env` reads environment variables.
/// Errors name the variable or file, never a secret's value.
fn sandbox_config(
    a: &SandboxArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<sandbox::SandboxConfig, String> {
    let secret = |flag: &str, var: &Option<String>| match var {
        Some(var) => match env(var) {
            Some(value) if !value.is_empty() => Ok(Some(value)),
            _ => Err(format!("{flag} {var}: the variable is not set")),
        },
        None => Ok(None),
    };
    let token = secret("--token-env", &a.token_env)?;
    let client_secret = secret(
        "--salesforce-client-secret-env",
        &a.salesforce_client_secret_env,
    )?;
    let seed = match &a.seed {
        Some(path) => sandbox::Seed::from_file(path)
            .map_err(|e| format!("--seed {}", report::term_safe(&e)))?,
        None => sandbox::Seed::demo(),
    };
    Ok(sandbox::SandboxConfig {
        seed,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], a.port)),
        burst_per_10s: a.burst_per_10s,
        daily_limit: a.daily_limit,
        token,
        salesforce: sandbox::SalesforceConfig {
            daily_api_requests: a.salesforce_daily_api_requests,
            token_lifetime_secs: a.salesforce_token_lifetime_secs,
            client_id: a.salesforce_client_id.clone(),
            client_secret,
            bulk_processing_ms: a.salesforce_bulk_processing_ms,
        },
        slack_per_second: a.slack_per_second,
        request_log_size: a.request_log_size,
        ..sandbox::SandboxConfig::default()
    })
}

async fn serve_sandbox(a: SandboxArgs) -> u8 {
    let config = match sandbox_config(&a, |var| std::env::var(var).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    eprintln!(
        "sandbox: HubSpot, Salesforce and Slack APIs on http://127.0.0.1:{} (Ctrl-C to stop)",
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

async fn run_daemon(dir: &Path, a: &DaemonArgs) -> u8 {
    use crate::scheduler::daemon::{Daemon, DaemonError, DaemonOptions};
    let api_token = std::env::var(crate::server::TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(crate::project::Secret::new);
    let opts = DaemonOptions {
        project_dir: dir.to_path_buf(),
        listen: a.listen,
        grace: std::time::Duration::from_secs(a.grace_secs),
        watch: (a.watch_secs > 0).then(|| std::time::Duration::from_secs(a.watch_secs)),
        api_token,
    };
    let daemon = match Daemon::start(opts).await {
        Ok(d) => d,
        Err(DaemonError::Config(errors)) => {
            print_errors(&errors);
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {}", report::term_safe(&e.to_string()));
            return EXIT_USAGE;
        }
    };
    match daemon.local_addr() {
        // One line on stdout, so a supervisor (or a test) using port 0 learns the address.
        Ok(addr) => {
            println!("listening on http://{addr}");
            let _ = std::io::stdout().flush();
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return EXIT_USAGE;
        }
    };
    let shutdown = signals.run(reload_tx);
    if daemon.run(reload_rx, shutdown).await {
        EXIT_OK
    } else {
        EXIT_RUN_FAILED
    }
}

/// SIGINT/SIGTERM end the daemon; SIGHUP asks for a reload.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Completes on the first SIGINT or SIGTERM, forwarding SIGHUPs meanwhile.
    async fn run(mut self, reload: tokio::sync::mpsc::UnboundedSender<()>) {
        #[cfg(unix)]
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("SIGINT received");
                    return;
                }
                _ = self.term.recv() => {
                    tracing::info!("SIGTERM received");
                    return;
                }
                _ = self.hup.recv() => {
                    let _ = reload.send(());
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (&mut self, reload);
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One sync's line in `handoff status`.
#[derive(Debug, serde::Serialize)]
struct SyncStatus {
    sync: String,
    model: String,
    connector: String,
    schedule: Option<String>,
    timezone: String,
    next_run: Option<chrono::DateTime<chrono::Utc>>,
    last_run: Option<crate::state::RunRecord>,
}

async fn status(dir: &Path, a: &StatusArgs) -> u8 {
    let project = match project::load(dir) {
        Ok(p) => p,
        Err(errors) => {
            print_errors(&errors.0);
            return EXIT_USAGE;
        }
    };
    let state = match open_state(&project, false).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", report::term_safe(&e));
            return EXIT_USAGE;
        }
    };
    let now = chrono::Utc::now();
    let mut out = std::io::stdout().lock();
    for (model, sync) in project.syncs() {
        let schedule = model.schedule.as_ref().map(|s| s.value.clone());
        let next_run = schedule
            .as_deref()
            .and_then(|s| crate::scheduler::Schedule::parse(s).ok())
            .and_then(|s| s.next_after(now, project.timezone));
        let last_run = match state.recent_runs(Some(&sync.name), 1).await {
            Ok(mut runs) => runs.pop(),
            Err(e) => {
                eprintln!("error: {}", report::term_safe(&e.to_string()));
                return EXIT_USAGE;
            }
        };
        let s = SyncStatus {
            sync: sync.name.clone(),
            model: model.name.clone(),
            connector: sync.connector.clone(),
            schedule,
            timezone: project.timezone.name().to_string(),
            next_run,
            last_run,
        };
        let _ = if a.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&s).unwrap_or_else(|_| "{}".into())
            )
        } else {
            write!(out, "{}", status_text(&s))
        };
    }
    EXIT_OK
}

/// The human status of one sync. Every value from config or the state store is made
/// terminal-safe on its own, so the text's own line breaks survive and a value's do not.
fn status_text(s: &SyncStatus) -> String {
    let safe = report::term_safe;
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    let mut text = format!(
        "{} ({} → {})\n",
        safe(&s.sync),
        safe(&s.model),
        safe(&s.connector)
    );
    match (&s.schedule, &s.next_run) {
        (Some(sched), Some(next)) => text.push_str(&format!(
            "  schedule  {} ({})\n  next run  {}\n",
            safe(sched),
            safe(&s.timezone),
            next.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        (Some(sched), None) => text.push_str(&format!(
            "  schedule  {} ({})\n  next run  never\n",
            safe(sched),
            safe(&s.timezone)
        )),
        (None, _) => text.push_str("  schedule  none (runs on triggers only)\n"),
    }
    match &s.last_run {
        None => text.push_str("  last run  never\n"),
        Some(r) => {
            let c = &r.counts;
            let finished = r
                .finished_at_ms
                .map(when)
                .unwrap_or_else(|| "still running".into());
            text.push_str(&format!(
                "  last run  #{} {} (started {}, finished {})\n            {} added, {} changed, {} removed, {} unchanged, {} invalid, {} rejected; {} API calls, {} throttled\n",
                r.id,
                safe(&r.status),
                when(r.started_at_ms),
                finished,
                c.added,
                c.changed,
                c.removed,
                c.unchanged,
                c.invalid,
                c.rejected,
                c.api_calls,
                c.throttled
            ));
            if let Some(e) = &r.error {
                text.push_str(&format!("            error: {}\n", safe(e)));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_keeps_its_lines_and_escapes_values() {
        let run = crate::state::RunRecord {
            id: 7,
            sync: "s".into(),
            status: "failed".into(),
            full: false,
            started_at_ms: 0,
            finished_at_ms: Some(1000),
            counts: crate::state::RunCounts::default(),
            error: Some("CRM said:\n\u{1b}[31mno".into()),
        };
        let s = SyncStatus {
            sync: "hot\u{1b}]0;x".into(),
            model: "m".into(),
            connector: "hubspot".into(),
            schedule: None,
            timezone: "UTC".into(),
            next_run: None,
            last_run: Some(run),
        };
        let text = status_text(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "hot\\u{1b}]0;x (m → hubspot)");
        assert_eq!(lines[1], "  schedule  none (runs on triggers only)");
        assert!(lines[2].starts_with("  last run  #7 failed"), "{text}");
        assert_eq!(lines[4], "            error: CRM said:\\n\\u{1b}[31mno");
        assert_eq!(lines.len(), 5, "{text}");
        assert!(!text.contains('\u{1b}'));
    }

    fn sandbox_args(args: &[&str]) -> SandboxArgs {
        let cli = Cli::try_parse_from(["handoff", "sandbox"].iter().chain(args))
            .expect("arguments parse");
        match cli.command {
            Command::Sandbox(a) => a,
            other => panic!("not sandbox: {other:?}"),
        }
    }

    #[test]
    fn sandbox_defaults_are_salesforces() {
        let config = sandbox_config(&sandbox_args(&[]), |_| None).expect("a config");
        assert_eq!(config.salesforce, sandbox::SalesforceConfig::default());
        assert_eq!(config.salesforce.daily_api_requests, 100_000);
        assert_eq!(config.salesforce.token_lifetime_secs, 7_200);
    }

    #[test]
    fn sandbox_salesforce_options_and_secrets_from_the_environment() {
        let a = sandbox_args(&[
            "--salesforce-daily-api-requests",
            "15000",
            "--salesforce-token-lifetime-secs",
            "60",
            "--salesforce-client-id",
            "consumer-key",
            "--salesforce-client-secret-env",
            "SF_SECRET",
            "--salesforce-bulk-processing-ms",
            "0",
        ]);
        let env = |var: &str| (var == "SF_SECRET").then(|| "s3cret".to_owned());
        let config = sandbox_config(&a, env).expect("a config");
        assert_eq!(
            config.salesforce,
            sandbox::SalesforceConfig {
                daily_api_requests: 15_000,
                token_lifetime_secs: 60,
                client_id: Some("consumer-key".into()),
                client_secret: Some("s3cret".into()),
                bulk_processing_ms: 0,
            }
        );
        let error = sandbox_config(&a, |_| None).expect_err("the variable is missing");
        assert_eq!(
            error,
            "--salesforce-client-secret-env SF_SECRET: the variable is not set"
        );
        assert!(
            Cli::try_parse_from(["handoff", "sandbox", "--salesforce-daily-api-requests", "0"])
                .is_err(),
            "an allocation of zero is refused"
        );
    }
}
