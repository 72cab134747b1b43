//! The sandbox over real HTTP: each test starts its own server on a free port.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::*;

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
const READ: &str = "/crm/v3/objects/contacts/batch/read";
const UPDATE: &str = "/crm/v3/objects/contacts/batch/update";
const CREATE: &str = "/crm/v3/objects/contacts/batch/create";
const ARCHIVE: &str = "/crm/v3/objects/contacts/batch/archive";

/// A sandbox on a free port and a client for it (shared with the contract tests).
pub(super) struct Harness {
    pub(super) sandbox: Sandbox,
    pub(super) http: reqwest::Client,
    pub(super) token: String,
}

/// An answer; `body` is `Value::Null` when there was none (a 204).
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Value,
}

impl Harness {
    pub(super) async fn start() -> Harness {
        Harness::with(SandboxConfig::ephemeral()).await
    }

    pub(super) async fn with(config: SandboxConfig) -> Harness {
        // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = config
            .token
            .clone()
            .unwrap_or_else(|| "test-token".to_owned());
        Harness {
            sandbox: Sandbox::start(config).await.expect("sandbox starts"),
            http: reqwest::Client::new(),
            token,
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url())
    }

    pub(super) async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request is answered");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        // A 204 has no body; every other answer is JSON.
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub(super) async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(&self.token)
                .json(body),
        )
        .await
    }

    pub(super) async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token))
            .await
    }

    pub(super) async fn inspect(&self, path: &str) -> Value {
        self.send(self.http.get(self.url(path))).await.body
    }

    pub(super) async fn configure(&self, patch: Value) {
        let reply = self
            .send(self.http.post(self.url("/_sandbox/config")).json(&patch))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }

    pub(super) async fn stats(&self) -> SandboxStats {
        serde_json::from_value(self.inspect("/_sandbox/stats").await).expect("stats parse")
    }
}

fn upsert_by_email(rows: &[(&str, Value)]) -> Value {
    let inputs: Vec<Value> = rows
        .iter()
        .map(|(email, properties)| json!({"id": email, "idProperty": "email", "properties": properties}))
        .collect();
    json!({ "inputs": inputs })
}

