//! Bulk API 2.0 ingest jobs (`/jobs/ingest`): create, upload one CSV, close, poll,
//! and read the successful, failed and unprocessed rows.
//!
//! A closed job is processed once `bulk_processing_ms` has passed on the Salesforce
//! clock: by a background task, or by the first request that looks at jobs after
//! that (so clients must poll, and tests that move the clock need not wait). Until
//! then a poll answers `UploadComplete`, then `InProgress`. Rows go through the same
//! writer as the REST API, each on its own (Bulk API has no all-or-none).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::super::faults::FaultState;
use super::super::stats::SandboxStats;
use super::super::{Data, Shared};
use super::errors::{RecordError, SfError};
use super::schema::{self, FieldRef, SObject};
use super::store::{Change, Org, Writer};
use super::{Caller, ids};

pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    let mut router = router
        .route("/{version}/jobs/ingest", get(list).post(create))
        .route(
            "/{version}/jobs/ingest/{job}",
            get(info).patch(change_state).delete(delete),
        )
        .route("/{version}/jobs/ingest/{job}/batches", put(upload));
    for (path, kind) in [
        ("successfulResults", ResultKind::Successful),
        ("failedResults", ResultKind::Failed),
        ("unprocessedrecords", ResultKind::Unprocessed),
    ] {
        let handler = move |state: State<Shared>, job: Path<(String, String)>| async move {
            results(state, job, kind)
        };
        // Salesforce's documents write these with a trailing slash; clients use both.
        router = router
            .route(
                &format!("/{{version}}/jobs/ingest/{{job}}/{path}"),
                get(handler),
            )
            .route(
                &format!("/{{version}}/jobs/ingest/{{job}}/{path}/"),
                get(handler),
            );
    }
    router
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    fn finished(self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Insert,
    Update,
    Upsert,
    Delete,
}

impl Operation {
    fn parse(name: &str) -> Option<Operation> {
        match name {
            "insert" => Some(Operation::Insert),
            "update" => Some(Operation::Update),
            "upsert" => Some(Operation::Upsert),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Upsert => "upsert",
            Operation::Delete => "delete",
        }
    }
}

const DELIMITERS: [(&str, u8); 6] = [
    ("COMMA", b','),
    ("TAB", b'\t'),
    ("PIPE", b'|'),
    ("SEMICOLON", b';'),
    ("CARET", b'^'),
    ("BACKQUOTE", b'`'),
];

/// One ingest job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    id: String,
    object: SObject,
    operation: Operation,
    external_id: Option<String>,
    crlf: bool,
    delimiter: (&'static str, u8),
    pub(crate) state: JobState,
    created_by: String,
    created: DateTime<Utc>,
    modstamp: DateTime<Utc>,
    api_version: String,
    data: Option<Vec<u8>>,
    /// When a closed job is processed (Salesforce clock).
    ready_at: Option<Instant>,
    error_message: Option<String>,
    header: Vec<String>,
    processed: u64,
    successes: Vec<Vec<String>>,
    failures: Vec<Vec<String>>,
    unprocessed: Vec<Vec<String>>,
    processing_ms: u64,
}

impl Job {
    /// The job info as creating, closing and listing answer it.
    fn summary(&self) -> Value {
        let mut info = json!({
            "id": self.id,
            "operation": self.operation.name(),
            "object": self.object.name(),
            "createdById": self.created_by,
            "createdDate": schema::datetime(self.created),
            "systemModstamp": schema::datetime(self.modstamp),
            "state": self.state.name(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version.parse::<f64>().unwrap_or(0.0),
            "jobType": "V2Ingest",
            "lineEnding": if self.crlf { "CRLF" } else { "LF" },
            "columnDelimiter": self.delimiter.0,
        });
        if let Some(field) = &self.external_id {
            info["externalIdFieldName"] = json!(field);
        }
        if self.state == JobState::Open {
            info["contentUrl"] = json!(format!(
                "services/data/v{}/jobs/ingest/{}/batches",
                self.api_version, self.id
            ));
        }
        info
    }

    /// The full job info, with counts, as `GET /jobs/ingest/{id}` answers it.
    fn details(&self) -> Value {
        let mut info = self.summary();
        info["numberRecordsProcessed"] = json!(self.processed);
        info["numberRecordsFailed"] = json!(self.failures.len());
        info["retries"] = json!(0);
        info["totalProcessingTime"] = json!(self.processing_ms);
        info["apiActiveProcessingTime"] = json!(self.processing_ms);
        info["apexProcessingTime"] = json!(0);
        if let Some(message) = &self.error_message {
            info["errorMessage"] = json!(message);
        }
        info
    }
}

/// `POST /jobs/ingest` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewJob {
    object: Option<String>,
    operation: Option<String>,
    external_id_field_name: Option<String>,
    content_type: Option<String>,
    line_ending: Option<String>,
    column_delimiter: Option<String>,
}

