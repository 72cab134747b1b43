//! The Salesforce API over real HTTP: each test starts its own sandbox on a free port.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::super::tests::{Harness, Reply};
use super::super::{Faults, SandboxConfig, SandboxStats};
use super::ids;
use super::{SalesforceConfig, SalesforceSeed};

const V: &str = "/services/data/v62.0";

/// A sandbox and a client that speaks to its Salesforce API.
struct Sf {
    h: Harness,
}

/// A raw answer (CSV bodies are not JSON).
struct Raw {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

fn user_id(n: u64) -> String {
    ids::make(ids::USER, n)
}

/// The demo's users: 1 is the integration (API) user, 2..=9 reps 1..=8, 10 the inactive rep 9.
fn rep(n: u64) -> String {
    user_id(n + 1)
}

impl Sf {
    async fn start() -> Sf {
        Sf::with(SandboxConfig::ephemeral()).await
    }

    async fn with(config: SandboxConfig) -> Sf {
        Sf {
            h: Harness::with(config).await,
        }
    }

    async fn with_salesforce(salesforce: SalesforceConfig) -> Sf {
        Sf::with(SandboxConfig {
            salesforce,
            ..SandboxConfig::ephemeral()
        })
        .await
    }

    fn request(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.h
            .http
            .request(method, self.h.url(path))
            .bearer_auth(token)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut request = self.request(method, path, &self.h.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.h.send(request).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, &format!("{V}{path}"), None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::POST, &format!("{V}{path}"), Some(body))
            .await
    }

    async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.call(Method::PATCH, &format!("{V}{path}"), Some(body))
            .await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, &format!("{V}{path}"), None).await
    }

    async fn raw(&self, request: reqwest::RequestBuilder) -> Raw {
        let response = request.send().await.expect("answered");
        Raw {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.expect("a body"),
        }
    }

    async fn get_text(&self, path: &str) -> Raw {
        self.raw(self.request(Method::GET, &format!("{V}{path}"), &self.h.token))
            .await
    }

    /// Creates records (each `{"attributes": {"type": …}, …}`), all expected to succeed.
    async fn create(&self, records: Vec<Value>) -> Vec<String> {
        let reply = self
            .post("/composite/sobjects", &json!({"records": records}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply
            .body
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                assert_eq!(r["success"], true, "{r}");
                r["id"].as_str().expect("an id").to_owned()
            })
            .collect()
    }

    async fn query(&self, soql: &str) -> Reply {
        let request = self.request(
            Method::GET,
            &format!("{V}/query?{}", q(soql)),
            &self.h.token,
        );
        self.h.send(request).await
    }

    /// The `field` of each record a query returns, in order.
    async fn column(&self, soql: &str, field: &str) -> Vec<Value> {
        let reply = self.query(soql).await;
        assert_eq!(reply.status, StatusCode::OK, "{soql}: {}", reply.body);
        reply.body["records"]
            .as_array()
            .expect("records")
            .iter()
            .map(|r| r[field].clone())
            .collect()
    }

    async fn stored(&self, sobject: &str) -> Vec<Value> {
        let body = self
            .h
            .inspect(&format!("/_sandbox/salesforce/{sobject}"))
            .await;
        body["records"].as_array().cloned().unwrap_or_default()
    }

    async fn advance(&self, secs: u64) {
        let reply = self
            .h
            .send(
                self.h
                    .http
                    .post(self.h.url("/_sandbox/salesforce/clock"))
                    .json(&json!({"advance_secs": secs})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }

    async fn stats(&self) -> SandboxStats {
        self.h.stats().await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Reply {
        self.h
            .send(
                self.h
                    .http
                    .post(self.h.url("/services/oauth2/token"))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(
                        form_urlencoded::Serializer::new(String::new())
                            .extend_pairs(form)
                            .finish(),
                    ),
            )
            .await
    }
}

/// `q=<soql>`, URL-encoded.
fn q(soql: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("q", soql)
        .finish()
}

fn lead(last: &str, company: &str) -> Value {
    json!({"attributes": {"type": "Lead"}, "LastName": last, "Company": company})
}

fn error_codes(results: &Value) -> Vec<String> {
    results
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            r["errors"].as_array().and_then(|e| e.first()).map_or_else(
                || "ok".to_owned(),
                |e| e["statusCode"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn limit_info(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("sforce-limit-info")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn jwt(claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(&json!({"alg": "RS256"})),
        part(claims),
        URL_SAFE_NO_PAD.encode(b"unchecked signature")
    )
}

#[tokio::test]
async fn requests_need_a_bearer_token() {
    let sf = Sf::start().await;
    let reply =
        sf.h.send(sf.h.http.get(sf.h.url(&format!("{V}/limits"))))
            .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    let empty =
        sf.h.send(sf.request(Method::GET, &format!("{V}/limits"), ""))
            .await;
    assert_eq!(empty.status, StatusCode::UNAUTHORIZED);
    // An unknown route is answered only after the token.
    let unknown =
        sf.h.send(sf.h.http.get(sf.h.url(&format!("{V}/nothing/here"))))
            .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let stats = sf.stats().await;
    assert_eq!(stats.count("GET /services/data/{version}/limits", 401), 2);
    assert_eq!(
        stats.count("GET /services/data/v62.0/nothing/here", 401),
        1,
        "an unknown route is counted as sent: {:?}",
        stats.by_endpoint
    );
}

#[tokio::test]
async fn client_credentials_issue_expiring_sessions() {
    let sf = Sf::with_salesforce(SalesforceConfig {
        client_id: Some("app-key".into()),
        client_secret: Some("app-secret".into()),
        token_lifetime_secs: 60,
        ..SalesforceConfig::default()
    })
    .await;
    let granted = sf
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "app-key"),
            ("client_secret", "app-secret"),
        ])
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    let body = &granted.body;
    let token = body["access_token"].as_str().expect("a token").to_owned();
    let org = ids::make(ids::ORG, 1);
    assert!(token.starts_with(&format!("{}!", &org[..15])), "{token}");
    assert_eq!(body["instance_url"], sf.h.sandbox.base_url());
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "api");
    assert_eq!(
        body["id"],
        format!("{}/id/{org}/{}", sf.h.sandbox.base_url(), user_id(1))
    );
    assert!(
        body["issued_at"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|ms| ms > 1_600_000_000_000)
    );
    assert!(body["signature"].as_str().is_some_and(|s| s.len() == 44));

    let limits = |token: String| {
        let sf = &sf;
        async move {
            sf.h.send(sf.request(Method::GET, &format!("{V}/limits"), &token))
                .await
        }
    };
    assert_eq!(limits(token.clone()).await.status, StatusCode::OK);
    sf.advance(59).await;
    assert_eq!(limits(token.clone()).await.status, StatusCode::OK);
    sf.advance(1).await;
    let expired = limits(token.clone()).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.body[0]["errorCode"], "INVALID_SESSION_ID");
    // A token shaped like ours but never issued.
    let forged = format!("{}!AQforged", &org[..15]);
    assert_eq!(limits(forged).await.status, StatusCode::UNAUTHORIZED);
    // Any other token is accepted when none is configured.
    assert_eq!(limits("anything".into()).await.status, StatusCode::OK);

    // Bad clients and grants.
    for (form, error) in [
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "app-key"),
                ("client_secret", "nope"),
            ],
            "invalid_client",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "other"),
                ("client_secret", "app-secret"),
            ],
            "invalid_client_id",
        ),
        (vec![("grant_type", "password")], "unsupported_grant_type"),
        (vec![], "unsupported_grant_type"),
    ] {
        let reply = sf.token(&form).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(reply.body["error"], error, "{form:?}: {}", reply.body);
        assert!(reply.body["error_description"].is_string());
    }
    let stats = sf.stats().await;
    assert_eq!(stats.count("POST /services/oauth2/token", 200), 1);
    assert_eq!(stats.count("POST /services/oauth2/token", 400), 4);
}

