//! The lookups: `get` (online, at a time), `historical` (a training set) and `asof` (the
//! wide as-of join of the peers' layout).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::SharedClock;
use crate::store::{Store, VersionRef};

use super::audit::audit_cli_read;
use super::HistoricalArgs;

/// `ward get`: features of patients at a time from the latest timeline (the read is audited first).
pub(super) async fn get(
    dir: &Path,
    clock: &SharedClock,
    set: String,
    patients: Vec<String>,
    as_of: Option<String>,
    json: bool,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let t = match &as_of {
        Some(s) => crate::store::manifest::parse_time(s)
            .with_context(|| format!("--as-of {s:?}: use RFC 3339 or YYYY-MM-DD"))?,
        None => clock.now(),
    };
    let online = crate::lookup::Online::new(store.clone());
    let answer = online.get(&set, &patients, &[], Some(t)).await;
    // One record, before anything is printed (fail closed).
    let mut entry =
        crate::security::audit::AuditEntry::local("get", "online_lookup").with_result(&answer);
    entry.feature_set = Some(set.clone());
    entry.patients = crate::security::audit::Patients::Ids(patients.clone());
    if let Ok(a) = &answer {
        entry.datasets = vec![a.timeline.to_string()];
    }
    audit_cli_read(&store, entry)?;
    let answer = answer?;
    print_features(&answer.patients, &answer.timeline, json)?;
    Ok(())
}

/// `ward historical`: point-in-time features of entity rows; prints the training set's hash.
pub(super) async fn historical(
    dir: &Path,
    clock: &SharedClock,
    args: HistoricalArgs,
) -> Result<()> {
    let HistoricalArgs {
        set,
        entities,
        out,
        timeline,
        features,
        as_occurred,
        patient_column,
        time_column,
        name,
    } = args;
    let store = Store::open_existing(dir, clock.clone())?;
    let path = PathBuf::from(&entities);
    let source =
        if path.is_file() {
            crate::lookup::Entities::Batches(crate::lookup::read_entities(&path)?)
        } else {
            crate::lookup::Entities::Stored(entities.parse::<VersionRef>().with_context(|| {
                format!("--entities {entities:?} is neither a file nor a version")
            })?)
        };
    let mut req = crate::lookup::HistoricalRequest::new(set, source);
    req.timeline = timeline.map(|t| t.parse::<VersionRef>()).transpose()?;
    req.knowledge = if as_occurred {
        crate::features::Knowledge::AsOccurred
    } else {
        crate::features::Knowledge::AsKnown
    };
    req.patient_column = Some(patient_column.clone());
    req.time_column = Some(time_column);
    req.name = name;
    let started = std::time::Instant::now();
    let set_name = req.set.clone();
    let outcome = match features {
        Some(path) => match crate::features::FeatureRepo::load(&path) {
            Ok(repo) => crate::lookup::historical_direct(&store, &repo, req).await,
            Err(e) => Err(e),
        },
        None => crate::lookup::historical(&store, req).await,
    };
    // One record, before the training set is reported or written out (fail closed):
    // the training set made, its inputs, and its patients as a count and a hash.
    let mut entry =
        crate::security::audit::AuditEntry::local("historical", "historical_identified")
            .with_result(&outcome);
    entry.feature_set = Some(set_name);
    if let Ok(o) = &outcome {
        entry.training_set = Some(o.hash.to_string());
        entry.datasets = o
            .timeline
            .iter()
            .chain(o.curated.iter().map(|(_, h)| h))
            .chain([&o.entities])
            .map(ToString::to_string)
            .collect();
        let (_, rows) = store.read(&o.entities).await?;
        entry.patients =
            crate::security::audit::Patients::bulk(&column_strings(&rows, &patient_column)?);
    }
    audit_cli_read(&store, entry)?;
    let outcome = outcome?;
    eprintln!(
        "training set: {} rows in {:.1} s",
        outcome.rows,
        started.elapsed().as_secs_f64()
    );
    if let Some(timeline) = outcome.timeline {
        eprintln!("  timeline      {timeline}");
    }
    for (table, hash) in &outcome.curated {
        eprintln!("  {table:<13} {hash}");
    }
    eprintln!("  entity rows   {}", outcome.entities);
    if let Some(out) = out {
        store.export_parquet(&outcome.hash, &out).await?;
        eprintln!("  written to    {}", out.display());
    }
    outln!("{}", outcome.hash);
    Ok(())
}

