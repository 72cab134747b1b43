//! `handoff run`: the project's syncs on the scheduler, the HTTP server, reloads and graceful shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Clock, RunOutcome, RunRequest, Runner, Schedule, Scheduler, SyncSpec, SystemClock};
use crate::cli;
use crate::connectors::{self, Destination};
use crate::project::{ConfigError, ConfigErrors, ConnectorConfig, Project, Secret};
use crate::server::{self, AppState, Metrics, ProjectInfo, ServerError, SyncInfo};
use crate::state::{RunId, StateStore};
use crate::sync::{self, RunOptions};
use crate::warehouse;

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub project_dir: PathBuf,
    pub listen: SocketAddr,
    /// How long a shutdown waits for batches in flight to finish and commit.
    pub grace: Duration,
    /// How often the project files are checked for changes; `None`: on SIGHUP only.
    pub watch: Option<Duration>,
    /// The control API's bearer token.
    pub api_token: Option<Secret>,
}

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{}", ConfigErrors(.0.clone()))]
    Config(Vec<ConfigError>),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Connector(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// A started daemon: project loaded, state store open, listener bound; nothing scheduled yet.
pub struct Daemon {
    opts: DaemonOptions,
    runner: Arc<ProjectRunner>,
    state: StateStore,
    metrics: Arc<Metrics>,
    info: Arc<RwLock<ProjectInfo>>,
    /// Taken by [`Daemon::run`].
    listener: Option<tokio::net::TcpListener>,
    files: FileStamp,
}

impl Daemon {
    /// Validates the project, opens the state store (marking runs a crash left open
    /// as failed) and binds the server.
    pub async fn start(opts: DaemonOptions) -> Result<Daemon, DaemonError> {
        // Before any work: a public listener without a token is refused outright.
        if !opts.listen.ip().is_loopback() && opts.api_token.is_none() {
            return Err(ServerError::TokenRequired(opts.listen).into());
        }
        let files = FileStamp::read(&opts.project_dir);
        let (project, _) = cli::load_checked(&opts.project_dir)
            .await
            .map_err(DaemonError::Config)?;
        let state = cli::open_state(&project, true)
            .await
            .map_err(DaemonError::State)?;
        let metrics = Arc::new(Metrics::default());
        let loaded = Loaded::build(project, None)?;
        metrics.set_connectors(loaded.request_stats());
        let info = Arc::new(RwLock::new(loaded.info()));
        let runner = Arc::new(ProjectRunner {
            loaded: RwLock::new(Arc::new(loaded)),
            state: state.clone(),
            metrics: Arc::clone(&metrics),
            clock: Arc::new(SystemClock),
        });
        let listener = server::bind(opts.listen, opts.api_token.as_ref()).await?;
        Ok(Daemon {
            opts,
            runner,
            state,
            metrics,
            info,
            listener: Some(listener),
            files,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::other("the server is running")),
        }
    }

    /// Runs until `shutdown` completes; `reload` asks for a reload (SIGHUP). Then stops
    /// scheduling, gives runs in progress the grace period to commit their batches in
    /// flight, and returns whether they all finished in time.
    pub async fn run(
        mut self,
        mut reload: mpsc::UnboundedReceiver<()>,
        shutdown: impl Future<Output = ()>,
    ) -> bool {
        let stop = CancellationToken::new();
        let (tz, specs) = {
            let loaded = self.runner.current();
            (loaded.project.timezone, specs(&loaded.project))
        };
        let scheduler = Scheduler::start(
            Arc::clone(&self.runner) as Arc<dyn Runner>,
            Arc::clone(&self.runner.clock),
            tz,
            specs,
            stop.clone(),
        );
        let app = Arc::new(AppState {
            scheduler: scheduler.clone(),
            state: self.state.clone(),
            metrics: Arc::clone(&self.metrics),
            project: Arc::clone(&self.info),
            token: self.opts.api_token.clone(),
        });
        // The server outlives the scheduler: /metrics and /readyz answer during the grace period.
        let server_stop = CancellationToken::new();
        let listener = self.listener.take().expect("run is called once");
        let announce = listener
            .local_addr()
            .map(|addr| Announcement::write(&self.opts.project_dir, addr));
        let server = tokio::spawn(server::serve(listener, app, server_stop.clone()));
        tracing::info!(
            syncs = self.info.read().expect("project info").syncs.len(),
            "daemon started"
        );

        tokio::pin!(shutdown);
        let mut watch = self.opts.watch.map(tokio::time::interval);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = reload.recv() => {
                    tracing::info!("reload requested");
                    self.files = FileStamp::read(&self.opts.project_dir);
                    self.reload(&scheduler).await;
                }
                _ = tick(&mut watch) => {
                    let now = FileStamp::read(&self.opts.project_dir);
                    if now != self.files {
                        tracing::info!("project files changed");
                        self.files = now;
                        self.reload(&scheduler).await;
                    }
                }
            }
        }

        tracing::info!(
            grace_secs = self.opts.grace.as_secs_f64(),
            "shutting down: no new runs; runs in progress finish their batches in flight"
        );
        stop.cancel();
        let clean = scheduler.wait(self.opts.grace).await;
        if clean {
            tracing::info!("stopped cleanly");
        } else {
            tracing::warn!(
                "grace period over: runs still going were dropped; their committed batches stand and the rest is sent next run"
            );
        }
        if let Ok(Some(a)) = announce {
            a.remove();
        }
        server_stop.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("server: {e}"),
            Err(e) => tracing::error!("server task: {e}"),
        }
        clean
    }

    /// Re-validates the project; applies it if clean, else keeps the old one and logs every error.
    async fn reload(&self, scheduler: &Scheduler) {
        let project = match cli::load_checked(&self.opts.project_dir).await {
            Ok((p, _)) => p,
            Err(errors) => {
                for e in &errors {
                    tracing::error!("reload refused: {e}");
                }
                tracing::error!(
                    errors = errors.len(),
                    "the project is invalid; still running the last valid one"
                );
                self.info.write().expect("project info").reload_errors =
                    errors.iter().map(|e| e.to_string()).collect();
                return;
            }
        };
        let loaded = match Loaded::build(project, Some(&self.runner.current())) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("reload refused: {e}");
                self.info.write().expect("project info").reload_errors = vec![e.to_string()];
                return;
            }
        };
        let (tz, specs) = (loaded.project.timezone, specs(&loaded.project));
        self.metrics.set_connectors(loaded.request_stats());
        *self.info.write().expect("project info") = loaded.info();
        *self.runner.loaded.write().expect("runner lock") = Arc::new(loaded);
        let n = specs.len();
        scheduler.update(tz, specs);
        tracing::info!(syncs = n, "project reloaded");
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn specs(project: &Project) -> Vec<SyncSpec> {
    project
        .syncs()
        .map(|(m, s)| SyncSpec {
            name: s.name.clone(),
            // Validated when the project was loaded.
            schedule: m
                .schedule
                .as_ref()
                .and_then(|s| Schedule::parse(&s.value).ok()),
        })
        .collect()
}

