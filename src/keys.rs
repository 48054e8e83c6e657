//! A table from text keys (patient ids) to dense codes, built for lookups in bulk.
//!
//! Joins probe it once per input row, millions of times over a table too large for the CPU
//! caches, so the cost of a probe is its cache misses. The table is open-addressed (linear
//! probing, at most half full) with 16-byte slots that hold 24 bits of the key's hash, its
//! length (up to 255) and its first 8 bytes: a probe of a key up to 8 bytes long touches one
//! slot and nothing else. Longer keys (MRNs, UUIDs) compare their remaining bytes with the
//! key store, only when the hash bits, the length and the first 8 bytes already match.
//! Slots of 16 bytes rather than 32 halve the table (32 MiB for 630k keys, not 64 MiB).
//! [`KeyTable::get_many`] hashes each key and prefetches its slots some keys before it
//! compares them, so that the cache misses of different keys overlap instead of waiting for
//! each other.
//! [`KeyTable::build`] fills a table from distinct keys in parallel, in order of home slot.
//!
//! The hasher is seeded at random per table, so inputs cannot be chosen to collide.

use std::hash::BuildHasher;

use arrow::array::{Array, StringArray};
use rayon::prelude::*;

/// Inline key bytes per slot.
const HEAD: usize = 8;
/// Code of an empty slot, and of an absent key in [`KeyTable::get_many`].
pub const ABSENT: u32 = u32::MAX;
/// Keys whose home slots [`KeyTable::insert_many`] loads before it inserts any of them.
const RUN: usize = 32;

/// Aligned to its size, so that no slot straddles two cache lines.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Slot {
    head: [u8; HEAD],
    code: u32,
    /// [`tag_of`] the key's hash and length.
    tag: u32,
}

const EMPTY: Slot = Slot {
    head: [0; HEAD],
    code: ABSENT,
    tag: 0,
};

/// 24 bits of the hash `h` (not those that pick the home slot) above the length `len`
/// (saturated at 255): keys up to [`HEAD`] bytes long with equal heads and tags are equal.
fn tag_of(h: u64, len: usize) -> u32 {
    (((h >> 40) as u32) << 8) | len.min(255) as u32
}

/// The first [`HEAD`] bytes of `key`, zero padded. Built from copies of fixed sizes (two
/// overlapping ones for lengths between powers of two), which compile to plain loads and
/// stores: a copy of the variable length `min(len, HEAD)` is a call to `memcpy`, which took
/// 6% of an as-of join's time.
fn head_of(key: &[u8]) -> [u8; HEAD] {
    fn copy<const N: usize>(h: &mut [u8; HEAD], key: &[u8]) {
        let n = key.len();
        h[..N].copy_from_slice(&key[..N]);
        h[n - N..n].copy_from_slice(&key[n - N..]);
    }
    let mut h = [0u8; HEAD];
    match key.len() {
        n if n >= HEAD => h.copy_from_slice(&key[..HEAD]),
        4.. => copy::<4>(&mut h, key),
        2.. => copy::<2>(&mut h, key),
        1 => h[0] = key[0],
        _ => {}
    }
    h
}

/// The first 8 bytes of `key` as a big-endian number, zero padded: keys in byte order have
/// their prefixes in the same (non-strict) order, so a sort compares whole keys only on a tie.
pub fn sort_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Text keys numbered 0, 1, 2, ... in insertion order.
#[derive(Debug, Clone)]
pub struct KeyTable {
    slots: Vec<Slot>,
    mask: usize,
    hasher: foldhash::fast::RandomState,
    /// Every key's bytes, in code order; key `c` ends at `ends[c]`.
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable::with_capacity(0)
    }
}

