//! Text-to-value conversions used by mappings: times and zones, numbers, file-name globs and
//! `{column}` templates. Each is a small pure function so the rules documented in
//! `docs/mapping.md` can be tested one by one.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// How a time column's text is read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimeFormat {
    /// RFC 3339, then common ISO 8601 shapes with or without `T` and fractions, then a date.
    Auto,
    /// RFC 3339 only (an offset or `Z` is required).
    Rfc3339,
    /// `YYYY-MM-DD`, at midnight in the column's zone.
    Date,
    /// chrono `strftime` formats, tried in order.
    Formats(Vec<String>),
}

/// Naive shapes `Auto` tries after RFC 3339, in order.
const AUTO_NAIVE: [&str; 4] = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// Shapes with an offset `Auto` tries (RFC 3339 with a space instead of `T`, or `+hhmm`).
const AUTO_OFFSET: [&str; 3] = [
    "%Y-%m-%d %H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
];

impl TimeFormat {
    /// Resolves `"auto"`, `"rfc3339"`, `"date"` or a format (list). A format chrono cannot
    /// read is an error, reported when the mapping is loaded rather than on every row.
    pub(crate) fn parse(formats: Vec<String>) -> Result<TimeFormat, String> {
        if let [one] = formats.as_slice() {
            match one.as_str() {
                "auto" => return Ok(TimeFormat::Auto),
                "rfc3339" => return Ok(TimeFormat::Rfc3339),
                "date" => return Ok(TimeFormat::Date),
                _ => {}
            }
        }
        if formats.is_empty() {
            return Err("the list of time formats is empty".into());
        }
        for f in &formats {
            if !f.contains('%') {
                return Err(format!(
                    "time format {f:?} is not \"auto\", \"rfc3339\", \"date\" or a chrono format"
                ));
            }
            if StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
                return Err(format!("time format {f:?} is not a valid chrono format"));
            }
        }
        Ok(TimeFormat::Formats(formats))
    }
}

/// Parses a zone: `UTC`, `Z`, or a fixed offset `+hh:mm`, `-hhmm`, `+hh`. Named zones (with
/// daylight saving) are refused: a fixed offset cannot be wrong twice a year silently.
pub(crate) fn parse_zone(s: &str) -> Result<FixedOffset, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let bad = || {
        format!("zone {s:?} is not UTC or a fixed offset like \"-05:00\" (named zones are not supported)")
    };
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !(digits.len() == 2 || digits.len() == 4) {
        return Err(bad());
    }
    let h: i32 = digits[..2].parse().map_err(|_| bad())?;
    let m: i32 = if digits.len() == 4 {
        digits[2..].parse().map_err(|_| bad())?
    } else {
        0
    };
    if h > 23 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

fn local(ndt: NaiveDateTime, zone: FixedOffset) -> Option<DateTime<Utc>> {
    zone.from_local_datetime(&ndt)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

fn midnight(d: NaiveDate, zone: FixedOffset) -> Option<DateTime<Utc>> {
    local(d.and_hms_opt(0, 0, 0)?, zone)
}

/// Reads an ISO 8601 text as written by Ward's Parquet reader (and by most exports): RFC 3339,
/// a naive date-time in `zone`, or a date at midnight in `zone`.
fn parse_iso(s: &str, zone: FixedOffset) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in AUTO_OFFSET {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for f in AUTO_NAIVE {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return local(t, zone);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| midnight(d, zone))
}

fn has_offset(format: &str) -> bool {
    format.contains("%z") || format.contains("%:z") || format.contains("%#z")
}

/// Parses a time. `typed` marks text that came from a typed (Parquet timestamp or date)
/// column: it is ISO 8601 whatever the mapping's formats say, since the formats describe how
/// a CSV export spells times, not how Ward prints a typed value.
pub(crate) fn parse_time(
    s: &str,
    format: &TimeFormat,
    zone: FixedOffset,
    typed: bool,
) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if typed {
        return parse_iso(s, zone);
    }
    match format {
        TimeFormat::Auto => parse_iso(s, zone),
        TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        TimeFormat::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| midnight(d, zone)),
        TimeFormat::Formats(fs) => fs.iter().find_map(|f| {
            if has_offset(f) {
                if let Ok(t) = DateTime::parse_from_str(s, f) {
                    return Some(t.with_timezone(&Utc));
                }
            }
            if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
                return local(t, zone);
            }
            NaiveDate::parse_from_str(s, f)
                .ok()
                .and_then(|d| midnight(d, zone))
        }),
    }
}