/// A project with its destinations, one per connector (one rate budget per account).
struct Loaded {
    project: Project,
    destinations: BTreeMap<String, Arc<dyn Destination>>,
}

impl Loaded {
    /// Builds the destinations, keeping those of `previous` whose connector is
    /// unchanged, so a reload does not reset their rate budgets.
    fn build(project: Project, previous: Option<&Loaded>) -> Result<Loaded, DaemonError> {
        let mut destinations = BTreeMap::new();
        for (name, cfg) in &project.connectors {
            let kept = previous.and_then(|p| {
                let old = p.project.connectors.get(name)?;
                same_connector(old, cfg).then(|| Arc::clone(&p.destinations[name]))
            });
            let dest = match kept {
                Some(d) => d,
                None => connectors::build(cfg)
                    .map_err(|e| DaemonError::Connector(format!("{}: {e}", cfg.file.display())))?,
            };
            destinations.insert(name.clone(), dest);
        }
        Ok(Loaded {
            project,
            destinations,
        })
    }

    fn request_stats(&self) -> BTreeMap<String, Arc<connectors::http::RequestStats>> {
        self.destinations
            .iter()
            .filter_map(|(n, d)| d.request_stats().map(|s| (n.clone(), s)))
            .collect()
    }

    fn info(&self) -> ProjectInfo {
        ProjectInfo {
            syncs: self
                .project
                .syncs()
                .map(|(m, s)| SyncInfo {
                    name: s.name.clone(),
                    model: m.name.clone(),
                    connector: s.connector.clone(),
                })
                .collect(),
            timezone: self.project.timezone.name().to_string(),
            reload_errors: Vec::new(),
        }
    }
}

fn same_connector(a: &ConnectorConfig, b: &ConnectorConfig) -> bool {
    a.kind == b.kind
        && a.base_url == b.base_url
        && a.token.expose() == b.token.expose()
        && a.budget == b.budget
        && a.account_timezone == b.account_timezone
        && a.search_settle_ms == b.search_settle_ms
        && a.batch_size == b.batch_size
        && a.timeout_secs == b.timeout_secs
        && a.max_retries == b.max_retries
        && a.concurrency == b.concurrency
}

