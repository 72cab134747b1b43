//! The sObjects the sandbox serves, their fields, and how input values become stored ones.
//!
//! Field names are matched without case, as Salesforce does, and stored under their
//! API names. Any name ending in `__c` is a custom field of any object (untyped: the
//! value is kept as sent). Values are JSON scalars: text, booleans, numbers, dates as
//! `YYYY-MM-DD` and date-times as `YYYY-MM-DDThh:mm:ss.000+0000`.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::Value;

use super::ids;

/// An object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum SObject {
    User,
    Lead,
    Contact,
    Account,
    Task,
}

impl SObject {
    pub(crate) const ALL: [SObject; 5] = [
        SObject::User,
        SObject::Lead,
        SObject::Contact,
        SObject::Account,
        SObject::Task,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SObject::User => "User",
            SObject::Lead => "Lead",
            SObject::Contact => "Contact",
            SObject::Account => "Account",
            SObject::Task => "Task",
        }
    }

    pub(crate) fn prefix(self) -> &'static str {
        match self {
            SObject::User => ids::USER,
            SObject::Lead => ids::LEAD,
            SObject::Contact => ids::CONTACT,
            SObject::Account => ids::ACCOUNT,
            SObject::Task => ids::TASK,
        }
    }

    /// A type named in a URL or a body; Salesforce matches type names without case.
    pub(crate) fn from_name(name: &str) -> Option<SObject> {
        SObject::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }

    /// The type an (18-character) id belongs to, by its key prefix.
    pub(crate) fn of_id(id: &str) -> Option<SObject> {
        SObject::ALL
            .into_iter()
            .find(|kind| id.starts_with(kind.prefix()))
    }

    /// Users come from the seed only: the API cannot create, change or delete them here.
    pub(crate) fn writable(self) -> bool {
        self != SObject::User
    }

    fn own_fields(self) -> &'static [Field] {
        match self {
            SObject::User => USER_FIELDS,
            SObject::Lead => LEAD_FIELDS,
            SObject::Contact => CONTACT_FIELDS,
            SObject::Account => ACCOUNT_FIELDS,
            SObject::Task => TASK_FIELDS,
        }
    }

    /// Every standard field, the system ones first.
    pub(crate) fn fields(self) -> impl Iterator<Item = &'static Field> {
        SYSTEM_FIELDS.iter().chain(self.own_fields())
    }

    /// Resolves a field name as a client wrote it.
    pub(crate) fn field(self, name: &str) -> Option<FieldRef> {
        if let Some(field) = self.fields().find(|f| f.name.eq_ignore_ascii_case(name)) {
            return Some(FieldRef::Standard(field));
        }
        is_custom(name).then(|| FieldRef::Custom(name.to_owned()))
    }

    /// External-id fields every org has here (a custom `External_Id__c`); the seed adds more.
    pub(crate) fn default_external_ids(self) -> &'static [&'static str] {
        match self {
            SObject::Lead | SObject::Contact | SObject::Account => &["External_Id__c"],
            SObject::User | SObject::Task => &[],
        }
    }
}

/// A custom field name: letters, digits and underscores, ending in `__c`.
fn is_custom(name: &str) -> bool {
    name.len() > 3
        && name.ends_with("__c")
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A resolved field: one of the schema's, or a custom one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    Standard(&'static Field),
    Custom(String),
}

impl FieldRef {
    /// The API name, as stored and returned.
    pub(crate) fn name(&self) -> &str {
        match self {
            FieldRef::Standard(field) => field.name,
            FieldRef::Custom(name) => name,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            FieldRef::Standard(field) => field.kind,
            FieldRef::Custom(_) => Kind::Any,
        }
    }

    pub(crate) fn read_only(&self) -> bool {
        matches!(self, FieldRef::Standard(field) if field.read_only)
    }
}

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Id,
    /// An id of one of these types.
    Reference(&'static [SObject]),
    Text(usize),
    Email,
    Bool,
    Int,
    Double,
    Date,
    DateTime,
    /// A restricted picklist: only these values.
    Picklist(&'static [&'static str]),
    /// A custom field: any scalar, kept as sent.
    Any,
}

