//! Slack's incoming webhooks and `chat.postMessage`: Block Kit checks, Slack's error
//! answers and its limit of about one message per second per channel.
//!
//! Answers follow Slack: a webhook says `ok` (text) or an error string with a 4xx
//! status; the Web API answers HTTP 200 with `{"ok": false, "error": …}` for every
//! error but the rate limit, which is a 429 with `Retry-After` in seconds. Each webhook
//! is its own channel, named by its `B…` segment. Every accepted message is kept for
//! `GET /_sandbox/slack/messages`.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::errors::ApiError;
use super::limits::{Admission, Limits, RateLimiter};
use super::{Shared, requests};

/// Slack allows about one message per second per channel.
pub(crate) const DEFAULT_MESSAGES_PER_SECOND: u32 = 1;

/// Block Kit's limits for a message.
const MAX_BLOCKS: usize = 50;
const MAX_SECTION_TEXT: usize = 3_000;
const MAX_FIELD_TEXT: usize = 2_000;
const MAX_FIELDS: usize = 10;
const MAX_HEADER_TEXT: usize = 150;
const MAX_ACTIONS: usize = 25;
const MAX_CONTEXT_ELEMENTS: usize = 10;
const MAX_BUTTON_TEXT: usize = 75;
const MAX_ID: usize = 255;
const MAX_URL: usize = 3_000;
const MAX_VALUE: usize = 2_000;
const MAX_ALT_TEXT: usize = 2_000;
const MAX_MARKDOWN: usize = 12_000;
/// Slack truncates longer `text`; the sandbox refuses it (`msg_too_long`) so a client notices.
const MAX_TEXT: usize = 40_000;
const MAX_ATTACHMENTS: usize = 100;

const WEBHOOK: &str = "POST /services/{team}/{bot}/{secret}";
const POST_MESSAGE: &str = "POST /api/chat.postMessage";
const UNKNOWN_METHOD: &str = "POST /api/{method}";

/// The ids the sandbox's bot posts as.
const BOT_ID: &str = "B0SANDBOX01";
const BOT_USER: &str = "U0SANDBOX01";
const APP_ID: &str = "A0SANDBOX01";
const TEAM_ID: &str = "T0SANDBOX01";

/// A channel `chat.postMessage` may post to, when channels are seeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackChannel {
    /// The channel id (`C0123ABCD`), which answers name.
    pub id: String,
    /// The name without `#` (`handoffs`); `#handoffs` and `handoffs` both find it.
    pub name: String,
}

/// One accepted message, as `GET /_sandbox/slack/messages` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackMessage {
    /// The channel id (or, without seeded channels, the channel as given); a webhook's `B…` id.
    pub channel: String,
    /// Slack's message id, `"seconds.micros"`, increasing.
    pub ts: String,
    /// `"webhook"` or `"chat.postMessage"`.
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    pub posted_at: DateTime<Utc>,
}

/// Slack's part of the sandbox's data.
#[derive(Debug)]
pub(crate) struct SlackState {
    pub messages: Vec<SlackMessage>,
    channels: Vec<SlackChannel>,
    limits: Limits,
    /// One limiter per channel, made on its first message.
    limiters: HashMap<String, RateLimiter>,
    /// The last `ts` handed out, in microseconds, so two messages never share one.
    last_ts: i64,
}

impl SlackState {
    pub(crate) fn new(per_second: u32, channels: &[SlackChannel]) -> Self {
        SlackState {
            messages: Vec::new(),
            channels: channels.to_vec(),
            limits: Limits {
                burst_per_10s: per_second,
                daily_limit: 0,
                window_ms: 1_000,
            },
            limiters: HashMap::new(),
            last_ts: 0,
        }
    }

