//! HubSpot CRM v3: batch upsert and update of objects, with per-record results from 207 answers.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http::{Client, Failure, HttpError, RetryPolicy, Sent, Throttle};
use super::{BatchReport, ConnectorError, Destination, OutRecord, Outcome};
use crate::project::ConnectorConfig;

/// A HubSpot account reached through one private-app token.
pub struct HubSpot {
    name: String,
    base_url: String,
    client: Client,
    batch_size: usize,
    concurrency: usize,
}

impl HubSpot {
    pub fn new(cfg: &ConnectorConfig) -> Result<Self, HttpError> {
        let client = Client::new(
            cfg.token.clone(),
            cfg.rate_limit_requests,
            cfg.rate_limit_per_secs,
            Duration::from_secs(cfg.timeout_secs),
            RetryPolicy {
                max_retries: cfg.max_retries,
                base: Duration::from_millis(200),
                cap: Duration::from_secs(30),
            },
        )?;
        Ok(HubSpot {
            name: cfg.name.clone(),
            base_url: cfg.base_url.clone(),
            client,
            batch_size: cfg.batch_size,
            concurrency: cfg.concurrency,
        })
    }

    async fn send_batch(
        &self,
        path: &str,
        inputs: Vec<Value>,
        records: &[OutRecord],
        id_property: Option<&str>,
    ) -> Result<BatchReport, ConnectorError> {
        let url = format!("{}{path}", self.base_url);
        let Sent {
            result,
            api_calls,
            throttled,
        } = self
            .client
            .post_json(&url, &json!({ "inputs": inputs }), classify_429)
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(Failure::GaveUp { message }) => {
                return Err(ConnectorError::Unavailable {
                    connector: self.name.clone(),
                    message: format!("POST {path}: {message}"),
                    api_calls,
                    throttled,
                });
            }
        };
        let outcomes = match resp.status {
            200 | 201 | 207 => match serde_json::from_str::<BatchResponse>(&resp.body) {
                Ok(b) => match_outcomes(records, &b, id_property),
                Err(e) => {
                    // The write may have applied, but we cannot tell which: leave every row unsynced so the next run resends it (upserts are idempotent).
                    let msg = format!("unreadable HubSpot response ({e})");
                    reject_all(records, "UNREADABLE_RESPONSE", &msg)
                }
            },
            401 | 403 => {
                return Err(ConnectorError::Auth {
                    connector: self.name.clone(),
                    status: resp.status,
                    message: error_message(&resp.body),
                    api_calls,
                });
            }
            status => {
                let (category, message) = error_category(&resp.body);
                reject_all(records, &category, &format!("HTTP {status}: {message}"))
            }
        };
        Ok(BatchReport {
            outcomes,
            api_calls,
            throttled,
        })
    }
}

fn reject_all(records: &[OutRecord], category: &str, message: &str) -> Vec<Outcome> {
    records
        .iter()
        .map(|_| Outcome::Rejected {
            category: category.to_string(),
            message: message.to_string(),
        })
        .collect()
}

/// HubSpot's daily limit resets at the account's midnight: retrying in this run only burns requests.
fn classify_429(body: &str) -> Throttle {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v.get("policyName").and_then(|p| p.as_str()) == Some("DAILY") => Throttle::Stop,
        _ => Throttle::Retry,
    }
}

#[derive(Debug, Deserialize)]
struct BatchResponse {
    #[serde(default)]
    results: Vec<ResultObject>,
    #[serde(default)]
    errors: Vec<StandardError>,
}

#[derive(Debug, Deserialize)]
struct ResultObject {
    id: String,
    #[serde(default)]
    properties: HashMap<String, Option<String>>,
}

#[derive(Debug, Deserialize)]
struct StandardError {
    #[serde(default)]
    category: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    context: HashMap<String, Vec<String>>,
}

