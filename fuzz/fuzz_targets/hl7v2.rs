//! HL7 v2: any bytes, as one or two input files (a cancel may arrive in another file than
//! what it cancels). The parser must not panic, and every row must be buildable as Arrow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward::curated::Table;
use ward::ingest::{hl7v2, Context, Input};

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default());
    // The first byte chooses where to cut the rest into two files.
    let (cut, rest) = match data.split_first() {
        Some((c, rest)) => (*c as usize * rest.len() / 256, rest),
        None => (0, data),
    };
    let (a, b) = rest.split_at(cut.min(rest.len()));
    let inputs = [
        Input { name: "a.hl7", bytes: a },
        Input { name: "b.hl7", bytes: b },
    ];
    let parsed = hl7v2::parse(&inputs, &ctx);
    for t in Table::ALL {
        parsed.tables.to_batch(t).expect("rows match the schema");
    }
    for bad in &parsed.bad {
        assert!(bad.location.file == "a.hl7" || bad.location.file == "b.hl7");
        assert!(!bad.reason.is_empty());
        assert!(bad.raw.len() <= 4096);
    }
});