    /// Messages per window (`burst_per_10s`) and the window (`window_ms`, 1,000 unless shortened).
    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        for limiter in self.limiters.values_mut() {
            limiter.set_limits(limits);
        }
    }

    /// Forgets the messages counted against the limit; the messages stay.
    pub(crate) fn clear_limiters(&mut self) {
        self.limiters.clear();
    }

    pub(crate) fn add_channels(&mut self, channels: &[SlackChannel]) {
        self.channels.extend_from_slice(channels);
    }

    /// The channel a `channel` argument names: with seeded channels its id (found by
    /// id, name or `#name`), else the argument itself.
    fn resolve(&self, channel: &str) -> Option<String> {
        let channel = channel.trim();
        if channel.is_empty() {
            return None;
        }
        if self.channels.is_empty() {
            return Some(channel.to_owned());
        }
        let name = channel.strip_prefix('#').unwrap_or(channel);
        self.channels
            .iter()
            .find(|c| c.id == channel || c.name == name)
            .map(|c| c.id.clone())
    }

    /// Admits one message to `channel` at `now`, or says how many seconds to wait.
    fn admit(&mut self, channel: &str, now: Instant, wall: DateTime<Utc>) -> Result<(), u64> {
        if self.limits.burst_per_10s == 0 {
            return Ok(());
        }
        let limiter = match self.limiters.get_mut(channel) {
            Some(limiter) => limiter,
            None => self
                .limiters
                .entry(channel.to_owned())
                .or_insert_with(|| RateLimiter::new(self.limits)),
        };
        match limiter.admit(now, wall) {
            Admission::Admitted(_) => Ok(()),
            Admission::Throttled {
                retry_after_secs, ..
            } => Err(retry_after_secs),
        }
    }

    fn next_ts(&mut self, wall: DateTime<Utc>) -> String {
        let micros = wall.timestamp_micros().max(self.last_ts + 1);
        self.last_ts = micros;
        format!(
            "{}.{:06}",
            micros.div_euclid(1_000_000),
            micros.rem_euclid(1_000_000)
        )
    }
}

/// Slack's API routes (logged and counted like every vendor's).
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/api/chat.postMessage", post(post_message))
        .route("/api/{method}", post(unknown_method).get(unknown_method))
}

/// The inspection route, outside the logged API.
pub(super) fn inspect_router() -> Router<Shared> {
    Router::new().route("/_sandbox/slack/messages", get(list_messages))
}

/// Masks a webhook's secret: `/services/T…/B…/secret` → `/services/T…/B…/***`.
pub(crate) fn masked_path(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/services/") {
        let segments: Vec<&str> = rest.split('/').collect();
        if let [team, bot, _secret] = segments.as_slice()
            && is_webhook(team, bot)
        {
            return format!("/services/{team}/{bot}/***");
        }
    }
    path.to_owned()
}

/// Whether `/services/{team}/{bot}/…` is shaped like a webhook (`T…`, `B…`) and not
/// one of Salesforce's `/services/data/…` or `/services/oauth2/…` paths.
fn is_webhook(team: &str, bot: &str) -> bool {
    let id = |s: &str, prefix: char| {
        s.len() > 1 && s.starts_with(prefix) && s.chars().all(|c| c.is_ascii_alphanumeric())
    };
    id(team, 'T') && id(bot, 'B')
}

/// What a message body carries, read leniently as Slack does (unknown fields are ignored).
struct Content {
    text: Option<String>,
    blocks: Vec<Value>,
    attachments: Vec<Value>,
    thread_ts: Option<String>,
}

/// Why a message body was refused; the string is Slack's error code.
#[derive(Debug, PartialEq)]
enum Refusal {
    NoText,
    MsgTooLong,
    TooManyAttachments,
    InvalidBlocksFormat,
    InvalidBlocks(Vec<String>),
    InvalidAttachments,
}

impl Refusal {
    fn code(&self) -> &'static str {
        match self {
            Refusal::NoText => "no_text",
            Refusal::MsgTooLong => "msg_too_long",
            Refusal::TooManyAttachments => "too_many_attachments",
            Refusal::InvalidBlocksFormat => "invalid_blocks_format",
            Refusal::InvalidBlocks(_) => "invalid_blocks",
            Refusal::InvalidAttachments => "invalid_attachments",
        }
    }
}

