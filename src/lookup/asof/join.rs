//! The join in memory: the entity rows sorted and numbered, each patient's rows and the
//! span of event times that can win there, the feature rows buffered by partition, each
//! partition's sweep, and the set of winning rows.

use arrow::array::{Array, StringArray};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::keys::{sort_prefix, KeyTable};
use crate::pit;

/// A candidate: (event time, created time, feature row). Compared lexicographically.
pub(super) type Cand = (i64, i64, u64);
pub(super) const NONE: Cand = (i64::MIN, i64::MIN, u64::MAX);

/// Entity rows sorted by (patient, time, row), with each patient's range.
pub(super) struct SortedEntities {
    /// Patient id → code = the id's rank in byte order.
    pub(super) table: KeyTable,
    /// Patient code c's rows are `starts[c]..starts[c + 1]` of the sorted order.
    pub(super) starts: Vec<u32>,
    /// Sorted order: the row's position in the input.
    pub(super) row_of: Vec<u32>,
    /// Sorted order: the row's time.
    pub(super) times: Vec<i64>,
}

/// Sorts the entity rows (patient ids in `parts`, one after the other; `times`) by
/// (patient id in byte order, time, row), in parallel. Rows are compared by the id's
/// [`sort_prefix`] first, by the whole id only when those tie. The distinct ids then go into
/// the key table in sorted order, so that a patient's code is its rank.
pub(super) fn sort_entities(parts: &[StringArray], times: &[i64]) -> Result<SortedEntities> {
    let n = times.len();
    if n >= u32::MAX as usize {
        return Err(Error::invalid("entity rows", "2^32 rows or more"));
    }
    // (id prefix, time, row, id)
    let mut order: Vec<(u64, i64, u32, &str)> = Vec::with_capacity(n);
    for p in parts {
        let row0 = order.len();
        order.par_extend((0..p.len()).into_par_iter().map(|i| {
            let id = p.value(i);
            let row = row0 + i;
            (sort_prefix(id.as_bytes()), times[row], row as u32, id)
        }));
    }
    // Ids with equal prefixes: when one is at most 8 bytes long, it is a prefix of the other
    // (zero padding), so the shorter is the smaller; otherwise their tails decide.
    let id_cmp = |a: &(u64, i64, u32, &str), b: &(u64, i64, u32, &str)| {
        let (a, b) = (a.3.as_bytes(), b.3.as_bytes());
        if a.len() <= 8 || b.len() <= 8 {
            a.len().cmp(&b.len())
        } else {
            a[8..].cmp(&b[8..])
        }
    };
    order.par_sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| id_cmp(a, b))
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
    });
    let mut ids: Vec<&str> = Vec::new();
    let mut starts = Vec::new();
    for (i, row) in order.iter().enumerate() {
        let new_id = i == 0 || order[i - 1].0 != row.0 || id_cmp(&order[i - 1], row).is_ne();
        if new_id {
            ids.push(row.3);
            starts.push(i as u32);
        }
    }
    starts.push(n as u32);
    // The key table while the sorted columns are taken out.
    let (table, (row_of, times)) = rayon::join(
        || KeyTable::build(&ids),
        || {
            rayon::join(
                || order.par_iter().map(|r| r.2).collect(),
                || order.par_iter().map(|r| r.1).collect(),
            )
        },
    );
    Ok(SortedEntities {
        table,
        starts,
        row_of,
        times,
    })
}

/// A patient's entity rows in the sorted order, with the time of the first: what recording a
/// candidate needs of the patient in one load.
#[derive(Debug, Clone, Copy)]
pub(super) struct PatientRows {
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) first_time: i64,
}

/// Each patient's [`PatientRows`], by code, from the starts of their ranges and the sorted
/// times.
pub(super) fn patient_rows(starts: &[u32], times: &[i64]) -> Vec<PatientRows> {
    starts
        .windows(2)
        .map(|w| PatientRows {
            start: w[0],
            end: w[1],
            first_time: times[w[0] as usize],
        })
        .collect()
}

/// The event times of the feature rows that can win at a patient's entity rows: after the
/// first row's time less the TTL (an older row is out of the TTL at every row, so it gives no
/// match whether it is recorded or not) and at most the last row's time (a later row is a
/// candidate at no row). Rows outside are dropped before they are buffered.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) lo: i64,
    pub(super) hi: i64,
}

