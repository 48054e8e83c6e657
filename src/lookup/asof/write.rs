//! The as-of join's output written to Parquet, its columns encoded in parallel.

use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use rayon::prelude::*;

use super::read::parquet_err;
use crate::error::{Error, Result};

/// Rows per row group of [`write_parquet`]'s output.
const WRITE_GROUP_ROWS: usize = 1 << 20;

/// Writes a batch to Parquet (snappy), in row groups of up to 2^20 rows whose columns are
/// encoded in parallel (one column per task), then appended in order. Without dictionary
/// encoding: times and values rarely repeat, and the patient ids (sorted, about as many
/// distinct as rows) would overflow the dictionary page and fall back to plain after the cost
/// of building it.
///
/// # Errors
/// I/O and Parquet errors naming the file.
pub fn write_parquet(batch: &RecordBatch, out: &Path) -> Result<()> {
    use parquet::arrow::arrow_writer::compute_leaves;
    let tmp: PathBuf = out.with_extension("parquet.tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_dictionary_enabled(false);
    let err = parquet_err(out);
    let (mut file, factory) =
        parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props.build()))
            .map_err(&err)?
            .into_serialized_writer()
            .map_err(&err)?;
    let schema = batch.schema();
    let n = batch.num_rows();
    // (first row, rows) of each row group; an empty batch still gets one (empty) group.
    let groups: Vec<(usize, usize)> = if n == 0 {
        vec![(0, 0)]
    } else {
        (0..n)
            .step_by(WRITE_GROUP_ROWS)
            .map(|s| (s, WRITE_GROUP_ROWS.min(n - s)))
            .collect()
    };
    for (group, &(start, len)) in groups.iter().enumerate() {
        let part = batch.slice(start, len);
        let writers = factory.create_column_writers(group).map_err(&err)?;
        // One leaf per column: the output's columns are flat.
        let chunks = writers
            .into_par_iter()
            .zip(schema.fields().par_iter().zip(part.columns().par_iter()))
            .map(|(mut w, (field, col))| {
                for leaf in compute_leaves(field, col)? {
                    w.write(&leaf)?;
                }
                w.close()
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(&err)?;
        let mut rg = file.next_row_group().map_err(&err)?;
        for c in chunks {
            c.append_to_row_group(&mut rg).map_err(&err)?;
        }
        rg.close().map_err(&err)?;
    }
    file.close().map_err(&err)?;
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    Ok(())
}
