//! Contract tests: each HubSpot endpoint the sandbox serves, over real HTTP, with the
//! request sent and the answer received both checked against HubSpot's official
//! OpenAPI specs in `../shared/api/hubspot` (skipped when that directory is absent).

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::openapi::{Spec, hubspot_spec_dir};
use super::tests::{Harness, Reply};
use super::{SandboxConfig, Seed};

const UPSERT: &str = "/crm/v3/objects/contacts/batch/upsert";
const UPDATE: &str = "/crm/v3/objects/contacts/batch/update";
const CREATE: &str = "/crm/v3/objects/contacts/batch/create";
const ARCHIVE: &str = "/crm/v3/objects/contacts/batch/archive";
const READ: &str = "/crm/v3/objects/contacts/batch/read";
const ONE: &str = "/crm/v3/objects/contacts/{contactId}";
const OWNERS: &str = "/crm/v3/owners";
const OWNER: &str = "/crm/v3/owners/{ownerId}";

/// The contacts and owners specs, or `None` (after saying so) when they are not there.
fn specs() -> Option<(Spec, Spec)> {
    let dir = hubspot_spec_dir();
    if !dir.is_dir() {
        println!("skipped: ../shared/api/hubspot not found");
        return None;
    }
    Some((
        Spec::load(&dir, "contacts.json"),
        Spec::load(&dir, "owners.json"),
    ))
}

struct Contract {
    h: Harness,
    contacts: Spec,
    owners: Spec,
}

impl Contract {
    async fn start() -> Option<Contract> {
        Contract::with(SandboxConfig::ephemeral()).await
    }

    async fn with(config: SandboxConfig) -> Option<Contract> {
        let (contacts, owners) = specs()?;
        Some(Contract {
            h: Harness::with(config).await,
            contacts,
            owners,
        })
    }

    fn spec(&self, template: &str) -> &Spec {
        if template.starts_with(OWNERS) {
            &self.owners
        } else {
            &self.contacts
        }
    }

    /// Checks `body` against the request schema, sends it to `template` + `query`,
    /// and checks the answer against the response declared for its status.
    async fn post(&self, template: &str, query: &str, body: Value) -> Reply {
        if let Err(error) = self.spec(template).check_request("POST", template, &body) {
            panic!("{error}");
        }
        self.post_unchecked(template, query, body).await
    }

    /// Sends a body the spec does not allow (to test the sandbox's refusal); asserts
    /// that the spec indeed refuses it, and checks the answer.
    async fn post_invalid(&self, template: &str, body: Value) -> Reply {
        assert!(
            self.spec(template)
                .check_request("POST", template, &body)
                .is_err(),
            "meant to break the spec, but matches it: {body}"
        );
        self.post_unchecked(template, "", body).await
    }

    async fn post_unchecked(&self, template: &str, query: &str, body: Value) -> Reply {
        let reply = self.h.post(&format!("{template}{query}"), &body).await;
        self.check("POST", template, &reply);
        reply
    }

    /// GETs `path`, an instance of `template`, and checks the answer.
    async fn get(&self, template: &str, path: &str) -> Reply {
        let reply = self.h.get(path).await;
        self.check("GET", template, &reply);
        reply
    }

    fn check(&self, method: &str, template: &str, reply: &Reply) {
        let body = (!reply.body.is_null()).then_some(&reply.body);
        if let Err(error) =
            self.spec(template)
                .check_response(method, template, reply.status.as_u16(), body)
        {
            panic!("{error}");
        }
    }
}

fn upsert_input(email: &str, properties: Value) -> Value {
    json!({"id": email, "idProperty": "email", "properties": properties})
}

