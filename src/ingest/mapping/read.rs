//! Reading an input file as a header and a stream of text records: CSV with the `csv` crate,
//! Parquet with the `parquet` crate's Arrow reader.
//!
//! Both readers turn every cell into `Option<String>` so the mapping rules are the same for
//! both formats. A Parquet timestamp or date is printed as ISO 8601 and its column marked
//! *typed*, so the mapping's CSV time formats are not applied to it. Records stream through a
//! [`Sink`]: nothing holds a whole file's rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, SecondsFormat};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::ingest::clip_raw;

/// Character set of a CSV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// UTF-8; a record with invalid bytes is quarantined.
    Utf8,
    /// ISO 8859-1: every byte is a character, so nothing is invalid.
    Latin1,
}

/// CSV reading options (`[file.csv]`), resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CsvOptions {
    pub(crate) delimiter: u8,
    pub(crate) header: bool,
    /// Column names when the file has no header.
    pub(crate) columns: Option<Vec<String>>,
    /// `None` turns quoting off.
    pub(crate) quote: Option<u8>,
    pub(crate) nulls: Vec<String>,
    pub(crate) trim: bool,
    pub(crate) encoding: Encoding,
    pub(crate) comment: Option<u8>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            header: true,
            columns: None,
            quote: Some(b'"'),
            nulls: vec![String::new()],
            trim: true,
            encoding: Encoding::Utf8,
            comment: None,
        }
    }
}

/// Column names and, per column, whether its text is a typed (ISO 8601) time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    pub(crate) names: Vec<String>,
    pub(crate) typed: Vec<bool>,
}

/// The raw form of a record, rendered only when a record goes to quarantine.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    /// The record's bytes as they were in the file.
    Bytes(&'a [u8]),
    /// A Parquet row: rendered from its cells.
    Cells,
}

impl Raw<'_> {
    pub(crate) fn render(&self, cells: &[Option<String>]) -> String {
        match self {
            Raw::Bytes(b) => {
                let text = String::from_utf8_lossy(b);
                clip_raw(text.trim_end_matches(['\r', '\n']))
            }
            Raw::Cells => {
                let parts: Vec<&str> = cells.iter().map(|c| c.as_deref().unwrap_or("")).collect();
                clip_raw(&parts.join(","))
            }
        }
    }
}

/// Receives what a reader finds.
pub(crate) trait Sink {
    /// The file's columns, before any record.
    fn header(&mut self, header: &Header);
    /// A well-formed record: one cell per header column.
    fn row(&mut self, record: u64, cells: &[Option<String>], raw: Raw<'_>);
    /// A record that could not be read (`record` 0: the whole file).
    fn bad(&mut self, record: u64, detail: String, raw: String);
}

/// Reads `bytes` as Parquet when `parquet` is true, else as CSV.
pub(crate) fn read(bytes: &[u8], parquet: bool, csv: &CsvOptions, sink: &mut dyn Sink) {
    if parquet {
        read_parquet(bytes, sink)
    } else {
        read_csv(bytes, csv, sink)
    }
}

fn decode(field: &[u8], enc: Encoding) -> Option<String> {
    match enc {
        Encoding::Utf8 => std::str::from_utf8(field).ok().map(str::to_string),
        Encoding::Latin1 => Some(field.iter().map(|b| char::from(*b)).collect()),
    }
}

fn read_csv(bytes: &[u8], opts: &CsvOptions, sink: &mut dyn Sink) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(opts.delimiter)
        .quoting(opts.quote.is_some())
        .quote(opts.quote.unwrap_or(b'"'))
        .comment(opts.comment)
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut header = Header::default();
    let mut have_header = false;
    if let Some(cols) = &opts.columns {
        header.names = cols.clone();
        header.typed = vec![false; cols.len()];
        sink.header(&header);
        have_header = true;
    }
    let mut cells: Vec<Option<String>> = Vec::new();
    loop {
        let start = rdr.position().byte() as usize;
        let more = match rdr.read_byte_record(&mut rec) {
            Ok(more) => more,
            Err(e) => {
                // In-memory input cannot fail with I/O; anything else ends the file here so
                // a reader error can never loop.
                let line = rdr.position().line();
                let raw = bytes.get(start..).unwrap_or_default();
                sink.bad(
                    line,
                    format!("CSV reader stopped: {e}"),
                    Raw::Bytes(raw).render(&[]),
                );
                return;
            }
        };
        if !more {
            return;
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let end = (rdr.position().byte() as usize).min(bytes.len());
        let raw = Raw::Bytes(bytes.get(start.min(end)..end).unwrap_or_default());
        if !have_header {
            header.names = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).trim().to_string())
                .collect();
            header.typed = vec![false; header.names.len()];
            sink.header(&header);
            have_header = true;
            continue;
        }
        if rec.len() != header.names.len() {
            sink.bad(
                line,
                format!(
                    "expected {} fields, found {}",
                    header.names.len(),
                    rec.len()
                ),
                raw.render(&[]),
            );
            continue;
        }
        cells.clear();
        let mut bad_field = None;
        for (i, f) in rec.iter().enumerate() {
            match decode(f, opts.encoding) {
                Some(s) => {
                    let v = if opts.trim { s.trim().to_string() } else { s };
                    cells.push((!opts.nulls.contains(&v)).then_some(v));
                }
                None => {
                    bad_field = Some(i);
                    break;
                }
            }
        }
        match bad_field {
            Some(i) => sink.bad(
                line,
                format!("invalid UTF-8 in column {:?}", header.names[i]),
                raw.render(&[]),
            ),
            None => sink.row(line, &cells, raw),
        }
    }
}

