//! Point in time: the one rule deciding when a curated row is visible, and the rules of an
//! as-of read (the latest state at or before `t`, within a TTL).
//!
//! Every row carries its event time, the time it became known (`known_at`) and, once
//! superseded or cancelled, the time it was retracted (`retracted_at`). Under
//! [`Knowledge::AsKnown`] a row is visible at `t` when `max(event time, known_at) <= t` and it
//! is not retracted at `t`; under [`Knowledge::AsOccurred`] (the final record, back-dated) a
//! row never retracted is visible from its event time, a retracted row never.
//! [`visibility`] states it as the interval of `t` on which a row is visible; the clinical
//! scores (`scores::View`), the change-point sweep of materialization (`features`) and,
//! through the timelines, historical and online lookups all read rows through it.
//!
//! An as-of read then takes, at `t`, the latest state at or before `t` ([`at_or_before`]),
//! and a state whose value time is a TTL or more before `t` is out ([`within_ttl`]): the
//! rule of the timeline index (`features::TimelineIndex::resolve`) and of the wide as-of join
//! (`lookup::asof`). The joins themselves live with what they join: timelines in
//! `features` and `lookup`, wide tables in `lookup::asof`.

/// Which knowledge a timeline (or a score) reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knowledge {
    /// As known at t (the default): a row counts from `max(event_time, known_at)` until
    /// `retracted_at`.
    #[default]
    AsKnown,
    /// As occurred (`--as-occurred`): the final record, back-dated: rows never retracted
    /// count from their event time; retracted rows (superseded or cancelled) never count.
    AsOccurred,
}

/// The times `t` at which a row is visible: `from <= t`, and `t < until` when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible<T> {
    /// The first time the row is visible.
    pub from: T,
    /// The time it stops being visible (its retraction), if it does.
    pub until: Option<T>,
}

impl<T: Ord + Copy> Visible<T> {
    /// Whether the row is visible at `t`.
    pub fn holds(self, t: T) -> bool {
        self.from <= t && self.until.is_none_or(|u| t < u)
    }
}

/// The rule "a row is visible at t", written once: the interval of `t` on which a row with
/// this event time, `known_at` and `retracted_at` is visible under `knowledge`; `None` when
/// it is never visible (as occurred: a retracted row). As known, the interval may be empty
/// (retracted before it was visible).
pub fn visibility<T: Ord + Copy>(
    event_time: T,
    known_at: T,
    retracted_at: Option<T>,
    knowledge: Knowledge,
) -> Option<Visible<T>> {
    match knowledge {
        Knowledge::AsKnown => Some(Visible {
            from: event_time.max(known_at),
            until: retracted_at,
        }),
        Knowledge::AsOccurred => retracted_at.is_none().then_some(Visible {
            from: event_time,
            until: None,
        }),
    }
}

/// Whether a row is visible at `t` under `knowledge` ([`visibility`]).
pub fn visible_at<T: Ord + Copy>(
    event_time: T,
    known_at: T,
    retracted_at: Option<T>,
    t: T,
    knowledge: Knowledge,
) -> bool {
    visibility(event_time, known_at, retracted_at, knowledge).is_some_and(|v| v.holds(t))
}

/// The position of the latest of `times` (ascending) at or before `t`: the state an as-of
/// read takes at `t`.
pub fn at_or_before(times: &[i64], t: i64) -> Option<usize> {
    times.partition_point(|&e| e <= t).checked_sub(1)
}

/// Whether a value of time `value_time` is still fresh at `t` under a TTL of `ttl_us`
/// microseconds: `t - value_time < ttl` (a value exactly `ttl` before `t` is out, one at `t`
/// is in), computed without overflow.
pub fn within_ttl(t: i64, value_time: i64, ttl_us: i64) -> bool {
    i128::from(t) - i128::from(value_time) < i128::from(ttl_us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_known_a_row_is_visible_from_its_later_time_until_its_retraction() {
        let v = visibility(10, 20, Some(30), Knowledge::AsKnown).unwrap();
        assert!(!v.holds(19) && v.holds(20) && v.holds(29) && !v.holds(30));
        assert!(!visible_at(10, 5, Some(8), 9, Knowledge::AsKnown));
        assert!(visible_at(10, 5, None, i64::MAX, Knowledge::AsKnown));
    }

    #[test]
    fn as_occurred_a_retracted_row_is_never_visible() {
        assert_eq!(visibility(10, 20, Some(30), Knowledge::AsOccurred), None);
        let v = visibility(10, 20, None, Knowledge::AsOccurred).unwrap();
        assert!(!v.holds(9) && v.holds(10) && v.holds(i64::MAX));
    }

    #[test]
    fn an_as_of_read_takes_the_latest_at_or_before_t_within_the_ttl() {
        assert_eq!(at_or_before(&[1, 3, 3, 5], 0), None);
        assert_eq!(at_or_before(&[1, 3, 3, 5], 3), Some(2));
        assert_eq!(at_or_before(&[1, 3, 3, 5], 9), Some(3));
        assert!(within_ttl(10, 10, 5) && within_ttl(10, 6, 5) && !within_ttl(10, 5, 5));
        assert!(!within_ttl(i64::MAX, i64::MIN, i64::MAX));
    }
}
