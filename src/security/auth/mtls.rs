//! Mutual TLS: a client certificate (already verified by the TLS layer against the client CA)
//! mapped to a principal by its subject CN or a subject alternative name.
//!
//! ```toml
//! [mtls]
//! identity = "san_dns"          # cn | san_dns | san_uri | san_email
//! [mtls.principals."scoring.ward.internal"]
//! roles = ["model-service"]
//! ```
//!
//! Only identities listed under `principals` are accepted: a certificate the CA signed for
//! some other purpose does not become a Ward principal by accident.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use x509_parser::extensions::GeneralName;

use super::{Principal, Source};
use crate::error::{Error, Result};
use crate::security::policy::validate_role;

/// Which part of the certificate names the principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identity {
    /// The subject's common name.
    Cn,
    /// A DNS subject alternative name.
    SanDns,
    /// A URI subject alternative name (e.g. a SPIFFE id).
    SanUri,
    /// An e-mail (RFC 822) subject alternative name.
    SanEmail,
}

/// One principal a certificate identity maps to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPrincipal {
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The clinician id for care-team checks (default: the identity).
    #[serde(default)]
    pub clinician_id: Option<String>,
}

/// The `[mtls]` section of the security configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Which certificate field names the principal.
    pub identity: Identity,
    /// Accepted identities and their principals.
    #[serde(default)]
    pub principals: BTreeMap<String, CertPrincipal>,
}

/// Maps verified client certificates to principals.
#[derive(Debug, Clone)]
pub struct MtlsMapper {
    identity: Identity,
    principals: BTreeMap<String, (BTreeSet<String>, Option<String>)>,
}

impl MtlsMapper {
    /// Checks the configuration; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::BadInput`] naming the principal with a bad role name.
    pub fn new(cfg: &MtlsConfig, origin: &str) -> Result<MtlsMapper> {
        let mut principals = BTreeMap::new();
        for (id, p) in &cfg.principals {
            let mut roles = BTreeSet::new();
            for r in &p.roles {
                validate_role(r).map_err(|reason| Error::BadInput {
                    location: origin.to_string(),
                    field: format!("mtls.principals.{id}.roles"),
                    reason,
                })?;
                roles.insert(r.clone());
            }
            principals.insert(id.clone(), (roles, p.clinician_id.clone()));
        }
        Ok(MtlsMapper {
            identity: cfg.identity,
            principals,
        })
    }

    /// The principal of a client certificate (DER), which the TLS layer has verified.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when the certificate cannot be parsed, has no identity of
    /// the configured kind, or its identity is not configured.
    pub fn principal(&self, cert_der: &[u8]) -> Result<Principal> {
        let unauth = |reason: String| Error::Unauthenticated { reason };
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| unauth(format!("the client certificate cannot be parsed: {e}")))?;
        let candidates: Vec<String> = match self.identity {
            Identity::Cn => cert
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_string))
                .collect(),
            kind => {
                let san = cert.subject_alternative_name().map_err(|e| {
                    unauth(format!("the client certificate's SAN is malformed: {e}"))
                })?;
                san.map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .filter_map(|g| match (kind, g) {
                            (Identity::SanDns, GeneralName::DNSName(n))
                            | (Identity::SanUri, GeneralName::URI(n))
                            | (Identity::SanEmail, GeneralName::RFC822Name(n)) => {
                                Some(n.to_string())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
            }
        };
        if candidates.is_empty() {
            return Err(unauth(format!(
                "the client certificate has no {:?} identity",
                self.identity
            )));
        }
        let (id, (roles, clinician)) = candidates
            .iter()
            .find_map(|c| self.principals.get_key_value(c))
            .ok_or_else(|| {
                unauth(format!(
                    "the client certificate identity {:?} is not mapped to a principal",
                    candidates[0]
                ))
            })?;
        Ok(Principal {
            subject: id.clone(),
            roles: roles.clone(),
            source: Source::Mtls,
            issuer: Some(cert.issuer().to_string()),
            key_id: None,
            clinician_id: Some(clinician.clone().unwrap_or_else(|| id.clone())),
            expires_at: chrono::DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn mapper(identity: Identity, id: &str) -> MtlsMapper {
        let mut principals = BTreeMap::new();
        principals.insert(
            id.to_string(),
            CertPrincipal {
                roles: vec!["model-service".into()],
                clinician_id: None,
            },
        );
        MtlsMapper::new(
            &MtlsConfig {
                identity,
                principals,
            },
            "sec.toml",
        )
        .unwrap()
    }

    #[test]
    fn maps_by_cn_or_san() {
        let der = cert("scoring-1", &["scoring.ward.internal", "other.example"]);
        let p = mapper(Identity::Cn, "scoring-1").principal(&der).unwrap();
        assert_eq!(p.subject, "scoring-1");
        assert_eq!(p.source, Source::Mtls);
        assert!(p.roles.contains("model-service"));
        let p = mapper(Identity::SanDns, "other.example")
            .principal(&der)
            .unwrap();
        assert_eq!(p.subject, "other.example");
    }

    #[test]
    fn unmapped_or_missing_identities_are_unauthenticated() {
        let der = cert("scoring-1", &["scoring.ward.internal"]);
        for (m, want) in [
            (mapper(Identity::Cn, "someone-else"), "not mapped"),
            (mapper(Identity::SanUri, "spiffe://x"), "no SanUri"),
        ] {
            let e = m.principal(&der).unwrap_err();
            assert!(matches!(e, Error::Unauthenticated { .. }));
            assert!(e.to_string().contains(want), "{e}");
        }
        let e = mapper(Identity::Cn, "x")
            .principal(b"not a certificate")
            .unwrap_err();
        assert!(matches!(e, Error::Unauthenticated { .. }), "{e}");
    }
}