/// Pairs each input with its result or error. HubSpot does not promise result
/// order, so results are matched on the id property's value (emails case-insensitively)
/// and errors on `context.ids`; an input with neither was not confirmed and stays unsynced.
fn match_outcomes(
    records: &[OutRecord],
    b: &BatchResponse,
    id_property: Option<&str>,
) -> Vec<Outcome> {
    let norm = |s: &str| s.trim().to_lowercase();
    let mut errors: HashMap<String, &StandardError> = HashMap::new();
    for e in &b.errors {
        for id in e.context.get("ids").into_iter().flatten() {
            errors.insert(norm(id), e);
        }
    }
    let mut results: HashMap<String, &ResultObject> = HashMap::new();
    for r in &b.results {
        let id = match id_property {
            Some(p) => r.properties.get(p).cloned().flatten(),
            None => Some(r.id.clone()),
        };
        if let Some(id) = id {
            results.insert(norm(&id), r);
        }
    }
    let positional = b.errors.is_empty() && b.results.len() == records.len();
    records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let k = norm(&rec.id);
            if let Some(e) = errors.get(&k) {
                Outcome::Rejected {
                    category: if e.category.is_empty() { "ERROR".into() } else { e.category.clone() },
                    message: e.message.clone(),
                }
            } else if let Some(r) = results.get(&k) {
                Outcome::Accepted {
                    record_id: Some(r.id.clone()),
                }
            } else if positional {
                Outcome::Accepted {
                    record_id: Some(b.results[i].id.clone()),
                }
            } else {
                Outcome::Rejected {
                    category: "NO_RESULT".into(),
                    message: "HubSpot's answer named neither a result nor an error for this record; it will be resent".into(),
                }
            }
        })
        .collect()
}

fn error_category(body: &str) -> (String, String) {
    match serde_json::from_str::<StandardError>(body) {
        Ok(e) if !e.message.is_empty() => (
            if e.category.is_empty() {
                "ERROR".into()
            } else {
                e.category
            },
            e.message,
        ),
        _ => ("ERROR".into(), body.chars().take(500).collect()),
    }
}

fn error_message(body: &str) -> String {
    error_category(body).1
}

fn properties_json(props: &[(String, Option<String>)]) -> Value {
    let mut m = Map::new();
    for (k, v) in props {
        // HubSpot clears a property given the empty string.
        m.insert(k.clone(), Value::String(v.clone().unwrap_or_default()));
    }
    Value::Object(m)
}

#[async_trait::async_trait]
impl Destination for HubSpot {
    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn request_stats(&self) -> Option<std::sync::Arc<super::http::RequestStats>> {
        Some(self.client.stats())
    }

    async fn upsert(
        &self,
        object: &str,
        id_property: &str,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError> {
        let inputs = records
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "idProperty": id_property,
                    "properties": properties_json(&r.properties),
                })
            })
            .collect();
        self.send_batch(
            &format!("/crm/v3/objects/{object}/batch/upsert"),
            inputs,
            records,
            Some(id_property),
        )
        .await
    }

    async fn update(
        &self,
        object: &str,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError> {
        let inputs = records
            .iter()
            .map(|r| json!({ "id": r.id, "properties": properties_json(&r.properties) }))
            .collect();
        self.send_batch(
            &format!("/crm/v3/objects/{object}/batch/update"),
            inputs,
            records,
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> OutRecord {
        OutRecord {
            key: id.into(),
            id: id.into(),
            properties: vec![],
        }
    }

    #[test]
    fn outcomes_follow_ids_not_positions() {
        let body = r#"{"status":"COMPLETE","results":[
            {"id":"2","properties":{"email":"b@x.com"}},
            {"id":"1","properties":{"email":"a@x.com"}}],
            "numErrors":1,
            "errors":[{"status":"error","category":"VALIDATION_ERROR","message":"bad email","context":{"ids":["nope"]}}]}"#;
        let b: BatchResponse = serde_json::from_str(body).unwrap();
        let got = match_outcomes(
            &[rec("A@x.com"), rec("nope"), rec("b@x.com"), rec("c@x.com")],
            &b,
            Some("email"),
        );
        assert_eq!(
            got[0],
            Outcome::Accepted {
                record_id: Some("1".into())
            }
        );
        assert_eq!(
            got[1],
            Outcome::Rejected {
                category: "VALIDATION_ERROR".into(),
                message: "bad email".into()
            }
        );
        assert_eq!(
            got[2],
            Outcome::Accepted {
                record_id: Some("2".into())
            }
        );
        assert!(matches!(&got[3], Outcome::Rejected { category, .. } if category == "NO_RESULT"));
    }

    #[test]
    fn daily_limit_is_not_retried() {
        assert_eq!(classify_429(r#"{"policyName":"DAILY"}"#), Throttle::Stop);
        assert_eq!(
            classify_429(r#"{"policyName":"TEN_SECONDLY_ROLLING"}"#),
            Throttle::Retry
        );
        assert_eq!(classify_429("not json"), Throttle::Retry);
    }
}
