//! Authorization: whether a principal may take an action on some patients, decided in one
//! place ([`Authorizer`]) from the role policy ([`super::policy`]) and, for clinicians, the
//! care team ([`super::care_team`]). Deny by default.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};

use super::auth::Principal;
use super::care_team::CareTeamIndex;
use super::policy::{Action, Permission, Policy};

/// The outcome of [`Authorizer::authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// Why (the permission used, or what is missing). Never says anything about a patient
    /// the principal may not see.
    pub reason: String,
    /// The permission that allowed it.
    pub permission: Option<Permission>,
}

impl Decision {
    fn allow(p: Permission, reason: String) -> Self {
        Decision {
            allowed: true,
            reason,
            permission: Some(p),
        }
    }

    fn deny(reason: String) -> Self {
        Decision {
            allowed: false,
            reason,
            permission: None,
        }
    }
}

/// Decides, in one place, whether a principal may take an action on some patients.
#[derive(Debug)]
pub struct Authorizer {
    policy: ArcSwap<Policy>,
    care_team: ArcSwap<CareTeamIndex>,
}

impl Authorizer {
    /// An authorizer over `policy` with an empty care-team index.
    pub fn new(policy: Policy) -> Self {
        Authorizer {
            policy: ArcSwap::from_pointee(policy),
            care_team: ArcSwap::from_pointee(CareTeamIndex::empty()),
        }
    }

    /// Replaces the policy (requests in flight finish with the old one).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Replaces the care-team index (e.g. after a new `care_team` version is ingested).
    pub fn set_care_team(&self, index: CareTeamIndex) {
        self.care_team.store(Arc::new(index));
    }

    /// The permissions `principal`'s roles grant under the current policy.
    pub fn permissions_of(&self, principal: &Principal) -> BTreeSet<Permission> {
        self.policy.load().permissions(principal.roles.iter())
    }

    /// Whether `principal` may take `action` on `patients` at `now`. Deny by default: a
    /// principal with no role, or whose roles lack every permission the action accepts, is
    /// denied. A clinician (`online_lookup_care_team` only) is denied the whole request if any
    /// patient in it is not on their care team at `now`; the reason names the position in the
    /// request, never whether that patient exists.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        patients: &[String],
        now: DateTime<Utc>,
    ) -> Decision {
        let policy = self.policy.load();
        let perms = policy.permissions(principal.roles.iter());
        let roles = if principal.roles.is_empty() {
            "no role".to_string()
        } else {
            format!(
                "roles {}",
                principal
                    .roles
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let accepted = action.permissions();
        let Some(&perm) = accepted.iter().find(|p| perms.contains(*p)) else {
            let names: Vec<&str> = accepted.iter().map(|p| p.as_str()).collect();
            return Decision::deny(format!(
                "{} ({roles}) lacks {} for {action}",
                principal.subject,
                names.join(" or ")
            ));
        };
        if perm != Permission::OnlineLookupCareTeam {
            return Decision::allow(perm, format!("{perm} granted to {roles}"));
        }
        let Some(clinician) = principal.clinician_id.as_deref() else {
            return Decision::deny(format!(
                "{} has no clinician id, so no care team",
                principal.subject
            ));
        };
        let team = self.care_team.load();
        for (i, p) in patients.iter().enumerate() {
            if !team.on_team(clinician, p, now) {
                return Decision::deny(format!(
                    "patient #{} of the request is not on the care team of clinician {clinician} at {}",
                    i + 1,
                    now.to_rfc3339()
                ));
            }
        }
        Decision::allow(
            perm,
            format!(
                "{perm}: {} patient(s) on the care team of clinician {clinician}",
                patients.len()
            ),
        )
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::curated::{CareTeamMember, RowMeta};
    use crate::security::auth::Source;

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            subject: "dr-a".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            source: Source::ApiToken,
            issuer: None,
            key_id: None,
            clinician_id: Some("dr-a".into()),
            expires_at: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn authorizer() -> Authorizer {
        let policy = Policy::default()
            .grant("clinician", &[Permission::OnlineLookupCareTeam])
            .grant("model-service", &[Permission::OnlineLookup])
            .grant("data-scientist", &[Permission::HistoricalDeidentified])
            .grant("steward", &[Permission::HistoricalIdentified]);
        let a = Authorizer::new(policy);
        a.set_care_team(CareTeamIndex::from_members(&[CareTeamMember {
            patient_id: "p1".into(),
            clinician_id: "dr-a".into(),
            role: None,
            valid_from: t("2026-01-01T00:00:00Z"),
            valid_to: None,
            meta: RowMeta {
                source_system: "t".into(),
                source_id: "1".into(),
                known_at: t("2026-01-01T00:00:00Z"),
                retracted_at: None,
            },
        }]));
        a
    }

    #[test]
    fn permission_table() {
        let a = authorizer();
        let now = t("2026-02-01T00:00:00Z");
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], Action, &[&str], bool)] = &[
            (&["clinician"], Action::OnlineLookup, &["p1"], true),
            (&["clinician"], Action::OnlineLookup, &["p2"], false),
            (&["clinician"], Action::OnlineLookup, &["p1", "p2"], false),
            (&["clinician"], Action::HistoricalDeidentified, &[], false),
            (&["model-service"], Action::OnlineLookup, &["p2"], true),
            (
                &["model-service"],
                Action::HistoricalDeidentified,
                &[],
                false,
            ),
            (
                &["data-scientist"],
                Action::HistoricalDeidentified,
                &["p2"],
                true,
            ),
            (
                &["data-scientist"],
                Action::HistoricalIdentified,
                &["p2"],
                false,
            ),
            (&["steward"], Action::HistoricalIdentified, &["p2"], true),
            (&["steward"], Action::HistoricalDeidentified, &["p2"], true),
            (&["steward"], Action::Ingest, &[], false),
            (&[], Action::DatasetsRead, &[], false),
            (&["unknown-role"], Action::DatasetsRead, &[], false),
        ];
        for (roles, action, patients, want) in cases {
            let d = a.authorize(&principal(roles), *action, &ids(patients), now);
            assert_eq!(
                d.allowed, *want,
                "{roles:?} {action} {patients:?}: {}",
                d.reason
            );
        }
        // Before the assignment started, p1 is not on the team either.
        let d = a.authorize(
            &principal(&["clinician"]),
            Action::OnlineLookup,
            &ids(&["p1"]),
            t("2025-12-01T00:00:00Z"),
        );
        assert!(!d.allowed);
    }

    #[test]
    fn care_team_denials_do_not_reveal_the_patient() {
        let a = authorizer();
        let now = t("2026-02-01T00:00:00Z");
        let p = principal(&["clinician"]);
        // "p-exists-elsewhere" could be a real patient, "zzz" not: same message.
        let d1 = a.authorize(
            &p,
            Action::OnlineLookup,
            &["p-exists-elsewhere".into()],
            now,
        );
        let d2 = a.authorize(&p, Action::OnlineLookup, &["zzz".into()], now);
        assert_eq!(d1.reason, d2.reason);
        assert!(!d1.reason.contains("p-exists-elsewhere"));
    }
}
