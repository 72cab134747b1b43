//! Associations v4: batch create, default associate (batch and single), batch read,
//! and the list of one record's associations. A link is stored on the record it
//! starts from; reads see links in both directions, as HubSpot's are.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::super::errors::{ApiError, MAX_BATCH_INPUTS, StandardError, invalid_json};
use super::super::requests;
use super::super::store::{Association, IdProperty, ObjectStore, ObjectType};
use super::super::{Data, Shared};
use super::objects::{
    AssociatedObject, AssociationCategory, AssociationSpec, BatchResponse, injected_failure,
};

pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route(
            "/v4/associations/{fromObjectType}/{toObjectType}/batch/create",
            post(
                |State(state): State<Shared>,
                 Path((from, to)): Path<(String, String)>,
                 body: Bytes| async move { batch_create(&state, &from, &to, &body) },
            ),
        )
        .route(
            "/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default",
            post(
                |State(state): State<Shared>,
                 Path((from, to)): Path<(String, String)>,
                 body: Bytes| async move { batch_default(&state, &from, &to, &body) },
            ),
        )
        .route(
            "/v4/associations/{fromObjectType}/{toObjectType}/batch/read",
            post(
                |State(state): State<Shared>,
                 Path((from, to)): Path<(String, String)>,
                 body: Bytes| async move { batch_read(&state, &from, &to, &body) },
            ),
        )
        .route(
            "/v4/objects/{objectType}/{objectId}/associations/default/{toObjectType}/{toObjectId}",
            put(
                |State(state): State<Shared>,
                 Path((from, from_id, to, to_id)): Path<(String, String, String, String)>| async move {
                    single_default(&state, &from, &from_id, &to, &to_id)
                },
            ),
        )
        .route(
            "/v4/objects/{objectType}/{objectId}/associations/{toObjectType}",
            get(
                |State(state): State<Shared>,
                 Path((from, id, to)): Path<(String, String, String)>| async move {
                    list(&state, &from, &id, &to)
                },
            ),
        )
}

fn kinds(from: &str, to: &str) -> Result<(ObjectType, ObjectType), ApiError> {
    let kind = |name: &str| {
        ObjectType::from_segment(name).ok_or_else(|| {
            ApiError::Validation(format!("Unable to infer object type from: {name}"))
        })
    };
    Ok((kind(from)?, kind(to)?))
}

/// `BatchInputPublicAssociationMultiPost`.
#[derive(Debug, Deserialize)]
struct CreateRequest {
    inputs: Vec<CreateInput>,
}

/// `PublicAssociationMultiPost`.
#[derive(Debug, Deserialize)]
struct CreateInput {
    from: AssociatedObject,
    to: AssociatedObject,
    types: Vec<AssociationSpec>,
}

/// `LabelsBetweenObjectPair`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LabelsBetween {
    from_object_type_id: &'static str,
    from_object_id: String,
    to_object_type_id: &'static str,
    to_object_id: String,
    labels: Vec<String>,
}

/// The live record ids an input's `from` and `to` name, or a per-input error.
fn endpoints(
    store: &ObjectStore,
    from: ObjectType,
    to: ObjectType,
    from_id: &str,
    to_id: &str,
) -> Result<(u64, u64), Box<StandardError>> {
    let find = |kind: ObjectType, id: &str| {
        store
            .table(kind)
            .resolve(id, IdProperty::RecordId)
            .ok_or_else(|| {
                Box::new(StandardError::new(
                    "OBJECT_NOT_FOUND",
                    format!("No {} with id {id} exists", kind.error_name()),
                    vec![id.to_owned()],
                ))
            })
    };
    Ok((find(from, from_id)?, find(to, to_id)?))
}