/// Parses a calendar date (a `date32` column such as `birth_date`). A date-time is accepted
/// and its date taken as written (in the source's own wall clock, not shifted to UTC: a birth
/// date does not move with time zones).
pub(crate) fn parse_date(s: &str, format: &TimeFormat, typed: bool) -> Option<NaiveDate> {
    let s = s.trim();
    let iso = |s: &str| {
        let head = s.get(..10)?;
        NaiveDate::parse_from_str(head, "%Y-%m-%d").ok()
    };
    if typed {
        return iso(s);
    }
    match format {
        TimeFormat::Auto | TimeFormat::Rfc3339 | TimeFormat::Date => iso(s),
        TimeFormat::Formats(fs) => fs.iter().find_map(|f| {
            NaiveDate::parse_from_str(s, f)
                .ok()
                .or_else(|| NaiveDateTime::parse_from_str(s, f).ok().map(|t| t.date()))
                .or_else(|| DateTime::parse_from_str(s, f).ok().map(|t| t.date_naive()))
        }),
    }
}

/// Parses a finite number; `decimal` is the decimal separator (`.` or `,`). Thousands
/// separators are not accepted: `1,234` with `decimal = "."` is an error, not 1234, because
/// guessing would turn a European `1,5` into 15.
pub(crate) fn parse_number(s: &str, decimal: char) -> Option<f64> {
    let t = s.trim();
    let v: f64 = if decimal == '.' {
        t.parse().ok()?
    } else {
        if t.contains('.') {
            return None;
        }
        t.replace(decimal, ".").parse().ok()?
    };
    v.is_finite().then_some(v)
}

/// The name a file is matched by: its last path component, without a `.gz` suffix (the
/// caller decompresses gzip before parsing).
pub(crate) fn match_name(name: &str) -> &str {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.len().checked_sub(3) {
        Some(cut) if base.is_char_boundary(cut) && base[cut..].eq_ignore_ascii_case(".gz") => {
            &base[..cut]
        }
        _ => base,
    }
}

/// Matches `name` against a glob with `*` (any run of characters) and `?` (one character),
/// ignoring ASCII case: MIMIC-III ships `ADMISSIONS.csv`, MIMIC-IV `admissions.csv`.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let n: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    // Iterative matcher with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A piece of a `{column}` template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    /// Literal text.
    Lit(String),
    /// A source column's value.
    Col(String),
    /// `{$file}`: the file's name as matched.
    File,
    /// `{$line}`: the record's line (CSV) or row (Parquet) number.
    Line,
}

