//! The Salesforce part of `/_sandbox/` (no auth): stored records, and the clock.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::super::Shared;
use super::bulk;
use super::collections::stored;
use super::errors::SfError;
use super::schema::SObject;

pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/_sandbox/salesforce/clock", post(advance_clock))
        .route("/_sandbox/salesforce/{sobject}", get(records))
}

#[derive(Debug, Default, Deserialize)]
struct RecordsQuery {
    /// List the records in the recycle bin instead of the live ones.
    #[serde(default)]
    deleted: bool,
}

/// `GET /_sandbox/salesforce/{SObject}`: `{"total", "records"}`, every field of each.
async fn records(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<RecordsQuery>,
) -> Response {
    let Some(kind) = SObject::from_name(&name) else {
        return SfError::not_found().into_response();
    };
    let mut data = state.lock();
    bulk::process_due(&mut data);
    let records: Vec<_> = data
        .salesforce
        .org
        .all_records(kind)
        .filter(|r| r.deleted == query.deleted)
        .map(stored)
        .collect();
    axum::Json(json!({"total": records.len(), "records": records})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance_secs: u64,
}

/// `POST /_sandbox/salesforce/clock` `{"advance_secs": N}`: moves the Salesforce clock
/// (token expiry, the rolling API window, Bulk API processing, record dates) forward.
async fn advance_clock(State(state): State<Shared>, body: Bytes) -> Response {
    let advance: Advance = match serde_json::from_slice(&body) {
        Ok(advance) => advance,
        Err(error) => return SfError::json_parser(error).into_response(),
    };
    let mut data = state.lock();
    data.salesforce
        .advance_clock(Duration::from_secs(advance.advance_secs));
    bulk::process_due(&mut data);
    let offset = data.salesforce.clock_offset().as_secs();
    axum::Json(json!({"offset_secs": offset})).into_response()
}
