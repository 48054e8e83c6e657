//! Expressions (`{ expr = "..." }`).

use super::super::expr::{Cells, EvalError, Expr, Reading};
use super::super::value::TimeFormat;
use super::*;

/// One record for direct evaluation: (column, cell); a column absent here is null.
struct Cols<'a>(&'a [(&'a str, &'a str)]);

impl Cells for Cols<'_> {
    fn cell(&self, column: &str) -> Option<(&str, bool)> {
        self.0
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| (*v, false))
    }
}

fn reading() -> Reading<'static> {
    Reading {
        time: &TimeFormat::Auto,
        zone: FixedOffset::east_opt(0).unwrap(),
        decimal: '.',
    }
}

fn eval_as(kind: Kind, text: &str, row: &[(&str, &str)]) -> Result<Option<String>, EvalError> {
    let e = Expr::parse(text, kind).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    e.eval_text(&Cols(row), reading())
        .map(|v| v.map(|(s, _)| s))
}

/// Evaluates into a text column; `None` is null.
fn ev(text: &str, row: &[(&str, &str)]) -> Option<String> {
    eval_as(Kind::Text, text, row).unwrap_or_else(|e| panic!("{text:?}: {e:?}"))
}

fn ev_err(text: &str, row: &[(&str, &str)]) -> EvalError {
    match eval_as(Kind::Text, text, row) {
        Err(e) => e,
        Ok(v) => panic!("{text:?}: expected an error, got {v:?}"),
    }
}