#[tokio::test]
async fn jwt_bearer_grants_run_as_the_named_user() {
    let sf = Sf::with_salesforce(SalesforceConfig {
        client_id: Some("app-key".into()),
        ..SalesforceConfig::default()
    })
    .await;
    let exp = chrono::Utc::now().timestamp() + 300;
    let claims = |sub: &str, aud: &str, exp: i64| json!({"iss": "app-key", "sub": sub, "aud": aud, "exp": exp});
    let grant = |assertion: String| {
        let sf = &sf;
        async move {
            sf.token(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
            .await
        }
    };
    let granted = grant(jwt(&claims(
        "rep2@demo.handoff.dev",
        "https://login.salesforce.com",
        exp,
    )))
    .await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
    let token = granted.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert!(
        granted.body["id"]
            .as_str()
            .is_some_and(|id| id.ends_with(&rep(2)))
    );

    // Records it creates without an owner belong to that user.
    let created =
        sf.h.send(
            sf.request(Method::POST, &format!("{V}/sobjects/Lead"), &token)
                .json(&json!({"LastName": "Jay", "Company": "Acme"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let stored = sf.stored("Lead").await;
    assert_eq!(stored[0]["OwnerId"], rep(2));
    assert_eq!(stored[0]["CreatedById"], rep(2));

    for (assertion, description) in [
        ("not.a-jwt".to_owned(), "invalid assertion"),
        ("only.two".to_owned(), "invalid assertion"),
        (
            jwt(&claims(
                "rep2@demo.handoff.dev",
                "https://login.salesforce.com",
                exp - 600,
            )),
            "invalid assertion",
        ),
        (
            jwt(&json!({"iss": "app-key", "aud": "https://login.salesforce.com", "exp": exp})),
            "invalid assertion",
        ),
        (
            jwt(&claims(
                "rep2@demo.handoff.dev",
                "https://evil.example",
                exp,
            )),
            "audience is invalid",
        ),
        (
            jwt(&claims(
                "rep9@demo.handoff.dev",
                "https://login.salesforce.com",
                exp,
            )),
            "inactive user",
        ),
    ] {
        let reply = grant(assertion.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{assertion}");
        assert_eq!(reply.body["error"], "invalid_grant", "{assertion}");
        assert_eq!(reply.body["error_description"], description, "{assertion}");
    }
    let wrong_app = grant(jwt(&json!({
        "iss": "other", "sub": "x", "aud": "https://login.salesforce.com", "exp": exp
    })))
    .await;
    assert_eq!(wrong_app.body["error"], "invalid_client_id");
}

#[tokio::test]
async fn a_configured_token_still_rules_other_tokens() {
    let sf = Sf::with(SandboxConfig {
        token: Some("the-token".into()),
        ..SandboxConfig::ephemeral()
    })
    .await;
    let limits = |token: &str| sf.request(Method::GET, &format!("{V}/limits"), token);
    assert_eq!(sf.h.send(limits("the-token")).await.status, StatusCode::OK);
    assert_eq!(
        sf.h.send(limits("another")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Issued sessions are accepted beside it.
    let granted = sf
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "k"),
            ("client_secret", "s"),
        ])
        .await;
    let token = granted.body["access_token"].as_str().expect("token");
    assert_eq!(sf.h.send(limits(token)).await.status, StatusCode::OK);
    // A reset forgets sessions.
    sf.h.sandbox.reset();
    assert_eq!(
        sf.h.send(limits(token)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn collections_create_in_request_order_with_per_record_errors() {
    let sf = Sf::start().await;
    let reply = sf
        .post(
            "/composite/sobjects",
            &json!({"allOrNone": false, "records": [
                lead("Lovelace", "Analytical"),
                {"attributes": {"type": "Lead"}, "LastName": "NoCompany"},
                {"attributes": {"type": "Contact"}, "LastName": "Hopper", "Email": "grace@navy.example"},
                {"attributes": {"type": "Task"}, "Subject": "Call", "Status": "Sleeping"},
                {"attributes": {"type": "Lead"}, "LastName": "Bad", "Company": "X", "Email": "not-an-email"},
                {"attributes": {"type": "Account"}, "Name": "Acme"},
                {"attributes": {"type": "Lead"}, "LastName": "Named", "Company": "X", "Name": "Nope"},
                {"attributes": {"type": "Lead"}, "Id": ids::make(ids::LEAD, 77), "LastName": "Id", "Company": "X"},
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        error_codes(&reply.body),
        [
            "ok",
            "REQUIRED_FIELD_MISSING",
            "ok",
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "INVALID_EMAIL_ADDRESS",
            "ok",
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            "INVALID_FIELD",
        ]
    );
    let results = reply.body.as_array().expect("results");
    assert!(
        results[0]["id"]
            .as_str()
            .is_some_and(|id| id.len() == 18 && id.starts_with("00Q"))
    );
    assert!(
        results[2]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("003"))
    );
    assert!(
        results[5]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("001"))
    );
    assert!(
        results[1].get("id").is_none(),
        "a failed create names no id"
    );
    assert_eq!(
        results[1]["errors"][0],
        json!({"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Company]", "fields": ["Company"]})
    );
    assert_eq!(
        results[4]["errors"][0]["message"],
        "Email: invalid email address: not-an-email"
    );
    assert_eq!(results[3]["errors"][0]["fields"], json!(["Status"]));
    assert!(results[0].get("created").is_none());

    let leads = sf.stored("Lead").await;
    assert_eq!(leads.len(), 1);
    let stored = &leads[0];
    assert_eq!(stored["Id"], results[0]["id"]);
    assert_eq!(stored["Name"], "Lovelace");
    assert_eq!(stored["Status"], "Open - Not Contacted");
    assert_eq!(stored["OwnerId"], user_id(1), "the API user owns it");
    assert!(
        stored["CreatedDate"]
            .as_str()
            .is_some_and(|d| d.ends_with(".000+0000") || d.ends_with("+0000"))
    );
    assert_eq!(stored["CreatedDate"], stored["LastModifiedDate"]);
    assert_eq!(sf.stats().await.records_written, 3);
}

#[tokio::test]
async fn unreadable_bodies_fail_the_whole_request() {
    let sf = Sf::start().await;
    let unknown_field = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [lead("A", "B"), {"attributes": {"type": "Lead"}, "LastName": "C", "Company": "D", "Colour": "red"}]}),
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        unknown_field.body,
        json!([{"message": "No such column 'Colour' on sobject of type Lead", "errorCode": "INVALID_FIELD"}])
    );
    let unknown_type = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [{"attributes": {"type": "Opportunity"}, "Name": "x"}]}),
        )
        .await;
    assert_eq!(unknown_type.body[0]["errorCode"], "INVALID_TYPE");
    let no_type = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [{"LastName": "x"}]}),
        )
        .await;
    assert_eq!(no_type.body[0]["errorCode"], "INVALID_TYPE");
    let wrong_type = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [{"attributes": {"type": "Lead"}, "LastName": "x", "Company": "y", "NumberOfEmployees": "many"}]}),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_type.body[0]["errorCode"], "JSON_PARSER_ERROR");
    let not_json =
        sf.h.send(
            sf.request(
                Method::POST,
                &format!("{V}/composite/sobjects"),
                &sf.h.token,
            )
            .body("{"),
        )
        .await;
    assert_eq!(not_json.body[0]["errorCode"], "JSON_PARSER_ERROR");
    assert!(sf.stored("Lead").await.is_empty(), "nothing was written");
    // Custom fields are accepted on any object.
    sf.create(vec![
        json!({"attributes": {"type": "Lead"}, "LastName": "C", "Company": "D", "Score__c": 91}),
    ])
    .await;
    assert_eq!(sf.stored("Lead").await[0]["Score__c"], 91);
}