impl KeyTable {
    /// An empty table sized for `n` keys.
    pub fn with_capacity(n: usize) -> KeyTable {
        let cap = (n.max(8) * 2).next_power_of_two();
        KeyTable {
            slots: vec![EMPTY; cap],
            mask: cap - 1,
            hasher: foldhash::fast::RandomState::default(),
            bytes: Vec::new(),
            ends: Vec::with_capacity(n),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key numbered `code`.
    ///
    /// # Panics
    /// When `code >= self.len()` (a code this table did not hand out).
    pub fn key(&self, code: u32) -> &str {
        let c = code as usize;
        let start = if c == 0 { 0 } else { self.ends[c - 1] };
        // Keys are inserted as &str, so every range between ends is valid UTF-8.
        std::str::from_utf8(&self.bytes[start..self.ends[c]]).unwrap_or("")
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// True when slot `s` holds `key` (whose hash is `h`).
    fn holds(&self, s: &Slot, h: u64, key: &[u8]) -> bool {
        if s.tag != tag_of(h, key.len()) || s.head != head_of(key) {
            return false;
        }
        key.len() <= HEAD || {
            let c = s.code as usize;
            let start = if c == 0 { 0 } else { self.ends[c - 1] };
            self.bytes[start + HEAD..self.ends[c]] == key[HEAD..]
        }
    }

    /// The slot position of `key` or of the empty slot where it would go.
    fn find(&self, h: u64, key: &[u8]) -> usize {
        let mut i = self.home(h);
        loop {
            let s = &self.slots[i];
            if s.code == ABSENT || self.holds(s, h, key) {
                return i;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The code of `key`, inserting it with the next code if it is new.
    ///
    /// # Panics
    /// Never for fewer than 2^32 - 1 keys of less than 4 GiB each.
    pub fn insert(&mut self, key: &str) -> u32 {
        self.insert_hashed(key, self.hash(key.as_bytes()))
    }

    /// Inserts each of `keys` in turn, as [`KeyTable::insert`] does, faster on many keys:
    /// the home slots of a run of keys are loaded before any of them is inserted, so that
    /// their cache misses overlap.
    pub fn insert_many(&mut self, keys: &[&str]) {
        let mut hashes = [0u64; RUN];
        for run in keys.chunks(RUN) {
            let mut touched = 0u32;
            for (h, k) in hashes.iter_mut().zip(run) {
                *h = self.hash(k.as_bytes());
                touched ^= self.slots[self.home(*h)].code;
            }
            std::hint::black_box(touched);
            for (k, &h) in run.iter().zip(&hashes) {
                self.insert_hashed(k, h);
            }
        }
    }

    /// A table of `keys` numbered in their order, as [`KeyTable::insert_many`] into an empty
    /// table gives, built in parallel: each key's hash is computed, the keys are sorted by
    /// their home slot, and the slots are filled in that order, one after the other (a key
    /// whose home is taken goes to the next free slot, as a probe looks for it). The few that
    /// run past the last slot are inserted as usual, wrapping around. Inserting the keys one
    /// by one instead costs a cache miss each, in turn; this costs a sort and a pass over the
    /// table. A key given twice (equal hashes, found after the sort) makes it fall back to
    /// [`KeyTable::insert_many`], whose codes then skip the repeats.
    pub fn build(keys: &[&str]) -> KeyTable {
        let mut t = KeyTable::with_capacity(keys.len());
        let bits = t.mask.count_ones();
        // (hash with the home slot's bits first, the key's slot), in order of home slot:
        // the slots are filled from this alone, in one pass, with no reads of the keys
        // (which would be cache misses, the keys being in code order).
        let (mut order, (bytes, ends)) = rayon::join(
            || {
                let mut order: Vec<(u64, Slot)> = keys
                    .par_iter()
                    .enumerate()
                    .map(|(c, k)| {
                        let (k, h) = (k.as_bytes(), t.hash(k.as_bytes()));
                        let slot = Slot {
                            head: head_of(k),
                            code: c as u32,
                            tag: tag_of(h, k.len()),
                        };
                        (h.rotate_right(bits), slot)
                    })
                    .collect();
                order.par_sort_unstable_by_key(|e| e.0);
                order
            },
            || {
                let mut bytes = Vec::with_capacity(keys.iter().map(|k| k.len()).sum());
                let mut ends = Vec::with_capacity(keys.len());
                for k in keys {
                    bytes.extend_from_slice(k.as_bytes());
                    ends.push(bytes.len());
                }
                (bytes, ends)
            },
        );
        if keys.len() >= ABSENT as usize || order.windows(2).any(|w| w[0].0 == w[1].0) {
            t.insert_many(keys);
            return t;
        }
        (t.bytes, t.ends) = (bytes, ends);
        let mut next = 0;
        let mut wrapped = Vec::new();
        for (r, slot) in order.drain(..) {
            let h = r.rotate_left(bits);
            let at = t.home(h).max(next);
            if at < t.slots.len() {
                t.slots[at] = slot;
                next = at + 1;
            } else {
                wrapped.push((h, slot));
            }
        }
        // Every slot from their homes to the last is taken: probe on from the first.
        for (h, slot) in wrapped {
            let at = t.find(h, keys[slot.code as usize].as_bytes());
            t.slots[at] = slot;
        }
        t
    }

    /// [`KeyTable::insert`] of `key` whose hash is `h`.
    fn insert_hashed(&mut self, key: &str, h: u64) -> u32 {
        let k = key.as_bytes();
        let i = self.find(h, k);
        if self.slots[i].code != ABSENT {
            return self.slots[i].code;
        }
        let code = self.ends.len() as u32;
        self.bytes.extend_from_slice(k);
        self.ends.push(self.bytes.len());
        self.slots[i] = Slot {
            code,
            tag: tag_of(h, k.len()),
            head: head_of(k),
        };
        if self.ends.len() * 2 > self.slots.len() {
            self.grow();
        }
        code
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap]);
        self.mask = cap - 1;
        for s in old.into_iter().filter(|s| s.code != ABSENT) {
            let mut i = self.home(self.hash(self.key(s.code).as_bytes()));
            while self.slots[i].code != ABSENT {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = s;
        }
    }

    /// Gives key `c` the code `new[c]`. `new` must be a permutation of `0..self.len()`
    /// (for example each key's rank in sorted order).
    ///
    /// # Panics
    /// When `new` is not such a permutation.
    pub fn renumber(&mut self, new: &[u32]) {
        let n = self.len();
        assert_eq!(new.len(), n, "renumber: one new code per key");
        let mut old_of = vec![ABSENT; n];
        for (c, &k) in new.iter().enumerate() {
            assert!(
                (k as usize) < n && old_of[k as usize] == ABSENT,
                "renumber: not a permutation"
            );
            old_of[k as usize] = c as u32;
        }
        for s in self.slots.iter_mut().filter(|s| s.code != ABSENT) {
            s.code = new[s.code as usize];
        }
        let mut bytes = Vec::with_capacity(self.bytes.len());
        let mut ends = Vec::with_capacity(n);
        for &c in &old_of {
            bytes.extend_from_slice(self.key(c).as_bytes());
            ends.push(bytes.len());
        }
        self.bytes = bytes;
        self.ends = ends;
    }

    /// The codes in byte order of their keys: `ranks()[c]` is the rank of key `c`.
    pub fn ranks(&self) -> Vec<u32> {
        // Sort by the sort prefix, comparing whole keys only on a tie.
        let mut order: Vec<(u64, u32)> = (0..self.len() as u32)
            .map(|c| (sort_prefix(self.key(c).as_bytes()), c))
            .collect();
        order.par_sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| self.key(a.1).cmp(self.key(b.1)))
        });
        let mut rank = vec![0u32; order.len()];
        for (r, &(_, c)) in order.iter().enumerate() {
            rank[c as usize] = r as u32;
        }
        rank
    }

    /// The code of `key`, if the table holds it.
    pub fn get(&self, key: &str) -> Option<u32> {
        let k = key.as_bytes();
        let s = &self.slots[self.find(self.hash(k), k)];
        (s.code != ABSENT).then_some(s.code)
    }

    /// The codes of `keys[offset..offset + out.len()]` into `out` ([`ABSENT`] for keys the
    /// table does not hold, and for nulls). Same answers as [`KeyTable::get`], faster on
    /// many keys.
    pub fn get_many(&self, keys: &StringArray, offset: usize, out: &mut [u32]) {
        let mut at = 0;
        self.probe(&self.slots, keys, offset..offset + out.len(), |s| {
            out[at] = s.map_or(ABSENT, |s| s.code);
            at += 1;
        });
    }

    /// Looks up `keys[i]` for each `i` of `range`, in order, in `slots` (this table's slots,
    /// or a copy with a value beside each), and calls `found` with the slot that holds it, or
    /// `None` for an absent key or a null.
    ///
    /// The home slot of each key is prefetched [`AHEAD`] keys before the key is compared
    /// with it, and so is the slot after it (where a collision goes on probing), so the
    /// cache misses of different keys overlap and the comparisons rarely wait for memory.
    fn probe<S: Slotted>(
        &self,
        slots: &[S],
        keys: &StringArray,
        range: std::ops::Range<usize>,
        mut found: impl FnMut(Option<&S>),
    ) {
        let mut hashes = [0u64; AHEAD];
        for i in range.start..range.end + AHEAD {
            if let Some(j) = i.checked_sub(AHEAD).filter(|&j| j >= range.start) {
                let h = hashes[j % AHEAD];
                let k = keys.value(j).as_bytes();
                if keys.is_null(j) {
                    found(None);
                    continue;
                }
                let mut at = self.home(h);
                loop {
                    let s = &slots[at];
                    if s.slot().code == ABSENT {
                        found(None);
                        break;
                    }
                    if self.holds(s.slot(), h, k) {
                        found(Some(s));
                        break;
                    }
                    at = (at + 1) & self.mask;
                }
            }
            if i < range.end {
                let h = self.hash(keys.value(i).as_bytes());
                hashes[i % AHEAD] = h;
                prefetch(slots, self.home(h));
            }
        }
    }
}

/// Keys hashed and prefetched before the first of them is compared, in [`KeyTable::probe`].
const AHEAD: usize = 32;

/// A slot as [`KeyTable::probe`] reads it: a bare [`Slot`], or one with a value beside it.
trait Slotted {
    fn slot(&self) -> &Slot;
}

impl Slotted for Slot {
    fn slot(&self) -> &Slot {
        self
    }
}

impl<V> Slotted for Beside<V> {
    fn slot(&self) -> &Slot {
        &self.slot
    }
}

/// Asks the CPU to bring `slots[i]` and the slot after it into the cache, without waiting
/// for them. A hint only: it changes no value and cannot fault.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<S>(slots: &[S], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = slots.as_ptr().wrapping_add(i) as *const i8;
        // The last byte of the slot after `i` (past the end for the last slot, which a
        // prefetch may name: it reads nothing the program sees and never faults).
        let last = first.wrapping_add(2 * std::mem::size_of::<S>() - 1);
        // SAFETY: `_mm_prefetch` dereferences nothing; any address is allowed, and SSE,
        // which it needs, is part of x86_64.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slots, i);
}

/// A [`KeyTable`]'s slots with a value of each key beside its slot, in the same cache line:
/// a lookup loads the key's slot and its value at once, where a value in an array by code
/// would be a second cache miss. The as-of join keeps each patient's span of times there
/// (slot and span: 32 bytes); its key lookups took 0.63 s instead of 0.80 s at s10m.
pub struct SideTable<'t, V> {
    table: &'t KeyTable,
    slots: Vec<Beside<V>>,
}

