//! HubSpot's `/crm` API: the routes and the gate every request passes (auth, limits, counters).

mod objects;
mod owners;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::time::Instant;

use super::Shared;
use super::errors::ApiError;
use super::limits::{Admission, Quota};

/// The `/crm` router, to be nested under `/crm`.
pub(super) fn router(state: Shared) -> Router<Shared> {
    let router = owners::routes(objects::routes(Router::new()));
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

    // HubSpot answers an unknown caller before charging any account's budget.
    if !authorized(request.headers(), state.token()) {
        state.lock().stats.record(&endpoint, 401);
        return ApiError::Unauthenticated.into_response();
    }

    let admission = {
        let mut data = state.lock();
        let admission = data.limiter.admit(Instant::now(), Utc::now());
        if matches!(admission, Admission::Throttled { .. }) {
            data.stats.record(&endpoint, 429);
        }
        admission
    };
    let quota = match admission {
        Admission::Admitted(quota) => quota,
        Admission::Throttled {
            policy,
            retry_after_secs,
        } => {
            return ApiError::RateLimited {
                policy,
                retry_after_secs,
            }
            .into_response();
        }
    };

    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(%endpoint, status, "sandbox request");
    state.lock().stats.record(&endpoint, status);
    rate_limit_headers(response.headers_mut(), &quota);
    response
}

/// `"METHOD /route"` with the route's template, so ids do not split the counters.
fn endpoint_key(request: &Request) -> String {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    format!("{} {path}", request.method())
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