impl Kind {
    /// The SOAP type name Salesforce uses in value errors (`xsd:boolean`).
    pub(crate) fn xsd(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Int => "int",
            Kind::Double => "double",
            Kind::Date => "date",
            Kind::DateTime => "dateTime",
            Kind::Id | Kind::Reference(_) => "ID",
            Kind::Text(_) | Kind::Email | Kind::Picklist(_) | Kind::Any => "string",
        }
    }

    pub(crate) fn is_textual(self) -> bool {
        matches!(
            self,
            Kind::Text(_) | Kind::Email | Kind::Picklist(_) | Kind::Id | Kind::Reference(_)
        )
    }
}

/// One standard field.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: &'static str,
    /// The label Salesforce names the field by in messages ("Owner ID").
    pub label: &'static str,
    pub kind: Kind,
    /// Set by Salesforce only; a client's value is refused.
    pub read_only: bool,
    /// Must have a value after a create or an update.
    pub required: bool,
}

const fn rw(name: &'static str, label: &'static str, kind: Kind) -> Field {
    Field {
        name,
        label,
        kind,
        read_only: false,
        required: false,
    }
}

const fn req(name: &'static str, label: &'static str, kind: Kind) -> Field {
    Field {
        name,
        label,
        kind,
        read_only: false,
        required: true,
    }
}

const fn ro(name: &'static str, label: &'static str, kind: Kind) -> Field {
    Field {
        name,
        label,
        kind,
        read_only: true,
        required: false,
    }
}

const USERS: &[SObject] = &[SObject::User];

static SYSTEM_FIELDS: &[Field] = &[
    ro("Id", "Record ID", Kind::Id),
    ro("IsDeleted", "Deleted", Kind::Bool),
    ro("CreatedDate", "Created Date", Kind::DateTime),
    ro("CreatedById", "Created By ID", Kind::Reference(USERS)),
    ro("LastModifiedDate", "Last Modified Date", Kind::DateTime),
    ro(
        "LastModifiedById",
        "Last Modified By ID",
        Kind::Reference(USERS),
    ),
    ro("SystemModstamp", "System Modstamp", Kind::DateTime),
];

static USER_FIELDS: &[Field] = &[
    req("Username", "Username", Kind::Text(80)),
    req("Email", "Email", Kind::Email),
    rw("FirstName", "First Name", Kind::Text(40)),
    req("LastName", "Last Name", Kind::Text(80)),
    ro("Name", "Full Name", Kind::Text(121)),
    rw("Alias", "Alias", Kind::Text(8)),
    rw("IsActive", "Active", Kind::Bool),
    rw("TimeZoneSidKey", "Time Zone", Kind::Text(40)),
    rw("Title", "Title", Kind::Text(80)),
    rw("Department", "Department", Kind::Text(80)),
];

static LEAD_FIELDS: &[Field] = &[
    rw("FirstName", "First Name", Kind::Text(40)),
    req("LastName", "Last Name", Kind::Text(80)),
    ro("Name", "Full Name", Kind::Text(121)),
    req("Company", "Company", Kind::Text(255)),
    rw("Email", "Email", Kind::Email),
    rw("Phone", "Phone", Kind::Text(40)),
    rw("Title", "Title", Kind::Text(128)),
    rw("Status", "Status", Kind::Text(255)),
    rw("LeadSource", "Lead Source", Kind::Text(255)),
    rw("Industry", "Industry", Kind::Text(255)),
    rw("Rating", "Rating", Kind::Text(255)),
    req("OwnerId", "Owner ID", Kind::Reference(USERS)),
    ro("IsConverted", "Converted", Kind::Bool),
    rw("Description", "Description", Kind::Text(32_000)),
    rw("Street", "Street", Kind::Text(255)),
    rw("City", "City", Kind::Text(40)),
    rw("State", "State/Province", Kind::Text(80)),
    rw("PostalCode", "Zip/Postal Code", Kind::Text(20)),
    rw("Country", "Country", Kind::Text(80)),
    rw("Website", "Website", Kind::Text(255)),
    rw("NumberOfEmployees", "Employees", Kind::Int),
    rw("AnnualRevenue", "Annual Revenue", Kind::Double),
];

