//! The `/_sandbox/` routes: what tests read back and how they steer the sandbox (no auth).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::errors::{ApiError, invalid_json};
use super::faults::{Faults, FaultsPatch};
use super::limits::{Limits, LimitsPatch};
use super::store::ObjectType;
use super::{Data, Shared, StoredAssociation, StoredObject};

pub(super) fn router() -> Router<Shared> {
    let mut router = Router::new()
        .route(
            "/_sandbox/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/stats/reset", post(reset_stats))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/config", get(config).post(update_config))
        .route("/_sandbox/duplicates", get(duplicates))
        .route("/_sandbox/requests", get(super::requests::list))
        .route("/_sandbox/seed", post(super::seeding::seed));
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

/// Zeroes the counters, forgets the requests in the rate windows and empties the
/// request log; data and limits stay.
async fn reset_stats(State(state): State<Shared>) -> Response {
    let mut data = state.lock();
    data.stats = Default::default();
    data.limiter.clear();
    data.search_limiter.clear();
    data.salesforce.limiter.clear();
    data.slack.clear_limiters();
    drop(data);
    state.requests().clear();
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn reset(State(state): State<Shared>) -> Response {
    state.reset();
    axum::Json(json!({"status": "ok"})).into_response()
}

/// What `GET /_sandbox/config` shows: the limits and the faults in force.
#[derive(Debug, Serialize)]
struct ConfigView {
    #[serde(flatten)]
    limits: Limits,
    search_per_second: u32,
    slack_per_second: u32,
    slack_window_ms: u64,
    faults: Faults,
}

/// A partial update: any of the limits, and `faults` as a partial [`Faults`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigPatch {
    burst_per_10s: Option<u32>,
    daily_limit: Option<u64>,
    window_ms: Option<u64>,
    search_per_second: Option<u32>,
    /// Slack messages per window per channel, and the window (1,000 ms; tests shorten it).
    slack_per_second: Option<u32>,
    slack_window_ms: Option<u64>,
    faults: Option<FaultsPatch>,
}

fn config_view(state: &Shared) -> ConfigView {
    let data = state.lock();
    ConfigView {
        limits: data.limiter.limits(),
        search_per_second: data.search_limiter.limits().burst_per_10s,
        slack_per_second: data.slack.limits().burst_per_10s,
        slack_window_ms: data.slack.limits().window_ms,
        faults: data.faults.faults.clone(),
    }
}

async fn config(State(state): State<Shared>) -> Response {
    axum::Json(config_view(&state)).into_response()
}

/// Applies a partial `{"burst_per_10s", "daily_limit", "window_ms", "search_per_second",
/// "slack_per_second", "slack_window_ms", "faults": {…}}` and returns the result; setting
/// faults re-seeds their RNG.
async fn update_config(State(state): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let patch: ConfigPatch = serde_json::from_slice(&body).map_err(|e| invalid_json(&e))?;
    let mut data = state.lock();
    let mut limits = data.limiter.limits();
    limits
        .apply(&LimitsPatch {
            burst_per_10s: patch.burst_per_10s,
            daily_limit: patch.daily_limit,
            window_ms: patch.window_ms,
        })
        .map_err(ApiError::Validation)?;
    let mut faults = data.faults.faults.clone();
    if let Some(faults_patch) = &patch.faults {
        faults.apply(faults_patch).map_err(ApiError::Validation)?;
    }
    let mut slack = data.slack.limits();
    slack
        .apply(&LimitsPatch {
            burst_per_10s: patch.slack_per_second,
            daily_limit: None,
            window_ms: patch.slack_window_ms,
        })
        .map_err(|e| ApiError::Validation(format!("slack_{e}")))?;
    data.slack.set_limits(slack);
    data.limiter.set_limits(limits);
    if let Some(per_second) = patch.search_per_second {
        let search = data.search_limiter.limits();
        data.search_limiter.set_limits(Limits {
            burst_per_10s: per_second,
            ..search
        });
    }
    if patch.faults.is_some() {
        data.faults.set(faults);
    }
    drop(data);
    Ok(axum::Json(config_view(&state)).into_response())
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

/// Live tasks that look like one task written twice: the same subject, owner and
/// associations. A sync that retried a create whose answer it never saw makes these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateGroup {
    pub object_type: String,
    pub subject: Option<String>,
    pub owner: Option<String>,
    pub associations: Vec<StoredAssociation>,
    /// The record ids, ascending; always two or more.
    pub ids: Vec<String>,
}

pub(crate) fn duplicate_tasks(data: &Data) -> Vec<DuplicateGroup> {
    let mut groups: std::collections::BTreeMap<_, Vec<String>> = std::collections::BTreeMap::new();
    for task in data.stored(ObjectType::Tasks, false) {
        let mut associations = task.associations;
        associations.sort();
        let key = (
            task.properties.get("hs_task_subject").cloned(),
            task.properties.get("hubspot_owner_id").cloned(),
            associations,
        );
        groups.entry(key).or_default().push(task.id);
    }
    groups
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|((subject, owner, associations), ids)| DuplicateGroup {
            object_type: ObjectType::Tasks.path().to_owned(),
            subject,
            owner,
            associations,
            ids,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct DuplicateReport {
    /// How many groups.
    total: usize,
    /// How many records beyond the first of each group: the extra writes.
    extra_records: usize,
    groups: Vec<DuplicateGroup>,
}

async fn duplicates(State(state): State<Shared>) -> Response {
    let groups = duplicate_tasks(&state.lock());
    axum::Json(DuplicateReport {
        total: groups.len(),
        extra_records: groups.iter().map(|g| g.ids.len() - 1).sum(),
        groups,
    })
    .into_response()
}
