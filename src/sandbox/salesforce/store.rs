//! The in-memory org: records per sObject with external-id indexes, and the one
//! [`Writer`] every write path uses (collections, single records, Bulk API, the
//! seed), so they all validate, default and stamp records the same way and can be
//! rolled back (`allOrNone`).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::errors::RecordError;
use super::ids;
use super::schema::{self, FieldRef, Kind, SObject};

/// A record's fields by API name; an unset field is absent (it reads as null).
pub(crate) type Fields = BTreeMap<String, Value>;

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub id: String,
    pub kind: SObject,
    pub fields: Fields,
    /// In the recycle bin: invisible to `query` and writes, listed by `queryAll`.
    pub deleted: bool,
}

impl Record {
    pub(crate) fn get(&self, field: &str) -> &Value {
        self.fields.get(field).unwrap_or(&Value::Null)
    }
}

/// The records of one type.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    records: BTreeMap<String, Record>,
    /// External-id field → lower-cased value → record id (live records only).
    index: HashMap<String, HashMap<String, String>>,
}

impl Table {
    /// Stores `record`, replacing any with its id, and keeps the indexes right.
    fn put(&mut self, record: Record, external_ids: &[String]) {
        self.unindex(&record.id, external_ids);
        if !record.deleted {
            for field in external_ids {
                if let Some(value) = record.fields.get(field).filter(|v| !v.is_null()) {
                    self.index
                        .entry(field.clone())
                        .or_default()
                        .insert(index_key(value), record.id.clone());
                }
            }
        }
        self.records.insert(record.id.clone(), record);
    }

    fn remove(&mut self, id: &str, external_ids: &[String]) {
        self.unindex(id, external_ids);
        self.records.remove(id);
    }

    fn unindex(&mut self, id: &str, external_ids: &[String]) {
        let Some(old) = self.records.get(id) else {
            return;
        };
        for field in external_ids {
            if let Some(value) = old.fields.get(field)
                && let Some(index) = self.index.get_mut(field)
                && index
                    .get(&index_key(value))
                    .is_some_and(|holder| holder == id)
            {
                index.remove(&index_key(value));
            }
        }
    }
}

/// External ids match without case, as in Salesforce (unless marked case-sensitive).
fn index_key(value: &Value) -> String {
    schema::to_text(value).to_lowercase()
}

/// The org's data.
#[derive(Debug, Clone)]
pub(crate) struct Org {
    tables: BTreeMap<SObject, Table>,
    counters: BTreeMap<SObject, u64>,
    /// The fields declared as unique external ids, per type.
    external_ids: BTreeMap<SObject, Vec<String>>,
    /// Custom field names as first written, per type: later spellings in another case
    /// name the same field, as Salesforce's case-insensitive names do.
    custom: BTreeMap<SObject, Vec<String>>,
}

impl Org {
    /// An empty org whose external-id fields are the defaults plus `extra` (type → field names).
    pub(crate) fn new(extra: &BTreeMap<SObject, Vec<String>>) -> Org {
        let external_ids: BTreeMap<SObject, Vec<String>> = SObject::ALL
            .into_iter()
            .map(|kind| {
                let mut fields: Vec<String> = kind
                    .default_external_ids()
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect();
                for field in extra.get(&kind).into_iter().flatten() {
                    if !fields.iter().any(|f| f.eq_ignore_ascii_case(field)) {
                        fields.push(field.clone());
                    }
                }
                (kind, fields)
            })
            .collect();
        Org {
            tables: SObject::ALL
                .into_iter()
                .map(|kind| (kind, Table::default()))
                .collect(),
            counters: BTreeMap::new(),
            custom: external_ids.clone(),
            external_ids,
        }
    }

    /// A field with a custom name in its first-written spelling (when it has been written).
    pub(crate) fn canonical(&self, kind: SObject, field: FieldRef) -> FieldRef {
        match field {
            FieldRef::Custom(name) => FieldRef::Custom(
                self.custom
                    .get(&kind)
                    .and_then(|names| names.iter().find(|n| n.eq_ignore_ascii_case(&name)))
                    .cloned()
                    .unwrap_or(name),
            ),
            standard => standard,
        }
    }

