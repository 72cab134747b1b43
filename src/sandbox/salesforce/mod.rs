//! Salesforce's REST API (`/services`): OAuth tokens, sObject Collections, single
//! records, SOQL queries, Bulk API 2.0 ingest and limits, over an in-memory org of
//! `User`, `Lead`, `Contact`, `Account` and `Task` records.
//!
//! Every `/services/data/vNN.N/…` request (any version) passes the shared gate with
//! Salesforce's rules: a bearer token (see [`oauth`] for which), a rolling 24-hour
//! API allocation reported as `Sforce-Limit-Info: api-usage=N/M` on every answer to an
//! authenticated request (403 `REQUEST_LIMIT_EXCEEDED` once spent), and the
//! sandbox's seeded faults. Errors are Salesforce's JSON arrays.
//!
//! The Salesforce clock (token expiry, the API window, Bulk API processing, record
//! dates) is the wall clock plus an offset that `POST /_sandbox/salesforce/clock`
//! moves forward, so tests need not sleep.

mod bulk;
mod collections;
mod errors;
mod ids;
mod inspect;
mod oauth;
mod query;
mod schema;
mod soql;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::gate::{self, Api, Refusal};
use super::limits::{Admission, Limits, RateLimiter};
use super::{Data, SandboxState, Shared};
use errors::SfError;
use schema::SObject;
use store::{Org, Writer};

pub(super) use inspect::router as inspect_router;

/// A production org's allocation before per-licence additions.
pub const DEFAULT_DAILY_API_REQUESTS: u32 = 100_000;
/// Salesforce's default session timeout: two hours.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 7_200;
/// How long a closed Bulk API job waits before it is processed.
pub const DEFAULT_BULK_PROCESSING_MS: u64 = 1_000;

/// The API allocation is counted over a rolling window of this length.
const API_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;

/// How the Salesforce API behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesforceConfig {
    /// API requests allowed in any rolling 24 hours (at least 1).
    pub daily_api_requests: u32,
    /// How long an access token from `/services/oauth2/token` stays valid.
    pub token_lifetime_secs: u64,
    /// When set, the only client id the token endpoint accepts (also as a JWT's `iss`).
    pub client_id: Option<String>,
    /// When set, the only client secret the client-credentials grant accepts.
    pub client_secret: Option<String>,
    /// How long after `UploadComplete` a Bulk API job is processed.
    pub bulk_processing_ms: u64,
}

impl Default for SalesforceConfig {
    fn default() -> Self {
        SalesforceConfig {
            daily_api_requests: DEFAULT_DAILY_API_REQUESTS,
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            client_id: None,
            client_secret: None,
            bulk_processing_ms: DEFAULT_BULK_PROCESSING_MS,
        }
    }
}

/// A seeded record: field name → JSON value (`Id` optional, an 18-character id of the type).
pub type SeedRecord = Map<String, Value>;

/// The org a sandbox starts with. `SalesforceSeed::default()` is empty; a seed file's
/// `salesforce` object without `users` keeps the demo's users.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceSeed {
    /// The first active one is the API user: the owner of records created without
    /// `OwnerId` and the user of sessions that name no other.
    #[serde(default = "demo_users")]
    pub users: Vec<SeedRecord>,
    #[serde(default)]
    pub accounts: Vec<SeedRecord>,
    #[serde(default)]
    pub contacts: Vec<SeedRecord>,
    #[serde(default)]
    pub leads: Vec<SeedRecord>,
    #[serde(default)]
    pub tasks: Vec<SeedRecord>,
    /// More external-id fields by type, beside every `Lead`, `Contact` and `Account`'s
    /// `External_Id__c`: `{"Lead": ["Warehouse_Key__c"]}`.
    #[serde(default)]
    pub external_id_fields: BTreeMap<String, Vec<String>>,
}

fn demo_users() -> Vec<SeedRecord> {
    SalesforceSeed::demo().users
}

