//! The request log over real HTTP: what it records for each vendor, its filters,
//! its bound, and that credentials never reach it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::tests::Harness;
use super::{LoggedRequest, RequestLogPage, SandboxConfig};

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";

fn upsert(emails: &[&str]) -> Value {
    let inputs: Vec<Value> = emails
        .iter()
        .map(|email| json!({"id": email, "idProperty": "email", "properties": {"firstname": "X"}}))
        .collect();
    json!({ "inputs": inputs })
}

async fn log(h: &Harness, query: &str) -> RequestLogPage {
    let reply = h
        .send(h.http.get(h.url(&format!("/_sandbox/requests{query}"))))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_value(reply.body).expect("a request log page")
}

async fn log_text(h: &Harness) -> String {
    h.http
        .get(h.url("/_sandbox/requests"))
        .send()
        .await
        .expect("an answer")
        .text()
        .await
        .expect("a body")
}

fn seqs(page: &RequestLogPage) -> Vec<u64> {
    page.requests.iter().map(|r| r.seq).collect()
}

#[tokio::test]
async fn every_vendor_is_logged_without_credentials() {
    let h = Harness::with(SandboxConfig {
        token: Some("pat-na1-SECRET-TOKEN".to_owned()),
        ..SandboxConfig::ephemeral()
    })
    .await;
    let before = Utc::now();
    let upserted = h
        .post(UPSERT, &upsert(&["a@x.io", "b@x.io", "c@x.io"]))
        .await;
    assert_eq!(upserted.status, StatusCode::OK);
    h.get("/crm/v3/owners?limit=2&hapikey=LEAKED-KEY").await;
    let unauthenticated = h
        .send(
            h.http
                .get(h.url("/crm/v3/owners"))
                .bearer_auth("WRONG-TOKEN"),
        )
        .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    h.send(
        h.http
            .post(h.url("/api/chat.postMessage"))
            .bearer_auth(&h.token)
            .json(&json!({"channel": "C1", "text": "hi"})),
    )
    .await;
    let hook = h
        .http
        .post(h.url("/services/T01/B02/HOOK-SECRET"))
        .body(r#"{"text": "hi"}"#)
        .send()
        .await
        .expect("an answer");
    assert_eq!(hook.status(), StatusCode::OK);
    h.post("/crm/v3/objects/widgets/batch/upsert", &json!({}))
        .await;
    // Inspection is not API traffic and is not logged.
    h.inspect("/_sandbox/contacts").await;

    let page = log(&h, "").await;
    assert_eq!(page.capacity, super::DEFAULT_REQUEST_LOG_SIZE);
    assert_eq!(page.evicted, 0);
    assert_eq!(page.matched, 6);
    assert_eq!(page.next_since, page.requests[5].seq);
    let shown: Vec<(&str, &str, &str, Value, Option<u32>)> = page
        .requests
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.endpoint.as_str(),
                r.status.clone(),
                r.records,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "POST",
                UPSERT,
                "POST /crm/v3/objects/contacts/batch/upsert",
                json!(200),
                Some(3)
            ),
            (
                "GET",
                "/crm/v3/owners?limit=2&hapikey=***",
                "GET /crm/v3/owners",
                json!(200),
                None
            ),
            (
                "GET",
                "/crm/v3/owners",
                "GET /crm/v3/owners",
                json!(401),
                None
            ),
            (
                "POST",
                "/api/chat.postMessage",
                "POST /api/chat.postMessage",
                json!(200),
                None
            ),
            (
                "POST",
                "/services/T01/B02/***",
                "POST /services/{team}/{bot}/{secret}",
                json!(200),
                None
            ),
            (
                "POST",
                "/crm/v3/objects/widgets/batch/upsert",
                "POST /crm/v3/objects/widgets/batch/upsert",
                json!(404),
                None
            ),
        ]
    );
    let seqs = seqs(&page);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for request in &page.requests {
        let time: DateTime<Utc> = request.time.parse().expect("an RFC 3339 time");
        assert!(time >= before - chrono::Duration::milliseconds(1) && time <= Utc::now());
        assert!(request.latency_ms >= 0.0 && request.latency_ms < 10_000.0);
        assert!(request.faults.is_empty());
    }

    let text = log_text(&h).await;
    for secret in [
        "pat-na1-SECRET-TOKEN",
        "WRONG-TOKEN",
        "LEAKED-KEY",
        "HOOK-SECRET",
        "Bearer",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }
}

