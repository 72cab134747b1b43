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

/// The specs the sandbox serves, or `None` (after saying so) when they are not there.
fn specs() -> Option<Specs> {
    let dir = hubspot_spec_dir();
    if !dir.is_dir() {
        crate::test_support::skipped("../shared/api/hubspot not found");
        return None;
    }
    Some(Specs {
        contacts: Spec::load(&dir, "contacts.json"),
        owners: Spec::load(&dir, "owners.json"),
        tasks: Spec::load(&dir, "tasks.json"),
        companies: Spec::load(&dir, "companies.json"),
        deals: Spec::load(&dir, "deals.json"),
        leads: Spec::load(&dir, "leads.json"),
    })
}

struct Specs {
    contacts: Spec,
    owners: Spec,
    tasks: Spec,
    companies: Spec,
    deals: Spec,
    leads: Spec,
}

struct Contract {
    h: Harness,
    specs: Specs,
}

impl Contract {
    async fn start() -> Option<Contract> {
        Contract::with(SandboxConfig::ephemeral()).await
    }

    async fn with(config: SandboxConfig) -> Option<Contract> {
        let specs = specs()?;
        Some(Contract {
            h: Harness::with(config).await,
            specs,
        })
    }

    /// The spec that declares `template`, by its object type segment.
    fn spec(&self, template: &str) -> &Spec {
        let specs = &self.specs;
        if template.starts_with(OWNERS) {
            return &specs.owners;
        }
        match template
            .strip_prefix("/crm/v3/objects/")
            .and_then(|rest| rest.split('/').next())
        {
            Some("tasks") => &specs.tasks,
            Some("companies") => &specs.companies,
            Some("0-3" | "deals") => &specs.deals,
            Some("leads") => &specs.leads,
            _ => &specs.contacts,
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
    // A company to associate with (the first company's id is 1001).
    c.h.post(
        "/crm/v3/objects/companies/batch/create",
        &json!({"inputs": [{"properties": {"name": "Acme"}}]}),
    )
    .await;
    let created = c
        .post(
            CREATE,
            "",
            json!({"inputs": [
                {"properties": {"email": "a@x.io", "firstname": "A"}, "associations": []},
                {"properties": {"email": "b@x.io"}, "objectWriteTraceId": "t2", "associations": [
                    {"to": {"id": "1001"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}
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
    let c_owners = &c.specs.owners;
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
        crate::test_support::skipped("../shared/api/hubspot not found");
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
    let Some(Specs { contacts, .. }) = specs() else {
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

/// Batch create, read, update, archive, read one and search of one object type,
/// each request and answer checked against that type's spec. `segment` is the
/// path segment the spec uses, `id_param` its path parameter.
async fn object_type_matches_its_spec(
    c: &Contract,
    segment: &str,
    id_param: &str,
    create_inputs: Value,
) -> Vec<String> {
    let base = format!("/crm/v3/objects/{segment}");
    let created = c
        .post(&format!("{base}/batch/create"), "", create_inputs)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let ids: Vec<String> = created.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect();

    let read = c
        .post(
            &format!("{base}/batch/read"),
            "",
            json!({"inputs": [{"id": ids[0]}, {"id": "999999"}], "properties": ["hubspot_owner_id"], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(read.status, StatusCode::MULTI_STATUS, "{}", read.body);

    let updated = c
        .post(
            &format!("{base}/batch/update"),
            "",
            json!({"inputs": [{"id": ids[0], "properties": {"hubspot_owner_id": "102"}}, {"id": "999999", "properties": {}}]}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::MULTI_STATUS, "{}", updated.body);

    let one_template = format!("{base}/{{{id_param}}}");
    let one = c
        .get(
            &one_template,
            &format!("{base}/{}?properties=hubspot_owner_id", ids[0]),
        )
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["properties"]["hubspot_owner_id"], "102");
    let missing = c.get(&one_template, &format!("{base}/999999")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let search = c
        .post(
            &format!("{base}/search"),
            "",
            json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "hubspot_owner_id", "operator": "IN", "values": ["101", "102"]},
                    {"propertyName": "hs_object_id", "operator": "HAS_PROPERTY"}
                ]}],
                "sorts": ["-hs_object_id"],
                "properties": ["hubspot_owner_id"],
                "limit": 1,
                "after": "0"
            }),
        )
        .await;
    assert_eq!(search.status, StatusCode::OK, "{}", search.body);
    assert_eq!(search.body["total"], ids.len());
    if ids.len() > 1 {
        assert_eq!(search.body["paging"]["next"]["after"], "1");
    }
    let bad_search = c
        .post_unchecked(
            &format!("{base}/search"),
            "",
            json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 500, "after": "0"}),
        )
        .await;
    assert_eq!(bad_search.status, StatusCode::BAD_REQUEST);

    // Single create, update and archive.
    let single = c
        .post(
            &base,
            "",
            json!({"properties": {"hubspot_owner_id": "101", "hs_timestamp": "2026-03-02"}, "associations": []}),
        )
        .await;
    assert_eq!(single.status, StatusCode::CREATED, "{}", single.body);
    let single_id = single.body["id"].as_str().expect("an id").to_owned();
    let patch_body = json!({"properties": {"hubspot_owner_id": "103"}});
    if let Err(error) = c
        .spec(&one_template)
        .check_request("PATCH", &one_template, &patch_body)
    {
        panic!("{error}");
    }
    let patched =
        c.h.send(
            c.h.http
                .patch(c.h.url(&format!("{base}/{single_id}")))
                .bearer_auth(&c.h.token)
                .json(&patch_body),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    c.check("PATCH", &one_template, &patched);
    let deleted =
        c.h.send(
            c.h.http
                .delete(c.h.url(&format!("{base}/{single_id}")))
                .bearer_auth(&c.h.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    c.check("DELETE", &one_template, &deleted);

    let archived = c
        .post(
            &format!("{base}/batch/archive"),
            "",
            json!({"inputs": [{"id": ids[ids.len() - 1]}]}),
        )
        .await;
    assert_eq!(archived.status, StatusCode::NO_CONTENT);
    ids
}

#[tokio::test]
async fn tasks_match_the_spec() {
    let Some(c) = Contract::start().await else {
        return;
    };
    let contact =
        c.h.post(
            CREATE,
            &json!({"inputs": [{"properties": {"email": "t@x.io"}}]}),
        )
        .await;
    let contact = contact.body["results"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let task = |subject: &str| {
        json!({
            "properties": {"hs_timestamp": "2026-03-02T09:00:00Z", "hs_task_subject": subject,
                "hubspot_owner_id": "101", "hs_task_status": "NOT_STARTED", "hs_task_priority": "HIGH", "hs_task_type": "CALL"},
            "associations": [{"to": {"id": contact}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}]
        })
    };
    object_type_matches_its_spec(
        &c,
        "tasks",
        "taskId",
        json!({"inputs": [task("A"), task("B")]}),
    )
    .await;
    // A missing hs_timestamp fails its input with a 207 the spec describes.
    let mut broken = task("C");
    broken["properties"]
        .as_object_mut()
        .expect("object")
        .remove("hs_timestamp");
    let partial = c
        .post(
            "/crm/v3/objects/tasks/batch/create",
            "",
            json!({"inputs": [broken, task("D")]}),
        )
        .await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);
}

#[tokio::test]
async fn companies_deals_and_leads_match_their_specs() {
    let Some(c) = Contract::start().await else {
        return;
    };
    // Six searches in well under a second: lift the search limit.
    c.h.configure(json!({"search_per_second": 0})).await;
    let companies = object_type_matches_its_spec(
        &c,
        "companies",
        "companyId",
        json!({"inputs": [
            {"properties": {"domain": "acme.io", "name": "Acme", "hubspot_owner_id": "101"}, "associations": []},
            {"properties": {"domain": "beta.io", "name": "Beta", "hubspot_owner_id": "101"}, "associations": []}
        ]}),
    )
    .await;
    let upsert = c
        .post(
            "/crm/v3/objects/companies/batch/upsert",
            "",
            json!({"inputs": [{"id": "acme.io", "idProperty": "domain", "properties": {"name": "Acme Inc"}},
                {"id": "new.io", "idProperty": "domain", "properties": {"name": "New"}}]}),
        )
        .await;
    assert_eq!(upsert.status, StatusCode::OK, "{}", upsert.body);

    object_type_matches_its_spec(
        &c,
        "0-3",
        "dealId",
        json!({"inputs": [{"properties": {"dealname": "Big", "amount": "100", "hubspot_owner_id": "101"},
            "associations": [{"to": {"id": companies[0]}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 341}]}]}]}),
    )
    .await;
    object_type_matches_its_spec(
        &c,
        "leads",
        "leadsId",
        json!({"inputs": [
            {"properties": {"hs_lead_name": "L1", "hubspot_owner_id": "101"}, "associations": []},
            {"properties": {"hs_lead_name": "L2", "hubspot_owner_id": "101"}, "associations": []}
        ]}),
    )
    .await;
}

#[tokio::test]
async fn injected_faults_match_the_spec() {
    let Some(c) = Contract::start().await else {
        return;
    };
    c.h.configure(json!({"faults": {"seed": 5, "partial_failure_rate": 0.5}}))
        .await;
    let inputs: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("p{i}@x.io"), "idProperty": "email", "properties": {}}))
        .collect();
    let partial = c.post(UPSERT, "", json!({ "inputs": inputs })).await;
    assert_eq!(partial.status, StatusCode::MULTI_STATUS);
    c.h.configure(json!({"faults": {"partial_failure_rate": 0.0, "error_rate": 1.0}}))
        .await;
    for _ in 0..5 {
        let failed = c
            .post(
                "/crm/v3/objects/tasks/batch/read",
                "",
                json!({"inputs": [], "properties": [], "propertiesWithHistory": []}),
            )
            .await;
        assert!(failed.status.is_server_error());
    }
}

#[tokio::test]
async fn associations_match_the_spec() {
    let dir = hubspot_spec_dir();
    let Some(c) = Contract::start().await else {
        return;
    };
    let spec = Spec::load(&dir, "associations.json");
    let check = |method: &str, template: &str, reply: &Reply| {
        let body = (!reply.body.is_null()).then_some(&reply.body);
        if let Err(error) = spec.check_response(method, template, reply.status.as_u16(), body) {
            panic!("{error}");
        }
    };
    let send = |template: &'static str, path: String, body: Value| {
        let c = &c;
        let spec = &spec;
        async move {
            if let Err(error) = spec.check_request("POST", template, &body) {
                panic!("{error}");
            }
            c.h.post(&path, &body).await
        }
    };
    let contact =
        c.h.post(
            CREATE,
            &json!({"inputs": [{"properties": {"email": "a@x.io"}}]}),
        )
        .await;
    let contact = contact.body["results"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let task =
        c.h.post(
            "/crm/v3/objects/tasks/batch/create",
            &json!({"inputs": [{"properties": {"hs_timestamp": "2026-03-02"}}]}),
        )
        .await;
    let task = task.body["results"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    const CREATE_T: &str = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create";
    const DEFAULT_T: &str =
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default";
    const READ_T: &str = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read";
    const LIST_T: &str = "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}";
    const PUT_T: &str = "/crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/default/{toObjectType}/{toObjectId}";

    for inputs in [
        json!([{"from": {"id": task}, "to": {"id": contact}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}]),
        json!([{"from": {"id": task}, "to": {"id": "404"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}]),
    ] {
        let reply = send(
            CREATE_T,
            "/crm/v4/associations/tasks/contacts/batch/create".to_owned(),
            json!({ "inputs": inputs }),
        )
        .await;
        assert!(reply.status.is_success(), "{}", reply.body);
        check("POST", CREATE_T, &reply);
    }
    let reply = send(
        DEFAULT_T,
        "/crm/v4/associations/contacts/tasks/batch/associate/default".to_owned(),
        json!({"inputs": [{"from": {"id": contact}, "to": {"id": task}}, {"from": {"id": "1"}, "to": {"id": task}}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    check("POST", DEFAULT_T, &reply);
    for inputs in [json!([{"id": task}]), json!([{"id": task}, {"id": "404"}])] {
        let reply = send(
            READ_T,
            "/crm/v4/associations/tasks/contacts/batch/read".to_owned(),
            json!({ "inputs": inputs }),
        )
        .await;
        check("POST", READ_T, &reply);
    }
    let list =
        c.h.get(&format!(
            "/crm/v4/objects/contacts/{contact}/associations/tasks"
        ))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    check("GET", LIST_T, &list);
    let put =
        c.h.send(
            c.h.http
                .put(c.h.url(&format!(
                    "/crm/v4/objects/tasks/{task}/associations/default/contacts/{contact}"
                )))
                .bearer_auth(&c.h.token),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    check("PUT", PUT_T, &put);
}
