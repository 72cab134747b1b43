//! Traffic counters that tests and benchmarks read back from `/_sandbox/stats`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::faults::FaultCounts;

/// What the sandbox has served since it started or was last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStats {
    /// Every API request (HubSpot `/crm`, Slack), whatever its answer (401 and 429 included).
    pub requests: u64,
    /// `"METHOD /route"` → status code (as a string) → count.
    pub by_endpoint: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests answered 429.
    pub throttled: u64,
    /// Object inputs applied by write endpoints, summed over all requests.
    pub records_written: u64,
    /// Faults injected ([`super::Faults`]).
    #[serde(default)]
    pub faults: FaultCounts,
}

impl SandboxStats {
    pub(crate) fn record(&mut self, endpoint: &str, status: u16) {
        self.requests += 1;
        if status == 429 {
            self.throttled += 1;
        }
        match axum::http::StatusCode::from_u16(status) {
            Ok(code) => self.bump(endpoint, code.as_str()),
            Err(_) => self.bump(endpoint, &status.to_string()),
        }
    }

    /// Counts one answer; allocates only the first time a key is seen (every request passes here).
    fn bump(&mut self, endpoint: &str, outcome: &str) {
        let statuses = match self.by_endpoint.get_mut(endpoint) {
            Some(statuses) => statuses,
            None => self.by_endpoint.entry(endpoint.to_owned()).or_default(),
        };
        match statuses.get_mut(outcome) {
            Some(count) => *count += 1,
            None => {
                statuses.insert(outcome.to_owned(), 1);
            }
        }
    }

    /// A request that got no answer (`"timeout"` or `"dropped"` in place of a status).
    pub(crate) fn record_unanswered(&mut self, endpoint: &str, outcome: &str) {
        self.requests += 1;
        self.bump(endpoint, outcome);
    }

    /// How many requests to `endpoint` were answered with `status`.
    pub fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.by_endpoint
            .get(endpoint)
            .and_then(|statuses| statuses.get(&status.to_string()))
            .copied()
            .unwrap_or(0)
    }
}