    /// Like [`Org::canonical`], remembering a custom name not seen before.
    fn register(&mut self, kind: SObject, field: FieldRef) -> FieldRef {
        let field = self.canonical(kind, field);
        if let FieldRef::Custom(name) = &field {
            let names = self.custom.entry(kind).or_default();
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        field
    }

    fn table(&self, kind: SObject) -> &Table {
        &self.tables[&kind]
    }

    /// Live records of `kind` in id (creation) order.
    pub(crate) fn records(&self, kind: SObject) -> impl Iterator<Item = &Record> {
        self.table(kind).records.values().filter(|r| !r.deleted)
    }

    /// Every record of `kind`, deleted ones too.
    pub(crate) fn all_records(&self, kind: SObject) -> impl Iterator<Item = &Record> {
        self.table(kind).records.values()
    }

    /// Any record by its canonical id, deleted or not.
    pub(crate) fn get(&self, id: &str) -> Option<&Record> {
        let kind = SObject::of_id(id)?;
        self.table(kind).records.get(id)
    }

    /// The declared external-id field `name` names (without case), by its API name.
    pub(crate) fn external_id(&self, kind: SObject, name: &str) -> Option<&str> {
        self.external_ids
            .get(&kind)?
            .iter()
            .find(|f| f.eq_ignore_ascii_case(name))
            .map(String::as_str)
    }

    /// The live record whose external id `field` is `value`.
    pub(crate) fn find_external(&self, kind: SObject, field: &str, value: &Value) -> Option<&str> {
        self.table(kind)
            .index
            .get(field)?
            .get(&index_key(value))
            .map(String::as_str)
    }

    fn put(&mut self, record: Record) {
        let external = self.external_ids[&record.kind].clone();
        if let Some(table) = self.tables.get_mut(&record.kind) {
            table.put(record, &external);
        }
    }

    fn remove(&mut self, kind: SObject, id: &str) {
        let external = self.external_ids[&kind].clone();
        if let Some(table) = self.tables.get_mut(&kind) {
            table.remove(id, &external);
        }
    }

    fn next_id(&mut self, kind: SObject) -> String {
        loop {
            let counter = self.counters.entry(kind).or_insert(0);
            *counter += 1;
            let id = ids::make(kind.prefix(), *counter);
            // A seeded record may have taken this one.
            if !self.tables[&kind].records.contains_key(&id) {
                return id;
            }
        }
    }
}

/// How to undo one change.
#[derive(Debug)]
enum Undo {
    Created(SObject, String),
    Replaced(Box<Record>),
}

/// Applies writes to an [`Org`] as one user at one instant; [`Writer::rollback`]
/// undoes everything it applied.
pub(crate) struct Writer<'a> {
    org: &'a mut Org,
    now: DateTime<Utc>,
    /// Who writes: `CreatedById`, `LastModifiedById` and the default `OwnerId`.
    user: String,
    undo: Vec<Undo>,
    /// The seed may create users, which the API may not.
    seeding: bool,
}

/// One field change, the value already converted for the field's type.
pub(crate) type Change = (FieldRef, Value);

