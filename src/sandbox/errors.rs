//! HubSpot's error bodies: the whole-request `Error` and the per-record `StandardError`.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// HubSpot's batch endpoints reject more inputs than this with a 400.
pub(crate) const MAX_BATCH_INPUTS: usize = 100;

/// The portal id HubSpot names in some messages; any fixed number will do.
pub(crate) const PORTAL_ID: u64 = 4_242_424;

/// A HubSpot rate-limit policy, as named in a 429 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    TenSecondlyRolling,
    Daily,
    /// The search endpoints' own per-second limit.
    Secondly,
}

impl Policy {
    fn policy_name(self) -> &'static str {
        match self {
            Policy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Policy::Daily => "DAILY",
            Policy::Secondly => "SECONDLY",
        }
    }

    fn message_name(self) -> &'static str {
        match self {
            Policy::TenSecondlyRolling => "ten_secondly_rolling",
            Policy::Daily => "daily",
            Policy::Secondly => "secondly",
        }
    }
}

/// A failure of a whole request, rendered as HubSpot renders it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The body or query is malformed or breaks a rule that applies to the whole batch.
    #[error("{0}")]
    Validation(String),
    #[error(
        "The maximum number of inputs supported in a batch is {}. Please reduce the number of items and try again",
        MAX_BATCH_INPUTS
    )]
    TooManyInputs,
    #[error("Duplicate IDs found in batch input: [{}]. IDs must be unique", .0.join(", "))]
    DuplicateIds(Vec<String>),
    #[error("Object not found.  objectId are usually numeric.")]
    ObjectNotFound(String),
    /// A unique value is taken; batch create fails as a whole on the first one, as HubSpot does.
    #[error("{label} already exists. Existing ID: {existing}")]
    Conflict { label: &'static str, existing: u64 },
    #[error(
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
    )]
    Unauthenticated,
    #[error("You have reached your {} limit.", .policy.message_name())]
    RateLimited {
        policy: Policy,
        retry_after_secs: u64,
    },
    #[error("resource not found: {0}")]
    NoRoute(String),
    #[error("method {0} is not allowed on this resource")]
    MethodNotAllowed(String),
    /// A server error injected by [`super::Faults::error_rate`]: 500, 502 or 503.
    #[error("{}", injected_message(*.0))]
    Injected(u16),
}

fn injected_message(status: u16) -> &'static str {
    match status {
        502 => "Bad Gateway: the upstream service did not answer. Please try again.",
        503 => "Service Unavailable: the service is temporarily unavailable. Please try again.",
        _ => "internal error",
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::TooManyInputs | ApiError::DuplicateIds(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ObjectNotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Injected(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    fn body(&self) -> Value {
        let message = self.to_string();
        let correlation_id = correlation_id();
        match self {
            // A 429 is the one error HubSpot shapes differently: errorType and policyName, no category.
            ApiError::RateLimited { policy, .. } => json!({
                "status": "error",
                "message": message,
                "errorType": "RATE_LIMIT",
                "correlationId": correlation_id,
                "policyName": policy.policy_name(),
            }),
            ApiError::DuplicateIds(ids) => json!({
                "status": "error",
                "message": message,
                "correlationId": correlation_id,
                "context": { "ids": ids },
                "category": "VALIDATION_ERROR",
            }),
            ApiError::ObjectNotFound(id) => json!({
                "status": "error",
                "message": message,
                "correlationId": correlation_id,
                "context": { "id": [id] },
                "category": "OBJECT_NOT_FOUND",
            }),
            _ => json!({
                "status": "error",
                "message": message,
                "correlationId": correlation_id,
                "category": self.category(),
            }),
        }
    }

    fn category(&self) -> &'static str {
        match self {
            ApiError::Validation(_) | ApiError::TooManyInputs | ApiError::DuplicateIds(_) => {
                "VALIDATION_ERROR"
            }
            ApiError::ObjectNotFound(_) | ApiError::NoRoute(_) => "OBJECT_NOT_FOUND",
            ApiError::Conflict { .. } => "CONFLICT",
            ApiError::Unauthenticated => "INVALID_AUTHENTICATION",
            ApiError::RateLimited { .. } => "RATE_LIMITS",
            ApiError::MethodNotAllowed(_) => "VALIDATION_ERROR",
            ApiError::Injected(_) => "INTERNAL_ERROR",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// The input rejected by [`ApiError::Validation`] when a body is not the JSON we expect.
pub(crate) fn invalid_json(error: &serde_json::Error) -> ApiError {
    ApiError::Validation(format!(
        "Invalid input JSON on line {}, column {}: {}",
        error.line(),
        error.column(),
        error
    ))
}

/// One entry of HubSpot's "Property values were not valid" list.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PropertyError {
    #[serde(rename = "isValid")]
    pub is_valid: bool,
    pub message: String,
    pub error: &'static str,
    pub name: String,
}

impl PropertyError {
    pub(crate) fn new(name: &str, error: &'static str, message: String) -> Self {
        PropertyError {
            is_valid: false,
            message,
            error,
            name: name.to_owned(),
        }
    }
}

/// A per-record failure inside a 207 batch response (the spec's `StandardError`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StandardError {
    pub status: &'static str,
    pub category: &'static str,
    pub message: String,
    pub context: BTreeMap<&'static str, Vec<String>>,
    pub errors: Vec<Value>,
    pub links: BTreeMap<String, String>,
}

impl StandardError {
    pub(crate) fn new(category: &'static str, message: String, ids: Vec<String>) -> Self {
        StandardError {
            status: "error",
            category,
            message,
            context: BTreeMap::from([("ids", ids)]),
            errors: Vec::new(),
            links: BTreeMap::new(),
        }
    }

    /// HubSpot folds every invalid property of one input into a single message holding a JSON list.
    pub(crate) fn invalid_properties(id: &str, errors: &[PropertyError]) -> Self {
        let list = serde_json::to_string(errors).unwrap_or_else(|_| "[]".to_owned());
        StandardError::new(
            "VALIDATION_ERROR",
            format!("Property values were not valid: {list}"),
            vec![id.to_owned()],
        )
    }
}

/// A random version-4 UUID, as HubSpot puts in every error's `correlationId`.
pub(crate) fn correlation_id() -> String {
    let bits: u128 = rand::random();
    // Set the version (4) and variant (10xx) bits so the value is a well-formed UUID.
    let version = (bits & !(0xf_u128 << 76)) | (0x4_u128 << 76);
    let bits = (version & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_v4_uuids() {
        for _ in 0..100 {
            let id = correlation_id();
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'), "{id}");
            assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        }
    }

    #[test]
    fn invalid_property_message_matches_hubspot() {
        let error = StandardError::invalid_properties(
            "x",
            &[PropertyError::new(
                "email",
                "INVALID_EMAIL",
                "Email address x is invalid".into(),
            )],
        );
        assert_eq!(
            error.message,
            r#"Property values were not valid: [{"isValid":false,"message":"Email address x is invalid","error":"INVALID_EMAIL","name":"email"}]"#
        );
    }
}