/// Reads and checks the message fields of a body: text, blocks, attachments.
fn content(body: &Map<String, Value>) -> Result<Content, Refusal> {
    let text = match body.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        // Slack coerces scalars to text.
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        Some(_) => return Err(Refusal::NoText),
    };
    // Form posts carry blocks as a JSON string; JSON bodies may do the same.
    let blocks = match body.get("blocks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(encoded)) => match serde_json::from_str::<Value>(encoded) {
            Ok(Value::Array(blocks)) => blocks,
            _ => return Err(Refusal::InvalidBlocksFormat),
        },
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(_) => return Err(Refusal::InvalidBlocksFormat),
    };
    let attachments = match body.get("attachments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(attachments)) => attachments.clone(),
        Some(_) => return Err(Refusal::InvalidAttachments),
    };
    let has_text = text.as_deref().is_some_and(|t| !t.trim().is_empty());
    if !has_text && blocks.is_empty() && attachments.is_empty() {
        return Err(Refusal::NoText);
    }
    if text
        .as_deref()
        .is_some_and(|t| t.chars().count() > MAX_TEXT)
    {
        return Err(Refusal::MsgTooLong);
    }
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(Refusal::TooManyAttachments);
    }
    if !attachments.iter().all(Value::is_object) {
        return Err(Refusal::InvalidAttachments);
    }
    let errors = check_blocks(&blocks);
    if !errors.is_empty() {
        return Err(Refusal::InvalidBlocks(errors));
    }
    let thread_ts = match body.get("thread_ts") {
        Some(Value::String(ts)) if !ts.is_empty() => Some(ts.clone()),
        Some(Value::Number(ts)) => Some(ts.to_string()),
        _ => None,
    };
    Ok(Content {
        text,
        blocks,
        attachments,
        thread_ts,
    })
}

/// Block Kit's structural rules for a message's blocks, as Slack reports breaking them:
/// `"<problem> [json-pointer:/blocks/0/text/text]"`. Empty when they hold.
pub(crate) fn check_blocks(blocks: &[Value]) -> Vec<String> {
    let mut check = Checker::default();
    if blocks.len() > MAX_BLOCKS {
        check.fail(
            "/blocks",
            format_args!("no more than {MAX_BLOCKS} items allowed"),
        );
    }
    let mut block_ids = HashSet::new();
    for (i, block) in blocks.iter().enumerate() {
        let pointer = format!("/blocks/{i}");
        if let Some(id) = block.get("block_id").and_then(Value::as_str)
            && !block_ids.insert(id)
        {
            check.fail(
                &format!("{pointer}/block_id"),
                "block_id must be unique within the message",
            );
        }
        check.block(block, &pointer);
    }
    check.errors
}

const BLOCK_TYPES: [&str; 11] = [
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "video",
];

/// Interactive elements, as `actions` blocks and section accessories take them.
const INTERACTIVE: [&str; 20] = [
    "button",
    "checkboxes",
    "datepicker",
    "datetimepicker",
    "timepicker",
    "overflow",
    "radio_buttons",
    "static_select",
    "external_select",
    "users_select",
    "conversations_select",
    "channels_select",
    "multi_static_select",
    "multi_external_select",
    "multi_users_select",
    "multi_conversations_select",
    "multi_channels_select",
    "workflow_button",
    "rich_text_input",
    "plain_text_input",
];

#[derive(Default)]
struct Checker {
    errors: Vec<String>,
}

impl Checker {
    fn fail(&mut self, pointer: &str, problem: impl Display) {
        self.errors
            .push(format!("{problem} [json-pointer:{pointer}]"));
    }

