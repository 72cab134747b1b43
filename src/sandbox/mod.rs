//! A local HubSpot, Salesforce and Slack API emulator for tests, the demo and benchmarks.
//!
//! It speaks the slice of HubSpot's CRM API and of Salesforce's REST API the
//! connectors use, on one port (their paths do not collide), with the same JSON
//! shapes (HubSpot's from its published OpenAPI specs), the same error bodies and
//! the same rate limits and headers, so a sync can run end to end offline; and
//! Slack's incoming webhooks and `chat.postMessage` ([`slack`]'s module docs).
//! Everything lives in memory.
//!
//! Object types: `contacts` (unique `email`), `companies` (unique `domain`), `deals`
//! (also served as `0-3`, as HubSpot's deals spec names them), `tasks` (`hs_timestamp`
//! required; associations on create: 204 contact, 192 company, 216 deal) and `leads`.
//! `{type}` below is any of them.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /crm/v3/objects/{type}/batch/upsert` | create or update by a unique property (or record id) |
//! | `POST /crm/v3/objects/{type}/batch/update` | update existing records by record id (or a unique property) |
//! | `POST /crm/v3/objects/{type}/batch/create` | create, with associations; a taken unique value fails the batch with a 409 |
//! | `POST /crm/v3/objects/{type}/batch/archive` | archive by record id (204) |
//! | `POST /crm/v3/objects/{type}/batch/read` | read by a unique property or record id (`?archived=true`) |
//! | `GET /crm/v3/objects/{type}/{id}` | read one (`?idProperty=email`, `?archived=true`) |
//! | `POST /crm/v3/objects/{type}/search` | filter groups, sorts, `limit` ≤ 200, `after`, 10,000-result cap; own rate limit |
//! | `GET /crm/v3/owners`, `GET /crm/v3/owners/{ownerId}` | the seeded owners, paged |
//! | `POST /services/oauth2/token` | Salesforce: `client_credentials` and JWT bearer grants; tokens expire |
//! | `POST`/`PATCH`/`DELETE /services/data/vNN.N/composite/sobjects` | Salesforce collections: create, update by id, delete `?ids=`; ≤ 200, `allOrNone` |
//! | `PATCH /services/data/vNN.N/composite/sobjects/{SObject}/{ExternalIdField}` | upsert by external id (or `Id`) |
//! | `GET /services/data/vNN.N/composite/sobjects/{SObject}?ids=&fields=` | read records in order (`null` for missing ones) |
//! | `POST /services/data/vNN.N/sobjects/{SObject}`, `GET`/`PATCH`/`DELETE …/{SObject}/{id}`, `PATCH …/{SObject}/{field}/{value}` | one record |
//! | `GET /services/data/vNN.N/query?q=`, `/queryAll?q=`, `/query/{locator}` | SOQL subset, `nextRecordsUrl` paging (2,000, or `Sforce-Query-Options: batchSize`) |
//! | `POST`/`GET /services/data/vNN.N/jobs/ingest`, `GET`/`PATCH`/`DELETE …/{jobId}`, `PUT …/{jobId}/batches` | Bulk API 2.0 ingest jobs (CSV) |
//! | `GET …/jobs/ingest/{jobId}/successfulResults/`, `failedResults/`, `unprocessedrecords/` | a job's result CSVs |
//! | `GET /services/data/vNN.N/limits` | `DailyApiRequests` `Max` and `Remaining` |
//! | `GET /_sandbox/salesforce/{SObject}` | the stored `User`/`Lead`/`Contact`/`Account`/`Task` records (`?deleted=true`: the recycle bin) |
//! | `POST /_sandbox/salesforce/clock` | `{"advance_secs": N}` moves Salesforce's clock: token expiry, API window, Bulk jobs |
//! | `POST /services/{team}/{bot}/{secret}` | a Slack incoming webhook (`T…`/`B…`/secret): `ok`, or `invalid_payload`, `no_text`, `invalid_blocks`… with a 4xx |
//! | `POST /api/chat.postMessage` | Slack's Web API: bearer token, `channel`, `text` and/or Block Kit `blocks`; `{"ok", "channel", "ts", "message"}` |
//! | `GET /_sandbox/stats`, `POST /_sandbox/stats/reset` | traffic and fault counters ([`SandboxStats`]), every vendor; the reset also clears the request log |
//! | `GET /_sandbox/requests` | the latest API requests ([`LoggedRequest`]): `?endpoint=` (substring), `?status=` (`429`, `4xx`, `timeout`, `dropped`), `?since=<seq>`, `?limit=` |
//! | `GET /_sandbox/slack/messages` | every accepted Slack message, oldest first (`?channel=`) |
//! | `POST /_sandbox/seed` | install a seed (JSON, as `--seed` reads): replaces the data and becomes what resets return to; `?mode=add` adds to both instead |
//! | `GET /_sandbox/{type}` | every live record with its associations (`?archived=true`: the archived ones) |
//! | `GET /_sandbox/duplicates` | groups of live tasks with the same subject, owner and associations |
//! | `GET`/`POST /_sandbox/config` | read or change `burst_per_10s`, `daily_limit`, `window_ms`, `search_per_second`, `slack_per_second`, `slack_window_ms`, `faults` |
//! | `POST /_sandbox/reset` | back to the seed, the startup limits and faults; clears Slack messages and the request log (Salesforce sessions and jobs are forgotten) |
//! | `GET /_sandbox/health` | liveness |
//!
//! Faults ([`Faults`]) are drawn from a seeded RNG: server errors (500/502/503 before
//! applying), added latency, hung requests, connections closed *after* a write was
//! applied, and per-record failures (HubSpot's 207s; Salesforce's per-record errors in
//! collection results and failed Bulk API rows). Each is counted under `faults` in the stats.
//!
//! `/crm` and `/services/data` requests need `Authorization: Bearer <token>` and pass
//! through one gate (`gate.rs`: auth, rate limit, faults, counters, rate-limit headers),
//! so new object types and vendors only add handlers and a `gate::Api`. The
//! Salesforce side is described in `salesforce/mod.rs`. Every vendor's requests (`/crm`,
//! `/services`, Slack's) also pass through the request log's middleware ([`requests`]),
//! which times and records each one; the gate notes the endpoint and injected faults.
//!
//! Slack allows one message per second per channel (`slack_per_second`); each webhook
//! is its own channel, named by its `B…` segment. With `slack_channels` in the seed,
//! `chat.postMessage` answers `channel_not_found` for any other channel.
//!
//! Archived records behave as in HubSpot: reads, updates and upserts no longer
//! find them (only reads with `archived=true` do), and their email is free for a
//! new record.