/// Runs syncs of the current project; a reload swaps the project between runs.
struct ProjectRunner {
    loaded: RwLock<Arc<Loaded>>,
    state: StateStore,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl ProjectRunner {
    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().expect("runner lock"))
    }
}

#[async_trait::async_trait]
impl Runner for ProjectRunner {
    async fn run(
        &self,
        request: RunRequest,
        stop: CancellationToken,
        started: mpsc::UnboundedSender<RunId>,
    ) -> RunOutcome {
        let loaded = self.current();
        let span = tracing::info_span!(
            "run",
            sync = %request.sync,
            run_id = tracing::field::Empty,
            reason = ?request.reason,
            full = request.full,
        );
        let summary = async {
            let Some((model, sync)) = loaded.project.find_sync(&request.sync) else {
                return cli::failed_summary(&request.sync, "the sync is no longer in the project");
            };
            let dest = Arc::clone(&loaded.destinations[&sync.connector]);
            // Opened per run: the warehouse's files change between runs.
            let ctx = match warehouse::open(&loaded.project).await {
                Ok(ctx) => ctx,
                Err(errors) => {
                    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                    return cli::failed_summary(&sync.name, &text.join("; "));
                }
            };
            let (ids, mut ids_rx) = mpsc::unbounded_channel();
            let opts = RunOptions {
                full: request.full,
                dry_run: false,
                stop: Some(stop),
                started: Some(ids),
            };
            let forward = async {
                while let Some(id) = ids_rx.recv().await {
                    tracing::Span::current().record("run_id", id);
                    tracing::info!("run started");
                    let _ = started.send(id);
                }
            };
            let (result, ()) = tokio::join!(
                sync::run(&ctx, &self.state, dest, model, sync, opts),
                forward
            );
            result.unwrap_or_else(|e| cli::failed_summary(&sync.name, &e.to_string()))
        }
        .instrument(span.clone())
        .await;
        self.metrics.record_run(&summary, self.clock.now());
        let _enter = span.enter();
        match &summary.error {
            Some(error) if summary.status == "failed" => tracing::error!(
                status = %summary.status,
                api_calls = summary.api_calls,
                duration_ms = summary.duration_ms,
                "run failed: {error}"
            ),
            _ => tracing::info!(
                status = %summary.status,
                added = summary.added,
                changed = summary.changed,
                removed = summary.removed,
                rejected = summary.rejected,
                invalid = summary.invalid,
                unsent = summary.unsent,
                api_calls = summary.api_calls,
                throttled = summary.throttled,
                duration_ms = summary.duration_ms,
                "run finished"
            ),
        }
        RunOutcome {
            run_id: summary.run_id,
            status: summary.status,
            error: summary.error,
        }
    }
}

/// Names, sizes and modification times of the project's files: a change means "reload".
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp(Vec<(PathBuf, u64, Option<SystemTime>)>);

impl FileStamp {
    fn read(dir: &Path) -> FileStamp {
        let mut files = vec![dir.join("handoff.toml")];
        for sub in ["models", "connectors"] {
            if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
                files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
        files.sort();
        FileStamp(
            files
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let len = meta.as_ref().map_or(0, |m| m.len());
                    let modified = meta.and_then(|m| m.modified().ok());
                    (p, len, modified)
                })
                .collect(),
        )
    }
}

/// `.handoff/daemon.json` in the project: where a running daemon serves, so `handoff sync`
/// can tell that the runs left `running` in the state store are the daemon's, not a crash's.
struct Announcement(PathBuf);

impl Announcement {
    fn path(project_dir: &Path) -> PathBuf {
        project_dir.join(".handoff").join("daemon.json")
    }

    fn write(project_dir: &Path, addr: SocketAddr) -> Option<Announcement> {
        let path = Self::path(project_dir);
        let body =
            serde_json::json!({ "url": format!("http://{addr}"), "pid": std::process::id() });
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, body.to_string()));
        match written {
            Ok(()) => Some(Announcement(path)),
            Err(e) => {
                tracing::warn!("cannot write {}: {e}", path.display());
                None
            }
        }
    }

    fn remove(self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The URL of a daemon serving the project in `dir`, if one answers its health check.
pub async fn running_daemon(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(Announcement::path(dir)).ok()?;
    let url = serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get("url")?
        .as_str()?
        .to_string();
    crate::connectors::http::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .ok()?;
    let answer = client.get(format!("{url}/healthz")).send().await.ok()?;
    answer.status().is_success().then_some(url)
}