impl Span {
    /// Whether `ev` is in the span (without a branch).
    pub(super) fn holds(self, ev: i64) -> bool {
        (self.lo <= ev) & (ev <= self.hi)
    }

    /// The span of an unknown patient: holds no time.
    pub(super) const EMPTY: Span = Span {
        lo: i64::MAX,
        hi: i64::MIN,
    };
}

/// Each patient's [`Span`], by code.
pub(super) fn spans(starts: &[u32], times: &[i64], ttl_us: Option<i64>) -> Vec<Span> {
    starts
        .windows(2)
        .map(|w| {
            let first = times[w[0] as usize];
            let lo = match ttl_us {
                // ev > first - ttl, i.e. ev >= first - ttl + 1 (all of them where
                // first - ttl is below the range).
                Some(ttl) => first
                    .checked_sub(ttl)
                    .map_or(i64::MIN, |x| x.saturating_add(1)),
                None => i64::MIN,
            };
            Span {
                lo,
                hi: times[w[1] as usize - 1],
            }
        })
        .collect()
}

/// Bits of a [`Rec`]'s `tag` that hold the feature row; the patient's code within its
/// partition is above them.
pub(super) const ROW_BITS: u32 = 40;
pub(super) const ROW_MASK: u64 = (1 << ROW_BITS) - 1;
/// Entity rows a partition aims at: its candidates, rows and times then fit in a core's L2
/// cache.
pub(super) const PARTITION_ROWS: usize = 4096;
/// Records per chunk of a partition's buffer (so a buffer overshoots by less than a chunk).
pub(super) const CHUNK: usize = 2048;

/// A feature row of a known patient, recorded by [`Partitions::record`]: its event and
/// created times, and its patient's code within its partition above its file row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rec {
    pub(super) ev: i64,
    pub(super) cr: i64,
    pub(super) tag: u64,
}

/// The patient codes split into ranges of `2^shift` codes (partitions), whose entity rows are
/// contiguous in the sorted order since codes are ranks; one worker's feature rows, each
/// buffered in its patient's partition.
pub(super) struct Partitions {
    pub(super) shift: u32,
    pub(super) parts: Vec<Vec<Vec<Rec>>>,
    /// Scratch: the rows of a batch that are kept.
    pub(super) kept: Vec<u32>,
}

impl Partitions {
    /// The partition width for `n_codes` patients with `n_rows` entity rows: a power of two
    /// near `partition_rows` rows (on average) and at most `2^(64 - ROW_BITS)` codes.
    pub(super) fn shift_for(n_codes: usize, n_rows: usize, partition_rows: usize) -> u32 {
        let codes = (partition_rows as u128 * n_codes as u128 / n_rows.max(1) as u128).max(1);
        (127 - codes.leading_zeros()).min(64 - ROW_BITS)
    }

    /// Number of partitions of `n_codes` codes at `shift`.
    pub(super) fn count(n_codes: usize, shift: u32) -> usize {
        (n_codes >> shift) + 1
    }

    pub(super) fn new(n_codes: usize, shift: u32) -> Partitions {
        Partitions {
            shift,
            parts: (0..Partitions::count(n_codes, shift))
                .map(|_| Vec::new())
                .collect(),
            kept: Vec::new(),
        }
    }

    /// Buffers the feature rows `row0..` (patient code and span in `found`, event and
    /// created times) whose event time is in their patient's span. Which rows are kept is
    /// found first without branches (half go either way, at random), then those are buffered.
    pub(super) fn record(&mut self, found: &[(u32, Span)], ev: &[i64], cr: &[i64], row0: u64) {
        self.kept.clear();
        self.kept.resize(found.len(), 0);
        let mut n = 0;
        for (i, (&(_, span), &e)) in found.iter().zip(ev).enumerate() {
            self.kept[n] = i as u32;
            n += usize::from(span.holds(e));
        }
        let low = (1u32 << self.shift) - 1;
        for &i in &self.kept[..n] {
            let i = i as usize;
            let c = found[i].0;
            let chunks = &mut self.parts[(c >> self.shift) as usize];
            if chunks.last().is_none_or(|k| k.len() == CHUNK) {
                chunks.push(Vec::with_capacity(CHUNK));
            }
            if let Some(k) = chunks.last_mut() {
                k.push(Rec {
                    ev: ev[i],
                    cr: cr[i],
                    tag: (u64::from(c & low) << ROW_BITS) | (row0 + i as u64),
                });
            }
        }
    }
}