static CONTACT_FIELDS: &[Field] = &[
    rw("FirstName", "First Name", Kind::Text(40)),
    req("LastName", "Last Name", Kind::Text(80)),
    ro("Name", "Full Name", Kind::Text(121)),
    rw("Email", "Email", Kind::Email),
    rw("Phone", "Business Phone", Kind::Text(40)),
    rw("MobilePhone", "Mobile Phone", Kind::Text(40)),
    rw("Title", "Title", Kind::Text(128)),
    rw("Department", "Department", Kind::Text(80)),
    rw(
        "AccountId",
        "Account ID",
        Kind::Reference(&[SObject::Account]),
    ),
    req("OwnerId", "Owner ID", Kind::Reference(USERS)),
    rw("LeadSource", "Lead Source", Kind::Text(255)),
    rw("Description", "Contact Description", Kind::Text(32_000)),
    rw("MailingStreet", "Mailing Street", Kind::Text(255)),
    rw("MailingCity", "Mailing City", Kind::Text(40)),
    rw("MailingState", "Mailing State/Province", Kind::Text(80)),
    rw(
        "MailingPostalCode",
        "Mailing Zip/Postal Code",
        Kind::Text(20),
    ),
    rw("MailingCountry", "Mailing Country", Kind::Text(80)),
];

static ACCOUNT_FIELDS: &[Field] = &[
    req("Name", "Account Name", Kind::Text(255)),
    rw("Website", "Website", Kind::Text(255)),
    rw("Industry", "Industry", Kind::Text(255)),
    rw("Type", "Account Type", Kind::Text(255)),
    rw("Phone", "Account Phone", Kind::Text(40)),
    req("OwnerId", "Owner ID", Kind::Reference(USERS)),
    rw("Description", "Account Description", Kind::Text(32_000)),
    rw("BillingCity", "Billing City", Kind::Text(40)),
    rw("BillingState", "Billing State/Province", Kind::Text(80)),
    rw("BillingCountry", "Billing Country", Kind::Text(80)),
    rw("NumberOfEmployees", "Employees", Kind::Int),
    rw("AnnualRevenue", "Annual Revenue", Kind::Double),
];

/// Task `Status` values (a restricted picklist in the sandbox).
pub(crate) const TASK_STATUSES: &[&str] = &[
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
];

/// Task `Priority` values (a restricted picklist in the sandbox).
pub(crate) const TASK_PRIORITIES: &[&str] = &["High", "Normal", "Low"];

static TASK_FIELDS: &[Field] = &[
    rw("Subject", "Subject", Kind::Text(255)),
    req("Status", "Status", Kind::Picklist(TASK_STATUSES)),
    req("Priority", "Priority", Kind::Picklist(TASK_PRIORITIES)),
    rw("ActivityDate", "Due Date Only", Kind::Date),
    rw("Description", "Description", Kind::Text(32_000)),
    rw(
        "WhoId",
        "Name ID",
        Kind::Reference(&[SObject::Lead, SObject::Contact]),
    ),
    rw(
        "WhatId",
        "Related To ID",
        Kind::Reference(&[SObject::Account]),
    ),
    req("OwnerId", "Assigned To ID", Kind::Reference(USERS)),
    ro("IsClosed", "Closed", Kind::Bool),
    rw("Type", "Type", Kind::Text(255)),
    rw("ReminderDateTime", "Reminder Date/Time", Kind::DateTime),
    rw("IsReminderSet", "Reminder Set", Kind::Bool),
];

/// Salesforce's date-time format: milliseconds and a `+0000` offset.
pub(crate) fn datetime(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
        .trim_end_matches('Z')
        .to_owned()
        + "+0000"
}

/// Parses a date-time as clients send it (`…Z`, `…+01:00`, `…+0100`, with or without milliseconds).
pub(crate) fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.with_timezone(&Utc));
        }
    }
    None
}

pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    let text = text.trim();
    // Exactly YYYY-MM-DD: chrono alone would also take a one-digit month.
    (text.len() == 10)
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
}