/// A slot and its value, aligned so that a pair of up to 32 bytes (the span's) lies in one
/// cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Beside<V> {
    slot: Slot,
    value: V,
}

impl<'t, V: Copy> SideTable<'t, V> {
    /// `table`'s slots, each with `side[code]` (`none` beside the empty slots).
    pub fn new(table: &'t KeyTable, side: &[V], none: V) -> Self {
        let slots = table
            .slots
            .iter()
            .map(|&slot| Beside {
                slot,
                value: if slot.code == ABSENT {
                    none
                } else {
                    side[slot.code as usize]
                },
            })
            .collect();
        SideTable { table, slots }
    }

    /// As [`KeyTable::get_many`] over all of `keys`, each code with its value; `(ABSENT,
    /// none)` for absent keys and nulls.
    pub fn get_many(&self, keys: &StringArray, none: V, out: &mut Vec<(u32, V)>) {
        out.clear();
        self.table.probe(&self.slots, keys, 0..keys.len(), |s| {
            out.push(s.map_or((ABSENT, none), |b| (b.slot.code, b.value)))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Tables built in parallel from distinct keys, at every size up to 600 (so that some
    /// keys run past the last slot and wrap around), find every key and no other.
    #[test]
    fn a_built_table_finds_its_keys_at_every_size() {
        let all: Vec<String> = (0..600).map(|i| format!("patient-{i}")).collect();
        let mut wrapped = 0;
        for n in 0..all.len() {
            let keys: Vec<&str> = all[..n].iter().map(String::as_str).collect();
            let t = KeyTable::build(&keys);
            assert_eq!(t.len(), n);
            wrapped += usize::from(t.slots[t.mask].code != ABSENT && t.slots[0].code != ABSENT);
            let mut got = vec![0; all.len()];
            t.get_many(&StringArray::from(all.clone()), 0, &mut got);
            for (i, k) in all.iter().enumerate() {
                let want = (i < n).then_some(i as u32);
                assert_eq!(t.get(k), want, "{k} in a table of {n}");
                assert_eq!(got[i], want.unwrap_or(ABSENT), "{k} in a table of {n}");
            }
        }
        assert!(
            wrapped > 10,
            "only {wrapped} tables used their first and last slots"
        );
    }

    proptest! {
        /// Codes follow insertion order, and `get`/`get_many` agree with a HashMap on keys
        /// present and absent, short and long (past the 8 inline bytes), sharing prefixes.
        #[test]
        fn agrees_with_a_hash_map(
            keys in proptest::collection::vec("[ab]{0,3}|p[0-9]{1,6}|[a-f0-9]{15,18}|x{16}[a-c]{0,20}", 0..300),
            probes in proptest::collection::vec("[ab]{0,3}|p[0-9]{1,6}|[a-f0-9]{15,18}|x{16}[a-c]{0,20}", 0..300),
        ) {
            let mut t = KeyTable::with_capacity(0);
            let mut m: HashMap<String, u32> = HashMap::new();
            for k in &keys {
                let next = m.len() as u32;
                let want = *m.entry(k.clone()).or_insert(next);
                prop_assert_eq!(t.insert(k), want);
            }
            prop_assert_eq!(t.len(), m.len());
            let mut bulk = KeyTable::with_capacity(0);
            bulk.insert_many(&keys.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(bulk.len(), m.len());
            for (k, &c) in &m {
                prop_assert_eq!(bulk.get(k), Some(c));
            }
            // Built in parallel: the same codes (through the fallback when keys repeat).
            let built = KeyTable::build(&keys.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert_eq!(built.len(), m.len());
            for (k, &c) in &m {
                prop_assert_eq!(built.get(k), Some(c));
                prop_assert_eq!(built.key(c), k.as_str());
            }
            // Beside the slots, a value per code: found with the code, `none` when absent.
            let side_vals: Vec<u64> = (0..m.len() as u64).map(|c| c * 3 + 1).collect();
            let side = SideTable::new(&t, &side_vals, 0);
            let mut found = Vec::new();
            let all: Vec<&str> = keys.iter().chain(&probes).map(String::as_str).collect();
            side.get_many(&StringArray::from(all.clone()), 0, &mut found);
            prop_assert_eq!(found.len(), all.len());
            for (k, &(c, v)) in all.iter().zip(&found) {
                let want = t.get(k);
                prop_assert_eq!(c, want.unwrap_or(ABSENT));
                prop_assert_eq!(v, want.map_or(0, |c| u64::from(c) * 3 + 1));
            }
            // Distinct keys take the parallel path: code = position.
            let mut distinct: Vec<&str> = vec![""; m.len()];
            for (k, &c) in &m {
                distinct[c as usize] = k;
            }
            let built = KeyTable::build(&distinct);
            for (c, k) in distinct.iter().enumerate() {
                prop_assert_eq!(built.get(k), Some(c as u32));
                prop_assert_eq!(built.key(c as u32), *k);
            }
            let mut got = vec![0u32; probes.len()];
            built.get_many(&StringArray::from(probes.clone()), 0, &mut got);
            for (k, got) in probes.iter().zip(&got) {
                prop_assert_eq!(*got, m.get(k).copied().unwrap_or(ABSENT));
            }
            for (k, &c) in &m {
                prop_assert_eq!(t.key(c), k.as_str());
            }
            let all: Vec<&str> = keys.iter().chain(&probes).map(String::as_str).collect();
            let arr = StringArray::from(all.clone());
            let mut out = vec![0u32; all.len()];
            t.get_many(&arr, 0, &mut out);
            for (k, got) in all.iter().zip(&out) {
                let want = m.get(*k).copied();
                prop_assert_eq!(t.get(k), want);
                prop_assert_eq!(*got, want.unwrap_or(ABSENT));
            }
            // Renumbered by rank: codes follow byte order, lookups follow the new codes.
            let mut sorted: Vec<&String> = m.keys().collect();
            sorted.sort();
            t.renumber(&t.ranks());
            for (r, k) in sorted.iter().enumerate() {
                prop_assert_eq!(t.key(r as u32), k.as_str());
                prop_assert_eq!(t.get(k), Some(r as u32));
            }
        }
    }

    #[test]
    fn head_of_every_length() {
        let key: Vec<u8> = (1..=40).collect();
        for n in 0..=40 {
            let mut want = [0u8; HEAD];
            for (i, b) in key[..n].iter().take(HEAD).enumerate() {
                want[i] = *b;
            }
            assert_eq!(head_of(&key[..n]), want, "length {n}");
        }
    }

    #[test]
    fn keys_told_apart_by_length_alone() {
        // Zero bytes pad a short key's head, and a slot holds lengths up to 255: these keys
        // differ only past what a slot holds or in their length.
        let long = "k".repeat(300);
        let keys = [
            "p1".to_string(),
            "p1\0".to_string(),
            "p1\0\0".to_string(),
            "\0".to_string(),
            String::new(),
            "abcdefgh".to_string(),
            "abcdefgh\0".to_string(),
            long.clone(),
            format!("{long}k"),
            format!("{long}j"),
        ];
        let mut t = KeyTable::default();
        for (c, k) in keys.iter().enumerate() {
            assert_eq!(t.insert(k), c as u32, "{k:?}");
        }
        let arr = StringArray::from(keys.iter().map(String::as_str).collect::<Vec<_>>());
        let mut out = vec![ABSENT; keys.len()];
        t.get_many(&arr, 0, &mut out);
        assert_eq!(out, (0..keys.len() as u32).collect::<Vec<_>>());
        assert_eq!(t.get("p1\0\0\0"), None);
        assert_eq!(t.get(&format!("{long}l")), None);
    }

    #[test]
    fn nulls_and_offsets() {
        let mut t = KeyTable::default();
        assert!(t.is_empty());
        assert_eq!(t.insert("p1"), 0);
        assert_eq!(t.insert("p2"), 1);
        let arr = StringArray::from(vec![Some("p2"), None, Some("p1"), Some("p3")]);
        let mut out = [7u32; 3];
        t.get_many(&arr, 1, &mut out);
        assert_eq!(out, [ABSENT, 0, ABSENT]);
    }
}