/// Wraps the file's bytes in the buffer type the Parquet reader wants. The `bytes` crate is
/// not a direct dependency of Ward; `ByteArray::set_data` names its `Bytes` type, so the
/// compiler infers it from there instead.
fn parquet_buffer<B: From<Vec<u8>>>(
    _names_the_type: fn(&mut parquet::data_type::ByteArray, B),
    data: &[u8],
) -> B {
    B::from(data.to_vec())
}

fn read_parquet(bytes: &[u8], sink: &mut dyn Sink) {
    let buffer = parquet_buffer(parquet::data_type::ByteArray::set_data, bytes);
    let builder = match ParquetRecordBatchReaderBuilder::try_new(buffer) {
        Ok(b) => b,
        Err(e) => {
            sink.bad(
                0,
                format!("not a readable Parquet file: {e}"),
                String::new(),
            );
            return;
        }
    };
    let schema = builder.schema().clone();
    // Columns whose type has no text form (nested lists, structs) are left out of the
    // header: a mapping that names one gets a `missing_column` record, not silent nulls.
    let readable: Vec<usize> = (0..schema.fields().len())
        .filter(|i| {
            let dt = schema.field(*i).data_type();
            matches!(dt, DataType::Timestamp(..)) || can_cast_types(dt, &DataType::Utf8)
        })
        .collect();
    let header = Header {
        names: readable
            .iter()
            .map(|i| schema.field(*i).name().clone())
            .collect(),
        typed: readable
            .iter()
            .map(|i| {
                matches!(
                    schema.field(*i).data_type(),
                    DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
                )
            })
            .collect(),
    };
    sink.header(&header);
    let reader = match builder.with_batch_size(4096).build() {
        Ok(r) => r,
        Err(e) => {
            sink.bad(
                0,
                format!("not a readable Parquet file: {e}"),
                String::new(),
            );
            return;
        }
    };
    let mut row_number: u64 = 0;
    let mut cells: Vec<Option<String>> = Vec::new();
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                sink.bad(
                    row_number + 1,
                    format!(
                        "Parquet rows from {} on could not be read: {e}",
                        row_number + 1
                    ),
                    String::new(),
                );
                return;
            }
        };
        let mut columns = Vec::with_capacity(readable.len());
        for &i in &readable {
            match column_text(batch.column(i)) {
                Ok(c) => columns.push(c),
                Err(e) => {
                    sink.bad(
                        row_number + 1,
                        format!(
                            "column {:?} could not be read as text: {e}",
                            schema.field(i).name()
                        ),
                        String::new(),
                    );
                    return;
                }
            }
        }
        for r in 0..batch.num_rows() {
            row_number += 1;
            cells.clear();
            cells.extend(columns.iter().map(|c| c.get(r).cloned().flatten()));
            sink.row(row_number, &cells, Raw::Cells);
        }
    }
}

