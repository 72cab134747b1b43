//! CRM object endpoints (`/crm/v3/objects/{type}/…`): batch upsert, update, create,
//! archive and read; create, read, update and archive one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::{Deref, Range};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::super::errors::{
    ApiError, MAX_BATCH_INPUTS, PORTAL_ID, PropertyError, StandardError, invalid_json,
};
use super::super::faults::FaultState;
use super::super::requests::{self, Fault};
use super::super::stats::SandboxStats;
use super::super::store::{Association, Changes, IdProperty, ObjectType, Record, Table, timestamp};
use super::super::{Data, Owner, Shared};

type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Adds every object type's routes (paths relative to `/crm`).
pub(super) fn routes(mut router: Router<Shared>) -> Router<Shared> {
    for (kind, path) in ObjectType::ALL
        .into_iter()
        .flat_map(|kind| kind.paths().iter().map(move |path| (kind, *path)))
    {
        let base = format!("/v3/objects/{path}");
        router = router
            .route(
                &format!("{base}/batch/upsert"),
                post(move |State(state): State<Shared>, body: Bytes| async move {
                    batch_upsert(&state, kind, &body).await
                }),
            )
            .route(
                &format!("{base}/batch/update"),
                post(move |State(state): State<Shared>, body: Bytes| async move {
                    batch_update(&state, kind, &body).await
                }),
            )
            .route(
                &format!("{base}/batch/create"),
                post(move |State(state): State<Shared>, body: Bytes| async move {
                    batch_create(&state, kind, &body)
                }),
            )
            .route(
                &format!("{base}/batch/archive"),
                post(move |State(state): State<Shared>, body: Bytes| async move {
                    batch_archive(&state, kind, &body)
                }),
            )
            .route(
                &format!("{base}/batch/read"),
                post(
                    move |State(state): State<Shared>, query: QueryPairs, body: Bytes| async move {
                        batch_read(&state, kind, query, &body)
                    },
                ),
            )
            .route(
                &base,
                post(move |State(state): State<Shared>, body: Bytes| async move {
                    create_single(&state, kind, &body)
                }),
            )
            .route(
                &format!("{base}/{{{}}}", kind.id_param()),
                get(
                    move |State(state): State<Shared>,
                          Path(id): Path<String>,
                          query: QueryPairs| async move {
                        read_one(&state, kind, &id, query)
                    },
                )
                .patch(
                    move |State(state): State<Shared>,
                          Path(id): Path<String>,
                          query: QueryPairs,
                          body: Bytes| async move {
                        update_single(&state, kind, &id, query, &body)
                    },
                )
                .delete(
                    move |State(state): State<Shared>, Path(id): Path<String>| async move {
                        archive_single(&state, kind, &id)
                    },
                ),
            );
    }
    router
}

/// A string of a request body, borrowed from the body unless it had escapes: batch
/// writes are the sandbox's hot path, and owning every id, name and value of 100
/// inputs cost more than the writes themselves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

// Ordered as its `str`, so a map of texts can be searched with a plain `&str`.
impl std::borrow::Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// An input's properties as parsed, borrowing from the body.
type Properties<'a> = BTreeMap<Text<'a>, Text<'a>>;

impl Changes for Properties<'_> {
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(|value| &**value)
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().map(|(name, value)| (&**name, &**value))
    }
}

/// `BatchInputSimplePublicObjectBatchInputUpsert` and `BatchInputSimplePublicObjectBatchInput`.
#[derive(Debug, Deserialize)]
struct BatchInputs<'a> {
    #[serde(borrow)]
    inputs: Vec<WriteInput<'a>>,
}

/// `SimplePublicObjectBatchInputUpsert` and `SimplePublicObjectBatchInput`, which
/// share one shape; property values must be strings, as HubSpot requires.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WriteInput<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(default, borrow)]
    id_property: Option<Text<'a>>,
    #[serde(borrow)]
    properties: Properties<'a>,
    #[serde(default)]
    object_write_trace_id: Option<String>,
}

/// The answers of a batch's written records, copied out of the store under its lock
/// into one buffer and serialized after the lock is released: the lock is what every
/// request queues on, and serializing there took as long as the writes themselves,
/// while copying each value into a clone of its record cost an allocation per string.
#[derive(Debug, Default)]
struct Written {
    text: String,
    /// Ranges of `text`: each property's name and value.
    properties: Vec<(Range<usize>, Range<usize>)>,
    records: Vec<WrittenRecord>,
}

/// One written record; its strings are ranges of [`Written::text`].
#[derive(Debug)]
struct WrittenRecord {
    id: u64,
    properties: Range<usize>,
    created_at: Range<usize>,
    updated_at: Range<usize>,
    archived_at: Option<DateTime<Utc>>,
    /// Upserts say whether the record was created (`SimplePublicUpsertObject`).
    new: Option<bool>,
    object_write_trace_id: Option<String>,
}

impl Written {
    fn with_capacity(records: usize) -> Self {
        Written {
            text: String::with_capacity(records * 256),
            properties: Vec::with_capacity(records * 8),
            records: Vec::with_capacity(records),
        }
    }

