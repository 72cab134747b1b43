//! The in-memory CRM object store: one table per object type, with unique-property indexes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};

/// A CRM object type the sandbox serves. Adding one here (and its traits below)
/// is all the store needs; the routes are generated from [`ObjectType::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ObjectType {
    Contacts,
    Companies,
    Deals,
    Tasks,
    Leads,
}

impl ObjectType {
    pub(crate) const ALL: [ObjectType; 5] = [
        ObjectType::Contacts,
        ObjectType::Companies,
        ObjectType::Deals,
        ObjectType::Tasks,
        ObjectType::Leads,
    ];

    /// The segment in `/crm/v3/objects/{path}`.
    pub(crate) fn path(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contacts",
            ObjectType::Companies => "companies",
            ObjectType::Deals => "deals",
            ObjectType::Tasks => "tasks",
            ObjectType::Leads => "leads",
        }
    }

    /// Every segment the type is served under: its name, and for deals also the
    /// object type id `0-3` that HubSpot's deals spec uses.
    pub(crate) fn paths(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &["contacts"],
            ObjectType::Companies => &["companies"],
            ObjectType::Deals => &["deals", "0-3"],
            ObjectType::Tasks => &["tasks"],
            ObjectType::Leads => &["leads"],
        }
    }

    /// The path parameter name HubSpot's spec uses for one object.
    pub(crate) fn id_param(self) -> &'static str {
        match self {
            ObjectType::Contacts => "contactId",
            ObjectType::Companies => "companyId",
            ObjectType::Deals => "dealId",
            ObjectType::Tasks => "taskId",
            ObjectType::Leads => "leadsId",
        }
    }

    /// The upper-case singular HubSpot puts in batch-read errors ("Could not get some CONTACT objects").
    pub(crate) fn error_name(self) -> &'static str {
        match self {
            ObjectType::Contacts => "CONTACT",
            ObjectType::Companies => "COMPANY",
            ObjectType::Deals => "DEAL",
            ObjectType::Tasks => "TASK",
            ObjectType::Leads => "LEAD",
        }
    }

    /// The singular HubSpot uses in conflict messages ("Contact already exists").
    pub(crate) fn label(self) -> &'static str {
        match self {
            ObjectType::Contacts => "Contact",
            ObjectType::Companies => "Company",
            ObjectType::Deals => "Deal",
            ObjectType::Tasks => "Task",
            ObjectType::Leads => "Lead",
        }
    }

    /// HubSpot's object type id, as named in "non-unique 0-1 property" messages.
    pub(crate) fn type_id(self) -> &'static str {
        match self {
            ObjectType::Contacts => "0-1",
            ObjectType::Companies => "0-2",
            ObjectType::Deals => "0-3",
            ObjectType::Tasks => "0-27",
            ObjectType::Leads => "0-136",
        }
    }

    /// Properties whose values identify one record and may be used as `idProperty`.
    pub(crate) fn unique_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &["email"],
            ObjectType::Companies => &["domain"],
            ObjectType::Deals | ObjectType::Tasks | ObjectType::Leads => &[],
        }
    }

    /// HubSpot's own properties of the type that a client may write (beside any `hs_` property);
    /// anything else must be created in the account first (the seed's `properties`).
    pub(crate) fn standard_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Contacts => &[
                "address",
                "annualrevenue",
                "city",
                "company",
                "country",
                "date_of_birth",
                "email",
                "fax",
                "firstname",
                "hubspot_owner_id",
                "industry",
                "jobtitle",
                "lastname",
                "lifecyclestage",
                "message",
                "mobilephone",
                "numemployees",
                "phone",
                "salutation",
                "state",
                "twitterhandle",
                "website",
                "zip",
            ],
            ObjectType::Companies => &[
                "address",
                "annualrevenue",
                "city",
                "country",
                "description",
                "domain",
                "hubspot_owner_id",
                "industry",
                "lifecyclestage",
                "name",
                "numberofemployees",
                "phone",
                "state",
                "type",
                "website",
                "zip",
            ],
            ObjectType::Deals => &[
                "amount",
                "closedate",
                "dealname",
                "dealstage",
                "dealtype",
                "description",
                "hubspot_owner_id",
                "pipeline",
            ],
            ObjectType::Tasks | ObjectType::Leads => &["hubspot_owner_id"],
        }
    }

    /// Properties a create must set.
    pub(crate) fn required_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Tasks => &["hs_timestamp"],
            _ => &[],
        }
    }

    /// The read-only properties every record carries: its id, creation and modification dates.
    /// Contacts name the dates `createdate`/`lastmodifieddate`, other types differ, as in HubSpot.
    pub(crate) fn system_properties(self) -> [&'static str; 3] {
        match self {
            ObjectType::Contacts => ["hs_object_id", "createdate", "lastmodifieddate"],
            ObjectType::Companies | ObjectType::Deals => {
                ["hs_object_id", "createdate", "hs_lastmodifieddate"]
            }
            ObjectType::Tasks | ObjectType::Leads => {
                ["hs_object_id", "hs_createdate", "hs_lastmodifieddate"]
            }
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
            ObjectType::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            ObjectType::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
            ObjectType::Tasks | ObjectType::Leads => {
                &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"]
            }
        }
    }

    /// The object type a `HUBSPOT_DEFINED` association type id from this type points to.
    pub(crate) fn association_target(self, type_id: i32) -> Option<ObjectType> {
        ASSOCIATION_TYPES
            .iter()
            .find(|(from, id, _)| *from == self && *id == type_id)
            .map(|(_, _, to)| *to)
    }

    /// The default (unlabelled) `HUBSPOT_DEFINED` association type from this type to `to`.
    pub(crate) fn default_association(self, to: ObjectType) -> Option<i32> {
        ASSOCIATION_TYPES
            .iter()
            .find(|(from, _, target)| *from == self && *target == to)
            .map(|(_, id, _)| *id)
    }

    /// A type named in a URL: its path (`contacts`), its type id (`0-1`) or its singular (`contact`).
    pub(crate) fn from_segment(segment: &str) -> Option<ObjectType> {
        let segment = segment.to_ascii_lowercase();
        ObjectType::ALL.into_iter().find(|kind| {
            kind.paths().contains(&segment.as_str())
                || kind.type_id() == segment
                || kind.label().eq_ignore_ascii_case(&segment)
        })
    }

    /// How the CRM stores a value: HubSpot lower-cases and trims email addresses.
    /// Borrowed when nothing changes, which on the write path is almost always.
    pub(crate) fn normalize<'v>(self, property: &str, value: &'v str) -> Cow<'v, str> {
        match (self, property) {
            (ObjectType::Contacts, "email") | (ObjectType::Companies, "domain") => {
                let trimmed = value.trim();
                if trimmed
                    .bytes()
                    .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
                {
                    Cow::Borrowed(trimmed)
                } else {
                    Cow::Owned(trimmed.to_lowercase())
                }
            }
            _ => Cow::Borrowed(value),
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
            ObjectType::Companies => 1,
            ObjectType::Deals => 2,
            ObjectType::Tasks => 3,
            ObjectType::Leads => 4,
        }
    }
}

