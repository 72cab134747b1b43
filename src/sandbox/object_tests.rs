//! Tasks, companies, deals and leads over real HTTP, and the duplicate check.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::SandboxConfig;
use super::tests::Harness;

const TASKS_CREATE: &str = "/crm/v3/objects/tasks/batch/create";

fn task(subject: &str, owner: &str, contact: &str) -> Value {
    json!({
        "properties": {
            "hs_timestamp": "2026-03-02T09:00:00Z",
            "hs_task_subject": subject,
            "hs_task_body": "Call back",
            "hubspot_owner_id": owner,
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "HIGH",
            "hs_task_type": "CALL"
        },
        "associations": [{
            "to": {"id": contact},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]
        }]
    })
}

/// Creates contacts `a@x.io`, `b@x.io`, … and returns their ids.
async fn contacts(h: &Harness, n: usize) -> Vec<String> {
    let inputs: Vec<Value> = (0..n)
        .map(|i| json!({"properties": {"email": format!("{}@x.io", (b'a' + i as u8) as char)}}))
        .collect();
    let reply = h
        .post(
            "/crm/v3/objects/contacts/batch/create",
            &json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn tasks_are_created_with_associations() {
    let h = Harness::start().await;
    let ids = contacts(&h, 2).await;
    let reply = h
        .post(
            TASKS_CREATE,
            &json!({"inputs": [task("Follow up", "101", &ids[0]), task("Intro", "102", &ids[1])]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let results = reply.body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["properties"]["hs_task_subject"], "Follow up");
    assert!(results[0]["properties"]["hs_createdate"].is_string());
    assert!(results[0]["properties"]["hs_lastmodifieddate"].is_string());
    let task_id = results[0]["id"].as_str().expect("id").to_owned();

    let stored = h.inspect("/_sandbox/tasks").await;
    assert_eq!(stored["total"], 2);
    assert_eq!(
        stored["results"][0]["associations"],
        json!([{"to": "contacts", "id": ids[0], "type_id": 204}])
    );

    // Single read, batch read, update, archive.
    let one = h
        .get(&format!(
            "/crm/v3/objects/tasks/{task_id}?properties=hs_task_subject"
        ))
        .await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["properties"]["hs_task_subject"], "Follow up");
    let update = h
        .post(
            "/crm/v3/objects/tasks/batch/update",
            &json!({"inputs": [{"id": task_id, "properties": {"hs_task_status": "COMPLETED"}}]}),
        )
        .await;
    assert_eq!(update.status, StatusCode::OK, "{}", update.body);
    let read = h
        .post(
            "/crm/v3/objects/tasks/batch/read",
            &json!({"inputs": [{"id": task_id}], "properties": ["hs_task_status"]}),
        )
        .await;
    assert_eq!(
        read.body["results"][0]["properties"]["hs_task_status"],
        "COMPLETED"
    );
    let archive = h
        .post(
            "/crm/v3/objects/tasks/batch/archive",
            &json!({"inputs": [{"id": task_id}]}),
        )
        .await;
    assert_eq!(archive.status, StatusCode::NO_CONTENT);
    assert_eq!(h.inspect("/_sandbox/tasks").await["total"], 1);
}

#[tokio::test]
async fn task_inputs_are_validated_one_by_one() {
    let h = Harness::start().await;
    let ids = contacts(&h, 1).await;
    let mut no_timestamp = task("A", "101", &ids[0]);
    no_timestamp["properties"]
        .as_object_mut()
        .expect("object")
        .remove("hs_timestamp");
    let mut bad_status = task("B", "101", &ids[0]);
    bad_status["properties"]["hs_task_status"] = json!("DONE");
    let archived_owner = task("C", "109", &ids[0]);
    let missing_contact = task("D", "101", "999999");
    let mut wrong_type = task("E", "101", &ids[0]);
    wrong_type["associations"][0]["types"][0]["associationTypeId"] = json!(1);
    let good = task("F", "101", &ids[0]);
    let reply = h
        .post(
            TASKS_CREATE,
            &json!({"inputs": [no_timestamp, bad_status, archived_owner, missing_contact, wrong_type, good]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS, "{}", reply.body);
    assert_eq!(reply.body["numErrors"], 5);
    let messages: Vec<&str> = reply.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["message"].as_str().expect("message"))
        .collect();
    assert!(messages[0].contains("REQUIRED_FIELD"), "{}", messages[0]);
    assert!(messages[1].contains("INVALID_OPTION"), "{}", messages[1]);
    assert!(messages[2].contains("INVALID_OWNER_ID"), "{}", messages[2]);
    assert!(messages[3].contains("does not exist"), "{}", messages[3]);
    assert!(messages[4].contains("not valid"), "{}", messages[4]);
    assert_eq!(h.inspect("/_sandbox/tasks").await["total"], 1);
}

#[tokio::test]
async fn duplicates_group_tasks_by_subject_owner_and_association() {
    let h = Harness::start().await;
    let ids = contacts(&h, 2).await;
    let batch = json!({"inputs": [
        task("Call", "101", &ids[0]),
        task("Call", "101", &ids[1]),
        task("Call", "102", &ids[0]),
    ]});
    // The same batch twice: the second is what a retry after a dropped answer sends.
    for _ in 0..2 {
        assert_eq!(
            h.post(TASKS_CREATE, &batch).await.status,
            StatusCode::CREATED
        );
    }
    let report = h.inspect("/_sandbox/duplicates").await;
    assert_eq!(report["total"], 3);
    assert_eq!(report["extra_records"], 3);
    let group = &report["groups"][0];
    assert_eq!(group["subject"], "Call");
    assert_eq!(group["ids"].as_array().expect("ids").len(), 2);
    assert_eq!(h.sandbox.duplicate_tasks().len(), 3);
}

#[tokio::test]
async fn companies_deals_and_leads_have_batch_endpoints() {
    let h = Harness::start().await;
    // Companies are unique by domain (lower-cased), usable as idProperty.
    let reply = h
        .post(
            "/crm/v3/objects/companies/batch/upsert",
            &json!({"inputs": [{"id": "Acme.io", "idProperty": "domain", "properties": {"name": "Acme"}}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["results"][0]["new"], true);
    assert_eq!(reply.body["results"][0]["properties"]["domain"], "acme.io");
    let company = reply.body["results"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let conflict = h
        .post(
            "/crm/v3/objects/companies/batch/create",
            &json!({"inputs": [{"properties": {"domain": "acme.io"}}]}),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let read = h
        .get("/crm/v3/objects/companies/acme.io?idProperty=domain")
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["properties"]["name"], "Acme");

    // Deals, also served as 0-3; no unique property besides the id.
    for path in ["deals", "0-3"] {
        let reply = h
            .post(
                &format!("/crm/v3/objects/{path}/batch/create"),
                &json!({"inputs": [{"properties": {"dealname": "Big", "amount": "100"},
                    "associations": [{"to": {"id": company}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 341}]}]}]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
    assert_eq!(h.inspect("/_sandbox/deals").await["total"], 2);
    let by_name = h
        .post(
            "/crm/v3/objects/deals/batch/upsert",
            &json!({"inputs": [{"id": "Big", "idProperty": "dealname", "properties": {}}]}),
        )
        .await;
    assert_eq!(by_name.status, StatusCode::BAD_REQUEST);
    assert!(
        by_name.body["message"]
            .as_str()
            .expect("message")
            .contains("non-unique 0-3 property dealname")
    );

    let lead = h
        .post(
            "/crm/v3/objects/leads/batch/create",
            &json!({"inputs": [{"properties": {"hs_lead_name": "L", "hubspot_owner_id": "101"}}]}),
        )
        .await;
    assert_eq!(lead.status, StatusCode::CREATED, "{}", lead.body);
    assert_eq!(h.inspect("/_sandbox/leads").await["total"], 1);
}

const SEARCH: &str = "/crm/v3/objects/companies/search";

/// Companies `c0.io`… with `n` as a number and `tier` gold for even n.
async fn companies(h: &Harness, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let inputs: Vec<Value> = chunk
            .iter()
            .map(|i| {
                let mut properties = json!({"domain": format!("c{i}.io"), "name": format!("Company {i}"), "n": i.to_string()});
                if i % 2 == 0 {
                    properties["tier"] = json!("gold");
                }
                json!({ "properties": properties })
            })
            .collect();
        let reply = h
            .post(
                "/crm/v3/objects/companies/batch/create",
                &json!({ "inputs": inputs }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    }
}

fn ids_of(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["properties"]["n"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn search_filters_sorts_and_pages() {
    let mut config = SandboxConfig::ephemeral();
    // Custom company properties the filters below use, as an account would have created them.
    config
        .seed
        .properties
        .insert("companies".into(), vec!["n".into(), "tier".into()]);
    let h = Harness::with(config).await;
    h.configure(json!({"search_per_second": 0})).await;
    companies(&h, 30).await;
    let search = |body: Value| {
        let h = &h;
        async move {
            let reply = h.post(SEARCH, &body).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply.body
        }
    };
    let filter =
        |p: &str, op: &str, v: Value| json!({"propertyName": p, "operator": op, "value": v});
    let props = json!(["n", "tier"]);

    // GT/LTE in one group (AND), sorted descending.
    let body = search(json!({"filterGroups": [{"filters": [filter("n", "GT", json!("20")), filter("n", "LTE", json!("24"))]}],
        "sorts": [{"propertyName": "n", "direction": "DESCENDING"}], "properties": props})).await;
    assert_eq!(ids_of(&body), ["24", "23", "22", "21"]);
    assert_eq!(body["total"], 4);
    // Two groups are ORed; string sorts with "-" descend too.
    let body = search(json!({"filterGroups": [
        {"filters": [filter("n", "EQ", json!("3"))]},
        {"filters": [filter("domain", "EQ", json!("C5.IO"))]}],
        "sorts": ["-n"], "properties": props}))
    .await;
    assert_eq!(ids_of(&body), ["5", "3"]);
    // IN, NEQ, HAS_PROPERTY, NOT_HAS_PROPERTY, GTE/LT.
    let body = search(json!({"filterGroups": [{"filters": [
        {"propertyName": "n", "operator": "IN", "values": ["1", "2", "4"]},
        filter("n", "NEQ", json!("2"))]}], "sorts": ["n"], "properties": props}))
    .await;
    assert_eq!(ids_of(&body), ["1", "4"]);
    let gold = search(json!({"filterGroups": [{"filters": [{"propertyName": "tier", "operator": "HAS_PROPERTY"}, filter("n", "LT", json!("6"))]}], "sorts": ["n"], "properties": props})).await;
    assert_eq!(ids_of(&gold), ["0", "2", "4"]);
    let plain = search(json!({"filterGroups": [{"filters": [{"propertyName": "tier", "operator": "NOT_HAS_PROPERTY"}, filter("n", "GTE", json!("25"))]}], "sorts": ["n"], "properties": props})).await;
    assert_eq!(ids_of(&plain), ["25", "27", "29"]);

    // Paging with after, until no next page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut body = json!({"sorts": ["n"], "limit": 7, "properties": props});
        if let Some(after) = &after {
            body["after"] = json!(after);
        }
        let page = search(body).await;
        assert_eq!(page["total"], 30);
        seen.extend(ids_of(&page));
        match page["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    assert_eq!(seen[29], "29");

    // Limits: 200 per page, 10,000 results per query.
    for body in [
        json!({"limit": 201}),
        json!({"after": "9950", "limit": 100}),
        json!({"filterGroups": [{"filters": [{"propertyName": "n", "operator": "EQ"}]}]}),
    ] {
        let reply = h.post(SEARCH, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.body["category"], "VALIDATION_ERROR");
    }
}

#[tokio::test]
async fn search_stops_paging_at_ten_thousand() {
    let h = Harness::start().await;
    h.configure(json!({"burst_per_10s": 0, "search_per_second": 0}))
        .await;
    // Records straight into the store: 10,050 creates over HTTP would be slow.
    {
        let mut data = h.sandbox.state.lock();
        let table = data.store.table_mut(super::store::ObjectType::Deals);
        let now = chrono::Utc::now();
        for i in 0..10_050 {
            let properties =
                std::collections::BTreeMap::from([("dealname".to_owned(), format!("d{i}"))]);
            table.create(&properties, now);
        }
    }
    let page = h
        .post(
            "/crm/v3/objects/deals/search",
            &json!({"after": "9800", "limit": 200}),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body["total"], 10_050);
    assert_eq!(page.body["results"].as_array().map(Vec::len), Some(200));
    assert!(page.body.get("paging").is_none(), "{}", page.body["paging"]);
}

#[tokio::test]
async fn search_has_its_own_lower_limit() {
    let h = Harness::start().await;
    h.configure(json!({"search_per_second": 2, "burst_per_10s": 100}))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let reply = h.post(SEARCH, &json!({})).await;
        assert!(!reply.headers.contains_key("x-hubspot-ratelimit-remaining"));
        statuses.push(reply.status.as_u16());
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.body["policyName"], "SECONDLY");
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Other endpoints are not held up by the search limit.
    let read = h
        .post(
            "/crm/v3/objects/companies/batch/read",
            &json!({"inputs": []}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(h.stats().await.throttled, 1);
    assert_eq!(h.inspect("/_sandbox/config").await["search_per_second"], 2);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(h.post(SEARCH, &json!({})).await.status, StatusCode::OK);
}

#[tokio::test]
async fn associations_v4_create_default_and_read() {
    let h = Harness::start().await;
    let ids = contacts(&h, 2).await;
    let created = h
        .post(
            TASKS_CREATE,
            &json!({"inputs": [{"properties": {"hs_timestamp": "1772442000000"}}]}),
        )
        .await;
    let task = created.body["results"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let reply = h
        .post(
            "/crm/v4/associations/tasks/contacts/batch/create",
            &json!({"inputs": [
                {"from": {"id": task}, "to": {"id": ids[0]}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]},
                {"from": {"id": task}, "to": {"id": "999999"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]},
                {"from": {"id": task}, "to": {"id": ids[1]}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]}
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::MULTI_STATUS, "{}", reply.body);
    assert_eq!(reply.body["results"][0]["fromObjectTypeId"], "0-27");
    assert_eq!(reply.body["results"][0]["toObjectId"], ids[0]);
    assert_eq!(reply.body["numErrors"], 2);

    // Default association, single, by the object type id.
    let reply = h
        .send(
            h.http
                .put(h.url(&format!(
                    "/crm/v4/objects/0-27/{task}/associations/default/contacts/{}",
                    ids[1]
                )))
                .bearer_auth(&h.token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["results"][0]["associationSpec"]["associationTypeId"],
        204
    );

    let read = h
        .post(
            "/crm/v4/associations/tasks/contacts/batch/read",
            &json!({"inputs": [{"id": task}]}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let to: Vec<&str> = read.body["results"][0]["to"]
        .as_array()
        .expect("to")
        .iter()
        .map(|t| t["toObjectId"].as_str().expect("id"))
        .collect();
    assert_eq!(to, [ids[0].as_str(), ids[1].as_str()]);

    // The other direction sees the same links, with the reverse type.
    let back = h
        .get(&format!(
            "/crm/v4/objects/contacts/{}/associations/tasks",
            ids[0]
        ))
        .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert_eq!(back.body["results"][0]["toObjectId"], task);
    assert_eq!(
        back.body["results"][0]["associationTypes"][0]["typeId"],
        203
    );
    let batch_default = h
        .post(
            "/crm/v4/associations/deals/contacts/batch/associate/default",
            &json!({"inputs": [{"from": {"id": "1"}, "to": {"id": ids[0]}}]}),
        )
        .await;
    assert_eq!(batch_default.status, StatusCode::OK);
    assert_eq!(batch_default.body["numErrors"], 1);
}

#[tokio::test]
async fn single_create_update_and_archive() {
    let h = Harness::start().await;
    let created = h
        .post(
            "/crm/v3/objects/companies",
            &json!({"properties": {"domain": "one.io", "name": "One"}, "associations": []}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let taken = h
        .post(
            "/crm/v3/objects/companies",
            &json!({"properties": {"domain": "two.io"}}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CREATED);
    let invalid = h
        .post(
            "/crm/v3/objects/tasks",
            &json!({"properties": {"hs_task_subject": "no timestamp"}}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(
        invalid.body["message"]
            .as_str()
            .expect("message")
            .contains("hs_timestamp")
    );

    let patch = |path: String, body: Value| {
        let h = &h;
        async move {
            h.send(h.http.patch(h.url(&path)).bearer_auth(&h.token).json(&body))
                .await
        }
    };
    let updated = patch(
        format!("/crm/v3/objects/companies/{id}"),
        json!({"properties": {"name": "One Inc"}}),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.body["properties"]["name"], "One Inc");
    let by_domain = patch(
        "/crm/v3/objects/companies/ONE.io?idProperty=domain".to_owned(),
        json!({"properties": {"name": "One Ltd"}}),
    )
    .await;
    assert_eq!(by_domain.status, StatusCode::OK, "{}", by_domain.body);
    let conflict = patch(
        format!("/crm/v3/objects/companies/{id}"),
        json!({"properties": {"domain": "two.io"}}),
    )
    .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    let missing = patch(
        "/crm/v3/objects/companies/999999".to_owned(),
        json!({"properties": {"name": "X"}}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let deleted = h
        .send(
            h.http
                .delete(h.url(&format!("/crm/v3/objects/companies/{id}")))
                .bearer_auth(&h.token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(h.inspect("/_sandbox/companies").await["total"], 1);
}