    fn push_str(&mut self, s: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(s);
        start..self.text.len()
    }

    fn copy(
        &mut self,
        kind: ObjectType,
        record: &Record,
        new: Option<bool>,
        object_write_trace_id: Option<String>,
    ) {
        // The record's own date properties hold exactly its timestamps; they are
        // picked up on the way rather than looked up again.
        let [_, created, modified] = kind.system_properties();
        let (mut created_at, mut updated_at) = (None, None);
        let first = self.properties.len();
        for (name, value) in &record.properties {
            let name_range = self.push_str(name);
            let value_range = self.push_str(value);
            if name == created {
                created_at = Some(value_range.clone());
            } else if name == modified {
                updated_at = Some(value_range.clone());
            }
            self.properties.push((name_range, value_range));
        }
        let created_at = created_at.unwrap_or_else(|| self.push_str(&timestamp(record.created_at)));
        let updated_at = updated_at.unwrap_or_else(|| self.push_str(&timestamp(record.updated_at)));
        self.records.push(WrittenRecord {
            id: record.id,
            properties: first..self.properties.len(),
            created_at,
            updated_at,
            archived_at: record.archived_at,
            new,
            object_write_trace_id,
        });
    }

    /// Appends the records' JSON, comma-separated (the inside of `results`).
    fn write_json(&self, out: &mut Vec<u8>) {
        for (i, record) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let view = WrittenView {
                written: self,
                record,
            };
            if serde_json::to_writer(&mut *out, &view).is_err() {
                out.extend_from_slice(b"null");
            }
        }
    }
}

/// A [`WrittenRecord`] as HubSpot answers it: `SimplePublicUpsertObject` with `new`,
/// `SimplePublicObject` without.
struct WrittenView<'a> {
    written: &'a Written,
    record: &'a WrittenRecord,
}

impl Serialize for WrittenView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let text = |range: &Range<usize>| &self.written.text[range.clone()];
        let record = self.record;
        let mut out = serializer.serialize_struct("SimplePublicObject", 8)?;
        out.serialize_field("id", &Id(record.id))?;
        out.serialize_field(
            "properties",
            &PropertiesView {
                written: self.written,
                range: record.properties.clone(),
            },
        )?;
        out.serialize_field("createdAt", text(&record.created_at))?;
        out.serialize_field("updatedAt", text(&record.updated_at))?;
        out.serialize_field("archived", &record.archived_at.is_some())?;
        if let Some(at) = record.archived_at {
            out.serialize_field("archivedAt", &timestamp(at))?;
        }
        if let Some(new) = record.new {
            out.serialize_field("new", &new)?;
        }
        if let Some(trace) = &record.object_write_trace_id {
            out.serialize_field("objectWriteTraceId", trace)?;
        }
        out.end()
    }
}

struct PropertiesView<'a> {
    written: &'a Written,
    range: Range<usize>,
}

impl Serialize for PropertiesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = &self.written.text;
        serializer.collect_map(
            self.written.properties[self.range.clone()]
                .iter()
                .map(|(name, value)| (&text[name.clone()], &text[value.clone()])),
        )
    }
}

/// A record id, which HubSpot sends as a string.
struct Id(u64);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// `SimplePublicObject` (and `SimplePublicObjectWithAssociations`, without associations).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectResult {
    id: String,
    properties: BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
    archived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    archived_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_write_trace_id: Option<String>,
}

impl ObjectResult {
    /// Every property the record has, as the write endpoints return it.
    fn written(record: &Record, object_write_trace_id: Option<String>) -> Self {
        ObjectResult {
            id: record.id.to_string(),
            properties: record.properties.clone(),
            created_at: timestamp(record.created_at),
            updated_at: timestamp(record.updated_at),
            archived: record.archived_at.is_some(),
            archived_at: record.archived_at.map(timestamp),
            object_write_trace_id,
        }
    }
}

/// `BatchResponse…` and `BatchResponse…WithErrors`: one shape, the error fields only on a 207.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchResponse<T> {
    status: &'static str,
    results: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_errors: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<StandardError>>,
    started_at: String,
    completed_at: String,
}

impl<T: Serialize> BatchResponse<T> {
    /// `success` when every input applied (200, or 201 for create), else 207.
    pub(super) fn respond(
        success: StatusCode,
        results: Vec<T>,
        errors: Vec<StandardError>,
        started: DateTime<Utc>,
    ) -> Response {
        let partial = !errors.is_empty();
        let body = BatchResponse {
            status: "COMPLETE",
            results,
            num_errors: partial.then_some(errors.len()),
            errors: partial.then_some(errors),
            started_at: timestamp(started),
            completed_at: timestamp(Utc::now()),
        };
        let status = if partial {
            StatusCode::MULTI_STATUS
        } else {
            success
        };
        (status, axum::Json(body)).into_response()
    }
}

