//! FHIR R4 Bundle (or single resource) JSON documents: any bytes. No panic; rows buildable; the row
//! and column paths agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward::curated::Table;
use ward::ingest::{fhir, Context, Input};

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default());
    let parsed = fhir::parse(&[Input { name: "bundle.json", bytes: data }], fhir::Framing::Bundle, &ctx);
    for t in Table::ALL {
        parsed.tables.to_batch(t).expect("rows match the schema");
    }
    // The column path an ingest run takes gives the same result.
    let columns = fhir::parse_batches(&[Input { name: "bundle.json", bytes: data }], fhir::Framing::Bundle, &ctx);
    let rows = parsed.clone().into_batches().expect("rows match the schema");
    assert!(columns.expect("columns build") == rows, "column and row paths differ");
    for bad in &parsed.bad {
        assert_eq!(bad.location.file, "bundle.json");
        assert!(!bad.reason.is_empty());
    }
});
