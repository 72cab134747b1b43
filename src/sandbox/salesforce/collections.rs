//! sObject Collections (`/composite/sobjects`: create, update, upsert, read, delete,
//! at most 200 records, `allOrNone`) and the single-record `/sobjects` resources.
//!
//! A body that cannot be read (bad JSON, an unknown type or field, a value of the
//! wrong type) fails the whole request with a 400, as Salesforce's parser does; rules
//! about one record's values fail only that record, in its place in the results.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::super::requests::{self, Fault};
use super::super::{Data, Shared};
use super::errors::{MAX_COLLECTION, RecordError, SfError};
use super::query::render;
use super::schema::{self, FieldRef, SObject};
use super::store::{Change, Writer};
use super::{Caller, ids};

pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route(
            "/{version}/composite/sobjects",
            post(create_many).patch(update_many).delete(delete_many),
        )
        .route("/{version}/composite/sobjects/{sobject}", get(read_many))
        .route(
            "/{version}/composite/sobjects/{sobject}/{field}",
            patch(upsert_many),
        )
        .route("/{version}/sobjects/{sobject}", post(create_one))
        .route(
            "/{version}/sobjects/{sobject}/{id}",
            get(read_one).patch(update_one).delete(delete_one),
        )
        .route(
            "/{version}/sobjects/{sobject}/{field}/{value}",
            patch(upsert_one),
        )
}

/// One record's result (`SaveResult`, `UpsertResult`, `DeleteResult`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SaveResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    success: bool,
    errors: Vec<RecordError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<bool>,
}

/// A record of a request body, read and typed.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub kind: SObject,
    /// `Id` (or `id`) as sent, when present and not null.
    pub id: Option<String>,
    pub changes: Vec<Change>,
}

/// Reads one record object: `attributes.type` (or `default`), then every field.
pub(crate) fn parse_record(value: &Value, default: Option<SObject>) -> Result<Parsed, SfError> {
    let Value::Object(object) = value else {
        return Err(SfError::json_parser(
            "Cannot deserialize instance of SObject from a non-object value",
        ));
    };
    let named = object
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    let kind = match (named, default) {
        (Some(name), _) => SObject::from_name(name).ok_or_else(|| SfError::unknown_type(name))?,
        (None, Some(kind)) => kind,
        (None, None) => {
            return Err(SfError::bad_request(
                "INVALID_TYPE",
                "Must send a concrete entity type.",
            ));
        }
    };
    let mut parsed = Parsed {
        kind,
        id: None,
        changes: Vec::new(),
    };
    for (name, value) in object {
        if name == "attributes" {
            continue;
        }
        if name.eq_ignore_ascii_case("Id") {
            parsed.id = match value {
                Value::Null => None,
                Value::String(id) => Some(id.clone()),
                other => Some(other.to_string()),
            };
            continue;
        }
        let field = kind
            .field(name)
            .ok_or_else(|| SfError::unknown_field(name, kind.name()))?;
        let stored = schema::from_json(field.kind(), value).map_err(|bad| {
            SfError::json_parser(format!(
                "Cannot deserialize instance of {} from VALUE_STRING value {} or request may be missing a required field",
                bad.xsd, bad.shown
            ))
        })?;
        parsed.changes.push((field, stored));
    }
    Ok(parsed)
}

/// `{"allOrNone": bool, "records": [...]}`.
fn parse_collection(body: &[u8], default: Option<SObject>) -> Result<(bool, Vec<Parsed>), SfError> {
    let value: Value = serde_json::from_slice(body).map_err(SfError::json_parser)?;
    let all_or_none = match value.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(SfError::json_parser(format!(
                "Cannot deserialize instance of boolean from value {other}"
            )));
        }
    };
    let Some(records) = value.get("records").and_then(Value::as_array) else {
        return Err(SfError::json_parser(
            "Cannot deserialize the request: records must be a list of sObjects",
        ));
    };
    if records.len() > MAX_COLLECTION {
        return Err(SfError::too_many_records());
    }
    let parsed = records
        .iter()
        .map(|record| parse_record(record, default))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((all_or_none, parsed))
}