fn invalid_job(message: impl Into<String>) -> SfError {
    SfError::bad_request("INVALIDJOB", message)
}

fn invalid_state(message: impl Into<String>) -> SfError {
    SfError::new(StatusCode::CONFLICT, "INVALIDJOBSTATE", message)
}

async fn create(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(version): Path<String>,
    body: Bytes,
) -> Result<Response, SfError> {
    let request: NewJob = serde_json::from_slice(&body).map_err(SfError::json_parser)?;
    let object_name = request
        .object
        .ok_or_else(|| invalid_job("object is required"))?;
    let object = SObject::from_name(&object_name)
        .ok_or_else(|| invalid_job(format!("sObject type '{object_name}' is not supported.")))?;
    let operation_name = request.operation.unwrap_or_default();
    let operation = Operation::parse(&operation_name)
        .ok_or_else(|| invalid_job(format!("Invalid operation: {operation_name}")))?;
    if request
        .content_type
        .as_deref()
        .is_some_and(|c| !c.eq_ignore_ascii_case("CSV"))
    {
        return Err(invalid_job("contentType must be CSV"));
    }
    let crlf = match request.line_ending.as_deref() {
        None | Some("LF") => false,
        Some("CRLF") => true,
        Some(other) => return Err(invalid_job(format!("Invalid lineEnding: {other}"))),
    };
    let delimiter = match request.column_delimiter.as_deref() {
        None => DELIMITERS[0],
        Some(name) => *DELIMITERS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| invalid_job(format!("Invalid columnDelimiter: {name}")))?,
    };
    let version = version.trim_start_matches('v').to_owned();

    let mut data = state.lock();
    let sf = &mut data.salesforce;
    let external_id = if operation == Operation::Upsert {
        let name = request.external_id_field_name.unwrap_or_default();
        if name.is_empty() {
            return Err(invalid_job(format!(
                "External ID was blank for {}. An External ID must be specified for upsert.",
                object.name()
            )));
        }
        let field = if name.eq_ignore_ascii_case("Id") {
            "Id".to_owned()
        } else {
            sf.org
                .external_id(object, &name)
                .map(str::to_owned)
                .ok_or_else(|| {
                    invalid_job(format!(
                        "The External ID field {name} is not an external ID field of {}",
                        object.name()
                    ))
                })?
        };
        Some(field)
    } else {
        None
    };
    sf.job_count += 1;
    let now = sf.now().1;
    let job = Job {
        id: ids::make(ids::INGEST_JOB, sf.job_count),
        object,
        operation,
        external_id,
        crlf,
        delimiter,
        state: JobState::Open,
        created_by: caller.user,
        created: now,
        modstamp: now,
        api_version: version,
        data: None,
        ready_at: None,
        error_message: None,
        header: Vec::new(),
        processed: 0,
        successes: Vec::new(),
        failures: Vec::new(),
        unprocessed: Vec::new(),
        processing_ms: 0,
    };
    let summary = job.summary();
    sf.jobs.insert(job.id.clone(), job);
    Ok(axum::Json(summary).into_response())
}