fn header(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn upsert_creates_then_updates() {
    let h = Harness::start().await;
    let first = h
        .post(
            UPSERT,
            &upsert_by_email(&[
                (
                    "Ada@Example.com",
                    json!({"firstname": "Ada", "hubspot_owner_id": "101"}),
                ),
                ("bob@example.com", json!({"firstname": "Bob"})),
            ]),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["status"], "COMPLETE");
    assert!(first.body["startedAt"].is_string() && first.body["completedAt"].is_string());
    assert!(first.body.get("errors").is_none());
    let results = first.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    let ada = &results[0];
    assert_eq!(ada["new"], true);
    assert_eq!(ada["archived"], false);
    let id = ada["id"].as_str().expect("an id").to_owned();
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(ada["properties"]["email"], "ada@example.com");
    assert_eq!(ada["properties"]["hs_object_id"], id.as_str());
    assert_eq!(ada["properties"]["hubspot_owner_id"], "101");
    assert!(ada["properties"]["createdate"].is_string());
    assert!(ada["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));

    let second = h
        .post(
            UPSERT,
            &upsert_by_email(&[("ada@example.com", json!({"hubspot_owner_id": "102"}))]),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let updated = &second.body["results"][0];
    assert_eq!(updated["new"], false);
    assert_eq!(updated["id"], id.as_str());
    assert_eq!(updated["properties"]["hubspot_owner_id"], "102");
    assert_eq!(updated["properties"]["firstname"], "Ada");

    // By record id, without idProperty.
    let by_id = h
        .post(
            UPSERT,
            &json!({"inputs": [{"id": id, "properties": {"lastname": "Lovelace"}}]}),
        )
        .await;
    assert_eq!(by_id.status, StatusCode::OK, "{}", by_id.body);
    assert_eq!(by_id.body["results"][0]["new"], false);

    let one = h
        .get("/crm/v3/objects/contacts/ada@example.com?idProperty=email&properties=lastname,hubspot_owner_id")
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["id"], id.as_str());
    assert_eq!(one.body["properties"]["lastname"], "Lovelace");
    assert_eq!(one.body["properties"]["hubspot_owner_id"], "102");
    assert!(one.body["properties"].get("firstname").is_none());

    let missing = h.get("/crm/v3/objects/contacts/999999").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        missing.body["message"],
        "Object not found.  objectId are usually numeric."
    );

    let stored = h.inspect("/_sandbox/contacts").await;
    assert_eq!(stored["total"], 2);
    assert_eq!(h.stats().await.records_written, 4);
}

#[tokio::test]
async fn invalid_email_rejects_only_that_input() {
    let h = Harness::start().await;
    let reply = h
        .post(
            UPSERT,
            &upsert_by_email(&[
                ("good@example.com", json!({})),
                ("not-an-email", json!({"firstname": "X"})),
                ("also-good@example.com", json!({"email": "broken@"})),
                ("third@example.com", json!({})),
            ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS, "{}", reply.body);
    assert_eq!(reply.body["status"], "COMPLETE");
    assert_eq!(reply.body["numErrors"], 2);
    let applied: Vec<&str> = reply.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["properties"]["email"].as_str())
        .collect();
    assert_eq!(applied, ["good@example.com", "third@example.com"]);
    let errors = reply.body["errors"].as_array().expect("errors");
    assert_eq!(errors[0]["status"], "error");
    assert_eq!(errors[0]["category"], "VALIDATION_ERROR");
    assert_eq!(errors[0]["context"], json!({"ids": ["not-an-email"]}));
    assert_eq!(errors[0]["errors"], json!([]));
    assert_eq!(errors[0]["links"], json!({}));
    assert_eq!(
        errors[0]["message"],
        r#"Property values were not valid: [{"isValid":false,"message":"Email address not-an-email is invalid","error":"INVALID_EMAIL","name":"email"}]"#
    );
    assert_eq!(
        errors[1]["context"],
        json!({"ids": ["also-good@example.com"]})
    );
    assert_eq!(h.inspect("/_sandbox/contacts").await["total"], 2);
    let stats = h.stats().await;
    assert_eq!(stats.records_written, 2);
    assert_eq!(stats.count(&format!("POST {UPSERT}"), 207), 1);
}

#[tokio::test]
async fn unknown_or_archived_owner_is_rejected_per_record() {
    let h = Harness::start().await;
    let reply = h
        .post(
            UPSERT,
            &upsert_by_email(&[
                ("a@example.com", json!({"hubspot_owner_id": "999"})),
                ("b@example.com", json!({"hubspot_owner_id": "109"})),
                ("c@example.com", json!({"hubspot_owner_id": "rep3"})),
                ("d@example.com", json!({"hubspot_owner_id": "108"})),
            ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS, "{}", reply.body);
    assert_eq!(reply.body["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        reply.body["results"][0]["properties"]["hubspot_owner_id"],
        "108"
    );
    let errors = reply.body["errors"].as_array().expect("errors");
    let summary: Vec<(String, String)> = errors
        .iter()
        .map(|e| {
            (
                e["context"]["ids"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 3);
    assert_eq!(summary[0].0, "a@example.com");
    assert!(
        summary[0].1.contains("999 is not a valid owner id"),
        "{}",
        summary[0].1
    );
    assert!(summary[0].1.contains("INVALID_OWNER_ID"));
    assert!(summary[1].1.contains("109 is not a valid owner id"));
    assert!(summary[2].1.contains("INVALID_INTEGER"));
}

#[tokio::test]
async fn whole_batch_errors_are_400() {
    let h = Harness::start().await;
    let rows: Vec<(String, Value)> = (0..101)
        .map(|i| (format!("user{i}@example.com"), json!({})))
        .collect();
    let rows: Vec<(&str, Value)> = rows.iter().map(|(e, p)| (e.as_str(), p.clone())).collect();
    let too_many = h.post(UPSERT, &upsert_by_email(&rows)).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.body["status"], "error");
    assert_eq!(too_many.body["category"], "VALIDATION_ERROR");
    assert_eq!(
        too_many.body["message"],
        "The maximum number of inputs supported in a batch is 100. Please reduce the number of items and try again"
    );
    assert_eq!(
        too_many.body["correlationId"].as_str().map(str::len),
        Some(36)
    );

    let duplicate = h
        .post(
            UPSERT,
            &upsert_by_email(&[("a@x.io", json!({})), ("A@x.io", json!({}))]),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        duplicate.body["message"],
        "Duplicate IDs found in batch input: [A@x.io]. IDs must be unique"
    );

    let not_string = h
        .post(
            UPSERT,
            &json!({"inputs": [{"id": "a@x.io", "idProperty": "email", "properties": {"lead_score": 90}}]}),
        )
        .await;
    assert_eq!(not_string.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_string.body["category"], "VALIDATION_ERROR");
    assert!(
        not_string.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Invalid input JSON")),
        "{}",
        not_string.body
    );

    let bad_id_property = h
        .post(
            UPSERT,
            &json!({"inputs": [{"id": "x", "idProperty": "firstname", "properties": {}}]}),
        )
        .await;
    assert_eq!(bad_id_property.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_id_property.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("non-unique 0-1 property firstname"))
    );

    let empty = h
        .send(
            h.http
                .post(h.url(UPSERT))
                .bearer_auth(&h.token)
                .header("content-type", "application/json"),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.body["category"], "VALIDATION_ERROR");

    assert_eq!(h.stats().await.records_written, 0);
    assert_eq!(h.inspect("/_sandbox/contacts").await["total"], 0);
}

#[tokio::test]
async fn batch_read_reports_missing_ids() {
    let h = Harness::start().await;
    h.post(
        UPSERT,
        &upsert_by_email(&[("a@x.io", json!({"firstname": "A", "lastname": "Z"}))]),
    )
    .await;
    let reply = h
        .post(
            READ,
            &json!({"idProperty": "email", "inputs": [{"id": "A@x.io"}, {"id": "nobody@x.io"}], "properties": ["firstname"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS, "{}", reply.body);
    let found = &reply.body["results"][0];
    assert_eq!(found["properties"]["firstname"], "A");
    assert!(found["properties"].get("lastname").is_none());
    for always in ["hs_object_id", "createdate", "lastmodifieddate"] {
        assert!(found["properties"][always].is_string(), "{always}");
    }
    assert_eq!(reply.body["numErrors"], 1);
    assert_eq!(reply.body["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        reply.body["errors"][0]["message"],
        "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
    );
    assert_eq!(
        reply.body["errors"][0]["context"],
        json!({"ids": ["nobody@x.io"]})
    );

    let id = found["id"].as_str().expect("an id");
    let all_found = h
        .post(READ, &json!({"inputs": [{"id": id}], "properties": []}))
        .await;
    assert_eq!(all_found.status, StatusCode::OK);
    assert_eq!(
        all_found.body["results"][0]["properties"]["email"],
        "a@x.io"
    );
}

#[tokio::test]
async fn bearer_token_is_required() {
    let h = Harness::with(SandboxConfig {
        token: Some("secret".to_owned()),
        ..SandboxConfig::ephemeral()
    })
    .await;
    let missing = h.send(h.http.get(h.url("/crm/v3/owners"))).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.body["status"], "error");
    assert_eq!(missing.body["category"], "INVALID_AUTHENTICATION");
    assert!(
        missing.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Authentication credentials not found."))
    );
    assert!(missing.body["correlationId"].is_string());

    let wrong = h
        .send(h.http.get(h.url("/crm/v3/owners")).bearer_auth("guess"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let unknown_route = h.send(h.http.get(h.url("/crm/v3/nothing"))).await;
    assert_eq!(unknown_route.status, StatusCode::UNAUTHORIZED);
    let unknown_route = h.get("/crm/v3/nothing").await;
    assert_eq!(unknown_route.status, StatusCode::NOT_FOUND);

    assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
    let stats = h.stats().await;
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.count("GET /crm/v3/owners", 401), 2);
    assert_eq!(stats.count("GET /crm/v3/owners", 200), 1);

    // The inspection routes and unknown routes outside /crm need no token.
    let outside = h.send(h.http.get(h.url("/nope"))).await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    assert_eq!(outside.body["status"], "error");
}

#[tokio::test]
async fn burst_limit_throttles_then_recovers() {
    let h = Harness::start().await;
    let ok = h.get("/crm/v3/owners").await;
    assert_eq!(
        header(&ok, "x-hubspot-ratelimit-max").as_deref(),
        Some("100")
    );
    assert_eq!(
        header(&ok, "x-hubspot-ratelimit-remaining").as_deref(),
        Some("99")
    );
    assert_eq!(
        header(&ok, "x-hubspot-ratelimit-interval-milliseconds").as_deref(),
        Some("10000")
    );
    assert_eq!(
        header(&ok, "x-hubspot-ratelimit-daily").as_deref(),
        Some("250000")
    );
    assert_eq!(
        header(&ok, "x-hubspot-ratelimit-daily-remaining").as_deref(),
        Some("249999")
    );

    h.configure(json!({"burst_per_10s": 3, "window_ms": 800}))
        .await;
    let reset = h.send(h.http.post(h.url("/_sandbox/stats/reset"))).await;
    assert_eq!(reset.status, StatusCode::OK);

    for remaining in ["2", "1", "0"] {
        let reply = h.get("/crm/v3/owners?limit=1").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            header(&reply, "x-hubspot-ratelimit-max").as_deref(),
            Some("3")
        );
        assert_eq!(
            header(&reply, "x-hubspot-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let throttled = h
        .post(UPSERT, &upsert_by_email(&[("a@x.io", json!({}))]))
        .await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.body["status"], "error");
    assert_eq!(
        throttled.body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert_eq!(throttled.body["errorType"], "RATE_LIMIT");
    assert_eq!(throttled.body["policyName"], "TEN_SECONDLY_ROLLING");
    assert!(throttled.body["correlationId"].is_string());
    let retry_after: u64 = header(&throttled, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry_after >= 1);
    assert!(header(&throttled, "x-hubspot-ratelimit-remaining").is_none());

    tokio::time::sleep(Duration::from_millis(850)).await;
    let again = h
        .post(UPSERT, &upsert_by_email(&[("a@x.io", json!({}))]))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);

    let stats = h.stats().await;
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.records_written, 1);
    assert_eq!(stats.count(&format!("POST {UPSERT}"), 429), 1);
    assert_eq!(stats.count(&format!("POST {UPSERT}"), 200), 1);
    assert_eq!(stats.count("GET /crm/v3/owners", 200), 3);
}

#[tokio::test]
async fn daily_limit_throttles_with_daily_policy() {
    let h = Harness::with(SandboxConfig {
        daily_limit: 2,
        burst_per_10s: 0,
        ..SandboxConfig::ephemeral()
    })
    .await;
    let first = h.get("/crm/v3/owners").await;
    // An unlimited burst budget sends no burst headers.
    assert!(header(&first, "x-hubspot-ratelimit-max").is_none());
    assert_eq!(
        header(&first, "x-hubspot-ratelimit-daily-remaining").as_deref(),
        Some("1")
    );
    assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
    let third = h.get("/crm/v3/owners").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.body["policyName"], "DAILY");
    assert_eq!(third.body["message"], "You have reached your daily limit.");

    h.configure(json!({"daily_limit": 0})).await;
    assert_eq!(h.get("/crm/v3/owners").await.status, StatusCode::OK);
}

#[tokio::test]
async fn owners_page_through_active_owners() {
    let h = Harness::start().await;
    let mut ids = Vec::new();
    let mut path = "/crm/v3/owners?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let reply = h.get(&path).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        pages += 1;
        for owner in reply.body["results"].as_array().expect("results") {
            assert_eq!(owner["archived"], false);
            assert_eq!(owner["type"], "PERSON");
            assert_eq!(owner["teams"], json!([]));
            assert!(owner["userId"].is_u64() && owner["createdAt"].is_string());
            ids.push(owner["id"].as_str().expect("an id").to_owned());
        }
        match reply.body["paging"]["next"]["after"].as_str() {
            Some(after) => {
                let link = reply.body["paging"]["next"]["link"]
                    .as_str()
                    .expect("a link");
                assert!(link.starts_with(&h.sandbox.base_url()), "{link}");
                path = format!("/crm/v3/owners?limit=3&after={after}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        ids,
        ["101", "102", "103", "104", "105", "106", "107", "108"]
    );

    let by_email = h.get("/crm/v3/owners?email=REP7@demo.handoff.dev").await;
    assert_eq!(by_email.body["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_email.body["results"][0]["id"], "107");
    assert_eq!(
        by_email.body["results"][0]["email"],
        "rep7@demo.handoff.dev"
    );
    assert!(by_email.body.get("paging").is_none());

    let archived_by_email = h.get("/crm/v3/owners?email=rep9@demo.handoff.dev").await;
    assert_eq!(archived_by_email.body["results"], json!([]));
    let archived = h.get("/crm/v3/owners?archived=true").await;
    assert_eq!(archived.body["results"][0]["id"], "109");
    assert_eq!(archived.body["results"][0]["archived"], true);

    let one = h.get("/crm/v3/owners/104").await;
    assert_eq!(one.body["email"], "rep4@demo.handoff.dev");
    assert_eq!(
        h.get("/crm/v3/owners/109").await.status,
        StatusCode::NOT_FOUND
    );

    let bad = h.get("/crm/v3/owners?limit=zero").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn reset_returns_to_the_seed() {
    let h = Harness::start().await;
    h.configure(json!({"burst_per_10s": 7})).await;
    h.post(UPSERT, &upsert_by_email(&[("a@x.io", json!({}))]))
        .await;
    assert_eq!(h.sandbox.contacts().len(), 1);
    assert_eq!(h.sandbox.stats().records_written, 1);

    let reply = h.send(h.http.post(h.url("/_sandbox/reset"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(h.inspect("/_sandbox/contacts").await["total"], 0);
    assert_eq!(h.stats().await, SandboxStats::default());
    assert_eq!(h.inspect("/_sandbox/config").await["burst_per_10s"], 100);
    let created = h
        .post(UPSERT, &upsert_by_email(&[("b@x.io", json!({}))]))
        .await;
    // Ids restart too, so runs against a reset sandbox are reproducible.
    assert_eq!(created.body["results"][0]["id"], "1001");

    let bad = h
        .send(
            h.http
                .post(h.url("/_sandbox/config"))
                .json(&json!({"burst": 1})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let h = Harness::start().await;
    assert_eq!(h.inspect("/_sandbox/health").await["status"], "ok");
    let url = h.url("/_sandbox/health");
    h.sandbox.shutdown().await;
    // A fresh client, since a pooled connection may outlive the listener.
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future_resolves() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(SandboxConfig::ephemeral(), async {
        let _ = stopped.await;
    }));
    let _ = stop.send(());
    let outcome = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns after shutdown");
    assert!(matches!(outcome, Ok(Ok(()))));
}

/// Upserts contacts by email and returns their record ids, in order.
async fn seed_contacts(h: &Harness, rows: &[(&str, Value)]) -> Vec<String> {
    let reply = h.post(UPSERT, &upsert_by_email(rows)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn error_summary(reply: &Reply) -> Vec<(String, Value)> {
    reply.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["category"].as_str().unwrap_or_default().to_owned(),
                e["context"]["ids"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn update_applies_to_existing_records_only() {
    let h = Harness::start().await;
    let ids = seed_contacts(
        &h,
        &[
            ("a@x.io", json!({"firstname": "A", "nurture_status": "hot"})),
            ("b@x.io", json!({"firstname": "B"})),
        ],
    )
    .await;
    let written_before = h.stats().await.records_written;

    let all_ok = h
        .post(
            UPDATE,
            &json!({"inputs": [
                {"id": ids[0], "properties": {"nurture_status": "re-entered", "firstname": ""}, "objectWriteTraceId": "t1"},
                {"id": "B@x.io", "idProperty": "email", "properties": {"hubspot_owner_id": "103"}},
            ]}),
        )
        .await;
    assert_eq!(all_ok.status, StatusCode::OK, "{}", all_ok.body);
    assert_eq!(all_ok.body["status"], "COMPLETE");
    assert!(all_ok.body.get("errors").is_none());
    let results = all_ok.body["results"].as_array().expect("results");
    assert_eq!(results[0]["id"], ids[0].as_str());
    assert_eq!(results[0]["properties"]["nurture_status"], "re-entered");
    // The empty string cleared it.
    assert!(results[0]["properties"].get("firstname").is_none());
    assert_eq!(results[0]["objectWriteTraceId"], "t1");
    assert_eq!(results[0]["archived"], false);
    assert!(results[0].get("new").is_none());
    assert_eq!(results[1]["id"], ids[1].as_str());
    assert_eq!(results[1]["properties"]["hubspot_owner_id"], "103");
    assert_eq!(h.stats().await.records_written, written_before + 2);

    let partial = h
        .post(
            UPDATE,
            &json!({"inputs": [
                {"id": "999999", "properties": {"nurture_status": "x"}},
                {"id": ids[0], "properties": {"email": "not-an-email"}},
                {"id": ids[1], "properties": {"hubspot_owner_id": "109"}},
                {"id": ids[1].clone() + "x", "properties": {}},
                {"id": "nobody@x.io", "idProperty": "email", "properties": {}},
                {"id": ids[0], "idProperty": "email", "properties": {}},
            ]}),
        )
        .await;
    // ids[0] by email is a different key from ids[0] by record id, and names no email.
    assert_eq!(partial.status, StatusCode::MULTI_STATUS, "{}", partial.body);
    assert_eq!(partial.body["numErrors"], 6);
    assert_eq!(partial.body["results"], json!([]));
    assert_eq!(
        error_summary(&partial),
        [
            ("OBJECT_NOT_FOUND".to_owned(), json!(["999999"])),
            ("VALIDATION_ERROR".to_owned(), json!([ids[0]])),
            ("VALIDATION_ERROR".to_owned(), json!([ids[1]])),
            ("OBJECT_NOT_FOUND".to_owned(), json!([ids[1].clone() + "x"])),
            ("OBJECT_NOT_FOUND".to_owned(), json!(["nobody@x.io"])),
            ("OBJECT_NOT_FOUND".to_owned(), json!([ids[0]])),
        ]
    );
    assert!(
        partial.body["errors"][2]["message"]
            .as_str()
            .is_some_and(|m| m.contains("INVALID_OWNER_ID"))
    );

    // The rest of a batch applies around a missing record.
    let mixed = h
        .post(
            UPDATE,
            &json!({"inputs": [
                {"id": "424242", "properties": {"nurture_status": "x"}},
                {"id": ids[1], "properties": {"nurture_status": "re-entered"}},
            ]}),
        )
        .await;
    assert_eq!(mixed.status, StatusCode::MULTI_STATUS, "{}", mixed.body);
    assert_eq!(mixed.body["results"][0]["id"], ids[1].as_str());
    assert_eq!(
        mixed.body["errors"][0]["message"],
        "Object not found.  objectId are usually numeric."
    );
    assert_eq!(h.stats().await.records_written, written_before + 3);

    // Taking another contact's email is a conflict for that input only.
    let conflict = h
        .post(
            UPDATE,
            &json!({"inputs": [{"id": ids[1], "properties": {"email": "A@x.io"}}]}),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::MULTI_STATUS);
    assert_eq!(conflict.body["errors"][0]["category"], "CONFLICT");
    assert_eq!(
        conflict.body["errors"][0]["message"],
        format!("Contact already exists. Existing ID: {}", ids[0])
    );

    let stored = h.sandbox.contacts();
    assert_eq!(stored[0].properties["nurture_status"], "re-entered");
    assert_eq!(stored[0].properties["email"], "a@x.io");
    assert_eq!(stored[1].properties["email"], "b@x.io");
}

#[tokio::test]
async fn update_rejects_whole_batches_like_upsert() {
    let h = Harness::start().await;
    let inputs: Vec<Value> = (0..101)
        .map(|i| json!({"id": (1001 + i).to_string(), "properties": {}}))
        .collect();
    let too_many = h.post(UPDATE, &json!({ "inputs": inputs })).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.body["category"], "VALIDATION_ERROR");

    let duplicate = h
        .post(
            UPDATE,
            &json!({"inputs": [{"id": "1001", "properties": {}}, {"id": " 1001", "properties": {}}]}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    assert!(
        duplicate.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Duplicate IDs found in batch input"))
    );

    let bad_id_property = h
        .post(
            UPDATE,
            &json!({"inputs": [{"id": "x", "idProperty": "firstname", "properties": {}}]}),
        )
        .await;
    assert_eq!(bad_id_property.status, StatusCode::BAD_REQUEST);
    assert!(
        bad_id_property.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Unable to perform update by non-unique 0-1 property"))
    );

    let no_properties = h.post(UPDATE, &json!({"inputs": [{"id": "1001"}]})).await;
    assert_eq!(no_properties.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.stats().await.records_written, 0);
}

#[tokio::test]
async fn create_makes_new_records_and_refuses_taken_emails() {
    let h = Harness::start().await;
    // A company to associate with (the first company's id is 1001).
    let company = h
        .post(
            "/crm/v3/objects/companies/batch/create",
            &json!({"inputs": [{"properties": {"name": "Acme"}}]}),
        )
        .await;
    assert_eq!(company.body["results"][0]["id"], "1001");
    let created = h
        .post(
            CREATE,
            &json!({"inputs": [
                {"properties": {"email": "New@x.io", "firstname": "N", "hubspot_owner_id": "101"}, "associations": []},
                {"properties": {"firstname": "No email"}, "objectWriteTraceId": "t2"},
            ]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let results = created.body["results"].as_array().expect("results");
    assert_eq!(results[0]["id"], "1001");
    assert_eq!(results[0]["properties"]["email"], "new@x.io");
    assert_eq!(results[0]["properties"]["hs_object_id"], "1001");
    assert_eq!(results[1]["id"], "1002");
    assert_eq!(results[1]["objectWriteTraceId"], "t2");
    assert_eq!(
        h.stats().await.records_written,
        3,
        "the company and two contacts"
    );

    // Invalid values fail only their input.
    let partial = h
        .post(
            CREATE,
            &json!({"inputs": [
                {"properties": {"email": "broken@", "firstname": "X"}},
                {"properties": {"email": "ok@x.io", "hubspot_owner_id": "999"}},
                {"properties": {"hubspot_owner_id": "109"}},
                {"properties": {"email": "fine@x.io"}, "associations": [
                    {"to": {"id": "1001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}
                ]},
            ]}),
        )
        .await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS, "{}", partial.body);
    assert_eq!(partial.body["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        partial.body["results"][0]["properties"]["email"],
        "fine@x.io"
    );
    assert_eq!(
        error_summary(&partial),
        [
            ("VALIDATION_ERROR".to_owned(), json!(["broken@"])),
            ("VALIDATION_ERROR".to_owned(), json!(["ok@x.io"])),
            ("VALIDATION_ERROR".to_owned(), json!([])),
        ]
    );

    // A taken email fails the whole batch, as HubSpot does, and writes nothing.
    let before = h.sandbox.contacts().len();
    let conflict = h
        .post(
            CREATE,
            &json!({"inputs": [
                {"properties": {"email": "other@x.io"}},
                {"properties": {"email": "NEW@x.io"}},
            ]}),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.body["status"], "error");
    assert_eq!(conflict.body["category"], "CONFLICT");
    assert_eq!(
        conflict.body["message"],
        "Contact already exists. Existing ID: 1001"
    );
    assert!(conflict.body["correlationId"].is_string());
    assert_eq!(h.sandbox.contacts().len(), before);

    // So does the same email twice in one batch.
    let twice = h
        .post(
            CREATE,
            &json!({"inputs": [
                {"properties": {"email": "twin@x.io"}},
                {"properties": {"email": "Twin@x.io"}},
            ]}),
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{}", twice.body);
    assert_eq!(h.sandbox.contacts().len(), before);

    let bad_association = h
        .post(
            CREATE,
            &json!({"inputs": [{"properties": {}, "associations": [{"to": {"id": "5"}, "types": [{"associationCategory": "NOPE", "associationTypeId": 1}]}]}]}),
        )
        .await;
    assert_eq!(bad_association.status, StatusCode::BAD_REQUEST);
    let too_many: Vec<Value> = (0..101).map(|_| json!({"properties": {}})).collect();
    let too_many = h.post(CREATE, &json!({ "inputs": too_many })).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.stats().await.records_written, 4);
}

#[tokio::test]
async fn archive_hides_records_from_reads_and_writes() {
    let h = Harness::start().await;
    let ids = seed_contacts(
        &h,
        &[("a@x.io", json!({"firstname": "A"})), ("b@x.io", json!({}))],
    )
    .await;
    let written_before = h.stats().await.records_written;

    let archived = h
        .post(
            ARCHIVE,
            &json!({"inputs": [{"id": ids[0]}, {"id": "999999"}, {"id": "not-a-number"}]}),
        )
        .await;
    assert_eq!(archived.status, StatusCode::NO_CONTENT);
    assert_eq!(archived.body, Value::Null);
    assert_eq!(h.stats().await.records_written, written_before + 1);
    // Archiving again is accepted and changes nothing.
    let again = h.post(ARCHIVE, &json!({"inputs": [{"id": ids[0]}]})).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(h.stats().await.records_written, written_before + 1);

    let live = h.inspect("/_sandbox/contacts").await;
    assert_eq!(live["total"], 1);
    assert_eq!(live["results"][0]["id"], ids[1].as_str());
    let gone = h.inspect("/_sandbox/contacts?archived=true").await;
    assert_eq!(gone["total"], 1);
    assert_eq!(gone["results"][0]["id"], ids[0].as_str());
    assert_eq!(h.sandbox.archived_contacts().len(), 1);

    let one = h.get(&format!("/crm/v3/objects/contacts/{}", ids[0])).await;
    assert_eq!(one.status, StatusCode::NOT_FOUND);
    let one = h
        .get(&format!(
            "/crm/v3/objects/contacts/{}?archived=true",
            ids[0]
        ))
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["archived"], true);
    assert!(one.body["archivedAt"].is_string());
    let live_as_archived = h
        .get(&format!(
            "/crm/v3/objects/contacts/{}?archived=true",
            ids[1]
        ))
        .await;
    assert_eq!(live_as_archived.status, StatusCode::NOT_FOUND);

    let read = h
        .post(
            READ,
            &json!({"idProperty": "email", "inputs": [{"id": "a@x.io"}, {"id": "b@x.io"}], "properties": []}),
        )
        .await;
    assert_eq!(read.status, StatusCode::MULTI_STATUS);
    assert_eq!(
        read.body["errors"][0]["context"],
        json!({"ids": ["a@x.io"]})
    );
    let read_archived = h
        .post(
            &format!("{READ}?archived=true"),
            &json!({"idProperty": "email", "inputs": [{"id": "a@x.io"}], "properties": []}),
        )
        .await;
    assert_eq!(
        read_archived.status,
        StatusCode::OK,
        "{}",
        read_archived.body
    );
    assert_eq!(read_archived.body["results"][0]["id"], ids[0].as_str());

    let update = h
        .post(
            UPDATE,
            &json!({"inputs": [{"id": ids[0], "properties": {"firstname": "Z"}}]}),
        )
        .await;
    assert_eq!(update.status, StatusCode::MULTI_STATUS);
    assert_eq!(update.body["errors"][0]["category"], "OBJECT_NOT_FOUND");

    // Upsert by email no longer matches the archived record: it makes a new one.
    let upsert = h
        .post(
            UPSERT,
            &upsert_by_email(&[("a@x.io", json!({"firstname": "A2"}))]),
        )
        .await;
    assert_eq!(upsert.status, StatusCode::OK, "{}", upsert.body);
    assert_eq!(upsert.body["results"][0]["new"], true);
    assert_ne!(upsert.body["results"][0]["id"], ids[0].as_str());

    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let too_many = h.post(ARCHIVE, &json!({ "inputs": too_many })).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    let stats = h.stats().await;
    assert_eq!(stats.count(&format!("POST {ARCHIVE}"), 204), 2);
}

#[tokio::test]
async fn a_seed_file_sets_owners_contacts_and_companies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seed.json");
    std::fs::write(
        &path,
        r#"{"contacts": [{"email": "known@acme.example", "firstname": "Known"}],
            "companies": [{"domain": "acme.example", "name": "Acme"}]}"#,
    )
    .expect("write seed");
    let seed = Seed::from_file(&path).expect("seed parses");
    assert_eq!(
        seed.owners,
        Seed::demo().owners,
        "owners default to the demo's"
    );
    let h = Harness::with(SandboxConfig {
        seed,
        ..SandboxConfig::ephemeral()
    })
    .await;
    let contacts = h.inspect("/_sandbox/contacts").await;
    assert_eq!(
        contacts["results"][0]["properties"]["email"],
        "known@acme.example"
    );
    let companies = h.inspect("/_sandbox/companies").await;
    assert_eq!(
        companies["results"][0]["properties"]["domain"],
        "acme.example"
    );

    std::fs::write(&path, r#"{"contacts": [], "accounts": []}"#).expect("write");
    let err = Seed::from_file(&path).expect_err("unknown keys are refused");
    assert!(err.contains("accounts"), "{err}");
}
