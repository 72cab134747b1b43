//! The in-memory CRM object store: one table per object type, with unique-property indexes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};

/// A CRM object type the sandbox serves. Adding one here (and its traits below)
/// is all the store needs; the routes are generated from [`ObjectType::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ObjectType {
    Contacts,
}

impl ObjectType {
    pub(crate) const ALL: [ObjectType; 1] = [ObjectType::Contacts];

    /// The segment in `/crm/v3/objects/{path}`.
    pub(crate) fn path(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contacts",
        }
    }

    /// The path parameter name HubSpot's spec uses for one object.
    pub(crate) fn id_param(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contactId",
        }
    }

    /// The upper-case singular HubSpot puts in batch-read errors ("Could not get some CONTACT objects").
    pub(crate) fn error_name(self) -> &'static str {
        match self {
            ObjectType::Contacts => "CONTACT",
        }
    }

    /// The singular HubSpot uses in conflict messages ("Contact already exists").
    pub(crate) fn label(self) -> &'static str {
        match self {
            ObjectType::Contacts => "Contact",
        }
    }

    /// HubSpot's object type id, as named in "non-unique 0-1 property" messages.
    pub(crate) fn type_id(self) -> &'static str {
        match self {
            ObjectType::Contacts => "0-1",
        }
    }

    /// Properties whose values identify one record and may be used as `idProperty`.
    pub(crate) fn unique_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &["email"],
        }
    }

    /// What a read returns when the caller names no properties.
    pub(crate) fn default_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
        }
    }

    /// How the CRM stores a value: HubSpot lower-cases and trims email addresses.
    pub(crate) fn normalize(self, property: &str, value: &str) -> String {
        match (self, property) {
            (ObjectType::Contacts, "email") => value.trim().to_lowercase(),
            _ => value.to_owned(),
        }
    }

    /// Resolves an input's `idProperty`: absent means the record id.
    pub(crate) fn id_property(self, name: Option<&str>) -> Option<IdProperty> {
        match name {
            None => Some(IdProperty::RecordId),
            Some(name) => self
                .unique_properties()
                .iter()
                .find(|unique| **unique == name)
                .map(|unique| IdProperty::Unique(unique)),
        }
    }

    fn index(self) -> usize {
        match self {
            ObjectType::Contacts => 0,
        }
    }
}

/// How an input names its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdProperty {
    RecordId,
    Unique(&'static str),
}

/// Read-only properties every record carries.
pub(crate) const SYSTEM_PROPERTIES: [&str; 3] = ["hs_object_id", "createdate", "lastmodifieddate"];

/// One stored object.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub id: u64,
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// HubSpot's timestamp format: RFC 3339, milliseconds, `Z`.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The records of one object type.
#[derive(Debug)]
pub(crate) struct Table {
    kind: ObjectType,
    records: BTreeMap<u64, Record>,
    /// property → normalized value → record id, for each unique property.
    unique: HashMap<&'static str, HashMap<String, u64>>,
    next_id: u64,
}

/// Record ids start here so they look like HubSpot's numeric ids, not row numbers.
const FIRST_ID: u64 = 1001;

impl Table {
    fn new(kind: ObjectType) -> Self {
        Table {
            kind,
            records: BTreeMap::new(),
            unique: HashMap::new(),
            next_id: FIRST_ID,
        }
    }

    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Record> {
        self.records.get(&id)
    }