/// Parses a batch body and applies the rules that reject a whole batch: size,
/// `idProperty` and duplicate ids. `action` names the operation in HubSpot's message.
fn keyed_inputs<'a>(
    kind: ObjectType,
    body: &'a [u8],
    action: &str,
) -> Result<Vec<(IdProperty, WriteInput<'a>)>, ApiError> {
    let request: BatchInputs = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let keyed = request
        .inputs
        .into_iter()
        .map(|input| {
            let by = id_property(kind, input.id_property.as_deref(), action)?;
            Ok((by, input))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    reject_duplicates(kind, keyed.iter().map(|(by, input)| (*by, &*input.id)))?;
    Ok(keyed)
}

/// Writes one keyed input of a batch (an upsert or an update) and copies the
/// written record into `written`. `problems` are the input's invalid values when
/// they were found before the lock was taken; `None` leaves the check to it.
type WriteOne = fn(
    ObjectType,
    &mut Table,
    &[Owner],
    IdProperty,
    WriteInput<'_>,
    Option<Vec<PropertyError>>,
    DateTime<Utc>,
    &mut Written,
) -> Result<(), Box<StandardError>>;

/// What HubSpot refuses in one input's values; `upsert` also checks the unique value
/// that names the record (an upsert by email creates a record with that email).
fn input_problems(
    kind: ObjectType,
    by: IdProperty,
    input: &WriteInput<'_>,
    owners: &[Owner],
    upsert: bool,
) -> Vec<PropertyError> {
    let mut problems = Vec::new();
    if let (true, IdProperty::Unique(property)) = (upsert, by)
        && let Some(problem) = check_property(kind, property, &input.id, owners)
    {
        problems.push(problem);
    }
    problems.extend(invalid_properties(kind, &input.properties, owners));
    problems
}

/// Whether checking an input needs the owners (which only the locked data has).
fn names_an_owner(input: &WriteInput<'_>) -> bool {
    input
        .properties
        .value("hubspot_owner_id")
        .is_some_and(|owner| !owner.is_empty())
}

/// Bytes of answer per input, to size the body once: an upsert result with a few
/// properties is 300–400 bytes.
const RESULT_BYTES: usize = 512;

/// Applies a batch of keyed inputs in order and independently: one bad record
/// does not hold back the rest. The body is written as the records are, so results
/// are never copied out of the store.
async fn apply_keyed(
    state: &Shared,
    kind: ObjectType,
    body: &[u8],
    action: &str,
    upsert: bool,
    write: WriteOne,
) -> Result<Response, ApiError> {
    let started = Utc::now();
    let keyed = keyed_inputs(kind, body, action)?;
    // Everything that needs no stored data is checked before the lock is taken.
    let problems: Vec<Option<Vec<PropertyError>>> = keyed
        .iter()
        .map(|(by, input)| {
            (!names_an_owner(input)).then(|| input_problems(kind, *by, input, &[], upsert))
        })
        .collect();
    // The distinct names, found before the lock: a batch usually repeats a few.
    let mut names: Vec<&str> = Vec::new();
    for name in keyed
        .iter()
        .flat_map(|(_, input)| input.properties.keys().map(|name| &**name))
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut written = Written::with_capacity(keyed.len());
    let mut errors = Vec::new();
    let mut data = state.lock_async().await;
    unknown_properties(&data.properties, kind, names.into_iter())?;
    let Data {
        store,
        owners,
        faults,
        stats,
        ..
    } = &mut *data;
    let table = store.table_mut(kind);
    let now = Utc::now();
    for ((by, input), problems) in keyed.into_iter().zip(problems) {
        if let Some(error) = injected_failure(faults, stats, || vec![input.id.to_string()]) {
            errors.push(error);
            continue;
        }
        if let Err(error) = write(kind, table, owners, by, input, problems, now, &mut written) {
            errors.push(*error);
        }
    }
    stats.records_written += written.records.len() as u64;
    drop(data);
    let mut out = Vec::with_capacity(64 + written.records.len() * RESULT_BYTES);
    out.extend_from_slice(br#"{"status":"COMPLETE","results":["#);
    written.write_json(&mut out);
    out.push(b']');
    Ok(finish_batch(out, StatusCode::OK, &errors, started))
}

/// Completes a batch answer whose results are already written (`{"status":…,"results":[…]`).
fn finish_batch(
    mut out: Vec<u8>,
    success: StatusCode,
    errors: &[StandardError],
    started: DateTime<Utc>,
) -> Response {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Tail<'e> {
        num_errors: usize,
        errors: &'e [StandardError],
    }
    let partial = !errors.is_empty();
    if partial {
        out.push(b',');
        let tail = serde_json::to_vec(&Tail {
            num_errors: errors.len(),
            errors,
        })
        .unwrap_or_else(|_| b"{}".to_vec());
        // The tail's fields, without its braces.
        out.extend_from_slice(&tail[1..tail.len() - 1]);
    }
    out.extend_from_slice(br#","startedAt":""#);
    out.extend_from_slice(timestamp(started).as_bytes());
    out.extend_from_slice(br#"","completedAt":""#);
    out.extend_from_slice(timestamp(Utc::now()).as_bytes());
    out.extend_from_slice(br#""}"#);
    let status = if partial {
        StatusCode::MULTI_STATUS
    } else {
        success
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        out,
    )
        .into_response()
}

async fn batch_upsert(state: &Shared, kind: ObjectType, body: &[u8]) -> Result<Response, ApiError> {
    apply_keyed(state, kind, body, "update/upsert", true, upsert_one).await
}

#[allow(clippy::too_many_arguments)]
fn upsert_one(
    kind: ObjectType,
    table: &mut Table,
    owners: &[Owner],
    by: IdProperty,
    input: WriteInput<'_>,
    problems: Option<Vec<PropertyError>>,
    now: DateTime<Utc>,
    written: &mut Written,
) -> Result<(), Box<StandardError>> {
    let existing = match by {
        IdProperty::RecordId => Some(
            table
                .resolve(&input.id, by)
                .ok_or_else(|| not_found_one(&input.id))?,
        ),
        IdProperty::Unique(_) => table.resolve(&input.id, by),
    };
    let problems = problems.unwrap_or_else(|| input_problems(kind, by, &input, owners, true));
    if !problems.is_empty() {
        return Err(Box::new(StandardError::invalid_properties(
            &input.id, &problems,
        )));
    }

    let mut changes = input.properties;
    if let (None, IdProperty::Unique(property)) = (existing, by) {
        // A record created by its unique value carries that value.
        let value = changes
            .entry(Text(Cow::Borrowed(property)))
            .or_insert(Text(Cow::Borrowed("")));
        if value.is_empty() {
            *value = input.id.clone();
        }
    }
    if let Some((_, holder)) = table.unique_conflict(existing, &changes) {
        return Err(conflict_one(kind, holder, &input.id));
    }

    let (record, new) = match existing {
        Some(id) => match table.update(id, &changes, now) {
            Some(record) => (record, false),
            None => return Err(not_found_one(&input.id)),
        },
        None => (table.create(&changes, now), true),
    };
    written.copy(kind, record, Some(new), input.object_write_trace_id);
    Ok(())
}

/// `POST …/batch/update`: like upsert, but an input whose record does not exist is a
/// per-record `OBJECT_NOT_FOUND` instead of a create.
async fn batch_update(state: &Shared, kind: ObjectType, body: &[u8]) -> Result<Response, ApiError> {
    apply_keyed(state, kind, body, "update", false, update_one).await
}

#[allow(clippy::too_many_arguments)]
fn update_one(
    kind: ObjectType,
    table: &mut Table,
    owners: &[Owner],
    by: IdProperty,
    input: WriteInput<'_>,
    problems: Option<Vec<PropertyError>>,
    now: DateTime<Utc>,
    written: &mut Written,
) -> Result<(), Box<StandardError>> {
    let id = table
        .resolve(&input.id, by)
        .ok_or_else(|| not_found_one(&input.id))?;
    let problems = problems.unwrap_or_else(|| input_problems(kind, by, &input, owners, false));
    if !problems.is_empty() {
        return Err(Box::new(StandardError::invalid_properties(
            &input.id, &problems,
        )));
    }
    if let Some((_, holder)) = table.unique_conflict(Some(id), &input.properties) {
        return Err(conflict_one(kind, holder, &input.id));
    }
    let record = table
        .update(id, &input.properties, now)
        .ok_or_else(|| not_found_one(&input.id))?;
    written.copy(kind, record, None, input.object_write_trace_id);
    Ok(())
}

/// `BatchInputSimplePublicObjectBatchInputForCreate`.
#[derive(Debug, Deserialize)]
struct CreateRequest {
    inputs: Vec<CreateInput>,
}

/// `SimplePublicObjectBatchInputForCreate`. The spec requires `associations`; like
/// HubSpot, the sandbox also takes an input without them.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    properties: BTreeMap<String, String>,
    #[serde(default)]
    associations: Vec<AssociationInput>,
    #[serde(default)]
    object_write_trace_id: Option<String>,
}

/// `PublicAssociationsForObject`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssociationInput {
    to: AssociatedObject,
    types: Vec<AssociationSpec>,
}

/// `PublicObjectId`; HubSpot's own examples send the id as a number too.
#[derive(Debug, Deserialize)]
pub(super) struct AssociatedObject {
    pub(super) id: StringOrNumber,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrNumber {
    String(String),
    Number(u64),
}

impl StringOrNumber {
    pub(super) fn text(&self) -> String {
        match self {
            StringOrNumber::String(text) => text.clone(),
            StringOrNumber::Number(n) => n.to_string(),
        }
    }
}

/// `AssociationSpec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AssociationSpec {
    pub(super) association_category: AssociationCategory,
    pub(super) association_type_id: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum AssociationCategory {
    HubspotDefined,
    IntegratorDefined,
    UserDefined,
    Work,
}

/// Resolves a create input's associations against the store: each type must be a
/// `HUBSPOT_DEFINED` one from `kind`, and each target a live record of its type.
fn resolve_associations(
    kind: ObjectType,
    data_store: &super::super::store::ObjectStore,
    inputs: &[AssociationInput],
) -> Result<Vec<Association>, String> {
    let mut links = Vec::new();
    for input in inputs {
        let to_id = input.to.id.text();
        for spec in &input.types {
            let target = (spec.association_category == AssociationCategory::HubspotDefined)
                .then(|| kind.association_target(spec.association_type_id))
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "{} association type id {:?}/{} is not valid for {} objects",
                        kind.label(),
                        spec.association_category,
                        spec.association_type_id,
                        kind.path()
                    )
                })?;
            let id = data_store
                .table(target)
                .resolve(&to_id, IdProperty::RecordId)
                .ok_or_else(|| {
                    format!(
                        "Cannot create association: {} {to_id} does not exist",
                        target.error_name()
                    )
                })?;
            links.push(Association {
                to: target,
                id,
                type_id: spec.association_type_id,
            });
        }
    }
    Ok(links)
}

/// `POST …/batch/create` (201). A unique value already taken, by a stored record or
/// by an earlier input of the same batch, fails the whole batch with HubSpot's 409
/// `CONFLICT` naming the first one, and nothing is written; an invalid property
/// value, a missing required one or an invalid association fails only its input (207).
fn batch_create(state: &Shared, kind: ObjectType, body: &[u8]) -> Result<Response, ApiError> {
    let started = Utc::now();
    let request: CreateRequest = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let (results, errors) = create_records(state, kind, request.inputs)?;
    Ok(BatchResponse::respond(
        StatusCode::CREATED,
        results,
        errors,
        started,
    ))
}

/// `POST /crm/v3/objects/{type}` (201): one input, whose failure is the whole answer.
fn create_single(state: &Shared, kind: ObjectType, body: &[u8]) -> Result<Response, ApiError> {
    let input: CreateInput = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    let (mut results, mut errors) = create_records(state, kind, vec![input])?;
    match (results.pop(), errors.pop()) {
        (Some(result), _) => Ok((StatusCode::CREATED, axum::Json(result)).into_response()),
        (None, Some(error)) => Err(single_error(error)),
        (None, None) => Err(ApiError::Injected(500)),
    }
}

/// A per-record error as the whole answer of a single-object endpoint.
fn single_error(error: StandardError) -> ApiError {
    match error.category {
        "OBJECT_NOT_FOUND" => ApiError::ObjectNotFound(
            error
                .context
                .get("ids")
                .and_then(|ids| ids.first())
                .cloned()
                .unwrap_or_default(),
        ),
        "INTERNAL_ERROR" => ApiError::Injected(500),
        _ => ApiError::Validation(error.message),
    }
}

/// `PATCH /crm/v3/objects/{type}/{id}` (`?idProperty=`): one update.
fn update_single(
    state: &Shared,
    kind: ObjectType,
    id: &str,
    query: QueryPairs,
    body: &[u8],
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Input<'a> {
        #[serde(borrow)]
        properties: Properties<'a>,
    }
    let pairs = query_pairs(query)?;
    let id_property_name = pairs
        .iter()
        .rev()
        .find(|(name, _)| name == "idProperty")
        .map(|(_, value)| value.as_str());
    let by = id_property(kind, id_property_name, "update")?;
    let input: Input = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    let mut data = state.lock();
    let Data {
        store,
        owners,
        faults,
        stats,
        ..
    } = &mut *data;
    if let Some(error) = injected_failure(faults, stats, || vec![id.to_owned()]) {
        return Err(single_error(error));
    }
    let input = WriteInput {
        id: Text(Cow::Borrowed(id)),
        id_property: None,
        properties: input.properties,
        object_write_trace_id: None,
    };
    let mut written = Written::with_capacity(1);
    let table = store.table_mut(kind);
    match update_one(
        kind,
        table,
        owners,
        by,
        input,
        None,
        Utc::now(),
        &mut written,
    ) {
        Ok(()) => {
            data.stats.records_written += 1;
            drop(data);
            let mut out = Vec::with_capacity(RESULT_BYTES);
            written.write_json(&mut out);
            Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                out,
            )
                .into_response())
        }
        Err(error) if error.category == "CONFLICT" => Err(ApiError::Conflict {
            label: kind.label(),
            existing: error
                .message
                .rsplit(' ')
                .next()
                .and_then(|id| id.parse().ok())
                .unwrap_or_default(),
        }),
        Err(error) => Err(single_error(*error)),
    }
}