/// `HUBSPOT_DEFINED` association types: (from, type id, to). The first of each
/// (from, to) pair is the default one.
const ASSOCIATION_TYPES: [(ObjectType, i32, ObjectType); 20] = {
    use ObjectType::{Companies, Contacts, Deals, Leads, Tasks};
    [
        (Tasks, 204, Contacts),
        (Tasks, 192, Companies),
        (Tasks, 216, Deals),
        (Contacts, 203, Tasks),
        (Companies, 191, Tasks),
        (Deals, 215, Tasks),
        (Contacts, 279, Companies),
        (Contacts, 1, Companies),
        (Companies, 280, Contacts),
        (Companies, 2, Contacts),
        (Deals, 3, Contacts),
        (Contacts, 4, Deals),
        (Deals, 341, Companies),
        (Deals, 5, Companies),
        (Companies, 342, Deals),
        (Companies, 6, Deals),
        (Leads, 578, Contacts),
        (Contacts, 579, Leads),
        (Leads, 610, Companies),
        (Companies, 611, Leads),
    ]
};

/// How an input names its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdProperty {
    RecordId,
    Unique(&'static str),
}

/// A link from a record to another record, as created with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Association {
    pub to: ObjectType,
    pub id: u64,
    pub type_id: i32,
}

/// One stored object.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub id: u64,
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set by a batch archive; an archived record is invisible to lookups and writes.
    pub archived_at: Option<DateTime<Utc>>,
    /// Links to other records, ordered and without repeats.
    pub associations: Vec<Association>,
}