#[cfg(test)]
mod contract_tests;
mod errors;
#[cfg(test)]
mod fault_tests;
mod faults;
mod gate;
mod hubspot;
mod inspect;
mod limits;
#[cfg(test)]
mod object_tests;
#[cfg(test)]
pub(crate) mod openapi;
mod requests;
#[cfg(test)]
mod requests_tests;
mod salesforce;
mod seeding;
#[cfg(test)]
mod seeding_tests;
mod slack;
#[cfg(test)]
mod slack_tests;
mod stats;
mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::http::{Method, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use errors::ApiError;
use faults::{Connection, FaultState, KillableListener};
use limits::{DEFAULT_WINDOW_MS, Limits, RateLimiter};
use store::{ObjectStore, ObjectType};

pub use faults::{FaultCounts, Faults};
pub use inspect::DuplicateGroup;
pub use requests::{DEFAULT_REQUEST_LOG_SIZE, LoggedRequest, RequestLogPage};
pub use salesforce::{
    DEFAULT_BULK_PROCESSING_MS, DEFAULT_DAILY_API_REQUESTS, DEFAULT_TOKEN_LIFETIME_SECS,
    SalesforceConfig, SalesforceSeed, SeedRecord,
};
pub use slack::{SlackChannel, SlackMessage};
pub use stats::SandboxStats;

/// The sandbox's default address is `http://127.0.0.1:4010`.
pub const DEFAULT_PORT: u16 = 4010;

/// How to run a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where to listen; port 0 picks any free port (see [`SandboxConfig::ephemeral`]).
    pub listen: SocketAddr,
    /// HubSpot's `TEN_SECONDLY_ROLLING` limit; `0` means unlimited.
    pub burst_per_10s: u32,
    /// HubSpot's `DAILY` limit; `0` means unlimited.
    pub daily_limit: u64,
    /// When set, only this bearer token is accepted; otherwise any non-empty one.
    pub token: Option<String>,
    /// The owners and contacts the sandbox starts with (and returns to on reset).
    pub seed: Seed,
    /// Injected faults (none by default); `POST /_sandbox/config` changes them at runtime.
    pub faults: Faults,
    /// The search endpoints' own limit, requests per second (HubSpot: about 5); `0` means unlimited.
    pub search_per_second: u32,
    /// The Salesforce API's allocation, token lifetime, client credentials and Bulk API pace.
    pub salesforce: SalesforceConfig,
    /// Slack messages per second per channel (Slack: about 1); `0` means unlimited.
    pub slack_per_second: u32,
    /// How many requests `GET /_sandbox/requests` keeps; `0` turns the log off.
    pub request_log_size: usize,
}