impl<'a> Writer<'a> {
    pub(crate) fn new(org: &'a mut Org, user: &str, now: DateTime<Utc>) -> Writer<'a> {
        Writer {
            org,
            now,
            user: user.to_owned(),
            undo: Vec::new(),
            seeding: false,
        }
    }

    pub(crate) fn seeding(org: &'a mut Org, user: &str, now: DateTime<Utc>) -> Writer<'a> {
        Writer {
            seeding: true,
            ..Writer::new(org, user, now)
        }
    }

    pub(crate) fn org(&self) -> &Org {
        self.org
    }

    /// Undoes every write, newest first.
    pub(crate) fn rollback(self) {
        for undo in self.undo.into_iter().rev() {
            match undo {
                Undo::Created(kind, id) => self.org.remove(kind, &id),
                Undo::Replaced(record) => self.org.put(*record),
            }
        }
    }

    fn check_writable(&self, kind: SObject) -> Result<(), RecordError> {
        if kind.writable() || self.seeding {
            Ok(())
        } else {
            Err(RecordError::new(
                "INSUFFICIENT_ACCESS_OR_READONLY",
                "insufficient access rights on object id",
                Vec::new(),
            ))
        }
    }

    /// Creates a record; returns its id. `id` is only for the seed.
    pub(crate) fn create(
        &mut self,
        kind: SObject,
        changes: Vec<Change>,
        id: Option<String>,
    ) -> Result<String, RecordError> {
        self.check_writable(kind)?;
        if changes.iter().any(|(field, _)| field.name() == "Id") {
            return Err(RecordError::new(
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
                vec!["Id".to_owned()],
            ));
        }
        let changes = self.register(kind, changes);
        let defaults = self.defaults(kind, &changes);
        let mut fields = self.validate(kind, None, &defaults, &changes)?;
        let id = match id {
            Some(id) => id,
            None => self.org.next_id(kind),
        };
        let stamp = Value::from(schema::datetime(self.now));
        // The seed's first user is created by no one: it stands as its own creator.
        let creator = if self.user.is_empty() {
            id.clone()
        } else {
            self.user.clone()
        };
        fields.insert("Id".to_owned(), Value::from(id.clone()));
        fields.insert("IsDeleted".to_owned(), Value::Bool(false));
        fields.insert("CreatedDate".to_owned(), stamp.clone());
        fields.insert("CreatedById".to_owned(), Value::from(creator.clone()));
        fields.insert("LastModifiedDate".to_owned(), stamp.clone());
        fields.insert("LastModifiedById".to_owned(), Value::from(creator));
        fields.insert("SystemModstamp".to_owned(), stamp);
        self.org.put(Record {
            id: id.clone(),
            kind,
            fields,
            deleted: false,
        });
        self.undo.push(Undo::Created(kind, id.clone()));
        Ok(id)
    }

    /// Updates the live record `id_text` names, which must be of type `kind`.
    pub(crate) fn update(
        &mut self,
        kind: SObject,
        id_text: &str,
        changes: Vec<Change>,
    ) -> Result<String, RecordError> {
        let id = self.live_id(kind, id_text)?;
        self.update_id(kind, &id, changes)?;
        Ok(id)
    }

    fn update_id(
        &mut self,
        kind: SObject,
        id: &str,
        changes: Vec<Change>,
    ) -> Result<(), RecordError> {
        self.check_writable(kind)?;
        let Some(existing) = self.org.get(id).cloned() else {
            return Err(cross_reference(&[]));
        };
        let changes = self.register(kind, changes);
        let mut fields = self.validate(kind, Some(id), &existing.fields, &changes)?;
        let stamp = Value::from(schema::datetime(self.now));
        fields.insert("LastModifiedDate".to_owned(), stamp.clone());
        fields.insert(
            "LastModifiedById".to_owned(),
            Value::from(self.user.clone()),
        );
        fields.insert("SystemModstamp".to_owned(), stamp);
        self.org.put(Record {
            fields,
            ..existing.clone()
        });
        self.undo.push(Undo::Replaced(Box::new(existing)));
        Ok(())
    }

    /// Creates or updates the record of `kind` whose external id `field` (an API name,
    /// or `Id`) is `value`; returns its id and whether it was created.
    pub(crate) fn upsert(
        &mut self,
        kind: SObject,
        field: &str,
        value: &Value,
        mut changes: Vec<Change>,
    ) -> Result<(String, bool), RecordError> {
        if value.is_null() || schema::to_text(value).is_empty() {
            return Err(RecordError::new(
                "MISSING_ARGUMENT",
                format!("{field} not specified"),
                vec![field.to_owned()],
            ));
        }
        if field == "Id" {
            changes.retain(|(f, _)| f.name() != "Id");
            let id = self.update(kind, &schema::to_text(value), changes)?;
            return Ok((id, false));
        }
        let existing = self
            .org
            .find_external(kind, field, value)
            .map(str::to_owned);
        match existing {
            Some(id) => {
                self.update_id(kind, &id, changes)?;
                Ok((id, false))
            }
            None => {
                if !changes
                    .iter()
                    .any(|(f, _)| f.name().eq_ignore_ascii_case(field))
                {
                    let field_ref = kind
                        .field(field)
                        .unwrap_or_else(|| FieldRef::Custom(field.to_owned()));
                    changes.push((field_ref, value.clone()));
                }
                let id = self.create(kind, changes, None)?;
                Ok((id, true))
            }
        }
    }

    /// Moves the record `id_text` names to the recycle bin.
    pub(crate) fn delete(&mut self, id_text: &str) -> Result<String, RecordError> {
        let id = ids::normalize(id_text).ok_or_else(|| {
            RecordError::new(
                "MALFORMED_ID",
                format!("malformed id {id_text}"),
                Vec::new(),
            )
        })?;
        let Some(existing) = self.org.get(&id).cloned() else {
            return Err(deleted_entity());
        };
        if existing.deleted {
            return Err(deleted_entity());
        }
        self.check_writable(existing.kind)?;
        let mut fields = existing.fields.clone();
        fields.insert("IsDeleted".to_owned(), Value::Bool(true));
        fields.insert(
            "SystemModstamp".to_owned(),
            Value::from(schema::datetime(self.now)),
        );
        self.org.put(Record {
            fields,
            deleted: true,
            ..existing.clone()
        });
        self.undo.push(Undo::Replaced(Box::new(existing)));
        Ok(id)
    }

    /// The canonical id of the live record of `kind` that `id_text` names.
    fn live_id(&self, kind: SObject, id_text: &str) -> Result<String, RecordError> {
        let label = kind.name();
        let id = ids::normalize(id_text).ok_or_else(|| {
            RecordError::new(
                "MALFORMED_ID",
                format!("{label} ID: id value of incorrect type: {id_text}"),
                vec!["Id".to_owned()],
            )
        })?;
        if SObject::of_id(&id) != Some(kind) {
            return Err(RecordError::new(
                "MALFORMED_ID",
                format!("{label} ID: id value of incorrect type: {id_text}"),
                vec!["Id".to_owned()],
            ));
        }
        match self.org.get(&id) {
            Some(record) if !record.deleted => Ok(id),
            Some(_) => Err(deleted_entity()),
            None => Err(cross_reference(&[])),
        }
    }

    fn register(&mut self, kind: SObject, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .map(|(field, value)| (self.org.register(kind, field), value))
            .collect()
    }

    /// The fields a new record starts with before the client's changes.
    fn defaults(&self, kind: SObject, changes: &[Change]) -> Fields {
        let mut fields = Fields::new();
        let given = |name: &str| changes.iter().any(|(f, _)| f.name() == name);
        let mut default = |name: &str, value: Value| {
            if !given(name) {
                fields.insert(name.to_owned(), value);
            }
        };
        if kind.field("OwnerId").is_some() && !self.user.is_empty() {
            default("OwnerId", Value::from(self.user.clone()));
        }
        match kind {
            SObject::Lead => {
                default("Status", Value::from("Open - Not Contacted"));
                default("IsConverted", Value::Bool(false));
            }
            SObject::Task => {
                default("Status", Value::from("Not Started"));
                default("Priority", Value::from("Normal"));
                default("IsReminderSet", Value::Bool(false));
            }
            SObject::User => default("IsActive", Value::Bool(true)),
            SObject::Contact | SObject::Account => {}
        }
        fields
    }

    /// Applies `changes` to `fields` (a record's current fields) and checks the result
    /// as Salesforce would; returns the new fields. `id` is the record being updated.
    fn validate(
        &self,
        kind: SObject,
        id: Option<&str>,
        fields: &Fields,
        changes: &[Change],
    ) -> Result<Fields, RecordError> {
        let read_only: Vec<String> = changes
            .iter()
            .filter(|(field, _)| field.read_only() && !self.seeding)
            .map(|(field, _)| field.name().to_owned())
            .collect();
        if !read_only.is_empty() {
            return Err(RecordError::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    read_only.join(", ")
                ),
                read_only,
            ));
        }
        let mut next = fields.clone();
        for (field, value) in changes {
            if value.is_null() {
                next.remove(field.name());
            } else {
                next.insert(field.name().to_owned(), value.clone());
            }
        }

        let missing: Vec<String> = kind
            .fields()
            .filter(|f| f.required && f.name != "Id")
            .filter(|f| next.get(f.name).is_none_or(Value::is_null))
            .map(|f| f.name.to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(RecordError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                missing,
            ));
        }