/// What one record's write produced: its id and, for upserts, whether it was created;
/// or the id to name in the failure (if any) and the error.
type Outcome = Result<(String, Option<bool>), (Option<String>, RecordError)>;

/// Which collection operation, for the shape of its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Update,
    Upsert,
    Delete,
}

/// Applies one write per input in order, in one lock: each may fail on its own, or,
/// with `all_or_none`, any failure rolls all of them back. Injected partial failures
/// fail a record before it is written.
fn apply<T>(
    state: &Shared,
    caller: &Caller,
    inputs: Vec<T>,
    all_or_none: bool,
    operation: Operation,
    mut write: impl FnMut(&mut Writer<'_>, T) -> Outcome,
) -> Vec<SaveResult> {
    let mut data = state.lock();
    let Data {
        salesforce,
        faults,
        stats,
        ..
    } = &mut *data;
    let now = salesforce.now().1;
    let mut writer = Writer::new(&mut salesforce.org, &caller.user, now);
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(inputs.len());
    requests::note_records(inputs.len());
    for input in inputs {
        if let Some(category) = faults.partial_failure() {
            stats.faults.partial += 1;
            requests::note_fault(Fault::Partial);
            outcomes.push(Err((None, injected_failure(category))));
            continue;
        }
        outcomes.push(write(&mut writer, input));
    }
    let rolled_back = all_or_none && outcomes.iter().any(Result::is_err);
    if rolled_back {
        writer.rollback();
    } else {
        stats.records_written += outcomes.iter().filter(|o| o.is_ok()).count() as u64;
    }
    let upsert = operation == Operation::Upsert;
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok((id, created)) if rolled_back => {
                // A rolled-back create leaves no record to name.
                let created = created.unwrap_or(operation == Operation::Create);
                SaveResult {
                    id: (!created).then_some(id),
                    success: false,
                    errors: vec![RecordError::rolled_back()],
                    created: upsert.then_some(false),
                }
            }
            Ok((id, created)) => SaveResult {
                id: Some(id),
                success: true,
                errors: Vec::new(),
                created: upsert.then_some(created.unwrap_or(false)),
            },
            Err((id, error)) => SaveResult {
                id,
                success: false,
                errors: vec![error],
                created: upsert.then_some(false),
            },
        })
        .collect()
}

/// The per-record error an injected partial failure answers with.
fn injected_failure(category: &str) -> RecordError {
    if category == "VALIDATION_ERROR" {
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
    }
}

fn results(results: Vec<SaveResult>) -> Response {
    axum::Json(results).into_response()
}