impl Default for SandboxConfig {
    /// HubSpot's Free/Starter limits on `127.0.0.1:4010`, seeded with [`Seed::demo`].
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            burst_per_10s: 100,
            daily_limit: 250_000,
            token: None,
            seed: Seed::demo(),
            faults: Faults::default(),
            search_per_second: 5,
            salesforce: SalesforceConfig::default(),
            slack_per_second: slack::DEFAULT_MESSAGES_PER_SECOND,
            request_log_size: DEFAULT_REQUEST_LOG_SIZE,
        }
    }
}

impl SandboxConfig {
    /// The defaults on a free port of 127.0.0.1, for tests that run side by side.
    pub fn ephemeral() -> Self {
        SandboxConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..SandboxConfig::default()
        }
    }
}

/// The data a sandbox starts with. `Seed::default()` is empty; [`SandboxConfig::default`] uses [`Seed::demo`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Owners served by `/crm/v3/owners`; archived ones cannot be assigned.
    /// A seed file without `owners` keeps the demo's.
    #[serde(default = "demo_owners")]
    pub owners: Vec<Owner>,
    /// Contacts that exist before the first request, as property maps.
    #[serde(default)]
    pub contacts: Vec<BTreeMap<String, String>>,
    /// Companies (accounts) that exist before the first request, as property maps.
    #[serde(default)]
    pub companies: Vec<BTreeMap<String, String>>,
    /// Custom properties created in the account, by object type (`"contacts": ["lead_score"]`).
    /// Writing a property that is neither HubSpot's nor listed here fails the batch
    /// (`PROPERTY_DOESNT_EXIST`). A seed file without `properties` keeps the demo's.
    #[serde(default = "demo_properties")]
    pub properties: BTreeMap<String, Vec<String>>,
    /// The Salesforce org's users and records. A seed file without `salesforce` keeps the demo's.
    #[serde(default = "SalesforceSeed::demo")]
    pub salesforce: SalesforceSeed,
    /// Slack channels `chat.postMessage` may post to; without any, every channel is accepted.
    #[serde(default)]
    pub slack_channels: Vec<SlackChannel>,
}

fn demo_properties() -> BTreeMap<String, Vec<String>> {
    Seed::demo().properties
}

/// The properties a record of a type may carry: HubSpot's, any `hs_` one, and the seeded custom ones.
pub(crate) fn property_exists(
    custom: &BTreeMap<String, Vec<String>>,
    kind: ObjectType,
    name: &str,
) -> bool {
    name.starts_with("hs_")
        || kind.standard_properties().contains(&name)
        || kind.system_properties().contains(&name)
        || kind
            .paths()
            .iter()
            .filter_map(|p| custom.get(*p))
            .any(|names| names.iter().any(|n| n == name))
}

fn demo_owners() -> Vec<Owner> {
    Seed::demo().owners
}

