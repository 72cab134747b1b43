//! HTTP plumbing shared by connectors: rate limit → request with timeout → retry decisions, in one place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use rand::Rng;

use super::budget::Budget;
use crate::project::Secret;

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build HTTP client: {0}")]
pub struct HttpError(String);

/// A response that is final: success, or an error not worth retrying.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A request that failed for good.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Retries exhausted on 429/5xx/timeouts.
    GaveUp { message: String },
    /// A request that is not safe to repeat got no clear answer: it may have been applied.
    Ambiguous { message: String },
    /// The account's daily budget is spent; nothing more goes out until `until`.
    DailyLimit {
        until: chrono::DateTime<chrono::Utc>,
    },
}

/// The result of [`Client::send`]: the response or failure, plus what it cost.
#[derive(Debug)]
pub struct Sent {
    pub result: Result<Response, Failure>,
    pub api_calls: u64,
    pub throttled: u64,
}

/// How a connector classifies a 429 body: some limits clear in seconds, some at midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Wait (Retry-After, else backoff) and try again.
    Retry,
    /// Do not retry in this run.
    Stop,
}

/// Retry policy knobs.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// Full-jitter exponential backoff: a random wait in [0, min(cap, base·2^attempt)].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(16));
        let ceiling = exp.min(self.cap);
        let ms = rand::rng().random_range(0..=ceiling.as_millis().max(1) as u64);
        Duration::from_millis(ms).max(self.base / 4)
    }
}

/// Headers in which CRMs tell how many requests are left in the current window.
const RATE_REMAINING_HEADERS: [&str; 2] =
    ["x-hubspot-ratelimit-remaining", "x-ratelimit-remaining"];

/// What one client's requests met, for the daemon's metrics: answers by HTTP status
/// (`error` when no answer came) and the rate budget the CRM last reported.
#[derive(Debug)]
pub struct RequestStats {
    by_status: Mutex<BTreeMap<String, u64>>,
    /// -1 until a response carried the header.
    rate_remaining: AtomicI64,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            by_status: Mutex::new(BTreeMap::new()),
            rate_remaining: AtomicI64::new(-1),
        }
    }
}

impl RequestStats {
    /// Requests by status (`"200"`, `"429"`, `"error"`), retries included.
    pub fn by_status(&self) -> BTreeMap<String, u64> {
        self.by_status.lock().expect("stats lock").clone()
    }

    /// Requests left in the CRM's rate window at its last answer, when it says.
    pub fn rate_remaining(&self) -> Option<u64> {
        u64::try_from(self.rate_remaining.load(Ordering::Relaxed)).ok()
    }

    fn count(&self, status: &str) {
        *self
            .by_status
            .lock()
            .expect("stats lock")
            .entry(status.to_string())
            .or_default() += 1;
    }

    fn observe(&self, headers: &reqwest::header::HeaderMap) {
        let remaining = RATE_REMAINING_HEADERS.iter().find_map(|h| {
            headers
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
        });
        if let Some(n) = remaining {
            self.rate_remaining.store(n.max(0), Ordering::Relaxed);
        }
    }
}

/// A rate-limited, retrying JSON client for one CRM account.
pub struct Client {
    http: reqwest::Client,
    budget: Arc<Budget>,
    retry: RetryPolicy,
    token: Secret,
    stats: Arc<RequestStats>,
}

static TLS_PROVIDER: Once = Once::new();

/// reqwest is built without a default TLS backend; every client in the process uses ring.
pub fn install_crypto_provider() {
    TLS_PROVIDER.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One request to make.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    pub url: &'a str,
    pub body: Option<Body<'a>>,
    /// Counts against the search budget as well.
    pub search: bool,
    /// Safe to send twice. A request that is not (creating a task) is retried only when it
    /// surely did not apply (429, no connection); otherwise it fails as [`Failure::Ambiguous`].
    pub idempotent: bool,
}