    fn block(&mut self, block: &Value, pointer: &str) {
        let Some(block) = block.as_object() else {
            self.fail(pointer, "expected an object");
            return;
        };
        let Some(kind) = block.get("type").and_then(Value::as_str) else {
            self.fail(pointer, "missing required field: type");
            return;
        };
        if !BLOCK_TYPES.contains(&kind) {
            self.fail(
                &format!("{pointer}/type"),
                format_args!("unsupported type: {kind}"),
            );
            return;
        }
        self.optional_string(block, pointer, "block_id", MAX_ID);
        match kind {
            "section" => {
                let has_fields = block.contains_key("fields");
                if block.contains_key("text") || !has_fields {
                    self.text_object(block, pointer, "text", MAX_SECTION_TEXT, false);
                }
                if has_fields {
                    self.section_fields(block, pointer);
                }
                if let Some(accessory) = block.get("accessory") {
                    let mut allowed = INTERACTIVE.to_vec();
                    allowed.push("image");
                    self.element(accessory, &format!("{pointer}/accessory"), &allowed);
                }
            }
            "header" => self.text_object(block, pointer, "text", MAX_HEADER_TEXT, true),
            "image" => {
                if !block.contains_key("slack_file") {
                    self.required_string(block, pointer, "image_url", MAX_URL);
                }
                self.required_string(block, pointer, "alt_text", MAX_ALT_TEXT);
                if block.contains_key("title") {
                    self.text_object(block, pointer, "title", MAX_ALT_TEXT, true);
                }
            }
            "actions" => {
                let elements = self.elements(block, pointer, MAX_ACTIONS);
                let mut action_ids = HashSet::new();
                for (i, element) in elements.iter().enumerate() {
                    let at = format!("{pointer}/elements/{i}");
                    if let Some(id) = element.get("action_id").and_then(Value::as_str)
                        && !action_ids.insert(id)
                    {
                        self.fail(
                            &format!("{at}/action_id"),
                            "action_id must be unique within the block",
                        );
                    }
                    self.element(element, &at, &INTERACTIVE);
                }
            }
            "context" => {
                let elements = self.elements(block, pointer, MAX_CONTEXT_ELEMENTS);
                for (i, element) in elements.iter().enumerate() {
                    let at = format!("{pointer}/elements/{i}");
                    match element.get("type").and_then(Value::as_str) {
                        Some("image") => self.element(element, &at, &["image"]),
                        Some("plain_text" | "mrkdwn") => self.text(element, &at, 3_000, false),
                        _ => self.fail(&at, "expected an image element or a text object"),
                    }
                }
            }
            "input" => {
                self.text_object(block, pointer, "label", MAX_ALT_TEXT, true);
                match block.get("element") {
                    Some(element) => {
                        self.element(element, &format!("{pointer}/element"), &INTERACTIVE);
                    }
                    None => self.fail(pointer, "missing required field: element"),
                }
            }
            "rich_text" if !block.get("elements").is_some_and(Value::is_array) => {
                self.fail(pointer, "missing required field: elements");
            }
            "markdown" => self.required_string(block, pointer, "text", MAX_MARKDOWN),
            // divider, file, video: only their type is checked.
            _ => {}
        }
    }

    fn section_fields(&mut self, block: &Map<String, Value>, pointer: &str) {
        let Some(fields) = block.get("fields").and_then(Value::as_array) else {
            self.fail(&format!("{pointer}/fields"), "expected an array");
            return;
        };
        if fields.is_empty() || fields.len() > MAX_FIELDS {
            self.fail(
                &format!("{pointer}/fields"),
                format_args!("must hold 1 to {MAX_FIELDS} items"),
            );
        }
        for (i, field) in fields.iter().enumerate() {
            self.text(
                field,
                &format!("{pointer}/fields/{i}"),
                MAX_FIELD_TEXT,
                false,
            );
        }
    }