impl Seed {
    /// Reads a seed from a JSON file: `{"owners": [...], "contacts": [{...}], "companies": [{...}]}`
    /// (see [`Seed::from_json`]).
    pub fn from_file(path: &std::path::Path) -> Result<Seed, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Seed::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Seed {
    /// Eight active owners, ids `"101"`..=`"108"` with emails `rep1@demo.handoff.dev`..`rep8@…`,
    /// and one archived owner, `"109"` (`rep9@demo.handoff.dev`). No contacts. Salesforce:
    /// the same people as users, after an integration user ([`SalesforceSeed::demo`]).
    pub fn demo() -> Seed {
        const NAMES: [(&str, &str); 9] = [
            ("Ava", "Chen"),
            ("Ben", "Okafor"),
            ("Carla", "Diaz"),
            ("Dev", "Sharma"),
            ("Elena", "Rossi"),
            ("Felix", "Wagner"),
            ("Grace", "Kim"),
            ("Hugo", "Martin"),
            ("Ivy", "Lopez"),
        ];
        // A fixed date keeps owner payloads identical from run to run.
        let created = Utc
            .with_ymd_and_hms(2024, 1, 15, 9, 0, 0)
            .single()
            .unwrap_or_default();
        let owners = NAMES
            .iter()
            .zip(1_u64..)
            .map(|((first, last), n)| Owner {
                id: (100 + n).to_string(),
                email: format!("rep{n}@demo.handoff.dev"),
                first_name: (*first).to_owned(),
                last_name: (*last).to_owned(),
                user_id: 9_000_100 + n,
                archived: n == 9,
                teams: Vec::new(),
                created_at: created,
                updated_at: created,
            })
            .collect();
        Seed {
            owners,
            contacts: Vec::new(),
            companies: Vec::new(),
            properties: BTreeMap::from([
                (
                    "contacts".to_string(),
                    [
                        "lead_score",
                        "nurture_status",
                        "handoff_date",
                        "territory",
                        "lead_source",
                        "last_event_time",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                (
                    "companies".to_string(),
                    vec!["nurture_status".to_string(), "handoff_date".to_string()],
                ),
                (
                    "deals".to_string(),
                    vec!["nurture_status".to_string(), "handoff_date".to_string()],
                ),
                ("tasks".to_string(), vec!["handoff_task_key".to_string()]),
            ]),
            salesforce: SalesforceSeed::demo(),
            slack_channels: Vec::new(),
        }
    }
}

/// A HubSpot owner (a user records can be assigned to), as `PublicOwner` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The owner id, the value of `hubspot_owner_id`.
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    /// The user id behind the owner (a different number from `id`, as in HubSpot).
    pub user_id: u64,
    /// Archived owners are listed only with `archived=true` and cannot be assigned.
    pub archived: bool,
    pub teams: Vec<OwnerTeam>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A team an owner belongs to (`PublicTeam`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerTeam {
    pub id: String,
    pub name: String,
    pub primary: bool,
}

/// One stored CRM object as `/_sandbox/contacts` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub id: String,
    pub properties: BTreeMap<String, String>,
    /// The records it was associated with on create (tasks: contacts, companies, deals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associations: Vec<StoredAssociation>,
}

/// One association of a [`StoredObject`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StoredAssociation {
    /// The object type, as in `/crm/v3/objects/{to}`: `"contacts"`, `"companies"`, …
    pub to: String,
    pub id: String,
    /// HubSpot's association type id (204: task → contact, 192: task → company, 216: task → deal).
    pub type_id: i32,
}

/// A running sandbox; stopped by [`Sandbox::shutdown`] or when dropped.
#[derive(Debug)]
pub struct Sandbox {
    addr: SocketAddr,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Sandbox {
    /// Binds `config.listen` and serves in a background task; returns once it is accepting.
    pub async fn start(config: SandboxConfig) -> io::Result<Sandbox> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = SandboxState::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, state.clone(), async {
            // A dropped sender stops the server too.
            let _ = stopped.await;
        }));
        tracing::info!(%addr, "sandbox listening");
        Ok(Sandbox {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, with a loopback IP when listening on all interfaces.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// The traffic counters, as `GET /_sandbox/stats` returns them.
    pub fn stats(&self) -> SandboxStats {
        self.state.lock().stats.clone()
    }

    /// Every live (not archived) contact, ordered by id.
    pub fn contacts(&self) -> Vec<StoredObject> {
        self.state.lock().stored(ObjectType::Contacts, false)
    }

    /// Every live task, ordered by id.
    pub fn tasks(&self) -> Vec<StoredObject> {
        self.state.lock().stored(ObjectType::Tasks, false)
    }

    /// Groups of live tasks sharing subject, owner and associations (`GET /_sandbox/duplicates`).
    pub fn duplicate_tasks(&self) -> Vec<DuplicateGroup> {
        inspect::duplicate_tasks(&self.state.lock())
    }

    /// Replaces the injected faults (as `POST /_sandbox/config` with `faults` does) and re-seeds.
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults.set(faults);
    }

    /// Every archived contact, ordered by id.
    pub fn archived_contacts(&self) -> Vec<StoredObject> {
        self.state.lock().stored(ObjectType::Contacts, true)
    }

    /// Every accepted Slack message, oldest first (`GET /_sandbox/slack/messages`).
    pub fn slack_messages(&self) -> Vec<SlackMessage> {
        self.state.lock().slack.messages.clone()
    }

    /// Back to the seed, the startup limits and zero counters (`POST /_sandbox/reset`).
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "sandbox server failed"),
                Err(error) => tracing::warn!(%error, "sandbox server task failed"),
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs a sandbox on `config.listen` until `shutdown` resolves (`handoff sandbox --port N`).
pub async fn serve(
    config: SandboxConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "sandbox listening");
    run(listener, SandboxState::new(config), shutdown).await
}

async fn run(
    listener: TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cancel = state.cancel.clone();
    let app = router(state).into_make_service_with_connect_info::<Connection>();
    axum::serve(KillableListener(listener), app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Hung requests give up, so a graceful shutdown does not wait them out.
            cancel.cancel();
        })
        .await
}

