//! `mpi`: `link`, `unlink`, `relink`, `explain`, `evaluate`; and `synth --sources`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use chrono::{DateTime, Utc};

use super::MpiCommand;
use crate::clock::SharedClock;
use crate::mpi::{self, Config, Index, Link, LINKS};
use crate::store::{Kind, Lineage, PutOptions, Store};

/// `ward synth --sources`.
pub(super) fn synth_sources(patients: u64, seed: u64, sources: &str, out: PathBuf) -> Result<()> {
    let list = crate::synth::sources::Source::parse_list(sources)?;
    let opts = crate::synth::SynthOptions {
        patients,
        seed,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let s = crate::synth::sources::write_sources(&opts, &list, &out)
        .with_context(|| format!("writing the sources to {}", out.display()))?;
    eprintln!(
        "synth: {} persons as {} source records ({} with demographic errors) in {:.1} s",
        s.persons,
        s.records,
        s.with_errors,
        started.elapsed().as_secs_f64()
    );
    for (path, bytes) in &s.files {
        eprintln!("  {} ({bytes} bytes)", path.display());
    }
    Ok(())
}

pub(super) async fn run(dir: &Path, clock: &SharedClock, command: MpiCommand) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    match command {
        MpiCommand::Link { rules } => link(&store, rules).await,
        MpiCommand::Unlink { a, b, reason } => decide(&store, clock, a, b, reason, "unlink").await,
        MpiCommand::Relink { a, b, reason } => decide(&store, clock, a, b, reason, "link").await,
        MpiCommand::Explain {
            patient,
            as_of,
            json,
        } => explain(&store, &patient, as_of.as_deref(), json).await,
        MpiCommand::Evaluate { truth, as_of } => evaluate(&store, &truth, as_of.as_deref()).await,
    }
}

fn as_of(s: Option<&str>) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| anyhow!("--as-of {s:?} is not an RFC 3339 time with an offset: {e}"))
    })
    .transpose()
}

/// The latest version of `name`, read whole, with its hash; `None` when there is none.
async fn latest(
    store: &Store,
    name: &str,
) -> Result<Option<(crate::hash::ContentHash, Vec<arrow::array::RecordBatch>)>> {
    let Some(head) = store.head(name)? else {
        return Ok(None);
    };
    let (_, batches) = store.read(&head.hash).await?;
    Ok(Some((head.hash, batches)))
}

async fn current_links(store: &Store) -> Result<(Vec<Link>, Vec<crate::hash::ContentHash>)> {
    match latest(store, LINKS).await? {
        Some((h, b)) => Ok((mpi::read_links(&b)?, vec![h])),
        None => Ok((Vec::new(), Vec::new())),
    }
}

async fn put(
    store: &Store,
    links: &[Link],
    inputs: Vec<crate::hash::ContentHash>,
    params: serde_json::Value,
) -> Result<()> {
    let batch = mpi::links_batch(links)?;
    let mut opts = PutOptions::new(LINKS, Kind::Other);
    opts.lineage = Lineage {
        inputs,
        definition: None,
        params,
    };
    opts.labels.insert("mpi".into(), "links".into());
    let out = store
        .put_batches(mpi::links_schema(), vec![batch], opts)
        .await?;
    outln!("{}", out.manifest.hash);
    Ok(())
}

