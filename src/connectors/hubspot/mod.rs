//! HubSpot CRM v3: batch writes with per-record results, owners, tasks and task search.

mod owners;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::budget::{self, Budget};
use super::http::{Client, Failure, HttpError, Request, Response, RetryPolicy, Sent, Throttle};
use super::{
    BatchReport, ConnectorError, Destination, OutRecord, Outcome, Read, TaskInput, TaskOutcome,
    TaskReport, WriteOp,
};
use crate::project::{ConnectorConfig, OWNER_PROPERTY};

/// A HubSpot account reached through one private-app token.
pub struct HubSpot {
    name: String,
    base_url: String,
    client: Client,
    batch_size: usize,
    concurrency: usize,
    settle: Duration,
    owners: owners::OwnerCache,
}

impl HubSpot {
    pub fn new(cfg: &ConnectorConfig) -> Result<Self, HttpError> {
        let account = budget::account_key(&cfg.base_url, cfg.token.expose());
        let budget: Arc<Budget> = budget::for_account(&account, cfg.budget, cfg.account_timezone);
        let client = Client::new(
            cfg.token.clone(),
            budget,
            Duration::from_secs(cfg.timeout_secs),
            RetryPolicy {
                max_retries: cfg.max_retries,
                base: Duration::from_millis(200),
                cap: Duration::from_secs(30),
            },
        )?;
        Ok(HubSpot {
            name: cfg.name.clone(),
            base_url: cfg.base_url.clone(),
            client,
            batch_size: cfg.batch_size,
            concurrency: cfg.concurrency,
            settle: Duration::from_millis(cfg.search_settle_ms),
            owners: owners::OwnerCache::default(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Turns a failed request into the error that stops the sync.
    fn failure(&self, what: &str, f: Failure, api_calls: u64, throttled: u64) -> ConnectorError {
        match f {
            Failure::DailyLimit { until } => ConnectorError::DailyLimit {
                connector: self.name.clone(),
                until,
                api_calls,
                throttled,
            },
            Failure::GaveUp { message } | Failure::Ambiguous { message } => {
                ConnectorError::Unavailable {
                    connector: self.name.clone(),
                    message: format!("{what}: {message}"),
                    api_calls,
                    throttled,
                }
            }
        }
    }

    fn auth(&self, resp: &Response, api_calls: u64) -> ConnectorError {
        ConnectorError::Auth {
            connector: self.name.clone(),
            status: resp.status,
            message: error_category(&resp.body).1,
            api_calls,
        }
    }

    /// A request whose answer is read as JSON, 401/403 and exhausted retries as errors.
    async fn call(
        &self,
        what: &str,
        req: Request<'_>,
    ) -> Result<(Response, u64, u64), ConnectorError> {
        let Sent {
            result,
            api_calls,
            throttled,
        } = self.client.send(req, classify_429).await;
        let resp = result.map_err(|f| self.failure(what, f, api_calls, throttled))?;
        if matches!(resp.status, 401 | 403) {
            return Err(self.auth(&resp, api_calls));
        }
        Ok((resp, api_calls, throttled))
    }

    /// One batch request; a whole-batch refusal (400, or 409 on create) is split in halves
    /// until each bad record stands alone, so the good ones still go through.
    fn write_batch<'a>(
        &'a self,
        object: &'a str,
        op: WriteOp<'a>,
        records: &'a [OutRecord],
    ) -> BoxFuture<'a, Result<BatchReport, ConnectorError>> {
        Box::pin(async move {
            let path = match op {
                WriteOp::Upsert { .. } => "upsert",
                WriteOp::Update { .. } => "update",
                WriteOp::Create => "create",
            };
            let what = format!("POST /crm/v3/objects/{object}/batch/{path}");
            let url = self.url(&format!("/crm/v3/objects/{object}/batch/{path}"));
            let body = batch_body(op, records);
            let (resp, api_calls, throttled) = self
                .call(&what, Request::post_serialized(&url, &body))
                .await?;
            let id_property = match op {
                WriteOp::Upsert { id_property } => Some(id_property),
                WriteOp::Update { id_property } => id_property,
                WriteOp::Create => None,
            };
            let whole_batch_refused =
                resp.status == 400 || (resp.status == 409 && matches!(op, WriteOp::Create));
            if whole_batch_refused {
                let (category, message) = error_category(&resp.body);
                if is_setup_error(&message) {
                    return Err(ConnectorError::Setup {
                        connector: self.name.clone(),
                        message: format!("{what}: HubSpot refused the batch: {message}"),
                        api_calls,
                    });
                }
                if records.len() > 1 {
                    let (a, b) = records.split_at(records.len() / 2);
                    let left = self.write_batch(object, op, a).await?;
                    let right = self.write_batch(object, op, b).await?;
                    let mut outcomes = left.outcomes;
                    outcomes.extend(right.outcomes);
                    return Ok(BatchReport {
                        outcomes,
                        api_calls: api_calls + left.api_calls + right.api_calls,
                        throttled: throttled + left.throttled + right.throttled,
                    });
                }
                return Ok(BatchReport {
                    outcomes: reject_all(
                        records,
                        &category,
                        &format!("HTTP {}: {message}", resp.status),
                    ),
                    api_calls,
                    throttled,
                });
            }
            let outcomes = match resp.status {
                200 | 201 | 207 => match BatchResponse::parse(&resp.body, id_property) {
                    Ok(b) => match_outcomes(records, &b, id_property),
                    Err(e) => {
                        // The write may have applied, but we cannot tell which: leave every row
                        // unsynced so the next run resends it (upserts and updates are idempotent).
                        let msg = format!("unreadable HubSpot response ({e})");
                        reject_all(records, "UNREADABLE_RESPONSE", &msg)
                    }
                },
                status => {
                    let (category, message) = error_category(&resp.body);
                    reject_all(records, &category, &format!("HTTP {status}: {message}"))
                }
            };
            Ok(BatchReport {
                outcomes,
                api_calls,
                throttled,
            })
        })
    }
}

/// A 400 that every record of the sync would meet: resending halves would only burn requests.
fn is_setup_error(message: &str) -> bool {
    message.contains("PROPERTY_DOESNT_EXIST")
        || message.contains("READ_ONLY_VALUE")
        || message.contains("Unable to infer object type")
}

fn reject_all(records: &[OutRecord], category: &str, message: &str) -> Vec<Outcome> {
    records
        .iter()
        .map(|_| Outcome::Rejected {
            category: category.to_string(),
            message: message.to_string(),
        })
        .collect()
}

/// HubSpot's daily limit resets at the account's midnight: retrying in this run only burns requests.
fn classify_429(body: &str) -> Throttle {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("policyName").and_then(|p| p.as_str()) == Some("DAILY") => Throttle::Stop,
        _ => Throttle::Retry,
    }
}

/// The body of a batch write, serialised straight from the records: each input carries
/// its position as `objectWriteTraceId`, so results can be paired with inputs in any order.
fn batch_body(op: WriteOp<'_>, records: &[OutRecord]) -> Vec<u8> {
    struct Properties<'a>(&'a [(String, Option<String>)]);
    impl Serialize for Properties<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                // HubSpot clears a property given the empty string.
                m.serialize_entry(k, v.as_deref().unwrap_or(""))?;
            }
            m.end()
        }
    }
    struct Input<'a> {
        op: WriteOp<'a>,
        trace: usize,
        record: &'a OutRecord,
    }
    impl Serialize for Input<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            let id_property = match self.op {
                WriteOp::Upsert { id_property } => Some(id_property),
                WriteOp::Update { id_property } => id_property,
                WriteOp::Create => None,
            };
            if !matches!(self.op, WriteOp::Create) {
                m.serialize_entry("id", &self.record.id)?;
            }
            if let Some(p) = id_property {
                m.serialize_entry("idProperty", p)?;
            }
            m.serialize_entry("objectWriteTraceId", &self.trace.to_string())?;
            m.serialize_entry("properties", &Properties(&self.record.properties))?;
            if matches!(self.op, WriteOp::Create) {
                m.serialize_entry("associations", &[(); 0])?;
            }
            m.end()
        }
    }
    struct Inputs<'a>(WriteOp<'a>, &'a [OutRecord]);
    impl Serialize for Inputs<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(self.1.iter().enumerate().map(|(trace, record)| Input {
                op: self.0,
                trace,
                record,
            }))
        }
    }
    #[derive(Serialize)]
    struct Batch<'a> {
        inputs: Inputs<'a>,
    }
    let mut out = Vec::with_capacity(64 + records.len() * 256);
    serde_json::to_writer(
        &mut out,
        &Batch {
            inputs: Inputs(op, records),
        },
    )
    .expect("serialising strings into a Vec cannot fail");
    out
}

