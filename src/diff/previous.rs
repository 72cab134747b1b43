//! The last synced state as a flat open-addressing table: key hash → fingerprint, with stable slots.
//!
//! Built once per plan and then only read, so every partition of the model can
//! probe it at once through an `Arc`; a slot number lets the differ keep one
//! status byte per stored row instead of a second map over every key seen.

use std::collections::HashMap;

/// Key hash → fingerprint of every row a sync last synced.
///
/// Two tables, split by the key hash's top bit, so the two halves are built at once
/// on two threads (a large state: millions of random writes each). Slot numbers run
/// over both: the first table's, then the second's, then the zero key's.
#[derive(Debug, Clone)]
pub struct Previous {
    parts: [Part; 2],
    /// The fingerprint of key hash 0, which cannot live in a table; its slot is the last.
    zero: Option<u64>,
    len: usize,
}

/// One open-addressing table: (key hash, fingerprint), key 0 marking an empty slot.
#[derive(Debug, Clone)]
struct Part {
    slots: Vec<(u64, u64)>,
    /// log2 of the slot count, for Fibonacci hashing.
    bits: u32,
}

/// Below this many rows the halves are built one after the other: a thread costs more.
const PARALLEL_BUILD: usize = 1 << 16;

impl Previous {
    /// An empty state (a first run).
    pub fn empty() -> Self {
        Previous::from_pairs(Vec::new())
    }

    /// Builds the table; a repeated key hash keeps its last fingerprint.
    pub fn from_pairs(pairs: Vec<(u64, u64)>) -> Self {
        let mut halves: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for (k, fp) in pairs {
            halves[half(k)].push((k, fp));
        }
        Previous::from_halves(halves)
    }

    /// Builds the table from pairs already split by [`half`]: `halves[h]` holds the
    /// key hashes whose top bit is `h`. A repeated key hash keeps its last fingerprint.
    pub fn from_halves(halves: [Vec<(u64, u64)>; 2]) -> Self {
        debug_assert!(
            halves
                .iter()
                .enumerate()
                .all(|(h, pairs)| pairs.iter().all(|&(k, _)| half(k) == h))
        );
        let [low, high] = halves;
        let ((low, zero, low_len), (high, _, high_len)) =
            if low.len() + high.len() >= PARALLEL_BUILD {
                std::thread::scope(|s| {
                    let high = s.spawn(move || Part::build(high));
                    let low = Part::build(low);
                    (
                        low,
                        high.join().expect("building the lookup table panicked"),
                    )
                })
            } else {
                (Part::build(low), Part::build(high))
            };
        Previous {
            parts: [low, high],
            zero,
            len: low_len + high_len,
        }
    }

    /// The slot and stored fingerprint of a key hash.
    #[inline]
    pub fn get(&self, key_hash: u64) -> Option<(usize, u64)> {
        if key_hash == 0 {
            return self.zero.map(|fp| (self.zero_slot(), fp));
        }
        let h = half(key_hash);
        let offset = if h == 0 { 0 } else { self.parts[0].slots.len() };
        self.parts[h]
            .get(key_hash)
            .map(|(slot, fp)| (offset + slot, fp))
    }

    fn zero_slot(&self) -> usize {
        self.parts[0].slots.len() + self.parts[1].slots.len()
    }

    /// Stored rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest slot number [`Previous::get`] can return.
    pub fn slot_count(&self) -> usize {
        self.zero_slot() + 1
    }

    /// (slot, key hash, fingerprint) of every stored row, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let offset = self.parts[0].slots.len();
        self.parts[0]
            .iter()
            .chain(
                self.parts[1]
                    .iter()
                    .map(move |(i, k, fp)| (offset + i, k, fp)),
            )
            .chain(self.zero.map(|fp| (self.zero_slot(), 0, fp)))
    }
}

/// Which of the two tables a key hash lives in: its top bit (the sign of its stored
/// i64, so a store can read the halves as two ranges of its key).
#[inline]
pub fn half(key_hash: u64) -> usize {
    (key_hash >> 63) as usize
}

impl Part {
    /// A table of `pairs`, and the zero key's fingerprint and the row count.
    fn build(pairs: Vec<(u64, u64)>) -> (Part, Option<u64>, usize) {
        // Linear probing stays short below ~2/3 full.
        let want = (pairs.len() + pairs.len() / 2).max(16);
        let cap = want.next_power_of_two();
        let mut slots = vec![(0, 0); cap];
        prefer_huge_pages(&mut slots);
        let mut part = Part {
            slots,
            bits: cap.trailing_zeros(),
        };
        let (mut zero, mut len) = (None, 0);
        for (k, fp) in pairs {
            if k == 0 {
                if zero.replace(fp).is_none() {
                    len += 1;
                }
            } else if part.insert(k, fp) {
                len += 1;
            }
        }
        (part, zero, len)
    }