#[tokio::test]
async fn owners_must_be_active_users() {
    let sf = Sf::start().await;
    let owned = |owner: Value| json!({"attributes": {"type": "Lead"}, "LastName": "L", "Company": "C", "OwnerId": owner});
    let lead_id = sf.create(vec![lead("Existing", "X")]).await.remove(0);
    let reply = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [
                owned(json!(rep(3))),
                owned(json!(user_id(500))),
                owned(json!("not-an-id")),
                owned(json!(lead_id)),
                owned(json!(rep(9))),
                owned(json!(rep(3)[..15].to_lowercase())),
                owned(json!(rep(3).to_lowercase())),
            ]}),
        )
        .await;
    assert_eq!(
        error_codes(&reply.body),
        [
            "ok",
            "INVALID_CROSS_REFERENCE_KEY",
            "MALFORMED_ID",
            "FIELD_INTEGRITY_EXCEPTION",
            "INACTIVE_OWNER_OR_USER",
            "INVALID_CROSS_REFERENCE_KEY",
            "ok",
        ]
    );
    assert_eq!(reply.body[1]["errors"][0]["fields"], json!(["OwnerId"]));
    assert_eq!(
        reply.body[2]["errors"][0]["message"],
        "Owner ID: id value of incorrect type: not-an-id"
    );
    // An 18-character id in any case names the same user.
    let stored = sf.stored("Lead").await;
    assert_eq!(stored.last().expect("a lead")["OwnerId"], rep(3));
}

#[tokio::test]
async fn all_or_none_rolls_back_every_record() {
    let sf = Sf::start().await;
    let existing = sf.create(vec![lead("Keep", "Same")]).await.remove(0);
    let reply = sf
        .post(
            "/composite/sobjects",
            &json!({"allOrNone": true, "records": [
                lead("First", "A"),
                {"attributes": {"type": "Lead"}, "LastName": "Broken"},
                lead("Third", "C"),
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let results = reply.body.as_array().expect("results");
    assert!(results.iter().all(|r| r["success"] == false));
    assert_eq!(
        error_codes(&reply.body),
        [
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "REQUIRED_FIELD_MISSING",
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        ]
    );
    assert_eq!(
        results[0]["errors"][0]["message"],
        "Record rolled back because not all records were valid and the request was using AllOrNone header"
    );
    assert!(results[0].get("id").is_none());
    assert_eq!(sf.stored("Lead").await.len(), 1);

    // Updates roll back too, and name their records.
    let update = sf
        .patch(
            "/composite/sobjects",
            &json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Lead"}, "id": existing, "Company": "Changed"},
                {"attributes": {"type": "Lead"}, "id": existing, "LastName": null},
            ]}),
        )
        .await;
    assert_eq!(
        error_codes(&update.body),
        [
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "REQUIRED_FIELD_MISSING"
        ]
    );
    assert_eq!(update.body[0]["id"], existing.as_str());
    assert_eq!(sf.stored("Lead").await[0]["Company"], "Same");
    assert_eq!(sf.stats().await.records_written, 1);

    // The same batch without allOrNone keeps what succeeded.
    let partial = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [lead("First", "A"), {"attributes": {"type": "Lead"}, "LastName": "Broken"}]}),
        )
        .await;
    assert_eq!(error_codes(&partial.body), ["ok", "REQUIRED_FIELD_MISSING"]);
    assert_eq!(sf.stored("Lead").await.len(), 2);
}