/// `DELETE /crm/v3/objects/{type}/{id}`: 204, whether or not there was such a record.
fn archive_single(state: &Shared, kind: ObjectType, id: &str) -> Response {
    let mut data = state.lock();
    let table = data.store.table_mut(kind);
    if let Some(found) = table.resolve(id, IdProperty::RecordId)
        && table.archive(found, Utc::now())
    {
        data.stats.records_written += 1;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Validates and creates `inputs` (see [`batch_create`]): the created records and the per-input errors.
fn create_records(
    state: &Shared,
    kind: ObjectType,
    inputs: Vec<CreateInput>,
) -> Result<(Vec<ObjectResult>, Vec<StandardError>), ApiError> {
    let request = CreateRequest { inputs };
    let mut data = state.lock();
    unknown_properties(
        &data.properties,
        kind,
        request
            .inputs
            .iter()
            .flat_map(|input| input.properties.keys().map(String::as_str)),
    )?;
    let Data {
        store,
        owners,
        faults,
        stats,
        ..
    } = &mut *data;

    // Check everything before writing anything, so a conflict leaves the store as it was.
    let table = store.table(kind);
    let mut next_id = table.next_id();
    let mut taken_in_batch: HashMap<(&'static str, String), u64> = HashMap::new();
    let mut planned = Vec::with_capacity(request.inputs.len());
    for input in request.inputs {
        // Nothing names a record yet; the email, when given, is what a client can match on.
        let email = input.properties.get("email").cloned();
        let ids = || email.iter().cloned().collect::<Vec<_>>();
        if let Some(error) = injected_failure(faults, stats, ids) {
            planned.push(Err(error));
            continue;
        }
        let problems = invalid_for_create(kind, &input.properties, owners);
        if !problems.is_empty() {
            let mut error =
                StandardError::invalid_properties(email.as_deref().unwrap_or_default(), &problems);
            error.context.insert("ids", ids());
            planned.push(Err(error));
            continue;
        }
        let links = match resolve_associations(kind, store, &input.associations) {
            Ok(links) => links,
            Err(message) => {
                planned.push(Err(StandardError::new("VALIDATION_ERROR", message, ids())));
                continue;
            }
        };
        let table = store.table(kind);
        if let Some((_, existing)) = table.unique_conflict(None, &input.properties) {
            return Err(ApiError::Conflict {
                label: kind.label(),
                existing,
            });
        }
        for property in kind.unique_properties() {
            let Some(value) = input.properties.get(*property).filter(|v| !v.is_empty()) else {
                continue;
            };
            let key = (*property, kind.normalize(property, value).into_owned());
            if let Some(existing) = taken_in_batch.get(&key) {
                return Err(ApiError::Conflict {
                    label: kind.label(),
                    existing: *existing,
                });
            }
            taken_in_batch.insert(key, next_id);
        }
        next_id += 1;
        planned.push(Ok((input, links)));
    }

    let table = store.table_mut(kind);
    let now = Utc::now();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for plan in planned {
        match plan {
            Ok((input, links)) => {
                let id = table.create(&input.properties, now).id;
                table.associate(id, &links);
                if let Some(record) = table.get(id) {
                    results.push(ObjectResult::written(record, input.object_write_trace_id));
                }
            }
            Err(error) => errors.push(error),
        }
    }
    data.stats.records_written += results.len() as u64;
    drop(data);
    Ok((results, errors))
}

/// `BatchInputSimplePublicObjectId`, as archive takes it.
#[derive(Debug, Deserialize)]
struct ArchiveRequest {
    inputs: Vec<IdInput>,
}

/// `SimplePublicObjectId`.
#[derive(Debug, Deserialize)]
struct IdInput {
    id: String,
}

/// `POST …/batch/archive`: 204 with no body. Like HubSpot, ids that name no live
/// record (unknown, already archived, not numeric) are skipped without an error.
fn batch_archive(state: &Shared, kind: ObjectType, body: &[u8]) -> Result<Response, ApiError> {
    let request: ArchiveRequest = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let mut data = state.lock();
    let table = data.store.table_mut(kind);
    let now = Utc::now();
    let mut archived = 0_u64;
    for input in &request.inputs {
        if let Some(id) = table.resolve(&input.id, IdProperty::RecordId)
            && table.archive(id, now)
        {
            archived += 1;
        }
    }
    data.stats.records_written += archived;
    drop(data);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A per-record failure injected by [`super::super::Faults::partial_failure_rate`], counted.
/// `ids` are only made when a failure is drawn: this runs for every input of every batch.
pub(super) fn injected_failure(
    faults: &mut FaultState,
    stats: &mut SandboxStats,
    ids: impl FnOnce() -> Vec<String>,
) -> Option<StandardError> {
    let category = faults.partial_failure()?;
    stats.faults.partial += 1;
    requests::note_fault(Fault::Partial);
    let message = if category == "INTERNAL_ERROR" {
        "An internal error occurred while processing this input. Please try again."
    } else {
        "Property values were not valid: []"
    };
    Some(StandardError::new(category, message.to_owned(), ids()))
}

fn not_found_one(id: &str) -> Box<StandardError> {
    Box::new(StandardError::new(
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.".to_owned(),
        vec![id.to_owned()],
    ))
}

fn conflict_one(kind: ObjectType, holder: u64, id: &str) -> Box<StandardError> {
    Box::new(StandardError::new(
        "CONFLICT",
        format!("{} already exists. Existing ID: {holder}", kind.label()),
        vec![id.to_owned()],
    ))
}

/// Every property value of one input that HubSpot would refuse.
fn invalid_properties(
    kind: ObjectType,
    properties: &impl Changes,
    owners: &[Owner],
) -> Vec<PropertyError> {
    properties
        .pairs()
        .filter_map(|(name, value)| check_property(kind, name, value, owners))
        .collect()
}

/// HubSpot refuses a whole batch that writes a property the account does not have.
fn unknown_properties<'a>(
    custom: &BTreeMap<String, Vec<String>>,
    kind: ObjectType,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let mut missing: Vec<&str> = Vec::new();
    for name in names {
        if !crate::sandbox::property_exists(custom, kind, name) && !missing.contains(&name) {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let details: Vec<String> = missing
        .iter()
        .map(|name| {
            serde_json::json!({
                "isValid": false,
                "message": format!("Property \"{name}\" does not exist"),
                "error": "PROPERTY_DOESNT_EXIST",
                "name": name,
            })
            .to_string()
        })
        .collect();
    Err(ApiError::Validation(format!(
        "Property values were not valid: [{}]",
        details.join(",")
    )))
}

/// [`invalid_properties`] plus the properties a create must set.
fn invalid_for_create(
    kind: ObjectType,
    properties: &BTreeMap<String, String>,
    owners: &[Owner],
) -> Vec<PropertyError> {
    let mut problems = invalid_properties(kind, properties, owners);
    for required in kind.required_properties() {
        if properties
            .get(*required)
            .is_none_or(|v| v.trim().is_empty())
        {
            problems.push(PropertyError::new(
                required,
                "REQUIRED_FIELD",
                format!("{required} is required"),
            ));
        }
    }
    problems
}

/// The allowed values of an enumeration property, for the types that have it.
fn options(kind: ObjectType, name: &str) -> Option<&'static [&'static str]> {
    match (kind, name) {
        (ObjectType::Tasks, "hs_task_status") => Some(&[
            "NOT_STARTED",
            "IN_PROGRESS",
            "WAITING",
            "COMPLETED",
            "DEFERRED",
        ]),
        (ObjectType::Tasks, "hs_task_priority") => Some(&["NONE", "LOW", "MEDIUM", "HIGH"]),
        (ObjectType::Tasks, "hs_task_type") => Some(&[
            "CALL",
            "EMAIL",
            "LINKED_IN",
            "MEETING",
            "LINKED_IN_CONNECT",
            "LINKED_IN_MESSAGE",
            "TODO",
        ]),
        _ => None,
    }
}

/// A datetime property value: milliseconds since the epoch, RFC 3339, or a plain date.
fn valid_datetime(value: &str) -> bool {
    let value = value.trim();
    value.parse::<i64>().is_ok()
        || DateTime::parse_from_rfc3339(value).is_ok()
        || chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
}

/// HubSpot's per-property checks: the value's format, and that an owner exists and is active.
fn check_property(
    kind: ObjectType,
    name: &str,
    value: &str,
    owners: &[Owner],
) -> Option<PropertyError> {
    // An empty value clears the property, so there is nothing to check.
    if value.is_empty() {
        return None;
    }
    if let Some(allowed) = options(kind, name)
        && !allowed.contains(&value)
    {
        return Some(PropertyError::new(
            name,
            "INVALID_OPTION",
            format!(
                "{value} was not one of the allowed options: [{}]",
                allowed.join(", ")
            ),
        ));
    }
    match name {
        "hs_timestamp" if !valid_datetime(value) => Some(PropertyError::new(
            name,
            "INVALID_DATE",
            format!("{value} is not a valid datetime (ISO 8601 or milliseconds since the epoch)"),
        )),
        "email" if kind == ObjectType::Contacts && !valid_email(value) => Some(PropertyError::new(
            name,
            "INVALID_EMAIL",
            format!("Email address {value} is invalid"),
        )),
        "hubspot_owner_id" => {
            if value.trim().parse::<u64>().is_err() {
                Some(PropertyError::new(
                    name,
                    "INVALID_INTEGER",
                    format!("{value} was not a valid integer (for owner ID)."),
                ))
            } else if !owners
                .iter()
                .any(|owner| !owner.archived && owner.id == value.trim())
            {
                Some(PropertyError::new(
                    name,
                    "INVALID_OWNER_ID",
                    format!("{value} is not a valid owner id"),
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// A pragmatic address check: one `@`, a dot-atom local part, a dotted domain with an alphabetic TLD.
pub(crate) fn valid_email(value: &str) -> bool {
    let value = value.trim();
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    // Checked label by label without collecting them: every input of a batch passes here.
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

fn id_property(kind: ObjectType, name: Option<&str>, action: &str) -> Result<IdProperty, ApiError> {
    kind.id_property(name).ok_or_else(|| {
        ApiError::Validation(format!(
            "Unable to perform {action} by non-unique {} property {} in portal ID {PORTAL_ID}",
            kind.type_id(),
            name.unwrap_or_default()
        ))
    })
}

/// HubSpot refuses a whole batch that names one record twice.
fn reject_duplicates<'a>(
    kind: ObjectType,
    ids: impl Iterator<Item = (IdProperty, &'a str)>,
) -> Result<(), ApiError> {
    let mut seen = HashSet::new();
    let mut duplicates: Vec<String> = Vec::new();
    for (by, id) in ids {
        let key = match by {
            IdProperty::RecordId => (None, Cow::Borrowed(id.trim())),
            IdProperty::Unique(property) => (Some(property), kind.normalize(property, id)),
        };
        if !seen.insert(key) && !duplicates.iter().any(|d| d == id) {
            duplicates.push(id.to_owned());
        }
    }
    if duplicates.is_empty() {
        Ok(())
    } else {
        Err(ApiError::DuplicateIds(duplicates))
    }
}

/// `BatchReadInputSimplePublicObjectId`; `properties` defaults to the type's default set.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadRequest {
    #[serde(default)]
    id_property: Option<String>,
    inputs: Vec<IdInput>,
    #[serde(default)]
    properties: Vec<String>,
}

/// `?archived=true` on a read: look among archived records only, as HubSpot does.
fn archived_flag(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    match pairs
        .iter()
        .rev()
        .find(|(name, _)| name == "archived")
        .map(|(_, value)| value.as_str())
    {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::Validation(format!(
            "archived must be true or false, got {other:?}"
        ))),
    }
}

fn query_pairs(query: QueryPairs) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::Validation(e.body_text()))
}

/// The record an input names, among live or (with `archived`) archived records.
fn find(table: &Table, id: &str, by: IdProperty, archived: bool) -> Option<u64> {
    if archived {
        table.resolve_archived(id, by)
    } else {
        table.resolve(id, by)
    }
}

fn batch_read(
    state: &Shared,
    kind: ObjectType,
    query: QueryPairs,
    body: &[u8],
) -> Result<Response, ApiError> {
    let started = Utc::now();
    let archived = archived_flag(&query_pairs(query)?)?;
    let request: ReadRequest = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let by = id_property(kind, request.id_property.as_deref(), "read")?;

    let data = state.lock();
    let table = data.store.table(kind);
    let mut found = HashSet::new();
    let mut results = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for input in &request.inputs {
        match find(table, &input.id, by, archived).and_then(|id| table.get(id)) {
            Some(record) => {
                if found.insert(record.id) {
                    results.push(object_result(kind, record, &request.properties));
                }
            }
            None => {
                if !missing.contains(&input.id) {
                    missing.push(input.id.clone());
                }
            }
        }
    }
    drop(data);
    // HubSpot reports every missing id in one error.
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![StandardError::new(
            "OBJECT_NOT_FOUND",
            format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                kind.error_name()
            ),
            missing,
        )]
    };
    Ok(BatchResponse::respond(
        StatusCode::OK,
        results,
        errors,
        started,
    ))
}

fn read_one(
    state: &Shared,
    kind: ObjectType,
    id: &str,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query)?;
    let archived = archived_flag(&pairs)?;
    let mut id_property_name = None;
    let mut properties = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "idProperty" => id_property_name = Some(value),
            // Both `properties=a,b` and repeated `properties=a&properties=b` are accepted.
            "properties" => properties.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    let by = id_property(kind, id_property_name.as_deref(), "read")?;
    let data = state.lock();
    let table = data.store.table(kind);
    let record = find(table, id, by, archived)
        .and_then(|found| table.get(found))
        .ok_or_else(|| ApiError::ObjectNotFound(id.to_owned()))?;
    let body = object_result(kind, record, &properties);
    drop(data);
    Ok(axum::Json(body).into_response())
}

/// The requested properties that have values, plus the ones HubSpot always returns.
pub(super) fn object_result(
    kind: ObjectType,
    record: &Record,
    requested: &[String],
) -> ObjectResult {
    let wanted = |name: &str| {
        if requested.is_empty() {
            kind.default_properties().contains(&name)
        } else {
            kind.system_properties().contains(&name) || requested.iter().any(|r| r == name)
        }
    };
    ObjectResult {
        id: record.id.to_string(),
        properties: record
            .properties
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        created_at: timestamp(record.created_at),
        updated_at: timestamp(record.updated_at),
        archived: record.archived_at.is_some(),
        archived_at: record.archived_at.map(timestamp),
        object_write_trace_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_validation() {
        for good in [
            "a@b.co",
            "first.last+tag@sub.example.com",
            " Padded@Example.com ",
            "o'brien@x-y.io",
        ] {
            assert!(valid_email(good), "{good}");
        }
        for bad in [
            "not-an-email",
            "a@b",
            "@b.com",
            "a@.com",
            "a@b.c",
            "a b@c.com",
            "a@@b.com",
            "a..b@c.com",
            "a@b.com.",
            "a@-b.com",
            "a@b.c0m",
            "",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn duplicates_compare_normalized_emails() {
        let by = IdProperty::Unique("email");
        let err = reject_duplicates(
            ObjectType::Contacts,
            [(by, "A@x.io"), (by, "b@x.io"), (by, "a@X.io ")].into_iter(),
        )
        .expect_err("a duplicate");
        assert_eq!(
            err.to_string(),
            "Duplicate IDs found in batch input: [a@X.io ]. IDs must be unique"
        );
        // The same text by record id and by email names different things.
        assert!(
            reject_duplicates(
                ObjectType::Contacts,
                [(by, "1001"), (IdProperty::RecordId, "1001")].into_iter()
            )
            .is_ok()
        );
    }
}
