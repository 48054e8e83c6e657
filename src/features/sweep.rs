//! The change-point sweep: each event is visible on an interval `[enter, leave)`
//! ([`interval`], from [`crate::pit::visibility`]); a sweep over the interval ends gives
//! every instant where a feature's state can change, and the state is recomputed from the
//! visible rows there.

use super::columns::Val;
use super::definition::{FeatureDef, FeatureSet};
use super::events::{has_ties, sid, stream_events, tie_cmp, Ev, Events, Grouped, StreamCols};
use super::intern::{Interned, Interner, NO_PATIENT};
use super::kind::FeatureKind;
use super::load::Loaded;
use super::score::{self, ClinicalRows};
use super::timeline::{self, ChangePoint};
use crate::error::Result;
use crate::keys::KeyTable;
use crate::pit::{self, Knowledge};
use arrow::array::StringArray;
use rayon::prelude::*;
use std::sync::Mutex;

/// What materialization reads, by patient: the interned ids, every stream's events and the
/// rows of `score` features.
pub(crate) struct Prepared<'a> {
    pub(super) set: &'a FeatureSet,
    /// Patient ids in byte order; a patient is its index here.
    pub(crate) names: Vec<&'a str>,
    /// Patient id → provisional number; `rank` turns it into the patient's index.
    pub(super) table: KeyTable,
    pub(super) rank: Vec<u32>,
    /// Per stream: its columns and its events.
    pub(super) streams: Vec<(&'a [StreamCols], Grouped<Ev>)>,
    /// The source ids ([`Prepared::digest`]).
    pub(super) sids: &'a Mutex<Vec<Vec<Option<StringArray>>>>,
    pub(super) feature_stream: &'a [Option<usize>],
    pub(super) clinical: Option<score::ByPatient<'a>>,
}

