//! The per-request log behind `GET /_sandbox/requests`: the latest API requests in a bounded ring.
//!
//! One middleware ([`record`]) wraps every vendor router, so HubSpot, Slack and any
//! vendor added later are logged without their handlers knowing. What only the inner
//! layers know (the endpoint's route, an injected fault, a request left hanging, how
//! many records a batch carried) they leave on a [`Note`] reached through a task-local,
//! so nothing has to be threaded through handler signatures. Bodies and headers are
//! never stored; query values that look like credentials and Slack webhook secrets are
//! masked when the log is read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Shared;
use super::errors::ApiError;

/// How many requests the log keeps by default; older ones are evicted.
pub const DEFAULT_REQUEST_LOG_SIZE: usize = 10_000;

/// How many entries `GET /_sandbox/requests` returns when no `limit` is given.
const DEFAULT_LIMIT: usize = 1_000;

tokio::task_local! {
    static NOTE: Arc<Note>;
}

/// A fault injected into one request; a request may carry several (latency and a partial failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Latency,
    Error,
    Timeout,
    DropAfterApply,
    Partial,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::Latency,
        Fault::Error,
        Fault::Timeout,
        Fault::DropAfterApply,
        Fault::Partial,
    ];

    fn bit(self) -> u8 {
        match self {
            Fault::Latency => 1,
            Fault::Error => 2,
            Fault::Timeout => 4,
            Fault::DropAfterApply => 8,
            Fault::Partial => 16,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::Latency => "latency",
            Fault::Error => "error",
            Fault::Timeout => "timeout",
            Fault::DropAfterApply => "drop_after_apply",
            Fault::Partial => "partial",
        }
    }
}

/// A request that got no answer: it hung, or its connection was closed after the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unanswered {
    Timeout,
    Dropped,
}

/// What the inner layers tell the log about the request being served.
#[derive(Debug, Default)]
pub(crate) struct Note(Mutex<NoteData>);

#[derive(Debug, Default)]
struct NoteData {
    endpoint: Option<String>,
    faults: u8,
    unanswered: Option<Unanswered>,
    records: Option<u32>,
}

impl Note {
    fn lock(&self) -> MutexGuard<'_, NoteData> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs `f` on the current request's note; outside a logged request (unit tests) it does nothing.
fn with_note(f: impl FnOnce(&mut NoteData)) {
    let _ = NOTE.try_with(|note| f(&mut note.lock()));
}

/// Names the endpoint (`"METHOD /route"`, as in the stats) the request was served by.
pub(crate) fn note_endpoint(endpoint: &str) {
    with_note(|note| note.endpoint = Some(endpoint.to_owned()));
}

pub(crate) fn note_fault(fault: Fault) {
    with_note(|note| note.faults |= fault.bit());
}

/// Marks the request as never answered, and why.
pub(crate) fn note_unanswered(why: Unanswered) {
    with_note(|note| note.unanswered = Some(why));
}

/// How many records (batch inputs) the request's body carried.
pub(crate) fn note_records(records: usize) {
    with_note(|note| note.records = Some(u32::try_from(records).unwrap_or(u32::MAX)));
}

/// How a logged request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Timeout,
    Dropped,
    /// The client went away before the answer was ready.
    Cancelled,
}

impl Outcome {
    fn matches(self, filter: &StatusFilter) -> bool {
        match (filter, self) {
            (StatusFilter::Code(code), Outcome::Status(status)) => *code == status,
            (StatusFilter::Class(class), Outcome::Status(status)) => status / 100 == *class,
            (StatusFilter::Timeout, Outcome::Timeout)
            | (StatusFilter::Dropped, Outcome::Dropped)
            | (StatusFilter::Cancelled, Outcome::Cancelled) => true,
            _ => false,
        }
    }
}

/// One logged request, as kept in the ring (cheap to build; rendered only when read).
#[derive(Debug)]
struct Entry {
    seq: u64,
    at: DateTime<Utc>,
    method: Method,
    uri: Uri,
    endpoint: String,
    outcome: Outcome,
    latency: Duration,
    records: Option<u32>,
    faults: u8,
}

