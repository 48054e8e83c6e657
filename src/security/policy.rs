//! The policy file: roles and the permissions they grant, deny by default.
//!
//! ```toml
//! [roles.clinician]
//! description = "online lookups for the patients on their care team"
//! permissions = ["online_lookup_care_team"]
//!
//! [roles.data-scientist]
//! permissions = ["historical_deidentified", "datasets_read"]
//! ```
//!
//! A role not in the file grants nothing; a permission name Ward does not know is an error
//! naming the file, the role and the name (a typo must not silently grant or deny).
//!
//! Two vocabularies, side by side here because they are two concepts: a [`Permission`] is
//! what a role grants (written in policy files), an [`Action`] is what a call does (the
//! route table maps every RPC to one, and audit records name it).
//! [`Action::permissions`] maps one to the other: an online lookup is allowed by two
//! permissions (any patient, or care-team patients only), a de-identified historical read
//! by either historical permission, and `online_lookup_care_team` is no action of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a role may do. Every RPC needs one of these (`docs/security.md` has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Online lookups for any patient (a model service).
    OnlineLookup,
    /// Online lookups restricted to the patients on the caller's care team (a clinician).
    OnlineLookupCareTeam,
    /// Historical (training set) reads with identifiers.
    HistoricalIdentified,
    /// Historical reads, de-identified by the export policy.
    HistoricalDeidentified,
    /// Materializing feature sets.
    Materialize,
    /// Ingesting source files.
    Ingest,
    /// Listing, showing, verifying and reading dataset versions.
    DatasetsRead,
    /// Writing datasets: tags, uploads.
    DatasetsWrite,
    /// Reading the audit trail.
    AuditRead,
    /// Administration (configuration reloads, cleanup).
    Admin,
}

impl Permission {
    /// Every permission, in a fixed order.
    pub const ALL: [Permission; 10] = [
        Permission::OnlineLookup,
        Permission::OnlineLookupCareTeam,
        Permission::HistoricalIdentified,
        Permission::HistoricalDeidentified,
        Permission::Materialize,
        Permission::Ingest,
        Permission::DatasetsRead,
        Permission::DatasetsWrite,
        Permission::AuditRead,
        Permission::Admin,
    ];

    /// The permission's name as written in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OnlineLookup => "online_lookup",
            Permission::OnlineLookupCareTeam => "online_lookup_care_team",
            Permission::HistoricalIdentified => "historical_identified",
            Permission::HistoricalDeidentified => "historical_deidentified",
            Permission::Materialize => "materialize",
            Permission::Ingest => "ingest",
            Permission::DatasetsRead => "datasets_read",
            Permission::DatasetsWrite => "datasets_write",
            Permission::AuditRead => "audit_read",
            Permission::Admin => "admin",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
                Error::invalid(
                    "permission",
                    format!("{s:?} is not one of {}", known.join(", ")),
                )
            })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<String, RoleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    #[serde(default)]
    description: Option<String>,
    permissions: Vec<String>,
}

/// Roles and the permissions they grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    roles: BTreeMap<String, BTreeSet<Permission>>,
    descriptions: BTreeMap<String, String>,
}

/// A role name: 1-64 of `a-z 0-9 _ - . :` (lowercase, so `Admin` and `admin` cannot differ).
pub fn validate_role(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.' | ':')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "role {name:?}: use 1-64 of a-z 0-9 _ - . : (lowercase)"
        ))
    }
}

impl Policy {
    /// Parses a policy from TOML; `origin` (a file name) is used in error messages.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the origin, the role and the field at fault.
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| Error::BadInput {
            location: origin.to_string(),
            field: "-".into(),
            reason: e.to_string(),
        })?;
        let mut policy = Policy::default();
        for (role, spec) in file.roles {
            validate_role(&role).map_err(|reason| Error::BadInput {
                location: origin.to_string(),
                field: format!("roles.{role}"),
                reason,
            })?;
            let mut perms = BTreeSet::new();
            for p in &spec.permissions {
                let perm = p.parse::<Permission>().map_err(|e| Error::BadInput {
                    location: origin.to_string(),
                    field: format!("roles.{role}.permissions"),
                    reason: e.to_string(),
                })?;
                perms.insert(perm);
            }
            if let Some(d) = spec.description {
                policy.descriptions.insert(role.clone(), d);
            }
            policy.roles.insert(role, perms);
        }
        Ok(policy)
    }

    /// Reads a policy file.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read; otherwise as [`Policy::from_toml`].
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Policy::from_toml(&text, &path.display().to_string())
    }

    /// A policy granting `perms` to `role` (and keeping what it had); for building policies
    /// in code.
    pub fn grant(mut self, role: &str, perms: &[Permission]) -> Self {
        self.roles
            .entry(role.to_string())
            .or_default()
            .extend(perms.iter().copied());
        self
    }

    /// Whether the policy knows `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// The roles the policy defines.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The permissions of one role (empty for an unknown role: deny by default).
    pub fn permissions_of(&self, role: &str) -> BTreeSet<Permission> {
        self.roles.get(role).cloned().unwrap_or_default()
    }

    /// The union of the permissions of `roles`.
    pub fn permissions<'a>(
        &self,
        roles: impl IntoIterator<Item = &'a String>,
    ) -> BTreeSet<Permission> {
        let mut out = BTreeSet::new();
        for r in roles {
            if let Some(p) = self.roles.get(r) {
                out.extend(p.iter().copied());
            }
        }
        out
    }
}

