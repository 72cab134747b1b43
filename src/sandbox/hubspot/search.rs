//! `POST /crm/v3/objects/{type}/search`: filter groups (ORed) of filters (ANDed),
//! sorts, a free-text `query`, `limit` ≤ 200, `after` paging, and HubSpot's cap of
//! 10,000 results per query. Its own, lower rate limit is applied by the gate.

use std::cmp::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::super::Shared;
use super::super::errors::{ApiError, invalid_json};
use super::super::store::{ObjectType, Record};
use super::Paging;
use super::objects::{ObjectResult, object_result};

/// HubSpot's largest page.
pub(crate) const MAX_LIMIT: usize = 200;
/// HubSpot never pages past this many results of one query.
pub(crate) const MAX_RESULTS: usize = 10_000;
const MAX_GROUPS: usize = 6;
const MAX_FILTERS: usize = 18;

pub(super) fn routes(mut router: Router<Shared>) -> Router<Shared> {
    for (kind, path) in ObjectType::ALL
        .into_iter()
        .flat_map(|kind| kind.paths().iter().map(move |path| (kind, *path)))
    {
        router = router.route(
            &format!("/v3/objects/{path}/search"),
            post(move |State(state): State<Shared>, body: Bytes| async move {
                search(&state, kind, &body)
            }),
        );
    }
    router
}

/// `PublicObjectSearchRequest`; every field may be left out.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SearchRequest {
    filter_groups: Vec<FilterGroup>,
    sorts: Vec<Sort>,
    query: Option<String>,
    properties: Vec<String>,
    limit: Option<i64>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FilterGroup {
    filters: Vec<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: Operator,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    high_value: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Operator {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
    ContainsToken,
    NotContainsToken,
}

/// The spec's sorts are strings (`"createdate"`, `"-createdate"` for descending);
/// HubSpot's documentation also shows `{"propertyName", "direction"}` objects.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Sort {
    Name(String),
    Object {
        #[serde(rename = "propertyName")]
        property_name: String,
        #[serde(default)]
        direction: Option<String>,
    },
}

impl Sort {
    fn key(&self) -> Result<(&str, bool), ApiError> {
        match self {
            Sort::Name(name) => Ok(match name.strip_prefix('-') {
                Some(name) => (name, true),
                None => (name.as_str(), false),
            }),
            Sort::Object {
                property_name,
                direction,
            } => match direction.as_deref() {
                None | Some("ASCENDING") => Ok((property_name, false)),
                Some("DESCENDING") => Ok((property_name, true)),
                Some(other) => Err(ApiError::Validation(format!(
                    "Invalid sort direction {other}: must be ASCENDING or DESCENDING"
                ))),
            },
        }
    }
}

/// `CollectionResponseWithTotalSimplePublicObject`.
#[derive(Debug, Serialize)]
struct SearchResponse {
    total: usize,
    results: Vec<ObjectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<Paging>,
}

