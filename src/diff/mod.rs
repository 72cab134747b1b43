//! Fingerprints of what each row would send, and the ChangeSet against the last synced state (pure, no I/O).
//!
//! A row's fingerprint covers exactly its payload: the match value and the
//! rendered properties, so a change to a column the sync does not map never
//! causes a write. Keys are compared by a 64-bit hash so the previous state of a
//! 10M-row sync fits in a few hundred MiB.
//!
//! # Fingerprint schemes
//!
//! Both schemes hash the same byte stream (see [`Payload`]): the match value, then
//! each property sorted by name as name and value, every field length-prefixed.
//!
//! - **legacy** ([`legacy_fingerprint`]): BLAKE3, first 8 bytes little-endian. Every
//!   state written before the XXH64 scheme holds these.
//! - **current** ([`fingerprint`]): XXH64 with seed 0, whose output the xxHash
//!   specification fixes, about 10× cheaper per row (a 300-byte payload: ~80 ns
//!   against ~800 ns). Fingerprints need to tell payloads apart by accident, not
//!   against an adversary, so 64 bits of a non-cryptographic hash suffice.
//!
//! A stored fingerprint is not tagged with its scheme, so a row counts as unchanged
//! when its stored value equals either scheme's fingerprint of the payload (the
//! legacy one is computed only when the current one differs). Unchanged rows found
//! through the legacy scheme are listed in [`ChangeSet::restamp`] so the run can
//! rewrite them in the current scheme: a state converges in a run or a few, and no
//! row is ever resent because the scheme changed.
//!
//! Key hashes stay BLAKE3: they are the identity of a stored row, and changing them
//! would make every stored row look removed.

pub mod previous;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

pub use previous::{PREFETCH_AHEAD, Previous};

/// Unchanged rows restamped to the current fingerprint scheme per run, at most:
/// bounds the memory of a plan over a large legacy state (about 60 bytes a row).
pub const RESTAMP_LIMIT: usize = 1_000_000;

/// 64-bit hash of a primary key (BLAKE3, first 8 bytes little-endian).
pub fn key_hash(key: &str) -> u64 {
    key_hash_bytes(key.as_bytes())
}

/// [`key_hash`] of a key's UTF-8 bytes.
#[inline]
pub fn key_hash_bytes(key: &[u8]) -> u64 {
    let h = blake3::hash(key);
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Fingerprint of a payload in the current scheme. Fields are length-prefixed so
/// `("ab","c")` and `("a","bc")` differ; `None` (SQL NULL) differs from the empty string.
pub fn fingerprint<'a>(
    match_value: &str,
    properties: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> u64 {
    Payload::of(match_value, properties).fingerprint()
}

/// Fingerprint of a payload in the legacy scheme (BLAKE3), which older states hold.
pub fn legacy_fingerprint<'a>(
    match_value: &str,
    properties: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> u64 {
    Payload::of(match_value, properties).legacy_fingerprint()
}

/// The byte stream a fingerprint hashes, built field by field into a reused buffer.
///
/// A field is `0x00` for NULL, or `0x01`, its length as a little-endian u64, and its
/// UTF-8 bytes. The fields are the match value, then name and value of each
/// property in the order the renderer sorts them (by property name).
#[derive(Debug, Clone, Default)]
pub struct Payload {
    buf: Vec<u8>,
}

impl Payload {
    pub fn new() -> Self {
        Payload {
            buf: Vec::with_capacity(512),
        }
    }

    fn of<'a>(
        match_value: &str,
        properties: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Self {
        let mut p = Payload::new();
        p.field(Some(match_value.as_bytes()));
        for (name, value) in properties {
            p.field(Some(name.as_bytes()));
            p.field(value.map(str::as_bytes));
        }
        p
    }

    /// Starts a new payload.
    #[inline]
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Appends one field.
    #[inline]
    pub fn field(&mut self, value: Option<&[u8]>) {
        encode_field(&mut self.buf, value);
    }

    /// Appends fields already encoded with [`encode_field`] (a constant property).
    #[inline]
    pub fn encoded(&mut self, fields: &[u8]) {
        self.buf.extend_from_slice(fields);
    }

    /// The current-scheme fingerprint of the fields appended since [`Payload::clear`].
    #[inline]
    pub fn fingerprint(&self) -> u64 {
        twox_hash::XxHash64::oneshot(0, &self.buf)
    }

    /// The legacy-scheme fingerprint of the same fields.
    pub fn legacy_fingerprint(&self) -> u64 {
        let h = blake3::hash(&self.buf);
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

/// Appends one field of a fingerprinted payload to `out` (see [`Payload`]).
#[inline]
pub fn encode_field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        }
        None => out.push(0),
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

/// An unchanged row whose stored fingerprint can be rewritten in the current scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restamp {
    pub key: String,
    pub key_hash: u64,
    /// The current-scheme fingerprint of the payload the destination last accepted.
    pub fingerprint: u64,
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
    /// Unchanged rows whose stored fingerprint is still of the legacy scheme, with their
    /// current-scheme fingerprint, at most [`RESTAMP_LIMIT`] a run. Writing these makes
    /// the next plans cheaper and sends nothing (see [`legacy_fingerprint`]).
    pub restamp: Vec<Restamp>,
    /// Unchanged rows recognised by their legacy fingerprint (restamped or not).
    pub legacy: u64,
}

impl ChangeSet {
    /// Rows that need a write (added then changed).
    pub fn to_send(&self) -> impl Iterator<Item = &Change> {
        self.added.iter().chain(self.changed.iter())
    }
}

/// How a row's payload compares with the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Same {
    /// The stored fingerprint is this payload's, in the current scheme.
    Yes,
    /// The stored fingerprint is this payload's, in the legacy scheme.
    Legacy,
    /// The payload changed (or a full resend ignores the comparison).
    No,
}