/// `POST /composite/sobjects`: create; records may be of several types, none with an id.
async fn create_many(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, SfError> {
    let (all_or_none, records) = parse_collection(&body, None)?;
    Ok(results(apply(
        &state,
        &caller,
        records,
        all_or_none,
        Operation::Create,
        |writer, record| {
            if record.id.is_some() {
                return Err((
                    None,
                    RecordError::new(
                        "INVALID_FIELD",
                        "cannot specify Id in an insert call",
                        vec!["Id".to_owned()],
                    ),
                ));
            }
            writer
                .create(record.kind, record.changes, None)
                .map(|id| (id, None))
                .map_err(|e| (None, e))
        },
    )))
}

/// `PATCH /composite/sobjects`: update by `id`.
async fn update_many(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, SfError> {
    let (all_or_none, records) = parse_collection(&body, None)?;
    Ok(results(apply(
        &state,
        &caller,
        records,
        all_or_none,
        Operation::Update,
        |writer, record| {
            let Some(id) = record.id else {
                return Err((
                    None,
                    RecordError::new(
                        "MISSING_ARGUMENT",
                        "Id not specified in an update call",
                        Vec::new(),
                    ),
                ));
            };
            writer
                .update(record.kind, &id, record.changes)
                .map(|id| (id, None))
                .map_err(|e| (Some(id), e))
        },
    )))
}

/// The API name of an external-id field named in a URL (`Id` included), or Salesforce's 404.
fn external_field(data: &Data, kind: SObject, name: &str) -> Result<String, SfError> {
    if name.eq_ignore_ascii_case("Id") {
        return Ok("Id".to_owned());
    }
    data.salesforce
        .org
        .external_id(kind, name)
        .map(str::to_owned)
        .ok_or_else(|| {
            SfError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("Provided external ID field does not exist or is not accessible: {name}"),
            )
        })
}

fn sobject(name: &str) -> Result<SObject, SfError> {
    SObject::from_name(name).ok_or_else(SfError::not_found)
}

/// The value a record gives its external-id field (`Id` from the record's id).
fn external_value(record: &Parsed, field: &str) -> Value {
    if field == "Id" {
        return record.id.clone().map_or(Value::Null, Value::from);
    }
    record
        .changes
        .iter()
        .find(|(f, _)| f.name().eq_ignore_ascii_case(field))
        .map_or(Value::Null, |(_, v)| v.clone())
}

/// `PATCH /composite/sobjects/{SObject}/{ExternalIdField}`: upsert, one type.
async fn upsert_many(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((_version, name, field)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    let field = external_field(&state.lock(), kind, &field)?;
    let (all_or_none, records) = parse_collection(&body, Some(kind))?;
    if let Some(other) = records.iter().find(|r| r.kind != kind) {
        return Err(SfError::bad_request(
            "INVALID_TYPE",
            format!(
                "Record type {} does not match the type {} in the URL",
                other.kind.name(),
                kind.name()
            ),
        ));
    }
    Ok(results(apply(
        &state,
        &caller,
        records,
        all_or_none,
        Operation::Upsert,
        |writer, record| {
            let value = external_value(&record, &field);
            writer
                .upsert(kind, &field, &value, record.changes)
                .map(|(id, created)| (id, Some(created)))
                .map_err(|e| (None, e))
        },
    )))
}

/// `DELETE /composite/sobjects?ids=…&allOrNone=…`.
async fn delete_many(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, SfError> {
    let ids = list_param(&params, "ids");
    if ids.len() > MAX_COLLECTION {
        return Err(SfError::too_many_records());
    }
    let all_or_none = params
        .iter()
        .any(|(k, v)| k == "allOrNone" && v.eq_ignore_ascii_case("true"));
    Ok(results(apply(
        &state,
        &caller,
        ids,
        all_or_none,
        Operation::Delete,
        |writer, id| {
            writer
                .delete(&id)
                .map(|id| (id, None))
                .map_err(|e| (Some(id), e))
        },
    )))
}

/// A comma-separated query parameter.
fn list_param(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Resolves `fields=` names for reads; `None` when absent.
fn read_fields(
    kind: SObject,
    data: &Data,
    params: &[(String, String)],
) -> Result<Option<Vec<FieldRef>>, SfError> {
    if !params.iter().any(|(k, _)| k == "fields") {
        return Ok(None);
    }
    list_param(params, "fields")
        .iter()
        .map(|name| {
            kind.field(name)
                .map(|f| data.salesforce.org.canonical(kind, f))
                .ok_or_else(|| {
                    SfError::bad_request(
                        "INVALID_FIELD",
                        format!("No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.", kind.name()),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Every standard field, then the custom fields the record has.
fn all_fields(kind: SObject, record: &super::store::Record) -> Vec<FieldRef> {
    let mut fields: Vec<FieldRef> = kind.fields().map(FieldRef::Standard).collect();
    fields.extend(
        record
            .fields
            .keys()
            .filter(|name| name.ends_with("__c"))
            .map(|name| FieldRef::Custom(name.clone())),
    );
    fields
}

/// `GET /composite/sobjects/{SObject}?ids=…&fields=…`: the records in order, `null` for
/// an id that names no live record of the type.
async fn read_many(
    State(state): State<Shared>,
    Path((version, name)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    let ids = list_param(&params, "ids");
    if ids.len() > MAX_COLLECTION {
        return Err(SfError::too_many_records());
    }
    let data = state.lock();
    let Some(fields) = read_fields(kind, &data, &params)? else {
        return Err(SfError::bad_request(
            "MISSING_ARGUMENT",
            "The fields parameter is required",
        ));
    };
    let records: Vec<Value> = ids
        .iter()
        .map(|id| {
            ids::normalize(id)
                .and_then(|id| data.salesforce.org.get(&id))
                .filter(|r| r.kind == kind && !r.deleted)
                .map_or(Value::Null, |r| render(r, &fields, &version))
        })
        .collect();
    Ok(axum::Json(records).into_response())
}

/// `POST /sobjects/{SObject}`: 201 `{id, success, errors}`, or the record's error as a 400.
async fn create_one(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((_version, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    let value: Value = serde_json::from_slice(&body).map_err(SfError::json_parser)?;
    let record = parse_record(&value, Some(kind))?;
    let result = single(&state, &caller, |writer| {
        if record.id.is_some() {
            return Err(RecordError::new(
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
                vec!["Id".to_owned()],
            ));
        }
        writer.create(kind, record.changes, None)
    })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": result, "success": true, "errors": []})),
    )
        .into_response())
}

/// Runs one write in one lock; its error is the whole answer.
fn single<R>(
    state: &Shared,
    caller: &Caller,
    write: impl FnOnce(&mut Writer<'_>) -> Result<R, RecordError>,
) -> Result<R, SfError> {
    let mut data = state.lock();
    let Data {
        salesforce, stats, ..
    } = &mut *data;
    let now = salesforce.now().1;
    let mut writer = Writer::new(&mut salesforce.org, &caller.user, now);
    match write(&mut writer) {
        Ok(result) => {
            stats.records_written += 1;
            Ok(result)
        }
        Err(error) => Err(single_error(error)),
    }
}

/// A record that is not there is a 404 on the single-record resources.
fn single_error(error: RecordError) -> SfError {
    match error.status_code {
        "INVALID_CROSS_REFERENCE_KEY" | "MALFORMED_ID"
            if error.fields == ["Id"] || error.fields.is_empty() =>
        {
            SfError::not_found()
        }
        "ENTITY_IS_DELETED" => SfError::from_record(error).with_status(StatusCode::NOT_FOUND),
        _ => SfError::from_record(error),
    }
}

/// `GET /sobjects/{SObject}/{id}?fields=…`.
async fn read_one(
    State(state): State<Shared>,
    Path((version, name, id)): Path<(String, String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    let data = state.lock();
    let record = ids::normalize(&id)
        .and_then(|id| data.salesforce.org.get(&id))
        .filter(|r| r.kind == kind && !r.deleted)
        .ok_or_else(SfError::not_found)?;
    let fields = match read_fields(kind, &data, &params)? {
        Some(fields) => fields,
        None => all_fields(kind, record),
    };
    Ok(axum::Json(render(record, &fields, &version)).into_response())
}

/// `PATCH /sobjects/{SObject}/{id}`: 204.
async fn update_one(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((_version, name, id)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    let value: Value = serde_json::from_slice(&body).map_err(SfError::json_parser)?;
    let record = parse_record(&value, Some(kind))?;
    single(&state, &caller, |writer| {
        writer.update(kind, &id, record.changes)
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /sobjects/{SObject}/{id}`: 204.
async fn delete_one(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((_version, name, id)): Path<(String, String, String)>,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    if ids::normalize(&id).and_then(|id| SObject::of_id(&id)) != Some(kind) {
        return Err(SfError::not_found());
    }
    single(&state, &caller, |writer| writer.delete(&id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PATCH /sobjects/{SObject}/{ExternalIdField}/{value}`: 201 when created, else 200.
async fn upsert_one(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((_version, name, field, value)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Result<Response, SfError> {
    let kind = sobject(&name)?;
    let field = external_field(&state.lock(), kind, &field)?;
    let body: Value = serde_json::from_slice(&body).map_err(SfError::json_parser)?;
    let record = parse_record(&body, Some(kind))?;
    let (id, created) = single(&state, &caller, |writer| {
        writer.upsert(kind, &field, &Value::from(value), record.changes)
    })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(json!({"id": id, "success": true, "errors": [], "created": created})),
    )
        .into_response())
}

/// A record as `/_sandbox/salesforce/{SObject}` lists it: every field it has.
pub(crate) fn stored(record: &super::store::Record) -> Value {
    let mut object = Map::new();
    object.insert("attributes".to_owned(), json!({"type": record.kind.name()}));
    for (name, value) in &record.fields {
        object.insert(name.clone(), value.clone());
    }
    Value::Object(object)
}
