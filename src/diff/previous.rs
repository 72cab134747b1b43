//! The last synced state as two sorted arrays: key hash → fingerprint, with stable slots.
//!
//! Built once per plan and then only read, so every partition of the model can
//! probe it at once through an `Arc`; a slot number lets the differ keep one
//! status byte per stored row instead of a second map over every key seen.
//!
//! The state store hands the pairs over sorted by key hash, so the table is those
//! arrays themselves plus a directory of where each range of key hashes starts:
//! nothing is rehashed or scattered, and no second copy of the state is allocated
//! (a hash table over 10M rows was 256 MiB of slots written at random).

use std::collections::HashMap;

/// Key hash → fingerprint of every row a sync last synced.
///
/// Two halves, split by the key hash's top bit (the sign of the stored i64), so a
/// store reads them as two ranges of its key on two connections at once. Slot
/// numbers run over both: the first half's positions, then the second's.
#[derive(Debug, Clone)]
pub struct Previous {
    parts: [Part; 2],
}

/// One half: (key hash, fingerprint) sorted by key hash, with no key twice, and a
/// directory over the key hash's next bits (the bits below the top one).
#[derive(Debug, Clone, Default)]
struct Part {
    pairs: Vec<(u64, u64)>,
    /// `starts[b]..starts[b + 1]` holds the pairs in bucket `b`.
    starts: Vec<u32>,
    /// log2 of the bucket count.
    bits: u32,
}

/// Rows per directory bucket, on average: a lookup searches one or two cache lines.
const ROWS_PER_BUCKET: usize = 4;

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
    /// key hashes whose top bit is `h`, best sorted by key hash (as the stores read
    /// them; others are sorted here). A repeated key hash keeps its last fingerprint.
    pub fn from_halves(halves: [Vec<(u64, u64)>; 2]) -> Self {
        debug_assert!(
            halves
                .iter()
                .enumerate()
                .all(|(h, pairs)| pairs.iter().all(|&(k, _)| half(k) == h))
        );
        let [low, high] = halves;
        let rows = low.len() + high.len();
        let parts = if rows > 1 << 20 {
            // Only a state the store did not sort costs much here; build both at once.
            std::thread::scope(|s| {
                let high = s.spawn(move || Part::build(high));
                let low = Part::build(low);
                [
                    low,
                    high.join().expect("building the lookup table panicked"),
                ]
            })
        } else {
            [Part::build(low), Part::build(high)]
        };
        Previous { parts }
    }

    /// The slot and stored fingerprint of a key hash.
    #[inline]
    pub fn get(&self, key_hash: u64) -> Option<(usize, u64)> {
        let h = half(key_hash);
        let offset = if h == 0 { 0 } else { self.parts[0].pairs.len() };
        self.parts[h]
            .get(key_hash)
            .map(|(slot, fp)| (offset + slot, fp))
    }

    /// Starts loading the memory a [`Previous::get`] of this key hash reads, so that
    /// lookups issued a few rows ahead overlap their cache misses (a large state is
    /// hundreds of MiB probed at random: each lookup would otherwise wait on main
    /// memory alone). Reads the key's directory entry, so call it ahead of time for
    /// that too ([`Previous::prefetch_directory`]). Only a hint; it changes nothing.
    #[inline]
    pub fn prefetch(&self, key_hash: u64) {
        let part = &self.parts[half(key_hash)];
        if let Some(&start) = part.starts.get(part.bucket(key_hash))
            && let Some(pair) = part.pairs.get(start as usize)
        {
            prefetch(pair);
        }
    }

    /// Starts loading the directory entry [`Previous::prefetch`] reads.
    #[inline]
    pub fn prefetch_directory(&self, key_hash: u64) {
        let part = &self.parts[half(key_hash)];
        if let Some(start) = part.starts.get(part.bucket(key_hash)) {
            prefetch(start);
        }
    }

    /// Stored rows.
    pub fn len(&self) -> usize {
        self.parts[0].pairs.len() + self.parts[1].pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the highest slot number [`Previous::get`] can return.
    pub fn slot_count(&self) -> usize {
        self.len()
    }

    /// (slot, key hash, fingerprint) of every stored row, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.parts
            .iter()
            .flat_map(|p| &p.pairs)
            .enumerate()
            .map(|(slot, &(k, fp))| (slot, k, fp))
    }
}

/// Which half a key hash lives in: its top bit (the sign of its stored i64, so a
/// store can read the halves as two ranges of its key).
#[inline]
pub fn half(key_hash: u64) -> usize {
    (key_hash >> 63) as usize
}

