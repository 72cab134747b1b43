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
use super::requests::{self, Fault, Unanswered};
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
    requests::note_endpoint(&endpoint);

    // Checked before the data lock (an `Api` may take it to look up a session); a
    // refusal is answered under the lock below, after any injected latency, and
    // before any budget is charged.
    let mut refusal = api.authenticate(state, &mut request).err();
    let write = api.is_write(&request);
    // Decided once, or (with injected latency) again after sleeping it off.
    let mut slept = false;
    let decision = loop {
        match decide(
            api,
            state.lock_async().await,
            &endpoint,
            &mut refusal,
            &mut request,
            write,
            slept,
        ) {
            Decision::Sleep(latency) if !slept => {
                requests::note_fault(Fault::Latency);
                tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
                slept = true;
            }
            decision => break decision,
        }
    };
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
            return api.injected(504);
        }
        // Only the first call asks to sleep.
        Decision::Sleep(_) => return api.injected(500),
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
    state.lock_async().await.stats.record(&endpoint, status);
    api.stamp(&quota, response.headers_mut());
    response
}

/// The gate's verdict on a request.
enum Decision<Q> {
    /// Wait this many milliseconds of injected latency, then decide again.
    Sleep(u64),
    /// Answered here (a refused caller, an exhausted budget, an injected error).
    Answer(Response),
    /// Leave it hanging this long.
    Hang(std::time::Duration),
    Pass {
        quota: Q,
        drop_after_apply: bool,
    },
}

/// Latency, the caller's refusal, the budget, counters and faults under one lock:
/// every request passes here, and handlers hold the same lock for their writes, so
/// taking it once instead of once per step keeps the worker threads from queueing on it.
fn decide<A: Api>(
    api: &A,
    mut data: parking_lot::MutexGuard<'_, Data>,
    endpoint: &str,
    refusal: &mut Option<Refusal>,
    request: &mut Request,
    write: bool,
    slept: bool,
) -> Decision<A::Quota> {
    let latency = data.faults.faults.latency_ms;
    if latency > 0 && !slept {
        return Decision::Sleep(latency);
    }
    // An unknown caller is answered before any budget is charged.
    if let Some(response) = refusal.take() {
        data.stats.record(endpoint, response.status().as_u16());
        return Decision::Answer(*response);
    }
    let quota = match api.admit(&mut data, request) {
        Ok(quota) => quota,
        Err(response) => {
            data.stats.record(endpoint, response.status().as_u16());
            return Decision::Answer(*response);
        }
    };
    match data.faults.verdict(write) {
        Verdict::Pass { drop_after_apply } => Decision::Pass {
            quota,
            drop_after_apply,
        },
        Verdict::Error(status) => {
            requests::note_fault(Fault::Error);
            data.stats.faults.error += 1;
            data.stats.record(endpoint, status);
            drop(data);
            let mut response = api.injected(status);
            api.stamp(&quota, response.headers_mut());
            Decision::Answer(response)
        }
        Verdict::Hang => {
            requests::note_fault(Fault::Timeout);
            requests::note_unanswered(Unanswered::Timeout);
            data.stats.faults.timeout += 1;
            data.stats.record_unanswered(endpoint, "timeout");
            Decision::Hang(hang_for(&data.faults.faults))
        }
    }
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
