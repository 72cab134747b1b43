//! Injected faults over real HTTP: each is set through `/_sandbox/config` (or at
//! start) and observed as a client sees it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::tests::Harness;
use super::{Faults, SandboxConfig};

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
const READ: &str = "/crm/v3/objects/contacts/batch/read";
const CREATE: &str = "/crm/v3/objects/contacts/batch/create";

fn upsert(emails: &[&str]) -> Value {
    let inputs: Vec<Value> = emails
        .iter()
        .map(|email| json!({"id": email, "idProperty": "email", "properties": {"firstname": "X"}}))
        .collect();
    json!({ "inputs": inputs })
}

async fn contact_count(h: &Harness) -> u64 {
    h.inspect("/_sandbox/contacts").await["total"]
        .as_u64()
        .expect("a total")
}

/// Sends a request and returns the status, or `None` when the connection failed.
async fn try_post(h: &Harness, path: &str, body: &Value) -> Result<StatusCode, reqwest::Error> {
    let response = h
        .http
        .post(h.url(path))
        .bearer_auth(&h.token)
        .json(body)
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

#[tokio::test]
async fn server_errors_are_answered_before_applying() {
    let h = Harness::start().await;
    h.configure(json!({"faults": {"seed": 1, "error_rate": 1.0}}))
        .await;
    for n in 0..6 {
        let reply = h.post(UPSERT, &upsert(&[&format!("e{n}@x.io")])).await;
        assert!(
            matches!(reply.status.as_u16(), 500 | 502 | 503),
            "{}",
            reply.status
        );
        assert_eq!(reply.body["status"], "error");
        assert_eq!(reply.body["category"], "INTERNAL_ERROR");
        assert!(reply.body["correlationId"].is_string());
        assert!(reply.headers.contains_key("x-hubspot-ratelimit-remaining"));
    }
    assert_eq!(contact_count(&h).await, 0);
    let stats = h.stats().await;
    assert_eq!(stats.faults.error, 6);
    let errors: u64 = [500, 502, 503]
        .iter()
        .map(|s| stats.count(&format!("POST {UPSERT}"), *s))
        .sum();
    assert_eq!(errors, 6);

    // Turning it off again.
    h.configure(json!({"faults": {"error_rate": 0.0}})).await;
    let reply = h.post(UPSERT, &upsert(&["ok@x.io"])).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_seed_repeats_the_same_faults() {
    let h = Harness::start().await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        h.configure(json!({"faults": {"seed": 7, "error_rate": 0.5}}))
            .await;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(h.post(READ, &json!({"inputs": []})).await.status.as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&200) && runs[0].iter().any(|s| *s >= 500));
    let config = h.inspect("/_sandbox/config").await;
    assert_eq!(config["faults"]["seed"], 7);
    assert_eq!(config["faults"]["error_rate"], 0.5);
    assert_eq!(config["burst_per_10s"], 100);
}

#[tokio::test]
async fn faults_can_be_set_at_start() {
    let h = Harness::with(SandboxConfig {
        faults: Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
        ..SandboxConfig::ephemeral()
    })
    .await;
    let reply = h.post(READ, &json!({"inputs": []})).await;
    assert!(reply.status.is_server_error());
    // A reset returns to the startup faults, not to none.
    h.configure(json!({"faults": {"error_rate": 0.0}})).await;
    h.send(h.http.post(h.url("/_sandbox/reset"))).await;
    assert!(
        h.post(READ, &json!({"inputs": []}))
            .await
            .status
            .is_server_error()
    );
}

#[tokio::test]
async fn bad_fault_settings_are_refused() {
    let h = Harness::start().await;
    for patch in [
        json!({"faults": {"error_rate": 2.0}}),
        json!({"faults": {"nonsense": 1}}),
        json!({"burst_per_10s": 5, "faults": {"timeout_rate": -0.1}}),
    ] {
        let reply = h
            .send(h.http.post(h.url("/_sandbox/config")).json(&patch))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{patch}");
    }
    // A refused patch changes nothing, limits included.
    assert_eq!(h.inspect("/_sandbox/config").await["burst_per_10s"], 100);
}

#[tokio::test]
async fn latency_is_added_to_crm_requests() {
    let h = Harness::start().await;
    h.configure(json!({"faults": {"latency_ms": 300}})).await;
    let started = Instant::now();
    let reply = h.post(READ, &json!({"inputs": []})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn timeouts_hang_without_applying() {
    let h = Harness::start().await;
    h.configure(json!({"faults": {"timeout_rate": 1.0, "timeout_ms": 300}}))
        .await;
    // With the hang shorter than the client's patience, the connection is closed unanswered.
    let started = Instant::now();
    let error = try_post(&h, UPSERT, &upsert(&["t@x.io"]))
        .await
        .expect_err("no answer");
    assert!(started.elapsed() >= Duration::from_millis(300), "{error}");
    // A client with less patience times out on its own.
    h.configure(json!({"faults": {"timeout_ms": 60_000}})).await;
    let error = h
        .http
        .post(h.url(UPSERT))
        .bearer_auth(&h.token)
        .json(&upsert(&["t@x.io"]))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("a client timeout");
    assert!(error.is_timeout(), "{error}");
    assert_eq!(contact_count(&h).await, 0);
    let stats = h.stats().await;
    assert_eq!(stats.faults.timeout, 2);
    assert_eq!(stats.by_endpoint[&format!("POST {UPSERT}")]["timeout"], 2);
    // A request still hanging does not hold up shutdown.
    let Harness { sandbox, .. } = h;
    tokio::time::timeout(Duration::from_secs(5), sandbox.shutdown())
        .await
        .expect("shutdown does not wait for hung requests");
}

#[tokio::test]
async fn dropped_connections_still_apply_the_write() {
    let h = Harness::start().await;
    h.configure(json!({"faults": {"drop_after_apply_rate": 1.0}}))
        .await;
    let error = try_post(&h, UPSERT, &upsert(&["d@x.io", "e@x.io"]))
        .await
        .expect_err("the connection is dropped");
    assert!(!error.is_status() && !error.is_timeout(), "{error}");
    // The write happened: this is what duplicates a naive client's retried create.
    assert_eq!(contact_count(&h).await, 2);
    let error = try_post(
        &h,
        CREATE,
        &json!({"inputs": [{"properties": {"email": "f@x.io"}}]}),
    )
    .await
    .expect_err("dropped");
    assert!(!error.is_status(), "{error}");
    assert_eq!(contact_count(&h).await, 3);
    // Reads are never dropped, and neither are refused writes.
    assert_eq!(
        try_post(&h, READ, &json!({"inputs": []})).await.ok(),
        Some(StatusCode::OK)
    );
    let refused = h.post(UPSERT, &json!({"inputs": "nope"})).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let stats = h.stats().await;
    assert_eq!(stats.faults.dropped_after_apply, 2);
    assert_eq!(stats.by_endpoint[&format!("POST {UPSERT}")]["dropped"], 1);
    assert_eq!(stats.records_written, 3);
}

#[tokio::test]
async fn partial_failures_fail_single_inputs() {
    let h = Harness::start().await;
    h.configure(json!({"faults": {"seed": 3, "partial_failure_rate": 0.5}}))
        .await;
    let emails: Vec<String> = (0..40).map(|n| format!("p{n}@x.io")).collect();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let reply = h.post(UPSERT, &upsert(&refs)).await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS);
    let errors = reply.body["errors"].as_array().expect("errors").clone();
    let failed: Vec<String> = errors
        .iter()
        .map(|e| e["context"]["ids"][0].as_str().expect("an id").to_owned())
        .collect();
    assert!(!failed.is_empty() && failed.len() < 40, "{}", failed.len());
    assert_eq!(reply.body["numErrors"], failed.len());
    for error in &errors {
        assert!(
            matches!(
                error["category"].as_str(),
                Some("VALIDATION_ERROR" | "INTERNAL_ERROR")
            ),
            "{error}"
        );
    }
    // Failed inputs were not applied; the rest were.
    assert_eq!(contact_count(&h).await, 40 - failed.len() as u64);
    assert_eq!(h.stats().await.faults.partial, failed.len() as u64);

    // The same seed fails the same inputs.
    h.send(h.http.post(h.url("/_sandbox/reset"))).await;
    h.configure(json!({"faults": {"seed": 3, "partial_failure_rate": 0.5}}))
        .await;
    let again = h.post(UPSERT, &upsert(&refs)).await;
    let failed_again: Vec<String> = again.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["context"]["ids"][0].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(failed, failed_again);
}