impl Part {
    /// The half's table: `pairs` sorted (if they are not) with repeated keys folded
    /// into their last fingerprint, and its directory.
    fn build(mut pairs: Vec<(u64, u64)>) -> Part {
        if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so the last of a repeated key stays last.
            pairs.sort_by_key(|&(k, _)| k);
            let mut folded: Vec<(u64, u64)> = Vec::with_capacity(pairs.len());
            for (k, fp) in pairs {
                match folded.last_mut() {
                    Some(last) if last.0 == k => last.1 = fp,
                    _ => folded.push((k, fp)),
                }
            }
            pairs = folded;
        }
        assert!(
            u32::try_from(pairs.len()).is_ok(),
            "more than 2^32 stored rows in one half"
        );
        let bits = (pairs.len() / ROWS_PER_BUCKET)
            .max(1)
            .next_power_of_two()
            .trailing_zeros();
        let mut part = Part {
            pairs,
            starts: Vec::new(),
            bits,
        };
        let buckets = 1usize << bits;
        let mut starts = Vec::with_capacity(buckets + 1);
        for (i, &(k, _)) in part.pairs.iter().enumerate() {
            let b = part.bucket(k);
            while starts.len() <= b {
                starts.push(i as u32);
            }
        }
        starts.resize(buckets + 1, part.pairs.len() as u32);
        part.starts = starts;
        part
    }

    /// The directory bucket of a key hash: its bits below the top one, which sort
    /// like the key hash within a half.
    #[inline]
    fn bucket(&self, key_hash: u64) -> usize {
        if self.bits == 0 {
            0
        } else {
            ((key_hash << 1) >> (64 - self.bits)) as usize
        }
    }

    #[inline]
    fn get(&self, key_hash: u64) -> Option<(usize, u64)> {
        let b = self.bucket(key_hash);
        let (&start, &end) = (self.starts.get(b)?, self.starts.get(b + 1)?);
        let (start, end) = (start as usize, end as usize);
        let bucket = &self.pairs[start..end];
        // Key hashes are uniform, so a bucket holds a few pairs; keys that are not
        // (tests) may crowd one, which a binary search keeps cheap.
        let i = if bucket.len() <= 2 * ROWS_PER_BUCKET {
            bucket.iter().position(|&(k, _)| k == key_hash)?
        } else {
            bucket.binary_search_by_key(&key_hash, |&(k, _)| k).ok()?
        };
        Some((start + i, bucket[i].1))
    }
}

/// How many rows ahead a batch of lookups prefetches ([`Previous::prefetch`]): enough
/// misses in flight to cover main memory's latency, few enough to stay in L1. The
/// directory entry is prefetched twice as far ahead.
pub const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to start loading the cache line holding `value` (x86-64 and AArch64;
/// elsewhere nothing). A hint: it neither faults nor changes anything.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    let p = std::ptr::from_ref(value).cast::<i8>();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 takes any address and never faults; SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint that never faults; the address is a live reference.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
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

    /// Every pair is found with its fingerprint, each in a slot of its own.
    fn assert_finds_each_in_its_own_slot(p: &Previous, pairs: &[(u64, u64)]) {
        let mut slots = std::collections::HashSet::new();
        for &(k, fp) in pairs {
            let (slot, got) = p.get(k).unwrap_or_else(|| panic!("key {k} lost"));
            assert_eq!(got, fp);
            assert!(slot < p.slot_count());
            assert!(slots.insert(slot), "two keys share slot {slot}");
        }
    }

    #[test]
    fn finds_every_key_and_only_those() {
        // Sequential keys (one crowded bucket), zero, u64::MAX and the first key of half 1.
        let mut pairs: Vec<(u64, u64)> = (0..1000u64).map(|k| (k, k * 7 + 1)).collect();
        pairs.push((u64::MAX, 5));
        pairs.push((1 << 63, 6));
        let p = Previous::from_pairs(pairs.clone());
        assert_eq!(p.len(), pairs.len());
        assert_finds_each_in_its_own_slot(&p, &pairs);
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
    fn a_large_state_in_store_order_works_the_same() {
        // 500k uniform keys in both halves, sorted per half as the stores read them.
        let mut halves: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        for k in 1..=500_000u64 {
            let kh = k.wrapping_mul(0x2545_F491_4F6C_DD1D);
            halves[half(kh)].push((kh, k));
        }
        for h in &mut halves {
            h.sort_unstable();
        }
        let all: Vec<(u64, u64)> = halves.concat();
        let p = Previous::from_halves(halves);
        assert_eq!(p.len(), all.len());
        for &(k, _) in &all {
            p.prefetch_directory(k);
            p.prefetch(k);
        }
        assert_finds_each_in_its_own_slot(&p, &all);
        for k in 500_001..600_000u64 {
            assert_eq!(p.get(k.wrapping_mul(0x2545_F491_4F6C_DD1D)), None);
        }
        let listed: Vec<(usize, u64, u64)> = p.iter().collect();
        assert_eq!(listed.len(), all.len());
        for (slot, k, fp) in listed {
            assert_eq!(p.get(k), Some((slot, fp)));
        }
    }

    #[test]
    fn keys_that_are_not_uniform_crowd_one_bucket_and_are_still_found() {
        // 200k consecutive small keys all land in bucket 0 of half 0, given unsorted
        // with repeats: they are sorted, folded to their last fingerprint and searched.
        let mut pairs: Vec<(u64, u64)> = (0..200_000u64).rev().map(|k| (k, k)).collect();
        pairs.push((7, 70));
        pairs.push((7, 71));
        let p = Previous::from_pairs(pairs);
        assert_eq!(p.len(), 200_000);
        assert_eq!(p.get(7).map(|s| s.1), Some(71));
        for k in (0..200_000u64).step_by(997).filter(|&k| k != 7) {
            assert_eq!(p.get(k).map(|s| s.1), Some(k));
        }
        assert_eq!(p.get(200_000), None);
        assert_eq!(p.get(u64::MAX), None);
    }

    #[test]
    fn halves_number_their_slots_apart() {
        // Over the size built on two threads, keys in both halves, zero and a repeated key.
        let mut pairs: Vec<(u64, u64)> = (1..=1_100_000u64)
            .map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15), k))
            .collect();
        pairs.push((0, 1));
        pairs.push((pairs[10].0, 99));
        let p = Previous::from_pairs(pairs.clone());
        assert_eq!(p.len(), 1_100_001);
        assert!(pairs.iter().any(|&(k, _)| half(k) == 0 && k != 0));
        assert!(pairs.iter().any(|&(k, _)| half(k) == 1));
        assert_eq!(p.get(pairs[10].0).map(|s| s.1), Some(99));
        assert_eq!(p.get(0).map(|s| s.1), Some(1));
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