#[derive(Debug, Deserialize)]
struct BatchResponse {
    #[serde(default)]
    results: Vec<ResultObject>,
    #[serde(default)]
    errors: Vec<StandardError>,
}

impl BatchResponse {
    /// Reads a batch answer. Results are paired with inputs by their trace ids; only when
    /// some result lacks one are the records' properties read, to pair by `id_property`.
    fn parse(body: &str, id_property: Option<&str>) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Lean {
            #[serde(default)]
            results: Vec<LeanResult>,
            #[serde(default)]
            errors: Vec<StandardError>,
        }
        #[derive(Deserialize)]
        struct LeanResult {
            id: String,
            #[serde(default, rename = "objectWriteTraceId")]
            trace_id: Option<String>,
        }
        let lean: Lean = serde_json::from_str(body)?;
        if id_property.is_some() && lean.results.iter().any(|r| r.trace_id.is_none()) {
            return serde_json::from_str(body);
        }
        Ok(BatchResponse {
            results: lean
                .results
                .into_iter()
                .map(|r| ResultObject {
                    id: r.id,
                    properties: HashMap::new(),
                    trace_id: r.trace_id,
                })
                .collect(),
            errors: lean.errors,
        })
    }
}

#[derive(Debug, Deserialize)]
struct ResultObject {
    id: String,
    #[serde(default)]
    properties: HashMap<String, Option<String>>,
    #[serde(default, rename = "objectWriteTraceId")]
    trace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StandardError {
    #[serde(default)]
    category: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    context: HashMap<String, Vec<String>>,
}

impl StandardError {
    fn rejection(&self) -> Outcome {
        Outcome::Rejected {
            category: if self.category.is_empty() {
                "ERROR".into()
            } else {
                self.category.clone()
            },
            message: self.message.clone(),
        }
    }
}

/// Pairs each input with its result or error. HubSpot does not promise result order,
/// so results are matched on the trace id each input carries, else on the id property's
/// value (emails case-insensitively); errors on `context.ids` or the trace id. An input
/// with neither was not confirmed and stays unsynced.
fn match_outcomes(
    records: &[OutRecord],
    b: &BatchResponse,
    id_property: Option<&str>,
) -> Vec<Outcome> {
    let norm = |s: &str| s.trim().to_lowercase();
    let mut errors: HashMap<String, &StandardError> = HashMap::new();
    let mut errors_by_trace: HashMap<&str, &StandardError> = HashMap::new();
    for e in &b.errors {
        for id in e.context.get("ids").into_iter().flatten() {
            errors.insert(norm(id), e);
        }
        for t in e.context.get("objectWriteTraceId").into_iter().flatten() {
            errors_by_trace.insert(t.as_str(), e);
        }
    }
    let mut results: HashMap<String, &ResultObject> = HashMap::new();
    let mut results_by_trace: HashMap<&str, &ResultObject> = HashMap::new();
    for r in &b.results {
        if let Some(t) = &r.trace_id {
            results_by_trace.insert(t.as_str(), r);
        }
        let id = match id_property {
            Some(p) => r.properties.get(p).cloned().flatten(),
            None => Some(r.id.clone()),
        };
        if let Some(id) = id {
            results.insert(norm(&id), r);
        }
    }
    let positional = b.errors.is_empty() && b.results.len() == records.len();
    // A create names no id: when exactly one input is unaccounted for, the lone error is its.
    let lone_error =
        (b.errors.len() == 1 && records.len() == b.results.len() + 1).then(|| &b.errors[0]);
    records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let trace = i.to_string();
            let k = norm(&rec.id);
            if let Some(r) = results_by_trace.get(trace.as_str()) {
                Outcome::Accepted {
                    record_id: Some(r.id.clone()),
                }
            } else if let Some(e) = errors_by_trace.get(trace.as_str()) {
                e.rejection()
            } else if let Some(e) = errors.get(&k).filter(|_| !k.is_empty()) {
                e.rejection()
            } else if let Some(r) = results.get(&k).filter(|_| !k.is_empty()) {
                Outcome::Accepted {
                    record_id: Some(r.id.clone()),
                }
            } else if positional {
                Outcome::Accepted {
                    record_id: Some(b.results[i].id.clone()),
                }
            } else if let Some(e) = lone_error.filter(|_| b.results.iter().all(|r| r.trace_id.is_some())) {
                e.rejection()
            } else {
                Outcome::Rejected {
                    category: "NO_RESULT".into(),
                    message: "HubSpot's answer named neither a result nor an error for this record; it will be resent".into(),
                }
            }
        })
        .collect()
}

