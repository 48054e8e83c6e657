//! CSV through the shipped mappings: any bytes as a Synthea `encounters.csv` and as a
//! curated-layout `observations.csv`. No panic; every row buildable as Arrow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward::curated::Table;
use ward::ingest::mapping::{self, Mapping};
use ward::ingest::{Context, Input};

fuzz_target!(|data: &[u8]| {
    let ctx = Context::new(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default());
    for (m, name) in [
        (Mapping::synthea(), "encounters.csv"),
        (Mapping::curated(), "observations.csv"),
    ] {
        let parsed = mapping::parse(&m, &[Input { name, bytes: data }], &ctx);
        for t in Table::ALL {
            parsed.tables.to_batch(t).expect("rows match the schema");
        }
    }
});
