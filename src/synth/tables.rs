//! Curated tables as files: one Parquet or CSV file per table, columns exactly the curated
//! schema, every row version included (`known_at`, `retracted_at` kept).

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use rayon::prelude::*;

use super::{ChunkWriter, OutFile};
use crate::curated::{CuratedTables, Table};
use crate::error::{Error, Result};

/// Fixed Parquet writer properties, so the bytes depend only on the rows: no version string
/// (`created_by` would change with the parquet crate), fixed compression, row groups
/// bounded by rows.
pub(crate) fn parquet_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_created_by("ward synth".to_string())
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_max_row_group_bytes(None)
        .build()
}

enum Sink {
    Parquet(Box<ArrowWriter<CountingFile>>),
    Csv(Box<arrow::csv::Writer<CountingFile>>),
}

/// A file that counts the bytes written through it (ArrowWriter and the CSV writer own
/// their sink, so the count travels with it).
struct CountingFile(OutFile);

impl std::io::Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write_all(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut self.0.inner)
    }
}

/// The writer of `--format parquet` and `--format csv`.
pub(crate) struct TablesWriter {
    sinks: Vec<(Table, PathBuf, Sink)>,
}

impl TablesWriter {
    pub(crate) fn parquet(dir: &Path) -> Result<Self> {
        let mut sinks = Vec::new();
        for table in Table::ALL {
            let path = dir.join(format!("{}.parquet", table.name()));
            let file = CountingFile(OutFile::create(path.clone())?);
            let w = ArrowWriter::try_new(file, table.schema(), Some(parquet_properties()))
                .map_err(|e| Error::Parquet {
                    path: path.clone(),
                    source: e,
                })?;
            sinks.push((table, path, Sink::Parquet(Box::new(w))));
        }
        Ok(TablesWriter { sinks })
    }

    pub(crate) fn csv(dir: &Path) -> Result<Self> {
        let mut sinks = Vec::new();
        for table in Table::ALL {
            let path = dir.join(format!("{}.csv", table.name()));
            let file = CountingFile(OutFile::create(path.clone())?);
            let w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_date_format("%Y-%m-%d".to_string())
                .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%SZ".to_string())
                .build(file);
            sinks.push((table, path, Sink::Csv(Box::new(w))));
        }
        Ok(TablesWriter { sinks })
    }
}

fn write_batch(path: &Path, sink: &mut Sink, batch: &RecordBatch) -> Result<()> {
    match sink {
        Sink::Parquet(w) => w.write(batch).map_err(|e| Error::Parquet {
            path: path.to_path_buf(),
            source: e,
        }),
        Sink::Csv(w) => w
            .write(batch)
            .map_err(|e| Error::io(path, std::io::Error::other(e))),
    }
}

impl ChunkWriter for TablesWriter {
    fn write_chunk(&mut self, _index: usize, chunk: Vec<CuratedTables>) -> Result<()> {
        let mut all = CuratedTables::default();
        for p in chunk {
            all.extend(p);
        }
        // Each table has its own file, so the tables encode in parallel; each file still
        // receives its batches in chunk order.
        self.sinks
            .par_iter_mut()
            .try_for_each(|(table, path, sink)| {
                let batch = all.to_batch(*table)?;
                write_batch(path, sink, &batch)
            })
    }

    fn finish(self: Box<Self>) -> Result<Vec<(PathBuf, u64)>> {
        let mut out = Vec::new();
        for (_, path, sink) in self.sinks {
            let file = match sink {
                Sink::Parquet(w) => w.into_inner().map_err(|e| Error::Parquet {
                    path: path.clone(),
                    source: e,
                })?,
                Sink::Csv(w) => w.into_inner(),
            };
            out.push(file.0.finish()?);
        }
        Ok(out)
    }
}
