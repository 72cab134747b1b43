//! The `/_sandbox/` routes: what tests read back and how they steer the sandbox (no auth).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::errors::{ApiError, invalid_json};
use super::limits::LimitsPatch;
use super::store::ObjectType;
use super::{Shared, StoredObject};

pub(super) fn router() -> Router<Shared> {
    let mut router = Router::new()
        .route(
            "/_sandbox/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/stats/reset", post(reset_stats))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/config", get(config).post(update_config));
    for kind in ObjectType::ALL {
        router = router.route(
            &format!("/_sandbox/{}", kind.path()),
            get(
                move |State(state): State<Shared>, Query(query): Query<ObjectsQuery>| async move {
                    objects(&state, kind, query.archived)
                },
            ),
        );
    }
    router
}

async fn stats(State(state): State<Shared>) -> Response {
    let stats = state.lock().stats.clone();
    axum::Json(stats).into_response()
}

/// Zeroes the counters and forgets the requests in the rate windows; data and limits stay.
async fn reset_stats(State(state): State<Shared>) -> Response {
    let mut data = state.lock();
    data.stats = Default::default();
    data.limiter.clear();
    drop(data);
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn reset(State(state): State<Shared>) -> Response {
    state.reset();
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn config(State(state): State<Shared>) -> Response {
    let limits = state.lock().limiter.limits();
    axum::Json(limits).into_response()
}

/// Applies a partial `{"burst_per_10s", "daily_limit", "window_ms"}` and returns the result.
async fn update_config(State(state): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let patch: LimitsPatch = serde_json::from_slice(&body).map_err(|e| invalid_json(&e))?;
    let mut data = state.lock();
    let mut limits = data.limiter.limits();
    limits.apply(&patch).map_err(ApiError::Validation)?;
    data.limiter.set_limits(limits);
    drop(data);
    Ok(axum::Json(limits).into_response())
}

#[derive(Debug, Serialize)]
struct ObjectList {
    total: usize,
    results: Vec<StoredObject>,
}

/// `?archived=true` lists the archived records instead of the live ones.
#[derive(Debug, Default, Deserialize)]
struct ObjectsQuery {
    #[serde(default)]
    archived: bool,
}

fn objects(state: &Shared, kind: ObjectType, archived: bool) -> Response {
    let results = state.lock().stored(kind, archived);
    axum::Json(ObjectList {
        total: results.len(),
        results,
    })
    .into_response()
}