fn search(state: &Shared, kind: ObjectType, body: &[u8]) -> Result<Response, ApiError> {
    let request: SearchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SearchRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| invalid_json(&e))?
    };
    let limit = match request.limit {
        None => 10,
        Some(n) if (0..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::Validation(format!(
                "limit must be between 0 and {MAX_LIMIT}, got {n}"
            )));
        }
    };
    let offset = match request.after.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(after) => after.parse::<usize>().map_err(|_| {
            ApiError::Validation(format!("after must be a paging cursor, got {after:?}"))
        })?,
    };
    if offset + limit > MAX_RESULTS {
        return Err(ApiError::Validation(format!(
            "The search API returns at most {MAX_RESULTS} results for a query: after + limit may not exceed {MAX_RESULTS}"
        )));
    }
    if request.filter_groups.len() > MAX_GROUPS {
        return Err(ApiError::Validation(format!(
            "Too many filter groups: {} (at most {MAX_GROUPS})",
            request.filter_groups.len()
        )));
    }
    let filters: usize = request.filter_groups.iter().map(|g| g.filters.len()).sum();
    if filters > MAX_FILTERS {
        return Err(ApiError::Validation(format!(
            "Too many filters: {filters} (at most {MAX_FILTERS})"
        )));
    }
    for filter in request.filter_groups.iter().flat_map(|g| &g.filters) {
        check_filter(filter)?;
    }
    let sorts = request
        .sorts
        .iter()
        .map(Sort::key)
        .collect::<Result<Vec<_>, _>>()?;

    let data = state.lock();
    let table = data.store.table(kind);
    let query = request.query.as_deref().map(str::to_lowercase);
    let mut matches: Vec<&Record> = table
        .records()
        .filter(|record| {
            request.filter_groups.is_empty()
                || request
                    .filter_groups
                    .iter()
                    .any(|group| group.filters.iter().all(|f| matches(f, record)))
        })
        .filter(|record| {
            query.as_deref().is_none_or(|q| {
                record
                    .properties
                    .values()
                    .any(|v| v.to_lowercase().contains(q))
            })
        })
        .collect();
    if !sorts.is_empty() {
        matches.sort_by(|a, b| {
            sorts
                .iter()
                .map(|(name, descending)| {
                    let order = compare_opt(a.properties.get(*name), b.properties.get(*name));
                    if *descending { order.reverse() } else { order }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
                .then(a.id.cmp(&b.id))
        });
    }
    let total = matches.len();
    let results: Vec<ObjectResult> = matches
        .iter()
        .skip(offset)
        .take(limit)
        .map(|record| object_result(kind, record, &request.properties))
        .collect();
    drop(data);
    let next = offset + results.len();
    // No next page past the cap, even when more records match.
    let paging = (next < total && next < MAX_RESULTS && !results.is_empty())
        .then(|| Paging::next(format!("?after={next}"), next.to_string()));
    Ok(axum::Json(SearchResponse {
        total,
        results,
        paging,
    })
    .into_response())
}

fn check_filter(filter: &Filter) -> Result<(), ApiError> {
    use Operator::*;
    let missing = |what: &str| {
        Err(ApiError::Validation(format!(
            "{:?} filter on {} needs {what}",
            filter.operator, filter.property_name
        )))
    };
    match filter.operator {
        Eq | Neq | Lt | Lte | Gt | Gte | ContainsToken | NotContainsToken
            if filter.value.is_none() =>
        {
            missing("a value")
        }
        Between if filter.value.is_none() || filter.high_value.is_none() => {
            missing("a value and a highValue")
        }
        In | NotIn if filter.values.is_empty() => missing("values"),
        _ => Ok(()),
    }
}

fn matches(filter: &Filter, record: &Record) -> bool {
    use Operator::*;
    let actual = record
        .properties
        .get(&filter.property_name)
        .filter(|v| !v.is_empty());
    let value = filter.value.as_deref().unwrap_or_default();
    let cmp = |v: &str| actual.map(|a| compare(a, v));
    match filter.operator {
        Eq => cmp(value) == Some(Ordering::Equal),
        Neq => cmp(value) != Some(Ordering::Equal),
        Lt => cmp(value) == Some(Ordering::Less),
        Lte => cmp(value).is_some_and(Ordering::is_le),
        Gt => cmp(value) == Some(Ordering::Greater),
        Gte => cmp(value).is_some_and(Ordering::is_ge),
        Between => {
            let high = filter.high_value.as_deref().unwrap_or_default();
            cmp(value).is_some_and(Ordering::is_ge) && cmp(high).is_some_and(Ordering::is_le)
        }
        In => filter
            .values
            .iter()
            .any(|v| cmp(v) == Some(Ordering::Equal)),
        NotIn => !filter
            .values
            .iter()
            .any(|v| cmp(v) == Some(Ordering::Equal)),
        HasProperty => actual.is_some(),
        NotHasProperty => actual.is_none(),
        ContainsToken => actual.is_some_and(|a| contains_token(a, value)),
        NotContainsToken => !actual.is_some_and(|a| contains_token(a, value)),
    }
}

/// A token match: `*` is a wildcard, otherwise one whole word, case-insensitively.
fn contains_token(actual: &str, token: &str) -> bool {
    let token = token.to_lowercase();
    let actual = actual.to_lowercase();
    if token.contains('*') {
        let parts: Vec<&str> = token.split('*').filter(|p| !p.is_empty()).collect();
        let mut rest = actual.as_str();
        for part in parts {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    } else {
        actual
            .split(|c: char| !c.is_alphanumeric() && c != '@' && c != '.')
            .any(|word| word == token)
    }
}

/// Numbers as numbers, datetimes (RFC 3339, dates or epoch milliseconds) as instants,
/// anything else as case-insensitive text, as HubSpot compares property values.
fn compare(a: &str, b: &str) -> Ordering {
    if let (Ok(x), Ok(y)) = (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    if let (Some(x), Some(y)) = (instant_ms(a), instant_ms(b)) {
        return x.cmp(&y);
    }
    a.to_lowercase().cmp(&b.to_lowercase())
}

fn compare_opt(a: Option<&String>, b: Option<&String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => compare(a, b),
        // Records without the property sort last.
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn instant_ms(value: &str) -> Option<i64> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Some(at.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        assert_eq!(compare("10", "9"), Ordering::Greater);
        assert_eq!(compare("ABC", "abc"), Ordering::Equal);
        assert_eq!(
            compare("2026-03-02T09:00:00Z", "1772442000001"),
            Ordering::Less
        );
        assert_eq!(
            compare("2026-03-02", "2026-03-01T23:00:00Z"),
            Ordering::Greater
        );
        assert!(contains_token("Acme Corp", "corp"));
        assert!(!contains_token("Acme Corporation", "corp"));
        assert!(contains_token("Acme Corporation", "corp*"));
    }
}