/// HubSpot's timestamp format: RFC 3339, milliseconds, `Z`.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The property changes a write brings, whatever map they were parsed into.
/// `pairs` yields them in name order (both maps do), which lets a write walk the
/// stored properties once; another order would still be applied correctly, only slower.
pub(crate) trait Changes {
    fn value(&self, name: &str) -> Option<&str>;
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)>;
}

impl Changes for BTreeMap<String, String> {
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// The records of one object type.
#[derive(Debug)]
pub(crate) struct Table {
    kind: ObjectType,
    records: BTreeMap<u64, Record>,
    /// property → normalized value → record id, for each unique property.
    unique: HashMap<&'static str, HashMap<String, u64, UniqueHasher>, UniqueHasher>,
    next_id: u64,
    /// The last write's time and its [`timestamp`]: a batch writes every record at one
    /// `now`, so the string is formatted once, not once per record.
    stamp: (DateTime<Utc>, String),
}

/// The unique indexes are probed once or twice per written record: a fast hash
/// (foldhash, randomly seeded) instead of SipHash.
type UniqueHasher = foldhash::fast::RandomState;

/// Record ids start here so they look like HubSpot's numeric ids, not row numbers.
const FIRST_ID: u64 = 1001;

impl Table {
    fn new(kind: ObjectType) -> Self {
        Table {
            kind,
            records: BTreeMap::new(),
            unique: HashMap::default(),
            next_id: FIRST_ID,
            stamp: (DateTime::<Utc>::MIN_UTC, String::new()),
        }
    }

    /// `timestamp(now)`, formatted only when `now` differs from the last write's.
    fn stamp(&mut self, now: DateTime<Utc>) -> &str {
        if self.stamp.0 != now || self.stamp.1.is_empty() {
            self.stamp = (now, timestamp(now));
        }
        &self.stamp.1
    }

    /// The live (not archived) records, ordered by id.
    pub(crate) fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().filter(|r| r.archived_at.is_none())
    }

