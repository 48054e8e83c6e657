//! Event streams: the rows a feature reads as events (event time, `known_at`,
//! `retracted_at`, `source_id`, value), grouped by patient (a counting sort) and sorted in
//! the tie order.

use super::columns::{str_at, text_col, ts_array, ts_at, utf8_array, TextFilter, Val, ValArray};
use super::definition::FeatureDef;
use super::intern::NO_PATIENT;
use crate::error::{Error, Result};
use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::buffer::BooleanBuffer;
use rayon::prelude::*;

/// One matching row of a feature's table: its times, and where it is (batch, row `i` of
/// its stream's columns) for its source id and value, read only when needed (32 bytes an
/// event; [`Events`] reads them).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Ev {
    pub(crate) e: i64,
    pub(crate) k: i64,
    /// `retracted_at` when `b` has [`Ev::RETRACTED`], else 0.
    pub(super) x: i64,
    /// The batch, and [`Ev::RETRACTED`] when the row has a `retracted_at`.
    pub(super) b: u32,
    pub(super) i: u32,
}

impl Ev {
    /// The bit of `b` telling that `x` holds a `retracted_at`.
    const RETRACTED: u32 = 1 << 31;

    fn new(e: i64, k: i64, x: Option<i64>, batch: usize, i: usize) -> Ev {
        let b = batch as u32;
        debug_assert!(b & Ev::RETRACTED == 0 && batch <= u32::MAX as usize);
        Ev {
            e,
            k,
            x: x.unwrap_or(0),
            b: b | x.map_or(0, |_| Ev::RETRACTED),
            i: i as u32,
        }
    }

    /// When the row was retracted (`None`: it stands).
    pub(crate) fn x(&self) -> Option<i64> {
        (self.b & Ev::RETRACTED != 0).then_some(self.x)
    }

    fn batch(&self) -> usize {
        (self.b & !Ev::RETRACTED) as usize
    }
}

/// Events of one stream with the columns their source ids and values are read from.
#[derive(Clone, Copy)]
pub(crate) struct Events<'s, 'a> {
    pub(crate) evs: &'s [Ev],
    pub(super) cols: &'a [StreamCols],
}

impl<'a> Events<'_, 'a> {
    pub(super) const NONE: Events<'static, 'static> = Events {
        evs: &[],
        cols: &[],
    };

    /// The value of `ev` (of this stream).
    pub(crate) fn val(&self, ev: &Ev) -> Val<'a> {
        self.cols[ev.batch()]
            .values
            .as_ref()
            .map_or(Val::None, |v| v.get(ev.i as usize))
    }
}

/// The source ids of a stream's rows, per batch (`None`: the batch has none).
type Sids = [Option<StringArray>];

/// The source id of `ev` ("" when null or absent).
pub(super) fn sid<'s>(sids: &'s Sids, ev: &Ev) -> &'s str {
    sids.get(ev.batch())
        .and_then(Option::as_ref)
        .and_then(|s| str_at(s, ev.i as usize))
        .unwrap_or("")
}

/// The tie order of a stream's events: event time, `known_at`, `source_id`, then the rest
/// (so the order is total).
pub(super) fn tie_cmp(events: &Events<'_, '_>, sids: &Sids, a: &Ev, b: &Ev) -> std::cmp::Ordering {
    (a.e, a.k)
        .cmp(&(b.e, b.k))
        .then_with(|| sid(sids, a).cmp(sid(sids, b)))
        .then_with(|| a.x().cmp(&b.x()))
        .then_with(|| val_cmp(&events.val(a), &events.val(b)))
}

fn val_cmp(a: &Val<'_>, b: &Val<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let rank = |v: &Val<'_>| match v {
        Val::None => 0,
        Val::Num(_) => 1,
        Val::Text(_) => 2,
        Val::Time(_) => 3,
    };
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.total_cmp(y),
        (Val::Text(x), Val::Text(y)) => x.cmp(y),
        (Val::Time(x), Val::Time(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)).then(Ordering::Equal),
    }
}

/// The columns one event stream reads from one batch, cast once.
pub(super) struct StreamCols {
    pub(super) rows: usize,
    pub(super) times: TimestampMicrosecondArray,
    pub(super) known: TimestampMicrosecondArray,
    pub(super) retracted: Option<TimestampMicrosecondArray>,
    pub(super) values: Option<ValArray>,
    pub(super) filters: Vec<TextFilter>,
}

impl StreamCols {
    /// The columns, and the batch's source ids.
    pub(super) fn read(
        f: &FeatureDef,
        batch: &RecordBatch,
    ) -> Result<(StreamCols, Option<StringArray>)> {
        let missing = |c: &str| {
            Error::invalid(
                format!("feature {}", f.name),
                format!("table {} has no column {c}", f.table),
            )
        };
        if batch.column_by_name("patient_id").is_none() {
            return Err(missing("patient_id"));
        }
        let times = ts_array(batch, &f.time, &f.name)?.ok_or_else(|| missing(&f.time))?;
        let known = ts_array(batch, "known_at", &f.name)?.ok_or_else(|| missing("known_at"))?;
        let retracted = ts_array(batch, "retracted_at", &f.name)?;
        let sids = utf8_array(batch, "source_id", &f.name)?;
        let values = match &f.column {
            Some(c) => Some(ValArray::read(batch, c, &f.name)?),
            None => None,
        };
        let mut filters = Vec::new();
        for (col, cond) in &f.filter {
            filters.push(TextFilter::new(
                text_col(batch, col, &f.name)?.ok_or_else(|| missing(col))?,
                cond.clone(),
            ));
        }
        let cols = StreamCols {
            rows: batch.num_rows(),
            times,
            known,
            retracted,
            values,
            filters,
        };
        Ok((cols, sids))
    }
}