impl SalesforceSeed {
    /// An integration user (the API user, `integration@demo.handoff.dev`), then the
    /// demo's reps `rep1@demo.handoff.dev` … `rep8@…` (active) and `rep9@…` (inactive),
    /// the same people as the HubSpot owners, in several time zones. User number `n`
    /// (from 1, in this order) has id `ids::make("005", n)`.
    pub fn demo() -> SalesforceSeed {
        const REPS: [(&str, &str, &str); 9] = [
            ("Ava", "Chen", "America/New_York"),
            ("Ben", "Okafor", "America/Chicago"),
            ("Carla", "Diaz", "America/Denver"),
            ("Dev", "Sharma", "America/Los_Angeles"),
            ("Elena", "Rossi", "Europe/Rome"),
            ("Felix", "Wagner", "Europe/Berlin"),
            ("Grace", "Kim", "Asia/Seoul"),
            ("Hugo", "Martin", "Europe/Paris"),
            ("Ivy", "Lopez", "America/New_York"),
        ];
        let user = |email: &str, first: &str, last: &str, zone: &str, active: bool| {
            let alias: String = first
                .chars()
                .take(1)
                .chain(last.chars().take(4))
                .collect::<String>()
                .to_lowercase();
            let value = json!({
                "Username": email,
                "Email": email,
                "FirstName": first,
                "LastName": last,
                "Alias": alias,
                "IsActive": active,
                "TimeZoneSidKey": zone,
            });
            match value {
                Value::Object(map) => map,
                _ => Map::new(),
            }
        };
        let mut users = vec![user(
            "integration@demo.handoff.dev",
            "Handoff",
            "Integration",
            "UTC",
            true,
        )];
        for ((first, last, zone), n) in REPS.iter().zip(1..) {
            users.push(user(
                &format!("rep{n}@demo.handoff.dev"),
                first,
                last,
                zone,
                n != 9,
            ));
        }
        SalesforceSeed {
            users,
            ..SalesforceSeed::default()
        }
    }

    /// Whether every seeded record is one the org accepts; the first problem otherwise.
    pub fn check(&self) -> Result<(), String> {
        let (_, problems) = SalesforceState::seeded(&SalesforceConfig::default(), self);
        problems.into_iter().next().map_or(Ok(()), Err)
    }
}

/// Who a request runs as (from its token), for handlers.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: String,
}

/// The API allocation after this request, for `/limits`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    used: u64,
    max: u64,
}

/// Everything Salesforce that changes while the sandbox runs (inside [`Data`]).
#[derive(Debug)]
pub(crate) struct SalesforceState {
    pub(crate) org: Org,
    pub(crate) tokens: HashMap<String, oauth::Issued>,
    pub(crate) limiter: RateLimiter,
    pub(crate) jobs: BTreeMap<String, bulk::Job>,
    pub(crate) job_count: u64,
    pub(crate) cursors: Vec<(String, query::Cursor)>,
    pub(crate) org_id: String,
    /// The API user's id (empty when the seed has no active user).
    pub(crate) api_user: String,
    pub(crate) config: SalesforceConfig,
    clock_offset: Duration,
}