        for (field, value) in changes {
            if value.is_null() {
                continue;
            }
            let FieldRef::Standard(def) = field else {
                continue;
            };
            let text = schema::to_text(value);
            match def.kind {
                Kind::Text(max) if text.chars().count() > max => {
                    return Err(RecordError::new(
                        "STRING_TOO_LONG",
                        format!(
                            "{}: data value too large: {text} (max length={max})",
                            def.label
                        ),
                        vec![def.name.to_owned()],
                    ));
                }
                Kind::Email if !valid_email(&text) => {
                    return Err(RecordError::new(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{}: invalid email address: {text}", def.label),
                        vec![def.name.to_owned()],
                    ));
                }
                Kind::Picklist(values) => {
                    let Some(canonical) = values.iter().find(|v| v.eq_ignore_ascii_case(&text))
                    else {
                        return Err(RecordError::new(
                            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            format!(
                                "{}: bad value for restricted picklist field: {text}",
                                def.label
                            ),
                            vec![def.name.to_owned()],
                        ));
                    };
                    next.insert(def.name.to_owned(), Value::from(*canonical));
                }
                Kind::Reference(targets) => {
                    let target = self.reference(def.label, def.name, targets, &text)?;
                    next.insert(def.name.to_owned(), Value::from(target));
                }
                _ => {}
            }
        }

