//! The owners API (`/crm/v3/owners`): the seeded owners, filtered and paged.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::super::errors::ApiError;
use super::super::store::timestamp;
use super::super::{Owner, OwnerTeam, Shared};
use super::Paging;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 500;

/// Adds the owners routes (paths relative to `/crm`).
pub(super) fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/v3/owners", get(list))
        .route("/v3/owners/{ownerId}", get(one))
}

/// `PublicOwner`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PublicOwner<'a> {
    id: &'a str,
    email: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    first_name: &'a str,
    last_name: &'a str,
    user_id: u64,
    user_id_including_inactive: u64,
    created_at: String,
    updated_at: String,
    archived: bool,
    teams: &'a [OwnerTeam],
}

impl<'a> From<&'a Owner> for PublicOwner<'a> {
    fn from(owner: &'a Owner) -> Self {
        PublicOwner {
            id: &owner.id,
            email: &owner.email,
            kind: "PERSON",
            first_name: &owner.first_name,
            last_name: &owner.last_name,
            user_id: owner.user_id,
            user_id_including_inactive: owner.user_id,
            created_at: timestamp(owner.created_at),
            updated_at: timestamp(owner.updated_at),
            archived: owner.archived,
            teams: &owner.teams,
        }
    }
}

/// `CollectionResponsePublicOwnerForwardPaging`.
#[derive(Debug, Serialize)]
struct OwnerPage<'a> {
    results: Vec<PublicOwner<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<Paging>,
}

#[derive(Debug, Default)]
struct ListQuery {
    limit: Option<usize>,
    offset: usize,
    email: Option<String>,
    archived: bool,
}

fn parse_list_query(pairs: Vec<(String, String)>) -> Result<ListQuery, ApiError> {
    let mut query = ListQuery::default();
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => {
                let limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| *l >= 1)
                    .ok_or_else(|| {
                        ApiError::Validation(format!(
                            "limit must be a positive integer, got {value:?}"
                        ))
                    })?;
                query.limit = Some(limit.min(MAX_LIMIT));
            }
            // The cursor is the offset of the next owner; clients treat it as opaque.
            "after" => {
                query.offset = value.parse().map_err(|_| {
                    ApiError::Validation(format!("after is not a valid paging cursor: {value:?}"))
                })?;
            }
            "email" => query.email = Some(value),
            "archived" => query.archived = parse_bool("archived", &value)?,
            _ => {}
        }
    }
    Ok(query)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::Validation(format!(
            "{name} must be true or false, got {value:?}"
        ))),
    }
}

fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::Validation(e.body_text()))
}

async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parse_list_query(query_pairs(query)?)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let data = state.lock();
    let matching: Vec<&Owner> = data
        .owners
        .iter()
        .filter(|owner| owner.archived == query.archived)
        .filter(|owner| {
            query
                .email
                .as_deref()
                .is_none_or(|email| owner.email.eq_ignore_ascii_case(email.trim()))
        })
        .collect();
    let end = query.offset.saturating_add(limit);
    let paging = (end < matching.len()).then(|| {
        let after = end.to_string();
        Paging::next(next_link(&headers, &query, limit, &after), after)
    });
    let page = OwnerPage {
        results: matching
            .into_iter()
            .skip(query.offset)
            .take(limit)
            .map(PublicOwner::from)
            .collect(),
        paging,
    };
    Ok(axum::Json(page).into_response())
}

/// HubSpot's `link` is the full URL of the next page; here it points back at this sandbox.
fn next_link(headers: &HeaderMap, query: &ListQuery, limit: usize, after: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let mut link = format!("http://{host}/crm/v3/owners?limit={limit}&after={after}");
    if let Some(email) = &query.email {
        link.push_str("&email=");
        link.push_str(&percent_encode(email));
    }
    if query.archived {
        link.push_str("&archived=true");
    }
    link
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn one(
    State(state): State<Shared>,
    Path(owner_id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let mut by_user_id = false;
    let mut archived = false;
    for (name, value) in query_pairs(query)? {
        match name.as_str() {
            "idProperty" => {
                by_user_id = match value.as_str() {
                    "id" => false,
                    "userId" => true,
                    _ => {
                        return Err(ApiError::Validation(format!(
                            "idProperty must be id or userId, got {value:?}"
                        )));
                    }
                }
            }
            "archived" => archived = parse_bool("archived", &value)?,
            _ => {}
        }
    }
    let data = state.lock();
    let owner = data
        .owners
        .iter()
        .find(|owner| {
            owner.archived == archived
                && if by_user_id {
                    owner.user_id.to_string() == owner_id
                } else {
                    owner.id == owner_id
                }
        })
        .ok_or_else(|| ApiError::ObjectNotFound(owner_id.clone()))?;
    Ok(axum::Json(PublicOwner::from(owner)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(percent_encode("rep1+x@demo.dev"), "rep1%2Bx%40demo.dev");
    }

    #[test]
    fn rejects_bad_paging_input() {
        let pairs = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(parse_list_query(pairs("limit", "0")).is_err());
        assert!(parse_list_query(pairs("limit", "x")).is_err());
        assert!(parse_list_query(pairs("after", "abc")).is_err());
        assert!(parse_list_query(pairs("archived", "yes")).is_err());
        let clamped = parse_list_query(pairs("limit", "9000")).expect("valid");
        assert_eq!(clamped.limit, Some(MAX_LIMIT));
    }
}
