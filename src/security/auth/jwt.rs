//! Bearer JWTs verified against the keys of configured issuers (JWKS files).
//!
//! Only RS256 and ES256 are accepted, and a token's `alg` must be the algorithm its key
//! declares (`alg` in the JWK, else the one its type implies: RSA → RS256, EC P-256 → ES256).
//! So `alg: none`, HS256 (e.g. "signed" with the public key as an HMAC secret) and any other
//! algorithm are refused before a signature is looked at. Symmetric (`oct`) keys in a JWKS
//! are a configuration error.
//!
//! The key decides the issuer: each key belongs to the issuer whose JWKS holds it, and the
//! token's `iss` must name that issuer. `aud` must hold one of the issuer's audiences.
//! `exp` is required and `nbf` checked when present, both against the injected clock with the
//! issuer's clock skew (jsonwebtoken's own time checks are off: they read the system clock).
//!
//! Roles come from a claim (`roles` by default; an array of strings or a space-separated
//! string, so a SMART `scope` claim works with `role_prefix`). Each role must be granted to
//! the key (`key_grants`) or, without an entry for the key, to the issuer (`grants`): a role
//! claimed beyond that is refused with [`Error::PermissionDenied`].
//!
//! A token that verified is remembered (by the BLAKE3 of its text, up to
//! [`VERIFIED_CACHE_MAX`] tokens, forgotten when keys change): a client sends the same token
//! with every request until it expires, and checking an ES256 or RS256 signature costs tens
//! of microseconds. Only the signature and the time-independent claims are remembered: `exp`
//! and `nbf` are checked against the clock on every request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{Principal, Source};
use crate::error::{Error, Result};
use crate::security::policy::validate_role;

fn default_skew() -> u64 {
    60
}

fn default_roles_claim() -> String {
    "roles".into()
}

fn default_subject_claim() -> String {
    "sub".into()
}

/// One trusted token issuer (`[[jwt]]` in the security configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` value tokens of this issuer carry.
    pub issuer: String,
    /// Accepted `aud` values (a token must name at least one).
    pub audience: Vec<String>,
    /// The JWKS file holding the issuer's public keys (relative to the configuration file).
    pub jwks: PathBuf,
    /// Allowed clock skew for `exp` and `nbf`, seconds (default 60).
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// The claim holding the roles (default `roles`; e.g. `scope` for SMART scopes).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Only values starting with this prefix are roles (the prefix is removed); others
    /// (e.g. SMART `system/Observation.read`) are ignored. Default: every value is a role.
    #[serde(default)]
    pub role_prefix: Option<String>,
    /// The claim naming the principal (default `sub`).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The claim naming the clinician for care-team checks (e.g. SMART `fhirUser`,
    /// `Practitioner/123` → `123`). Default: the subject.
    #[serde(default)]
    pub clinician_claim: Option<String>,
    /// The roles this issuer may grant.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Per key id (`kid`): the roles that key may grant, replacing `grants` for that key.
    #[serde(default)]
    pub key_grants: BTreeMap<String, Vec<String>>,
}

#[derive(Debug)]
struct IssuerSettings {
    issuer: String,
    audience: BTreeSet<String>,
    skew_secs: i64,
    roles_claim: String,
    role_prefix: Option<String>,
    subject_claim: String,
    clinician_claim: Option<String>,
}

#[derive(Clone)]
struct KeyEntry {
    issuer: Arc<IssuerSettings>,
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    grants: BTreeSet<String>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("issuer", &self.issuer.issuer)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// How many verified tokens a [`JwtVerifier`] remembers (all are forgotten when it is full).
pub const VERIFIED_CACHE_MAX: usize = 16_384;

/// Verifies bearer JWTs against the keys of the configured issuers.
///
/// A verifier loaded from JWKS files ([`JwtVerifier::load`]) follows key rotation: after
/// [`request_jwks_check`] (the server calls it every `[reload] interval_secs` and on SIGHUP),
/// its next verification first compares the files' contents with those it loaded and, when
/// one changed, swaps in the new keys and forgets the tokens it remembered. A file that no
/// longer loads is logged and the current keys kept.
#[derive(Debug, Default)]
pub struct JwtVerifier {
    keys: arc_swap::ArcSwap<Vec<KeyEntry>>,
    verified: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
    /// The files the keys came from (`None`: keys added by [`JwtVerifier::add_issuer`]).
    sources: Option<Sources>,
    /// Incremented when reloaded keys are swapped in: a token verified against the keys of
    /// an earlier generation is not remembered.
    generation: std::sync::atomic::AtomicU64,
}

/// Asks every verifier loaded from JWKS files to check them for changes before its next
/// verification (cheap when nothing changed: one read of each file).
pub fn request_jwks_check() {
    JWKS_CHECKS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
}

/// Incremented by [`request_jwks_check`].
static JWKS_CHECKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where a loaded verifier's keys came from, and what they were.
#[derive(Debug)]
struct Sources {
    issuers: Vec<IssuerConfig>,
    base: PathBuf,
    /// The value of [`JWKS_CHECKS`] last acted on.
    seen: std::sync::atomic::AtomicU64,
    /// BLAKE3 of each JWKS file as last loaded (or last found unloadable).
    digests: Mutex<Vec<Option<[u8; 32]>>>,
}

fn digest_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|b| *blake3::hash(&b).as_bytes())
}