async fn link(store: &Store, rules: Option<PathBuf>) -> Result<()> {
    let cfg = match &rules {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading the rules {}", p.display()))?;
            Config::parse(&text, &p.display().to_string())?
        }
        None => Config::default_rules(),
    };
    let (patients_hash, patients) = latest(store, "patients")
        .await?
        .ok_or_else(|| anyhow!("the store has no patients table: ingest first"))?;
    let patients = mpi::read_patients(&patients)?;
    let mut inputs = vec![patients_hash];
    let idents = match latest(store, "patient_identifiers").await? {
        Some((h, b)) => {
            inputs.push(h);
            mpi::read_identifiers(&b)?
        }
        None => Vec::new(),
    };
    let (previous, prev_hash) = current_links(store).await?;
    inputs.extend(prev_hash);
    let links = mpi::link(&cfg, &patients, &idents, &previous);
    let index = Index::new(links.clone());
    let clusters = index.clusters_at(None);
    let records: BTreeSet<&str> = patients.iter().map(|p| p.patient_id.as_str()).collect();
    let linked: usize = clusters.iter().map(|c| c.members.len()).sum();
    let mut per_rule: std::collections::BTreeMap<&str, usize> = Default::default();
    for l in &links {
        *per_rule.entry(l.rule.as_str()).or_default() += 1;
    }
    eprintln!(
        "mpi: {} records, {} links; {} persons of two or more records ({linked} records), {} records alone",
        records.len(),
        links.len(),
        clusters.len(),
        records.len().saturating_sub(linked)
    );
    for (rule, n) in per_rule {
        eprintln!("  {rule:<24} {n}");
    }
    let rule_names: Vec<serde_json::Value> = cfg
        .rules
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "fields": r.fields.iter().map(|f| f.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let params = serde_json::json!({
        "op": "mpi link",
        "rules": rule_names,
        "system_alias": cfg.system_alias,
    });
    put(store, &links, inputs, params).await
}

async fn decide(
    store: &Store,
    clock: &SharedClock,
    a: String,
    b: String,
    reason: String,
    decision: &str,
) -> Result<()> {
    if a == b {
        return Err(anyhow!("{a} and {b} are the same record"));
    }
    if reason.trim().is_empty() {
        return Err(anyhow!(
            "--reason is empty: say why, it is kept with the decision"
        ));
    }
    let (mut links, inputs) = current_links(store).await?;
    let (patient_id, other_id) = if a < b { (a, b) } else { (b, a) };
    let known_at = clock.now();
    eprintln!("mpi: {decision} {patient_id} {other_id} from {known_at}");
    links.push(Link {
        patient_id,
        other_id,
        decision: decision.to_string(),
        rule: "user".into(),
        evidence: reason,
        known_at,
    });
    let params = serde_json::json!({"op": format!("mpi {decision}")});
    put(store, &links, inputs, params).await
}

async fn explain(store: &Store, patient: &str, at: Option<&str>, json: bool) -> Result<()> {
    let t = as_of(at)?;
    let (links, _) = current_links(store).await?;
    let index = Index::new(links);
    let cluster = index.cluster_of(patient, t);
    let why = index.explain(&cluster, t);
    if json {
        let links: Vec<serde_json::Value> = why
            .iter()
            .map(|l| {
                serde_json::json!({
                    "patient_id": l.patient_id,
                    "other_id": l.other_id,
                    "decision": l.decision,
                    "rule": l.rule,
                    "evidence": l.evidence,
                    "known_at": l.known_at.to_rfc3339(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "person_id": cluster.person_id,
            "members": cluster.members,
            "links": links,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "person {} ({} records): {}",
        cluster.person_id,
        cluster.members.len(),
        cluster.members.join(" ")
    );
    for l in why {
        outln!(
            "  {}  {} {} {}  by {}: {}",
            l.known_at.to_rfc3339(),
            l.patient_id,
            if l.decision == "unlink" { "=/=" } else { "==" },
            l.other_id,
            l.rule,
            l.evidence
        );
    }
    Ok(())
}

async fn evaluate(store: &Store, truth: &Path, at: Option<&str>) -> Result<()> {
    let t = as_of(at)?;
    let text = std::fs::read_to_string(truth)
        .with_context(|| format!("reading the truth file {}", truth.display()))?;
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').collect();
        let [record, _source, person] = cols.as_slice() else {
            return Err(anyhow!(
                "{}:{}: expected record_id,source,person_id, got {line:?}",
                truth.display(),
                n + 1
            ));
        };
        map.insert(record.to_string(), person.to_string());
    }
    let (links, _) = current_links(store).await?;
    let index = Index::new(links);
    let q = mpi::evaluate(&index.clusters_at(t), &map);
    let persons: BTreeSet<&String> = map.values().collect();
    outln!(
        "records {}  persons {}  pairs linked right {}  wrong {}  missed {}",
        map.len(),
        persons.len(),
        q.true_pairs,
        q.false_pairs,
        q.missed_pairs
    );
    outln!("precision {:.5}  recall {:.5}", q.precision(), q.recall());
    Ok(())
}