fn parse_err(text: &str, kind: Kind) -> (usize, String) {
    match Expr::parse(text, kind) {
        Err(e) => (e.pos, e.message),
        Ok(e) => panic!("{text:?}: expected a parse error, got {e:?}"),
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn arithmetic_precedence_and_literals() {
    let row = [("a", "5"), ("b", "2.5"), ("neg", "-3")];
    assert_eq!(ev("1 + 2 * 3", &[]), s("7"));
    assert_eq!(ev("(1 + 2) * 3", &[]), s("9"));
    assert_eq!(ev("10 - 4 - 3", &[]), s("3"), "left associative");
    assert_eq!(ev("12 / 4 / 3", &[]), s("1"));
    assert_eq!(ev("7 / 2", &[]), s("3.5"));
    assert_eq!(ev("a * b", &row), s("12.5"));
    assert_eq!(ev("-a + 1", &row), s("-4"));
    assert_eq!(ev("2 - -1", &[]), s("3"));
    assert_eq!(ev("a - neg", &row), s("8"));
    assert_eq!(ev(".5 + 0.25", &[]), s("0.75"));
    assert_eq!(ev("number('42') + 1", &[]), s("43"));
    assert_eq!(ev("number(a) / 10", &row), s("0.5"));
    // Column text around a number is trimmed, as for a numeric column.
    assert_eq!(ev("x + 1", &[("x", " 41 ")]), s("42"));
    // Into a number column the result is the number itself.
    assert_eq!(eval_as(Kind::Number, "a * 2", &row).unwrap(), s("10"));
    assert_eq!(eval_as(Kind::Number, "a", &row).unwrap(), s("5"));
}

#[test]
fn concatenation_and_text() {
    let row = [("first", "Ada"), ("last", "Lovelace"), ("n", "7")];
    assert_eq!(ev("first || ' ' || last", &row), s("Ada Lovelace"));
    assert_eq!(ev("'id-' || n", &row), s("id-7"));
    assert_eq!(
        ev("'x' || 1 + 2", &[]),
        s("x3"),
        "'+' binds tighter than '||'"
    );
    assert_eq!(ev("'x' || 2.50", &[]), s("x2.5"));
    assert_eq!(ev("'it''s' || \"a \"\"b\"\"\"", &[]), s("it'sa \"b\""));
    assert_eq!(ev("text(n + 1) || '!'", &row), s("8!"));
    assert_eq!(ev("'d=' || date(2020, 1, 2)", &[]), s("d=2020-01-02"));
    assert_eq!(
        ev(
            "`first` || `two words`",
            &[("first", "a"), ("two words", "b")]
        ),
        s("ab")
    );
    assert_eq!(ev("first", &row), s("Ada"), "a bare column is its text");
}

#[test]
fn dates_parts_and_date_arithmetic() {
    let row = [
        ("d", "2180-05-06"),
        ("t", "2180-05-06 22:23:00"),
        ("u", "2180-05-05 10:23:00"),
        ("y", "2180"),
        ("age", "52"),
    ];
    assert_eq!(ev("date(y - age, 1, 1)", &row), s("2128-01-01"));
    assert_eq!(ev("date(2020, 2, 29)", &[]), s("2020-02-29"));
    assert_eq!(ev("year(d)", &row), s("2180"));
    assert_eq!(ev("month(d)", &row), s("5"));
    assert_eq!(
        ev("day(t)", &row),
        s("6"),
        "a date-time column read as a date"
    );
    assert_eq!(ev("year(datetime(t) + 0.1)", &row), s("2180"));
    assert_eq!(ev("date(d) + 30", &row), s("2180-06-05"));
    assert_eq!(ev("30 + date(d)", &row), s("2180-06-05"));
    assert_eq!(ev("date(d) - 6", &row), s("2180-04-30"));
    assert_eq!(ev("date(d) - date('2180-01-01')", &row), s("126"));
    assert_eq!(ev("datetime(t) - datetime(u)", &row), s("1.5"));
    assert_eq!(ev("datetime(t) + 0.25", &row), s("2180-05-07T04:23:00"));
    assert_eq!(ev("datetime(t) - date(t)", &row), s("0.9326388888888889"));
    assert_eq!(ev("date(t)", &row), s("2180-05-06"));
    assert_eq!(ev("datetime(d)", &row), s("2180-05-06T00:00:00"));
    assert_eq!(ev("add_days(d, -6)", &row), s("2180-04-30"));
    assert_eq!(ev("add_months(d, -5)", &row), s("2179-12-06"));
    assert_eq!(
        ev("add_months(date('2020-01-31'), 1)", &[]),
        s("2020-02-29")
    );
    assert_eq!(ev("add_years(date('2020-02-29'), 1)", &[]), s("2021-02-28"));
    assert_eq!(ev("add_years(d, 0 - age)", &row), s("2128-05-06"));
    assert_eq!(
        ev("add_years(datetime(t), 1)", &row),
        s("2181-05-06T22:23:00")
    );
    // A date into a time column, and a date-time into a date column.
    assert_eq!(
        eval_as(Kind::Time, "date(d) + 1", &row).unwrap(),
        s("2180-05-07T00:00:00")
    );
    assert_eq!(
        eval_as(Kind::Date, "datetime(t)", &row).unwrap(),
        s("2180-05-06")
    );
    assert_eq!(eval_as(Kind::Date, "t", &row).unwrap(), s("2180-05-06"));
}

#[test]
fn columns_in_dates_are_read_with_the_time_formats_and_zone() {
    let formats = TimeFormat::parse(vec!["%d/%m/%Y %H:%M".into(), "%d/%m/%Y".into()]).unwrap();
    let r = Reading {
        time: &formats,
        zone: FixedOffset::west_opt(5 * 3600).unwrap(),
        decimal: ',',
    };
    let e = |t: &str| Expr::parse(t, Kind::Text).unwrap();
    let row = Cols(&[("d", "06/05/2180"), ("t", "06/05/2180 22:23"), ("x", "1,5")]);
    let text = |t: &str| e(t).eval_text(&row, r).unwrap().map(|(s, _)| s);
    assert_eq!(text("year(d)"), s("2180"));
    assert_eq!(
        text("datetime(t)"),
        s("2180-05-06T22:23:00"),
        "wall clock kept"
    );
    assert_eq!(text("x * 2"), s("3"), "decimal comma");
    // A typed (Parquet) instant is read as ISO and shown in the zone; a date-time result
    // for a time column is flagged typed (ISO, whatever the column's formats).
    struct Typed;
    impl Cells for Typed {
        fn cell(&self, _: &str) -> Option<(&str, bool)> {
            Some(("2180-05-07T03:23:00Z", true))
        }
    }
    let v = Expr::parse("datetime(t)", Kind::Time)
        .unwrap()
        .eval_text(&Typed, r)
        .unwrap();
    assert_eq!(v, Some(("2180-05-06T22:23:00".to_string(), true)));
}

#[test]
fn null_propagates_except_through_coalesce() {
    let row = [("a", "1"), ("d", "2020-01-02"), ("name", "x")];
    for t in [
        "missing + 1",
        "1 - missing",
        "missing * 2",
        "2 / missing",
        "-missing",
        "missing || 'x'",
        "'x' || missing",
        "year(missing)",
        "date(missing, 1, 1)",
        "date(2020, missing, 1)",
        "date(missing)",
        "datetime(missing)",
        "date(d) + missing",
        "add_years(missing, 1)",
        "add_days(d, missing)",
        "date(d) - date(missing)",
        "number(missing)",
        "text(missing)",
        "null",
        "null + 1",
        "coalesce(missing, null)",
    ] {
        assert_eq!(ev(t, &row), None, "{t}");
    }
    assert_eq!(ev("coalesce(missing, a, 3)", &row), s("1"));
    assert_eq!(ev("coalesce(missing, null, 3) + 1", &row), s("4"));
    assert_eq!(ev("coalesce(missing, name)", &row), s("x"));
    assert_eq!(
        ev("coalesce(date(missing), date(d))", &row),
        s("2020-01-02")
    );
    assert_eq!(ev("coalesce(missing, date(d) + 1)", &row), s("2020-01-03"));
    assert_eq!(
        ev("coalesce(datetime(missing), date(d))", &row),
        s("2020-01-02T00:00:00")
    );
    // An empty cell is null (the CSV reader's `null` list makes it so): `Cols` leaves it out.
    assert_eq!(ev("coalesce(a, missing)", &row), s("1"));
}

#[test]
fn record_errors_name_the_column_and_the_value() {
    let e = ev_err("a + 1", &[("a", "abc")]);
    assert_eq!((e.column.as_deref(), e.reason), (Some("a"), "bad_number"));
    assert!(
        e.detail.contains("a = \"abc\"") && e.detail.contains("character 1"),
        "{}",
        e.detail
    );
    let e = ev_err("date(y - age, 1, 1)", &[("y", "2180"), ("age", "fifty")]);
    assert_eq!((e.column.as_deref(), e.reason), (Some("age"), "bad_number"));
    assert!(e.detail.contains("character 10"), "{}", e.detail);
    let e = ev_err("1 / (a - a)", &[("a", "2")]);
    assert_eq!((e.column, e.reason), (None, "bad_expression"));
    assert!(e.detail.contains("division by zero"), "{}", e.detail);
    let e = ev_err("date(2020, 2, 30)", &[]);
    assert_eq!(e.reason, "bad_date");
    assert!(e.detail.contains("date(2020, 2, 30)"), "{}", e.detail);
    let e = ev_err("date(y, 13, 1)", &[("y", "2020")]);
    assert_eq!(e.reason, "bad_date");
    let e = ev_err("date(y, 1, 1)", &[("y", "2020.5")]);
    assert_eq!(e.reason, "bad_date");
    let e = ev_err("date(y, 1, 1)", &[("y", "1e300")]);
    assert_eq!(e.reason, "bad_date");
    let e = ev_err("year(d)", &[("d", "yesterday")]);
    assert_eq!((e.column.as_deref(), e.reason), (Some("d"), "bad_date"));
    assert!(e.detail.contains("\"yesterday\""), "{}", e.detail);
    let e = ev_err("datetime(d)", &[("d", "25:99")]);
    assert_eq!((e.column.as_deref(), e.reason), (Some("d"), "bad_date"));
    let e = ev_err("date(d) + 1.5", &[("d", "2020-01-01")]);
    assert_eq!(e.reason, "bad_expression");
    let e = ev_err("add_years(d, n)", &[("d", "2020-01-01"), ("n", "1e9")]);
    assert_eq!(e.reason, "bad_expression");
    let e = ev_err("date(d) + n", &[("d", "2020-01-01"), ("n", "99999999999")]);
    assert_eq!(e.reason, "bad_expression");
    let e = ev_err("a * a", &[("a", "1e200")]);
    assert_eq!(e.reason, "bad_expression", "overflow is not a number");
    let e = ev_err("number(a)", &[("a", "NaN")]);
    assert_eq!(e.reason, "bad_number");
}

#[test]
fn parse_and_type_errors_have_positions() {
    let deep = format!("{}1{}", "(".repeat(80), ")".repeat(80));
    let long_chain = vec!["1"; 100].join(" + ");
    let minus = format!("{}1", "-".repeat(100));
    let cases: Vec<(&str, Kind, usize, &str)> = vec![
        ("", Kind::Text, 1, "empty"),
        ("   ", Kind::Text, 1, "empty"),
        ("1 +", Kind::Text, 4, "found the end"),
        ("1 2", Kind::Text, 3, "expected an operator"),
        ("date(a, 1 1)", Kind::Text, 11, "expected ',' or ')'"),
        (
            "(a + 1",
            Kind::Text,
            7,
            "expected ')' to close the '(' at character 1",
        ),
        ("a + 1)", Kind::Text, 6, "expected an operator"),
        ("dat(a)", Kind::Text, 1, "unknown function \"dat\""),
        ("'abc", Kind::Text, 1, "unterminated text"),
        ("`abc", Kind::Text, 1, "unterminated column"),
        ("a | b", Kind::Text, 3, "'||'"),
        ("a $ b", Kind::Text, 3, "unexpected character '$'"),
        ("1.", Kind::Text, 3, "digit must follow"),
        ("12abc", Kind::Text, 3, "in a number"),
        ("f(,)", Kind::Text, 3, "expected a number"),
        (
            "year(1)",
            Kind::Text,
            6,
            "year needs a date, found a number",
        ),
        ("'a' + 1", Kind::Text, 1, "found text"),
        ("date(a) * 2", Kind::Text, 1, "'*' needs numbers"),
        ("2 - date(a)", Kind::Text, 5, "'-' subtracts"),
        ("date(a) + date(b)", Kind::Text, 11, "'+' adds"),
        (
            "coalesce(1, 'x')",
            Kind::Text,
            13,
            "coalesce mixes a number and text",
        ),
        ("coalesce()", Kind::Text, 1, "at least one"),
        ("date(1, 2)", Kind::Text, 1, "date takes one argument"),
        ("year(a, b)", Kind::Text, 1, "takes one argument"),
        ("add_days(1, 2)", Kind::Text, 10, "needs a date first"),
        (
            "add_days(a, date(b))",
            Kind::Text,
            13,
            "needs a number second",
        ),
        ("number(date(a))", Kind::Text, 8, "number needs text"),
        ("date('2020-02-30')", Kind::Text, 6, "not a date"),
        ("number('x1')", Kind::Text, 8, "not a number"),
        (
            "date(a)",
            Kind::Number,
            1,
            "gives a date, but the target column holds numbers",
        ),
        ("a + 1", Kind::Date, 1, "gives a number"),
        ("1", Kind::Time, 1, "gives a number"),
        (&deep, Kind::Text, 65, "nested more than 64"),
        (&long_chain, Kind::Text, 255, "nested more than 64"),
        (&minus, Kind::Text, 65, "nested more than 64"),
    ];
    for (text, kind, pos, message) in cases {
        let (p, m) = parse_err(text, kind);
        assert!(m.contains(message), "{text:?}: {m:?} lacks {message:?}");
        assert_eq!(p, pos, "{text:?}: {m}");
    }
    // Near the bound is fine.
    let ok = format!("{}1{}", "(".repeat(40), ")".repeat(40));
    assert_eq!(ev(&ok, &[]), s("1"));
    // Columns are recorded with their first position; names are case-sensitive here and
    // matched like `column` sources (exactly, else ignoring case) on the record.
    let e = Expr::parse("coalesce(b, a) || a || `x y`", Kind::Text).unwrap();
    let cols: Vec<(&str, usize)> = e.columns().iter().map(|(c, p)| (c.as_str(), *p)).collect();
    assert_eq!(cols, [("b", 10), ("a", 13), ("x y", 24)]);
    // Function names and `null` ignore case.
    assert_eq!(ev("COALESCE(NULL, Year(Date(2020, 1, 1)))", &[]), s("2020"));
}

const MIMICISH: &str = r#"
zone = "-05:00"
[[file]]
match = "patients.csv"
[[file.target]]
table = "patients"
[file.target.columns]
patient_id = "subject_id"
birth_date = { expr = "date(anchor_year - anchor_age, 1, 1)" }
death_time = { expr = "add_days(dod, 1)" }
given_name = { expr = "coalesce(nick, first) || '!'" }
"#;

#[test]
fn expressions_in_a_mapping_feed_rows_and_quarantine_bad_records() {
    let p = run(
        MIMICISH,
        &[(
            "patients.csv",
            "subject_id,anchor_age,anchor_year,dod,first,nick\n\
             1,52,2180,,Ada,\n\
             2,,2180,2181-01-03,Bob,Bobby\n\
             3,abc,2180,,Cy,\n\
             4,70,2181,2181-01-03T10:00:00,Di,\n",
        )],
    );
    let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let pats: Vec<_> = p
        .tables
        .patients
        .iter()
        .map(|x| {
            (
                x.patient_id.as_str(),
                x.birth_date,
                x.death_time,
                x.given_name.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        pats,
        [
            ("1", Some(d(2128, 1, 1)), None, Some("Ada!")),
            ("2", None, Some(utc("2181-01-04T05:00:00Z")), Some("Bobby!")),
            (
                "4",
                Some(d(2111, 1, 1)),
                Some(utc("2181-01-04T05:00:00Z")),
                Some("Di!")
            ),
        ]
    );
    let b = only_bad(&p);
    assert_eq!(
        (b.location.record, b.field.as_deref(), b.reason.as_str()),
        (4, Some("anchor_age"), "bad_number")
    );
    assert!(
        b.detail.contains("patients.birth_date") && b.detail.contains("\"abc\""),
        "{}",
        b.detail
    );
    assert_eq!(b.raw, "3,abc,2180,,Cy,");

    // `invalid = "null"` keeps the record with a null value instead.
    let lenient = MIMICISH.replace("1, 1)\" }", "1, 1)\", invalid = \"null\" }");
    let p = run(
        &lenient,
        &[(
            "patients.csv",
            "subject_id,anchor_age,anchor_year,dod,first,nick\n3,abc,2180,,Cy,\n",
        )],
    );
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    assert_eq!(p.tables.patients[0].birth_date, None);

    // A file without a column the expression reads: every record is quarantined as for
    // a missing source column.
    let p = run(
        MIMICISH,
        &[(
            "patients.csv",
            "subject_id,anchor_year,dod,first,nick\n1,2180,,A,\n",
        )],
    );
    let b = only_bad(&p);
    assert_eq!(
        (b.field.as_deref(), b.reason.as_str()),
        (Some("anchor_age"), "missing_column")
    );
}

#[test]
fn expressions_into_numbers_with_maps_defaults_and_decimal_commas() {
    let toml = r#"
[[file]]
match = "labs.csv"
[[file.target]]
table = "observations"
[file.target.columns]
observation_id = { expr = "id || '-' || seq" }
patient_id = "pid"
code_system = { value = "LOINC" }
code = { value = "2093-3" }
value_num = { expr = "v * 18", decimal = "," }
unit = { expr = "coalesce(u, 'mmol/L')", map = { "mmol/L" = "mg/dL" } }
effective_time = { expr = "datetime(t) + 1 / 24" }
"#;
    let p = run(
        toml,
        &[(
            "labs.csv",
            "id,seq,pid,v,u,t\nA,1,p1,\"5,5\",,2020-01-01 10:00:00\nA,2,p1,1,x,2020-01-01\n",
        )],
    );
    assert!(p.bad.is_empty(), "{:?}", p.bad);
    let o: Vec<_> = p
        .tables
        .observations
        .iter()
        .map(|o| {
            (
                o.observation_id.as_str(),
                o.value_num,
                o.unit.as_deref(),
                o.effective_time,
            )
        })
        .collect();
    assert_eq!(
        o,
        [
            (
                "A-1",
                Some(99.0),
                Some("mg/dL"),
                utc("2020-01-01T11:00:00Z")
            ),
            ("A-2", Some(18.0), Some("x"), utc("2020-01-01T01:00:00Z")),
        ]
    );
    // Division by zero in a record: quarantined, named by the target column.
    let p = run(
        &toml.replace("v * 18", "18 / v"),
        &[("labs.csv", "id,seq,pid,v,u,t\nA,1,p1,0,,2020-01-01\n")],
    );
    let b = only_bad(&p);
    assert_eq!(
        (b.field.as_deref(), b.reason.as_str()),
        (Some("value_num"), "bad_expression")
    );
    assert!(
        b.detail
            .contains("observations.value_num: division by zero"),
        "{}",
        b.detail
    );
}

#[test]
fn bad_expressions_fail_when_the_mapping_loads() {
    // The line of the expression, the target column, the position.
    let (loc, field, reason) = load_err(&format!(
        "{PATIENTS}birth_date = {{ expr = \"date(anchor_year - anchor_age, 1 1)\" }}\n"
    ));
    assert_eq!(loc, "m.toml:8");
    assert_eq!(field, "file[1].target[1].columns.birth_date");
    assert!(
        reason.starts_with(
            "expression \"date(anchor_year - anchor_age, 1 1)\": at character 34: expected ','"
        ),
        "{reason}"
    );
    // In a multi-line string, the line of the character at fault.
    let (loc, _, reason) = load_err(&format!(
        "{PATIENTS}given_name = {{ expr = \"\"\"\ncoalesce(a,\n  b) ||\n  frist(c)\"\"\" }}\n"
    ));
    assert_eq!(loc, "m.toml:11", "{reason}");
    assert!(reason.contains("unknown function \"frist\""), "{reason}");
    // Types are checked against the target column.
    let (_, field, reason) = load_err(&format!(
        "{PATIENTS}birth_date = {{ expr = \"year(d) + 1\" }}\n"
    ));
    assert_eq!(field, "file[1].target[1].columns.birth_date");
    assert!(
        reason.contains("gives a number, but the target column holds dates"),
        "{reason}"
    );
    // `expr` is one source among the others.
    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}zip = {{ expr = \"z\", column = \"z\" }}\n"
    ));
    assert!(
        reason.contains("exactly one of `column`, `value`, `template`, `expr` or `lookup`"),
        "{reason}"
    );
    let (_, _, reason) = load_err(&format!(
        "{PATIENTS}zip = {{ expr = \"z\", optional = true }}\n"
    ));
    assert!(reason.contains("optional"), "{reason}");
    // With `csv.columns` (a headerless file) the columns are known: an unknown one is an
    // error at load.
    let headerless = "[[file]]\nmatch = \"p.csv\"\n[file.csv]\nheader = false\ncolumns = [\"id\", \"anchor_age\", \"anchor_year\"]\n[[file.target]]\ntable = \"patients\"\n[file.target.columns]\npatient_id = \"id\"\n";
    let (loc, _, reason) = load_err(&format!(
        "{headerless}birth_date = {{ expr = \"date(anchor_year - ANCHOR_AGE - achor_offset, 1, 1)\" }}\n"
    ));
    assert_eq!(loc, "m.toml:10");
    assert!(
        reason.contains("at character 33: unknown column \"achor_offset\""),
        "{reason}"
    );
    let ok =
        format!("{headerless}birth_date = {{ expr = \"date(anchor_year - ANCHOR_AGE, 1, 1)\" }}\n");
    let p = run(&ok, &[("p.csv", "7,40,2000\n")]);
    assert_eq!(
        p.tables.patients[0].birth_date,
        NaiveDate::from_ymd_opt(1960, 1, 1)
    );
    // `time`, `zone` and `decimal` are accepted on an expression whatever its target.
    let m = format!("{PATIENTS}zip = {{ expr = \"year(d) || ''\", time = \"%d.%m.%Y\", zone = \"+01:00\", decimal = \",\" }}\n");
    let p = run(&m, &[("pat.csv", "id,d\n1,06.05.2020\n")]);
    assert_eq!(p.tables.patients[0].zip.as_deref(), Some("2020"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random expression text never panics the parser, and what parses never panics
    /// when evaluated on odd cells.
    #[test]
    fn random_expressions_never_panic(
        tokens in proptest::collection::vec(
            prop_oneof![
                Just("a"), Just("b"), Just("d"), Just("("), Just(")"), Just(","),
                Just("+"), Just("-"), Just("*"), Just("/"), Just("||"), Just("|"),
                Just("1"), Just("0"), Just("2.5"), Just("99999999999999999999"), Just("1e3"),
                Just("'x'"), Just("'2020-02-29'"), Just("\""), Just("'"), Just("`c d`"), Just("`"),
                Just("null"), Just("date"), Just("datetime"), Just("year"), Just("month"),
                Just("day"), Just("coalesce"), Just("add_days"), Just("add_months"),
                Just("add_years"), Just("number"), Just("text"), Just(" "), Just("é"),
                Just("\n"), Just("."), Just("$"),
            ],
            0..40,
        ),
        junk in ".{0,30}",
        cells in proptest::collection::vec(
            prop_oneof![
                Just("1"), Just("0"), Just("-1e308"), Just("2020-02-29"), Just("abc"),
                Just("2180-05-06 22:23:00"), Just("1e300"), Just(""), Just("9999-12-31"),
            ],
            3,
        ),
    ) {
        let text = tokens.concat();
        let row = [("a", cells[0]), ("b", cells[1]), ("d", cells[2]), ("c d", cells[0])];
        for t in [text.as_str(), junk.as_str(), &format!("{text}{junk}")] {
            for kind in [Kind::Text, Kind::Number, Kind::Date, Kind::Time] {
                match Expr::parse(t, kind) {
                    Ok(e) => {
                        let _ = e.eval_text(&Cols(&row), reading());
                    }
                    Err(e) => {
                        prop_assert!(e.pos >= 1 && e.pos <= t.chars().count() + 1, "{t:?}: {e}");
                        prop_assert!(!e.message.is_empty());
                    }
                }
            }
        }
    }
}
