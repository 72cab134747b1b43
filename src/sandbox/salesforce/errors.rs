//! Salesforce's error shapes: a whole-request error is a JSON array of
//! `{message, errorCode, fields?}`; a per-record one (in collection results) is
//! `{statusCode, message, fields}`; OAuth answers `{error, error_description}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// sObject Collections take at most this many records (or ids) per call.
pub(crate) const MAX_COLLECTION: usize = 200;

/// A failure of a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SfError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Only single-record writes name fields at the top level.
    pub fields: Option<Vec<String>>,
}

impl SfError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        SfError {
            status,
            code,
            message: message.into(),
            fields: None,
        }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        SfError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn invalid_session() -> Self {
        SfError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    pub(crate) fn not_found() -> Self {
        SfError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    pub(crate) fn too_many_records() -> Self {
        SfError::bad_request(
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_COLLECTION} records into this call"
            ),
        )
    }

    pub(crate) fn request_limit() -> Self {
        SfError::new(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
    }

    /// A body that is not the JSON the resource takes.
    pub(crate) fn json_parser(detail: impl std::fmt::Display) -> Self {
        SfError::bad_request("JSON_PARSER_ERROR", detail.to_string())
    }

    /// An sObject type named in a body that the org does not have.
    pub(crate) fn unknown_type(name: &str) -> Self {
        SfError::bad_request("INVALID_TYPE", unsupported_type(name))
    }

    pub(crate) fn unknown_field(field: &str, sobject: &str) -> Self {
        SfError::bad_request(
            "INVALID_FIELD",
            format!("No such column '{field}' on sobject of type {sobject}"),
        )
    }

    /// A server error injected by the sandbox's faults.
    pub(crate) fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match status.as_u16() {
            503 => SfError::new(
                status,
                "SERVER_UNAVAILABLE",
                "Server temporarily unavailable. Please try again later.",
            ),
            _ => SfError::new(
                status,
                "UNKNOWN_EXCEPTION",
                format!(
                    "An unexpected error occurred. Please include this ErrorId if you contact support: {}-{} ({})",
                    rand::random::<u32>() % 1_000_000_000,
                    rand::random::<u32>() % 100_000,
                    -i64::from(rand::random::<u32>() % 1_000_000_000),
                ),
            ),
        }
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// A per-record error answered as a whole request (single-record endpoints).
    pub(crate) fn from_record(error: RecordError) -> Self {
        SfError {
            status: StatusCode::BAD_REQUEST,
            code: error.status_code,
            message: error.message,
            fields: Some(error.fields),
        }
    }
}

impl IntoResponse for SfError {
    fn into_response(self) -> Response {
        let mut entry = json!({"message": self.message, "errorCode": self.code});
        if let Some(fields) = self.fields {
            entry["fields"] = json!(fields);
        }
        let mut response = (self.status, axum::Json(json!([entry]))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
        }
        response
    }
}

/// Salesforce's words for a type it does not have (bodies and SOQL alike).
pub(crate) fn unsupported_type(name: &str) -> String {
    format!(
        "sObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names."
    )
}

/// One record's failure inside a collection result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RecordError {
    #[serde(rename = "statusCode")]
    pub status_code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub(crate) fn new(
        status_code: &'static str,
        message: impl Into<String>,
        fields: Vec<String>,
    ) -> Self {
        RecordError {
            status_code,
            message: message.into(),
            fields,
        }
    }

    pub(crate) fn rolled_back() -> Self {
        RecordError::new(
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "Record rolled back because not all records were valid and the request was using AllOrNone header",
            Vec::new(),
        )
    }

    /// As a Bulk API `sf__Error` cell: `CODE:message:fields --`.
    pub(crate) fn bulk_text(&self) -> String {
        format!(
            "{}:{}:{} --",
            self.status_code,
            self.message,
            self.fields.join(",")
        )
    }
}

/// An OAuth token endpoint failure: 400 `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub error: &'static str,
    pub description: &'static str,
}

impl OAuthError {
    pub(crate) const fn new(error: &'static str, description: &'static str) -> Self {
        OAuthError { error, description }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response()
    }
}
