//! Destinations: the [`Destination`] trait every CRM connector implements, and the connectors themselves.
//!
//! Connectors know nothing about SQL or state: they take records, send them
//! through [`http`] (account budget → request with timeout → retry) and answer
//! with one outcome per record, in input order.

pub mod budget;
pub mod http;
pub mod hubspot;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::project::{ConnectorConfig, ConnectorKind};

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// The model's primary key (for reports only; never sent).
    pub key: String,
    /// The value the CRM matches on: a unique property's value, or the CRM record id
    /// (empty for a create).
    pub id: String,
    /// Property → value; `None` clears the property.
    pub properties: Vec<(String, Option<String>)>,
}

/// How a batch finds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOp<'a> {
    /// Create, or update the record whose unique property has the record's `id`.
    Upsert { id_property: &'a str },
    /// Update existing records by a unique property, or (`None`) by record id.
    Update { id_property: Option<&'a str> },
    /// Create new records.
    Create,
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

/// A follow-up task to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInput {
    /// The idempotency key, stored in the task's `key_property`.
    pub task_key: String,
    /// Task properties (`hs_task_subject`, `hs_timestamp`, ...), the key property excluded.
    pub properties: serde_json::Map<String, serde_json::Value>,
    /// The record the task is attached to.
    pub record_id: String,
    pub association_type_id: i32,
}

/// What became of one task create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    Created {
        task_id: String,
    },
    Rejected {
        category: String,
        message: String,
    },
    /// No clear answer: the task may or may not exist now.
    Unknown {
        message: String,
    },
}

/// The answer to a batch of task creates, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskReport {
    pub outcomes: Vec<TaskOutcome>,
    pub api_calls: u64,
    pub throttled: u64,
}

/// Other reads, with their cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Read<T> {
    pub value: T,
    pub api_calls: u64,
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
    /// Retries exhausted or the service unreachable.
    #[error("{connector}: {message}")]
    Unavailable {
        connector: String,
        message: String,
        api_calls: u64,
        throttled: u64,
    },
    /// The account's daily request limit is spent: its syncs pause until the reset.
    #[error(
        "{connector}: the account's daily API limit is reached; its syncs are paused until {until}"
    )]
    DailyLimit {
        connector: String,
        until: DateTime<Utc>,
        api_calls: u64,
        throttled: u64,
    },
    /// The CRM refuses every record for a reason in the sync's setup (a property that does not exist).
    #[error("{connector}: {message}")]
    Setup {
        connector: String,
        message: String,
        api_calls: u64,
    },
}

impl ConnectorError {
    /// Requests made before the failure, for the run record.
    pub fn counts(&self) -> (u64, u64) {
        match self {
            ConnectorError::Auth { api_calls, .. } | ConnectorError::Setup { api_calls, .. } => {
                (*api_calls, 0)
            }
            ConnectorError::Unavailable {
                api_calls,
                throttled,
                ..
            }
            | ConnectorError::DailyLimit {
                api_calls,
                throttled,
                ..
            } => (*api_calls, *throttled),
        }
    }

    /// The run status this failure leaves: `paused` for a spent daily limit, else `failed`.
    pub fn run_status(&self) -> &'static str {
        match self {
            ConnectorError::DailyLimit { .. } => "paused",
            _ => "failed",
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
    /// Writes records to `object`; a batch the CRM refuses whole is split to find the bad records.
    async fn write(
        &self,
        object: &str,
        op: WriteOp<'_>,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError>;
    /// Archives records by record id (the `id` of each record).
    async fn archive(
        &self,
        object: &str,
        records: &[OutRecord],
    ) -> Result<BatchReport, ConnectorError>;
    /// The current owner of existing records, keyed by `ids` as given (unique property
    /// values, or record ids when `id_property` is `None`); records that do not exist are absent.
    async fn current_owners(
        &self,
        object: &str,
        id_property: Option<&str>,
        ids: &[String],
    ) -> Result<Read<HashMap<String, Option<String>>>, ConnectorError>;
    /// Resolves owner ids or emails to active owner ids; an unknown or archived owner
    /// maps to the reason it cannot be assigned.
    async fn resolve_owners(
        &self,
        values: &[String],
    ) -> Result<Read<HashMap<String, Result<String, String>>>, ConnectorError>;
    /// Creates tasks. Not idempotent: an [`TaskOutcome::Unknown`] answer must be reconciled
    /// with [`Destination::find_tasks`] before the task is created again.
    async fn create_tasks(
        &self,
        key_property: &str,
        tasks: &[TaskInput],
    ) -> Result<TaskReport, ConnectorError>;
    /// Task key → task id for the keys that exist as tasks.
    async fn find_tasks(
        &self,
        key_property: &str,
        keys: &[String],
    ) -> Result<Read<HashMap<String, String>>, ConnectorError>;
    /// How long a new record may take to show in search.
    fn search_settle(&self) -> Duration;
    /// When the account is paused for the day, until when.
    fn paused_until(&self) -> Option<DateTime<Utc>>;
    /// Counters of the requests made, for the daemon's metrics.
    fn request_stats(&self) -> Option<Arc<http::RequestStats>> {
        None
    }
}

/// Builds the connector a config describes. Connectors that reach the same account
/// (same API and token) share one request budget.
pub fn build(cfg: &ConnectorConfig) -> Result<Arc<dyn Destination>, http::HttpError> {
    match cfg.kind {
        ConnectorKind::HubSpot => Ok(Arc::new(hubspot::HubSpot::new(cfg)?)),
    }
}