impl<'a> Prepared<'a> {
    /// # Errors
    /// What reading late source ids fails with ([`SourceIdReader`]).
    pub(crate) fn new(set: &'a FeatureSet, loaded: &'a Loaded) -> Result<Prepared<'a>> {
        let mut interner = Interner::default();
        let interned: Vec<Vec<Option<Interned>>> = loaded
            .sources
            .iter()
            .map(|s| {
                s.patients
                    .iter()
                    .map(|p| p.as_ref().map(|p| interner.interned(p)))
                    .collect()
            })
            .collect();
        let mut score_ids = loaded.score.as_ref().map(|s| s.intern(&mut interner));
        let (names, rank, table) = interner.finish();
        let pids: Vec<Vec<Vec<u32>>> = interned
            .into_par_iter()
            .map(|s| {
                s.into_par_iter()
                    .map(|ids| ids.map(|ids| ids.ranks(&rank)).unwrap_or_default())
                    .collect()
            })
            .collect();
        if let Some(ids) = &mut score_ids {
            ids.renumber(&rank);
        }
        let np = names.len();
        let mut sids = loaded
            .sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut streams: Vec<(&[StreamCols], Grouped<Ev>)> = loaded
            .streams
            .par_iter()
            .zip(sids.par_iter())
            .map(|((si, cols), ids)| (cols.as_slice(), stream_events(cols, ids, &pids[*si], np)))
            .collect();
        // Streams given without source ids whose order needs them: read them, sort again.
        let tied: Vec<usize> = (0..streams.len())
            .filter(|&s| loaded.is_late(s, &sids) && has_ties(&streams[s].1, np))
            .collect();
        loaded.read_late(&mut sids, &tied)?;
        for s in tied {
            let (cols, g) = &mut streams[s];
            let order = Events { evs: &[], cols };
            g.sort_each(|a, b| tie_cmp(&order, &sids[s], a, b));
        }
        drop(sids);
        let clinical = match (&loaded.score, score_ids) {
            (Some(tables), Some(ids)) => Some(tables.group(ids, np)),
            _ => None,
        };
        Ok(Prepared {
            set,
            names,
            table,
            rank,
            streams,
            sids: &loaded.sids,
            feature_stream: &loaded.feature_stream,
            clinical,
        })
    }

    /// Patient `p`'s events of feature `fi` (none for `score` features).
    fn events(&self, p: u32, fi: usize) -> Events<'_, 'a> {
        match self.feature_stream[fi] {
            Some(s) => Events {
                evs: self.streams[s].1.of(p),
                cols: self.streams[s].0,
            },
            None => Events::NONE,
        }
    }

    /// The index of each patient of `ids[offset..offset + out.len()]` into `out`
    /// ([`NO_PATIENT`] for a patient without rows, and for a null).
    pub(crate) fn patients_of(&self, ids: &StringArray, offset: usize, out: &mut [u32]) {
        self.table.get_many(ids, offset, out);
        for p in out {
            *p = self.rank.get(*p as usize).copied().unwrap_or(NO_PATIENT);
        }
    }

    /// Patient `p`'s score rows (only when the set has `score` features and it has some).
    pub(crate) fn clinical(&self, p: u32) -> Option<ClinicalRows> {
        self.clinical.as_ref().and_then(|c| c.rows(p))
    }

    /// Whether patient `p` has an event or a score row (what "computed" counts).
    pub(super) fn has_rows(&self, p: u32, clinical: Option<&ClinicalRows>) -> bool {
        clinical.is_some() || self.streams.iter().any(|s| !s.1.of(p).is_empty())
    }

    /// The digest of patient `p`'s events and score rows (what incremental materialization
    /// compares). Needs the source ids: not after [`Loaded::release_source_ids`].
    pub(super) fn digest(&self, p: u32, clinical: Option<&ClinicalRows>) -> [u8; 32] {
        let sids = self
            .sids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut h = blake3::Hasher::new();
        if let Some(c) = clinical {
            c.digest_into(&mut h);
        }
        for fi in 0..self.set.features.len() {
            let events = self.events(p, fi);
            h.update(&(fi as u64).to_le_bytes());
            h.update(&(events.evs.len() as u64).to_le_bytes());
            for ev in events.evs {
                h.update(&ev.e.to_le_bytes());
                h.update(&ev.k.to_le_bytes());
                h.update(&ev.x().map_or([0xff; 9], |x| {
                    let mut b = [0u8; 9];
                    b[1..].copy_from_slice(&x.to_le_bytes());
                    b
                }));
                let stream = self.feature_stream[fi].and_then(|s| sids.get(s));
                let sid = stream.map_or("", |ids| sid(ids, ev));
                h.update(&(sid.len() as u64).to_le_bytes());
                h.update(sid.as_bytes());
                match events.val(ev) {
                    Val::None => h.update(&[0]),
                    Val::Num(x) => h.update(&[1]).update(&x.to_bits().to_le_bytes()),
                    Val::Text(s) => h
                        .update(&[2])
                        .update(&(s.len() as u64).to_le_bytes())
                        .update(s.as_bytes()),
                    Val::Time(t) => h.update(&[3]).update(&t.to_le_bytes()),
                };
            }
        }
        *h.finalize().as_bytes()
    }
}

/// A change point whose text borrows from the inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cp<'a> {
    pub(crate) effective_at: i64,
    pub(crate) value_num: Option<f64>,
    pub(crate) value_text: Option<&'a str>,
    pub(crate) value_time: Option<i64>,
    pub(crate) count: u64,
}

impl<'a> Cp<'a> {
    fn empty(count: u64) -> Cp<'a> {
        Cp {
            effective_at: 0,
            value_num: None,
            value_text: None,
            value_time: None,
            count,
        }
    }

    /// Same state, ignoring when it took effect (floats compared bit for bit).
    fn same_state(&self, other: &Cp<'_>) -> bool {
        self.value_num.map(f64::to_bits) == other.value_num.map(f64::to_bits)
            && self.value_text == other.value_text
            && self.value_time == other.value_time
            && self.count == other.count
    }

    /// The state, as lookups resolve it.
    pub(crate) fn state(&self) -> timeline::StateRef<'a> {
        timeline::StateRef {
            value_num: self.value_num,
            value_text: self.value_text,
            value_time: self.value_time,
            count: self.count,
        }
    }

    pub(super) fn of(cp: &'a ChangePoint) -> Cp<'a> {
        Cp {
            effective_at: cp.effective_at,
            value_num: cp.value_num,
            value_text: cp.value_text.as_deref(),
            value_time: cp.value_time,
            count: cp.count,
        }
    }
}