#[tokio::test]
async fn updates_and_upserts_answer_in_request_order() {
    let sf = Sf::start().await;
    let ids = sf
        .create(vec![
            json!({"attributes": {"type": "Lead"}, "LastName": "Old", "Company": "A", "External_Id__c": "w-2"}),
            lead("Gone", "B"),
        ])
        .await;
    assert_eq!(
        sf.delete(&format!("/sobjects/Lead/{}", ids[1]))
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    let upsert = sf
        .patch(
            "/composite/sobjects/Lead/External_Id__c",
            &json!({"records": [
                {"attributes": {"type": "Lead"}, "External_Id__c": "w-1", "LastName": "New", "Company": "N", "OwnerId": rep(1)},
                {"attributes": {"type": "Lead"}, "External_Id__c": "W-2", "OwnerId": rep(2)},
                {"attributes": {"type": "Lead"}, "External_Id__c": "w-3", "LastName": "NoCompany"},
                {"attributes": {"type": "Lead"}, "LastName": "NoKey", "Company": "K"},
                {"attributes": {"type": "Lead"}, "External_Id__c": "w-4", "LastName": "Also", "Company": "A"},
            ]}),
        )
        .await;
    assert_eq!(upsert.status, StatusCode::OK, "{}", upsert.body);
    let results = upsert.body.as_array().expect("results");
    let created: Vec<&Value> = results.iter().map(|r| &r["created"]).collect();
    assert_eq!(
        created,
        [
            &json!(true),
            &json!(false),
            &json!(false),
            &json!(false),
            &json!(true)
        ]
    );
    assert_eq!(
        error_codes(&upsert.body),
        [
            "ok",
            "ok",
            "REQUIRED_FIELD_MISSING",
            "MISSING_ARGUMENT",
            "ok"
        ]
    );
    assert_eq!(results[1]["id"], ids[0].as_str(), "matched without case");
    let new_id = results[0]["id"].as_str().expect("id");
    assert!(new_id > results[1]["id"].as_str().expect("id"));
    assert!(
        results[4]["id"].as_str().expect("id") > new_id,
        "created in request order"
    );

    let update = sf
        .patch(
            "/composite/sobjects",
            &json!({"records": [
                {"attributes": {"type": "Lead"}, "id": new_id, "Rating": "Hot"},
                {"attributes": {"type": "Lead"}, "Rating": "Warm"},
                {"attributes": {"type": "Lead"}, "id": ids[1], "Rating": "Cold"},
                {"attributes": {"type": "Lead"}, "id": ids::make(ids::LEAD, 9999), "Rating": "Cold"},
                {"attributes": {"type": "Lead"}, "id": rep(1), "Rating": "Cold"},
                {"attributes": {"type": "Lead"}, "id": ids[0], "Rating": "Warm"},
            ]}),
        )
        .await;
    assert_eq!(
        error_codes(&update.body),
        [
            "ok",
            "MISSING_ARGUMENT",
            "ENTITY_IS_DELETED",
            "INVALID_CROSS_REFERENCE_KEY",
            "MALFORMED_ID",
            "ok"
        ]
    );
    assert_eq!(update.body[2]["id"], ids[1].as_str());
    assert_eq!(update.body[0]["id"], new_id);
    let ratings = sf
        .column("SELECT Rating FROM Lead ORDER BY External_Id__c", "Rating")
        .await;
    assert_eq!(ratings, [json!("Hot"), json!("Warm"), json!(null)]);

    // Email is no external id; an unknown field neither.
    for field in ["Email", "Nope__c"] {
        let refused = sf
            .patch(
                &format!("/composite/sobjects/Lead/{field}"),
                &json!({"records": []}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND);
        assert_eq!(
            refused.body[0]["message"],
            format!("Provided external ID field does not exist or is not accessible: {field}")
        );
    }
}

#[tokio::test]
async fn more_than_200_records_are_refused() {
    let sf = Sf::start().await;
    let records: Vec<Value> = (0..201).map(|n| lead(&format!("L{n}"), "C")).collect();
    let expected = json!([{
        "message": "record limit reached. cannot submit more than 200 records into this call",
        "errorCode": "EXCEEDED_ID_LIMIT",
    }]);
    let reply = sf
        .post("/composite/sobjects", &json!({"records": records}))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, expected);
    let upsert = sf
        .patch("/composite/sobjects/Lead/Id", &json!({"records": records}))
        .await;
    assert_eq!(upsert.body, expected);
    let ids: Vec<String> = (1..=201).map(|n| ids::make(ids::LEAD, n)).collect();
    let delete = sf
        .delete(&format!("/composite/sobjects?ids={}", ids.join(",")))
        .await;
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
    assert_eq!(delete.body, expected);
    assert!(sf.stored("Lead").await.is_empty());
    // Exactly 200 is fine.
    let reply = sf
        .post("/composite/sobjects", &json!({"records": records[..200]}))
        .await;
    assert_eq!(reply.body.as_array().map(Vec::len), Some(200));
}

#[tokio::test]
async fn collections_read_and_delete() {
    let sf = Sf::start().await;
    let ids = sf
        .create(vec![
            json!({"attributes": {"type": "Lead"}, "LastName": "A", "Company": "X", "Email": "a@x.io"}),
            lead("B", "Y"),
        ])
        .await;
    let missing = ids::make(ids::LEAD, 999);
    let read = sf
        .get(&format!(
            "/composite/sobjects/Lead?ids={},{missing},{}&fields=Id,Email,Company",
            ids[1], ids[0]
        ))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body[0]["Company"], "Y");
    assert_eq!(read.body[0]["Email"], Value::Null);
    assert_eq!(read.body[1], Value::Null);
    assert_eq!(read.body[2]["Email"], "a@x.io");
    assert_eq!(read.body[2]["attributes"]["type"], "Lead");
    assert_eq!(
        read.body[2]["attributes"]["url"],
        format!("{V}/sobjects/Lead/{}", ids[0])
    );

    let deleted = sf
        .delete(&format!(
            "/composite/sobjects?ids={},{missing},bogus",
            ids[0]
        ))
        .await;
    assert_eq!(
        error_codes(&deleted.body),
        ["ok", "ENTITY_IS_DELETED", "MALFORMED_ID"]
    );
    assert_eq!(deleted.body[0]["id"], ids[0].as_str());
    let again = sf
        .delete(&format!("/composite/sobjects?ids={}", ids[0]))
        .await;
    assert_eq!(error_codes(&again.body), ["ENTITY_IS_DELETED"]);

    assert_eq!(
        sf.column("SELECT Id FROM Lead", "Id").await,
        [json!(ids[1])]
    );
    let all =
        sf.h.send(sf.request(
            Method::GET,
            &format!("{V}/queryAll?{}", q("SELECT Id, IsDeleted FROM Lead")),
            &sf.h.token,
        ))
        .await;
    assert_eq!(all.body["totalSize"], 2);
    assert_eq!(all.body["records"][0]["IsDeleted"], true);
    let bin = sf.h.inspect("/_sandbox/salesforce/Lead?deleted=true").await;
    assert_eq!(bin["total"], 1);
}