#[tokio::test]
async fn batch_upsert_matches_the_spec() {
    let Some(c) = Contract::start().await else {
        return;
    };
    let created = c
        .post(
            UPSERT,
            "",
            json!({"inputs": [
                {"id": "a@x.io", "idProperty": "email", "objectWriteTraceId": "t1",
                 "properties": {"firstname": "A", "hubspot_owner_id": "101"}},
                upsert_input("b@x.io", json!({})),
            ]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let id = created.body["results"][0]["id"].as_str().expect("an id");

    let by_id = c
        .post(
            UPSERT,
            "",
            json!({"inputs": [{"id": id, "properties": {"lastname": "Z"}}]}),
        )
        .await;
    assert_eq!(by_id.status, StatusCode::OK);

    let partial = c
        .post(
            UPSERT,
            "",
            json!({"inputs": [
                upsert_input("c@x.io", json!({})),
                upsert_input("not-an-email", json!({})),
                upsert_input("d@x.io", json!({"hubspot_owner_id": "109"})),
                {"id": "424242", "properties": {}},
                upsert_input("e@x.io", json!({"email": "a@x.io"})),
            ]}),
        )
        .await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);
    assert_eq!(partial.body["numErrors"], 4);

    let inputs: Vec<Value> = (0..101)
        .map(|i| upsert_input(&format!("u{i}@x.io"), json!({})))
        .collect();
    let too_many = c.post(UPSERT, "", json!({ "inputs": inputs })).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    let duplicate = c
        .post(
            UPSERT,
            "",
            json!({"inputs": [upsert_input("a@x.io", json!({})), upsert_input("A@x.io", json!({}))]}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    let not_a_string = c
        .post_invalid(
            UPSERT,
            json!({"inputs": [upsert_input("a@x.io", json!({"lead_score": 90}))]}),
        )
        .await;
    assert_eq!(not_a_string.status, StatusCode::BAD_REQUEST);
    let no_inputs = c.post_invalid(UPSERT, json!({})).await;
    assert_eq!(no_inputs.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_update_matches_the_spec() {
    let Some(c) = Contract::start().await else {
        return;
    };
    let seeded = c
        .post(
            UPSERT,
            "",
            json!({"inputs": [upsert_input("a@x.io", json!({"firstname": "A"})), upsert_input("b@x.io", json!({}))]}),
        )
        .await;
    let a = seeded.body["results"][0]["id"].as_str().expect("an id");
    let b = seeded.body["results"][1]["id"].as_str().expect("an id");

    let updated = c
        .post(
            UPDATE,
            "",
            json!({"inputs": [
                {"id": a, "objectWriteTraceId": "t1", "properties": {"nurture_status": "re-entered", "firstname": ""}},
                {"id": "b@x.io", "idProperty": "email", "properties": {"hubspot_owner_id": "102"}},
            ]}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK);

    let partial = c
        .post(
            UPDATE,
            "",
            json!({"inputs": [
                {"id": "424242", "properties": {"firstname": "X"}},
                {"id": a, "properties": {"email": "broken@"}},
                {"id": b, "properties": {"email": "a@x.io"}},
                {"id": "nobody@x.io", "idProperty": "email", "properties": {}},
            ]}),
        )
        .await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);
    assert_eq!(partial.body["numErrors"], 4);

    let duplicate = c
        .post(
            UPDATE,
            "",
            json!({"inputs": [{"id": a, "properties": {}}, {"id": a, "properties": {}}]}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    let by_name = c
        .post(
            UPDATE,
            "",
            json!({"inputs": [{"id": "A", "idProperty": "firstname", "properties": {}}]}),
        )
        .await;
    assert_eq!(by_name.status, StatusCode::BAD_REQUEST);
    let no_properties = c.post_invalid(UPDATE, json!({"inputs": [{"id": a}]})).await;
    assert_eq!(no_properties.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_create_matches_the_spec() {
    let Some(c) = Contract::start().await else {
        return;
    };
    let created = c
        .post(
            CREATE,
            "",
            json!({"inputs": [
                {"properties": {"email": "a@x.io", "firstname": "A"}, "associations": []},
                {"properties": {"email": "b@x.io"}, "objectWriteTraceId": "t2", "associations": [
                    {"to": {"id": "77"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}
                ]},
            ]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);

    let partial = c
        .post(
            CREATE,
            "",
            json!({"inputs": [
                {"properties": {"email": "c@x.io"}, "associations": []},
                {"properties": {"email": "broken@"}, "associations": []},
                {"properties": {"email": "d@x.io", "hubspot_owner_id": "999"}, "associations": []},
            ]}),
        )
        .await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);

    let conflict = c
        .post(
            CREATE,
            "",
            json!({"inputs": [{"properties": {"email": "A@x.io"}, "associations": []}]}),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);

    // The spec requires `associations`; HubSpot, and the sandbox, do not.
    let without_associations = c
        .post_invalid(
            CREATE,
            json!({"inputs": [{"properties": {"email": "e@x.io"}}]}),
        )
        .await;
    assert_eq!(without_associations.status, StatusCode::CREATED);
    let bad_category = c
        .post_invalid(
            CREATE,
            json!({"inputs": [{"properties": {}, "associations": [
                {"to": {"id": "77"}, "types": [{"associationCategory": "NOPE", "associationTypeId": 1}]}
            ]}]}),
        )
        .await;
    assert_eq!(bad_category.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn batch_archive_and_reads_match_the_spec() {
    let Some(c) = Contract::start().await else {
        return;
    };
    let seeded = c
        .post(
            UPSERT,
            "",
            json!({"inputs": [upsert_input("a@x.io", json!({"firstname": "A"})), upsert_input("b@x.io", json!({}))]}),
        )
        .await;
    let a = seeded.body["results"][0]["id"]
        .as_str()
        .expect("an id")
        .to_owned();

    let read = c
        .post(
            READ,
            "",
            json!({"idProperty": "email", "inputs": [{"id": "a@x.io"}, {"id": "b@x.io"}],
                   "properties": ["firstname"], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let by_id = c
        .post(
            READ,
            "",
            json!({"inputs": [{"id": a}, {"id": "424242"}], "properties": [], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(by_id.status, StatusCode::MULTI_STATUS);

    let one = c
        .get(
            ONE,
            &format!("/crm/v3/objects/contacts/{a}?properties=firstname,lastname"),
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    let by_email = c
        .get(ONE, "/crm/v3/objects/contacts/b@x.io?idProperty=email")
        .await;
    assert_eq!(by_email.status, StatusCode::OK);
    let missing = c.get(ONE, "/crm/v3/objects/contacts/424242").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad_id_property = c
        .get(ONE, "/crm/v3/objects/contacts/A?idProperty=firstname")
        .await;
    assert_eq!(bad_id_property.status, StatusCode::BAD_REQUEST);

    let archived = c
        .post(
            ARCHIVE,
            "",
            json!({"inputs": [{"id": a}, {"id": "424242"}]}),
        )
        .await;
    assert_eq!(archived.status, StatusCode::NO_CONTENT);
    let inputs: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let too_many = c.post(ARCHIVE, "", json!({ "inputs": inputs })).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);

    let gone = c
        .post(
            READ,
            "",
            json!({"inputs": [{"id": a}], "properties": [], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(gone.status, StatusCode::MULTI_STATUS);
    let read_archived = c
        .post(
            READ,
            "?archived=true",
            json!({"inputs": [{"id": a}], "properties": [], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(read_archived.status, StatusCode::OK);
    assert_eq!(read_archived.body["results"][0]["archived"], true);
    let one_archived = c
        .get(ONE, &format!("/crm/v3/objects/contacts/{a}?archived=true"))
        .await;
    assert_eq!(one_archived.status, StatusCode::OK);
    assert!(one_archived.body["archivedAt"].is_string());

    // The spec requires propertiesWithHistory in a batch read; the sandbox does not.
    let lenient = c
        .post_invalid(
            READ,
            json!({"inputs": [{"id": "b@x.io"}], "idProperty": "email", "properties": []}),
        )
        .await;
    assert_eq!(lenient.status, StatusCode::OK);
}

#[tokio::test]
async fn owners_match_the_spec() {
    let mut seed = Seed::demo();
    seed.owners[0].teams = vec![super::OwnerTeam {
        id: "7".to_owned(),
        name: "West".to_owned(),
        primary: true,
    }];
    let Some(c) = Contract::with(SandboxConfig {
        seed,
        ..SandboxConfig::ephemeral()
    })
    .await
    else {
        return;
    };
    let first = c.get(OWNERS, "/crm/v3/owners?limit=3").await;
    assert_eq!(first.status, StatusCode::OK);
    let after = first.body["paging"]["next"]["after"]
        .as_str()
        .expect("a next page");
    let next = c
        .get(OWNERS, &format!("/crm/v3/owners?limit=3&after={after}"))
        .await;
    assert_eq!(next.status, StatusCode::OK);
    for path in [
        "/crm/v3/owners",
        "/crm/v3/owners?email=rep2@demo.handoff.dev",
        "/crm/v3/owners?archived=true",
    ] {
        assert_eq!(c.get(OWNERS, path).await.status, StatusCode::OK, "{path}");
    }
    let bad_limit = c.get(OWNERS, "/crm/v3/owners?limit=zero").await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        c.get(OWNER, "/crm/v3/owners/101").await.status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(OWNER, "/crm/v3/owners/9000102?idProperty=userId")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(OWNER, "/crm/v3/owners/109?archived=true")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.get(OWNER, "/crm/v3/owners/424242").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn auth_and_rate_limit_errors_match_the_spec() {
    let Some(c) = Contract::with(SandboxConfig {
        token: Some("secret".to_owned()),
        ..SandboxConfig::ephemeral()
    })
    .await
    else {
        return;
    };
    for (template, body) in [
        (UPSERT, json!({"inputs": []})),
        (UPDATE, json!({"inputs": []})),
        (CREATE, json!({"inputs": []})),
        (ARCHIVE, json!({"inputs": []})),
        (
            READ,
            json!({"inputs": [], "properties": [], "propertiesWithHistory": []}),
        ),
    ] {
        let reply = c.h.send(c.h.http.post(c.h.url(template)).json(&body)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{template}");
        c.check("POST", template, &reply);
    }
    for (template, path) in [
        (ONE, "/crm/v3/objects/contacts/1001"),
        (OWNERS, "/crm/v3/owners"),
        (OWNER, "/crm/v3/owners/101"),
    ] {
        let reply =
            c.h.send(c.h.http.get(c.h.url(path)).bearer_auth("guess"))
                .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        c.check("GET", template, &reply);
    }

    // HubSpot's own 429 body carries errorType and policyName but no category,
    // so it breaks HubSpot's Error schema in exactly that one way; the sandbox copies it.
    c.h.configure(json!({"burst_per_10s": 1})).await;
    let _ = c.h.get("/crm/v3/owners").await;
    let throttled = c.h.get("/crm/v3/owners").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    let c_owners = &c.owners;
    let schema = match c_owners
        .response_body("GET", OWNERS, 429)
        .expect("a default response")
    {
        super::openapi::ResponseBody::Schema(schema) => schema,
        super::openapi::ResponseBody::Empty => panic!("the Error response has a body"),
    };
    assert_eq!(
        c_owners.validate(schema, &throttled.body),
        ["$: missing required property \"category\""]
    );
}

#[test]
fn specs_use_only_keywords_the_validator_understands() {
    let dir = hubspot_spec_dir();
    if !dir.is_dir() {
        println!("skipped: ../shared/api/hubspot not found");
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the spec directory lists")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f == "contacts.json"), "{files:?}");
    let unsupported: Vec<String> = files
        .iter()
        .flat_map(|file| Spec::load(&dir, file).unsupported_keywords())
        .collect();
    assert!(unsupported.is_empty(), "{unsupported:#?}");
}

/// Guards against a vacuous pass: the real schemas, resolved through `$ref`, do refuse a broken body.
#[test]
fn real_schemas_refuse_a_broken_body() {
    let Some((contacts, _)) = specs() else {
        return;
    };
    let body = json!({
        "status": "DONE",
        "results": [{"id": 1001, "properties": {"lead_score": 90}, "archived": false}],
        "startedAt": "2024-01-01T00:00:00.000Z",
    });
    let error = contacts
        .check_response("POST", UPDATE, 200, Some(&body))
        .expect_err("a broken body");
    for expected in [
        "$: missing required property \"completedAt\"",
        "$.status: \"DONE\" is not one of",
        "$.results[0]: missing required property \"createdAt\"",
        "$.results[0].id: expected string",
        "$.results[0].properties.lead_score: expected string",
    ] {
        assert!(error.contains(expected), "{expected} in {error}");
    }
    assert!(
        contacts
            .check_response("POST", CREATE, 200, Some(&body))
            .is_err_and(|e| e.contains("does not declare a 200")),
        "batch create answers 201"
    );
}
