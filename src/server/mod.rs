//! The daemon's HTTP server (axum): health, readiness, Prometheus metrics and the control API.
//!
//! `/healthz`, `/readyz` and `/metrics` are open; `/api/*` requires
//! `Authorization: Bearer $HANDOFF_API_TOKEN` whenever that variable is set, and the
//! server refuses to listen beyond loopback without it.

pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::project::Secret;
use crate::scheduler::{Scheduler, TriggerError};
use crate::state::{RunRecord, StateError, StateStore};
pub use metrics::Metrics;

/// The environment variable holding the control API's bearer token.
pub const TOKEN_ENV: &str = "HANDOFF_API_TOKEN";

/// Rejections returned by `GET /api/runs/{id}`; the state store has them all.
const RUN_REJECTIONS_SHOWN: usize = 100;

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "--listen {0}: the control API would be reachable beyond this machine; set {TOKEN_ENV} to require a bearer token, or listen on a loopback address"
    )]
    TokenRequired(SocketAddr),
    #[error("--listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A sync as the project declares it.
#[derive(Debug, Clone, Serialize)]
pub struct SyncInfo {
    pub name: String,
    pub model: String,
    pub connector: String,
}

/// What the daemon is running, updated on every reload.
#[derive(Debug, Clone, Default)]
pub struct ProjectInfo {
    pub syncs: Vec<SyncInfo>,
    /// IANA name of the zone cron schedules are read in.
    pub timezone: String,
    /// Errors of the last refused reload: the project on disk is not the one running.
    pub reload_errors: Vec<String>,
}

/// Everything the handlers read.
pub struct AppState {
    pub scheduler: Scheduler,
    pub state: StateStore,
    pub metrics: Arc<Metrics>,
    pub project: Arc<RwLock<ProjectInfo>>,
    pub token: Option<Secret>,
}

/// Binds the listener, refusing a non-loopback address without a token.
pub async fn bind(addr: SocketAddr, token: Option<&Secret>) -> Result<TcpListener, ServerError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(ServerError::TokenRequired(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// The routes.
pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/syncs", get(api_syncs))
        .route("/api/syncs/{name}/trigger", post(api_trigger))
        .route("/api/runs/{id}", get(api_run))
        .with_state(app)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let state = match app.state.recent_runs(None, 1).await {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    };
    let reload_errors = app
        .project
        .read()
        .expect("project info")
        .reload_errors
        .clone();
    let ready = state.is_none() && reload_errors.is_empty();
    let body = json!({
        "ready": ready,
        "state_store": state.unwrap_or_else(|| "ok".into()),
        "project": if reload_errors.is_empty() { json!("ok") } else { json!({
            "error": "the project on disk is invalid; the daemon keeps running the last valid one",
            "errors": reload_errors,
        }) },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(app): State<Arc<AppState>>) -> Response {
    let text = app.metrics.render(&app.scheduler.syncs());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The 401 to answer, unless no token is configured or the request carries it.
fn unauthorized(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let token = app.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    (!constant_time_eq(given.as_bytes(), token.expose().as_bytes())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong bearer token (see {TOKEN_ENV})"),
        )
    })
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Serialize)]
struct SyncView {
    name: String,
    model: Option<String>,
    connector: Option<String>,
    schedule: Option<String>,
    timezone: String,
    next_run: Option<chrono::DateTime<chrono::Utc>>,
    running: bool,
    running_run_id: Option<i64>,
    last_run: Option<RunRecord>,
}

async fn api_syncs(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    let info = app.project.read().expect("project info").clone();
    let mut out = Vec::new();
    for s in app.scheduler.syncs() {
        let declared = info.syncs.iter().find(|d| d.name == s.name);
        let last_run = match app.state.recent_runs(Some(&s.name), 1).await {
            Ok(mut runs) => runs.pop(),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        out.push(SyncView {
            model: declared.map(|d| d.model.clone()),
            connector: declared.map(|d| d.connector.clone()),
            schedule: s.schedule,
            timezone: info.timezone.clone(),
            next_run: s.next_run,
            running: s.running,
            running_run_id: s.run_id,
            last_run,
            name: s.name,
        });
    }
    Json(out).into_response()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    full: bool,
}

async fn api_trigger(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    let body: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("body: {e} (expected {{\"full\": true|false}} or nothing)"),
                );
            }
        }
    };
    match app.scheduler.trigger(&name, body.full).await {
        Ok(run_id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "sync": name, "run_id": run_id, "full": body.full })),
        )
            .into_response(),
        Err(e @ TriggerError::UnknownSync(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ TriggerError::Busy { run_id, .. }) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": e.to_string(), "run_id": run_id })),
        )
            .into_response(),
        Err(e @ TriggerError::ShuttingDown) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ TriggerError::NotStarted(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

async fn api_run(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&app, &headers) {
        return r;
    }
    let Ok(id) = id.parse::<i64>() else {
        return error(StatusCode::NOT_FOUND, format!("no run {id:?}"));
    };
    let record = match app.state.run(id).await {
        Ok(r) => r,
        Err(StateError::RunNotFound(_)) => {
            return error(StatusCode::NOT_FOUND, format!("run {id} not found"));
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let rejections = match app.state.rejections(id).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut body = serde_json::to_value(&record).unwrap_or_default();
    body["rejections_total"] = json!(rejections.len());
    body["rejections"] = json!(
        rejections
            .into_iter()
            .take(RUN_REJECTIONS_SHOWN)
            .collect::<Vec<_>>()
    );
    Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_public_address_needs_a_token() {
        let public: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(matches!(
            bind(public, None).await,
            Err(ServerError::TokenRequired(_))
        ));
        let token = Secret::new("s3cret");
        assert!(bind("127.0.0.1:0".parse().unwrap(), None).await.is_ok());
        assert!(bind(public, Some(&token)).await.is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
