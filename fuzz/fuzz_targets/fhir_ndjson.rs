//! FHIR Bulk Data NDJSON: any bytes as one file. No panic; rows buildable; the row and column
//! paths agree; a bad record names a line that exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward::curated::Table;
use ward::ingest::{fhir, Context, Input};

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default());
    let parsed = fhir::parse(&[Input { name: "Observation.ndjson", bytes: data }], fhir::Framing::Ndjson, &ctx);
    for t in Table::ALL {
        parsed.tables.to_batch(t).expect("rows match the schema");
    }
    // The column path an ingest run takes gives the same result.
    let columns = fhir::parse_batches(&[Input { name: "Observation.ndjson", bytes: data }], fhir::Framing::Ndjson, &ctx);
    let rows = parsed.clone().into_batches().expect("rows match the schema");
    assert!(columns.expect("columns build") == rows, "column and row paths differ");
    let lines = data.split(|b| *b == b'\n').count() as u64;
    for bad in &parsed.bad {
        assert!(bad.location.record <= lines, "{bad:?}");
    }
});
