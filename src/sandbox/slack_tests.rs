//! Slack's webhook and `chat.postMessage` over real HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::tests::Harness;
use super::{SandboxConfig, Seed, SlackChannel, SlackMessage};

const POST_MESSAGE: &str = "/api/chat.postMessage";
const WEBHOOK: &str = "/services/T0HANDOFF/B0LEADS/s3cr3tXYZ";

/// A raw answer: webhooks answer plain text.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("a JSON body")
    }

    fn retry_after(&self) -> Option<&str> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
    }
}

async fn raw(request: reqwest::RequestBuilder) -> Raw {
    let response = request.send().await.expect("an answer");
    Raw {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("a body"),
    }
}

async fn hook(h: &Harness, path: &str, body: &str) -> Raw {
    raw(h
        .http
        .post(h.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned()))
    .await
}

async fn chat(h: &Harness, body: &Value) -> Raw {
    raw(h
        .http
        .post(h.url(POST_MESSAGE))
        .bearer_auth(&h.token)
        .json(body))
    .await
}

async fn messages(h: &Harness, query: &str) -> Vec<SlackMessage> {
    let listed = h.inspect(&format!("/_sandbox/slack/messages{query}")).await;
    let messages: Vec<SlackMessage> =
        serde_json::from_value(listed["messages"].clone()).expect("messages parse");
    assert_eq!(listed["total"], messages.len());
    messages
}

fn lead_blocks() -> Value {
    json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Ada Lovelace* (score 92) is yours"}},
        {"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Claim lead"}, "action_id": "claim", "value": "1001", "style": "primary"},
            {"type": "button", "text": {"type": "plain_text", "text": "Open in CRM"}, "action_id": "open", "url": "https://app.hubspot.com/contacts/1/record/0-1/1001"}
        ]}
    ])
}