fn router(state: Shared) -> Router {
    // Every vendor's routes go in here, so the request log sees all of their traffic.
    let api = Router::new()
        .nest("/crm", hubspot::router(state.clone()))
        .nest("/services", salesforce::router(state.clone()))
        .merge(slack::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            requests::record,
        ));
    Router::new()
        .merge(api)
        .merge(inspect::router())
        .merge(salesforce::inspect_router())
        .merge(slack::inspect_router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> Response {
    ApiError::NoRoute(format!("{method} {}", uri.path())).into_response()
}

async fn method_not_allowed(method: Method) -> Response {
    ApiError::MethodNotAllowed(method.to_string()).into_response()
}

/// The state every handler shares.
pub(crate) type Shared = Arc<SandboxState>;

#[derive(Debug)]
pub(crate) struct SandboxState {
    /// The startup configuration, kept so a reset can return to it.
    config: SandboxConfig,
    /// The seed a reset returns to: `config.seed` until `POST /_sandbox/seed` replaces it.
    seed: Mutex<Seed>,
    /// parking_lot's lock: every request takes it two or three times, and under
    /// contention its adaptive spinning keeps worker threads off the futex.
    data: parking_lot::Mutex<Data>,
    /// Its own lock, so logging a request never waits on a handler holding `data`.
    requests: Mutex<requests::RequestLog>,
    /// Cancelled at shutdown; hung (timed-out) requests wait on it.
    pub(crate) cancel: CancellationToken,
}

/// Everything that changes while the sandbox runs; one lock, never held across an await.
#[derive(Debug)]
pub(crate) struct Data {
    pub store: ObjectStore,
    pub owners: Vec<Owner>,
    /// Custom properties by object type path ([`Seed::properties`]).
    pub properties: BTreeMap<String, Vec<String>>,
    pub limiter: RateLimiter,
    /// Search requests pass this limiter instead of `limiter` (HubSpot exempts them from the burst window).
    pub search_limiter: RateLimiter,
    pub stats: SandboxStats,
    pub faults: FaultState,
    pub salesforce: salesforce::SalesforceState,
    pub slack: slack::SlackState,
}

/// How often [`SandboxState::lock_async`] yields before it blocks.
const LOCK_YIELDS: usize = 32;

impl SandboxState {
    fn new(config: SandboxConfig) -> Shared {
        let data = Data::seeded(&config);
        Arc::new(SandboxState {
            seed: Mutex::new(config.seed.clone()),
            requests: Mutex::new(requests::RequestLog::new(config.request_log_size)),
            config,
            data: parking_lot::Mutex::new(data),
            cancel: CancellationToken::new(),
        })
    }

    /// Locks the data; a handler that panicked mid-update leaves it usable (parking_lot
    /// locks are never poisoned).
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Data> {
        self.data.lock()
    }

    /// Locks the data from a request's task without blocking its worker thread at
    /// first: while another request holds the lock, this one yields, so the thread
    /// parses and answers other requests meanwhile instead of sleeping on the lock.
    /// After a few tries it waits like [`SandboxState::lock`].
    pub(crate) async fn lock_async(&self) -> parking_lot::MutexGuard<'_, Data> {
        for _ in 0..LOCK_YIELDS {
            if let Some(data) = self.data.try_lock() {
                return data;
            }
            tokio::task::yield_now().await;
        }
        self.data.lock()
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.config.token.as_deref()
    }

    pub(crate) fn reset(&self) {
        self.reseed(self.seed());
    }

    /// Back to `seed`, which later resets return to; the startup limits and faults, an empty log.
    pub(crate) fn reseed(&self, seed: Seed) {
        let config = SandboxConfig {
            seed,
            ..self.config.clone()
        };
        let data = Data::seeded(&config);
        *self.lock() = data;
        self.set_seed(config.seed);
        self.requests().clear();
    }

    /// The seed a reset returns to.
    pub(crate) fn seed(&self) -> Seed {
        self.seed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub(crate) fn set_seed(&self, seed: Seed) {
        *self
            .seed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = seed;
    }

    pub(crate) fn requests(&self) -> MutexGuard<'_, requests::RequestLog> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn logs_requests(&self) -> bool {
        self.config.request_log_size > 0
    }
}