/// One partition's join: records each of its feature rows (from every worker's buffer) as a
/// candidate at the first entity row of its patient at or after its event time, keeping the
/// greatest `(event, created, row)` there; then sweeps each patient's rows in time order,
/// carrying the greatest candidate forward, and writes each row's winner (checked against
/// the TTL) to `out`, the winners of the partition's rows. `patients` are the partition's
/// own (a row's code within its partition indexes them); `best` is scratch space.
pub(super) fn join_partition(
    recs: impl Iterator<Item = Rec>,
    patients: &[PatientRows],
    times: &[i64],
    ttl_us: Option<i64>,
    best: &mut Vec<Cand>,
    out: &mut [Option<u64>],
) {
    let r0 = patients.first().map_or(0, |p| p.start as usize);
    best.clear();
    best.resize(out.len(), NONE);
    for rec in recs {
        let PatientRows {
            start,
            end,
            first_time,
        } = patients[(rec.tag >> ROW_BITS) as usize];
        let at = if rec.ev <= first_time {
            start as usize
        } else {
            let rows = &times[start as usize + 1..end as usize];
            start as usize + 1 + rows.partition_point(|&t| t < rec.ev)
        };
        if at < end as usize {
            let c = (rec.ev, rec.cr, rec.tag & ROW_MASK);
            let slot = &mut best[at - r0];
            if c > *slot {
                *slot = c;
            }
        }
    }
    for p in patients {
        let mut run = NONE;
        for k in p.start as usize..p.end as usize {
            if best[k - r0] > run {
                run = best[k - r0];
            }
            let fresh = match ttl_us {
                Some(ttl) => pit::within_ttl(times[k], run.0, ttl),
                None => true,
            };
            out[k - r0] = (run != NONE && fresh).then_some(run.2);
        }
    }
}

/// A set of feature rows, a bit per row, that ranks its members: the winning rows, whose
/// values are decoded and concatenated in row order.
pub(super) struct RowSet {
    pub(super) bits: Vec<u64>,
    /// Members in the words before each word.
    pub(super) before: Vec<u32>,
}

impl RowSet {
    /// The set of `members` (each below `rows`; fewer than 2^32 distinct).
    pub(super) fn new(rows: u64, members: impl Iterator<Item = u64>) -> RowSet {
        let mut bits = vec![0u64; rows.div_ceil(64) as usize];
        for r in members {
            bits[(r / 64) as usize] |= 1 << (r % 64);
        }
        let mut acc = 0u32;
        let before = bits
            .iter()
            .map(|w| {
                let b = acc;
                acc += w.count_ones();
                b
            })
            .collect();
        RowSet { bits, before }
    }

    /// The members in `lo..hi`, ascending, less `lo`.
    pub(super) fn members(&self, lo: u64, hi: u64) -> Vec<u64> {
        let mut out = Vec::new();
        if lo >= hi {
            return out;
        }
        for w in lo / 64..=(hi - 1) / 64 {
            let mut word = self.bits[w as usize];
            while word != 0 {
                let r = w * 64 + u64::from(word.trailing_zeros());
                word &= word - 1;
                if (lo..hi).contains(&r) {
                    out.push(r - lo);
                }
            }
        }
        out
    }

    /// The number of members below `row`: a member's position among them.
    pub(super) fn rank(&self, row: u64) -> u32 {
        let w = (row / 64) as usize;
        self.before[w] + (self.bits[w] & ((1u64 << (row % 64)) - 1)).count_ones()
    }
}

/// Splits the `phase_s` seconds of a phase whose tasks both decoded (`load_s` of their own
/// seconds) and joined (`join_s`) into (load, join) seconds, in proportion.
pub(super) fn split_phase(phase_s: f64, load_s: f64, join_s: f64) -> (f64, f64) {
    let total = load_s + join_s;
    let join = if total > 0.0 {
        phase_s * join_s / total
    } else {
        0.0
    };
    (phase_s - join, join)
}