    /// Finds the record an input names; a record id that is not a number names nothing.
    pub(crate) fn resolve(&self, id: &str, by: IdProperty) -> Option<u64> {
        match by {
            IdProperty::RecordId => id
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|id| self.records.contains_key(id)),
            IdProperty::Unique(property) => self
                .unique
                .get(property)
                .and_then(|values| values.get(&self.kind.normalize(property, id)))
                .copied(),
        }
    }

    /// The first unique value in `changes` already held by a record other than `record`.
    pub(crate) fn unique_conflict(
        &self,
        record: Option<u64>,
        changes: &BTreeMap<String, String>,
    ) -> Option<(&'static str, u64)> {
        self.kind.unique_properties().iter().find_map(|property| {
            let value = changes.get(*property).filter(|v| !v.is_empty())?;
            let holder = self.resolve(value, IdProperty::Unique(property))?;
            (Some(holder) != record).then_some((*property, holder))
        })
    }

    /// Creates a record from `properties`; empty values are left unset, as HubSpot does.
    pub(crate) fn create(
        &mut self,
        properties: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> &Record {
        let id = self.next_id;
        self.next_id += 1;
        let stamp = timestamp(now);
        let record = Record {
            id,
            properties: BTreeMap::from([
                ("hs_object_id".to_owned(), id.to_string()),
                ("createdate".to_owned(), stamp.clone()),
                ("lastmodifieddate".to_owned(), stamp),
            ]),
            created_at: now,
            updated_at: now,
        };
        self.records.insert(id, record);
        self.apply(id, properties, now);
        &self.records[&id]
    }

    /// Applies `changes` to an existing record; an empty value clears the property.
    pub(crate) fn update(
        &mut self,
        id: u64,
        changes: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Option<&Record> {
        if !self.records.contains_key(&id) {
            return None;
        }
        self.apply(id, changes, now);
        self.records.get(&id)
    }

    fn apply(&mut self, id: u64, changes: &BTreeMap<String, String>, now: DateTime<Utc>) {
        let kind = self.kind;
        let Some(record) = self.records.get_mut(&id) else {
            return;
        };
        for (name, value) in changes {
            // The CRM owns these; a client's value is silently ignored.
            if SYSTEM_PROPERTIES.contains(&name.as_str()) {
                continue;
            }
            let value = kind.normalize(name, value);
            let previous = if value.is_empty() {
                record.properties.remove(name)
            } else {
                record.properties.insert(name.clone(), value.clone())
            };
            if let Some(property) = kind.unique_properties().iter().find(|p| **p == name) {
                let index = self.unique.entry(property).or_default();
                if let Some(previous) = previous {
                    index.remove(&previous);
                }
                if !value.is_empty() {
                    index.insert(value, id);
                }
            }
        }
        record.updated_at = now;
        record
            .properties
            .insert("lastmodifieddate".to_owned(), timestamp(now));
    }
}

/// Every object type's table.
#[derive(Debug)]
pub(crate) struct ObjectStore {
    tables: Vec<Table>,
}

impl ObjectStore {
    pub(crate) fn new() -> Self {
        ObjectStore {
            tables: ObjectType::ALL
                .iter()
                .map(|kind| Table::new(*kind))
                .collect(),
        }
    }

    pub(crate) fn table(&self, kind: ObjectType) -> &Table {
        &self.tables[kind.index()]
    }

    pub(crate) fn table_mut(&mut self, kind: ObjectType) -> &mut Table {
        &mut self.tables[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn unique_index_follows_updates() {
        let mut store = ObjectStore::new();
        let table = store.table_mut(ObjectType::Contacts);
        let now = Utc::now();
        let id = table.create(&props(&[("email", "A@Example.com ")]), now).id;
        assert_eq!(id, FIRST_ID);
        let by_email = IdProperty::Unique("email");
        assert_eq!(table.resolve("a@example.COM", by_email), Some(id));
        table.update(id, &props(&[("email", "b@example.com")]), now);
        assert_eq!(table.resolve("a@example.com", by_email), None);
        assert_eq!(table.resolve("b@example.com", by_email), Some(id));
        table.update(id, &props(&[("email", "")]), now);
        assert_eq!(table.resolve("b@example.com", by_email), None);
        assert!(
            !table
                .get(id)
                .is_some_and(|r| r.properties.contains_key("email"))
        );
    }

    #[test]
    fn conflicts_name_the_other_record() {
        let mut store = ObjectStore::new();
        let table = store.table_mut(ObjectType::Contacts);
        let now = Utc::now();
        let a = table.create(&props(&[("email", "a@x.io")]), now).id;
        let b = table.create(&props(&[("email", "b@x.io")]), now).id;
        let change = props(&[("email", "A@x.io")]);
        assert_eq!(table.unique_conflict(Some(b), &change), Some(("email", a)));
        assert_eq!(table.unique_conflict(Some(a), &change), None);
    }

    #[test]
    fn system_properties_are_not_writable() {
        let mut store = ObjectStore::new();
        let table = store.table_mut(ObjectType::Contacts);
        let record = table.create(&props(&[("hs_object_id", "7")]), Utc::now());
        assert_eq!(record.properties["hs_object_id"], record.id.to_string());
    }
}