/// The latest requests, oldest first, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct RequestLog {
    capacity: usize,
    entries: VecDeque<Entry>,
    /// The sequence number of the last request logged; it never goes back, even across
    /// resets, so a client polling with `since` never skips requests.
    last_seq: u64,
    /// Requests pushed out of the ring since the last clear.
    evicted: u64,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        RequestLog {
            capacity,
            // Grows as needed: a sandbox that serves ten requests should not hold 10,000 slots.
            entries: VecDeque::new(),
            last_seq: 0,
            evicted: 0,
        }
    }

    /// Forgets every entry; the sequence keeps counting.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.evicted = 0;
    }

    fn push(&mut self, mut entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        self.last_seq += 1;
        entry.seq = self.last_seq;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.evicted += 1;
        }
        self.entries.push_back(entry);
    }
}

/// The log's side of one request: built when it arrives, written when it ends,
/// or when its future is dropped (a hung request whose client gave up).
struct Pending {
    state: Shared,
    note: Arc<Note>,
    method: Method,
    uri: Uri,
    matched: Option<MatchedPath>,
    at: DateTime<Utc>,
    started: Instant,
    done: bool,
}

impl Pending {
    fn finish(&mut self, status: Option<u16>) {
        self.done = true;
        let latency = self.started.elapsed();
        let note = std::mem::take(&mut *self.note.lock());
        let outcome = match (note.unanswered, status) {
            (Some(Unanswered::Timeout), _) => Outcome::Timeout,
            (Some(Unanswered::Dropped), _) => Outcome::Dropped,
            (None, Some(status)) => Outcome::Status(status),
            (None, None) => Outcome::Cancelled,
        };
        let endpoint = note.endpoint.unwrap_or_else(|| {
            let path = self
                .matched
                .as_ref()
                .map_or_else(|| self.uri.path(), |matched| matched.as_str());
            format!("{} {path}", self.method)
        });
        let entry = Entry {
            seq: 0,
            at: self.at,
            method: std::mem::take(&mut self.method),
            uri: std::mem::take(&mut self.uri),
            endpoint,
            outcome,
            latency,
            records: note.records,
            faults: note.faults,
        };
        self.state.requests().push(entry);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.finish(None);
        }
    }
}

/// The middleware around every vendor router: times the request and logs it.
pub(super) async fn record(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if !state.logs_requests() {
        return next.run(request).await;
    }
    let note = Arc::new(Note::default());
    let mut pending = Pending {
        state: state.clone(),
        note: note.clone(),
        method: request.method().clone(),
        uri: request.uri().clone(),
        matched: request.extensions().get::<MatchedPath>().cloned(),
        at: Utc::now(),
        started: Instant::now(),
        done: false,
    };
    let response = NOTE.scope(note, next.run(request)).await;
    pending.finish(Some(response.status().as_u16()));
    response
}

/// `?status=`: a code (`429`), a class (`4xx`), or `timeout`, `dropped`, `cancelled`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StatusFilter {
    Code(u16),
    Class(u16),
    Timeout,
    Dropped,
    Cancelled,
}

impl StatusFilter {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        match text.as_str() {
            "timeout" => return Ok(StatusFilter::Timeout),
            "dropped" => return Ok(StatusFilter::Dropped),
            "cancelled" => return Ok(StatusFilter::Cancelled),
            _ => {}
        }
        if let Some(class) = text.strip_suffix("xx")
            && let Ok(class @ 1..=5) = class.parse::<u16>()
        {
            return Ok(StatusFilter::Class(class));
        }
        match text.parse::<u16>() {
            Ok(code @ 100..=599) => Ok(StatusFilter::Code(code)),
            _ => Err(format!(
                "status must be an HTTP status (429), a class (4xx), timeout, dropped or cancelled; got {text:?}"
            )),
        }
    }
}

/// The query of `GET /_sandbox/requests`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestsQuery {
    /// Keeps requests whose endpoint (`"POST /crm/v3/objects/contacts/batch/upsert"`) contains this.
    endpoint: Option<String>,
    status: Option<String>,
    /// Keeps requests with a sequence number above this one.
    since: Option<u64>,
    limit: Option<usize>,
}