#[tokio::test]
async fn a_webhook_answers_like_slack() {
    let h = Harness::start().await;
    let ok = hook(&h, WEBHOOK, r#"{"text": "New lead: Ada"}"#).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.text, "ok");

    for (body, status, error) in [
        ("not json", StatusCode::BAD_REQUEST, "invalid_payload"),
        ("[1, 2]", StatusCode::BAD_REQUEST, "invalid_payload"),
        ("{}", StatusCode::BAD_REQUEST, "no_text"),
        (r#"{"text": ""}"#, StatusCode::BAD_REQUEST, "no_text"),
        (
            r#"{"blocks": [{"type": "nope"}]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_blocks",
        ),
        (
            r#"{"text": "x", "blocks": {"type": "divider"}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_blocks_format",
        ),
    ] {
        let reply = hook(&h, "/services/T0HANDOFF/B0OTHER/abc", body).await;
        assert_eq!(
            (reply.status, reply.text.as_str()),
            (status, error),
            "{body}"
        );
    }
    let unknown = hook(&h, "/services/X1/Y2/abc", r#"{"text": "hi"}"#).await;
    assert_eq!(
        (unknown.status, unknown.text.as_str()),
        (StatusCode::NOT_FOUND, "no_service")
    );

    let blocks = hook(
        &h,
        "/services/T0HANDOFF/B0BLOCKS/abc",
        &json!({"text": "fallback", "blocks": lead_blocks()}).to_string(),
    )
    .await;
    assert_eq!(
        (blocks.status, blocks.text.as_str()),
        (StatusCode::OK, "ok")
    );

    let all = messages(&h, "").await;
    assert_eq!(all.len(), 2, "refused payloads are not stored");
    assert_eq!(all[0].channel, "B0LEADS");
    assert_eq!(all[0].via, "webhook");
    assert_eq!(all[0].text.as_deref(), Some("New lead: Ada"));
    assert_eq!(Value::Array(all[1].blocks.clone()), lead_blocks());
    assert!(all[0].ts < all[1].ts);
    assert_eq!(messages(&h, "?channel=B0BLOCKS").await.len(), 1);
    assert_eq!(h.sandbox.slack_messages(), all);

    let stats = h.stats().await;
    assert_eq!(stats.count("POST /services/{team}/{bot}/{secret}", 200), 2);
    assert_eq!(stats.count("POST /services/{team}/{bot}/{secret}", 400), 6);
    assert_eq!(stats.count("POST /services/{team}/{bot}/{secret}", 404), 1);
}

#[tokio::test]
async fn post_message_needs_a_token() {
    let h = Harness::with(SandboxConfig {
        token: Some("xoxb-right".to_owned()),
        ..SandboxConfig::ephemeral()
    })
    .await;
    let body = json!({"channel": "C1", "text": "hi"});
    let none = raw(h.http.post(h.url(POST_MESSAGE)).json(&body)).await;
    assert_eq!(none.status, StatusCode::OK, "Slack's errors are 200s");
    assert_eq!(none.json(), json!({"ok": false, "error": "not_authed"}));
    let wrong = raw(h
        .http
        .post(h.url(POST_MESSAGE))
        .bearer_auth("xoxb-wrong")
        .json(&body))
    .await;
    assert_eq!(wrong.json(), json!({"ok": false, "error": "invalid_auth"}));
    let basic = raw(h
        .http
        .post(h.url(POST_MESSAGE))
        .header("authorization", "Basic eG94Yg==")
        .json(&body))
    .await;
    assert_eq!(basic.json()["error"], "invalid_auth");
    assert!(messages(&h, "").await.is_empty());

    let right = chat(&h, &body).await;
    assert_eq!(right.json()["ok"], true, "{}", right.text);
}

#[tokio::test]
async fn post_message_checks_the_message() {
    let h = Harness::start().await;
    let no_text = chat(&h, &json!({"channel": "C1"})).await;
    assert_eq!(no_text.status, StatusCode::OK);
    assert_eq!(no_text.json(), json!({"ok": false, "error": "no_text"}));
    let no_channel = chat(&h, &json!({"text": "hi"})).await;
    assert_eq!(no_channel.json()["error"], "channel_not_found");
    let not_json = raw(h
        .http
        .post(h.url(POST_MESSAGE))
        .bearer_auth(&h.token)
        .body("channel=C1&text=hi"))
    .await;
    assert_eq!(not_json.json()["error"], "invalid_json");

    let long = "x".repeat(3001);
    let invalid = chat(
        &h,
        &json!({"channel": "C1", "text": "hi", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": long}}
        ]}),
    )
    .await;
    assert_eq!(invalid.status, StatusCode::OK);
    let body = invalid.json();
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"], "invalid_blocks");
    assert_eq!(
        body["errors"],
        json!(["must be less than 3001 characters [json-pointer:/blocks/0/text/text]"])
    );

    let too_many = chat(
        &h,
        &json!({"channel": "C1", "blocks": vec![json!({"type": "divider"}); 51]}),
    )
    .await;
    assert_eq!(too_many.json()["error"], "invalid_blocks");
    assert!(messages(&h, "").await.is_empty());
}

#[tokio::test]
async fn post_message_answers_with_the_message() {
    let h = Harness::start().await;
    let reply = chat(
        &h,
        &json!({"channel": "C0LEADS", "text": "Ada is yours", "blocks": lead_blocks(), "unfurl_links": false}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["channel"], "C0LEADS");
    let ts = body["ts"].as_str().expect("a ts");
    let (secs, micros) = ts.split_once('.').expect("seconds.micros");
    assert!(
        secs.len() == 10 && secs.bytes().all(|b| b.is_ascii_digit()),
        "{ts}"
    );
    assert!(
        micros.len() == 6 && micros.bytes().all(|b| b.is_ascii_digit()),
        "{ts}"
    );
    let message = &body["message"];
    assert_eq!(message["type"], "message");
    assert_eq!(message["text"], "Ada is yours");
    assert_eq!(message["ts"], ts);
    assert_eq!(message["blocks"], lead_blocks());
    assert!(
        message["bot_id"]
            .as_str()
            .is_some_and(|id| id.starts_with('B'))
    );

    let stored = messages(&h, "?channel=C0LEADS").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].ts, ts);
    assert_eq!(stored[0].via, "chat.postMessage");
    assert!(messages(&h, "?channel=C0OTHER").await.is_empty());

    h.sandbox.reset();
    assert!(
        messages(&h, "").await.is_empty(),
        "a reset forgets messages"
    );
}

#[tokio::test]
async fn seeded_channels_are_the_only_ones() {
    let h = Harness::with(SandboxConfig {
        seed: Seed {
            slack_channels: vec![SlackChannel {
                id: "C0HANDOFF".to_owned(),
                name: "handoffs".to_owned(),
            }],
            ..Seed::demo()
        },
        slack_per_second: 0,
        ..SandboxConfig::ephemeral()
    })
    .await;
    let unknown = chat(&h, &json!({"channel": "#general", "text": "hi"})).await;
    assert_eq!(
        unknown.json(),
        json!({"ok": false, "error": "channel_not_found"})
    );
    for given in ["#handoffs", "handoffs", "C0HANDOFF"] {
        let reply = chat(&h, &json!({"channel": given, "text": "hi"})).await;
        assert_eq!(reply.json()["channel"], "C0HANDOFF", "{given}");
    }
    assert_eq!(messages(&h, "?channel=%23handoffs").await.len(), 3);
}

#[tokio::test]
async fn one_message_per_second_per_channel() {
    let h = Harness::start().await;
    let first = chat(&h, &json!({"channel": "C1", "text": "one"})).await;
    assert_eq!(first.json()["ok"], true);
    // Slack's default: a second message within the second is refused.
    let second = chat(&h, &json!({"channel": "C1", "text": "two"})).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.retry_after(), Some("1"));
    assert_eq!(second.json(), json!({"ok": false, "error": "ratelimited"}));
    let other = chat(&h, &json!({"channel": "C2", "text": "elsewhere"})).await;
    assert_eq!(
        other.json()["ok"],
        true,
        "another channel has its own budget"
    );

    let hook_one = hook(&h, WEBHOOK, r#"{"text": "one"}"#).await;
    assert_eq!(hook_one.status, StatusCode::OK);
    let hook_two = hook(&h, WEBHOOK, r#"{"text": "two"}"#).await;
    assert_eq!(
        (hook_two.status, hook_two.text.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(hook_two.retry_after(), Some("1"));
    let stats = h.stats().await;
    assert_eq!(stats.throttled, 2);
    assert_eq!(stats.count("POST /api/chat.postMessage", 429), 1);

    // A short window lets the test see the budget come back without waiting a second.
    h.configure(json!({"slack_window_ms": 100})).await;
    let config = h.inspect("/_sandbox/config").await;
    assert_eq!(
        (&config["slack_per_second"], &config["slack_window_ms"]),
        (&json!(1), &json!(100))
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = chat(&h, &json!({"channel": "C1", "text": "three"})).await;
    assert_eq!(again.json()["ok"], true, "{}", again.text);

    let texts: Vec<Option<String>> = messages(&h, "?channel=C1")
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, [Some("one".to_owned()), Some("three".to_owned())]);

    h.configure(json!({"slack_per_second": 0})).await;
    for n in 0..5 {
        let reply = chat(&h, &json!({"channel": "C9", "text": n.to_string()})).await;
        assert_eq!(reply.status, StatusCode::OK, "unlimited: {n}");
    }
}

#[tokio::test]
async fn unknown_web_api_methods() {
    let h = Harness::start().await;
    let reply = raw(h
        .http
        .post(h.url("/api/chat.scheduleMessage"))
        .bearer_auth(&h.token))
    .await;
    assert_eq!(
        reply.json(),
        json!({"ok": false, "error": "unknown_method"})
    );
}