impl Data {
    fn seeded(config: &SandboxConfig) -> Data {
        let mut store = ObjectStore::new();
        let now = Utc::now();
        let contacts = store.table_mut(ObjectType::Contacts);
        for properties in &config.seed.contacts {
            contacts.create(properties, now);
        }
        let companies = store.table_mut(ObjectType::Companies);
        for properties in &config.seed.companies {
            companies.create(properties, now);
        }
        let (salesforce, problems) =
            salesforce::SalesforceState::seeded(&config.salesforce, &config.seed.salesforce);
        for problem in problems {
            tracing::warn!(%problem, "sandbox seed record skipped");
        }
        Data {
            salesforce,
            store,
            owners: config.seed.owners.clone(),
            properties: config.seed.properties.clone(),
            limiter: RateLimiter::new(Limits {
                burst_per_10s: config.burst_per_10s,
                daily_limit: config.daily_limit,
                window_ms: DEFAULT_WINDOW_MS,
            }),
            search_limiter: RateLimiter::search(config.search_per_second),
            stats: SandboxStats::default(),
            faults: FaultState::new(config.faults.clone()),
            slack: slack::SlackState::new(config.slack_per_second, &config.seed.slack_channels),
        }
    }

    /// The live records of `kind`, or with `archived` the archived ones.
    pub(crate) fn stored(&self, kind: ObjectType, archived: bool) -> Vec<StoredObject> {
        let table = self.store.table(kind);
        let records: Box<dyn Iterator<Item = &store::Record>> = if archived {
            Box::new(table.archived_records())
        } else {
            Box::new(table.records())
        };
        records
            .map(|record| StoredObject {
                id: record.id.to_string(),
                properties: record.properties.clone(),
                associations: record
                    .associations
                    .iter()
                    .map(|link| StoredAssociation {
                        to: link.to.path().to_owned(),
                        id: link.id.to_string(),
                        type_id: link.type_id,
                    })
                    .collect(),
            })
            .collect()
    }
}