async fn list(State(state): State<Shared>) -> Response {
    let mut data = state.lock();
    process_due(&mut data);
    let records: Vec<Value> = data.salesforce.jobs.values().map(Job::summary).collect();
    axum::Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response()
}

fn job_mut<'a>(jobs: &'a mut BTreeMap<String, Job>, id: &str) -> Result<&'a mut Job, SfError> {
    let id = ids::normalize(id).ok_or_else(SfError::not_found)?;
    jobs.get_mut(&id).ok_or_else(SfError::not_found)
}

async fn info(
    State(state): State<Shared>,
    Path((_version, id)): Path<(String, String)>,
) -> Result<Response, SfError> {
    let mut data = state.lock();
    process_due(&mut data);
    let job = job_mut(&mut data.salesforce.jobs, &id)?;
    let details = job.details();
    // The next poll of a job still waiting finds it being processed.
    if job.state == JobState::UploadComplete {
        job.state = JobState::InProgress;
    }
    Ok(axum::Json(details).into_response())
}

#[derive(Debug, Deserialize)]
struct StateChange {
    state: String,
}

async fn change_state(
    State(state): State<Shared>,
    Path((_version, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, SfError> {
    let change: StateChange = serde_json::from_slice(&body).map_err(SfError::json_parser)?;
    let mut data = state.lock();
    process_due(&mut data);
    let sf = &mut data.salesforce;
    let (now, wall) = sf.now();
    let delay = Duration::from_millis(sf.config.bulk_processing_ms);
    let job = job_mut(&mut sf.jobs, &id)?;
    match (change.state.as_str(), job.state) {
        ("UploadComplete", JobState::Open) => {
            job.state = JobState::UploadComplete;
            job.ready_at = Some(now + delay);
            job.modstamp = wall;
            if job.data.is_none() {
                // Nothing to process: Salesforce fails such a job.
                job.state = JobState::Failed;
                job.error_message = Some("InvalidBatch : Empty batch".to_owned());
            }
        }
        ("Aborted", current) if !current.finished() => {
            job.state = JobState::Aborted;
            job.modstamp = wall;
            if let Ok((header, rows)) = parse_rows(job) {
                job.header = header;
                job.unprocessed = rows;
            }
        }
        ("UploadComplete" | "Aborted", current) => {
            return Err(invalid_state(format!(
                "Cannot change the state of job {} from {} to {}",
                job.id,
                current.name(),
                change.state
            )));
        }
        (other, _) => {
            return Err(SfError::bad_request(
                "INVALIDJOB",
                format!("Invalid state: {other}"),
            ));
        }
    }
    let summary = job.summary();
    let waiting = job.state == JobState::UploadComplete;
    drop(data);
    if waiting {
        let state = state.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => process_due(&mut state.lock()),
                () = state.cancel.cancelled() => {}
            }
        });
    }
    Ok(axum::Json(summary).into_response())
}