/// `ward asof`: the wide as-of join of the peers' layout, with its report lines.
pub(super) fn asof(
    data_dir: Option<PathBuf>,
    features: Option<PathBuf>,
    entities: Option<PathBuf>,
    ttl_days: f64,
    out: PathBuf,
) -> Result<()> {
    let (features, entities) = match (data_dir, features, entities) {
        (_, Some(f), Some(e)) => (f, e),
        (Some(d), f, e) => (
            f.unwrap_or_else(|| d.join("features.parquet")),
            e.unwrap_or_else(|| d.join("entities.parquet")),
        ),
        _ => anyhow::bail!("give --data-dir, or --features and --entities"),
    };
    if !(ttl_days >= 0.0 && ttl_days.is_finite()) {
        anyhow::bail!("--ttl-days {ttl_days}: use a number of days >= 0");
    }
    let ttl = (ttl_days > 0.0).then(|| (ttl_days * 86_400e6).round() as i64);
    let started = Wall(std::time::Instant::now());
    let (batch, stats) = crate::lookup::asof::asof_join(
        &features,
        &entities,
        ttl,
        &crate::lookup::asof::AsofColumns::default(),
        &started,
    )?;
    let w = std::time::Instant::now();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::lookup::asof::write_parquet(&batch, &out)?;
    let write_s = w.elapsed().as_secs_f64();
    eprintln!(
            "{} entity rows x {} feature rows ({} buffered): {} matched; load keys {:.3} s, match {:.3} s (sort {:.3} s), load values {:.3} s, assemble {:.3} s, write {:.3} s",
            stats.rows,
            stats.feature_rows,
            stats.buffered,
            stats.matched,
            stats.read_keys_s,
            stats.match_s,
            stats.sort_s,
            stats.read_values_s,
            stats.assemble_s,
            write_s
        );
    // The peers' report lines (../shared/peers/README.md, EXTRA_TOOL). As in their
    // scripts, the join time excludes decoding the Parquet files (`load_s`) and
    // writing the output (`write_s`); the sort is part of Ward's join.
    let join_s = stats.join_s();
    outln!("join seconds: {join_s:.3}");
    let rss = peak_rss_mib();
    if let Some(mib) = rss {
        outln!("peak RSS MiB: {mib:.1}");
    }
    let round = |s: f64| (s * 1000.0).round() / 1000.0;
    outln!(
        "RESULT {}",
        serde_json::json!({
            "tool": "ward",
            "ttl_days": ttl_days,
            "rows_out": stats.rows,
            "load_s": round(stats.load_s()),
            "join_s": round(join_s),
            "write_s": round(write_s),
            "peak_rss_mib": rss,
        })
    );
    Ok(())
}

/// The wall clock that times `ward asof`'s phases: seconds since the command started.
struct Wall(std::time::Instant);

impl crate::lookup::asof::Stopwatch for Wall {
    fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Peak resident memory of this process so far (VmHWM), in MiB, where the OS tells (Linux).
fn peak_rss_mib() -> Option<f64> {
    crate::alloc::rss_mib().map(|(_, peak)| peak)
}

/// The values of text (or integer) column `name` across `batches`, as strings.
fn column_strings(batches: &[arrow::array::RecordBatch], name: &str) -> Result<Vec<String>> {
    use arrow::array::AsArray as _;
    let mut out = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .with_context(|| format!("the entity rows have no column {name:?}"))?;
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8)?;
        out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

fn print_features(
    rows: &[crate::features::PatientFeatures],
    timeline: &crate::hash::ContentHash,
    json: bool,
) -> Result<()> {
    use crate::features::{Status, Value};
    let status = |s: Status| match s {
        Status::Present => "present",
        Status::NoData => "no_data",
        Status::OutsideTtl => "outside_ttl",
    };
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let features: serde_json::Map<String, serde_json::Value> = r
                    .values
                    .iter()
                    .map(|(name, v)| {
                        let value = match &v.value {
                            Some(Value::Num(x)) => serde_json::json!(x),
                            Some(Value::Text(s)) => serde_json::json!(s),
                            None => serde_json::Value::Null,
                        };
                        (
                            name.clone(),
                            serde_json::json!({ "value": value, "status": status(v.status) }),
                        )
                    })
                    .collect();
                let mut row = serde_json::json!({
                    "patient_id": r.patient_id,
                    "at": r.at.to_rfc3339(),
                    "timeline": timeline.to_string(),
                    "features": features,
                });
                if let Some(person) = &r.person_id {
                    row["person_id"] = serde_json::json!(person);
                }
                row
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for r in rows {
        let person = match &r.person_id {
            Some(p) => format!(" = person {p}"),
            None => String::new(),
        };
        outln!(
            "{}{person} at {} (timeline {timeline})",
            r.patient_id,
            r.at.to_rfc3339()
        );
        for (name, v) in &r.values {
            let value = match &v.value {
                Some(Value::Num(x)) => format!("{x}"),
                Some(Value::Text(s)) => s.clone(),
                None => "-".into(),
            };
            outln!("  {name:<32} {value:<24} {}", status(v.status));
        }
    }
    Ok(())
}
