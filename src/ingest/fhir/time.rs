//! FHIR `date`, `dateTime` and `instant`, partial dates included.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};

use super::outcome::{Fault, Fx};
use crate::ingest::json::{Kind, Value};
use crate::ingest::Context;

/// Reads the FHIR date/dateTime/instant `key` of `v`, whose FHIRPath is `path`; absent is
/// `None`, unreadable is `bad_date`. The field name is only built on error: this runs for
/// every resource.
pub(super) fn time(
    v: Value<'_>,
    key: &str,
    path: &[&str],
    ctx: &Context,
) -> Fx<Option<DateTime<Utc>>> {
    let field = || {
        let mut f = path.join(".");
        f.push('.');
        f.push_str(key);
        f
    };
    match v.get(key).map(|v| (v, v.kind())) {
        None | Some((_, Kind::Null)) => Ok(None),
        Some((_, Kind::String(s))) => {
            parse_instant(s, ctx.default_offset)
                .map(Some)
                .ok_or_else(|| {
                    Fault::new(
                        field(),
                        "bad_date",
                        format!("{s:?} is not a FHIR date, dateTime or instant"),
                    )
                })
        }
        Some((other, _)) => Err(Fault::new(
            field(),
            "bad_date",
            format!("expected a date string, found {other}"),
        )),
    }
}

/// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD` at the start of `b`, returning the first day of
/// the period, the rest of the input, and whether the date was complete (only a complete
/// date may carry a time).
pub(super) fn date_prefix(b: &[u8]) -> Option<(NaiveDate, &[u8], bool)> {
    let year = digits(b, 0, 4)?;
    let (month, day, rest, full) = match b.get(4) {
        Some(b'-') => {
            let month = digits(b, 5, 2)?;
            match b.get(7) {
                Some(b'-') => (month, digits(b, 8, 2)?, b.get(10..)?, true),
                _ => (month, 1, b.get(7..)?, false),
            }
        }
        _ => (1, 1, b.get(4..)?, false),
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    Some((date, rest, full))
}

/// A FHIR `date` (partial dates give the first day of the period).
pub(super) fn parse_date(s: &str) -> Option<NaiveDate> {
    match date_prefix(s.trim().as_bytes())? {
        (d, [], _) => Some(d),
        _ => None,
    }
}

/// A FHIR `date`, `dateTime` or `instant` as the first instant it denotes. A value without
/// an offset is read in `default_offset`.
pub(super) fn parse_instant(s: &str, default_offset: FixedOffset) -> Option<DateTime<Utc>> {
    let (date, rest, full) = date_prefix(s.trim().as_bytes())?;
    let Some(rest) = rest.strip_prefix(b"T").filter(|_| full) else {
        return if rest.is_empty() {
            default_offset
                .from_local_datetime(&date.and_time(NaiveTime::MIN))
                .single()
                .map(|t| t.with_timezone(&Utc))
        } else {
            None
        };
    };
    let hour = digits(rest, 0, 2)?;
    if rest.get(2) != Some(&b':') {
        return None;
    }
    let minute = digits(rest, 3, 2)?;
    let mut i = 5;
    let (mut second, mut micro) = (0, 0);
    if rest.get(i) == Some(&b':') {
        second = digits(rest, i + 1, 2)?;
        i += 3;
        if rest.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while rest.get(i).is_some_and(u8::is_ascii_digit) {
                if i - start < 6 {
                    micro = micro * 10 + u32::from(rest.get(i)? - b'0');
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            for _ in (i - start).min(6)..6 {
                micro *= 10;
            }
        }
    }
    if second > 59 {
        return None;
    }
    let naive = date.and_time(NaiveTime::from_hms_micro_opt(hour, minute, second, micro)?);
    let offset = match rest.get(i..)? {
        [] => default_offset,
        [b'Z'] | [b'z'] => FixedOffset::east_opt(0)?,
        [sign @ (b'+' | b'-'), tail @ ..] if tail.len() == 5 && tail.get(2) == Some(&b':') => {
            let hours = digits(tail, 0, 2)?;
            let minutes = digits(tail, 3, 2)?;
            if hours > 14 || minutes > 59 {
                return None;
            }
            let secs = i32::try_from(hours * 3600 + minutes * 60).ok()?;
            FixedOffset::east_opt(if *sign == b'-' { -secs } else { secs })?
        }
        _ => return None,
    };
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// `len` ASCII digits of `b` starting at `at`, as a number.
pub(super) fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let part = b.get(at..at.checked_add(len)?)?;
    part.iter().try_fold(0u32, |acc, d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}