/// What a request does; every RPC maps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Online feature lookup for the listed patients.
    OnlineLookup,
    /// Historical (training set) read with identifiers.
    HistoricalIdentified,
    /// Historical read, de-identified.
    HistoricalDeidentified,
    /// Materialize a feature set.
    Materialize,
    /// Ingest source files.
    Ingest,
    /// List, show, verify or read dataset versions.
    DatasetsRead,
    /// Tag or upload datasets.
    DatasetsWrite,
    /// Query or verify the audit trail.
    AuditRead,
    /// Administration.
    Admin,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::OnlineLookup,
        Action::HistoricalIdentified,
        Action::HistoricalDeidentified,
        Action::Materialize,
        Action::Ingest,
        Action::DatasetsRead,
        Action::DatasetsWrite,
        Action::AuditRead,
        Action::Admin,
    ];

    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::OnlineLookup => "online_lookup",
            Action::HistoricalIdentified => "historical_identified",
            Action::HistoricalDeidentified => "historical_deidentified",
            Action::Materialize => "materialize",
            Action::Ingest => "ingest",
            Action::DatasetsRead => "datasets_read",
            Action::DatasetsWrite => "datasets_write",
            Action::AuditRead => "audit_read",
            Action::Admin => "admin",
        }
    }

    /// The permissions any one of which allows the action (for online lookups,
    /// `online_lookup_care_team` allows it only for care-team patients).
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Action::OnlineLookup => &[Permission::OnlineLookup, Permission::OnlineLookupCareTeam],
            Action::HistoricalIdentified => &[Permission::HistoricalIdentified],
            Action::HistoricalDeidentified => &[
                Permission::HistoricalDeidentified,
                Permission::HistoricalIdentified,
            ],
            Action::Materialize => &[Permission::Materialize],
            Action::Ingest => &[Permission::Ingest],
            Action::DatasetsRead => &[Permission::DatasetsRead],
            Action::DatasetsWrite => &[Permission::DatasetsWrite],
            Action::AuditRead => &[Permission::AuditRead],
            Action::Admin => &[Permission::Admin],
        }
    }

    /// Whether the patients an action touches are recorded in bulk (count and hash) rather
    /// than listed: historical reads, whose id list is in the training set's lineage.
    pub fn bulk_patients(self) -> bool {
        matches!(
            self,
            Action::HistoricalIdentified | Action::HistoricalDeidentified
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_denies_unknown_roles() {
        let p = Policy::from_toml(
            r#"
[roles.clinician]
permissions = ["online_lookup_care_team"]
[roles.steward]
description = "data steward"
permissions = ["historical_identified", "materialize", "ingest"]
"#,
            "policy.toml",
        )
        .unwrap();
        assert!(p.has_role("clinician"));
        assert_eq!(
            p.permissions_of("clinician")
                .into_iter()
                .collect::<Vec<_>>(),
            vec![Permission::OnlineLookupCareTeam]
        );
        assert!(p.permissions_of("nobody").is_empty());
        let roles = ["clinician".to_string(), "steward".to_string()];
        assert_eq!(p.permissions(roles.iter()).len(), 4);
    }

    #[test]
    fn unknown_permission_names_file_role_and_value() {
        let err = Policy::from_toml(
            "[roles.clinician]\npermissions = [\"online_lookups\"]\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("p.toml"), "{err}");
        assert!(err.contains("roles.clinician.permissions"), "{err}");
        assert!(err.contains("online_lookups"), "{err}");
    }

    #[test]
    fn bad_role_names_and_unknown_fields_are_errors() {
        assert!(Policy::from_toml("[roles.Admin]\npermissions = []\n", "p").is_err());
        assert!(Policy::from_toml("[roles.a]\npermissions = []\ngrant_all = true\n", "p").is_err());
        let err = Policy::from_toml("[roles.a]\npermissions = 3\n", "p").unwrap_err();
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn permission_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
    }
}
