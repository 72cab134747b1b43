//! HubSpot's `/crm` API: the routes and the gate every request passes (auth, limits, counters).

mod associations;
mod objects;
mod owners;
mod search;

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::time::Instant;

use super::Shared;
use super::errors::ApiError;
use super::faults::{Connection, Verdict, hang_for};
use super::limits::{Admission, Quota};
use super::requests::{self, Fault, Unanswered};

pub(crate) use objects::valid_email;

/// The `/crm` router, to be nested under `/crm`.
pub(super) fn router(state: Shared) -> Router<Shared> {
    let router = associations::routes(owners::routes(search::routes(objects::routes(
        Router::new(),
    ))));
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Added after the fallbacks so unknown /crm routes are authenticated, limited and counted too.
        .layer(middleware::from_fn_with_state(state, gate))
}

async fn no_route(request: Request) -> Response {
    ApiError::NoRoute(format!("{} {}", request.method(), request.uri().path())).into_response()
}

async fn method_not_allowed(request: Request) -> Response {
    ApiError::MethodNotAllowed(request.method().to_string()).into_response()
}

/// Authenticates, applies the rate limits, counts the request and stamps HubSpot's rate-limit headers.
async fn gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let endpoint = endpoint_key(&request);
    requests::note_endpoint(&endpoint);

    let search = request.uri().path().ends_with("/search");
    let check = Check {
        endpoint: &endpoint,
        authorized: authorized(request.headers(), state.token()),
        search,
        write: is_write(&request),
    };
    let mut decision = admit(&state, &check, false);
    if let Decision::Sleep(latency) = decision {
        requests::note_fault(Fault::Latency);
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
        decision = admit(&state, &check, true);
    }
    let (quota, drop_after_apply) = match decision {
        Decision::Pass {
            quota,
            drop_after_apply,
        } => (quota, drop_after_apply),
        Decision::Answer(response) => return response,
        Decision::Hang(wait) => {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = state.cancel.cancelled() => {}
            }
            // Never answer: the client sees its own timeout, or a closed connection.
            if let Some(ConnectInfo(connection)) =
                request.extensions().get::<ConnectInfo<Connection>>()
            {
                connection.switch.kill();
            }
            return ApiError::Injected(504).into_response();
        }
        // Only the first call asks to sleep.
        Decision::Sleep(_) => return ApiError::Injected(500).into_response(),
    };
    let connection = drop_after_apply
        .then(|| {
            request
                .extensions()
                .get::<ConnectInfo<Connection>>()
                .map(|ConnectInfo(connection)| connection.clone())
        })
        .flatten();

    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    if drop_after_apply
        && response.status().is_success()
        && let Some(connection) = connection
    {
        connection.switch.kill();
        requests::note_fault(Fault::DropAfterApply);
        requests::note_unanswered(Unanswered::Dropped);
        let mut data = state.lock();
        data.stats.faults.dropped_after_apply += 1;
        data.stats.record_unanswered(&endpoint, "dropped");
        return response;
    }
    tracing::debug!(%endpoint, status, "sandbox request");
    state.lock().stats.record(&endpoint, status);
    if !search {
        rate_limit_headers(response.headers_mut(), &quota);
    }
    response
}

/// What the gate knows about a request before deciding on it.
struct Check<'a> {
    endpoint: &'a str,
    authorized: bool,
    search: bool,
    write: bool,
}

/// The gate's verdict on a request.
enum Decision {
    /// Wait this many milliseconds of injected latency, then decide again.
    Sleep(u64),
    /// Answered here (401, 429, an injected error).
    Answer(Response),
    /// Leave it hanging this long.
    Hang(std::time::Duration),
    Pass {
        quota: Quota,
        drop_after_apply: bool,
    },
}