/// One timeline row.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutRow<'a> {
    pub(super) patient: &'a str,
    pub(super) feature: &'a str,
    pub(super) cp: Cp<'a>,
}

/// The interval `[enter, leave)` on which an event is visible (`i64::MAX`: never leaves):
/// the row's [`pit::visibility`], cut at the end of the feature's window; a label's is the
/// horizon before its event, for rows of the final record.
pub(crate) fn interval(f: &FeatureDef, ev: &Ev, knowledge: Knowledge) -> Option<(i64, i64)> {
    let window_end = |e: i64| f.window_us.map(|w| e.saturating_add(w)).unwrap_or(i64::MAX);
    let (a, b) = if f.kind.is_label() {
        // Labels use eventual knowledge: the final record; an event at `a` makes the label 1
        // for t in [a - h, a), i.e. a in (t, t + h].
        pit::visibility(ev.e, ev.k, ev.x(), Knowledge::AsOccurred)?;
        (ev.e.saturating_sub(f.horizon_us.unwrap_or(0)), ev.e)
    } else {
        let v = pit::visibility(ev.e, ev.k, ev.x(), knowledge)?;
        (v.from, v.until.unwrap_or(i64::MAX).min(window_end(ev.e)))
    };
    (a < b).then_some((a, b))
}

/// The visible events of one feature of one patient: a bitset over its events (in tie
/// order), so the visible rows in tie order are its set bits in ascending order.
#[derive(Debug, Default)]
pub(super) struct Visible {
    words: Vec<u64>,
    count: usize,
}

impl Visible {
    fn reset(&mut self, n: usize) {
        self.words.clear();
        self.words.resize(n.div_ceil(64), 0);
        self.count = 0;
    }
    fn insert(&mut self, i: u32) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.count += 1;
        }
    }
    fn remove(&mut self, i: u32) {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.words[w] & (1 << b) != 0 {
            self.words[w] &= !(1 << b);
            self.count -= 1;
        }
    }
    fn first(&self) -> Option<usize> {
        let w = self.words.iter().position(|w| *w != 0)?;
        Some(w * 64 + self.words[w].trailing_zeros() as usize)
    }
    fn last(&self) -> Option<usize> {
        let w = self.words.iter().rposition(|w| *w != 0)?;
        Some(w * 64 + 63 - self.words[w].leading_zeros() as usize)
    }
    /// The set bits in ascending order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, w)| {
            let mut w = *w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let b = w.trailing_zeros() as usize;
                    w &= w - 1;
                    wi * 64 + b
                })
            })
        })
    }
}

/// The state of a feature given its visible events (in tie order).
fn state<'a>(f: &FeatureDef, events: Events<'_, 'a>, visible: &Visible) -> Cp<'a> {
    let evs = events.evs;
    let mut cp = Cp::empty(visible.count as u64);
    let (Some(first), Some(last)) = (visible.first(), visible.last()) else {
        if f.kind.zero_when_empty() {
            cp.value_num = Some(0.0);
        }
        return cp;
    };
    let (first, last) = (&evs[first], &evs[last]);
    let num = |v: &Val<'_>| match v {
        Val::Num(x) => *x,
        _ => 0.0,
    };
    let set_value = |cp: &mut Cp<'a>, ev: &Ev| {
        match events.val(ev) {
            Val::Num(x) => cp.value_num = Some(x),
            Val::Text(s) => cp.value_text = Some(s),
            _ => {}
        }
        cp.value_time = Some(ev.e);
    };
    match f.kind {
        FeatureKind::Count => cp.value_num = Some(visible.count as f64),
        FeatureKind::Exists | FeatureKind::ReadmittedWithin | FeatureKind::DiedWithin => {
            cp.value_num = Some(1.0)
        }
        FeatureKind::DaysSince => cp.value_time = Some(last.e),
        FeatureKind::Last => set_value(&mut cp, last),
        FeatureKind::First => set_value(&mut cp, first),
        FeatureKind::Age => {
            if let Val::Time(b) = events.val(last) {
                cp.value_time = Some(b);
            }
        }
        FeatureKind::Sum | FeatureKind::Mean => {
            let sum = visible
                .iter()
                .fold(0.0, |s, i| s + num(&events.val(&evs[i])));
            cp.value_num = Some(if f.kind == FeatureKind::Sum {
                sum
            } else {
                sum / visible.count as f64
            });
        }
        // Computed from the patient's clinical rows (`score::change_points`), never here.
        FeatureKind::Score => {}
        FeatureKind::Min | FeatureKind::Max => {
            let (mut best, mut best_num) = (first, num(&events.val(first)));
            for i in visible.iter().skip(1) {
                let ev = &evs[i];
                let x = num(&events.val(ev));
                let better = match f.kind {
                    FeatureKind::Min => x.total_cmp(&best_num).is_lt(),
                    _ => x.total_cmp(&best_num).is_gt(),
                };
                if better {
                    (best, best_num) = (ev, x);
                }
            }
            set_value(&mut cp, best);
        }
    }
    cp
}