    fn home(&self, key_hash: u64) -> usize {
        // Fibonacci hashing: the top bits of the product depend on every bit of the key,
        // so keys that are not uniform hashes (tests) spread too.
        (key_hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// True when the key is new.
    fn insert(&mut self, key_hash: u64, fingerprint: u64) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key_hash);
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == 0 {
                *slot = (key_hash, fingerprint);
                return true;
            }
            if slot.0 == key_hash {
                slot.1 = fingerprint;
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, key_hash: u64) -> Option<(usize, u64)> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key_hash);
        loop {
            let (k, fp) = self.slots[i];
            if k == key_hash {
                return Some((i, fp));
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| *k != 0)
            .map(|(i, &(k, fp))| (i, k, fp))
    }
}

/// Asks for 2 MiB pages under a large table: every probe lands on a random slot, and with
/// 4 KiB pages nearly every one also misses the TLB (10M rows: 256 MiB of slots).
/// Only advice; the table works the same without it.
fn prefer_huge_pages<T>(slots: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let bytes = std::mem::size_of_val(slots);
        if bytes < 8 << 20 {
            return;
        }
        let start = slots.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(PAGE);
        let end = start + bytes;
        // SAFETY: madvise only advises the kernel about pages inside this live
        // allocation (the range is clipped to whole pages within it); it does not
        // change their contents.
        unsafe {
            libc::madvise(
                aligned as *mut libc::c_void,
                end - aligned,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = slots;
}

impl From<HashMap<u64, u64>> for Previous {
    fn from(map: HashMap<u64, u64>) -> Self {
        Previous::from_pairs(map.into_iter().collect())
    }
}

impl FromIterator<(u64, u64)> for Previous {
    fn from_iter<I: IntoIterator<Item = (u64, u64)>>(iter: I) -> Self {
        Previous::from_pairs(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_only_those() {
        // Sequential keys, zero, u64::MAX and keys that share a home slot.
        let mut pairs: Vec<(u64, u64)> = (0..1000u64).map(|k| (k, k * 7 + 1)).collect();
        pairs.push((u64::MAX, 5));
        pairs.push((1 << 63, 6));
        let p = Previous::from_pairs(pairs.clone());
        assert_eq!(p.len(), pairs.len());
        let mut slots = std::collections::HashSet::new();
        for &(k, fp) in &pairs {
            let (slot, got) = p.get(k).unwrap_or_else(|| panic!("key {k} lost"));
            assert_eq!(got, fp);
            assert!(slot < p.slot_count());
            assert!(slots.insert(slot), "two keys share slot {slot}");
        }
        for k in 1000..3000u64 {
            assert_eq!(p.get(k), None);
        }
        let mut listed: Vec<(u64, u64)> = p.iter().map(|(_, k, fp)| (k, fp)).collect();
        listed.sort_unstable();
        pairs.sort_unstable();
        assert_eq!(listed, pairs);
    }

    #[test]
    fn a_repeated_key_keeps_the_last_fingerprint() {
        let p = Previous::from_pairs(vec![(9, 1), (9, 2), (0, 3), (0, 4)]);
        assert_eq!(p.len(), 2);
        assert_eq!(p.get(9).map(|(_, fp)| fp), Some(2));
        assert_eq!(p.get(0).map(|(_, fp)| fp), Some(4));
    }

    #[test]
    fn a_table_large_enough_for_huge_pages_works_the_same() {
        // 500k rows: 1M slots, 16 MiB, above the size that asks for huge pages.
        let pairs: Vec<(u64, u64)> = (1..=500_000u64)
            .map(|k| (k.wrapping_mul(0x2545_F491_4F6C_DD1D), k))
            .collect();
        let p = Previous::from_pairs(pairs.clone());
        assert!(p.slot_count() * 16 >= 8 << 20);
        assert_eq!(p.len(), pairs.len());
        assert!(
            pairs
                .iter()
                .all(|&(k, fp)| p.get(k).map(|s| s.1) == Some(fp))
        );
    }

    #[test]
    fn halves_built_on_two_threads_number_their_slots_apart() {
        // Over PARALLEL_BUILD rows, keys in both halves, zero and a repeated key.
        let mut pairs: Vec<(u64, u64)> = (1..=100_000u64)
            .map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k))
            .collect();
        pairs.push((0, 1));
        pairs.push((pairs[10].0, 99));
        let p = Previous::from_pairs(pairs.clone());
        assert_eq!(p.len(), 100_001);
        assert!(pairs.iter().any(|&(k, _)| half(k) == 0 && k != 0));
        assert!(pairs.iter().any(|&(k, _)| half(k) == 1));
        assert_eq!(p.get(pairs[10].0).map(|s| s.1), Some(99));
        let mut slots = std::collections::HashSet::new();
        for (slot, k, fp) in p.iter() {
            assert!(slot < p.slot_count());
            assert_eq!(p.get(k), Some((slot, fp)));
            assert!(slots.insert(slot), "two keys share slot {slot}");
        }
        assert_eq!(slots.len(), p.len());
    }

    #[test]
    fn empty() {
        let p = Previous::empty();
        assert!(p.is_empty());
        assert_eq!(p.get(0), None);
        assert_eq!(p.get(42), None);
        assert_eq!(p.iter().count(), 0);
    }
}