/// A token whose signature and time-independent claims checked out.
#[derive(Debug)]
struct Verified {
    principal: Principal,
    exp: i64,
    nbf: Option<i64>,
    skew_secs: i64,
}

impl Verified {
    fn check_time(&self, now: DateTime<Utc>) -> Result<()> {
        let now_s = now.timestamp();
        if now_s > self.exp.saturating_add(self.skew_secs) {
            return Err(unauth("the token has expired"));
        }
        if let Some(nbf) = self.nbf {
            if now_s.saturating_add(self.skew_secs) < nbf {
                return Err(unauth("the token is not valid yet (nbf)"));
            }
        }
        Ok(())
    }
}

fn unauth(reason: impl Into<String>) -> Error {
    Error::Unauthenticated {
        reason: reason.into(),
    }
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES384 => "ES384",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

impl JwtVerifier {
    /// A verifier trusting no issuer (every token is refused).
    pub fn empty() -> Self {
        JwtVerifier::default()
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// Number of keys loaded.
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Loads the issuers' JWKS files; relative paths are resolved against `base`.
    ///
    /// # Errors
    /// [`Error::Io`] for an unreadable file; [`Error::BadInput`] naming the file and key for
    /// a malformed JWKS, a symmetric key, an unsupported algorithm or curve, a bad role name.
    pub fn load(issuers: &[IssuerConfig], base: &Path) -> Result<JwtVerifier> {
        let mut v = JwtVerifier::default();
        let seen = JWKS_CHECKS.load(std::sync::atomic::Ordering::Acquire);
        let mut digests = Vec::with_capacity(issuers.len());
        for (i, cfg) in issuers.iter().enumerate() {
            let path = base.join(&cfg.jwks);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            digests.push(Some(*blake3::hash(text.as_bytes()).as_bytes()));
            v.add_issuer(cfg, &text, &path.display().to_string())
                .map_err(|e| match e {
                    Error::BadInput { .. } => e,
                    other => Error::BadInput {
                        location: format!("jwt[{i}]"),
                        field: "-".into(),
                        reason: other.to_string(),
                    },
                })?;
        }
        v.sources = Some(Sources {
            issuers: issuers.to_vec(),
            base: base.to_path_buf(),
            seen: std::sync::atomic::AtomicU64::new(seen),
            digests: Mutex::new(digests),
        });
        Ok(v)
    }

    /// After [`request_jwks_check`]: reloads the JWKS files if one changed (see the type's
    /// documentation). One caller checks at a time; the others go on with the current keys.
    fn check_sources(&self) {
        use std::sync::atomic::Ordering;
        let Some(src) = &self.sources else {
            return;
        };
        let asked = JWKS_CHECKS.load(Ordering::Acquire);
        if src.seen.load(Ordering::Acquire) == asked {
            return;
        }
        let Ok(mut digests) = src.digests.try_lock() else {
            return;
        };
        src.seen.store(asked, Ordering::Release);
        let now: Vec<Option<[u8; 32]>> = src
            .issuers
            .iter()
            .map(|c| digest_of(&src.base.join(&c.jwks)))
            .collect();
        if now == *digests {
            return;
        }
        match JwtVerifier::load(&src.issuers, &src.base) {
            Ok(fresh) => {
                let keys = fresh.keys.load_full();
                tracing::info!(keys = keys.len(), "JWKS changed: keys reloaded");
                self.keys.store(keys);
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if let Ok(mut m) = self.verified.lock() {
                    m.clear();
                }
                *digests = fresh
                    .sources
                    .map(|s| s.digests.into_inner().unwrap_or_default())
                    .unwrap_or(now);
            }
            Err(e) => {
                tracing::warn!("JWKS changed but does not load, keeping the current keys: {e}");
                *digests = now;
            }
        }
    }

    /// Adds an issuer whose JWKS is `jwks_json`; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`JwtVerifier::load`].
    pub fn add_issuer(&mut self, cfg: &IssuerConfig, jwks_json: &str, origin: &str) -> Result<()> {
        if let Ok(m) = self.verified.get_mut() {
            m.clear();
        }
        let mut all: Vec<KeyEntry> = self.keys.load().iter().cloned().collect();
        let bad = |field: String, reason: String| Error::BadInput {
            location: origin.to_string(),
            field,
            reason,
        };
        if cfg.audience.is_empty() {
            return Err(bad(
                "audience".into(),
                format!("issuer {:?} has no audience", cfg.issuer),
            ));
        }
        let role_set = |roles: &[String], field: &str| -> Result<BTreeSet<String>> {
            roles
                .iter()
                .map(|r| {
                    validate_role(r)
                        .map(|()| r.clone())
                        .map_err(|reason| bad(field.to_string(), reason))
                })
                .collect()
        };
        let grants = role_set(&cfg.grants, "grants")?;
        let mut key_grants = BTreeMap::new();
        for (kid, roles) in &cfg.key_grants {
            key_grants.insert(kid.clone(), role_set(roles, &format!("key_grants.{kid}"))?);
        }
        let set: JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| bad("keys".into(), e.to_string()))?;
        let settings = Arc::new(IssuerSettings {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.iter().cloned().collect(),
            skew_secs: i64::try_from(cfg.clock_skew_secs).unwrap_or(i64::MAX),
            roles_claim: cfg.roles_claim.clone(),
            role_prefix: cfg.role_prefix.clone(),
            subject_claim: cfg.subject_claim.clone(),
            clinician_claim: cfg.clinician_claim.clone(),
        });
        let mut seen_kids = BTreeSet::new();
        for (k, jwk) in set.keys.iter().enumerate() {
            let field = format!(
                "keys[{k}]{}",
                jwk.common
                    .key_id
                    .as_deref()
                    .map(|id| format!(" (kid {id})"))
                    .unwrap_or_default()
            );
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue; // an encryption key never verifies a signature
            }
            let implied = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) => {
                    if ec.curve != EllipticCurve::P256 {
                        return Err(bad(
                            field,
                            format!("curve {:?} is not supported (use P-256, ES256)", ec.curve),
                        ));
                    }
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKey(_) => {
                    return Err(bad(
                        field,
                        "symmetric (oct) keys are not accepted: use RS256 or ES256 keys".into(),
                    ))
                }
                AlgorithmParameters::OctetKeyPair(_) => {
                    return Err(bad(
                        field,
                        "OKP keys are not supported: use RS256 or ES256".into(),
                    ))
                }
            };
            let alg = match jwk.common.key_algorithm {
                None => implied,
                Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Algorithm::RS256,
                Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Algorithm::ES256,
                Some(other) => {
                    return Err(bad(
                        field,
                        format!(
                            "alg {other:?} is not accepted for this key (accepted: RS256 for RSA, ES256 for EC P-256)"
                        ),
                    ))
                }
            };
            if let Some(kid) = &jwk.common.key_id {
                if !seen_kids.insert(kid.clone()) {
                    return Err(bad(field, "duplicate kid".into()));
                }
                if all.iter().any(|e| e.kid.as_deref() == Some(kid)) {
                    return Err(bad(field, "kid already used by another issuer".into()));
                }
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(field.clone(), e.to_string()))?;
            let grants = jwk
                .common
                .key_id
                .as_ref()
                .and_then(|kid| key_grants.get(kid).cloned())
                .unwrap_or_else(|| grants.clone());
            all.push(KeyEntry {
                issuer: settings.clone(),
                kid: jwk.common.key_id.clone(),
                alg,
                key,
                grants,
            });
        }
        self.keys.store(Arc::new(all));
        Ok(())
    }

    /// Verifies `token` at time `now` and returns its principal.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a malformed, unsigned, wrongly signed, expired, not yet
    /// valid, wrong-issuer or wrong-audience token; [`Error::PermissionDenied`] for an
    /// authentic token claiming a role its key does not grant. Reasons never echo the token.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal> {
        self.check_sources();
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned());
        let verified = match known {
            Some(v) => v,
            None => {
                let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
                let v = Arc::new(self.verify_signed(token)?);
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= VERIFIED_CACHE_MAX {
                        m.clear();
                    }
                    // Keys swapped in meanwhile: the result may rest on a retired key.
                    if self.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
                        m.insert(digest, v.clone());
                    }
                }
                v
            }
        };
        verified.check_time(now)?;
        Ok(verified.principal.clone())
    }

    /// Number of verified tokens remembered.
    pub fn remembered(&self) -> usize {
        self.verified.lock().map_or(0, |m| m.len())
    }

    /// Everything but the time checks.
    fn verify_signed(&self, token: &str) -> Result<Verified> {
        if token.split('.').count() != 3 {
            return Err(unauth(
                "the bearer token is not a JWT (three dot-separated parts)",
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            unauth(
                "the token header is malformed or names an algorithm that is not accepted \
                 (only RS256 and ES256; never none)",
            )
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(unauth(format!(
                "algorithm {} is not accepted (only RS256 and ES256)",
                alg_name(header.alg)
            )));
        }
        let keys = self.keys.load();
        let candidates: Vec<&KeyEntry> = match &header.kid {
            Some(kid) => {
                let by_kid: Vec<&KeyEntry> = keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if by_kid.is_empty() {
                    return Err(unauth(format!("no trusted key has kid {kid:?}")));
                }
                by_kid
            }
            None => keys.iter().collect(),
        };
        let matching: Vec<&KeyEntry> = candidates
            .iter()
            .copied()
            .filter(|k| k.alg == header.alg)
            .collect();
        if matching.is_empty() {
            return Err(unauth(format!(
                "the token's algorithm {} is not the one its key declares",
                alg_name(header.alg)
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut verified = None;
        for k in matching {
            if let Ok(data) = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &k.key,
                &validation,
            ) {
                verified = Some((k, data.claims));
                break;
            }
        }
        let (key, claims) =
            verified.ok_or_else(|| unauth("the token's signature does not verify"))?;
        let iss = &key.issuer;
        match claims.get("iss").and_then(|v| v.as_str()) {
            Some(i) if i == iss.issuer => {}
            Some(_) => return Err(unauth("the token's issuer is not the issuer of its key")),
            None => return Err(unauth("the token has no iss claim")),
        }
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => iss.audience.contains(a),
            Some(serde_json::Value::Array(v)) => v
                .iter()
                .any(|a| a.as_str().is_some_and(|a| iss.audience.contains(a))),
            _ => false,
        };
        if !aud_ok {
            return Err(unauth("the token's audience does not name this service"));
        }
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or_else(|| unauth("the token has no numeric exp claim"))?;
        let nbf = match claims.get("nbf") {
            Some(nbf) => {
                Some(numeric_date(nbf).ok_or_else(|| unauth("the token's nbf is not a number"))?)
            }
            None => None,
        };
        let subject = claims
            .get(&iss.subject_claim)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauth(format!("the token has no {} claim", iss.subject_claim)))?
            .to_string();
        let mut roles = BTreeSet::new();
        let mut add = |value: &str| {
            for r in value.split_whitespace() {
                let role = match &iss.role_prefix {
                    Some(p) => match r.strip_prefix(p.as_str()) {
                        Some(role) => role,
                        None => continue,
                    },
                    None => r,
                };
                roles.insert(role.to_string());
            }
        };
        match claims.get(&iss.roles_claim) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) => add(s),
            Some(serde_json::Value::Array(v)) => {
                for r in v {
                    match r.as_str() {
                        Some(s) => add(s),
                        None => {
                            return Err(unauth(format!(
                                "the {} claim holds a value that is not a string",
                                iss.roles_claim
                            )))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(unauth(format!(
                    "the {} claim is neither a string nor an array of strings",
                    iss.roles_claim
                )))
            }
        }
        for r in &roles {
            if !key.grants.contains(r) {
                return Err(Error::PermissionDenied {
                    reason: format!(
                        "the token claims role {r:?}, which issuer {:?}{} does not grant",
                        iss.issuer,
                        key.kid
                            .as_deref()
                            .map(|k| format!(" (key {k})"))
                            .unwrap_or_default()
                    ),
                });
            }
        }
        let clinician_id = match &iss.clinician_claim {
            Some(c) => claims.get(c).and_then(|v| v.as_str()).map(|v| {
                v.rsplit_once("Practitioner/")
                    .map(|(_, id)| id.to_string())
                    .unwrap_or_else(|| v.to_string())
            }),
            None => Some(subject.clone()),
        };
        let principal = Principal {
            subject,
            roles,
            source: Source::Jwt,
            issuer: Some(iss.issuer.clone()),
            key_id: key.kid.clone(),
            clinician_id,
            expires_at: DateTime::from_timestamp(exp, 0),
        };
        Ok(Verified {
            principal,
            exp,
            nbf,
            skew_secs: iss.skew_secs,
        })
    }
}

/// A JWT NumericDate (seconds; a fraction is truncated).
fn numeric_date(v: &serde_json::Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IssuerConfig {
        IssuerConfig {
            issuer: "https://idp.test".into(),
            audience: vec!["ward".into()],
            jwks: "unused".into(),
            clock_skew_secs: 60,
            roles_claim: "roles".into(),
            role_prefix: None,
            subject_claim: "sub".into(),
            clinician_claim: None,
            grants: vec!["clinician".into()],
            key_grants: BTreeMap::new(),
        }
    }

    #[test]
    fn symmetric_keys_and_foreign_curves_are_refused_at_load() {
        let mut v = JwtVerifier::empty();
        let err = v
            .add_issuer(
                &cfg(),
                r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#,
                "jwks.json",
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("jwks.json") && err.contains("kid s") && err.contains("symmetric"),
            "{err}"
        );
        let err = v
            .add_issuer(
                &cfg(),
                r#"{"keys":[{"kty":"RSA","kid":"r","alg":"HS256","n":"AQAB","e":"AQAB"}]}"#,
                "jwks.json",
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("HS256"), "{err}");
        assert!(v.is_empty());
    }

    #[test]
    fn malformed_tokens_are_unauthenticated() {
        let v = JwtVerifier::empty();
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJub25lIn0.e30.",
        ] {
            let e = v.verify(t, DateTime::UNIX_EPOCH).unwrap_err();
            assert!(matches!(e, Error::Unauthenticated { .. }), "{t}: {e}");
        }
    }

    fn b64url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn smart_scope_roles_and_fhir_user_clinician() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k",
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
        }]});
        let mut c = cfg();
        c.roles_claim = "scope".into();
        c.role_prefix = Some("ward/".into());
        c.clinician_claim = Some("fhirUser".into());
        let mut v = JwtVerifier::empty();
        v.add_issuer(&c, &jwks.to_string(), "jwks.json").unwrap();
        assert_eq!(v.key_count(), 1);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let claims = serde_json::json!({
            "iss": "https://idp.test", "aud": ["other", "ward"], "sub": "client-7",
            "exp": now.timestamp() + 60,
            "scope": "system/Observation.read ward/clinician launch",
            "fhirUser": "https://fhir.example/Practitioner/dr-42",
        });
        let key = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        // No kid in the header: the key is found by algorithm.
        let token =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::ES256), &claims, &key)
                .unwrap();
        let p = v.verify(&token, now).unwrap();
        assert_eq!(p.subject, "client-7");
        assert_eq!(p.roles.iter().collect::<Vec<_>>(), ["clinician"]);
        assert_eq!(p.clinician_id.as_deref(), Some("dr-42"));
        assert_eq!(p.key_id.as_deref(), Some("k"));
        // A scope naming a role the issuer does not grant is refused.
        let mut escalate = claims.clone();
        escalate["scope"] = serde_json::json!("ward/clinician ward/admin");
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::ES256),
            &escalate,
            &key,
        )
        .unwrap();
        let e = v.verify(&token, now).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e}");
        assert!(e.to_string().contains("admin"), "{e}");
        // Only the verified token is remembered; remembered, it is still refused once it
        // expires (exp is checked on every call, against the caller's clock), and a
        // different token (one byte changed) is verified afresh.
        assert_eq!(v.remembered(), 1);
        let good =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::ES256), &claims, &key)
                .unwrap();
        assert_eq!(v.verify(&good, now).unwrap(), p);
        let later = now + chrono::Duration::seconds(200);
        let e = v.verify(&good, later).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let mut forged = good.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let e = v.verify(&forged, now).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        // New keys forget what the old ones verified.
        let mut other = c.clone();
        other.issuer = "https://idp2.test".into();
        let mut jwks2 = jwks.clone();
        jwks2["keys"][0]["kid"] = serde_json::json!("k2");
        v.add_issuer(&other, &jwks2.to_string(), "jwks2.json")
            .unwrap();
        assert_eq!(v.remembered(), 0);
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&serde_json::json!(5)), Some(5));
        assert_eq!(numeric_date(&serde_json::json!(5.9)), Some(5));
        assert_eq!(numeric_date(&serde_json::json!("5")), None);
    }
}
