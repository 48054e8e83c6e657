//! The store commands: `init`, `key` (status, rotate), `put`, `datasets`, `show`, `verify`,
//! `export`, `tag`, `cleanup` and `rebuild`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::clock::SharedClock;
use crate::security::keyring::KeyProvider;
use crate::store::{Kind, ListFilter, Manifest, PutOptions, Store, VersionRef};

use super::audit::audit_cli_read;
use super::KeyCommand;

/// `ward init`: creates an empty store, encrypted with `--encrypt`.
pub(super) fn init(
    dir: &Path,
    clock: &SharedClock,
    encrypt: bool,
    key_provider: Option<String>,
) -> Result<()> {
    let provider = match (encrypt, key_provider) {
        (false, _) => None,
        (true, Some(p)) => Some(p.parse::<KeyProvider>()?),
        (true, None) => match crate::store::at_rest::provider_from_env()? {
            Some(p) => Some(p),
            None => anyhow::bail!(
                "--encrypt needs a key: --key-provider file:PATH|env:NAME|command:PROGRAM \
                 (or WARD_KEY_PROVIDER)"
            ),
        },
    };
    let store = Store::init(dir, clock.clone(), provider.as_ref())?;
    match store.encryption() {
        Some(e) => eprintln!(
            "ward store ready at {} (encrypted: key id {}, provider {})",
            store.root().display(),
            e.marker().key_id,
            e.marker().provider
        ),
        None => eprintln!("ward store ready at {}", store.root().display()),
    }
    Ok(())
}

/// `ward key status|rotate`.
pub(super) async fn key(dir: &Path, clock: &SharedClock, command: KeyCommand) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    match command {
        KeyCommand::Status => {
            let v = match store.encryption() {
                Some(e) => serde_json::json!({
                    "encrypted": true,
                    "key_id": e.marker().key_id,
                    "provider": e.marker().provider,
                    "loaded_from": e.provider().to_string(),
                }),
                None => serde_json::json!({ "encrypted": false }),
            };
            outln!("{v}");
        }
        KeyCommand::Rotate { new_key_provider } => {
            let new = new_key_provider.parse::<KeyProvider>()?;
            let report = store
                .rotate_key(&new)
                .await
                .with_context(|| format!("rotating the key of {}", store.root().display()))?;
            eprintln!(
                "rotated {} objects from key id {} to key id {} ({}); {} already under the new key; {} local files (audit trail, live feeds' logs{}) rewrapped, {} already under the new key",
                report.rewrapped,
                report.from_key_id,
                report.to_key_id,
                report.provider,
                report.already_current,
                report.local_rewrapped,
                report
                    .local_state
                    .as_deref()
                    .map_or(": none here".to_string(), |d| format!(" in {d}")),
                report.local_already_current,
            );
            outln!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

/// `ward put`: stores a Parquet file's table as a version; prints its hash.
pub(super) async fn put(
    dir: &Path,
    clock: &SharedClock,
    file: PathBuf,
    name: String,
    kind: String,
    labels: Vec<(String, String)>,
) -> Result<()> {
    let kind = kind.parse::<Kind>()?;
    if kind == Kind::Model {
        anyhow::bail!(
            "--kind model: model cards are made by `ward register` (docs/models.md), which checks the training set and records the card"
        );
    }
    let store = Store::open(dir, clock.clone())?;
    let mut opts = PutOptions::new(name, kind);
    opts.labels = labels.into_iter().collect();
    let out = store
        .put_parquet(&file, opts)
        .await
        .with_context(|| format!("putting {}", file.display()))?;
    let m = &out.manifest;
    eprintln!(
        "{} {} ({} rows, {} columns, {} bytes stored)",
        if out.created {
            "stored"
        } else {
            "already stored:"
        },
        m.name,
        m.rows,
        m.schema.len(),
        m.bytes
    );
    outln!("{}", m.hash);
    Ok(())
}

/// `ward datasets`: lists versions, newest first.
pub(super) fn datasets(
    dir: &Path,
    clock: &SharedClock,
    kind: Option<String>,
    name: Option<String>,
    json: bool,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let filter = ListFilter {
        kind: kind.map(|k| k.parse()).transpose()?,
        name,
    };
    let all = store.list(&filter)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for m in &all {
            outln!(
                "{}  {:<10} {:<24} {:>10} rows  {}",
                m.hash,
                m.kind,
                m.name,
                m.rows,
                m.created_at.to_rfc3339()
            );
        }
        eprintln!("{} versions", all.len());
    }
    Ok(())
}

/// `ward show`: prints a version's manifest.
pub(super) fn show(dir: &Path, clock: &SharedClock, reference: String, json: bool) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let m = store.resolve(&reference.parse::<VersionRef>()?)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print_manifest(&m);
    }
    Ok(())
}

/// `ward verify`: recomputes a version's hash and file digests from storage.
pub(super) async fn verify(dir: &Path, clock: &SharedClock, reference: String) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let m = store.resolve(&reference.parse::<VersionRef>()?)?;
    let report = store.verify(&m.hash).await?;
    eprintln!(
        "verified {}: {} rows, {} files, manifest sealed",
        m.name, report.rows, report.files
    );
    outln!("{}", report.hash);
    Ok(())
}

