//! The account's owners, read through `/crm/v3/owners` (every page, active and archived),
//! cached, and read again when a value names nobody we know.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::{HubSpot, Paging, error_category};
use crate::connectors::http::Request;
use crate::connectors::{ConnectorError, Read};

/// An unknown owner refreshes the cache at most this often: a model full of
/// misspelt emails must not turn into a request per row.
const REFRESH_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Deserialize)]
struct Owner {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    archived: bool,
}

#[derive(Debug, Default)]
struct Known {
    /// Active and archived owners by id and by lower-cased email.
    by_id: HashMap<String, Owner>,
    by_email: HashMap<String, Owner>,
    loaded_at: Option<Instant>,
}

#[derive(Debug, Default)]
pub(super) struct OwnerCache {
    known: tokio::sync::Mutex<Known>,
}

#[derive(Debug, Deserialize)]
struct OwnersPage {
    #[serde(default)]
    results: Vec<Owner>,
    #[serde(default)]
    paging: Option<Paging>,
}

impl Known {
    fn find(&self, value: &str) -> Option<&Owner> {
        let v = value.trim();
        if v.contains('@') {
            self.by_email.get(&v.to_lowercase())
        } else {
            self.by_id.get(v)
        }
    }

    fn verdict(&self, value: &str) -> Option<Result<String, String>> {
        let o = self.find(value)?;
        Some(if o.archived {
            Err(format!(
                "owner {value:?} (HubSpot owner id {}) is archived and cannot be assigned",
                o.id
            ))
        } else {
            Ok(o.id.clone())
        })
    }
}

impl OwnerCache {
    pub(super) async fn resolve(
        &self,
        hs: &HubSpot,
        values: &[String],
    ) -> Result<Read<HashMap<String, Result<String, String>>>, ConnectorError> {
        let mut known = self.known.lock().await;
        let mut read: Read<HashMap<String, Result<String, String>>> = Read::default();
        let stale = known
            .loaded_at
            .is_none_or(|at| at.elapsed() >= REFRESH_AFTER);
        let missing = values.iter().any(|v| known.verdict(v).is_none());
        if known.loaded_at.is_none() || (missing && stale) {
            let (fresh, calls, throttled) = load(hs).await?;
            *known = fresh;
            read.api_calls += calls;
            read.throttled += throttled;
        }
        for v in values {
            let verdict = known.verdict(v).unwrap_or_else(|| {
                Err(format!(
                    "owner {v:?} is not a HubSpot owner of this account (no owner has this {})",
                    if v.contains('@') { "email" } else { "id" }
                ))
            });
            read.value.insert(v.clone(), verdict);
        }
        Ok(read)
    }
}

async fn load(hs: &HubSpot) -> Result<(Known, u64, u64), ConnectorError> {
    const WHAT: &str = "GET /crm/v3/owners";
    let mut known = Known::default();
    let (mut calls, mut throttled) = (0, 0);
    for archived in [false, true] {
        let mut after: Option<String> = None;
        loop {
            let mut url = hs.url(&format!("/crm/v3/owners?limit=100&archived={archived}"));
            if let Some(a) = &after {
                url.push_str("&after=");
                url.push_str(a);
            }
            let (resp, c, t) = hs.call(WHAT, Request::get(&url)).await?;
            calls += c;
            throttled += t;
            if resp.status != 200 {
                let (category, message) = error_category(&resp.body);
                return Err(ConnectorError::Unavailable {
                    connector: hs.name.clone(),
                    message: format!("{WHAT}: HTTP {}: {category}: {message}", resp.status),
                    api_calls: calls,
                    throttled,
                });
            }
            let page: OwnersPage =
                serde_json::from_str(&resp.body).map_err(|e| ConnectorError::Unavailable {
                    connector: hs.name.clone(),
                    message: format!("{WHAT}: unreadable HubSpot response ({e})"),
                    api_calls: calls,
                    throttled,
                })?;
            for mut o in page.results {
                o.archived |= archived;
                if let Some(e) = &o.email {
                    // An active owner wins over an archived one with the same email.
                    let e = e.trim().to_lowercase();
                    if !(o.archived && known.by_email.get(&e).is_some_and(|x| !x.archived)) {
                        known.by_email.insert(e, o.clone());
                    }
                }
                known.by_id.entry(o.id.clone()).or_insert(o);
            }
            match page.paging.and_then(|p| p.next).map(|n| n.after) {
                Some(a) => after = Some(a),
                None => break,
            }
        }
    }
    known.loaded_at = Some(Instant::now());
    tracing::debug!(owners = known.by_id.len(), "read the account's owners");
    Ok((known, calls, throttled))
}
