//! The quarantine browser (`docs/ui.md`, "Quarantine"): the records an ingest run could not
//! curate, with their reasons, read from a quarantine version (its columns are those of
//! `ingest::pipeline::quarantine_schema`: file, record, table, field, reason, detail, raw),
//! counted by reason and by table, filtered and paged.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, UInt64Type};
use arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::catalog::{percent_decode, percent_encode};
use super::html::{escape, page, version_href};
use crate::error::{Error, Result};
use crate::store::{Kind, Manifest, Store};

/// Records on one page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest page.
pub const MAX_LIMIT: usize = 500;

/// Which records to show.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// Only this reason code (exact).
    pub reason: String,
    /// Only records of this curated table (exact).
    pub table: String,
    /// Records skipped before the page.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
}

impl Filter {
    /// Parses `reason=&table=&offset=&limit=`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the parameter.
    pub fn parse(query: &str) -> Result<Filter> {
        let mut f = Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).map_err(|why| Error::invalid(format!("query {k}"), why))?;
            let v = v.trim();
            match k {
                "reason" => f.reason = v.to_string(),
                "table" => f.table = v.to_string(),
                "offset" | "limit" if v.is_empty() => {}
                "offset" => {
                    f.offset = v.parse().map_err(|_| {
                        Error::invalid("query offset", format!("{v:?}: give a whole number >= 0"))
                    })?;
                }
                "limit" => {
                    f.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            Error::invalid(
                                "query limit",
                                format!("{v:?}: give a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?;
                }
                _ => {
                    return Err(Error::invalid(
                        format!("query {k}"),
                        "not known: the parameters are reason, table, offset and limit",
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The query string of this filter at `offset`.
    pub fn query_at(&self, offset: usize) -> String {
        let mut parts = Vec::new();
        if !self.reason.is_empty() {
            parts.push(format!("reason={}", percent_encode(&self.reason)));
        }
        if !self.table.is_empty() {
            parts.push(format!("table={}", percent_encode(&self.table)));
        }
        if self.limit != DEFAULT_LIMIT {
            parts.push(format!("limit={}", self.limit));
        }
        if offset > 0 {
            parts.push(format!("offset={offset}"));
        }
        parts.join("&")
    }
}

/// One quarantined record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRow {
    /// The source file.
    pub file: String,
    /// The record's number in it.
    pub record: u64,
    /// The curated table it would have fed.
    pub table: Option<String>,
    /// The field at fault.
    pub field: Option<String>,
    /// The reason code.
    pub reason: String,
    /// The explanation.
    pub detail: String,
    /// The record as read (at most 4 KiB).
    pub raw: String,
}

/// One page of a quarantine version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Records in the version.
    pub total: u64,
    /// Records the filter selects.
    pub matching: u64,
    /// Records per reason code (whole version).
    pub by_reason: BTreeMap<String, u64>,
    /// Records per table (whole version; `-` for none).
    pub by_table: BTreeMap<String, u64>,
    /// The page.
    pub rows: Vec<BadRow>,
}

/// A string column of `b` (any string type), or an error naming it.
fn strings(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col = b.column_by_name(name).ok_or_else(|| {
        Error::invalid(
            format!("column {name}"),
            "missing: not a quarantine version's schema",
        )
    })?;
    let c = cast(col, &DataType::Utf8)
        .map_err(|e| Error::invalid(format!("column {name}"), e.to_string()))?;
    Ok(c.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

/// Adds the rows of `b` to `page` as `f` selects.
fn take(b: &RecordBatch, f: &Filter, page: &mut Page) -> Result<()> {
    let file = strings(b, "file")?;
    let table = strings(b, "table")?;
    let field = strings(b, "field")?;
    let reason = strings(b, "reason")?;
    let detail = strings(b, "detail")?;
    let raw = strings(b, "raw")?;
    let record = b
        .column_by_name("record")
        .ok_or_else(|| Error::invalid("column record", "missing"))?;
    let record = cast(record, &DataType::UInt64)
        .map_err(|e| Error::invalid("column record", e.to_string()))?;
    let record = record.as_primitive::<UInt64Type>();
    for i in 0..b.num_rows() {
        page.total += 1;
        let r = reason[i].clone().unwrap_or_default();
        let t = table[i].clone();
        *page.by_reason.entry(r.clone()).or_default() += 1;
        *page
            .by_table
            .entry(t.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
        if (!f.reason.is_empty() && f.reason != r)
            || (!f.table.is_empty() && Some(&f.table) != t.as_ref())
        {
            continue;
        }
        page.matching += 1;
        if page.matching as usize > f.offset && page.rows.len() < f.limit {
            page.rows.push(BadRow {
                file: file[i].clone().unwrap_or_default(),
                record: if record.is_null(i) {
                    0
                } else {
                    record.value(i)
                },
                table: t,
                field: field[i].clone(),
                reason: r,
                detail: detail[i].clone().unwrap_or_default(),
                raw: raw[i].clone().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Reads the page of the quarantine version `m` that `f` selects.
///
/// # Errors
/// [`Error::InvalidArgument`] when `m` is not a quarantine version; the store's read errors.
pub async fn read(store: &Store, m: &Manifest, f: &Filter) -> Result<Page> {
    if m.kind != Kind::Quarantine {
        return Err(Error::invalid(
            format!("version {}", m.hash),
            format!(
                "is a {} version; the quarantine browser shows quarantine versions",
                m.kind
            ),
        ));
    }
    let mut page = Page {
        total: 0,
        matching: 0,
        by_reason: BTreeMap::new(),
        by_table: BTreeMap::new(),
        rows: Vec::new(),
    };
    store.scan(&m.hash, |b| take(b, f, &mut page)).await?;
    Ok(page)
}

/// The quarantine page of `m`.
pub fn html(m: &Manifest, f: &Filter, p: &Page) -> String {
    let hash = m.hash.to_string();
    let base = format!("{}/quarantine", version_href(&hash));
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>Quarantined records <small>({})</small></h1>\n<p><a href=\"{}\">Back to the version</a> <code class=\"hash\">{}</code></p>",
        escape(&m.name),
        escape(&version_href(&hash)),
        escape(&hash)
    );
    b.push_str("<section aria-labelledby=\"h-reasons\">\n<h2 id=\"h-reasons\">By reason</h2>\n<table>\n<thead><tr><th scope=\"col\">Reason</th><th scope=\"col\">Records</th></tr></thead>\n<tbody>\n");
    for (r, n) in &p.by_reason {
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><a href=\"{}?reason={}\"><code>{}</code></a></th><td class=\"num\">{n}</td></tr>",
            escape(&base),
            escape(&percent_encode(r)),
            escape(r)
        );
    }
    b.push_str("</tbody>\n</table>\n</section>\n");
    let _ = write!(
        b,
        "<form method=\"get\" action=\"{}\" class=\"search\" role=\"search\" aria-label=\"Filter quarantined records\">\n<div><label for=\"reason\">Reason</label>\n<select id=\"reason\" name=\"reason\">\n<option value=\"\">any</option>\n",
        escape(&base)
    );
    for r in p.by_reason.keys() {
        let sel = if *r == f.reason { " selected" } else { "" };
        let _ = writeln!(b, "<option value=\"{v}\"{sel}>{v}</option>", v = escape(r));
    }
    b.push_str("</select></div>\n<div><label for=\"table\">Table</label>\n<select id=\"table\" name=\"table\">\n<option value=\"\">any</option>\n");
    for t in p.by_table.keys().filter(|t| *t != "-") {
        let sel = if *t == f.table { " selected" } else { "" };
        let _ = writeln!(b, "<option value=\"{v}\"{sel}>{v}</option>", v = escape(t));
    }
    b.push_str("</select></div>\n<div><button type=\"submit\">Filter</button></div>\n</form>\n");
    let first = if p.rows.is_empty() { 0 } else { f.offset + 1 };
    let _ = writeln!(
        b,
        "<p id=\"qcount\" aria-live=\"polite\">{} of {} matching records shown ({first}&ndash;{}); {} in this version.</p>",
        p.rows.len(),
        p.matching,
        f.offset + p.rows.len(),
        p.total
    );
    b.push_str("<table class=\"quarantine\" aria-describedby=\"qcount\">\n<caption>Quarantined records</caption>\n<thead><tr><th scope=\"col\">Source</th><th scope=\"col\">Table</th><th scope=\"col\">Field</th><th scope=\"col\">Reason</th><th scope=\"col\">Detail</th><th scope=\"col\">Record</th></tr></thead>\n<tbody>\n");
    for r in &p.rows {
        let _ = writeln!(
            b,
            "<tr><th scope=\"row\"><code>{}:{}</code></th><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td><details><summary>Show</summary><pre>{}</pre></details></td></tr>",
            escape(&r.file),
            r.record,
            escape(r.table.as_deref().unwrap_or("-")),
            escape(r.field.as_deref().unwrap_or("-")),
            escape(&r.reason),
            escape(&r.detail),
            escape(&r.raw)
        );
    }
    b.push_str("</tbody>\n</table>\n");
    let mut nav = Vec::new();
    if f.offset > 0 {
        nav.push(format!(
            "<a href=\"{}?{}\" rel=\"prev\">Previous</a>",
            escape(&base),
            escape(&f.query_at(f.offset.saturating_sub(f.limit)))
        ));
    }
    if f.offset + p.rows.len() < p.matching as usize {
        nav.push(format!(
            "<a href=\"{}?{}\" rel=\"next\">Next</a>",
            escape(&base),
            escape(&f.query_at(f.offset + f.limit))
        ));
    }
    if !nav.is_empty() {
        let _ = writeln!(b, "<nav aria-label=\"Pages\">{}</nav>", nav.join(" "));
    }
    page(&format!("Quarantine {}", m.name), &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::pipeline::quarantine_schema;
    use arrow::array::{StringArray, UInt64Array};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            quarantine_schema(),
            vec![
                Arc::new(StringArray::from(vec!["a.ndjson", "a.ndjson", "b.ndjson"])),
                Arc::new(UInt64Array::from(vec![1, 2, 7])),
                Arc::new(StringArray::from(vec![
                    Some("observations"),
                    None,
                    Some("patients"),
                ])),
                Arc::new(StringArray::from(vec![Some("valueQuantity"), None, None])),
                Arc::new(StringArray::from(vec![
                    "bad_value",
                    "unparseable",
                    "bad_value",
                ])),
                Arc::new(StringArray::from(vec![
                    "not a number",
                    "not JSON",
                    "<script>",
                ])),
                Arc::new(StringArray::from(vec!["{}", "{", "{\"x\":\"<b>\"}"])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn counts_by_reason_and_table_and_filters_and_pages() {
        let mut p = Page {
            total: 0,
            matching: 0,
            by_reason: BTreeMap::new(),
            by_table: BTreeMap::new(),
            rows: Vec::new(),
        };
        let f = Filter::parse("reason=bad_value&limit=1&offset=1").expect("filter");
        take(&batch(), &f, &mut p).expect("take");
        assert_eq!((p.total, p.matching), (3, 2));
        assert_eq!(p.by_reason["bad_value"], 2);
        assert_eq!(p.by_table["-"], 1);
        assert_eq!(p.rows.len(), 1);
        assert_eq!((p.rows[0].file.as_str(), p.rows[0].record), ("b.ndjson", 7));
        assert_eq!(f.query_at(2), "reason=bad_value&limit=1&offset=2");
        for bad in ["limit=0", "offset=x", "sort=1"] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_page_escapes_records() {
        let mut p = Page {
            total: 0,
            matching: 0,
            by_reason: BTreeMap::new(),
            by_table: BTreeMap::new(),
            rows: Vec::new(),
        };
        let f = Filter::parse("").expect("filter");
        take(&batch(), &f, &mut p).expect("take");
        let m = crate::ui::catalog::tests::manifest(3, Kind::Quarantine, "quarantine", &[]);
        let html = html(&m, &f, &p);
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("<label for=\"reason\">"));
        assert!(html.contains("3 of 3 matching records"));
    }
}