fn batch_create(state: &Shared, from: &str, to: &str, body: &[u8]) -> Result<Response, ApiError> {
    let started = Utc::now();
    let (from, to) = kinds(from, to)?;
    let request: CreateRequest = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let mut data = state.lock();
    let Data {
        store,
        faults,
        stats,
        ..
    } = &mut *data;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in request.inputs {
        let (from_id, to_id) = (input.from.id.text(), input.to.id.text());
        if let Some(error) = injected_failure(faults, stats, || vec![from_id.clone()]) {
            errors.push(error);
            continue;
        }
        let (from_record, to_record) = match endpoints(store, from, to, &from_id, &to_id) {
            Ok(ids) => ids,
            Err(error) => {
                errors.push(*error);
                continue;
            }
        };
        let links: Result<Vec<Association>, Box<StandardError>> = input
            .types
            .iter()
            .map(|spec| {
                let valid = spec.association_category == AssociationCategory::HubspotDefined
                    && from.association_target(spec.association_type_id) == Some(to);
                valid
                    .then_some(Association {
                        to,
                        id: to_record,
                        type_id: spec.association_type_id,
                    })
                    .ok_or_else(|| {
                        Box::new(StandardError::new(
                            "VALIDATION_ERROR",
                            format!(
                                "{:?} association type {} is not valid from {} to {}",
                                spec.association_category,
                                spec.association_type_id,
                                from.path(),
                                to.path()
                            ),
                            vec![from_id.clone()],
                        ))
                    })
            })
            .collect();
        match links {
            Ok(links) => {
                store.table_mut(from).associate(from_record, &links);
                results.push(LabelsBetween {
                    from_object_type_id: from.type_id(),
                    from_object_id: from_id,
                    to_object_type_id: to.type_id(),
                    to_object_id: to_id,
                    labels: Vec::new(),
                });
            }
            Err(error) => errors.push(*error),
        }
    }
    data.stats.records_written += results.len() as u64;
    drop(data);
    Ok(BatchResponse::respond(
        StatusCode::CREATED,
        results,
        errors,
        started,
    ))
}

/// `BatchInputPublicDefaultAssociationMultiPost`.
#[derive(Debug, Deserialize)]
struct DefaultRequest {
    inputs: Vec<DefaultInput>,
}

#[derive(Debug, Deserialize)]
struct DefaultInput {
    from: AssociatedObject,
    to: AssociatedObject,
}

/// `PublicDefaultAssociation`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DefaultAssociation {
    from: ObjectId,
    to: ObjectId,
    association_spec: SpecOut,
}

#[derive(Debug, Serialize)]
struct ObjectId {
    id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SpecOut {
    association_category: AssociationCategory,
    association_type_id: i32,
}

/// Links `from_id` to `to_id` with the default type; the answer's result or error.
fn associate_default(
    data: &mut Data,
    from: ObjectType,
    to: ObjectType,
    from_id: String,
    to_id: String,
) -> Result<DefaultAssociation, Box<StandardError>> {
    let type_id = from.default_association(to).ok_or_else(|| {
        Box::new(StandardError::new(
            "VALIDATION_ERROR",
            format!(
                "There is no default association from {} to {}",
                from.path(),
                to.path()
            ),
            vec![from_id.clone()],
        ))
    })?;
    let (from_record, to_record) = endpoints(&data.store, from, to, &from_id, &to_id)?;
    data.store.table_mut(from).associate(
        from_record,
        &[Association {
            to,
            id: to_record,
            type_id,
        }],
    );
    data.stats.records_written += 1;
    Ok(DefaultAssociation {
        from: ObjectId { id: from_id },
        to: ObjectId { id: to_id },
        association_spec: SpecOut {
            association_category: AssociationCategory::HubspotDefined,
            association_type_id: type_id,
        },
    })
}

/// `POST …/batch/associate/default`: the spec declares only a 200, which carries
/// any per-input errors.
fn batch_default(state: &Shared, from: &str, to: &str, body: &[u8]) -> Result<Response, ApiError> {
    let started = Utc::now();
    let (from, to) = kinds(from, to)?;
    let request: DefaultRequest = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let mut data = state.lock();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in request.inputs {
        match associate_default(
            &mut data,
            from,
            to,
            input.from.id.text(),
            input.to.id.text(),
        ) {
            Ok(result) => results.push(result),
            Err(error) => errors.push(*error),
        }
    }
    drop(data);
    let mut response = BatchResponse::respond(StatusCode::OK, results, errors, started);
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// `PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}`.
fn single_default(
    state: &Shared,
    from: &str,
    from_id: &str,
    to: &str,
    to_id: &str,
) -> Result<Response, ApiError> {
    let started = Utc::now();
    let (from, to) = kinds(from, to)?;
    let result = associate_default(
        &mut state.lock(),
        from,
        to,
        from_id.to_owned(),
        to_id.to_owned(),
    );
    match result {
        Ok(result) => Ok(BatchResponse::respond(
            StatusCode::OK,
            vec![result],
            Vec::new(),
            started,
        )),
        Err(error) if error.category == "OBJECT_NOT_FOUND" => {
            Err(ApiError::ObjectNotFound(from_id.to_owned()))
        }
        Err(error) => Err(ApiError::Validation(error.message)),
    }
}

/// `MultiAssociatedObjectWithLabel`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Associated {
    to_object_id: String,
    association_types: Vec<TypeWithLabel>,
}

/// `AssociationSpecWithLabel`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeWithLabel {
    category: AssociationCategory,
    type_id: i32,
}