/// Authentication, rate limits, counters and faults under one lock: every request
/// passes here, and the handler holds the same lock for its writes, so taking it once
/// instead of once per step keeps the two worker threads from queueing on it.
fn admit(state: &Shared, check: &Check<'_>, slept: bool) -> Decision {
    let mut data = state.lock();
    let latency = data.faults.faults.latency_ms;
    if latency > 0 && !slept {
        return Decision::Sleep(latency);
    }
    // HubSpot answers an unknown caller before charging any account's budget.
    if !check.authorized {
        data.stats.record(check.endpoint, 401);
        return Decision::Answer(ApiError::Unauthenticated.into_response());
    }
    // Search has its own, lower limit, and its answers carry no rate-limit headers.
    let limiter = if check.search {
        &mut data.search_limiter
    } else {
        &mut data.limiter
    };
    let quota = match limiter.admit(Instant::now(), Utc::now()) {
        Admission::Admitted(quota) => quota,
        Admission::Throttled {
            policy,
            retry_after_secs,
        } => {
            data.stats.record(check.endpoint, 429);
            return Decision::Answer(
                ApiError::RateLimited {
                    policy,
                    retry_after_secs,
                }
                .into_response(),
            );
        }
    };
    match data.faults.verdict(check.write) {
        Verdict::Pass { drop_after_apply } => Decision::Pass {
            quota,
            drop_after_apply,
        },
        Verdict::Error(status) => {
            requests::note_fault(Fault::Error);
            data.stats.faults.error += 1;
            data.stats.record(check.endpoint, status);
            drop(data);
            let mut response = ApiError::Injected(status).into_response();
            if !check.search {
                rate_limit_headers(response.headers_mut(), &quota);
            }
            Decision::Answer(response)
        }
        Verdict::Hang => {
            requests::note_fault(Fault::Timeout);
            requests::note_unanswered(Unanswered::Timeout);
            data.stats.faults.timeout += 1;
            data.stats.record_unanswered(check.endpoint, "timeout");
            Decision::Hang(hang_for(&data.faults.faults))
        }
    }
}

/// Whether a request may change data: anything but a GET, a read or a search.
fn is_write(request: &Request) -> bool {
    let path = request.uri().path();
    request.method() != axum::http::Method::GET
        && !path.ends_with("/batch/read")
        && !path.ends_with("/search")
}

/// `"METHOD /route"` with the route's template, so ids do not split the counters.
fn endpoint_key(request: &Request) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(matched) => format!("{} {}", request.method(), matched.as_str()),
        // An unknown route: the path as sent (inside the nest it has lost its `/crm`).
        None => format!("{} /crm{}", request.method(), request.uri().path()),
    }
}

fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    let token = token.trim();
    scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && expected.is_none_or(|expected| expected == token)
}

fn rate_limit_headers(headers: &mut HeaderMap, quota: &Quota) {
    let mut set = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    // An unlimited budget has no honest number to report, so its headers are left out.
    if let Some((max, remaining)) = quota.burst {
        set("x-hubspot-ratelimit-max", u64::from(max));
        set("x-hubspot-ratelimit-remaining", u64::from(remaining));
        set(
            "x-hubspot-ratelimit-interval-milliseconds",
            quota.interval_ms,
        );
    }
    if let Some((max, remaining)) = quota.daily {
        set("x-hubspot-ratelimit-daily", max);
        set("x-hubspot-ratelimit-daily-remaining", remaining);
    }
}

/// HubSpot's forward paging (`ForwardPaging`): where the next page starts.
#[derive(Debug, serde::Serialize)]
struct Paging {
    next: NextPage,
}

#[derive(Debug, serde::Serialize)]
struct NextPage {
    after: String,
    link: String,
}

impl Paging {
    fn next(link: String, after: String) -> Paging {
        Paging {
            next: NextPage { after, link },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, None));
        for (value, expected, ok) in [
            ("Bearer abc", None, true),
            ("bearer abc", Some("abc"), true),
            ("Bearer abc", Some("xyz"), false),
            ("Bearer ", None, false),
            ("Basic abc", None, false),
            ("abc", None, false),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(authorized(&headers, expected), ok, "{value:?}");
        }
    }
}