/// `ward export`: writes a version to a Parquet file (the read is audited first).
pub(super) async fn export(
    dir: &Path,
    clock: &SharedClock,
    reference: String,
    out: PathBuf,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let m = store.resolve(&reference.parse::<VersionRef>()?)?;
    // Recorded before the rows are written out (fail closed): the version's hash
    // names the rows read.
    let action = if m.labels.contains_key("deidentified") {
        "historical_deidentified"
    } else {
        "historical_identified"
    };
    let mut entry = crate::security::audit::AuditEntry::local("export", action);
    entry.datasets = vec![m.hash.to_string()];
    entry.outcome = Some("ok".into());
    audit_cli_read(&store, entry)?;
    let rows = store
        .export_parquet(&m.hash, &out)
        .await
        .with_context(|| format!("exporting {} to {}", m.hash, out.display()))?;
    eprintln!("wrote {rows} rows to {}", out.display());
    outln!("{}", m.hash);
    Ok(())
}

/// `ward tag`: points a tag at a version; `prod` only if its expectations hold, or with an
/// override reason, audited.
pub(super) async fn tag(
    dir: &Path,
    clock: &SharedClock,
    name: String,
    reference: String,
    override_reason: Option<String>,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let m = store.resolve(&reference.parse::<VersionRef>()?)?;
    let overridden =
        crate::quality::gate_tag(&store, &name, &m, override_reason.as_deref()).await?;
    if !overridden.is_empty() {
        let reason = override_reason.as_deref().unwrap_or("");
        let mut entry = crate::security::audit::AuditEntry::local("tag", "tag_override");
        entry.datasets = vec![m.hash.to_string()];
        entry.reason = crate::quality::override_note(&overridden, reason);
        entry.outcome = Some("ok".into());
        audit_cli_read(&store, entry)?;
        eprintln!(
            "{} failing expectation(s) overridden (recorded in the audit trail)",
            overridden.len()
        );
    }
    store.tag(&name, &m.hash)?;
    eprintln!("tag {name} -> {}", m.hash);
    outln!("{}", m.hash);
    Ok(())
}

/// `ward quality`: the stored data-quality report of a version.
pub(super) async fn quality(
    dir: &Path,
    clock: &SharedClock,
    reference: String,
    json: bool,
) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let m = store.resolve(&reference.parse::<VersionRef>()?)?;
    let Some(report) = crate::quality::report_of(&store, &m).await? else {
        anyhow::bail!(
            "{} ({}): no data-quality report (no expectations were declared for it)",
            m.hash,
            m.name
        );
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{} ({}): {}", m.hash, m.name, report.status().as_str());
        for line in report.lines() {
            outln!("  {line}");
        }
    }
    if report.status() == crate::quality::Status::Fail {
        anyhow::bail!(
            "{}: {} expectation(s) fail",
            m.hash,
            report.blocking().len()
        );
    }
    Ok(())
}

/// `ward cleanup`: removes leftovers of interrupted writes.
pub(super) fn cleanup(dir: &Path, clock: &SharedClock) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let report = store.cleanup()?;
    eprintln!(
        "removed {} leftovers of interrupted writes; {} writes in progress left alone",
        report.removed.len(),
        report.in_use.len()
    );
    Ok(())
}

/// `ward rebuild`: recomputes a derived version from its lineage (same hash or failure).
pub(super) async fn rebuild(dir: &Path, clock: &SharedClock, reference: String) -> Result<()> {
    let store = Store::open_existing(dir, clock.clone())?;
    let m = store.resolve(&reference.parse::<VersionRef>()?)?;
    let hash = match m.kind {
        Kind::Timeline => crate::features::rebuild(&store, &m.hash).await?,
        Kind::Training => crate::lookup::rebuild(&store, &m.hash).await?,
        other => anyhow::bail!(
            "{}: rebuilding {other} versions is not supported yet (timelines are)",
            m.hash
        ),
    };
    eprintln!("rebuilt {} from its lineage: same hash", m.name);
    outln!("{hash}");
    Ok(())
}

fn print_manifest(m: &Manifest) {
    outln!("hash:        {}", m.hash);
    outln!("name:        {}", m.name);
    outln!("kind:        {}", m.kind);
    outln!("rows:        {}", m.rows);
    outln!("bytes:       {}", m.bytes);
    outln!("created_at:  {}", m.created_at.to_rfc3339());
    outln!("ward:        {}", m.ward_version);
    outln!("schema:");
    for c in &m.schema {
        let null = if c.nullable { "" } else { " not null" };
        outln!("  {:<24} {}{}", c.name, c.data_type, null);
    }
    if !m.lineage.inputs.is_empty() || m.lineage.definition.is_some() {
        outln!("lineage:");
        for i in &m.lineage.inputs {
            outln!("  input      {i}");
        }
        if let Some(d) = &m.lineage.definition {
            outln!("  definition {d}");
        }
    }
    for (k, v) in &m.labels {
        outln!("label:       {k}={v}");
    }
}