/// Reused buffers of one worker.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(super) bounds: Vec<(i64, bool, u32)>,
    pub(super) visible: Visible,
}

/// The change points of one feature of one patient, passed to `emit` in time order.
fn change_points<'a>(
    f: &FeatureDef,
    events: Events<'_, 'a>,
    knowledge: Knowledge,
    scratch: &mut Scratch,
    mut emit: impl FnMut(Cp<'a>),
) {
    let evs = events.evs;
    let Scratch { bounds, visible } = scratch;
    bounds.clear();
    for (i, ev) in evs.iter().enumerate() {
        if let Some((a, b)) = interval(f, ev, knowledge) {
            bounds.push((a, true, i as u32));
            if b != i64::MAX {
                bounds.push((b, false, i as u32));
            }
        }
    }
    bounds.sort_unstable();
    visible.reset(evs.len());
    let mut prev: Option<Cp<'a>> = None;
    let mut j = 0;
    while j < bounds.len() {
        let at = bounds[j].0;
        while j < bounds.len() && bounds[j].0 == at {
            let (_, enter, i) = bounds[j];
            if enter {
                visible.insert(i);
            } else {
                visible.remove(i);
            }
            j += 1;
        }
        let mut st = state(f, events, visible);
        let unchanged = match &prev {
            Some(p) => p.same_state(&st),
            None => st.count == 0,
        };
        if !unchanged {
            st.effective_at = at;
            emit(st);
            prev = Some(st);
        }
    }
}

/// Every feature's change points for patient `p`, passed to `emit` with the feature's
/// position in the set: features in set order, each one's points in time order.
pub(crate) fn patient_points<'a>(
    prep: &Prepared<'a>,
    p: u32,
    clinical: Option<&ClinicalRows>,
    knowledge: Knowledge,
    scratch: &mut Scratch,
    mut emit: impl FnMut(usize, Cp<'a>),
) {
    // The scores at every instant, once for all score features of the patient.
    let mut score_series = None;
    for (fi, f) in prep.set.features.iter().enumerate() {
        match f.score_component() {
            Some(component) => {
                let series = score_series.get_or_insert_with(|| {
                    clinical.map(|c| c.series(knowledge)).unwrap_or_default()
                });
                for cp in score::change_points(component, series) {
                    emit(
                        fi,
                        Cp {
                            effective_at: cp.effective_at,
                            value_num: cp.value_num,
                            value_text: None,
                            value_time: cp.value_time,
                            count: cp.count,
                        },
                    );
                }
            }
            None => change_points(f, prep.events(p, fi), knowledge, scratch, |cp| emit(fi, cp)),
        }
    }
}

/// Every feature's change points for patient `p`, appended to `out`.
pub(super) fn patient_rows<'a>(
    prep: &Prepared<'a>,
    p: u32,
    clinical: Option<&ClinicalRows>,
    knowledge: Knowledge,
    scratch: &mut Scratch,
    out: &mut Vec<OutRow<'a>>,
) {
    let patient = prep.names[p as usize];
    let set = prep.set;
    patient_points(prep, p, clinical, knowledge, scratch, |fi, cp| {
        out.push(OutRow {
            patient,
            feature: set.features[fi].name.as_str(),
            cp,
        })
    });
}
