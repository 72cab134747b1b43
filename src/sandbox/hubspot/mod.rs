//! HubSpot's `/crm` API: the routes and the gate every request passes (auth, limits, counters).

mod associations;
mod objects;
mod owners;
mod search;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::time::Instant;

use super::errors::ApiError;
use super::gate::{self, Api, Refusal};
use super::limits::{Admission, Quota};
use super::{Data, SandboxState, Shared};

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
    gate::pass(&HubSpot, &state, request, next).await
}

/// HubSpot at the gate: any (or the configured) bearer token, the burst and daily
/// budgets, and search's own limit, whose answers carry no rate-limit headers.
struct HubSpot;

impl Api for HubSpot {
    /// `None` for a search request.
    type Quota = Option<Quota>;

    fn authenticate(&self, state: &SandboxState, request: &mut Request) -> Result<(), Refusal> {
        if authorized(request.headers(), state.token()) {
            Ok(())
        } else {
            Err(Box::new(ApiError::Unauthenticated.into_response()))
        }
    }

    fn admit(&self, data: &mut Data, request: &mut Request) -> Result<Option<Quota>, Refusal> {
        // Search has its own, lower limit.
        let search = is_search(request);
        let limiter = if search {
            &mut data.search_limiter
        } else {
            &mut data.limiter
        };
        match limiter.admit(Instant::now(), Utc::now()) {
            Admission::Admitted(quota) => Ok((!search).then_some(quota)),
            Admission::Throttled {
                policy,
                retry_after_secs,
            } => Err(Box::new(
                ApiError::RateLimited {
                    policy,
                    retry_after_secs,
                }
                .into_response(),
            )),
        }
    }

    fn stamp(&self, quota: &Option<Quota>, headers: &mut HeaderMap) {
        if let Some(quota) = quota {
            rate_limit_headers(headers, quota);
        }
    }

    fn injected(&self, status: u16) -> Response {
        ApiError::Injected(status).into_response()
    }

    fn mount(&self) -> &'static str {
        "/crm"
    }

    /// Anything but a GET, a read or a search.
    fn is_write(&self, request: &Request) -> bool {
        request.method() != axum::http::Method::GET
            && !request.uri().path().ends_with("/batch/read")
            && !is_search(request)
    }
}

fn is_search(request: &Request) -> bool {
    request.uri().path().ends_with("/search")
}

fn authorized(headers: &HeaderMap, expected: Option<&str>) -> bool {
    gate::bearer_token(headers)
        .is_some_and(|token| expected.is_none_or(|expected| expected == token))
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
    use axum::http::header;

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