/// Why an input value cannot be stored in a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadValue {
    /// The value as sent, for messages.
    pub shown: String,
    pub xsd: &'static str,
}

/// Converts a JSON value sent for a field into the stored value. Text fields store
/// `""` as null, as Salesforce does; ids are checked later, against the store.
pub(crate) fn from_json(kind: Kind, value: &Value) -> Result<Value, BadValue> {
    let bad = || BadValue {
        shown: match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        xsd: kind.xsd(),
    };
    match value {
        Value::Null => Ok(Value::Null),
        Value::Array(_) | Value::Object(_) => Err(bad()),
        Value::String(text) => from_text(kind, text).map_err(|_| bad()),
        Value::Bool(b) => match kind {
            Kind::Bool | Kind::Any => Ok(Value::Bool(*b)),
            k if k.is_textual() && !matches!(k, Kind::Id | Kind::Reference(_)) => {
                Ok(Value::String(b.to_string()))
            }
            _ => Err(bad()),
        },
        Value::Number(n) => match kind {
            Kind::Int => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Value::from)
                .ok_or_else(bad),
            Kind::Double => n.as_f64().map(Value::from).ok_or_else(bad),
            Kind::Any => Ok(value.clone()),
            Kind::Text(_) | Kind::Email | Kind::Picklist(_) => Ok(Value::String(n.to_string())),
            _ => Err(bad()),
        },
    }
}

/// Converts text (a JSON string, a CSV cell) into the stored value.
pub(crate) fn from_text(kind: Kind, text: &str) -> Result<Value, BadValue> {
    let bad = || BadValue {
        shown: text.to_owned(),
        xsd: kind.xsd(),
    };
    if text.is_empty() {
        return Ok(Value::Null);
    }
    match kind {
        Kind::Text(_) | Kind::Email | Kind::Picklist(_) | Kind::Any => {
            Ok(Value::String(text.to_owned()))
        }
        // Checked against the store by the writer, which knows which record refers.
        Kind::Id | Kind::Reference(_) => Ok(Value::String(text.trim().to_owned())),
        Kind::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        Kind::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad()),
        Kind::Double => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(bad),
        Kind::Date => parse_date(text)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .ok_or_else(bad),
        Kind::DateTime => parse_datetime(text)
            .map(|at| Value::String(datetime(at)))
            .ok_or_else(bad),
    }
}

/// A stored value as CSV text (Bulk API results echo the input, so this is for reads).
pub(crate) fn to_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_resolve_without_case() {
        let field = SObject::Lead.field("lastname").expect("LastName");
        assert_eq!(field.name(), "LastName");
        assert_eq!(
            SObject::Lead.field("ownerid").map(|f| f.name().to_owned()),
            Some("OwnerId".to_owned())
        );
        assert_eq!(
            SObject::Lead.field("Warehouse_Key__c"),
            Some(FieldRef::Custom("Warehouse_Key__c".into()))
        );
        assert_eq!(SObject::Lead.field("Nope"), None);
        assert_eq!(SObject::Lead.field("__c"), None);
        assert_eq!(SObject::from_name("lead"), Some(SObject::Lead));
    }

    #[test]
    fn values_are_converted_like_salesforce() {
        assert_eq!(from_json(Kind::Text(10), &Value::from("")), Ok(Value::Null));
        assert_eq!(
            from_json(Kind::Bool, &Value::from("true")),
            Ok(Value::Bool(true))
        );
        assert!(from_json(Kind::Bool, &Value::from("yes")).is_err());
        assert_eq!(
            from_json(Kind::Int, &Value::from(12.0)),
            Ok(Value::from(12))
        );
        assert_eq!(
            from_json(Kind::Date, &Value::from("2024-03-01")),
            Ok(Value::from("2024-03-01"))
        );
        assert!(from_json(Kind::Date, &Value::from("2024-3-1")).is_err());
        assert_eq!(
            from_text(Kind::DateTime, "2024-03-01T10:00:00+01:00"),
            Ok(Value::from("2024-03-01T09:00:00.000+0000"))
        );
        assert!(from_json(Kind::Text(10), &serde_json::json!({"a": 1})).is_err());
    }
}
