//! The timeline encoder: change points straight into the timeline's Arrow builders, in
//! batches of `batch_size` rows.

use super::sweep::OutRow;
use super::timeline::{self};
use crate::error::Result;
use arrow::array::{
    ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
    UInt64Builder,
};
use std::sync::Arc;

/// Appends timeline rows to Arrow builders, cutting a batch every `batch_size` rows.
pub(super) struct Encoder {
    pub(super) batch_size: usize,
    pub(super) patient: StringBuilder,
    pub(super) feature: StringBuilder,
    pub(super) effective_at: TimestampMicrosecondBuilder,
    pub(super) value_num: Float64Builder,
    pub(super) value_text: StringBuilder,
    pub(super) value_time: TimestampMicrosecondBuilder,
    pub(super) count: UInt64Builder,
    pub(super) len: usize,
    pub(super) rows: usize,
    pub(super) batches: Vec<RecordBatch>,
}

impl Encoder {
    pub(super) fn new(batch_size: usize) -> Encoder {
        let ts = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        Encoder {
            batch_size: batch_size.max(1),
            patient: StringBuilder::new(),
            feature: StringBuilder::new(),
            effective_at: ts(),
            value_num: Float64Builder::new(),
            value_text: StringBuilder::new(),
            value_time: ts(),
            count: UInt64Builder::new(),
            len: 0,
            rows: 0,
            batches: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, r: &OutRow<'_>) -> Result<()> {
        self.patient.append_value(r.patient);
        self.feature.append_value(r.feature);
        self.effective_at.append_value(r.cp.effective_at);
        self.value_num.append_option(r.cp.value_num);
        self.value_text.append_option(r.cp.value_text);
        self.value_time.append_option(r.cp.value_time);
        self.count.append_value(r.cp.count);
        self.len += 1;
        self.rows += 1;
        if self.len == self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.patient.finish()),
            Arc::new(self.feature.finish()),
            Arc::new(self.effective_at.finish()),
            Arc::new(self.value_num.finish()),
            Arc::new(self.value_text.finish()),
            Arc::new(self.value_time.finish()),
            Arc::new(self.count.finish()),
        ];
        self.batches
            .push(RecordBatch::try_new(timeline::timeline_schema(), cols)?);
        self.len = 0;
        Ok(())
    }

    /// The batches (one empty batch when there is no row) and the number of rows.
    pub(super) fn finish(mut self) -> Result<(Vec<RecordBatch>, usize)> {
        self.flush()?;
        if self.batches.is_empty() {
            self.batches
                .push(RecordBatch::new_empty(timeline::timeline_schema()));
        }
        Ok((self.batches, self.rows))
    }
}
