//! Destinations: the [`Destination`] trait every CRM connector implements, and the connectors themselves.
//!
//! Connectors know nothing about SQL or state: they take records, send them
//! through [`http`] (rate limit → retry → timeout) and answer with one
//! [`Outcome`] per record, in input order.

pub mod http;
pub mod hubspot;

use std::sync::Arc;

use crate::project::{ConnectorConfig, ConnectorKind};

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// The model's primary key (for reports only; never sent).
    pub key: String,
    /// The value the CRM matches on: a unique property's value, or the CRM record id.
    pub id: String,
    /// Property → value; `None` clears the property.
    pub properties: Vec<(String, Option<String>)>,
}

/// What the destination did with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted { record_id: Option<String> },
    Rejected { category: String, message: String },
}

/// The answer to one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// One per input record, in input order.
    pub outcomes: Vec<Outcome>,
    /// HTTP requests made, retries included.
    pub api_calls: u64,
    /// Requests answered 429.
    pub throttled: u64,
}

/// Failures that stop a sync: nothing in the batch is known to have been applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    /// 401/403: the token is missing, wrong, expired or lacks a scope.
    #[error("{connector}: credentials refused (HTTP {status}): {message}")]
    Auth {
        connector: String,
        status: u16,
        message: String,
        api_calls: u64,
    },
    /// Retries exhausted, the daily limit reached, or the service unreachable.
    #[error("{connector}: {message}")]
    Unavailable {
        connector: String,
        message: String,
        api_calls: u64,
        throttled: u64,
    },
}

impl ConnectorError {
    /// Requests made before the failure, for the run record.
    pub fn counts(&self) -> (u64, u64) {
        match self {
            ConnectorError::Auth { api_calls, .. } => (*api_calls, 0),
            ConnectorError::Unavailable {
                api_calls,
                throttled,
                ..
            } => (*api_calls, *throttled),
        }
    }
}

/// A CRM that takes batches of records.
#[async_trait::async_trait]
pub trait Destination: Send + Sync {
    /// Most records one request may carry.
    fn batch_size(&self) -> usize;
    /// Requests that may be in flight at once.
    fn concurrency(&self) -> usize;
    /// Creates or updates records matched on `id_property` (a unique property).
    async fn upsert(
        &self,
        object: &str,
        id_property: &str,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError>;
    /// Updates existing records by the CRM's record id; a missing record is a rejection.
    async fn update(
        &self,
        object: &str,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError>;
    /// Counters of the requests made, for the daemon's metrics.
    fn request_stats(&self) -> Option<Arc<http::RequestStats>> {
        None
    }
}

/// Builds the connector a config describes.
pub fn build(cfg: &ConnectorConfig) -> Result<Arc<dyn Destination>, http::HttpError> {
    match cfg.kind {
        ConnectorKind::HubSpot => Ok(Arc::new(hubspot::HubSpot::new(cfg)?)),
    }
}