/// One request as `GET /_sandbox/requests` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Increases by one per logged request, across resets.
    pub seq: u64,
    /// When the request arrived (RFC 3339, milliseconds).
    pub time: String,
    pub method: String,
    /// Path and query, with credentials masked (`***`).
    pub path: String,
    /// `"METHOD /route"`, the key the stats count it under.
    pub endpoint: String,
    /// The HTTP status, or `"timeout"`, `"dropped"` or `"cancelled"` when none was sent.
    pub status: serde_json::Value,
    /// From arrival until the answer was ready (before its body was sent).
    pub latency_ms: f64,
    /// The records (batch inputs) in the body, for endpoints that take them.
    pub records: Option<u32>,
    /// The faults injected into it: `latency`, `error`, `timeout`, `drop_after_apply`, `partial`.
    pub faults: Vec<String>,
}

/// The answer of `GET /_sandbox/requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLogPage {
    /// How many entries the log keeps.
    pub capacity: usize,
    /// Entries pushed out of the log since it was last cleared.
    pub evicted: u64,
    /// How many logged requests match the filters (before `limit`).
    pub matched: usize,
    /// The largest `seq` returned (or `since` when none was): pass it as `since` to read on.
    pub next_since: u64,
    /// Oldest first.
    pub requests: Vec<LoggedRequest>,
}

impl RequestLog {
    /// Applies the filters. With `since`, the first `limit` matches after it (to read
    /// forward); without, the last `limit` matches (the most recent).
    pub(super) fn page(&self, query: &RequestsQuery) -> Result<RequestLogPage, String> {
        let status = query
            .status
            .as_deref()
            .map(StatusFilter::parse)
            .transpose()?;
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        let since = query.since.unwrap_or(0);
        let matching: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|entry| entry.seq > since)
            .filter(|entry| {
                query
                    .endpoint
                    .as_deref()
                    .is_none_or(|wanted| entry.endpoint.contains(wanted))
            })
            .filter(|entry| {
                status
                    .as_ref()
                    .is_none_or(|filter| entry.outcome.matches(filter))
            })
            .collect();
        let matched = matching.len();
        let chosen = if query.since.is_some() {
            &matching[..limit.min(matched)]
        } else {
            &matching[matched - limit.min(matched)..]
        };
        Ok(RequestLogPage {
            capacity: self.capacity,
            evicted: self.evicted,
            matched,
            next_since: chosen.last().map_or(since, |entry| entry.seq),
            requests: chosen.iter().map(|entry| view(entry)).collect(),
        })
    }
}

fn view(entry: &Entry) -> LoggedRequest {
    LoggedRequest {
        seq: entry.seq,
        time: super::store::timestamp(entry.at),
        method: entry.method.to_string(),
        path: masked(&entry.uri),
        endpoint: entry.endpoint.clone(),
        status: match entry.outcome {
            Outcome::Status(status) => status.into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Dropped => "dropped".into(),
            Outcome::Cancelled => "cancelled".into(),
        },
        latency_ms: (entry.latency.as_secs_f64() * 1e6).round() / 1e3,
        records: entry.records,
        faults: Fault::ALL
            .iter()
            .filter(|fault| entry.faults & fault.bit() != 0)
            .map(|fault| fault.name().to_owned())
            .collect(),
    }
}

/// Query parameters whose values are credentials somewhere (HubSpot's old `hapikey`,
/// Slack's `token`, OAuth's `code` and `client_secret`, signed URLs' `sig`).
const SECRET_PARAMS: [&str; 14] = [
    "token",
    "access_token",
    "refresh_token",
    "hapikey",
    "api_key",
    "apikey",
    "key",
    "client_secret",
    "secret",
    "password",
    "code",
    "assertion",
    "sig",
    "signature",
];

/// The path and query with credentials replaced by `***`: a Slack webhook's secret
/// segment, and the values of credential-like query parameters.
fn masked(uri: &Uri) -> String {
    let mut out = super::slack::masked_path(uri.path());
    if let Some(query) = uri.query() {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            if pair.contains('=') && SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                out.push_str(name);
                out.push_str("=***");
            } else {
                out.push_str(pair);
            }
        }
    }
    out
}