/// Parses a template: `{NAME}` is a column, `{{` and `}}` are literal braces, `{$file}` and
/// `{$line}` are the record's position.
pub(crate) fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => {
                            return Err(format!("template {t:?} has an unclosed '{{'"));
                        }
                        Some(c) => name.push(c),
                    }
                }
                if name.is_empty() {
                    return Err(format!("template {t:?} has an empty '{{}}'"));
                }
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(match name.as_str() {
                    "$file" => Piece::File,
                    "$line" => Piece::Line,
                    _ if name.starts_with('$') => {
                        return Err(format!(
                            "template {t:?}: unknown {{{name}}} (only {{$file}} and {{$line}})"
                        ));
                    }
                    _ => Piece::Col(name),
                });
            }
            '}' => return Err(format!("template {t:?} has an unmatched '}}'")),
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    if !out.iter().any(|p| !matches!(p, Piece::Lit(_))) {
        return Err(format!(
            "template {t:?} names no column (use `value` for a constant)"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn auto_times_read_rfc3339_naive_and_dates() {
        let z = parse_zone("-05:00").unwrap();
        let f = TimeFormat::Auto;
        assert_eq!(
            parse_time("2023-01-27T16:17:47Z", &f, z, false),
            Some(utc("2023-01-27T16:17:47Z"))
        );
        assert_eq!(
            parse_time("2180-05-06 22:23:00", &f, z, false),
            Some(utc("2180-05-07T03:23:00Z"))
        );
        assert_eq!(
            parse_time("2020-01-01 10:00:00+02:00", &f, z, false),
            Some(utc("2020-01-01T08:00:00Z"))
        );
        assert_eq!(
            parse_time("2020-01-01", &f, z, false),
            Some(utc("2020-01-01T05:00:00Z"))
        );
        assert_eq!(parse_time("01/02/2020", &f, z, false), None);
    }

    #[test]
    fn explicit_formats_are_tried_in_order() {
        let f = TimeFormat::parse(vec!["%m/%d/%Y %H:%M".into(), "%m/%d/%Y".into()]).unwrap();
        let z = parse_zone("UTC").unwrap();
        assert_eq!(
            parse_time("01/02/2020 03:04", &f, z, false),
            Some(utc("2020-01-02T03:04:00Z"))
        );
        assert_eq!(
            parse_time("01/02/2020", &f, z, false),
            Some(utc("2020-01-02T00:00:00Z"))
        );
        assert_eq!(parse_time("2020-01-02", &f, z, false), None);
        // A typed (Parquet) value ignores the CSV formats.
        assert_eq!(
            parse_time("2020-01-02T00:00:00Z", &f, z, true),
            Some(utc("2020-01-02T00:00:00Z"))
        );
        let with_offset = TimeFormat::parse(vec!["%Y%m%d%H%M%z".into()]).unwrap();
        assert_eq!(
            parse_time("202001020304-0500", &with_offset, z, false),
            Some(utc("2020-01-02T08:04:00Z"))
        );
    }

    #[test]
    fn keywords_and_bad_formats() {
        assert_eq!(
            TimeFormat::parse(vec!["rfc3339".into()]).unwrap(),
            TimeFormat::Rfc3339
        );
        assert_eq!(
            TimeFormat::parse(vec!["date".into()]).unwrap(),
            TimeFormat::Date
        );
        assert!(TimeFormat::parse(vec!["%Y-%m-%Q".into()]).is_err());
        assert!(TimeFormat::parse(vec!["yyyy-mm-dd".into()]).is_err());
        assert!(TimeFormat::parse(vec![]).is_err());
        let z = parse_zone("UTC").unwrap();
        assert_eq!(
            parse_time("2020-01-02 00:00:00", &TimeFormat::Rfc3339, z, false),
            None
        );
        assert_eq!(
            parse_time("2020-01-02", &TimeFormat::Date, z, false),
            Some(utc("2020-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn dates_keep_the_written_day() {
        let d = NaiveDate::from_ymd_opt(2014, 10, 6).unwrap();
        assert_eq!(parse_date("2014-10-06", &TimeFormat::Auto, false), Some(d));
        assert_eq!(
            parse_date("2014-10-06T23:30:00-05:00", &TimeFormat::Auto, false),
            Some(d)
        );
        let f = TimeFormat::parse(vec!["%d.%m.%Y".into()]).unwrap();
        assert_eq!(parse_date("06.10.2014", &f, false), Some(d));
        assert_eq!(parse_date("2014-10-06", &f, true), Some(d));
        assert_eq!(parse_date("2014-1", &TimeFormat::Auto, false), None);
        assert_eq!(parse_date("ab€cdefghijk", &TimeFormat::Auto, false), None);
    }

    #[test]
    fn zones() {
        assert_eq!(parse_zone("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_zone("-05:00").unwrap().local_minus_utc(), -5 * 3600);
        assert_eq!(
            parse_zone("+0530").unwrap().local_minus_utc(),
            5 * 3600 + 1800
        );
        assert_eq!(parse_zone("+02").unwrap().local_minus_utc(), 2 * 3600);
        for bad in ["America/New_York", "+25:00", "5", "", "+5:0"] {
            assert!(parse_zone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(" 7.5 ", '.'), Some(7.5));
        assert_eq!(parse_number("7,5", ','), Some(7.5));
        assert_eq!(parse_number("1,234", '.'), None);
        assert_eq!(parse_number("1.5", ','), None);
        assert_eq!(parse_number("NaN", '.'), None);
        assert_eq!(parse_number("inf", '.'), None);
        assert_eq!(parse_number("<0.5", '.'), None);
        assert_eq!(parse_number("-1e3", '.'), Some(-1000.0));
    }

    #[test]
    fn globs_and_names() {
        assert_eq!(match_name("/data/x/ADMISSIONS.csv.gz"), "ADMISSIONS.csv");
        assert_eq!(match_name("C:\\x\\labevents.csv"), "labevents.csv");
        assert_eq!(match_name(".gz"), "");
        assert!(glob_match("admissions.csv", "ADMISSIONS.csv"));
        assert!(glob_match("*.csv", "a.csv"));
        assert!(glob_match("lab*_part?.csv", "labevents_part1.csv"));
        assert!(!glob_match("lab*_part?.csv", "labevents_part12.csv"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("*.csv", "a.parquet"));
        assert!(glob_match("**a*b*c", "xxaybzc"));
    }

    #[test]
    fn templates() {
        assert_eq!(
            parse_template("{SUBJECT_ID}-{HADM_ID}").unwrap(),
            vec![
                Piece::Col("SUBJECT_ID".into()),
                Piece::Lit("-".into()),
                Piece::Col("HADM_ID".into())
            ]
        );
        assert_eq!(
            parse_template("{{x}}{$file}:{$line}").unwrap(),
            vec![
                Piece::Lit("{x}".into()),
                Piece::File,
                Piece::Lit(":".into()),
                Piece::Line
            ]
        );
        for bad in ["{a", "a}", "{}", "plain", "{$row}", "{a{b}"] {
            assert!(parse_template(bad).is_err(), "{bad}");
        }
    }
}