    /// The archived records, ordered by id.
    pub(crate) fn archived_records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().filter(|r| r.archived_at.is_some())
    }

    /// Any record by id, archived or not; use [`Table::resolve`] to find live ones.
    pub(crate) fn get(&self, id: u64) -> Option<&Record> {
        self.records.get(&id)
    }

    /// The id the next created record will get.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Finds the live record an input names; a record id that is not a number names nothing.
    pub(crate) fn resolve(&self, id: &str, by: IdProperty) -> Option<u64> {
        match by {
            IdProperty::RecordId => id.trim().parse::<u64>().ok().filter(|id| {
                self.records
                    .get(id)
                    .is_some_and(|r| r.archived_at.is_none())
            }),
            // Archived records are not in the index, so their values are free for reuse.
            IdProperty::Unique(property) => self
                .unique
                .get(property)
                .and_then(|values| values.get(&*self.kind.normalize(property, id)))
                .copied(),
        }
    }

    /// Finds an archived record an input names; by a unique value, the most recently archived.
    pub(crate) fn resolve_archived(&self, id: &str, by: IdProperty) -> Option<u64> {
        match by {
            IdProperty::RecordId => id.trim().parse::<u64>().ok().filter(|id| {
                self.records
                    .get(id)
                    .is_some_and(|r| r.archived_at.is_some())
            }),
            IdProperty::Unique(property) => {
                let value = self.kind.normalize(property, id);
                self.archived_records()
                    .filter(|r| r.properties.get(property).map(String::as_str) == Some(&*value))
                    .max_by_key(|r| (r.archived_at, r.id))
                    .map(|r| r.id)
            }
        }
    }

    /// Archives a live record: it leaves the unique indexes and every lookup but
    /// [`Table::resolve_archived`]. Returns false when there is no such live record.
    pub(crate) fn archive(&mut self, id: u64, now: DateTime<Utc>) -> bool {
        let kind = self.kind;
        let Some(record) = self
            .records
            .get_mut(&id)
            .filter(|r| r.archived_at.is_none())
        else {
            return false;
        };
        record.archived_at = Some(now);
        for property in kind.unique_properties() {
            if let Some(value) = record.properties.get(*property)
                && let Some(index) = self.unique.get_mut(property)
                && index.get(value) == Some(&id)
            {
                index.remove(value);
            }
        }
        true
    }

    /// The first unique value in `changes` already held by a record other than `record`.
    pub(crate) fn unique_conflict(
        &self,
        record: Option<u64>,
        changes: &(impl Changes + ?Sized),
    ) -> Option<(&'static str, u64)> {
        self.kind.unique_properties().iter().find_map(|property| {
            let value = changes.value(property).filter(|v| !v.is_empty())?;
            let holder = self.resolve(value, IdProperty::Unique(property))?;
            (Some(holder) != record).then_some((*property, holder))
        })
    }

    /// Creates a record from `properties`; empty values are left unset, as HubSpot does.
    pub(crate) fn create(
        &mut self,
        properties: &(impl Changes + ?Sized),
        now: DateTime<Utc>,
    ) -> &Record {
        let id = self.next_id;
        self.next_id += 1;
        let stamp = self.stamp(now).to_owned();
        let [id_property, created, modified] = self.kind.system_properties();
        let record = Record {
            id,
            properties: BTreeMap::from([
                (id_property.to_owned(), id.to_string()),
                (created.to_owned(), stamp.clone()),
                (modified.to_owned(), stamp),
            ]),
            created_at: now,
            updated_at: now,
            archived_at: None,
            associations: Vec::new(),
        };
        self.records.insert(id, record);
        self.update(id, properties, now)
            .expect("the record was inserted just above")
    }

    /// Adds links to a record (ignoring ones it already has).
    pub(crate) fn associate(&mut self, id: u64, links: &[Association]) {
        if let Some(record) = self.records.get_mut(&id) {
            record.associations.extend_from_slice(links);
            record.associations.sort();
            record.associations.dedup();
        }
    }

    /// Applies `changes` to a live record (an empty value clears the property) and
    /// returns it; `None`, and nothing written, when there is no live record `id`.
    ///
    /// This is the sandbox's hot path (every batch upsert and update runs it per record,
    /// under the data lock): the record is looked up once (with a large table each tree
    /// search is a few cache misses), and values already stored are overwritten in place
    /// instead of reallocated.
    pub(crate) fn update(
        &mut self,
        id: u64,
        changes: &(impl Changes + ?Sized),
        now: DateTime<Utc>,
    ) -> Option<&Record> {
        let kind = self.kind;
        self.stamp(now);
        let Table {
            records,
            unique,
            stamp: (_, stamp),
            ..
        } = self;
        let record = records.get_mut(&id).filter(|r| r.archived_at.is_none())?;
        // One ordered walk over the stored properties overwrites the values that are
        // already there (an update's usual case) without a tree search per change;
        // the rest (new properties, removals, unique ones) is left for the loop below.
        let mut rest = Vec::new();
        let mut stored = record.properties.iter_mut().peekable();
        for (name, value) in changes.pairs() {
            // The CRM owns these; a client's value is silently ignored.
            if kind.system_properties().contains(&name) {
                continue;
            }
            let value = kind.normalize(name, value);
            if value.is_empty() || kind.unique_properties().contains(&name) {
                rest.push((name, value));
                continue;
            }
            while stored.next_if(|(key, _)| key.as_str() < name).is_some() {}
            match stored.peek_mut() {
                Some((key, current)) if key.as_str() == name => {
                    if **current != *value {
                        current.clear();
                        current.push_str(&value);
                    }
                }
                _ => rest.push((name, value)),
            }
        }
        for (name, value) in rest {
            if let Some(property) = kind.unique_properties().iter().find(|p| **p == name) {
                let previous = if value.is_empty() {
                    record.properties.remove(name)
                } else {
                    record
                        .properties
                        .insert(name.to_owned(), value.clone().into_owned())
                };
                if previous.as_deref() == Some(&*value) {
                    continue;
                }
                let index = unique.entry(property).or_default();
                if let Some(previous) = previous {
                    index.remove(&previous);
                }
                if !value.is_empty() {
                    index.insert(value.into_owned(), id);
                }
            } else if value.is_empty() {
                record.properties.remove(name);
            } else {
                overwrite(&mut record.properties, name, &value);
            }
        }
        record.updated_at = now;
        overwrite(&mut record.properties, kind.system_properties()[2], stamp);
        Some(record)
    }
}