#[tokio::test]
async fn single_record_resources() {
    let sf = Sf::start().await;
    let created = sf
        .post(
            "/sobjects/lead",
            &json!({"LastName": "Solo", "Company": "One"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["success"], true);
    assert_eq!(created.body["errors"], json!([]));
    let id = created.body["id"].as_str().expect("id").to_owned();

    let read = sf.get(&format!("/sobjects/Lead/{id}")).await;
    assert_eq!(read.body["LastName"], "Solo");
    assert_eq!(read.body["Email"], Value::Null, "every field is listed");
    let some = sf.get(&format!("/sobjects/Lead/{id}?fields=Company")).await;
    assert_eq!(some.body.as_object().map(|o| o.len()), Some(2));

    let changed = sf
        .patch(&format!("/sobjects/Lead/{id}"), &json!({"Company": "Two"}))
        .await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    let invalid = sf
        .patch(&format!("/sobjects/Lead/{id}"), &json!({"Company": null}))
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        invalid.body,
        json!([{"message": "Required fields are missing: [Company]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["Company"]}])
    );
    let refused = sf.post("/sobjects/Lead", &json!({"LastName": "x"})).await;
    assert_eq!(refused.body[0]["errorCode"], "REQUIRED_FIELD_MISSING");

    let upserted = sf
        .patch(
            "/sobjects/Lead/External_Id__c/k-1",
            &json!({"LastName": "Ext", "Company": "E"}),
        )
        .await;
    assert_eq!(upserted.status, StatusCode::CREATED);
    assert_eq!(upserted.body["created"], true);
    let again = sf
        .patch(
            "/sobjects/Lead/External_Id__c/k-1",
            &json!({"Rating": "Hot"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["id"], upserted.body["id"]);

    assert_eq!(
        sf.delete(&format!("/sobjects/Lead/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        sf.get(&format!("/sobjects/Lead/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let twice = sf.delete(&format!("/sobjects/Lead/{id}")).await;
    assert_eq!(twice.status, StatusCode::NOT_FOUND);
    assert_eq!(twice.body[0]["errorCode"], "ENTITY_IS_DELETED");
    assert_eq!(
        sf.get("/sobjects/Opportunity/x").await.status,
        StatusCode::NOT_FOUND
    );
    // Users come from the seed only.
    let user = sf
        .patch(
            &format!("/sobjects/User/{}", rep(1)),
            &json!({"Title": "Boss"}),
        )
        .await;
    assert_eq!(user.body[0]["errorCode"], "INSUFFICIENT_ACCESS_OR_READONLY");
}

/// Leads for the query tests: (last name, company, email, rating, employees, converted owner).
async fn query_fixture(sf: &Sf) -> Vec<String> {
    sf.create(vec![
        json!({"attributes": {"type": "Lead"}, "LastName": "Ames", "Company": "Acme Corp", "Email": "ames@acme.example", "Rating": "Hot", "NumberOfEmployees": 50, "OwnerId": rep(1)}),
        json!({"attributes": {"type": "Lead"}, "LastName": "Baker", "Company": "Beta", "Email": "baker@beta.example", "Rating": "Warm", "NumberOfEmployees": 500, "OwnerId": rep(1)}),
        json!({"attributes": {"type": "Lead"}, "LastName": "Cole", "Company": "acme labs", "Rating": "Cold", "NumberOfEmployees": 5, "OwnerId": rep(2)}),
        json!({"attributes": {"type": "Lead"}, "LastName": "Diaz", "Company": "Delta", "OwnerId": rep(3)}),
    ])
    .await
}

#[tokio::test]
async fn soql_filters() {
    let sf = Sf::start().await;
    let ids = query_fixture(&sf).await;
    let names = |soql: &'static str| {
        let sf = &sf;
        async move {
            sf.column(soql, "LastName")
                .await
                .into_iter()
                .map(|v| v.as_str().unwrap_or("?").to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names("SELECT LastName FROM Lead").await,
        ["Ames", "Baker", "Cole", "Diaz"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Rating = 'hot'").await,
        ["Ames"],
        "= ignores case"
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Rating != 'Hot'").await,
        ["Baker", "Cole", "Diaz"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Rating <> 'Hot' AND Rating != null").await,
        ["Baker", "Cole"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Rating = null").await,
        ["Diaz"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Rating IN ('Warm', 'Cold')").await,
        ["Baker", "Cole"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Rating NOT IN ('Warm', 'Cold')").await,
        ["Ames", "Diaz"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE Company LIKE 'acme%'").await,
        ["Ames", "Cole"]
    );
    assert_eq!(
        names("SELECT LastName FROM Lead WHERE NumberOfEmployees > 5 AND NumberOfEmployees <= 500")
            .await,
        ["Ames", "Baker"]
    );
    assert_eq!(names("select lastname from lead where (Rating = 'Hot' OR Rating = 'Cold') AND NOT Company = 'Beta' ORDER BY LastName DESC").await, ["Cole", "Ames"]);
    assert_eq!(names("SELECT LastName FROM Lead WHERE IsConverted = false ORDER BY NumberOfEmployees DESC NULLS LAST LIMIT 2").await, ["Baker", "Ames"]);
    assert_eq!(
        names("SELECT LastName FROM Lead ORDER BY NumberOfEmployees LIMIT 2").await,
        ["Diaz", "Cole"],
        "nulls first ascending"
    );
    assert_eq!(
        names("SELECT LastName FROM Lead ORDER BY LastName LIMIT 2 OFFSET 1").await,
        ["Baker", "Cole"]
    );
    assert_eq!(names("SELECT LastName FROM Lead WHERE CreatedDate = TODAY AND CreatedDate > 2020-01-01T00:00:00Z").await.len(), 4);
    assert!(
        names("SELECT LastName FROM Lead WHERE CreatedDate < LAST_N_DAYS:3")
            .await
            .is_empty()
    );

    let by_id = format!("SELECT Id, Email FROM Lead WHERE Id = '{}'", &ids[1][..15]);
    let reply = sf.query(&by_id).await;
    assert_eq!(reply.body["totalSize"], 1, "{}", reply.body);
    let record = &reply.body["records"][0];
    assert_eq!(record["Id"], ids[1].as_str());
    assert_eq!(record["Email"], "baker@beta.example");
    assert_eq!(
        record["attributes"],
        json!({"type": "Lead", "url": format!("{V}/sobjects/Lead/{}", ids[1])})
    );
    assert_eq!(reply.body["done"], true);
    assert!(reply.body.get("nextRecordsUrl").is_none());

    let owners = sf
        .column(
            &format!(
                "SELECT Id FROM Lead WHERE OwnerId IN ('{}', '{}')",
                rep(2),
                rep(3)
            ),
            "Id",
        )
        .await;
    assert_eq!(owners, [json!(ids[2]), json!(ids[3])]);
    let users = sf
        .query("SELECT Id, Email, IsActive FROM User WHERE IsActive = true AND Email LIKE 'rep%'")
        .await;
    assert_eq!(users.body["totalSize"], 8);
    assert_eq!(users.body["records"][0]["Email"], "rep1@demo.handoff.dev");
    assert_eq!(users.body["records"][0]["Id"], rep(1));
}

#[tokio::test]
async fn soql_counts_and_groups() {
    let sf = Sf::start().await;
    query_fixture(&sf).await;
    let count = sf
        .query("SELECT COUNT() FROM Lead WHERE OwnerId != null")
        .await;
    assert_eq!(
        count.body,
        json!({"totalSize": 4, "done": true, "records": []})
    );
    let limited = sf.query("SELECT COUNT() FROM Lead LIMIT 3").await;
    assert_eq!(limited.body["totalSize"], 3);
    let filtered = sf
        .query("SELECT COUNT() FROM Lead WHERE Rating = 'Nope'")
        .await;
    assert_eq!(filtered.body["totalSize"], 0);

    let grouped = sf
        .query("SELECT OwnerId, COUNT(Id) FROM Lead GROUP BY OwnerId ORDER BY OwnerId")
        .await;
    assert_eq!(grouped.status, StatusCode::OK, "{}", grouped.body);
    assert_eq!(
        grouped.body,
        json!({"totalSize": 3, "done": true, "records": [
            {"attributes": {"type": "AggregateResult"}, "OwnerId": rep(1), "expr0": 2},
            {"attributes": {"type": "AggregateResult"}, "OwnerId": rep(2), "expr0": 1},
            {"attributes": {"type": "AggregateResult"}, "OwnerId": rep(3), "expr0": 1},
        ]})
    );
    let aliased = sf
        .query("SELECT Rating, COUNT(Email) emails, COUNT(Id) FROM Lead WHERE OwnerId = '00000000000000' OR NumberOfEmployees > 0 GROUP BY Rating ORDER BY Rating")
        .await;
    assert_eq!(
        aliased.status,
        StatusCode::BAD_REQUEST,
        "an invalid id literal"
    );
    assert_eq!(
        aliased.body[0]["errorCode"],
        "INVALID_QUERY_FILTER_OPERATOR"
    );
    let aliased = sf
        .query("SELECT Rating, COUNT(Email) emails, COUNT(Id) FROM Lead GROUP BY Rating ORDER BY Rating NULLS LAST")
        .await;
    let rows = aliased.body["records"].as_array().expect("rows");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["Rating"], "Cold");
    assert_eq!(rows[0]["emails"], 0);
    assert_eq!(
        rows[0]["expr0"], 1,
        "exprN counts only aggregates without an alias"
    );
    assert_eq!(rows[2]["emails"], 1);
    assert_eq!(rows[3]["Rating"], Value::Null);
    let total = sf.query("SELECT COUNT(Id) FROM Lead").await;
    assert_eq!(total.body["records"][0]["expr0"], 4);
    assert_eq!(total.body["totalSize"], 1);

    for soql in [
        "SELECT COUNT() FROM Lead GROUP BY OwnerId",
        "SELECT Id, COUNT() FROM Lead",
        "SELECT Email, COUNT(Id) FROM Lead GROUP BY OwnerId",
        "SELECT COUNT() FROM Lead ORDER BY Email",
    ] {
        let reply = sf.query(soql).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{soql}");
        assert_eq!(reply.body[0]["errorCode"], "MALFORMED_QUERY", "{soql}");
    }
}

#[tokio::test]
async fn malformed_soql_is_answered_like_salesforce() {
    let sf = Sf::start().await;
    let reply = sf.query("SELECT Id FRM Lead").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!([{
            "message": "\nSELECT Id FRM Lead\n          ^\nERROR at Row:1:Column:11\nunexpected token: 'FRM'",
            "errorCode": "MALFORMED_QUERY",
        }])
    );
    for (soql, code, needle) in [
        (
            "SELECT Id, Colour FROM Lead",
            "INVALID_FIELD",
            "No such column 'Colour' on entity 'Lead'",
        ),
        (
            "SELECT Id FROM Opportunity",
            "INVALID_TYPE",
            "sObject type 'Opportunity' is not supported",
        ),
        (
            "SELECT Owner.Email FROM Lead",
            "INVALID_FIELD",
            "Didn't understand relationship 'Owner'",
        ),
        (
            "SELECT Id FROM Lead WHERE IsConverted = 'false'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type boolean",
        ),
        (
            "SELECT Id FROM Lead WHERE Email = 5",
            "INVALID_QUERY_FILTER_OPERATOR",
            "must be of type string",
        ),
        (
            "SELECT Id FROM Lead WHERE Id = 'abc'",
            "INVALID_QUERY_FILTER_OPERATOR",
            "invalid ID field: abc",
        ),
        (
            "SELECT Id FROM Lead WHERE A = 1 AND B = 2 OR C = 3",
            "MALFORMED_QUERY",
            "unexpected token: 'OR'",
        ),
        (
            "SELECT Id FROM Lead WHERE Email = 'x",
            "MALFORMED_QUERY",
            "ERROR at Row:1:Column:35",
        ),
        (
            "SELECT Id, Id FROM Lead",
            "MALFORMED_QUERY",
            "duplicate field selected: Id",
        ),
        ("", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
    ] {
        let reply = sf.query(soql).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{soql}");
        assert_eq!(reply.body[0]["errorCode"], code, "{soql}: {}", reply.body);
        let message = reply.body[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{soql}: {message}");
    }
    let no_q = sf.get("/query").await;
    assert_eq!(no_q.body[0]["errorCode"], "MALFORMED_QUERY");
    let locator = sf.get("/query/01gXXXXXXXXXXXXXXX-2000").await;
    assert_eq!(locator.body[0]["errorCode"], "INVALID_QUERY_LOCATOR");
}

#[tokio::test]
async fn queries_page_through_next_records_url() {
    let sf = Sf::start().await;
    for chunk in 0..3 {
        let records: Vec<Value> = (0..150)
            .map(|n| lead(&format!("L{:03}", chunk * 150 + n), "C"))
            .collect();
        sf.create(records).await;
    }
    let first =
        sf.h.send(
            sf.request(
                Method::GET,
                &format!(
                    "{V}/query?{}",
                    q("SELECT LastName FROM Lead ORDER BY LastName")
                ),
                &sf.h.token,
            )
            .header("Sforce-Query-Options", "batchSize=200"),
        )
        .await;
    assert_eq!(first.body["totalSize"], 450);
    assert_eq!(first.body["done"], false);
    assert_eq!(first.body["records"].as_array().map(Vec::len), Some(200));
    let next = first.body["nextRecordsUrl"]
        .as_str()
        .expect("a next page")
        .to_owned();
    assert!(
        next.starts_with(&format!("{V}/query/01g")) && next.ends_with("-200"),
        "{next}"
    );
    let second = sf.call(Method::GET, &next, None).await;
    assert_eq!(second.body["records"][0]["LastName"], "L200");
    assert_eq!(second.body["done"], false);
    let last_url = second.body["nextRecordsUrl"]
        .as_str()
        .expect("a last page")
        .to_owned();
    assert!(last_url.ends_with("-400"));
    let last = sf.call(Method::GET, &last_url, None).await;
    assert_eq!(last.body["records"].as_array().map(Vec::len), Some(50));
    assert_eq!(last.body["records"][49]["LastName"], "L449");
    assert_eq!(last.body["done"], true);
    assert!(last.body.get("nextRecordsUrl").is_none());
    // The default batch is 2,000: 450 records come in one page.
    let all = sf.query("SELECT Id FROM Lead").await;
    assert_eq!(all.body["done"], true);
    assert_eq!(all.body["records"].as_array().map(Vec::len), Some(450));
}

/// Creates a job, uploads `csv`, closes it; returns the job id.
async fn run_job(sf: &Sf, job: Value, csv: &str) -> String {
    let created = sf.post("/jobs/ingest", &job).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert_eq!(created.body["state"], "Open");
    let id = created.body["id"].as_str().expect("job id").to_owned();
    assert!(id.starts_with("750"));
    assert_eq!(
        created.body["contentUrl"],
        format!("services/data/v62.0/jobs/ingest/{id}/batches")
    );
    let uploaded = sf
        .raw(
            sf.request(
                Method::PUT,
                &format!("{V}/jobs/ingest/{id}/batches"),
                &sf.h.token,
            )
            .header("Content-Type", "text/csv")
            .body(csv.to_owned()),
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{}", uploaded.text);
    let closed = sf
        .patch(
            &format!("/jobs/ingest/{id}"),
            &json!({"state": "UploadComplete"}),
        )
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["state"], "UploadComplete");
    id
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("a row").iter().map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
async fn bulk_ingest_job_lifecycle() {
    let sf = Sf::with_salesforce(SalesforceConfig {
        bulk_processing_ms: 3_600_000,
        ..SalesforceConfig::default()
    })
    .await;
    let existing = sf
        .create(vec![json!({"attributes": {"type": "Lead"}, "LastName": "Known", "Company": "K", "External_Id__c": "k-2"})])
        .await
        .remove(0);
    let csv = "External_Id__c,LastName,Company,Description,OwnerId\n\
               k-1,Quote,\"Acme, Inc.\",\"She said \"\"hi\"\"\nand left\",\n\
               k-2,,,Updated,\n\
               k-3,NoCompany,,,\n\
               k-4,Owner,Z,,005000000000000AAA\n";
    let csv = csv.replace("005000000000000AAA", &rep(4));
    let id = run_job(
        &sf,
        json!({"object": "Lead", "operation": "upsert", "externalIdFieldName": "External_Id__c", "contentType": "CSV", "lineEnding": "LF"}),
        &csv,
    )
    .await;
    // One upload per job.
    let second = sf
        .raw(
            sf.request(
                Method::PUT,
                &format!("{V}/jobs/ingest/{id}/batches"),
                &sf.h.token,
            )
            .body("LastName\nx\n"),
        )
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);

    let poll = sf.get(&format!("/jobs/ingest/{id}")).await;
    assert_eq!(poll.body["state"], "UploadComplete");
    let poll = sf.get(&format!("/jobs/ingest/{id}")).await;
    assert_eq!(poll.body["state"], "InProgress");
    assert!(
        sf.stored("Lead").await.len() == 1,
        "not processed before its time"
    );

    sf.advance(3_600).await;
    let done = sf.get(&format!("/jobs/ingest/{id}")).await;
    assert_eq!(done.body["state"], "JobComplete", "{}", done.body);
    assert_eq!(done.body["numberRecordsProcessed"], 4);
    assert_eq!(done.body["numberRecordsFailed"], 1);
    assert_eq!(done.body["operation"], "upsert");
    assert_eq!(done.body["externalIdFieldName"], "External_Id__c");
    assert_eq!(done.body["jobType"], "V2Ingest");
    assert_eq!(done.body["apiVersion"], 62.0);

    let ok = sf
        .get_text(&format!("/jobs/ingest/{id}/successfulResults/"))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/csv")
    );
    let rows = csv_rows(&ok.text);
    assert_eq!(
        rows[0],
        [
            "sf__Id",
            "sf__Created",
            "External_Id__c",
            "LastName",
            "Company",
            "Description",
            "OwnerId"
        ]
    );
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[1][1], "true");
    assert_eq!(rows[1][4], "Acme, Inc.");
    assert_eq!(rows[1][5], "She said \"hi\"\nand left");
    assert_eq!(rows[2][0], existing);
    assert_eq!(rows[2][1], "false");

    let failed = sf
        .get_text(&format!("/jobs/ingest/{id}/failedResults"))
        .await;
    let rows = csv_rows(&failed.text);
    assert_eq!(rows[0][..2], ["sf__Id", "sf__Error"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[1][1],
        "REQUIRED_FIELD_MISSING:Required fields are missing: [Company]:Company --"
    );
    assert_eq!(rows[1][2], "k-3");

    let unprocessed = sf
        .get_text(&format!("/jobs/ingest/{id}/unprocessedrecords/"))
        .await;
    assert_eq!(csv_rows(&unprocessed.text).len(), 1, "only the header");

    let leads = sf.stored("Lead").await;
    assert_eq!(leads.len(), 3);
    let by_key = |key: &str| {
        leads
            .iter()
            .find(|l| l["External_Id__c"] == key)
            .cloned()
            .expect("a lead")
    };
    assert_eq!(by_key("k-1")["Description"], "She said \"hi\"\nand left");
    assert_eq!(by_key("k-2")["Description"], "Updated");
    assert_eq!(
        by_key("k-2")["LastName"],
        "Known",
        "empty cells change nothing"
    );
    assert_eq!(by_key("k-4")["OwnerId"], rep(4));

    let listed = sf.get("/jobs/ingest").await;
    assert_eq!(listed.body["records"][0]["id"], id.as_str());
    assert_eq!(
        sf.delete(&format!("/jobs/ingest/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        sf.get(&format!("/jobs/ingest/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bulk_jobs_that_fail_or_are_aborted_leave_rows_unprocessed() {
    let sf = Sf::with_salesforce(SalesforceConfig {
        bulk_processing_ms: 0,
        ..SalesforceConfig::default()
    })
    .await;
    let id = run_job(
        &sf,
        json!({"object": "Contact", "operation": "insert"}),
        "LastName,Colour\nA,red\nB,blue\n",
    )
    .await;
    let job = sf.get(&format!("/jobs/ingest/{id}")).await;
    assert_eq!(job.body["state"], "Failed");
    assert_eq!(
        job.body["errorMessage"],
        "InvalidBatch : Field name not found : Colour"
    );
    let rows = csv_rows(
        &sf.get_text(&format!("/jobs/ingest/{id}/unprocessedrecords/"))
            .await
            .text,
    );
    assert_eq!(rows, [["LastName", "Colour"], ["A", "red"], ["B", "blue"]]);

    let crlf = run_job(
        &sf,
        json!({"object": "Contact", "operation": "insert", "lineEnding": "LF"}),
        "LastName\r\nA\r\n",
    )
    .await;
    let job = sf.get(&format!("/jobs/ingest/{crlf}")).await;
    assert_eq!(job.body["state"], "Failed");
    assert!(
        job.body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("LineEnding"))
    );

    let created = sf
        .post(
            "/jobs/ingest",
            &json!({"object": "Contact", "operation": "insert"}),
        )
        .await;
    let open = created.body["id"].as_str().expect("id").to_owned();
    let upload = |csv: &'static str| {
        sf.raw(
            sf.request(
                Method::PUT,
                &format!("{V}/jobs/ingest/{open}/batches"),
                &sf.h.token,
            )
            .body(csv),
        )
    };
    assert_eq!(upload("LastName\nA\n").await.status, StatusCode::CREATED);
    let again = upload("LastName\nB\n").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        again.text.contains("BULK_API_ERROR") && again.text.contains("only do 'PUT' once"),
        "{}",
        again.text
    );
    let aborted = sf
        .patch(
            &format!("/jobs/ingest/{open}"),
            &json!({"state": "Aborted"}),
        )
        .await;
    assert_eq!(aborted.body["state"], "Aborted");
    let rows = csv_rows(
        &sf.get_text(&format!("/jobs/ingest/{open}/unprocessedrecords"))
            .await
            .text,
    );
    assert_eq!(rows, [["LastName"], ["A"]]);
    assert!(sf.stored("Contact").await.is_empty());

    for (job, code) in [
        (
            json!({"object": "Opportunity", "operation": "insert"}),
            "INVALIDJOB",
        ),
        (
            json!({"object": "Lead", "operation": "merge"}),
            "INVALIDJOB",
        ),
        (
            json!({"object": "Lead", "operation": "upsert"}),
            "INVALIDJOB",
        ),
        (
            json!({"object": "Lead", "operation": "upsert", "externalIdFieldName": "Email"}),
            "INVALIDJOB",
        ),
    ] {
        let reply = sf.post("/jobs/ingest", &job).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{job}");
        assert_eq!(reply.body[0]["errorCode"], code, "{job}");
    }
}

#[tokio::test]
async fn bulk_loads_feed_paged_queries() {
    let sf = Sf::with_salesforce(SalesforceConfig {
        bulk_processing_ms: 0,
        ..SalesforceConfig::default()
    })
    .await;
    let mut csv = String::from("LastName,Company\n");
    for n in 0..2_050 {
        csv.push_str(&format!("L{n:04},C\n"));
    }
    let id = run_job(&sf, json!({"object": "Lead", "operation": "insert"}), &csv).await;
    let mut state = Value::Null;
    for _ in 0..50 {
        let poll = sf.get(&format!("/jobs/ingest/{id}")).await;
        state = poll.body["state"].clone();
        if state == "JobComplete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "JobComplete");
    let first = sf
        .query("SELECT LastName FROM Lead ORDER BY LastName")
        .await;
    assert_eq!(first.body["totalSize"], 2_050);
    assert_eq!(first.body["records"].as_array().map(Vec::len), Some(2_000));
    let next = first.body["nextRecordsUrl"]
        .as_str()
        .expect("next")
        .to_owned();
    assert!(next.ends_with("-2000"));
    let rest = sf.call(Method::GET, &next, None).await;
    assert_eq!(rest.body["records"].as_array().map(Vec::len), Some(50));
    assert_eq!(rest.body["records"][49]["LastName"], "L2049");
    assert_eq!(sf.stats().await.records_written, 2_050);
}

#[tokio::test]
async fn the_daily_allocation_runs_out() {
    let sf = Sf::with_salesforce(SalesforceConfig {
        daily_api_requests: 3,
        ..SalesforceConfig::default()
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let reply = sf.get("/limits").await;
        assert_eq!(reply.status, StatusCode::OK);
        seen.push(limit_info(&reply.headers).expect("the header"));
    }
    assert_eq!(seen, ["api-usage=1/3", "api-usage=2/3", "api-usage=3/3"]);
    let spent = sf.get("/limits").await;
    assert_eq!(spent.status, StatusCode::FORBIDDEN);
    assert_eq!(
        spent.body,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(limit_info(&spent.headers).as_deref(), Some("api-usage=3/3"));
    // The token endpoint is not charged.
    let token = sf
        .token(&[
            ("grant_type", "client_credentials"),
            ("client_id", "k"),
            ("client_secret", "s"),
        ])
        .await;
    assert_eq!(token.status, StatusCode::OK);
    assert_eq!(
        sf.stats()
            .await
            .count("GET /services/data/{version}/limits", 403),
        1
    );
    // The window rolls: a day later the allocation is back.
    sf.advance(24 * 3600).await;
    let back = sf.get("/limits").await;
    assert_eq!(back.status, StatusCode::OK);
    assert_eq!(
        back.body,
        json!({"DailyApiRequests": {"Max": 3, "Remaining": 2}})
    );
}

#[tokio::test]
async fn every_authenticated_answer_reports_api_usage() {
    let sf = Sf::start().await;
    let id = sf.create(vec![lead("A", "B")]).await.remove(0);
    let replies = vec![
        sf.get("/limits").await,
        sf.post("/composite/sobjects", &json!({"records": [lead("C", "D")]}))
            .await,
        sf.post("/composite/sobjects", &json!({"records": "nope"}))
            .await,
        sf.patch(&format!("/sobjects/Lead/{id}"), &json!({"Rating": "Hot"}))
            .await,
        sf.query("SELECT Id FRM Lead").await,
        sf.query("SELECT Id FROM Lead").await,
        sf.get("/sobjects/Lead/nothing").await,
        sf.get("/no/such/resource").await,
        sf.call(Method::GET, "/services/data/latest/limits", None)
            .await,
        sf.call(Method::PUT, &format!("{V}/query"), Some(&json!({})))
            .await,
        sf.post(
            "/jobs/ingest",
            &json!({"object": "Lead", "operation": "insert"}),
        )
        .await,
    ];
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses,
        [200, 200, 400, 204, 400, 200, 404, 404, 404, 405, 200]
    );
    for (n, reply) in replies.iter().enumerate() {
        let info = limit_info(&reply.headers)
            .unwrap_or_else(|| panic!("reply {n} has no Sforce-Limit-Info"));
        assert_eq!(info, format!("api-usage={}/100000", n + 2), "reply {n}");
    }
    assert_eq!(sf.get("/nothing").await.body[0]["errorCode"], "NOT_FOUND");
    assert_eq!(
        sf.call(Method::GET, "/services/data/latest/limits", None)
            .await
            .body[0]["errorCode"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn faults_apply_to_collection_writes() {
    let sf = Sf::start().await;
    sf.h.configure(json!({"faults": {"seed": 3, "partial_failure_rate": 1.0}}))
        .await;
    let reply = sf
        .post(
            "/composite/sobjects",
            &json!({"records": [lead("A", "B"), lead("C", "D"), lead("E", "F")]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let codes = error_codes(&reply.body);
    assert!(
        codes
            .iter()
            .all(|c| c == "UNABLE_TO_LOCK_ROW" || c == "FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        "{codes:?}"
    );
    assert!(sf.stored("Lead").await.is_empty());
    assert_eq!(sf.stats().await.faults.partial, 3);

    sf.h.configure(json!({"faults": {"partial_failure_rate": 0.0, "error_rate": 1.0}}))
        .await;
    let reply = sf
        .post("/composite/sobjects", &json!({"records": [lead("A", "B")]}))
        .await;
    assert!(reply.status.is_server_error(), "{}", reply.status);
    let code = reply.body[0]["errorCode"].as_str().unwrap_or_default();
    assert!(
        matches!(code, "UNKNOWN_EXCEPTION" | "SERVER_UNAVAILABLE"),
        "{code}"
    );
    assert!(limit_info(&reply.headers).is_some());
    assert!(
        sf.stored("Lead").await.is_empty(),
        "an error is answered before applying"
    );

    sf.h.configure(json!({"faults": {"error_rate": 0.0, "drop_after_apply_rate": 1.0}}))
        .await;
    let dropped = sf
        .request(
            Method::POST,
            &format!("{V}/composite/sobjects"),
            &sf.h.token,
        )
        .json(&json!({"records": [lead("Dropped", "B")]}))
        .send()
        .await;
    let answered = match dropped {
        Ok(response) => response.bytes().await.is_ok(),
        Err(_) => false,
    };
    assert!(!answered, "the connection closes without an answer");
    assert_eq!(
        sf.stored("Lead").await.len(),
        1,
        "but the write was applied"
    );
    // Reads are never dropped.
    assert_eq!(sf.get("/limits").await.status, StatusCode::OK);
    let stats = sf.stats().await;
    assert_eq!(stats.faults.dropped_after_apply, 1);
    assert_eq!(
        stats.count("POST /services/data/{version}/composite/sobjects", 200),
        1
    );
}

#[tokio::test]
async fn reset_returns_to_the_seed() {
    let sf = Sf::start().await;
    sf.create(vec![lead("A", "B")]).await;
    sf.post(
        "/jobs/ingest",
        &json!({"object": "Lead", "operation": "insert"}),
    )
    .await;
    sf.h.send(sf.h.http.post(sf.h.url("/_sandbox/reset"))).await;
    assert!(sf.stored("Lead").await.is_empty());
    assert_eq!(sf.stored("User").await.len(), 10);
    assert_eq!(sf.get("/jobs/ingest").await.body["records"], json!([]));
    let users = sf.stored("User").await;
    assert_eq!(users[0]["Username"], "integration@demo.handoff.dev");
    assert_eq!(users[0]["Name"], "Handoff Integration");
    assert_eq!(users[9]["IsActive"], false);
    assert_eq!(users[1]["TimeZoneSidKey"], "America/New_York");
}

#[tokio::test]
async fn a_seed_file_sets_users_records_and_external_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seed.json");
    let owner = ids::make(ids::USER, 42);
    std::fs::write(
        &path,
        json!({
            "salesforce": {
                "users": [{"Id": owner, "Username": "ops@acme.example", "Email": "ops@acme.example", "LastName": "Ops"}],
                "accounts": [{"Name": "Acme", "Warehouse_Key__c": "a-1"}],
                "leads": [{"LastName": "Seeded", "Company": "Acme", "OwnerId": owner}],
                "external_id_fields": {"Account": ["Warehouse_Key__c"]},
            }
        })
        .to_string(),
    )
    .expect("write");
    let seed = super::super::Seed::from_file(&path).expect("a valid seed");
    assert_eq!(seed.owners, super::super::Seed::demo().owners);
    let sf = Sf::with(SandboxConfig {
        seed,
        ..SandboxConfig::ephemeral()
    })
    .await;
    let users = sf.stored("User").await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["Id"], owner);
    assert_eq!(sf.stored("Lead").await[0]["OwnerId"], owner);
    // Created without an owner: the seed's first active user owns it.
    let account = sf
        .patch(
            "/composite/sobjects/Account/warehouse_key__c",
            &json!({"records": [{"attributes": {"type": "Account"}, "Warehouse_Key__c": "A-1", "Industry": "Retail"}]}),
        )
        .await;
    assert_eq!(account.body[0]["created"], false, "{}", account.body);
    let accounts = sf.stored("Account").await;
    assert_eq!(accounts[0]["Industry"], "Retail");
    assert_eq!(accounts[0]["OwnerId"], owner);

    std::fs::write(
        &path,
        json!({"salesforce": {"leads": [{"LastName": "NoCompany"}]}}).to_string(),
    )
    .expect("write");
    let err = super::super::Seed::from_file(&path).expect_err("refused");
    assert!(
        err.contains("salesforce.leads[0]: REQUIRED_FIELD_MISSING"),
        "{err}"
    );
    // Without `salesforce`, the demo's users stay.
    std::fs::write(&path, "{}").expect("write");
    let seed = super::super::Seed::from_file(&path).expect("a valid seed");
    assert_eq!(seed.salesforce, SalesforceSeed::demo());
}

#[tokio::test]
async fn hubspot_and_salesforce_share_one_port_and_one_set_of_counters() {
    let sf = Sf::with(SandboxConfig {
        faults: Faults::default(),
        ..SandboxConfig::ephemeral()
    })
    .await;
    let hubspot = sf
        .h
        .post(
            "/crm/v3/objects/contacts/batch/upsert",
            &json!({"inputs": [{"id": "a@x.io", "idProperty": "email", "properties": {"firstname": "A"}}]}),
        )
        .await;
    assert_eq!(hubspot.status, StatusCode::OK);
    assert!(limit_info(&hubspot.headers).is_none());
    sf.create(vec![lead("A", "B")]).await;
    let stats = sf.stats().await;
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.records_written, 2);
    assert_eq!(
        stats.count("POST /services/data/{version}/composite/sobjects", 200),
        1
    );
}