    /// The `elements` array of an `actions` or `context` block.
    fn elements<'a>(
        &mut self,
        block: &'a Map<String, Value>,
        pointer: &str,
        max: usize,
    ) -> &'a [Value] {
        match block.get("elements").and_then(Value::as_array) {
            Some(elements) if !elements.is_empty() && elements.len() <= max => elements,
            Some(elements) if !elements.is_empty() => {
                self.fail(
                    &format!("{pointer}/elements"),
                    format_args!("no more than {max} items allowed"),
                );
                elements
            }
            Some(_) => {
                self.fail(
                    &format!("{pointer}/elements"),
                    "must provide at least 1 item",
                );
                &[]
            }
            None => {
                self.fail(pointer, "missing required field: elements");
                &[]
            }
        }
    }

    fn element(&mut self, element: &Value, pointer: &str, allowed: &[&str]) {
        let Some(object) = element.as_object() else {
            self.fail(pointer, "expected an object");
            return;
        };
        let Some(kind) = object.get("type").and_then(Value::as_str) else {
            self.fail(pointer, "missing required field: type");
            return;
        };
        if !allowed.contains(&kind) {
            self.fail(
                &format!("{pointer}/type"),
                format_args!("unsupported type: {kind}"),
            );
            return;
        }
        self.optional_string(object, pointer, "action_id", MAX_ID);
        match kind {
            "button" => {
                self.text_object(object, pointer, "text", MAX_BUTTON_TEXT, true);
                self.optional_string(object, pointer, "url", MAX_URL);
                self.optional_string(object, pointer, "value", MAX_VALUE);
                if let Some(style) = object.get("style")
                    && !matches!(style.as_str(), Some("primary" | "danger"))
                {
                    self.fail(
                        &format!("{pointer}/style"),
                        "must be one of: primary, danger",
                    );
                }
            }
            "image" => {
                if !object.contains_key("slack_file") {
                    self.required_string(object, pointer, "image_url", MAX_URL);
                }
                self.required_string(object, pointer, "alt_text", MAX_ALT_TEXT);
            }
            _ => {}
        }
    }

    /// A text object under `field` of `parent`: required, `plain_text` (or `mrkdwn`
    /// unless `plain_only`), with 1 to `max` characters.
    fn text_object(
        &mut self,
        parent: &Map<String, Value>,
        pointer: &str,
        field: &str,
        max: usize,
        plain_only: bool,
    ) {
        match parent.get(field) {
            Some(text) => self.text(text, &format!("{pointer}/{field}"), max, plain_only),
            None => self.fail(pointer, format_args!("missing required field: {field}")),
        }
    }

    fn text(&mut self, text: &Value, pointer: &str, max: usize, plain_only: bool) {
        let Some(object) = text.as_object() else {
            self.fail(pointer, "expected a text object");
            return;
        };
        match object.get("type").and_then(Value::as_str) {
            Some("plain_text") => {}
            Some("mrkdwn") if !plain_only => {}
            Some(other) => {
                let allowed = if plain_only {
                    "plain_text"
                } else {
                    "plain_text, mrkdwn"
                };
                self.fail(
                    &format!("{pointer}/type"),
                    format_args!("must be one of: {allowed} (got {other})"),
                );
            }
            None => self.fail(pointer, "missing required field: type"),
        }
        self.required_string(object, pointer, "text", max);
    }

    fn required_string(
        &mut self,
        parent: &Map<String, Value>,
        pointer: &str,
        field: &str,
        max: usize,
    ) {
        match parent.get(field) {
            Some(_) => self.optional_string(parent, pointer, field, max),
            None => self.fail(pointer, format_args!("missing required field: {field}")),
        }
    }

    fn optional_string(
        &mut self,
        parent: &Map<String, Value>,
        pointer: &str,
        field: &str,
        max: usize,
    ) {
        let Some(value) = parent.get(field) else {
            return;
        };
        let at = format!("{pointer}/{field}");
        match value.as_str() {
            None => self.fail(&at, "expected a string"),
            Some("") => self.fail(&at, "must be more than 0 characters"),
            Some(text) if text.chars().count() > max => {
                self.fail(
                    &at,
                    format_args!("must be less than {} characters", max + 1),
                );
            }
            Some(_) => {}
        }
    }
}

/// Counts the request under `endpoint` for the stats and the request log.
fn count(state: &Shared, endpoint: &str, status: StatusCode) {
    requests::note_endpoint(endpoint);
    state.lock().stats.record(endpoint, status.as_u16());
}

/// A webhook's plain-text answer.
fn webhook_answer(state: &Shared, status: StatusCode, body: &'static str) -> Response {
    count(state, WEBHOOK, status);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        body,
    )
        .into_response()
}

