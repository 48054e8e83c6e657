//! Patient ids interned once for all tables: a patient is a `u32`, its rank in byte order of
//! the ids, so "patients in id order" is the order of those numbers.

use super::columns::{str_at, TextCol};
use crate::keys::KeyTable;
use arrow::array::{Array, Int32Array, StringArray};
use std::sync::Arc;

/// No patient (a null `patient_id`).
pub(crate) const NO_PATIENT: u32 = u32::MAX;

/// Patient ids to `u32`s, first seen first; [`Interner::finish`] renumbers them in id order.
#[derive(Default)]
pub(crate) struct Interner<'a> {
    pub(super) table: KeyTable,
    /// By provisional id, borrowed from the input arrays.
    pub(super) names: Vec<&'a str>,
    /// The last dictionary interned and its values' ids: a Parquet reader gives every batch
    /// of a row group the row group's whole dictionary, so consecutive batches share it.
    pub(super) last_dict: Option<(&'a StringArray, Arc<Vec<u32>>)>,
}

/// A patient column's provisional ids ([`Interner::interned`]), made final by
/// [`Interned::ranks`].
pub(crate) enum Interned<'a> {
    /// Every row's.
    Rows(Vec<u32>),
    /// A dictionary's keys and the ids of its values.
    Dict(&'a Int32Array, Arc<Vec<u32>>),
}

impl Interned<'_> {
    /// Every row's patient: the rank of its id ([`NO_PATIENT`] for a null).
    pub(crate) fn ranks(self, rank: &[u32]) -> Vec<u32> {
        let of = |id: u32| match id {
            NO_PATIENT => NO_PATIENT,
            id => rank[id as usize],
        };
        match self {
            Interned::Rows(mut ids) => {
                ids.iter_mut().for_each(|id| *id = of(*id));
                ids
            }
            Interned::Dict(keys, by_value) => {
                let final_ids: Vec<u32> = by_value.iter().map(|&id| of(id)).collect();
                let at = |k: i32| final_ids.get(k as usize).copied().unwrap_or(NO_PATIENT);
                match keys.nulls() {
                    None => keys.values().iter().map(|&k| at(k)).collect(),
                    Some(_) => keys.iter().map(|k| k.map_or(NO_PATIENT, at)).collect(),
                }
            }
        }
    }
}

impl<'a> Interner<'a> {
    /// Interns a patient column: of a dictionary, each distinct id once, and the rows are
    /// left to [`Interned::ranks`] (in parallel, once every id is known).
    pub(crate) fn interned(&mut self, patients: &'a TextCol) -> Interned<'a> {
        match patients {
            TextCol::Plain(a) => Interned::Rows(self.ids(a)),
            TextCol::Dict(keys, values) => {
                let by_value = match self.last_dict.take() {
                    Some((last, ids)) if last.to_data().ptr_eq(&values.to_data()) => ids,
                    _ => Arc::new(self.ids(values)),
                };
                self.last_dict = Some((values, by_value.clone()));
                Interned::Dict(keys, by_value)
            }
        }
    }

    /// The (provisional) id of every row of `patients` ([`NO_PATIENT`] for a null).
    pub(crate) fn ids(&mut self, patients: &'a StringArray) -> Vec<u32> {
        let mut out = Vec::with_capacity(patients.len());
        let mut last: Option<(&'a str, u32)> = None;
        for i in 0..patients.len() {
            let Some(p) = str_at(patients, i) else {
                out.push(NO_PATIENT);
                continue;
            };
            let id = match last {
                Some((lp, lid)) if lp == p => lid,
                _ => {
                    let id = self.table.insert(p);
                    if id as usize == self.names.len() {
                        self.names.push(p);
                    }
                    id
                }
            };
            last = Some((p, id));
            out.push(id);
        }
        out
    }

    /// The ids sorted (byte order), the rank of each provisional id, and the table of
    /// provisional ids.
    pub(super) fn finish(self) -> (Vec<&'a str>, Vec<u32>, KeyTable) {
        let rank = self.table.ranks();
        let mut names = vec![""; rank.len()];
        for (i, &r) in rank.iter().enumerate() {
            names[r as usize] = self.names[i];
        }
        (names, rank, self.table)
    }
}

/// Renumbers provisional ids to ranks, in place.
pub(crate) fn renumber(ids: &mut [u32], rank: &[u32]) {
    for id in ids {
        if *id != NO_PATIENT {
            *id = rank[*id as usize];
        }
    }
}