/// Every record of type `to` linked with record `id` of type `from`, either way,
/// ordered by id, with the type ids seen from `from`.
fn associated(store: &ObjectStore, from: ObjectType, id: u64, to: ObjectType) -> Vec<Associated> {
    let mut found: std::collections::BTreeMap<u64, Vec<i32>> = std::collections::BTreeMap::new();
    if let Some(record) = store.table(from).get(id) {
        for link in record.associations.iter().filter(|l| l.to == to) {
            found.entry(link.id).or_default().push(link.type_id);
        }
    }
    // Links stored on the other side, reported with the type that points this way.
    for record in store.table(to).records() {
        if record
            .associations
            .iter()
            .any(|l| l.to == from && l.id == id)
            && let Some(type_id) = from.default_association(to)
        {
            found.entry(record.id).or_default().push(type_id);
        }
    }
    found
        .into_iter()
        .map(|(to_id, mut types)| {
            types.sort_unstable();
            types.dedup();
            Associated {
                to_object_id: to_id.to_string(),
                association_types: types
                    .into_iter()
                    .map(|type_id| TypeWithLabel {
                        category: AssociationCategory::HubspotDefined,
                        type_id,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// `BatchInputPublicFetchAssociationsBatchRequest`.
#[derive(Debug, Deserialize)]
struct ReadRequest {
    inputs: Vec<ReadInput>,
}

#[derive(Debug, Deserialize)]
struct ReadInput {
    id: String,
}

/// `PublicAssociationMultiWithLabel`.
#[derive(Debug, Serialize)]
struct ReadResult {
    from: ObjectId,
    to: Vec<Associated>,
}

fn batch_read(state: &Shared, from: &str, to: &str, body: &[u8]) -> Result<Response, ApiError> {
    let started = Utc::now();
    let (from, to) = kinds(from, to)?;
    let request: ReadRequest = serde_json::from_slice(body).map_err(|e| invalid_json(&e))?;
    requests::note_records(request.inputs.len());
    if request.inputs.len() > MAX_BATCH_INPUTS {
        return Err(ApiError::TooManyInputs);
    }
    let data = state.lock();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in request.inputs {
        match data
            .store
            .table(from)
            .resolve(&input.id, IdProperty::RecordId)
        {
            Some(id) => results.push(ReadResult {
                from: ObjectId { id: input.id },
                to: associated(&data.store, from, id, to),
            }),
            None => errors.push(StandardError::new(
                "OBJECT_NOT_FOUND",
                format!("No {} with id {} exists", from.error_name(), input.id),
                vec![input.id],
            )),
        }
    }
    drop(data);
    Ok(BatchResponse::respond(
        StatusCode::OK,
        results,
        errors,
        started,
    ))
}

/// `CollectionResponseMultiAssociatedObjectWithLabelForwardPaging`, in one page.
#[derive(Debug, Serialize)]
struct ListResponse {
    results: Vec<Associated>,
}

fn list(state: &Shared, from: &str, id: &str, to: &str) -> Result<Response, ApiError> {
    let (from, to) = kinds(from, to)?;
    let data = state.lock();
    let record = data
        .store
        .table(from)
        .resolve(id, IdProperty::RecordId)
        .ok_or_else(|| ApiError::ObjectNotFound(id.to_owned()))?;
    let results = associated(&data.store, from, record, to);
    drop(data);
    Ok(axum::Json(ListResponse { results }).into_response())
}