/// A request under `/services` that no Salesforce route took: `/services/{team}/{bot}/{secret}`
/// is Slack's (an incoming webhook), unless it is under Salesforce's `data` or `oauth2`;
/// anything else is `None`, for Salesforce's 404. (Salesforce's router owns `/services`,
/// so a webhook route of its own would shadow Salesforce's unknown-route answers.)
pub(super) fn webhook_fallback(
    state: &Shared,
    method: &Method,
    path: &str,
    body: &Bytes,
) -> Option<Response> {
    let rest = path.strip_prefix("/services/")?;
    let [team, bot, secret] = rest.split('/').collect::<Vec<_>>()[..] else {
        return None;
    };
    if matches!(team, "data" | "oauth2") {
        return None;
    }
    if method != Method::POST {
        requests::note_endpoint(WEBHOOK);
        return Some(ApiError::MethodNotAllowed(method.to_string()).into_response());
    }
    Some(webhook(state, team, bot, secret, body))
}

/// `POST /services/{team}/{bot}/{secret}`: an incoming webhook.
fn webhook(state: &Shared, team: &str, bot: &str, secret: &str, body: &Bytes) -> Response {
    if !is_webhook(team, bot) || secret.is_empty() {
        return webhook_answer(state, StatusCode::NOT_FOUND, "no_service");
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return webhook_answer(state, StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let content = match content(&body) {
        Ok(content) => content,
        Err(refusal) => {
            return webhook_answer(state, StatusCode::BAD_REQUEST, refusal.code());
        }
    };
    let posted = accept(state, bot.to_owned(), "webhook", content);
    match posted {
        Ok(_) => webhook_answer(state, StatusCode::OK, "ok"),
        Err(retry_after) => {
            let mut response = webhook_answer(state, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
    }
}

/// Admits and stores a message, or says how many seconds the channel must wait.
fn accept(
    state: &Shared,
    channel: String,
    via: &str,
    content: Content,
) -> Result<SlackMessage, u64> {
    let wall = Utc::now();
    let mut data = state.lock();
    let slack = &mut data.slack;
    slack.admit(&channel, Instant::now(), wall)?;
    let message = SlackMessage {
        ts: slack.next_ts(wall),
        channel,
        via: via.to_owned(),
        text: content.text,
        blocks: content.blocks,
        attachments: content.attachments,
        thread_ts: content.thread_ts,
        posted_at: wall,
    };
    slack.messages.push(message.clone());
    Ok(message)
}

/// A Web API answer: HTTP 200 whatever `ok` says, as Slack does.
fn api_answer(state: &Shared, endpoint: &str, body: Value) -> Response {
    count(state, endpoint, StatusCode::OK);
    axum::Json(body).into_response()
}

fn api_error(state: &Shared, endpoint: &str, error: &str) -> Response {
    api_answer(state, endpoint, json!({"ok": false, "error": error}))
}

/// The bearer token of a Web API call: `not_authed` without one, `invalid_auth` when refused.
fn check_token(headers: &HeaderMap, expected: Option<&str>) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("not_authed");
    };
    let value = value.to_str().map_err(|_| "invalid_auth")?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err("invalid_auth"),
    };
    if token.is_empty() {
        return Err("not_authed");
    }
    if expected.is_some_and(|expected| expected != token) {
        return Err("invalid_auth");
    }
    Ok(())
}

/// `POST /api/chat.postMessage` with a JSON body.
async fn post_message(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(error) = check_token(&headers, state.token()) {
        return api_error(&state, POST_MESSAGE, error);
    }
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return api_error(&state, POST_MESSAGE, "json_not_object"),
        Err(_) => return api_error(&state, POST_MESSAGE, "invalid_json"),
    };
    let requested = body.get("channel").and_then(Value::as_str).unwrap_or("");
    // Bound first, so the lock is released before an error answer counts the request.
    let resolved = state.lock().slack.resolve(requested);
    let Some(channel) = resolved else {
        return api_error(&state, POST_MESSAGE, "channel_not_found");
    };
    let content = match content(&body) {
        Ok(content) => content,
        Err(Refusal::InvalidBlocks(errors)) => {
            return api_answer(
                &state,
                POST_MESSAGE,
                json!({
                    "ok": false,
                    "error": "invalid_blocks",
                    "errors": errors,
                    "response_metadata": {"messages": errors.iter().map(|e| format!("[ERROR] {e}")).collect::<Vec<_>>()},
                }),
            );
        }
        Err(refusal) => return api_error(&state, POST_MESSAGE, refusal.code()),
    };
    match accept(&state, channel, "chat.postMessage", content) {
        Ok(message) => {
            let mut shown = json!({
                "type": "message",
                "user": BOT_USER,
                "bot_id": BOT_ID,
                "app_id": APP_ID,
                "team": TEAM_ID,
                "text": message.text.clone().unwrap_or_default(),
                "ts": message.ts,
            });
            if !message.blocks.is_empty() {
                shown["blocks"] = Value::Array(message.blocks.clone());
            }
            if !message.attachments.is_empty() {
                shown["attachments"] = Value::Array(message.attachments.clone());
            }
            if let Some(thread_ts) = &message.thread_ts {
                shown["thread_ts"] = Value::String(thread_ts.clone());
            }
            api_answer(
                &state,
                POST_MESSAGE,
                json!({"ok": true, "channel": message.channel, "ts": message.ts, "message": shown}),
            )
        }
        Err(retry_after) => {
            count(&state, POST_MESSAGE, StatusCode::TOO_MANY_REQUESTS);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
    }
}

/// Any other Web API method: Slack's `unknown_method`.
async fn unknown_method(State(state): State<Shared>) -> Response {
    api_error(&state, UNKNOWN_METHOD, "unknown_method")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    channel: Option<String>,
}

/// `GET /_sandbox/slack/messages?channel=`: every accepted message, oldest first.
async fn list_messages(
    State(state): State<Shared>,
    Query(query): Query<MessagesQuery>,
) -> Response {
    let data = state.lock();
    let wanted = query.channel.as_deref().map(|channel| {
        data.slack
            .resolve(channel)
            .unwrap_or_else(|| channel.to_owned())
    });
    let messages: Vec<&SlackMessage> = data
        .slack
        .messages
        .iter()
        .filter(|m| wanted.as_deref().is_none_or(|wanted| m.channel == wanted))
        .collect();
    axum::Json(json!({"total": messages.len(), "messages": messages})).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn section(text: &str) -> Value {
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    }

    #[test]
    fn a_lead_alert_passes() {
        let blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": "New hot lead"}}),
            json!({"type": "section", "block_id": "lead", "fields": [
                {"type": "mrkdwn", "text": "*Name*\nAda"},
                {"type": "mrkdwn", "text": "*Score*\n92"}
            ], "accessory": {"type": "image", "image_url": "https://x.io/a.png", "alt_text": "logo"}}),
            json!({"type": "divider"}),
            json!({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Claim lead"}, "action_id": "claim", "value": "lead-1", "style": "primary"},
                {"type": "button", "text": {"type": "plain_text", "text": "Open in CRM"}, "action_id": "open", "url": "https://app.hubspot.com/contacts/1/record/0-1/1001"}
            ]}),
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": "via handoff"}]}),
        ];
        assert_eq!(check_blocks(&blocks), Vec::<String>::new());
    }

    #[test]
    fn structural_errors_name_the_place() {
        let long = "x".repeat(MAX_SECTION_TEXT + 1);
        let blocks = vec![
            section(&long),
            json!({"type": "carousel"}),
            json!("not an object"),
            json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "mrkdwn", "text": "Go"}}]}),
            json!({"type": "section"}),
            json!({"type": "image", "image_url": "https://x.io/a.png"}),
        ];
        assert_eq!(
            check_blocks(&blocks),
            [
                "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
                "unsupported type: carousel [json-pointer:/blocks/1/type]",
                "expected an object [json-pointer:/blocks/2]",
                "must be one of: plain_text (got mrkdwn) [json-pointer:/blocks/3/elements/0/text/type]",
                "missing required field: text [json-pointer:/blocks/4]",
                "missing required field: alt_text [json-pointer:/blocks/5]",
            ]
        );
        // Exactly at the limit is fine.
        assert!(check_blocks(&[section(&"x".repeat(MAX_SECTION_TEXT))]).is_empty());
    }

    #[test]
    fn at_most_fifty_blocks() {
        let fifty = vec![json!({"type": "divider"}); MAX_BLOCKS];
        assert!(check_blocks(&fifty).is_empty());
        let fifty_one = vec![json!({"type": "divider"}); MAX_BLOCKS + 1];
        assert_eq!(
            check_blocks(&fifty_one),
            ["no more than 50 items allowed [json-pointer:/blocks]"]
        );
    }

    #[test]
    fn content_needs_text_or_blocks() {
        let body = |v: Value| v.as_object().cloned().expect("an object");
        assert_eq!(
            content(&body(json!({"text": "  "}))).err(),
            Some(Refusal::NoText)
        );
        assert_eq!(
            content(&body(json!({"blocks": []}))).err(),
            Some(Refusal::NoText)
        );
        assert_eq!(
            content(&body(json!({"text": "hi", "blocks": {"type": "divider"}}))).err(),
            Some(Refusal::InvalidBlocksFormat)
        );
        let encoded = content(&body(json!({"blocks": "[{\"type\":\"divider\"}]"})))
            .expect("blocks as a JSON string");
        assert_eq!(encoded.blocks, [json!({"type": "divider"})]);
        assert_eq!(
            content(&body(json!({"text": "x".repeat(MAX_TEXT + 1)}))).err(),
            Some(Refusal::MsgTooLong)
        );
    }

    #[test]
    fn one_message_per_second_per_channel() {
        let mut slack = SlackState::new(1, &[]);
        let t0 = Instant::now();
        let wall = Utc::now();
        assert_eq!(slack.admit("C1", t0, wall), Ok(()));
        assert_eq!(
            slack.admit("C1", t0 + Duration::from_millis(400), wall),
            Err(1)
        );
        assert_eq!(
            slack.admit("C2", t0 + Duration::from_millis(400), wall),
            Ok(())
        );
        assert_eq!(slack.admit("C1", t0 + Duration::from_secs(1), wall), Ok(()));

        slack.set_limits(Limits {
            burst_per_10s: 0,
            ..slack.limits()
        });
        for _ in 0..10 {
            assert_eq!(slack.admit("C1", t0 + Duration::from_secs(1), wall), Ok(()));
        }
    }

    #[test]
    fn channels_resolve_by_id_or_name_when_seeded() {
        let open = SlackState::new(1, &[]);
        assert_eq!(open.resolve("#anything"), Some("#anything".to_owned()));
        assert_eq!(open.resolve(" "), None);
        let seeded = SlackState::new(
            1,
            &[SlackChannel {
                id: "C0HANDOFF".into(),
                name: "handoffs".into(),
            }],
        );
        for given in ["C0HANDOFF", "handoffs", "#handoffs"] {
            assert_eq!(seeded.resolve(given), Some("C0HANDOFF".to_owned()));
        }
        assert_eq!(seeded.resolve("#general"), None);
    }

    #[test]
    fn ts_values_increase_even_within_one_microsecond() {
        let mut slack = SlackState::new(1, &[]);
        let wall: DateTime<Utc> = "2026-03-02T10:00:00.000250Z".parse().expect("a timestamp");
        let first = slack.next_ts(wall);
        let second = slack.next_ts(wall);
        assert_eq!(first, "1772445600.000250");
        assert_eq!(second, "1772445600.000251");
    }

    #[test]
    fn only_webhook_shaped_paths_are_masked() {
        assert_eq!(masked_path("/services/T1/B2/s3cr3t"), "/services/T1/B2/***");
        assert_eq!(
            masked_path("/services/data/v60.0/query"),
            "/services/data/v60.0/query"
        );
        assert_eq!(
            masked_path("/services/oauth2/token"),
            "/services/oauth2/token"
        );
    }
}