/// A request's JSON body: a value, or one already serialised (the batch writes build
/// theirs straight from the records, without an intermediate [`serde_json::Value`]).
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Json(&'a serde_json::Value),
    Serialized(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl<'a> Request<'a> {
    /// An idempotent POST of JSON (batch upsert, update, read, archive).
    pub fn post(url: &'a str, body: &'a serde_json::Value) -> Self {
        Request {
            method: Method::Post,
            url,
            body: Some(Body::Json(body)),
            search: false,
            idempotent: true,
        }
    }

    /// An idempotent POST of JSON already serialised.
    pub fn post_serialized(url: &'a str, body: &'a [u8]) -> Self {
        Request {
            method: Method::Post,
            url,
            body: Some(Body::Serialized(body)),
            search: false,
            idempotent: true,
        }
    }

    pub fn get(url: &'a str) -> Self {
        Request {
            method: Method::Get,
            url,
            body: None,
            search: false,
            idempotent: true,
        }
    }
}

impl Client {
    /// A client drawing on `budget`, which may be shared with other clients of the account.
    pub fn new(
        token: Secret,
        budget: Arc<Budget>,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, HttpError> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("handoff/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError(e.to_string()))?;
        Ok(Client {
            http,
            budget,
            retry,
            token,
            stats: Arc::default(),
        })
    }

    /// The client's request counters; shared, so they can be read while it works.
    pub fn stats(&self) -> Arc<RequestStats> {
        Arc::clone(&self.stats)
    }

    /// The account's budget.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// POSTs JSON idempotently; see [`Client::send`].
    pub async fn post_json(
        &self,
        url: &str,
        body: &serde_json::Value,
        classify_429: impl Fn(&str) -> Throttle,
    ) -> Sent {
        self.send(Request::post(url, body), classify_429).await
    }

    /// Sends, waiting for the budget before every attempt and retrying 429, 5xx,
    /// timeouts and connection failures as far as the request allows.
    /// `classify_429` reads a 429 body: some limits clear in seconds, some at midnight.
    pub async fn send(&self, req: Request<'_>, classify_429: impl Fn(&str) -> Throttle) -> Sent {
        let mut api_calls = 0;
        let mut throttled = 0;
        let mut attempt = 0;
        let done = |result, api_calls, throttled| Sent {
            result,
            api_calls,
            throttled,
        };
        loop {
            if let Err(p) = self.budget.acquire(req.search).await {
                return done(
                    Err(Failure::DailyLimit { until: p.until }),
                    api_calls,
                    throttled,
                );
            }
            api_calls += 1;
            let mut builder = match req.method {
                Method::Get => self.http.get(req.url),
                Method::Post => self.http.post(req.url),
            }
            .bearer_auth(self.token.expose());
            match req.body {
                Some(Body::Json(body)) => builder = builder.json(body),
                Some(Body::Serialized(body)) => {
                    builder = builder
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.to_vec());
                }
                None => {}
            }
            // `applied_maybe`: the CRM may have acted on the request.
            let (wait, why, applied_maybe) = match builder.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    self.stats.count(&status.to_string());
                    self.stats.observe(r.headers());
                    self.budget.observe(r.headers());
                    let retry_after = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)));
                    match r.text().await {
                        Err(e) => (None, format!("reading the response failed: {e}"), true),
                        Ok(text) if status == 429 => {
                            throttled += 1;
                            if classify_429(&text) == Throttle::Stop {
                                let p = self.budget.pause_for_the_day();
                                return done(
                                    Err(Failure::DailyLimit { until: p.until }),
                                    api_calls,
                                    throttled,
                                );
                            }
                            // The window is full for every request of the account: hold them all.
                            let wait =
                                retry_after.unwrap_or_else(|| self.retry.backoff(attempt + 1));
                            self.budget.hold(wait);
                            (Some(wait), format!("HTTP 429: {}", text.trim()), false)
                        }
                        Ok(text) if status >= 500 => {
                            (retry_after, format!("HTTP {status}: {}", text.trim()), true)
                        }
                        Ok(text) => {
                            return done(Ok(Response { status, body: text }), api_calls, throttled);
                        }
                    }
                }
                Err(e) => {
                    self.stats.count("error");
                    // Without a connection nothing was sent; anything else may have arrived.
                    (None, describe(&e), !e.is_connect())
                }
            };
            if applied_maybe && !req.idempotent {
                return done(
                    Err(Failure::Ambiguous { message: why }),
                    api_calls,
                    throttled,
                );
            }
            if attempt >= self.retry.max_retries {
                return done(
                    Err(Failure::GaveUp {
                        message: format!("gave up after {} attempts: {why}", attempt + 1),
                    }),
                    api_calls,
                    throttled,
                );
            }
            attempt += 1;
            let delay = wait.unwrap_or_else(|| self.retry.backoff(attempt));
            tracing::debug!(
                url = req.url,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "retrying: {why}"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// A transport error in words, without the URL's query (which could carry a secret).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let url = e
        .url()
        .map(|u| {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            )
        })
        .unwrap_or_default();
    format!("{kind}: {url}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for attempt in 0..20 {
            let d = p.backoff(attempt);
            assert!(d <= Duration::from_secs(2), "attempt {attempt}: {d:?}");
            assert!(d >= Duration::from_millis(25));
        }
    }

    /// A real HTTP server whose answer depends on how many requests it has seen.
    async fn server<F>(answer: F) -> (String, Arc<AtomicU32>)
    where
        F: Fn(u32) -> (StatusCode, HeaderMap, &'static str, Duration) + Send + Sync + 'static,
    {
        let hits = Arc::new(AtomicU32::new(0));
        let h = Arc::clone(&hits);
        let answer = Arc::new(answer);
        let app = Router::new().route(
            "/batch",
            post(move || {
                let n = h.fetch_add(1, Ordering::SeqCst);
                let answer = Arc::clone(&answer);
                async move {
                    let (status, headers, body, delay) = answer(n);
                    tokio::time::sleep(delay).await;
                    (status, headers, body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/batch"), hits)
    }

    fn budget(requests: u32, per_secs: u32) -> Arc<Budget> {
        Arc::new(Budget::new(
            crate::project::RateBudget {
                requests,
                per_secs,
                daily: 0,
                search_per_second: 100,
            },
            chrono_tz::Tz::UTC,
        ))
    }

    fn client(max_retries: u32, timeout: Duration) -> Client {
        Client::new(
            Secret::new("t"),
            budget(1000, 1),
            timeout,
            RetryPolicy {
                max_retries,
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
            },
        )
        .unwrap()
    }

    fn never_stop(_: &str) -> Throttle {
        Throttle::Retry
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_success() {
        let (url, hits) = server(|n| {
            let status = if n < 2 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, HeaderMap::new(), "{}", Duration::ZERO)
        })
        .await;
        let sent = client(5, Duration::from_secs(5))
            .post_json(&url, &serde_json::json!({}), never_stop)
            .await;
        assert_eq!(sent.result.unwrap().status, 200);
        assert_eq!((sent.api_calls, sent.throttled), (3, 0));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_the_last_error_is_told() {
        let (url, _) = server(|_| {
            (
                StatusCode::BAD_GATEWAY,
                HeaderMap::new(),
                "upstream down",
                Duration::ZERO,
            )
        })
        .await;
        let sent = client(2, Duration::from_secs(5))
            .post_json(&url, &serde_json::json!({}), never_stop)
            .await;
        let Err(Failure::GaveUp { message }) = sent.result else {
            panic!("expected a failure")
        };
        assert!(
            message.contains("gave up after 3 attempts: HTTP 502: upstream down"),
            "{message}"
        );
        assert_eq!(sent.api_calls, 3);
    }

    #[tokio::test]
    async fn a_429_waits_for_retry_after() {
        let (url, _) = server(|n| {
            let mut h = HeaderMap::new();
            if n == 0 {
                h.insert("retry-after", "1".parse().unwrap());
                (StatusCode::TOO_MANY_REQUESTS, h, "{}", Duration::ZERO)
            } else {
                (StatusCode::OK, h, "{}", Duration::ZERO)
            }
        })
        .await;
        let started = Instant::now();
        let sent = client(3, Duration::from_secs(5))
            .post_json(&url, &serde_json::json!({}), never_stop)
            .await;
        assert_eq!(sent.result.unwrap().status, 200);
        assert_eq!((sent.api_calls, sent.throttled), (2, 1));
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After was honoured"
        );
    }

    #[tokio::test]
    async fn a_timed_out_request_is_retried() {
        let (url, _) = server(|n| {
            let delay = if n == 0 {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            };
            (StatusCode::OK, HeaderMap::new(), "{}", delay)
        })
        .await;
        let sent = client(3, Duration::from_secs(1))
            .post_json(&url, &serde_json::json!({}), never_stop)
            .await;
        assert_eq!(sent.result.unwrap().status, 200);
        assert_eq!(sent.api_calls, 2);
    }

    #[tokio::test]
    async fn a_stop_throttle_is_not_retried() {
        let (url, hits) = server(|_| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                HeaderMap::new(),
                r#"{"policyName":"DAILY","message":"You have reached your daily limit."}"#,
                Duration::ZERO,
            )
        })
        .await;
        let sent = client(5, Duration::from_secs(5))
            .post_json(&url, &serde_json::json!({}), |_| Throttle::Stop)
            .await;
        let Err(Failure::DailyLimit { until }) = sent.result else {
            panic!("expected a daily pause")
        };
        assert!(until > chrono::Utc::now());
        assert_eq!((sent.api_calls, sent.throttled), (1, 1));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_that_may_have_applied_is_not_repeated_unless_idempotent() {
        let (url, hits) = server(|_| {
            (
                StatusCode::BAD_GATEWAY,
                HeaderMap::new(),
                "upstream",
                Duration::ZERO,
            )
        })
        .await;
        let body = serde_json::json!({});
        let once = Request {
            idempotent: false,
            ..Request::post(&url, &body)
        };
        let sent = client(5, Duration::from_secs(5))
            .send(once, never_stop)
            .await;
        let Err(Failure::Ambiguous { message }) = sent.result else {
            panic!("expected an ambiguous failure")
        };
        assert!(message.contains("502"), "{message}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // A timeout too: the server may have applied it before the client gave up.
        let (slow, slow_hits) = server(|_| {
            (
                StatusCode::OK,
                HeaderMap::new(),
                "{}",
                Duration::from_secs(3),
            )
        })
        .await;
        let once = Request {
            idempotent: false,
            ..Request::post(&slow, &body)
        };
        let sent = client(5, Duration::from_millis(300))
            .send(once, never_stop)
            .await;
        assert!(matches!(sent.result, Err(Failure::Ambiguous { .. })));
        assert_eq!(slow_hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_429_is_retried_even_when_not_idempotent() {
        let (url, hits) = server(|n| {
            let status = if n == 0 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::CREATED
            };
            let mut h = HeaderMap::new();
            h.insert("retry-after", "0".parse().unwrap());
            (status, h, "{}", Duration::ZERO)
        })
        .await;
        let body = serde_json::json!({});
        let once = Request {
            idempotent: false,
            ..Request::post(&url, &body)
        };
        let sent = client(5, Duration::from_secs(5))
            .send(once, never_stop)
            .await;
        assert_eq!(sent.result.unwrap().status, 201);
        assert_eq!((sent.api_calls, sent.throttled), (2, 1));
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn requests_are_spaced_by_the_quota() {
        let (url, _) = server(|_| (StatusCode::OK, HeaderMap::new(), "{}", Duration::ZERO)).await;
        let retry = RetryPolicy {
            max_retries: 0,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(10),
        };
        // 10 per second: the 6th request cannot start before half a second has passed.
        let c = Client::new(
            Secret::new("t"),
            budget(10, 1),
            Duration::from_secs(5),
            retry,
        )
        .unwrap();
        let started = Instant::now();
        for _ in 0..6 {
            assert!(
                c.post_json(&url, &serde_json::json!({}), never_stop)
                    .await
                    .result
                    .is_ok()
            );
        }
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn requests_are_counted_by_status_with_the_reported_budget() {
        let (url, _) = server(|n| {
            let mut h = HeaderMap::new();
            h.insert("x-hubspot-ratelimit-remaining", "41".parse().unwrap());
            let status = if n == 0 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, h, "{}", Duration::ZERO)
        })
        .await;
        let c = client(3, Duration::from_secs(5));
        assert_eq!(c.stats().rate_remaining(), None);
        c.post_json(&url, &serde_json::json!({}), never_stop).await;
        let by_status = c.stats().by_status();
        assert_eq!(by_status.get("503"), Some(&1));
        assert_eq!(by_status.get("200"), Some(&1));
        assert_eq!(c.stats().rate_remaining(), Some(41));
        // Nobody listening: counted as an error.
        let dead = client(0, Duration::from_secs(1));
        dead.post_json(
            "http://127.0.0.1:9/batch",
            &serde_json::json!({}),
            never_stop,
        )
        .await;
        assert_eq!(dead.stats().by_status().get("error"), Some(&1));
    }

    #[tokio::test]
    async fn client_errors_are_returned_not_retried() {
        let (url, hits) = server(|_| {
            (
                StatusCode::BAD_REQUEST,
                HeaderMap::new(),
                "bad",
                Duration::ZERO,
            )
        })
        .await;
        let sent = client(5, Duration::from_secs(5))
            .post_json(&url, &serde_json::json!({}), never_stop)
            .await;
        assert_eq!(sent.result.unwrap().status, 400);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