/// `GET /_sandbox/requests?endpoint=&status=&since=&limit=`.
pub(super) async fn list(
    State(state): State<Shared>,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Validation(e.body_text()))?;
    let page = state
        .requests()
        .page(&query)
        .map_err(ApiError::Validation)?;
    Ok(axum::Json(page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, endpoint: &str, outcome: Outcome) -> Entry {
        Entry {
            seq: 0,
            at: Utc::now(),
            method: Method::POST,
            uri: path.parse().expect("a valid uri"),
            endpoint: endpoint.to_owned(),
            outcome,
            latency: Duration::from_micros(1500),
            records: None,
            faults: 0,
        }
    }

    fn query(since: Option<u64>, limit: Option<usize>) -> RequestsQuery {
        RequestsQuery {
            since,
            limit,
            ..RequestsQuery::default()
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_counts_evictions() {
        let mut log = RequestLog::new(3);
        for n in 0..5 {
            log.push(entry(&format!("/x/{n}"), "POST /x", Outcome::Status(200)));
        }
        let page = log.page(&query(None, None)).expect("a page");
        assert_eq!(
            page.requests.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(page.requests[0].path, "/x/2");
        assert_eq!(page.evicted, 2);
        assert_eq!(page.next_since, 5);
        assert_eq!(page.requests[0].latency_ms, 1.5);

        log.clear();
        log.push(entry("/y", "POST /y", Outcome::Status(200)));
        let page = log.page(&query(None, None)).expect("a page");
        assert_eq!(page.requests.len(), 1);
        assert_eq!(page.requests[0].seq, 6, "the sequence survives a clear");
        assert_eq!(page.evicted, 0);
    }

    #[test]
    fn since_reads_forward_and_no_since_reads_the_tail() {
        let mut log = RequestLog::new(100);
        for _ in 0..10 {
            log.push(entry("/x", "POST /x", Outcome::Status(200)));
        }
        let forward = log.page(&query(Some(4), Some(3))).expect("a page");
        assert_eq!(
            forward.requests.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!(forward.matched, 6);
        assert_eq!(forward.next_since, 7);
        let tail = log.page(&query(None, Some(3))).expect("a page");
        assert_eq!(
            tail.requests.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [8, 9, 10]
        );
        let none = log.page(&query(Some(10), None)).expect("a page");
        assert!(none.requests.is_empty());
        assert_eq!(none.next_since, 10);
    }

    #[test]
    fn status_filters() {
        let mut log = RequestLog::new(100);
        for outcome in [
            Outcome::Status(200),
            Outcome::Status(429),
            Outcome::Status(404),
            Outcome::Timeout,
            Outcome::Dropped,
        ] {
            log.push(entry("/x", "POST /x", outcome));
        }
        let seqs = |status: &str| {
            log.page(&RequestsQuery {
                status: Some(status.to_owned()),
                ..RequestsQuery::default()
            })
            .map(|page| page.requests.iter().map(|r| r.seq).collect::<Vec<_>>())
        };
        assert_eq!(seqs("429"), Ok(vec![2]));
        assert_eq!(seqs("4xx"), Ok(vec![2, 3]));
        assert_eq!(seqs("timeout"), Ok(vec![4]));
        assert_eq!(seqs("DROPPED"), Ok(vec![5]));
        assert!(seqs("abc").is_err());
        assert!(seqs("7xx").is_err());
        assert!(seqs("42").is_err());
    }

    #[test]
    fn a_zero_capacity_log_keeps_nothing() {
        let mut log = RequestLog::new(0);
        log.push(entry("/x", "POST /x", Outcome::Status(200)));
        assert!(
            log.page(&query(None, None))
                .expect("a page")
                .requests
                .is_empty()
        );
    }

    #[test]
    fn credentials_are_masked() {
        let uri: Uri = "/crm/v3/owners?hapikey=abc123&limit=5&Token=xoxb-1&code"
            .parse()
            .expect("a valid uri");
        assert_eq!(
            masked(&uri),
            "/crm/v3/owners?hapikey=***&limit=5&Token=***&code"
        );
        let webhook: Uri = "/services/T000/B000/XXXXsecret"
            .parse()
            .expect("a valid uri");
        assert_eq!(masked(&webhook), "/services/T000/B000/***");
    }
}