/// Items grouped by patient: patient `p`'s are `items[offsets[p]..offsets[p + 1]]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Grouped<T> {
    pub(crate) offsets: Vec<usize>,
    pub(crate) items: Vec<T>,
}

impl<T: Copy + Default + Send> Grouped<T> {
    /// Groups `(patient, item)` pairs by patient (a stable counting sort).
    pub(crate) fn new(patients: usize, pairs: &[(u32, T)]) -> Grouped<T> {
        let mut offsets = vec![0usize; patients + 1];
        for (p, _) in pairs {
            offsets[*p as usize + 1] += 1;
        }
        for i in 0..patients {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut items = vec![T::default(); pairs.len()];
        for (p, item) in pairs {
            let slot = &mut next[*p as usize];
            items[*slot] = *item;
            *slot += 1;
        }
        Grouped { offsets, items }
    }

    /// Groups items `0..keys.len()` by patient `keys[i]` (a stable counting sort; items of
    /// [`NO_PATIENT`] are left out), item `i` being `item(i)`: no list of pairs is built.
    pub(crate) fn by_key(patients: usize, keys: &[u32], item: impl Fn(usize) -> T) -> Grouped<T> {
        let mut offsets = vec![0usize; patients + 1];
        for &p in keys.iter().filter(|&&p| p != NO_PATIENT) {
            offsets[p as usize + 1] += 1;
        }
        for i in 0..patients {
            offsets[i + 1] += offsets[i];
        }
        let mut next = offsets.clone();
        let mut items = vec![T::default(); offsets[patients]];
        for (i, &p) in keys.iter().enumerate().filter(|(_, &p)| p != NO_PATIENT) {
            let slot = &mut next[p as usize];
            items[*slot] = item(i);
            *slot += 1;
        }
        Grouped { offsets, items }
    }

    /// Patient `p`'s items.
    pub(crate) fn of(&self, p: u32) -> &[T] {
        let p = p as usize;
        match (self.offsets.get(p), self.offsets.get(p + 1)) {
            (Some(a), Some(b)) => &self.items[*a..*b],
            _ => &[],
        }
    }

    /// Sorts each patient's items, in parallel.
    pub(crate) fn sort_each(&mut self, cmp: impl Fn(&T, &T) -> std::cmp::Ordering + Sync) {
        let mut slices = Vec::with_capacity(self.offsets.len());
        let mut rest: &mut [T] = &mut self.items;
        for w in self.offsets.windows(2) {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
            slices.push(a);
            rest = b;
        }
        slices
            .par_iter_mut()
            .with_min_len(256)
            .for_each(|s| s.sort_unstable_by(&cmp));
    }
}

/// The events of one stream, by patient, each patient's in tie order.
pub(super) fn stream_events(
    cols: &[StreamCols],
    sids: &Sids,
    pids: &[Vec<u32>],
    patients: usize,
) -> Grouped<Ev> {
    // The matching rows of each batch (a bit a row), then grouped by patient: a counting
    // sort over them, so the events and the bits are the only memory it takes.
    let matches = |sc: &StreamCols, pid: &[u32], i: usize| {
        pid.get(i).is_some_and(|&p| p != NO_PATIENT)
            && !sc.times.is_null(i)
            && !sc.known.is_null(i)
            && sc.filters.iter().all(|f| f.holds(i))
            && !sc
                .values
                .as_ref()
                .is_some_and(|v| matches!(v.get(i), Val::None))
    };
    let hits: Vec<BooleanBuffer> = cols
        .iter()
        .zip(pids)
        .map(|(sc, pid)| BooleanBuffer::collect_bool(sc.rows, |i| matches(sc, pid, i)))
        .collect();
    let mut offsets = vec![0usize; patients + 1];
    for (h, pid) in hits.iter().zip(pids) {
        for i in h.set_indices() {
            offsets[pid[i] as usize + 1] += 1;
        }
    }
    for i in 0..patients {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut items = vec![Ev::default(); offsets[patients]];
    for (b, ((sc, pid), h)) in cols.iter().zip(pids).zip(&hits).enumerate() {
        for row in h.set_indices() {
            let slot = &mut next[pid[row] as usize];
            items[*slot] = Ev::new(
                sc.times.value(row),
                sc.known.value(row),
                sc.retracted.as_ref().and_then(|r| ts_at(r, row)),
                b,
                row,
            );
            *slot += 1;
        }
    }
    drop(next);
    let mut g = Grouped { offsets, items };
    let order = Events { evs: &[], cols };
    g.sort_each(|a, b| tie_cmp(&order, sids, a, b));
    g
}

/// Whether two of some patient's events tie on event time and `known_at` (the events of each
/// patient sorted, so tied events are next to each other).
pub(super) fn has_ties(g: &Grouped<Ev>, patients: usize) -> bool {
    (0..patients as u32)
        .into_par_iter()
        .with_min_len(4096)
        .any(|p| {
            g.of(p)
                .windows(2)
                .any(|w| (w[0].e, w[0].k) == (w[1].e, w[1].k))
        })
}
