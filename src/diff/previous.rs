//! The last synced state as a flat open-addressing table: key hash → fingerprint, with stable slots.
//!
//! Built once per plan and then only read, so every partition of the model can
//! probe it at once through an `Arc`; a slot number lets the differ keep one
//! status byte per stored row instead of a second map over every key seen.

use std::collections::HashMap;

/// Key hash → fingerprint of every row a sync last synced.
#[derive(Debug, Clone)]
pub struct Previous {
    /// (key hash, fingerprint); key 0 marks an empty slot.
    slots: Vec<(u64, u64)>,
    /// log2 of the slot count, for Fibonacci hashing.
    bits: u32,
    /// The fingerprint of key hash 0, which cannot live in `slots`; its slot is `slots.len()`.
    zero: Option<u64>,
    len: usize,
}

impl Previous {
    /// An empty state (a first run).
    pub fn empty() -> Self {
        Previous::from_pairs(Vec::new())
    }

    /// Builds the table; a repeated key hash keeps its last fingerprint.
    pub fn from_pairs(pairs: Vec<(u64, u64)>) -> Self {
        // Linear probing stays short below ~2/3 full.
        let want = (pairs.len() + pairs.len() / 2).max(16);
        let cap = want.next_power_of_two();
        let mut slots = vec![(0, 0); cap];
        prefer_huge_pages(&mut slots);
        let mut p = Previous {
            slots,
            bits: cap.trailing_zeros(),
            zero: None,
            len: 0,
        };
        for (k, fp) in pairs {
            p.insert(k, fp);
        }
        p
    }

    fn home(&self, key_hash: u64) -> usize {
        // Fibonacci hashing: the top bits of the product depend on every bit of the key,
        // so keys that are not uniform hashes (tests) spread too.
        (key_hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    fn insert(&mut self, key_hash: u64, fingerprint: u64) {
        if key_hash == 0 {
            if self.zero.replace(fingerprint).is_none() {
                self.len += 1;
            }
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key_hash);
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == 0 {
                *slot = (key_hash, fingerprint);
                self.len += 1;
                return;
            }
            if slot.0 == key_hash {
                slot.1 = fingerprint;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot and stored fingerprint of a key hash.
    #[inline]
    pub fn get(&self, key_hash: u64) -> Option<(usize, u64)> {
        if key_hash == 0 {
            return self.zero.map(|fp| (self.slots.len(), fp));
        }
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

    /// Stored rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest slot number [`Previous::get`] can return.
    pub fn slot_count(&self) -> usize {
        self.slots.len() + 1
    }

    /// (slot, key hash, fingerprint) of every stored row, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| *k != 0)
            .map(|(i, &(k, fp))| (i, k, fp))
            .chain(self.zero.map(|fp| (self.slots.len(), 0, fp)))
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
    fn empty() {
        let p = Previous::empty();
        assert!(p.is_empty());
        assert_eq!(p.get(0), None);
        assert_eq!(p.get(42), None);
        assert_eq!(p.iter().count(), 0);
    }
}