/// A row's key in the last synced state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its slot in [`Previous`].
    pub slot: usize,
    pub same: Same,
}

/// What a row is, as far as hashes tell: computed wherever the row was read (one
/// task per partition), judged by the one [`Differ`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    NullKey,
    NullMatch {
        key_hash: u64,
    },
    Row {
        key_hash: u64,
        fingerprint: u64,
        stored: Option<Stored>,
    },
}

impl Previous {
    /// Looks a row up. `legacy` computes the payload's legacy fingerprint; it is
    /// called only when the stored fingerprint is not the current one (and never
    /// with `full`, where every row is sent whatever the state says).
    #[inline]
    pub fn probe(
        &self,
        key_hash: u64,
        fingerprint: u64,
        full: bool,
        legacy: impl FnOnce() -> u64,
    ) -> Option<Stored> {
        let (slot, stored) = self.get(key_hash)?;
        let same = if full {
            Same::No
        } else if stored == fingerprint {
            Same::Yes
        } else if stored == legacy() {
            Same::Legacy
        } else {
            Same::No
        };
        Some(Stored { slot, same })
    }
}

/// A hasher for key hashes in memory (never stored): they are already uniform, and a
/// folded multiply spreads the ones that are not (tests).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        let m = u128::from(n ^ self.0) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

type KeySet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// Status of a stored row in this run, one byte per slot of [`Previous`].
const UNSEEN: u8 = 0;
const UNCHANGED: u8 = 1;
const PENDING: u8 = 2;
const INVALID: u8 = 3;

/// Builds a [`ChangeSet`] one row at a time, so the model can stream.
///
/// Memory: a status byte per slot of the stored state, and for keys not in the
/// state a set of their hashes plus 16 bytes per change.
pub struct Differ {
    previous: Arc<Previous>,
    status: Vec<u8>,
    full: bool,
    /// Keys not in `previous` seen so far (valid or not).
    fresh: KeySet,
    /// Fresh keys that are invalid (NULL match value, or repeated).
    fresh_invalid: KeySet,
    /// Changes planned, then invalidated by a later duplicate.
    dropped: KeySet,
    added: Vec<Change>,
    changed: Vec<Change>,
    unchanged: u64,
    invalid: Vec<InvalidRow>,
    sample: Vec<(&'static str, Record)>,
    sample_limit: usize,
    restamp: Vec<Restamp>,
    restamp_limit: usize,
    legacy: u64,
}

impl Differ {
    /// `previous` is key hash → fingerprint from the state store. With `full`,
    /// every valid row is sent again whatever its fingerprint.
    pub fn new(previous: HashMap<u64, u64>, full: bool) -> Self {
        Differ::with_previous(Arc::new(Previous::from(previous)), full)
    }

    /// Like [`Differ::new`], over a table the partitions of the model probe too.
    pub fn with_previous(previous: Arc<Previous>, full: bool) -> Self {
        Differ {
            status: vec![UNSEEN; previous.slot_count()],
            previous,
            full,
            fresh: KeySet::default(),
            fresh_invalid: KeySet::default(),
            dropped: KeySet::default(),
            added: Vec::new(),
            changed: Vec::new(),
            unchanged: 0,
            invalid: Vec::new(),
            sample: Vec::new(),
            sample_limit: 10,
            restamp: Vec::new(),
            restamp_limit: RESTAMP_LIMIT,
            legacy: 0,
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

    /// Judges one rendered row.
    pub fn push(&mut self, row: Row) {
        let probe = match (&row.key, &row.match_value) {
            (None, _) => Probe::NullKey,
            (Some(key), None) => Probe::NullMatch {
                key_hash: key_hash(key),
            },
            (Some(key), Some(m)) => {
                let kh = key_hash(key);
                let payload = Payload::of(
                    m,
                    row.properties
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_deref())),
                );
                let fp = payload.fingerprint();
                Probe::Row {
                    key_hash: kh,
                    fingerprint: fp,
                    stored: self
                        .previous
                        .probe(kh, fp, self.full, || payload.legacy_fingerprint()),
                }
            }
        };
        self.push_probe(probe, || row);
    }