fn error_category(body: &str) -> (String, String) {
    match serde_json::from_str::<StandardError>(body) {
        Ok(e) if !e.message.is_empty() => (
            if e.category.is_empty() {
                "ERROR".into()
            } else {
                e.category
            },
            e.message,
        ),
        _ => ("ERROR".into(), body.chars().take(500).collect()),
    }
}

/// Search answers at most this many results a page, and takes this many values in an `IN` filter.
const SEARCH_PAGE: usize = 100;

#[async_trait::async_trait]
impl Destination for HubSpot {
    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn request_stats(&self) -> Option<Arc<super::http::RequestStats>> {
        Some(self.client.stats())
    }

    fn search_settle(&self) -> Duration {
        self.settle
    }

    fn paused_until(&self) -> Option<DateTime<Utc>> {
        self.client.budget().paused_until()
    }

    async fn write(
        &self,
        object: &str,
        op: WriteOp<'_>,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError> {
        self.write_batch(object, op, records).await
    }

    async fn archive(
        &self,
        object: &str,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError> {
        let what = format!("POST /crm/v3/objects/{object}/batch/archive");
        let url = self.url(&format!("/crm/v3/objects/{object}/batch/archive"));
        let inputs: Vec<Value> = records.iter().map(|r| json!({ "id": r.id })).collect();
        let body = json!({ "inputs": inputs });
        let (resp, api_calls, throttled) = self.call(&what, Request::post(&url, &body)).await?;
        let outcomes = match resp.status {
            // Archiving is all or nothing, and archiving an archived record is not an error.
            200 | 204 => records
                .iter()
                .map(|r| Outcome::Accepted {
                    record_id: Some(r.id.clone()),
                })
                .collect(),
            status => {
                let (category, message) = error_category(&resp.body);
                reject_all(records, &category, &format!("HTTP {status}: {message}"))
            }
        };
        Ok(BatchReport {
            outcomes,
            api_calls,
            throttled,
        })
    }

    async fn current_owners(
        &self,
        object: &str,
        id_property: Option<&str>,
        ids: &[String],
    ) -> Result<Read<HashMap<String, Option<String>>>, ConnectorError> {
        let what = format!("POST /crm/v3/objects/{object}/batch/read");
        let url = self.url(&format!("/crm/v3/objects/{object}/batch/read"));
        let mut body = json!({
            "inputs": ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
            "properties": [OWNER_PROPERTY],
            "propertiesWithHistory": [],
        });
        if let Some(p) = id_property {
            body["idProperty"] = json!(p);
            body["properties"] = json!([OWNER_PROPERTY, p]);
        }
        let (resp, api_calls, throttled) = self.call(&what, Request::post(&url, &body)).await?;
        if !matches!(resp.status, 200 | 207) {
            let (category, message) = error_category(&resp.body);
            return Err(ConnectorError::Unavailable {
                connector: self.name.clone(),
                message: format!("{what}: HTTP {}: {category}: {message}", resp.status),
                api_calls,
                throttled,
            });
        }
        let b: BatchResponse =
            serde_json::from_str(&resp.body).map_err(|e| ConnectorError::Unavailable {
                connector: self.name.clone(),
                message: format!("{what}: unreadable HubSpot response ({e})"),
                api_calls,
                throttled,
            })?;
        let norm = |s: &str| s.trim().to_lowercase();
        let by_norm: HashMap<String, &String> = ids.iter().map(|id| (norm(id), id)).collect();
        let mut value = HashMap::new();
        for r in &b.results {
            let found = match id_property {
                Some(p) => r.properties.get(p).cloned().flatten(),
                None => Some(r.id.clone()),
            };
            if let Some(id) = found.and_then(|f| by_norm.get(&norm(&f)).copied()) {
                let owner = r
                    .properties
                    .get(OWNER_PROPERTY)
                    .cloned()
                    .flatten()
                    .filter(|o| !o.is_empty());
                value.insert(id.clone(), owner);
            }
        }
        Ok(Read {
            value,
            api_calls,
            throttled,
        })
    }

    async fn resolve_owners(
        &self,
        values: &[String],
    ) -> Result<Read<HashMap<String, Result<String, String>>>, ConnectorError> {
        self.owners.resolve(self, values).await
    }

    async fn create_tasks(
        &self,
        key_property: &str,
        tasks: &[TaskInput],
    ) -> Result<TaskReport, ConnectorError> {
        const WHAT: &str = "POST /crm/v3/objects/tasks/batch/create";
        let inputs: Vec<Value> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut props = t.properties.clone();
                props.insert(key_property.to_string(), json!(t.task_key));
                json!({
                    "objectWriteTraceId": i.to_string(),
                    "properties": props,
                    "associations": [{
                        "to": { "id": t.record_id },
                        "types": [{
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": t.association_type_id,
                        }],
                    }],
                })
            })
            .collect();
        let url = self.url("/crm/v3/objects/tasks/batch/create");
        let body = json!({ "inputs": inputs });
        let req = Request {
            idempotent: false,
            ..Request::post(&url, &body)
        };
        let Sent {
            result,
            api_calls,
            throttled,
        } = self.client.send(req, classify_429).await;
        let unknown = |message: String| TaskReport {
            outcomes: tasks
                .iter()
                .map(|_| TaskOutcome::Unknown {
                    message: message.clone(),
                })
                .collect(),
            api_calls,
            throttled,
        };
        let resp = match result {
            Ok(r) => r,
            Err(Failure::Ambiguous { message }) => {
                return Ok(unknown(format!("{WHAT}: {message}")));
            }
            Err(f) => return Err(self.failure(WHAT, f, api_calls, throttled)),
        };
        if matches!(resp.status, 401 | 403) {
            return Err(self.auth(&resp, api_calls));
        }
        let outcomes = match resp.status {
            200 | 201 | 207 => match serde_json::from_str::<BatchResponse>(&resp.body) {
                Ok(b) => {
                    let created: HashMap<String, &ResultObject> = b
                        .results
                        .iter()
                        .filter_map(|r| {
                            let k = r.properties.get(key_property).cloned().flatten();
                            k.or_else(|| {
                                r.trace_id
                                    .as_ref()
                                    .and_then(|t| t.parse::<usize>().ok())
                                    .and_then(|i| tasks.get(i))
                                    .map(|t| t.task_key.clone())
                            })
                            .map(|k| (k, r))
                        })
                        .collect();
                    let message = b
                        .errors
                        .iter()
                        .map(|e| format!("{}: {}", e.category, e.message))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let by_trace: HashMap<&str, &StandardError> = b
                        .errors
                        .iter()
                        .flat_map(|e| {
                            e.context
                                .get("objectWriteTraceId")
                                .into_iter()
                                .flatten()
                                .map(move |t| (t.as_str(), e))
                        })
                        .collect();
                    tasks
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match created.get(&t.task_key) {
                            Some(r) => TaskOutcome::Created {
                                task_id: r.id.clone(),
                            },
                            // HubSpot answered: what is not among the results was not created.
                            None => match by_trace.get(i.to_string().as_str()) {
                                Some(e) => TaskOutcome::Rejected {
                                    category: e.category.clone(),
                                    message: e.message.clone(),
                                },
                                None => TaskOutcome::Rejected {
                                    category: "TASK_NOT_CREATED".into(),
                                    message: if message.is_empty() {
                                        "HubSpot did not create the task and named no reason".into()
                                    } else {
                                        message.clone()
                                    },
                                },
                            },
                        })
                        .collect()
                }
                Err(e) => {
                    return Ok(unknown(format!(
                        "{WHAT}: unreadable HubSpot response ({e})"
                    )));
                }
            },
            400 if tasks.len() > 1 => {
                // One bad task refuses the batch: send them one by one to find it.
                let mut report = TaskReport {
                    outcomes: Vec::new(),
                    api_calls,
                    throttled,
                };
                let (a, b) = tasks.split_at(tasks.len() / 2);
                for half in [a, b] {
                    let r = Box::pin(self.create_tasks(key_property, half)).await?;
                    report.outcomes.extend(r.outcomes);
                    report.api_calls += r.api_calls;
                    report.throttled += r.throttled;
                }
                return Ok(report);
            }
            status => {
                let (category, message) = error_category(&resp.body);
                tasks
                    .iter()
                    .map(|_| TaskOutcome::Rejected {
                        category: category.clone(),
                        message: format!("HTTP {status}: {message}"),
                    })
                    .collect()
            }
        };
        Ok(TaskReport {
            outcomes,
            api_calls,
            throttled,
        })
    }

    async fn find_tasks(
        &self,
        key_property: &str,
        keys: &[String],
    ) -> Result<Read<HashMap<String, String>>, ConnectorError> {
        const WHAT: &str = "POST /crm/v3/objects/tasks/search";
        let url = self.url("/crm/v3/objects/tasks/search");
        let mut out: Read<HashMap<String, String>> = Read::default();
        for chunk in keys.chunks(SEARCH_PAGE) {
            let mut after: Option<String> = None;
            loop {
                let mut body = json!({
                    "filterGroups": [{ "filters": [{
                        "propertyName": key_property,
                        "operator": "IN",
                        "values": chunk,
                    }]}],
                    "properties": [key_property],
                    "limit": SEARCH_PAGE,
                });
                if let Some(a) = &after {
                    body["after"] = json!(a);
                }
                let req = Request {
                    search: true,
                    ..Request::post(&url, &body)
                };
                let (resp, calls, throttled) = self.call(WHAT, req).await?;
                out.api_calls += calls;
                out.throttled += throttled;
                if resp.status != 200 {
                    let (category, message) = error_category(&resp.body);
                    return Err(ConnectorError::Unavailable {
                        connector: self.name.clone(),
                        message: format!("{WHAT}: HTTP {}: {category}: {message}", resp.status),
                        api_calls: out.api_calls,
                        throttled: out.throttled,
                    });
                }
                let page: SearchPage =
                    serde_json::from_str(&resp.body).map_err(|e| ConnectorError::Unavailable {
                        connector: self.name.clone(),
                        message: format!("{WHAT}: unreadable HubSpot response ({e})"),
                        api_calls: out.api_calls,
                        throttled: out.throttled,
                    })?;
                for r in page.results {
                    if let Some(Some(k)) = r.properties.get(key_property) {
                        // Two tasks with one key would be a duplicate made elsewhere: keep the first.
                        out.value.entry(k.clone()).or_insert(r.id);
                    }
                }
                match page.paging.and_then(|p| p.next).map(|n| n.after) {
                    Some(a) => after = Some(a),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Deserialize)]
struct SearchPage {
    #[serde(default)]
    results: Vec<ResultObject>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    pub(crate) next: Option<NextPage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NextPage {
    pub(crate) after: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> OutRecord {
        OutRecord {
            key: id.into(),
            id: id.into(),
            properties: vec![],
        }
    }

    #[test]
    fn outcomes_follow_ids_not_positions() {
        let body = r#"{"status":"COMPLETE","results":[
            {"id":"2","properties":{"email":"b@x.com"}},
            {"id":"1","properties":{"email":"a@x.com"}}],
            "numErrors":1,
            "errors":[{"status":"error","category":"VALIDATION_ERROR","message":"bad email","context":{"ids":["nope"]}}]}"#;
        // No trace ids: the properties are read to pair results by email.
        let b = BatchResponse::parse(body, Some("email")).unwrap();
        let got = match_outcomes(
            &[rec("A@x.com"), rec("nope"), rec("b@x.com"), rec("c@x.com")],
            &b,
            Some("email"),
        );
        assert_eq!(
            got[0],
            Outcome::Accepted {
                record_id: Some("1".into())
            }
        );
        assert_eq!(
            got[1],
            Outcome::Rejected {
                category: "VALIDATION_ERROR".into(),
                message: "bad email".into()
            }
        );
        assert_eq!(
            got[2],
            Outcome::Accepted {
                record_id: Some("2".into())
            }
        );
        assert!(matches!(&got[3], Outcome::Rejected { category, .. } if category == "NO_RESULT"));
    }

    #[test]
    fn trace_ids_pair_creates_with_their_results() {
        let body = r#"{"status":"COMPLETE","results":[
            {"id":"9","properties":{},"objectWriteTraceId":"1"}],
            "errors":[{"status":"error","category":"VALIDATION_ERROR","message":"bad owner","context":{}}]}"#;
        let b = BatchResponse::parse(body, None).unwrap();
        let none = |k: &str| OutRecord {
            key: k.into(),
            id: String::new(),
            properties: vec![],
        };
        let got = match_outcomes(&[none("a"), none("b")], &b, None);
        assert!(matches!(&got[0], Outcome::Rejected { message, .. } if message == "bad owner"));
        assert_eq!(
            got[1],
            Outcome::Accepted {
                record_id: Some("9".into())
            }
        );
    }

    #[test]
    fn results_with_trace_ids_are_paired_without_reading_properties() {
        let body = r#"{"status":"COMPLETE","results":[
            {"id":"7","properties":{"email":"b@x.com","firstname":"B"},"objectWriteTraceId":"1"},
            {"id":"6","properties":{"email":"a@x.com"},"objectWriteTraceId":"0"}]}"#;
        let b = BatchResponse::parse(body, Some("email")).unwrap();
        assert!(b.results.iter().all(|r| r.properties.is_empty()));
        let got = match_outcomes(&[rec("a@x.com"), rec("b@x.com")], &b, Some("email"));
        let ids: Vec<_> = got
            .iter()
            .map(|o| match o {
                Outcome::Accepted { record_id } => record_id.clone().unwrap(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, ["6", "7"]);
        assert!(BatchResponse::parse("{not json", Some("email")).is_err());
    }

    #[test]
    fn batch_bodies_have_each_operations_shape() {
        let records = [
            OutRecord {
                key: "k1".into(),
                id: "a@x.com".into(),
                properties: vec![
                    ("firstname".into(), Some("Ada \"A\" \u{e9}".into())),
                    ("lastname".into(), None),
                ],
            },
            OutRecord {
                key: "k2".into(),
                id: "b@x.com".into(),
                properties: vec![],
            },
        ];
        let body = |op| serde_json::from_slice::<Value>(&batch_body(op, &records)).unwrap();
        assert_eq!(
            body(WriteOp::Upsert {
                id_property: "email"
            }),
            json!({"inputs": [
                {"id": "a@x.com", "idProperty": "email", "objectWriteTraceId": "0",
                 "properties": {"firstname": "Ada \"A\" \u{e9}", "lastname": ""}},
                {"id": "b@x.com", "idProperty": "email", "objectWriteTraceId": "1", "properties": {}},
            ]})
        );
        assert_eq!(
            body(WriteOp::Update { id_property: None })["inputs"][1],
            json!({"id": "b@x.com", "objectWriteTraceId": "1", "properties": {}})
        );
        assert_eq!(
            body(WriteOp::Update {
                id_property: Some("email")
            })["inputs"][0]["idProperty"],
            json!("email")
        );
        assert_eq!(
            body(WriteOp::Create)["inputs"][1],
            json!({"objectWriteTraceId": "1", "properties": {}, "associations": []})
        );
    }

    #[test]
    fn daily_limit_is_not_retried() {
        assert_eq!(classify_429(r#"{"policyName":"DAILY"}"#), Throttle::Stop);
        assert_eq!(
            classify_429(r#"{"policyName":"TEN_SECONDLY_ROLLING"}"#),
            Throttle::Retry
        );
        assert_eq!(classify_429("not json"), Throttle::Retry);
    }
}
