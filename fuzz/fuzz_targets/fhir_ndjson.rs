//! FHIR Bulk Data NDJSON: any bytes as one file. No panic; rows buildable; a bad record
//! names a line that exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward::curated::Table;
use ward::ingest::{fhir, Context, Input};

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default());
    let parsed = fhir::parse_ndjson(&[Input { name: "Observation.ndjson", bytes: data }], &ctx);
    for t in Table::ALL {
        parsed.tables.to_batch(t).expect("rows match the schema");
    }
    let lines = data.split(|b| *b == b'\n').count() as u64;
    for bad in &parsed.bad {
        assert!(bad.location.record <= lines, "{bad:?}");
    }
});
