//! HL7 TS/DTM times and dates.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Parses the local part and offset of an HL7 TS/DTM:
/// `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]` (the first component of a TS).
pub(super) fn parse_local(raw: &str) -> Result<(NaiveDateTime, Option<FixedOffset>), String> {
    let s = raw.trim();
    let bad = || format!("`{s}` is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])");
    let (main, off) = match s.find(['+', '-']) {
        Some(i) => (s.get(..i).unwrap_or(""), s.get(i..)),
        None => (s, None),
    };
    let (digits, frac) = match main.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (main, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
    {
        return Err(bad());
    }
    let num = |a: usize, b: usize, default: u32| -> u32 {
        digits
            .get(a..b)
            .and_then(|x| x.parse().ok())
            .unwrap_or(default)
    };
    let micros = match frac {
        None => 0,
        Some(f) => {
            if digits.len() != 14
                || f.is_empty()
                || f.len() > 9
                || !f.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let mut six: String = f.chars().take(6).collect();
            while six.len() < 6 {
                six.push('0');
            }
            six.parse().map_err(|_| bad())?
        }
    };
    let year = i32::try_from(num(0, 4, 0)).map_err(|_| bad())?;
    let date = NaiveDate::from_ymd_opt(year, num(4, 6, 1), num(6, 8, 1)).ok_or_else(bad)?;
    let time = NaiveTime::from_hms_micro_opt(num(8, 10, 0), num(10, 12, 0), num(12, 14, 0), micros)
        .ok_or_else(bad)?;
    let offset = match off {
        None => None,
        Some(o) => Some(parse_offset(o).ok_or_else(bad)?),
    };
    Ok((date.and_time(time), offset))
}

/// `+HHMM`, `-HHMM` (or `+HH`).
pub(super) fn parse_offset(o: &str) -> Option<FixedOffset> {
    let (sign, digits) = match o.strip_prefix('+') {
        Some(d) => (1, d),
        None => (-1, o.strip_prefix('-')?),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let h: i32 = digits.get(0..2)?.parse().ok()?;
    let m: i32 = if digits.len() == 4 {
        digits.get(2..4)?.parse().ok()?
    } else {
        0
    };
    if h > 23 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// An HL7 TS/DTM as a UTC instant; without an offset, `default` is the source's zone.
pub(super) fn parse_ts(raw: &str, default: FixedOffset) -> Result<DateTime<Utc>, String> {
    let (local, offset) = parse_local(raw)?;
    offset
        .unwrap_or(default)
        .from_local_datetime(&local)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("`{}` is out of range", raw.trim()))
}

/// The calendar date written in an HL7 DT/TS (a birth date is a local date: no shift).
pub(super) fn parse_date(raw: &str) -> Result<NaiveDate, String> {
    parse_local(raw).map(|(local, _)| local.date())
}