async fn delete(
    State(state): State<Shared>,
    Path((_version, id)): Path<(String, String)>,
) -> Result<Response, SfError> {
    let mut data = state.lock();
    process_due(&mut data);
    let job = job_mut(&mut data.salesforce.jobs, &id)?;
    if matches!(job.state, JobState::Open | JobState::InProgress) {
        return Err(invalid_state(format!(
            "Cannot delete job {} in state {}",
            job.id,
            job.state.name()
        )));
    }
    let id = job.id.clone();
    data.salesforce.jobs.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /jobs/ingest/{id}/batches`: the job's one CSV upload (201, no body).
async fn upload(
    State(state): State<Shared>,
    Path((_version, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, SfError> {
    let mut data = state.lock();
    let job = job_mut(&mut data.salesforce.jobs, &id)?;
    if job.state != JobState::Open {
        return Err(invalid_state(format!(
            "Job {} is not Open: it is {}",
            job.id,
            job.state.name()
        )));
    }
    if job.data.is_some() {
        return Err(SfError::bad_request(
            "BULK_API_ERROR",
            format!(
                "Found multiple contents for job: <{}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job.",
                job.id
            ),
        ));
    }
    job.data = Some(body.to_vec());
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResultKind {
    Successful,
    Failed,
    Unprocessed,
}

fn results(
    State(state): State<Shared>,
    Path((_version, id)): Path<(String, String)>,
    kind: ResultKind,
) -> Response {
    let mut data = state.lock();
    process_due(&mut data);
    let job = match job_mut(&mut data.salesforce.jobs, &id) {
        Ok(job) => job,
        Err(error) => return error.into_response(),
    };
    let (prefix, rows): (&[&str], &[Vec<String>]) = match kind {
        ResultKind::Successful => (&["sf__Id", "sf__Created"], &job.successes),
        ResultKind::Failed => (&["sf__Id", "sf__Error"], &job.failures),
        ResultKind::Unprocessed => (&[], &job.unprocessed),
    };
    let header: Vec<String> = if job.header.is_empty() && kind == ResultKind::Unprocessed {
        Vec::new()
    } else {
        prefix
            .iter()
            .map(|s| (*s).to_owned())
            .chain(job.header.iter().cloned())
            .collect()
    };
    let mut writer = csv::WriterBuilder::new()
        .delimiter(job.delimiter.1)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let written = (!header.is_empty())
        .then(|| writer.write_record(&header))
        .transpose()
        .and_then(|_| rows.iter().try_for_each(|row| writer.write_record(row)));
    let body = match (written, writer.into_inner()) {
        (Ok(()), Ok(body)) => body,
        _ => return SfError::injected(500).into_response(),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    response
}

/// The uploaded CSV's header and rows, or why the job fails.
fn parse_rows(job: &Job) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let Some(data) = &job.data else {
        return Ok((Vec::new(), Vec::new()));
    };
    let first_line_end = data.iter().position(|b| *b == b'\n');
    let crlf_data = first_line_end.is_some_and(|i| i > 0 && data[i - 1] == b'\r');
    if first_line_end.is_some() && crlf_data != job.crlf {
        return Err(format!(
            "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {}",
            if job.crlf { "CRLF" } else { "LF" }
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(job.delimiter.1)
        .has_headers(true)
        .from_reader(data.as_slice());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("InvalidBatch : {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|row| {
            row.map(|r| r.iter().map(str::to_owned).collect())
                .map_err(|e| format!("InvalidBatch : {e}"))
        })
        .collect::<Result<Vec<Vec<String>>, String>>()?;
    Ok((header, rows))
}

/// Processes every closed job whose time has come.
pub(crate) fn process_due(data: &mut Data) {
    let Data {
        salesforce,
        faults,
        stats,
        ..
    } = data;
    let (now, wall) = salesforce.now();
    let due: Vec<String> = salesforce
        .jobs
        .values()
        .filter(|job| {
            matches!(job.state, JobState::UploadComplete | JobState::InProgress)
                && job.ready_at.is_some_and(|at| at <= now)
        })
        .map(|job| job.id.clone())
        .collect();
    for id in due {
        if let Some(job) = salesforce.jobs.get_mut(&id) {
            process(job, &mut salesforce.org, faults, stats, wall);
        }
    }
}

fn process(
    job: &mut Job,
    org: &mut Org,
    faults: &mut FaultState,
    stats: &mut SandboxStats,
    now: DateTime<Utc>,
) {
    job.modstamp = now;
    let (header, rows) = match parse_rows(job) {
        Ok(parsed) => parsed,
        Err(message) => {
            job.state = JobState::Failed;
            job.error_message = Some(message);
            return;
        }
    };
    job.header = header.clone();
    // Which field each column sets; `None` for the Id column.
    let mut columns: Vec<Option<FieldRef>> = Vec::with_capacity(header.len());
    for name in &header {
        if name.eq_ignore_ascii_case("Id") {
            columns.push(None);
            continue;
        }
        match job.object.field(name) {
            Some(field) => columns.push(Some(org.canonical(job.object, field))),
            None => {
                job.state = JobState::Failed;
                job.error_message = Some(format!("InvalidBatch : Field name not found : {name}"));
                job.unprocessed = rows;
                return;
            }
        }
    }

    let mut writer = Writer::new(org, &job.created_by, now);
    for row in rows {
        job.processed += 1;
        if let Some(category) = faults.partial_failure() {
            stats.faults.partial += 1;
            let error = if category == "VALIDATION_ERROR" {
                RecordError::new(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    "The sandbox rejected this record (injected fault)",
                    Vec::new(),
                )
            } else {
                RecordError::new(
                    "UNABLE_TO_LOCK_ROW",
                    "unable to obtain exclusive access to this record or 1 records",
                    Vec::new(),
                )
            };
            job.failures.push(failure_row(String::new(), &error, row));
            continue;
        }
        match apply_row(job, &mut writer, &columns, &row) {
            Ok((id, created)) => {
                stats.records_written += 1;
                let mut cells = vec![id, created.to_string()];
                cells.extend(row);
                job.successes.push(cells);
            }
            Err((id, error)) => job.failures.push(failure_row(id, &error, row)),
        }
    }
    job.processing_ms = job.processed;
    job.state = JobState::JobComplete;
}

fn failure_row(id: String, error: &RecordError, row: Vec<String>) -> Vec<String> {
    let mut cells = vec![id, error.bulk_text()];
    cells.extend(row);
    cells
}

/// Writes one CSV row; returns the record id and whether it was created.
fn apply_row(
    job: &Job,
    writer: &mut Writer<'_>,
    columns: &[Option<FieldRef>],
    row: &[String],
) -> Result<(String, bool), (String, RecordError)> {
    let mut id = None;
    let mut changes: Vec<Change> = Vec::new();
    for (n, (column, cell)) in columns.iter().zip(row).enumerate() {
        let Some(field) = column else {
            id = Some(cell.trim().to_owned()).filter(|s| !s.is_empty());
            continue;
        };
        if cell.is_empty() {
            // An empty cell leaves the field alone; `#N/A` clears it.
            continue;
        }
        let value = if cell == "#N/A" {
            Value::Null
        } else {
            schema::from_text(field.kind(), cell).map_err(|bad| {
                (
                    String::new(),
                    RecordError::new(
                        "INVALID_FIELD",
                        format!(
                            "Failed to deserialize field at col {}. Due to, '{}' is not a valid value for the type xsd:{}",
                            n + 1,
                            bad.shown,
                            bad.xsd
                        ),
                        vec![field.name().to_owned()],
                    ),
                )
            })?
        };
        changes.push((field.clone(), value));
    }
    let named = id.clone().unwrap_or_default();
    let missing_id = || {
        (
            String::new(),
            RecordError::new(
                "MISSING_ARGUMENT",
                format!("Id not specified in an {} call", job.operation.name()),
                Vec::new(),
            ),
        )
    };
    match job.operation {
        Operation::Insert => {
            if id.is_some() {
                return Err((
                    String::new(),
                    RecordError::new(
                        "INVALID_FIELD",
                        "cannot specify Id in an insert call",
                        vec!["Id".to_owned()],
                    ),
                ));
            }
            writer
                .create(job.object, changes, None)
                .map(|id| (id, true))
                .map_err(|e| (String::new(), e))
        }
        Operation::Update => {
            let id = id.ok_or_else(missing_id)?;
            writer
                .update(job.object, &id, changes)
                .map(|id| (id, false))
                .map_err(|e| (named, e))
        }
        Operation::Delete => {
            let id = id.ok_or_else(missing_id)?;
            writer
                .delete(&id)
                .map(|id| (id, false))
                .map_err(|e| (named, e))
        }
        Operation::Upsert => {
            let field = job.external_id.as_deref().unwrap_or("Id");
            let value = if field == "Id" {
                id.map_or(Value::Null, Value::from)
            } else {
                changes
                    .iter()
                    .find(|(f, _)| f.name() == field)
                    .map_or(Value::Null, |(_, v)| v.clone())
            };
            writer
                .upsert(job.object, field, &value, changes)
                .map_err(|e| (String::new(), e))
        }
    }
}
