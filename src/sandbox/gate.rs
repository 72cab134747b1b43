//! The gate every emulated API's requests pass: latency, auth, budget, faults and counters.
//!
//! What differs between vendors (how a caller proves who it is, which budget a request
//! is charged to, the headers that report it, how an error body looks) is an [`Api`];
//! the order of the steps and the fault handling are the same for all of them.

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use super::faults::{Connection, Verdict, hang_for};
use super::{Data, SandboxState};

/// The answer to a request the gate turns away (boxed: a response is large).
pub(crate) type Refusal = Box<Response>;

/// One emulated vendor API, as the gate sees it.
pub(crate) trait Api {
    /// What admission leaves for the response headers (a remaining budget).
    type Quota;

    /// Checks the caller; may add what handlers need to know about it to the request's
    /// extensions. An `Err` is the whole answer.
    fn authenticate(&self, state: &SandboxState, request: &mut Request) -> Result<(), Refusal>;

    /// Charges the request to its budget, under the data lock (and may tell handlers
    /// what is left through the request's extensions); an `Err` is the whole answer.
    fn admit(&self, data: &mut Data, request: &mut Request) -> Result<Self::Quota, Refusal>;

    /// Adds the budget headers to an answer of an admitted request.
    fn stamp(&self, quota: &Self::Quota, headers: &mut HeaderMap);

    /// An injected server error (500, 502, 503) in the vendor's error shape.
    fn injected(&self, status: u16) -> Response;

    /// Whether the request may change data (only writes are dropped after applying).
    fn is_write(&self, request: &Request) -> bool;

    /// The prefix the API's router is nested under: a request to an unknown route has
    /// lost it from its path, and is counted with it put back.
    fn mount(&self) -> &'static str;
}

/// Runs one request through `api`'s gate and on to `next`.
pub(crate) async fn pass<A: Api>(
    api: &A,
    state: &SandboxState,
    mut request: Request,
    next: Next,
) -> Response {
    let endpoint = endpoint_key(&request, api.mount());

    let latency = state.lock().faults.faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }

    // An unknown caller is answered before any budget is charged.
    if let Err(response) = api.authenticate(state, &mut request) {
        state
            .lock()
            .stats
            .record(&endpoint, response.status().as_u16());
        return *response;
    }

    let quota = {
        let mut data = state.lock();
        match api.admit(&mut data, &mut request) {
            Ok(quota) => quota,
            Err(response) => {
                data.stats.record(&endpoint, response.status().as_u16());
                return *response;
            }
        }
    };

    let write = api.is_write(&request);
    let connection = request
        .extensions()
        .get::<ConnectInfo<Connection>>()
        .map(|ConnectInfo(connection)| connection.clone());
    let verdict = state.lock().faults.verdict(write);
    let drop_after_apply = match verdict {
        Verdict::Pass { drop_after_apply } => drop_after_apply,
        Verdict::Error(status) => {
            let mut data = state.lock();
            data.stats.faults.error += 1;
            data.stats.record(&endpoint, status);
            drop(data);
            let mut response = api.injected(status);
            api.stamp(&quota, response.headers_mut());
            return response;
        }
        Verdict::Hang => {
            let wait = {
                let mut data = state.lock();
                data.stats.faults.timeout += 1;
                data.stats.record_unanswered(&endpoint, "timeout");
                hang_for(&data.faults.faults)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = state.cancel.cancelled() => {}
            }
            // Never answer: the client sees its own timeout, or a closed connection.
            if let Some(connection) = &connection {
                connection.switch.kill();
            }
            return api.injected(504);
        }
    };

    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    if drop_after_apply
        && response.status().is_success()
        && let Some(connection) = connection
    {
        connection.switch.kill();
        let mut data = state.lock();
        data.stats.faults.dropped_after_apply += 1;
        data.stats.record_unanswered(&endpoint, "dropped");
        return response;
    }
    tracing::debug!(%endpoint, status, "sandbox request");
    state.lock().stats.record(&endpoint, status);
    api.stamp(&quota, response.headers_mut());
    response
}

/// `"METHOD /route"` with the route's template, so ids do not split the counters; an
/// unknown route as it was sent.
pub(crate) fn endpoint_key(request: &Request, mount: &str) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(matched) => format!("{} {}", request.method(), matched.as_str()),
        None => format!("{} {mount}{}", request.method(), request.uri().path()),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if it has a non-empty one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