        // Declared external ids are unique here, as they usually are in an org.
        for field in self.org.external_ids.get(&kind).into_iter().flatten() {
            let Some(value) = changes
                .iter()
                .find(|(f, v)| f.name() == field && !v.is_null())
                .map(|(_, v)| v)
            else {
                continue;
            };
            if let Some(holder) = self.org.find_external(kind, field, value)
                && Some(holder) != id
            {
                return Err(RecordError::new(
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {field} duplicates value on record with id: {holder}"
                    ),
                    vec![field.clone()],
                ));
            }
        }

        derive(kind, &mut next);
        Ok(next)
    }

    /// Checks a lookup value: an id, of an allowed type, of a live record (an active user).
    fn reference(
        &self,
        label: &str,
        name: &str,
        targets: &[SObject],
        text: &str,
    ) -> Result<String, RecordError> {
        let fields = vec![name.to_owned()];
        let Some(id) = ids::normalize(text) else {
            return Err(RecordError::new(
                "MALFORMED_ID",
                format!("{label}: id value of incorrect type: {text}"),
                fields,
            ));
        };
        if !SObject::of_id(&id).is_some_and(|kind| targets.contains(&kind)) {
            return Err(RecordError::new(
                "FIELD_INTEGRITY_EXCEPTION",
                format!("{label}: id value of incorrect type: {text}"),
                fields,
            ));
        }
        match self.org.get(&id) {
            Some(record) if !record.deleted => {
                if record.kind == SObject::User && record.get("IsActive") == &Value::Bool(false) {
                    return Err(RecordError::new(
                        "INACTIVE_OWNER_OR_USER",
                        "operation performed with inactive user as owner",
                        fields,
                    ));
                }
                Ok(id)
            }
            _ => Err(cross_reference(&fields)),
        }
    }
}

fn cross_reference(fields: &[String]) -> RecordError {
    RecordError::new(
        "INVALID_CROSS_REFERENCE_KEY",
        "invalid cross reference id",
        fields.to_vec(),
    )
}

