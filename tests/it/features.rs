//! Features: definitions, timelines against a plain reference, determinism, incremental,
//! rebuild, the readmission set. The shared inputs and helpers are here, each concern in
//! its own file under `features/`.

mod definitions;
mod parquet_inputs;
pub(crate) mod reference;
mod row_filters;
mod score_features;
mod through_store;
mod timelines;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Float64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ward::clock::{ManualClock, SharedClock};
use ward::curated::{Condition, CuratedTables, Encounter, Observation, Procedure, Table};
use ward::error::Error;
use ward::features::{
    self, compute, compute_incremental, lookup, whole_years, FeatureDef, FeatureKind, FeatureRepo,
    FeatureSet, FeatureValue, Inputs, Knowledge, MaterializeOptions, SourceIdReader, Status,
    TimelineIndex, Value, DAY_US,
};
use ward::hash::hash_batches;
use ward::scores::{self, PatientRows, ScoreComponent, View};
use ward::store::{Kind, Store};
use ward::synth::{generate_cohort, SynthOptions};

const EXAMPLE: &str = include_str!("../../examples/features/readmission.toml");

/// Every kind, with windows short enough that their edges fall inside the sampled times.
const ALL_KINDS: &str = r#"
[[feature_set]]
name = "all"
ttl = "90d"

[[feature_set.features]]
name = "days_since_discharge"
kind = "days_since"
table = "encounters"
filter = { class = "inpatient" }
time = "discharge_time"

[[feature_set.features]]
name = "admissions_180d"
kind = "count"
table = "encounters"
filter = { class = ["inpatient"] }
window = "180d"

[[feature_set.features]]
name = "visits_7d"
kind = "count"
table = "encounters"
filter = { class = { in = ["emergency", "ambulatory"] } }
window = "7d"

[[feature_set.features]]
name = "creatinine_sum_2d"
kind = "sum"
table = "observations"
filter = { code = "2160-0" }
column = "value_num"
window = "2d"

[[feature_set.features]]
name = "sodium_mean_3d"
kind = "mean"
table = "observations"
filter = { code = "2951-2", code_system = "LOINC" }
column = "value_num"
window = "3d"

[[feature_set.features]]
name = "hb_min_12h"
kind = "min"
table = "observations"
filter = { code = "718-7" }
column = "value_num"
window = "12h"

[[feature_set.features]]
name = "glucose_max"
kind = "max"
table = "observations"
filter = { code = "2345-7" }
column = "value_num"

[[feature_set.features]]
name = "hb_last"
kind = "last"
table = "observations"
filter = { code = "718-7" }
column = "value_num"

[[feature_set.features]]
name = "hb_first_1d"
kind = "first"
table = "observations"
filter = { code = "718-7" }
column = "value_num"
window = "1d"
ttl = "6h"

[[feature_set.features]]
name = "status_last"
kind = "last"
table = "observations"
column = "status"
ttl = "none"

[[feature_set.features]]
name = "heart_failure"
kind = "exists"
table = "conditions"
filter = { code = { prefix = ["I50", "I11"] } }

[[feature_set.features]]
name = "age"
kind = "age"

[[feature_set.features]]
name = "sex"
kind = "last"
table = "patients"
column = "sex"

[[feature_set.features]]
name = "readmit_30d"
kind = "readmitted_within"
horizon = "30d"

[[feature_set.features]]
name = "death_90d"
kind = "died_within"
horizon = "90d"
"#;

fn cohort(patients: u64, seed: u64) -> CuratedTables {
    let opts = SynthOptions {
        patients,
        seed,
        ..SynthOptions::default()
    };
    generate_cohort(&opts)
}

fn index(set: &FeatureSet, batches: &[RecordBatch]) -> TimelineIndex {
    TimelineIndex::build(set, batches).unwrap()
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap()
}

fn table_hash(batches: &[RecordBatch]) -> ward::hash::ContentHash {
    hash_batches(&features::timeline_schema(), batches).unwrap()
}