impl SalesforceState {
    /// A fresh org from `seed`, and what in the seed it refused.
    pub(crate) fn seeded(
        config: &SalesforceConfig,
        seed: &SalesforceSeed,
    ) -> (SalesforceState, Vec<String>) {
        let mut problems = Vec::new();
        let mut external = BTreeMap::new();
        for (name, fields) in &seed.external_id_fields {
            match SObject::from_name(name) {
                Some(kind) => {
                    external.insert(kind, fields.clone());
                }
                None => problems.push(format!(
                    "salesforce.external_id_fields: unknown sObject {name}"
                )),
            }
        }
        let mut org = Org::new(&external);
        let now = Utc::now();
        let mut api_user = String::new();
        let groups: [(&str, SObject, &Vec<SeedRecord>); 5] = [
            ("users", SObject::User, &seed.users),
            ("accounts", SObject::Account, &seed.accounts),
            ("contacts", SObject::Contact, &seed.contacts),
            ("leads", SObject::Lead, &seed.leads),
            ("tasks", SObject::Task, &seed.tasks),
        ];
        for (group, kind, records) in groups {
            for (n, record) in records.iter().enumerate() {
                let mut writer = Writer::seeding(&mut org, &api_user, now);
                match seed_one(&mut writer, kind, record) {
                    Ok(id) => {
                        let active = writer
                            .org()
                            .get(&id)
                            .is_some_and(|r| r.get("IsActive") != &Value::Bool(false));
                        if kind == SObject::User && api_user.is_empty() && active {
                            api_user = id;
                        }
                    }
                    Err(problem) => problems.push(format!("salesforce.{group}[{n}]: {problem}")),
                }
            }
        }
        let state = SalesforceState {
            org,
            tokens: HashMap::new(),
            limiter: RateLimiter::new(Limits {
                burst_per_10s: config.daily_api_requests.max(1),
                daily_limit: 0,
                window_ms: API_WINDOW_MS,
            }),
            jobs: BTreeMap::new(),
            job_count: 0,
            cursors: Vec::new(),
            org_id: ids::make(ids::ORG, 1),
            api_user,
            config: config.clone(),
            clock_offset: Duration::ZERO,
        };
        (state, problems)
    }

    /// Now on the Salesforce clock, as a monotonic instant and as a date-time.
    pub(crate) fn now(&self) -> (Instant, DateTime<Utc>) {
        let wall = Utc::now()
            + chrono::Duration::from_std(self.clock_offset).unwrap_or(chrono::Duration::zero());
        (Instant::now() + self.clock_offset, wall)
    }

    pub(crate) fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
    }

    pub(crate) fn clock_offset(&self) -> Duration {
        self.clock_offset
    }
}

fn seed_one(writer: &mut Writer<'_>, kind: SObject, record: &SeedRecord) -> Result<String, String> {
    let parsed = collections::parse_record(&Value::Object(record.clone()), Some(kind))
        .map_err(|e| e.message)?;
    let id = match parsed.id {
        None => None,
        Some(text) => {
            let id = ids::normalize(&text)
                .filter(|id| SObject::of_id(id) == Some(kind) && writer.org().get(id).is_none())
                .ok_or_else(|| format!("Id {text} is not a free {} id", kind.name()))?;
            Some(id)
        }
    };
    writer
        .create(kind, parsed.changes, id)
        .map_err(|e| format!("{}: {}", e.status_code, e.message))
}

/// The `/services` router, to be nested under `/services`.
pub(super) fn router(state: Shared) -> Router<Shared> {
    let data = bulk::routes(query::routes(collections::routes(Router::new())))
        .route("/{version}/limits", get(limits))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(check_version))
        // Outermost, so unknown routes are authenticated, limited and counted too.
        .layer(middleware::from_fn_with_state(state.clone(), rest_gate));
    let login = Router::new()
        .route("/oauth2/token", post(oauth::token))
        .layer(middleware::from_fn_with_state(state, login_gate));
    Router::new()
        .nest("/data", data)
        .merge(login)
        .fallback(services_fallback)
}

/// Any other path under `/services`: a Slack incoming webhook, or Salesforce's 404.
async fn services_fallback(
    State(state): State<Shared>,
    method: Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    // Inside the nest the path may have lost its `/services`.
    let path = uri.path();
    let path = if path.starts_with("/services/") {
        path.to_owned()
    } else {
        format!("/services{path}")
    };
    super::slack::webhook_fallback(&state, &method, &path, &body)
        .unwrap_or_else(|| SfError::not_found().into_response())
}

async fn not_found() -> Response {
    SfError::not_found().into_response()
}

async fn method_not_allowed(method: Method) -> Response {
    SfError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("HTTP Method '{method}' not allowed."),
    )
    .into_response()
}

/// `vNN.N` only: Salesforce answers other version segments with a 404.
async fn check_version(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let rest = path.strip_prefix("/services/data").unwrap_or(path);
    let segment = rest.trim_start_matches('/').split('/').next().unwrap_or("");
    if valid_version(segment) {
        next.run(request).await
    } else {
        SfError::not_found().into_response()
    }
}

