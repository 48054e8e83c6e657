//! `audit verify` and `audit query`, and the record every command-line read of patient
//! data leaves in the store's audit trail before its output.

use anyhow::{Context as _, Result};

use crate::store::Store;

use super::AuditCommand;

/// Records a command-line read of patient data in the store's audit trail (principal
/// `local:<user>`, synced before this returns), so that the command's output never leaves
/// without its record.
pub(super) fn audit_cli_read(
    store: &Store,
    entry: crate::security::audit::AuditEntry,
) -> Result<()> {
    let dir = store.audit_dir()?;
    let log = crate::security::audit::AuditLog::open_with_keys(
        &dir,
        store.clock().clone(),
        crate::security::audit::AuditOptions {
            durability: crate::security::audit::Durability::Sync,
            ..crate::security::audit::AuditOptions::default()
        },
        store.encryption().map(|c| c.keyring().clone()),
    )
    .with_context(|| format!("opening the audit trail {}", dir.display()))?;
    log.append(entry)
        .with_context(|| format!("recording this read in the audit trail {}", dir.display()))?;
    Ok(())
}

/// Runs an `audit` subcommand over the audit trail of the store at `store`.
pub(super) fn run(command: AuditCommand, store: &std::path::Path) -> Result<()> {
    let default_dir = || -> Result<std::path::PathBuf> {
        Ok(crate::store::local_state_dir(store, "the audit trail")?.join("audit"))
    };
    // An encrypted store's trail is read with its key (loaded as the store opens). A local
    // directory with no store in it (a trail copied elsewhere, `--dir`) is read as plaintext.
    let keys = if crate::store::object::is_remote(store) || store.join("ward-store.json").exists() {
        crate::store::Store::open(store, crate::clock::system())?
            .encryption()
            .map(|c| c.keyring().clone())
    } else {
        None
    };
    match command {
        AuditCommand::Verify { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => default_dir()?,
            };
            let r = crate::security::audit::verify_with_keys(&dir, keys.as_ref())?;
            for t in &r.recovered {
                eprintln!(
                    "audit trail {}: a torn last line was sealed: {t}; its text: {:?}",
                    dir.display(),
                    t.text
                );
            }
            if let Some(p) = &r.problem {
                anyhow::bail!(
                    "audit trail {}: {p} ({} records verified before it)",
                    dir.display(),
                    r.records
                );
            }
            eprintln!(
                "audit trail {}: {} records in {} files verified; HEAD at seq {} ({} records after it, not yet flushed when HEAD was written)",
                dir.display(),
                r.records,
                r.files,
                r.head_seq.map_or("-".to_string(), |s| s.to_string()),
                r.after_head
            );
        }
        AuditCommand::Query {
            patient,
            principal,
            from,
            to,
            dir,
            json,
        } => {
            let dir = match dir {
                Some(d) => d,
                None => default_dir()?,
            };
            let time = |flag: &str, v: Option<String>| -> Result<_> {
                v.map(|s| {
                    crate::store::manifest::parse_time(&s)
                        .with_context(|| format!("{flag} {s:?}: use RFC 3339 or YYYY-MM-DD"))
                })
                .transpose()
            };
            let filter = crate::security::audit::QueryFilter {
                patient: patient.clone(),
                principal,
                from: time("--from", from)?,
                to: time("--to", to)?,
                limit: None,
            };
            let found = crate::security::audit::search_with_keys(&dir, &filter, keys.as_ref())?;
            for a in &found {
                let r = &a.record;
                if json {
                    outln!("{}", serde_json::to_string(r)?);
                } else {
                    outln!(
                        "{}  {:<20} {:<24} {:<22} {:<44} {:<7} {}",
                        r.time.to_rfc3339(),
                        r.entry.principal.as_deref().unwrap_or("(unauthenticated)"),
                        r.entry.roles.join(","),
                        r.entry.client.as_deref().unwrap_or("-"),
                        r.entry.rpc,
                        match r.entry.decision {
                            crate::security::audit::Outcome::Allowed => "allowed",
                            crate::security::audit::Outcome::Denied => "denied",
                            crate::security::audit::Outcome::System => "system",
                        },
                        r.entry.reason
                    );
                }
            }
            match &patient {
                Some(p) => eprintln!("{} records name patient {p}", found.len()),
                None => eprintln!("{} records match", found.len()),
            }
        }
    }
    Ok(())
}