/// Sets `name` to `value`, reusing the stored string's allocation when there is one.
fn overwrite(properties: &mut BTreeMap<String, String>, name: &str, value: &str) {
    match properties.get_mut(name) {
        Some(stored) => {
            if stored != value {
                stored.clear();
                stored.push_str(value);
            }
        }
        None => {
            properties.insert(name.to_owned(), value.to_owned());
        }
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
    fn archived_records_leave_lookups_and_free_their_email() {
        let mut store = ObjectStore::new();
        let table = store.table_mut(ObjectType::Contacts);
        let now = Utc::now();
        let a = table.create(&props(&[("email", "a@x.io")]), now).id;
        let by_email = IdProperty::Unique("email");
        assert!(table.archive(a, now));
        assert!(!table.archive(a, now), "archiving twice is a no-op");
        assert_eq!(table.resolve("a@x.io", by_email), None);
        assert_eq!(table.resolve(&a.to_string(), IdProperty::RecordId), None);
        assert_eq!(table.resolve_archived("A@x.io", by_email), Some(a));
        assert_eq!(
            table.resolve_archived(&a.to_string(), IdProperty::RecordId),
            Some(a)
        );
        assert!(
            table
                .update(a, &props(&[("firstname", "A")]), now)
                .is_none()
        );
        assert_eq!(
            table.unique_conflict(None, &props(&[("email", "a@x.io")])),
            None
        );
        let b = table.create(&props(&[("email", "a@x.io")]), now).id;
        assert_eq!(table.resolve("a@x.io", by_email), Some(b));
        assert_eq!(table.records().map(|r| r.id).collect::<Vec<_>>(), [b]);
        assert_eq!(
            table.archived_records().map(|r| r.id).collect::<Vec<_>>(),
            [a]
        );
    }

    #[test]
    fn one_update_overwrites_adds_clears_and_reindexes() {
        let mut store = ObjectStore::new();
        let table = store.table_mut(ObjectType::Contacts);
        let now = Utc::now();
        let id = table
            .create(
                &props(&[("email", "a@x.io"), ("firstname", "Ada"), ("lastname", "L")]),
                now,
            )
            .id;
        let later = now + chrono::Duration::seconds(5);
        let record = table
            .update(
                id,
                &props(&[
                    ("company", "X"),
                    ("email", "B@x.io"),
                    ("firstname", "Ada"),
                    ("lastname", ""),
                    ("zip", "1000"),
                ]),
                later,
            )
            .expect("a live record");
        let shown: Vec<(&str, &str)> = record
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let stamp = timestamp(later);
        assert_eq!(
            shown,
            [
                ("company", "X"),
                ("createdate", timestamp(now).as_str()),
                ("email", "b@x.io"),
                ("firstname", "Ada"),
                ("hs_object_id", id.to_string().as_str()),
                ("lastmodifieddate", stamp.as_str()),
                ("zip", "1000"),
            ]
        );
        let by_email = IdProperty::Unique("email");
        assert_eq!(table.resolve("b@x.io", by_email), Some(id));
        assert_eq!(table.resolve("a@x.io", by_email), None);
    }

    #[test]
    fn system_properties_are_not_writable() {
        let mut store = ObjectStore::new();
        let table = store.table_mut(ObjectType::Contacts);
        let record = table.create(&props(&[("hs_object_id", "7")]), Utc::now());
        assert_eq!(record.properties["hs_object_id"], record.id.to_string());
    }
}