fn valid_version(segment: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    segment
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(major, minor)| digits(major) && digits(minor))
}

/// `GET /limits`: the API allocation after this request.
async fn limits(Extension(usage): Extension<Usage>) -> Response {
    axum::Json(json!({
        "DailyApiRequests": {"Max": usage.max, "Remaining": usage.max.saturating_sub(usage.used)},
    }))
    .into_response()
}

async fn rest_gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    gate::pass(&Rest, &state, request, next).await
}

async fn login_gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    gate::pass(&Login, &state, request, next).await
}

/// The REST API at the gate.
struct Rest;

impl Api for Rest {
    type Quota = Usage;

    fn authenticate(&self, state: &SandboxState, request: &mut Request) -> Result<(), Refusal> {
        let refused = || Box::new(SfError::invalid_session().into_response());
        let token = gate::bearer_token(request.headers())
            .ok_or_else(refused)?
            .to_owned();
        let user = state
            .lock()
            .salesforce
            .session_user(&token, state.token())
            .ok_or_else(refused)?;
        request.extensions_mut().insert(Caller { user });
        Ok(())
    }

    fn admit(&self, data: &mut Data, request: &mut Request) -> Result<Usage, Refusal> {
        let sf = &mut data.salesforce;
        let (now, wall) = sf.now();
        let max = u64::from(sf.config.daily_api_requests.max(1));
        match sf.limiter.admit(now, wall) {
            Admission::Admitted(quota) => {
                let remaining = quota
                    .burst
                    .map_or(max, |(_, remaining)| u64::from(remaining));
                let usage = Usage {
                    used: max.saturating_sub(remaining),
                    max,
                };
                request.extensions_mut().insert(usage);
                Ok(usage)
            }
            Admission::Throttled { .. } => {
                let mut response = SfError::request_limit().into_response();
                self.stamp(&Usage { used: max, max }, response.headers_mut());
                Err(Box::new(response))
            }
        }
    }

    fn stamp(&self, usage: &Usage, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&format!("api-usage={}/{}", usage.used, usage.max))
        {
            headers.insert(HeaderName::from_static("sforce-limit-info"), value);
        }
    }

    fn injected(&self, status: u16) -> Response {
        SfError::injected(status).into_response()
    }

    fn is_write(&self, request: &Request) -> bool {
        request.method() != Method::GET
    }

    fn mount(&self) -> &'static str {
        "/services/data"
    }
}

/// The token endpoint at the gate: no token and no allocation, but counted and faulted.
struct Login;

impl Api for Login {
    type Quota = ();

    fn authenticate(&self, _: &SandboxState, _: &mut Request) -> Result<(), Refusal> {
        Ok(())
    }

    fn admit(&self, _: &mut Data, _: &mut Request) -> Result<(), Refusal> {
        Ok(())
    }

    fn stamp(&self, (): &(), _: &mut HeaderMap) {}

    fn injected(&self, status: u16) -> Response {
        SfError::injected(status).into_response()
    }

    fn is_write(&self, _: &Request) -> bool {
        false
    }

    fn mount(&self) -> &'static str {
        "/services"
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["v58.0", "v62.0", "v9.1"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in ["58.0", "v58", "vX.0", "v58.", "latest", ""] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn the_demo_seed_is_valid() {
        assert_eq!(SalesforceSeed::demo().check(), Ok(()));
        let (state, problems) =
            SalesforceState::seeded(&SalesforceConfig::default(), &SalesforceSeed::demo());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(state.api_user, ids::make(ids::USER, 1));
        assert_eq!(state.org.records(SObject::User).count(), 10);
    }

    #[test]
    fn bad_seed_records_are_named() {
        let seed: SalesforceSeed = serde_json::from_value(json!({
            "leads": [{"LastName": "x"}],
        }))
        .expect("parses");
        let problem = seed.check().expect_err("Company is required");
        assert!(
            problem.starts_with("salesforce.leads[0]: REQUIRED_FIELD_MISSING"),
            "{problem}"
        );
    }
}
