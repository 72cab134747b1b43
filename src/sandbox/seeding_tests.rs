//! `POST /_sandbox/seed` over real HTTP: a seed installed at runtime, and what resets return to.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::tests::{Harness, Reply};

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";

async fn seed(h: &Harness, query: &str, body: &Value) -> Reply {
    h.send(
        h.http
            .post(h.url(&format!("/_sandbox/seed{query}")))
            .json(body),
    )
    .await
}

async fn emails(h: &Harness) -> Vec<String> {
    let listed = h.inspect("/_sandbox/contacts").await;
    listed["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|c| c["properties"]["email"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn owner_ids(h: &Harness) -> Vec<String> {
    let listed = h.get("/crm/v3/owners?archived=false").await;
    listed.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| o["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn owner(id: &str, email: &str) -> Value {
    json!({
        "id": id, "email": email, "firstName": "Rae", "lastName": "Quinn", "userId": 77,
        "archived": false, "teams": [],
        "createdAt": "2024-01-15T09:00:00Z", "updatedAt": "2024-01-15T09:00:00Z"
    })
}

#[tokio::test]
async fn a_posted_seed_replaces_the_data_and_resets_return_to_it() {
    let h = Harness::start().await;
    h.post(
        UPSERT,
        &json!({"inputs": [{"id": "old@x.io", "idProperty": "email", "properties": {}}]}),
    )
    .await;
    let reply = seed(
        &h,
        "",
        &json!({
            "owners": [owner("201", "rae@x.io")],
            "contacts": [
                {"email": "ada@x.io", "firstname": "Ada", "hubspot_owner_id": "201"},
                {"email": "bob@x.io"}
            ],
            "companies": [{"domain": "x.io", "name": "X"}]
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"status": "ok", "mode": "replace", "owners": 1, "contacts": 2, "companies": 1, "slack_channels": 0})
    );
    assert_eq!(emails(&h).await, ["ada@x.io", "bob@x.io"]);
    assert_eq!(owner_ids(&h).await, ["201"]);
    assert_eq!(h.inspect("/_sandbox/companies").await["total"], 1);
    assert_eq!(
        h.stats().await.requests,
        1,
        "a seed resets the counters: only the owners read"
    );

    // Changes after the seed are undone by a reset, which returns to this seed.
    h.post(
        UPSERT,
        &json!({"inputs": [{"id": "cy@x.io", "idProperty": "email", "properties": {}}]}),
    )
    .await;
    assert_eq!(emails(&h).await.len(), 3);
    let reset = h.send(h.http.post(h.url("/_sandbox/reset"))).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert_eq!(emails(&h).await, ["ada@x.io", "bob@x.io"]);
    assert_eq!(owner_ids(&h).await, ["201"]);
    let ada = h.get("/crm/v3/objects/contacts/ada@x.io?idProperty=email&properties=hubspot_owner_id,firstname").await;
    assert_eq!(ada.body["properties"]["hubspot_owner_id"], "201");

    // Without owners, the demo's are kept, as with --seed.
    let reply = seed(&h, "?mode=replace", &json!({"contacts": []})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["owners"], 9);
    assert!(emails(&h).await.is_empty());
}

#[tokio::test]
async fn a_bad_seed_is_refused_naming_the_entry_and_changes_nothing() {
    let h = Harness::start().await;
    seed(&h, "", &json!({"contacts": [{"email": "keep@x.io"}]})).await;
    for (body, expected) in [
        (
            json!({"contacts": [{"email": "a@x.io"}, {"email": "broken"}]}),
            r#"contacts[1]: email "broken" is invalid"#,
        ),
        (
            json!({"contacts": [{"email": "a@x.io"}, {"email": "A@x.io"}]}),
            r#"contacts[1]: email "a@x.io" is already used by contacts[0]"#,
        ),
        (
            json!({"companies": [{"domain": "x.io"}, {"domain": 7}]}),
            "companies[1]: invalid type: integer `7`, expected a string",
        ),
        (
            json!({"owners": [owner("201", "a@x.io"), owner("201", "b@x.io")]}),
            r#"owners[1] (id "201"): id "201" is already used by owners[0] (id "201")"#,
        ),
        (
            json!({"contacts": [{"email": "a@x.io", "hubspot_owner_id": "555"}]}),
            r#"contacts[0]: hubspot_owner_id "555" is not a seeded owner"#,
        ),
    ] {
        let reply = seed(&h, "", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body["category"], "VALIDATION_ERROR");
        let message = reply.body["message"].as_str().expect("a message");
        assert!(message.starts_with(expected), "{message}");
    }
    let not_json = h
        .send(h.http.post(h.url("/_sandbox/seed")).body("owners = []"))
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let bad_mode = seed(&h, "?mode=merge", &json!({})).await;
    assert_eq!(bad_mode.status, StatusCode::BAD_REQUEST);

    assert_eq!(emails(&h).await, ["keep@x.io"]);
    h.sandbox.reset();
    assert_eq!(
        emails(&h).await,
        ["keep@x.io"],
        "the seed in force is unchanged"
    );
}

#[tokio::test]
async fn adding_keeps_the_data_and_extends_the_seed() {
    let h = Harness::start().await;
    seed(&h, "", &json!({"contacts": [{"email": "a@x.io"}]})).await;
    h.post(
        UPSERT,
        &json!({"inputs": [{"id": "live@x.io", "idProperty": "email", "properties": {}}]}),
    )
    .await;

    let added = seed(
        &h,
        "?mode=add",
        &json!({"contacts": [{"email": "b@x.io"}], "slack_channels": [{"id": "C1", "name": "leads"}]}),
    )
    .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    assert_eq!(added.body["mode"], "add");
    assert_eq!(added.body["contacts"], 2);
    assert_eq!(added.body["owners"], 9, "the demo owners stay, none added");
    assert_eq!(emails(&h).await, ["a@x.io", "live@x.io", "b@x.io"]);

    // A record created over the API holds its email too.
    let clash = seed(
        &h,
        "?mode=add",
        &json!({"contacts": [{"email": "LIVE@x.io"}]}),
    )
    .await;
    assert_eq!(clash.status, StatusCode::BAD_REQUEST);
    assert!(
        clash.body["message"].as_str().is_some_and(
            |m| m.starts_with(r#"contacts[0]: email "live@x.io" is already used by record "#)
        ),
        "{}",
        clash.body
    );
    let clash = seed(
        &h,
        "?mode=add",
        &json!({"owners": [owner("101", "x@x.io")]}),
    )
    .await;
    assert!(
        clash.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("already used by owners[0] of the current seed")),
        "{}",
        clash.body
    );

    h.sandbox.reset();
    assert_eq!(emails(&h).await, ["a@x.io", "b@x.io"]);
    let channel = h
        .send(
            h.http
                .post(h.url("/api/chat.postMessage"))
                .bearer_auth(&h.token)
                .json(&json!({"channel": "#random", "text": "hi"})),
        )
        .await;
    assert_eq!(
        channel.body["error"], "channel_not_found",
        "added channels are now the only ones"
    );
}

fn upsert_with(email: &str, property: &str) -> Value {
    json!({"inputs": [{"id": email, "idProperty": "email", "properties": {property: "1"}}]})
}

#[tokio::test]
async fn a_posted_seed_carries_custom_properties_and_a_salesforce_org() {
    let h = Harness::start().await;
    let reply = seed(
        &h,
        "",
        &json!({
            "contacts": [{"email": "ada@x.io", "warehouse_score": "7"}],
            "properties": {"contacts": ["warehouse_score"]},
            "salesforce": {"leads": [{"LastName": "Seeded", "Company": "Acme"}]}
        }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let leads = h.inspect("/_sandbox/salesforce/Lead").await;
    assert_eq!(leads["records"][0]["LastName"], "Seeded", "{leads}");

    let written = h
        .post(UPSERT, &upsert_with("b@x.io", "warehouse_score"))
        .await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    let refused = h.post(UPSERT, &upsert_with("c@x.io", "tier")).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.to_string().contains("PROPERTY_DOESNT_EXIST"));

    // Adding properties keeps the seeded ones; a Salesforce org can only be replaced.
    let added = seed(
        &h,
        "?mode=add",
        &json!({"properties": {"contacts": ["tier"]}}),
    )
    .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    let written = h.post(UPSERT, &upsert_with("c@x.io", "tier")).await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    let written = h
        .post(UPSERT, &upsert_with("d@x.io", "warehouse_score"))
        .await;
    assert_eq!(written.status, StatusCode::OK, "{}", written.body);
    let refused = seed(
        &h,
        "?mode=add",
        &json!({"salesforce": {"leads": [{"LastName": "More", "Company": "Acme"}]}}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // A broken org is refused before anything changes.
    let refused = seed(
        &h,
        "",
        &json!({"salesforce": {"leads": [{"LastName": "NoCompany"}]}}),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("salesforce.leads[0]: REQUIRED_FIELD_MISSING")),
        "{}",
        refused.body
    );
    h.sandbox.reset();
    let leads = h.inspect("/_sandbox/salesforce/Lead").await;
    assert_eq!(leads["records"][0]["LastName"], "Seeded", "{leads}");
}