    /// Judges a batch of rows in order, as [`Differ::push_probe`] each; `row(i)`
    /// renders row `i`. Each row's status byte is prefetched a few rows ahead: over a
    /// large state they are megabytes read at random.
    pub fn push_probes(&mut self, probes: &[Probe], mut row: impl FnMut(usize) -> Row) {
        for (i, &probe) in probes.iter().enumerate() {
            if let Some(Probe::Row {
                stored: Some(ahead),
                ..
            }) = probes.get(i + PREFETCH_AHEAD)
                && let Some(status) = self.status.get(ahead.slot)
            {
                previous::prefetch(status);
            }
            self.push_probe(probe, || row(i));
        }
    }

    /// Judges one row from its hashes; `row` renders it, and is called only for the
    /// few rows that are invalid, sampled or restamped.
    pub fn push_probe(&mut self, probe: Probe, row: impl FnOnce() -> Row) {
        let (kh, slot) = match probe {
            Probe::NullKey => {
                self.invalid.push(InvalidRow {
                    key: None,
                    reason: InvalidReason::NullKey,
                });
                return;
            }
            Probe::NullMatch { key_hash } => (key_hash, self.previous.get(key_hash).map(|s| s.0)),
            Probe::Row {
                key_hash, stored, ..
            } => (key_hash, stored.map(|s| s.slot)),
        };
        let before = match slot {
            Some(s) => self.status[s],
            None if !self.fresh.contains(&kh) => UNSEEN,
            None if self.fresh_invalid.contains(&kh) => INVALID,
            None => PENDING,
        };
        if before != UNSEEN {
            // A repeated key makes every occurrence invalid: which one is right is unknowable.
            let key = row().key;
            match before {
                UNCHANGED => {
                    self.unchanged -= 1;
                    self.restamp.retain(|r| r.key_hash != kh);
                    self.invalid.push(InvalidRow {
                        key: key.clone(),
                        reason: InvalidReason::DuplicateKey,
                    });
                }
                PENDING => {
                    self.dropped.insert(kh);
                    self.sample.retain(|(_, r)| r.key_hash != kh);
                    self.invalid.push(InvalidRow {
                        key: key.clone(),
                        reason: InvalidReason::DuplicateKey,
                    });
                }
                _ => {}
            }
            self.invalid.push(InvalidRow {
                key,
                reason: InvalidReason::DuplicateKey,
            });
            self.set(kh, slot, INVALID);
            return;
        }
        let Probe::Row {
            fingerprint: fp,
            stored,
            ..
        } = probe
        else {
            self.set(kh, slot, INVALID);
            self.invalid.push(InvalidRow {
                key: row().key,
                reason: InvalidReason::NullMatchValue,
            });
            return;
        };
        match stored.map(|s| s.same) {
            Some(same @ (Same::Yes | Same::Legacy)) => {
                self.set(kh, slot, UNCHANGED);
                self.unchanged += 1;
                if same == Same::Legacy {
                    self.legacy += 1;
                    if self.restamp.len() < self.restamp_limit
                        && let Some(key) = row().key
                    {
                        self.restamp.push(Restamp {
                            key,
                            key_hash: kh,
                            fingerprint: fp,
                        });
                    }
                }
            }
            old => {
                self.set(kh, slot, PENDING);
                let change = Change {
                    key_hash: kh,
                    fingerprint: fp,
                };
                if old.is_none() {
                    self.added.push(change);
                } else {
                    self.changed.push(change);
                }
                if self.sample.len() < self.sample_limit {
                    let op = if old.is_none() { "add" } else { "change" };
                    let r = row();
                    if let (Some(key), Some(match_value)) = (r.key, r.match_value) {
                        self.sample.push((
                            op,
                            Record {
                                key,
                                key_hash: kh,
                                fingerprint: fp,
                                match_value,
                                properties: r.properties,
                            },
                        ));
                    }
                }
            }
        }
    }

    fn set(&mut self, kh: u64, slot: Option<usize>, status: u8) {
        match slot {
            Some(s) => self.status[s] = status,
            None => {
                self.fresh.insert(kh);
                if status == INVALID {
                    self.fresh_invalid.insert(kh);
                }
            }
        }
    }

    pub fn finish(self) -> ChangeSet {
        let Differ {
            previous,
            status,
            dropped,
            mut added,
            mut changed,
            unchanged,
            invalid,
            sample,
            restamp,
            legacy,
            ..
        } = self;
        if !dropped.is_empty() {
            added.retain(|c| !dropped.contains(&c.key_hash));
            changed.retain(|c| !dropped.contains(&c.key_hash));
        }
        let mut removed: Vec<u64> = previous
            .iter()
            .filter(|&(slot, _, _)| status[slot] == UNSEEN)
            .map(|(_, kh, _)| kh)
            .collect();
        removed.sort_unstable();
        ChangeSet {
            added,
            changed,
            removed,
            unchanged,
            invalid,
            sample,
            restamp,
            legacy,
        }
    }
}

#[cfg(test)]
mod tests;