#[tokio::test]
async fn filters_select_by_endpoint_status_and_sequence() {
    let h = Harness::with(SandboxConfig {
        burst_per_10s: 3,
        ..SandboxConfig::ephemeral()
    })
    .await;
    for n in 0..4 {
        h.post(UPSERT, &upsert(&[&format!("{n}@x.io")])).await;
    }
    h.get("/crm/v3/owners").await;
    h.get("/crm/v3/objects/contacts/1?idProperty=nope").await;

    let all = log(&h, "").await;
    assert_eq!(all.requests.len(), 6);
    let statuses: Vec<Value> = all.requests.iter().map(|r| r.status.clone()).collect();
    assert_eq!(
        statuses,
        [
            json!(200),
            json!(200),
            json!(200),
            json!(429),
            json!(429),
            json!(429)
        ]
    );

    let throttled = log(&h, "?status=429").await;
    assert_eq!(throttled.matched, 3);
    assert_eq!(seqs(&throttled), seqs(&all)[3..].to_vec());
    assert_eq!(log(&h, "?status=4xx").await.matched, 3);
    assert_eq!(log(&h, "?status=2xx").await.matched, 3);

    let upserts = log(&h, "?endpoint=batch/upsert").await;
    assert_eq!(upserts.matched, 4);
    let owners = log(&h, "?endpoint=GET%20/crm/v3/owners").await;
    assert_eq!(owners.matched, 1);
    assert_eq!(owners.requests[0].path, "/crm/v3/owners");
    let both = log(&h, "?endpoint=batch/upsert&status=429").await;
    assert_eq!(seqs(&both), vec![all.requests[3].seq]);

    let first = all.requests[0].seq;
    let after = log(&h, &format!("?since={}&limit=2", first)).await;
    assert_eq!(seqs(&after), vec![first + 1, first + 2]);
    assert_eq!(after.matched, 5);
    assert_eq!(after.next_since, first + 2);
    let rest = log(&h, &format!("?since={}", after.next_since)).await;
    assert_eq!(seqs(&rest), seqs(&all)[3..].to_vec());
    let tail = log(&h, "?limit=2").await;
    assert_eq!(seqs(&tail), seqs(&all)[4..].to_vec());

    for bad in ["?status=teapot", "?limit=-1", "?since=x", "?colour=red"] {
        let reply = h
            .send(h.http.get(h.url(&format!("/_sandbox/requests{bad}"))))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn the_log_is_bounded_and_cleared_by_resets() {
    let h = Harness::with(SandboxConfig {
        request_log_size: 5,
        ..SandboxConfig::ephemeral()
    })
    .await;
    for _ in 0..8 {
        h.get("/crm/v3/owners").await;
    }
    let page = log(&h, "").await;
    assert_eq!(page.capacity, 5);
    assert_eq!(page.evicted, 3);
    assert_eq!(seqs(&page), [4, 5, 6, 7, 8]);

    let reply = h.send(h.http.post(h.url("/_sandbox/stats/reset"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(log(&h, "").await.requests.is_empty());
    h.get("/crm/v3/owners").await;
    let page = log(&h, "").await;
    assert_eq!(seqs(&page), [9], "sequence numbers keep counting");
    assert_eq!(page.evicted, 0);

    h.sandbox.reset();
    assert!(log(&h, "").await.requests.is_empty());
}

#[tokio::test]
async fn a_zero_size_log_is_off() {
    let h = Harness::with(SandboxConfig {
        request_log_size: 0,
        ..SandboxConfig::ephemeral()
    })
    .await;
    h.get("/crm/v3/owners").await;
    let page = log(&h, "").await;
    assert!(page.requests.is_empty());
    assert_eq!(page.capacity, 0);
    assert_eq!(h.stats().await.requests, 1, "the stats still count");
}

fn only(page: &RequestLogPage) -> &LoggedRequest {
    assert_eq!(page.requests.len(), 1, "{page:?}");
    &page.requests[0]
}

#[tokio::test]
async fn injected_faults_are_named() {
    let h = Harness::start().await;

    h.configure(json!({"faults": {"seed": 3, "error_rate": 1.0, "latency_ms": 30}}))
        .await;
    h.post(UPSERT, &upsert(&["e@x.io"])).await;
    let page = log(&h, "").await;
    let errored = only(&page);
    assert!(
        errored
            .status
            .as_u64()
            .is_some_and(|s| matches!(s, 500 | 502 | 503)),
        "{errored:?}"
    );
    assert_eq!(errored.faults, ["latency", "error"]);
    assert!(errored.latency_ms >= 30.0, "{errored:?}");

    h.configure(
        json!({"faults": {"error_rate": 0.0, "latency_ms": 0, "partial_failure_rate": 1.0}}),
    )
    .await;
    let since = page.next_since;
    let partial = h.post(UPSERT, &upsert(&["p@x.io", "q@x.io"])).await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);
    let page = log(&h, &format!("?since={since}")).await;
    let logged = only(&page);
    assert_eq!(logged.status, json!(207));
    assert_eq!(logged.faults, ["partial"]);
    assert_eq!(logged.records, Some(2));

    h.configure(json!({"faults": {"partial_failure_rate": 0.0, "drop_after_apply_rate": 1.0}}))
        .await;
    let since = page.next_since;
    let dropped = h
        .http
        .post(h.url(UPSERT))
        .bearer_auth(&h.token)
        .json(&upsert(&["d@x.io"]))
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "the connection is closed without an answer"
    );
    let page = log(&h, &format!("?since={since}")).await;
    let logged = only(&page);
    assert_eq!(logged.status, json!("dropped"));
    assert_eq!(logged.faults, ["drop_after_apply"]);
    assert_eq!(log(&h, "?status=dropped").await.matched, 1);

    h.configure(
        json!({"faults": {"drop_after_apply_rate": 0.0, "timeout_rate": 1.0, "timeout_ms": 50}}),
    )
    .await;
    let since = page.next_since;
    let hung = h
        .http
        .post(h.url(UPSERT))
        .bearer_auth(&h.token)
        .json(&upsert(&["t@x.io"]))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(hung.is_err(), "a hung request is never answered");
    let page = log(&h, &format!("?since={since}")).await;
    let logged = only(&page);
    assert_eq!(logged.status, json!("timeout"));
    assert_eq!(logged.faults, ["timeout"]);
    assert!(logged.latency_ms >= 50.0, "{logged:?}");
}

#[tokio::test]
async fn a_client_that_gives_up_on_a_hung_request_is_still_logged() {
    let h = Harness::start().await;
    h.configure(json!({"faults": {"seed": 1, "timeout_rate": 1.0, "timeout_ms": 60000}}))
        .await;
    let gave_up = h
        .http
        .post(h.url(UPSERT))
        .bearer_auth(&h.token)
        .json(&upsert(&["t@x.io"]))
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err());
    // The server notices the closed connection on its own time.
    let mut logged = Vec::new();
    for _ in 0..50 {
        logged = log(&h, "?status=timeout").await.requests;
        if !logged.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        logged.len(),
        1,
        "the hung request is logged once its client leaves"
    );
    assert_eq!(logged[0].faults, ["timeout"]);
}

#[tokio::test]
async fn salesforce_requests_are_logged_through_the_gate() {
    let h = Harness::start().await;
    let limits = "/services/data/v60.0/limits";
    let ok = h
        .send(h.http.get(h.url(limits)).bearer_auth(&h.token))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let refused = h.send(h.http.get(h.url(limits))).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    h.configure(json!({"faults": {"seed": 7, "error_rate": 1.0}}))
        .await;
    let failed = h
        .send(h.http.get(h.url(limits)).bearer_auth(&h.token))
        .await;
    assert!(failed.status.is_server_error(), "{}", failed.body);

    let page = log(&h, "?endpoint=/services/data").await;
    let seen: Vec<(&str, String, Vec<String>)> = page
        .requests
        .iter()
        .map(|r| (r.endpoint.as_str(), r.status.to_string(), r.faults.clone()))
        .collect();
    let endpoint = "GET /services/data/{version}/limits";
    assert_eq!(
        seen,
        [
            (endpoint, "200".to_owned(), vec![]),
            (endpoint, "401".to_owned(), vec![]),
            (
                endpoint,
                failed.status.as_u16().to_string(),
                vec!["error".to_owned()]
            ),
        ],
        "{:?}",
        page.requests
    );
}
