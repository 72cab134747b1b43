//! Fingerprints of what each row would send, and the ChangeSet against the last synced state (pure, no I/O).
//!
//! A row's fingerprint covers exactly its payload: the match value and the
//! rendered properties, so a change to a column the sync does not map never
//! causes a write. Keys are compared by a 64-bit hash so the previous state of a
//! 10M-row sync fits in a few hundred MiB.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// 64-bit hash of a primary key.
pub fn key_hash(key: &str) -> u64 {
    let h = blake3::hash(key.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Fingerprint of a payload. Fields are length-prefixed so `("ab","c")` and
/// `("a","bc")` differ; `None` (SQL NULL) differs from the empty string.
pub fn fingerprint<'a>(
    match_value: &str,
    properties: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> u64 {
    let mut h = blake3::Hasher::new();
    write_field(&mut h, Some(match_value));
    for (name, value) in properties {
        write_field(&mut h, Some(name));
        write_field(&mut h, value);
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

fn write_field(h: &mut blake3::Hasher, v: Option<&str>) {
    match v {
        Some(s) => {
            h.update(&[1]);
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        None => {
            h.update(&[0]);
        }
    }
}

/// One model row, rendered as the sync would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The primary key rendered as text; `None` when any key column is NULL.
    pub key: Option<String>,
    /// The value matched against the CRM's unique property; `None` when NULL.
    pub match_value: Option<String>,
    /// CRM property → value, in a fixed order (sorted by property name). `None` is SQL NULL.
    pub properties: Vec<(String, Option<String>)>,
}

/// A row that will be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub key_hash: u64,
    pub fingerprint: u64,
    pub match_value: String,
    pub properties: Vec<(String, Option<String>)>,
}

/// Why a row cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    NullKey,
    DuplicateKey,
    NullMatchValue,
}

impl InvalidReason {
    pub fn message(self) -> &'static str {
        match self {
            InvalidReason::NullKey => "primary key is NULL",
            InvalidReason::DuplicateKey => {
                "primary key appears more than once in the model's result"
            }
            InvalidReason::NullMatchValue => {
                "match column is NULL: the CRM record cannot be identified"
            }
        }
    }
}

/// A row handoff refused itself: counted, reported with its key, never sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    /// `None` for a NULL key.
    pub key: Option<String>,
    pub reason: InvalidReason,
}

/// A row that needs a write: its key and the fingerprint of the payload planned.
/// Only these 16 bytes are kept per change, so planning a 10M-row first sync
/// stays small; the payloads are rendered again when they are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Change {
    pub key_hash: u64,
    pub fingerprint: u64,
}

/// The difference between the model's result and the last synced state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub added: Vec<Change>,
    pub changed: Vec<Change>,
    /// Key hashes that were synced before and are no longer in the model.
    pub removed: Vec<u64>,
    pub unchanged: u64,
    pub invalid: Vec<InvalidRow>,
    /// The first few changed rows in full, for people to look at (`op` is `add` or `change`).
    pub sample: Vec<(&'static str, Record)>,
}

impl ChangeSet {
    /// Rows that need a write (added then changed).
    pub fn to_send(&self) -> impl Iterator<Item = &Change> {
        self.added.iter().chain(self.changed.iter())
    }
}

enum Seen {
    Unchanged,
    /// Index into `pending`.
    Pending(usize),
    Invalid,
}

/// Builds a [`ChangeSet`] one row at a time, so the model can stream.
pub struct Differ {
    previous: HashMap<u64, u64>,
    full: bool,
    seen: HashMap<u64, Seen>,
    pending: Vec<Option<(Change, bool)>>,
    unchanged: u64,
    invalid: Vec<InvalidRow>,
    sample: Vec<(&'static str, Record)>,
    sample_limit: usize,
}

impl Differ {
    /// `previous` is key hash → fingerprint from the state store. With `full`,
    /// every valid row is sent again whatever its fingerprint.
    pub fn new(previous: HashMap<u64, u64>, full: bool) -> Self {
        Differ {
            previous,
            full,
            seen: HashMap::new(),
            pending: Vec::new(),
            unchanged: 0,
            invalid: Vec::new(),
            sample: Vec::new(),
            sample_limit: 10,
        }
    }

    /// Whether a row would be sent, and as what; `None` when it is unchanged or
    /// invalid. Used when rows are rendered a second time for sending.
    pub fn fingerprint_of(row: &Row) -> Option<(u64, u64)> {
        let key = row.key.as_deref()?;
        let m = row.match_value.as_deref()?;
        let fp = fingerprint(
            m,
            row.properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref())),
        );
        Some((key_hash(key), fp))
    }

    pub fn push(&mut self, row: Row) {
        let Some(key) = row.key else {
            self.invalid.push(InvalidRow {
                key: None,
                reason: InvalidReason::NullKey,
            });
            return;
        };
        let kh = key_hash(&key);
        match self.seen.entry(kh) {
            Entry::Occupied(mut e) => {
                // A repeated key makes every occurrence invalid: which one is right is unknowable.
                match std::mem::replace(e.get_mut(), Seen::Invalid) {
                    Seen::Unchanged => {
                        self.unchanged -= 1;
                        self.invalid.push(InvalidRow {
                            key: Some(key.clone()),
                            reason: InvalidReason::DuplicateKey,
                        });
                    }
                    Seen::Pending(i) => {
                        self.pending[i] = None;
                        self.sample.retain(|(_, r)| r.key_hash != kh);
                        self.invalid.push(InvalidRow {
                            key: Some(key.clone()),
                            reason: InvalidReason::DuplicateKey,
                        });
                    }
                    Seen::Invalid => {}
                }
                self.invalid.push(InvalidRow {
                    key: Some(key),
                    reason: InvalidReason::DuplicateKey,
                });
            }
            Entry::Vacant(e) => {
                let Some(match_value) = row.match_value else {
                    e.insert(Seen::Invalid);
                    self.invalid.push(InvalidRow {
                        key: Some(key),
                        reason: InvalidReason::NullMatchValue,
                    });
                    return;
                };
                let fp = fingerprint(
                    &match_value,
                    row.properties
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref())),
                );
                let old = self.previous.get(&kh).copied();
                if !self.full && old == Some(fp) {
                    e.insert(Seen::Unchanged);
                    self.unchanged += 1;
                } else {
                    e.insert(Seen::Pending(self.pending.len()));
                    let change = Change {
                        key_hash: kh,
                        fingerprint: fp,
                    };
                    self.pending.push(Some((change, old.is_none())));
                    if self.sample.len() < self.sample_limit {
                        let op = if old.is_none() { "add" } else { "change" };
                        self.sample.push((
                            op,
                            Record {
                                key,
                                key_hash: kh,
                                fingerprint: fp,
                                match_value,
                                properties: row.properties,
                            },
                        ));
                    }
                }
            }
        }
    }

    pub fn finish(self) -> ChangeSet {
        let mut cs = ChangeSet {
            unchanged: self.unchanged,
            invalid: self.invalid,
            sample: self.sample,
            ..ChangeSet::default()
        };
        for (rec, is_new) in self.pending.into_iter().flatten() {
            if is_new {
                cs.added.push(rec);
            } else {
                cs.changed.push(rec);
            }
        }
        let seen = self.seen;
        cs.removed = self
            .previous
            .keys()
            .filter(|kh| !seen.contains_key(kh))
            .copied()
            .collect();
        cs.removed.sort_unstable();
        cs
    }
}

#[cfg(test)]
mod tests;