/// One Arrow column as text. Timestamps are printed by hand: with a zone they are instants
/// (printed in UTC with `Z`), without one they are wall-clock times (printed naive, so the
/// mapping's `zone` applies).
fn column_text(array: &ArrayRef) -> Result<Vec<Option<String>>, arrow::error::ArrowError> {
    if let DataType::Timestamp(_, tz) = array.data_type() {
        let micros = cast(
            array,
            &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        )?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        return Ok(micros
            .iter()
            .map(|v| {
                let t = DateTime::from_timestamp_micros(v?)?;
                Some(if tz.is_some() {
                    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                } else {
                    t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
                })
            })
            .collect());
    }
    let text: Arc<dyn Array> = cast(array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    Ok(text.iter().map(|v| v.map(str::to_string)).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Collects what a reader emits, for assertions.
    #[derive(Default, Debug)]
    pub(crate) struct Collect {
        pub(crate) header: Vec<String>,
        pub(crate) typed: Vec<bool>,
        pub(crate) rows: Vec<(u64, Vec<Option<String>>, String)>,
        pub(crate) bad: Vec<(u64, String, String)>,
    }

    impl Sink for Collect {
        fn header(&mut self, h: &Header) {
            self.header = h.names.clone();
            self.typed = h.typed.clone();
        }
        fn row(&mut self, record: u64, cells: &[Option<String>], raw: Raw<'_>) {
            self.rows.push((record, cells.to_vec(), raw.render(cells)));
        }
        fn bad(&mut self, record: u64, detail: String, raw: String) {
            self.bad.push((record, detail, raw));
        }
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn csv_lines_nulls_trim_and_ragged_rows() {
        let text = "\u{FEFF}a,b,c\n1, x ,NA\n\"multi\nline\",2\n3,\"q,\"\"uoted\",\n";
        let opts = CsvOptions {
            nulls: vec!["".into(), "NA".into()],
            ..CsvOptions::default()
        };
        let mut c = Collect::default();
        read(text.as_bytes(), false, &opts, &mut c);
        assert_eq!(c.header, ["a", "b", "c"]);
        assert_eq!(c.rows.len(), 2);
        assert_eq!(
            c.rows[0],
            (2, vec![s("1"), s("x"), None], "1, x ,NA".to_string())
        );
        assert_eq!(c.rows[1].0, 5);
        assert_eq!(c.rows[1].1, vec![s("3"), s("q,\"uoted"), None]);
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].0, 3);
        assert!(
            c.bad[0].1.contains("expected 3 fields, found 2"),
            "{:?}",
            c.bad
        );
        assert_eq!(c.bad[0].2, "\"multi\nline\",2");
    }

    #[test]
    fn csv_without_header_tabs_latin1_and_bad_utf8() {
        let opts = CsvOptions {
            delimiter: b'\t',
            header: false,
            columns: Some(vec!["x".into(), "y".into()]),
            quote: None,
            ..CsvOptions::default()
        };
        let mut c = Collect::default();
        read(b"\"a\tb\n\xE9\tc\n", false, &opts, &mut c);
        assert_eq!(c.header, ["x", "y"]);
        assert_eq!(c.rows, vec![(1, vec![s("\"a"), s("b")], "\"a\tb".into())]);
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].0, 2);
        assert!(c.bad[0].1.contains("UTF-8"));

        let latin1 = CsvOptions {
            encoding: Encoding::Latin1,
            ..opts
        };
        let mut c = Collect::default();
        read(b"\xE9\tc\n", false, &latin1, &mut c);
        assert_eq!(c.rows[0].1, vec![s("é"), s("c")]);
    }

    #[test]
    fn garbage_is_not_parquet() {
        let mut c = Collect::default();
        read(b"PAR1 but not really", true, &CsvOptions::default(), &mut c);
        assert!(c.rows.is_empty());
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].0, 0);
    }
}