fn deleted_entity() -> RecordError {
    RecordError::new("ENTITY_IS_DELETED", "entity is deleted", Vec::new())
}

/// Fields Salesforce computes from others.
fn derive(kind: SObject, fields: &mut Fields) {
    if matches!(kind, SObject::Lead | SObject::Contact | SObject::User) {
        let name = ["FirstName", "LastName"]
            .iter()
            .filter_map(|f| fields.get(*f).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        fields.insert("Name".to_owned(), Value::from(name));
    }
    if kind == SObject::Task {
        let closed = fields.get("Status").and_then(Value::as_str) == Some("Completed");
        fields.insert("IsClosed".to_owned(), Value::Bool(closed));
    }
}

/// Salesforce's own check is stricter; this refuses what it certainly refuses.
fn valid_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: SObject, name: &str, value: Value) -> Change {
        (kind.field(name).expect("a field"), value)
    }

    fn org_with_user() -> (Org, String) {
        let mut org = Org::new(&BTreeMap::new());
        let now = Utc::now();
        let mut writer = Writer::seeding(&mut org, "", now);
        let user = writer
            .create(
                SObject::User,
                vec![
                    change(SObject::User, "Username", Value::from("a@x.io")),
                    change(SObject::User, "Email", Value::from("a@x.io")),
                    change(SObject::User, "LastName", Value::from("A")),
                ],
                None,
            )
            .expect("user");
        (org, user)
    }

    #[test]
    fn rollback_restores_records_and_indexes() {
        let (mut org, user) = org_with_user();
        let now = Utc::now();
        let lead = |ext: &str| {
            vec![
                change(SObject::Lead, "LastName", Value::from("L")),
                change(SObject::Lead, "Company", Value::from("C")),
                change(SObject::Lead, "External_Id__c", Value::from(ext)),
            ]
        };
        let mut writer = Writer::new(&mut org, &user, now);
        let first = writer
            .create(SObject::Lead, lead("k1"), None)
            .expect("create");
        writer.rollback();
        assert_eq!(org.records(SObject::Lead).count(), 0);
        assert_eq!(
            org.find_external(SObject::Lead, "External_Id__c", &Value::from("K1")),
            None
        );

        let mut writer = Writer::new(&mut org, &user, now);
        let second = writer
            .create(SObject::Lead, lead("k1"), None)
            .expect("create");
        assert_ne!(first, second, "ids are not reused");
        let mut writer = Writer::new(&mut org, &user, now);
        writer
            .update(SObject::Lead, &second, lead("k2"))
            .expect("update");
        writer.delete(&second).expect("delete");
        writer.rollback();
        let record = org.get(&second).expect("still there");
        assert!(!record.deleted);
        assert_eq!(record.get("External_Id__c"), &Value::from("k1"));
        assert_eq!(
            org.find_external(SObject::Lead, "External_Id__c", &Value::from("k1")),
            Some(second.as_str())
        );
        assert_eq!(record.get("OwnerId"), &Value::from(user));
        assert_eq!(record.get("Name"), &Value::from("L"));
    }

    #[test]
    fn duplicate_external_ids_are_refused() {
        let (mut org, user) = org_with_user();
        let mut writer = Writer::new(&mut org, &user, Utc::now());
        let lead = vec![
            change(SObject::Lead, "LastName", Value::from("L")),
            change(SObject::Lead, "Company", Value::from("C")),
            change(SObject::Lead, "External_Id__c", Value::from("k")),
        ];
        writer
            .create(SObject::Lead, lead.clone(), None)
            .expect("first");
        let error = writer
            .create(SObject::Lead, lead, None)
            .expect_err("second");
        assert_eq!(error.status_code, "DUPLICATE_VALUE");
    }

    #[test]
    fn emails() {
        assert!(valid_email("a.b@c.io"));
        for bad in ["a", "a@b", "@b.io", "a@b.io.", "a b@c.io", "a@b@c.io"] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
