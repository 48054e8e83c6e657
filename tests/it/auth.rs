//! Attacks on authentication and authorization, each refused with the right error and each
//! decision written to an audit trail that then verifies.
//!
//! Keys are made at run time: ES256 with rcgen, RS256 with `openssl genpkey` (the RS256 cases
//! are skipped with a message when openssl is absent).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use ward::clock::{ManualClock, SharedClock};
use ward::curated::{CareTeamMember, RowMeta};
use ward::security::audit::{self, Outcome, Patients};
use ward::security::auth::{RequestContext, Source};
use ward::security::care_team::CareTeamIndex;
use ward::security::gate::Security;
use ward::security::note::AuditNote;
use ward::security::policy::Action;
use ward::Error;

const ISS: &str = "https://idp.test/realms/ward";

use crate::common::b64url;

#[test]
fn b64url_matches_known_vectors() {
    assert_eq!(b64url(b""), "");
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(b"foob"), "Zm9vYg");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct EcKey {
    pem: String,
    jwk: serde_json::Value,
}

fn ec_key(kid: &str) -> EcKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    assert_eq!(raw.len(), 65, "uncompressed P-256 point");
    EcKey {
        pem: kp.serialize_pem(),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]),
        }),
    }
}

struct RsaKey {
    pem: Vec<u8>,
    public_pem: Vec<u8>,
    jwk: serde_json::Value,
}

/// An RSA key made by openssl, or `None` (with a message) when openssl is absent.
fn rsa_key(dir: &Path, kid: &str) -> Option<RsaKey> {
    let path = dir.join(format!("{kid}.pem"));
    let gen = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .output();
    match gen {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("SKIP: openssl is not available; the RS256 cases are not run");
            return None;
        }
    }
    let modulus = Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(modulus.stdout).unwrap();
    let hex_n = text.trim().strip_prefix("Modulus=").unwrap();
    let n = hex::decode(hex_n).unwrap();
    let public = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    Some(RsaKey {
        pem: std::fs::read(&path).unwrap(),
        public_pem: public.stdout,
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64url(&n), "e": "AQAB",
        }),
    })
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn claims(sub: &str, roles: &[&str]) -> serde_json::Value {
    let now = t0().timestamp();
    json!({
        "iss": ISS, "aud": "ward", "sub": sub, "roles": roles,
        "iat": now - 10, "nbf": now - 10, "exp": now + 300,
    })
}

fn member(clinician: &str, patient: &str) -> CareTeamMember {
    CareTeamMember {
        patient_id: patient.into(),
        clinician_id: clinician.into(),
        role: Some("attending".into()),
        valid_from: t0() - Duration::days(2),
        valid_to: Some(t0() + Duration::days(2)),
        meta: RowMeta {
            source_system: "test".into(),
            source_id: format!("{clinician}/{patient}"),
            known_at: t0() - Duration::days(2),
            retracted_at: None,
        },
    }
}

struct Env {
    _dir: tempfile::TempDir,
    audit_dir: PathBuf,
    security: Security,
    ec: EcKey,
    rsa: Option<RsaKey>,
    clock: Arc<ManualClock>,
}

fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let ec = ec_key("ec1");
    let rsa = rsa_key(dir.path(), "rsa1");
    let mut keys = vec![ec.jwk.clone()];
    if let Some(r) = &rsa {
        keys.push(r.jwk.clone());
    }
    std::fs::write(
        dir.path().join("jwks.json"),
        json!({ "keys": keys }).to_string(),
    )
    .unwrap();
    std::fs::copy(
        crate::common::crate_dir().join("examples/security/policy.toml"),
        dir.path().join("policy.toml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("security.toml"),
        format!(
            r#"
policy = "policy.toml"
[[jwt]]
issuer = "{ISS}"
audience = ["ward", "ward-flight"]
jwks = "jwks.json"
clock_skew_secs = 60
grants = ["clinician", "data-scientist"]
[jwt.key_grants]
rsa1 = ["model-service", "steward"]
[[api_tokens]]
subject = "dev-steward"
blake3 = "{}"
roles = ["steward"]
[audit]
dir = "audit"
max_file_bytes = 2000
"#,
            ward::security::auth::tokens::hash_token("dev-token-0123456789")
        ),
    )
    .unwrap();
    let clock = Arc::new(ManualClock::new(t0()));
    let shared: SharedClock = clock.clone();
    let security = Security::load(
        &dir.path().join("security.toml"),
        &dir.path().join("unused-default"),
        shared,
    )
    .unwrap();
    assert!(security.authentication_configured());
    security
        .authorizer()
        .set_care_team(CareTeamIndex::from_members(&[
            member("dr-a", "p1"),
            member("dr-a", "p2"),
            member("dr-b", "p3"),
        ]));
    Env {
        audit_dir: dir.path().join("audit"),
        _dir: dir,
        security,
        ec,
        rsa,
        clock,
    }
}

fn ctx(token: &str) -> RequestContext {
    RequestContext::new("/ward.v1.Features/GetOnlineFeatures")
        .with_bearer(token)
        .with_peer("10.1.2.3:50000".parse().unwrap())
        .with_feature_set("readmission")
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn expect_unauthenticated<T: std::fmt::Debug>(r: ward::Result<T>, what: &str) {
    match r {
        Err(Error::Unauthenticated { reason }) => eprintln!("{what}: refused: {reason}"),
        other => panic!("{what}: expected Unauthenticated, got {other:?}"),
    }
}

fn expect_denied<T: std::fmt::Debug>(r: ward::Result<T>, what: &str) -> String {
    match r {
        Err(Error::PermissionDenied { reason }) => {
            eprintln!("{what}: denied: {reason}");
            reason
        }
        other => panic!("{what}: expected PermissionDenied, got {other:?}"),
    }
}

#[test]
fn attacks_are_refused_with_the_right_error_and_audited() {
    let env = setup();
    let s = &env.security;
    let ec = EncodingKey::from_ec_pem(env.ec.pem.as_bytes()).unwrap();
    let online = Action::OnlineLookup;
    let mut expected_records = 0u64;
    let mut check = |c: &RequestContext, a: Action, p: &[String]| {
        expected_records += 1;
        s.check(c, a, p)
    };

    // A good token works (the baseline every attack differs from by one thing).
    let good = sign(
        Algorithm::ES256,
        "ec1",
        &ec,
        &claims("dr-a", &["clinician"]),
    );
    let p = check(&ctx(&good), online, &ids(&["p1", "p2"])).unwrap();
    assert_eq!(p.subject, "dr-a");
    assert_eq!(p.source, Source::Jwt);

    // No token.
    expect_unauthenticated(
        check(
            &RequestContext::new("/ward.v1.Features/GetOnlineFeatures"),
            online,
            &ids(&["p1"]),
        ),
        "no token",
    );
    // Expired (beyond the 60 s skew), and just inside the skew.
    let mut c = claims("dr-a", &["clinician"]);
    c["exp"] = json!(t0().timestamp() - 61);
    expect_unauthenticated(
        check(
            &ctx(&sign(Algorithm::ES256, "ec1", &ec, &c)),
            online,
            &ids(&["p1"]),
        ),
        "expired",
    );
    c["exp"] = json!(t0().timestamp() - 30);
    check(
        &ctx(&sign(Algorithm::ES256, "ec1", &ec, &c)),
        online,
        &ids(&["p1"]),
    )
    .unwrap();
    // The injected clock decides, not the system clock: the good token expires when the
    // clock passes exp + skew.
    env.clock.set(t0() + Duration::seconds(361));
    expect_unauthenticated(
        check(&ctx(&good), online, &ids(&["p1"])),
        "expired by the clock",
    );
    env.clock.set(t0());
    // Not yet valid.
    let mut c = claims("dr-a", &["clinician"]);
    c["nbf"] = json!(t0().timestamp() + 120);
    expect_unauthenticated(
        check(
            &ctx(&sign(Algorithm::ES256, "ec1", &ec, &c)),
            online,
            &ids(&["p1"]),
        ),
        "not yet valid",
    );
    // No exp at all.
    let mut c = claims("dr-a", &["clinician"]);
    c.as_object_mut().unwrap().remove("exp");
    expect_unauthenticated(
        check(
            &ctx(&sign(Algorithm::ES256, "ec1", &ec, &c)),
            online,
            &ids(&["p1"]),
        ),
        "no exp",
    );
    // Wrong issuer, wrong audience.
    let mut c = claims("dr-a", &["clinician"]);
    c["iss"] = json!("https://evil.example");
    expect_unauthenticated(
        check(
            &ctx(&sign(Algorithm::ES256, "ec1", &ec, &c)),
            online,
            &ids(&["p1"]),
        ),
        "wrong issuer",
    );
    let mut c = claims("dr-a", &["clinician"]);
    c["aud"] = json!(["other-service"]);
    expect_unauthenticated(
        check(
            &ctx(&sign(Algorithm::ES256, "ec1", &ec, &c)),
            online,
            &ids(&["p1"]),
        ),
        "wrong audience",
    );
    // Bad signature: another key under the trusted kid; and a payload edited after signing.
    let other = ec_key("ec1");
    let forged = sign(
        Algorithm::ES256,
        "ec1",
        &EncodingKey::from_ec_pem(other.pem.as_bytes()).unwrap(),
        &claims("dr-a", &["clinician"]),
    );
    expect_unauthenticated(check(&ctx(&forged), online, &ids(&["p1"])), "bad signature");
    let parts: Vec<&str> = good.split('.').collect();
    let edited_payload = b64url(claims("dr-b", &["clinician"]).to_string().as_bytes());
    let edited = format!("{}.{}.{}", parts[0], edited_payload, parts[2]);
    expect_unauthenticated(
        check(&ctx(&edited), online, &ids(&["p3"])),
        "edited payload",
    );
    // alg none.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT","kid":"ec1"}"#),
        b64url(claims("dr-a", &["clinician"]).to_string().as_bytes())
    );
    expect_unauthenticated(check(&ctx(&none), online, &ids(&["p1"])), "alg none");
    // A token whose alg is not its key's: ES256 key, RS256 header.
    let mismatched = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT","kid":"ec1"}"#),
        parts[1],
        parts[2]
    );
    expect_unauthenticated(
        check(&ctx(&mismatched), online, &ids(&["p1"])),
        "alg not the key's",
    );
    // HS256 "signed" with a public key as the HMAC secret.
    let ec_public_pem = {
        let raw = rcgen::KeyPair::from_pem(&env.ec.pem).unwrap();
        raw.public_key_pem()
    };
    let hs = sign(
        Algorithm::HS256,
        "ec1",
        &EncodingKey::from_secret(ec_public_pem.as_bytes()),
        &claims("dr-a", &["clinician"]),
    );
    expect_unauthenticated(
        check(&ctx(&hs), online, &ids(&["p1"])),
        "HS256 with the EC public key",
    );
    if let Some(rsa) = &env.rsa {
        let hs = sign(
            Algorithm::HS256,
            "rsa1",
            &EncodingKey::from_secret(&rsa.public_pem),
            &claims("scoring", &["model-service"]),
        );
        expect_unauthenticated(
            check(&ctx(&hs), online, &ids(&["p1"])),
            "HS256 with the RSA public key",
        );
    }
    // A role claimed that the key does not grant: the EC key may grant clinician and
    // data-scientist, not steward.
    let escalate = sign(
        Algorithm::ES256,
        "ec1",
        &ec,
        &claims("dr-a", &["clinician", "steward"]),
    );
    expect_denied(
        check(&ctx(&escalate), Action::HistoricalIdentified, &ids(&["p1"])),
        "role not granted",
    );
    // A clinician asking for a patient outside the care team: alone, and hidden in a batch.
    // The refusal is the same whether the patient exists (p3, dr-b's) or not (p404).
    let r_exists = expect_denied(
        check(&ctx(&good), online, &ids(&["p3"])),
        "outside care team",
    );
    let r_absent = expect_denied(
        check(&ctx(&good), online, &ids(&["p404"])),
        "nonexistent patient",
    );
    assert_eq!(
        r_exists, r_absent,
        "a denial must not reveal whether the patient exists"
    );
    assert!(!r_exists.contains("p3"));
    let r_batch = expect_denied(
        check(&ctx(&good), online, &ids(&["p1", "p2", "p3", "p1"])),
        "hidden in a batch",
    );
    assert!(r_batch.contains("#3"), "{r_batch}");
    // After the assignment ends, even p1 is refused.
    env.clock.set(t0() + Duration::days(3));
    let late = sign(Algorithm::ES256, "ec1", &ec, &{
        let mut c = claims("dr-a", &["clinician"]);
        c["exp"] = json!((t0() + Duration::days(4)).timestamp());
        c
    });
    expect_denied(check(&ctx(&late), online, &ids(&["p1"])), "care team ended");
    env.clock.set(t0());
    // A data scientist asking for identified data; de-identified is allowed.
    let ds = sign(
        Algorithm::ES256,
        "ec1",
        &ec,
        &claims("ana", &["data-scientist"]),
    );
    expect_denied(
        check(&ctx(&ds), Action::HistoricalIdentified, &ids(&["p1", "p3"])),
        "data scientist, identified",
    );
    check(
        &ctx(&ds),
        Action::HistoricalDeidentified,
        &ids(&["p1", "p3"]),
    )
    .unwrap();
    // RS256: a model service (granted by the key, not the issuer) reads any patient.
    if let Some(rsa) = &env.rsa {
        let key = EncodingKey::from_rsa_pem(&rsa.pem).unwrap();
        let svc = sign(
            Algorithm::RS256,
            "rsa1",
            &key,
            &claims("scoring", &["model-service"]),
        );
        let p = check(&ctx(&svc), online, &ids(&["p1", "p3", "p404"])).unwrap();
        assert!(p.roles.contains("model-service"));
        expect_denied(
            check(&ctx(&svc), Action::HistoricalDeidentified, &ids(&["p1"])),
            "model service, historical",
        );
        // The RSA key cannot grant clinician.
        let c = sign(Algorithm::RS256, "rsa1", &key, &claims("x", &["clinician"]));
        expect_denied(check(&ctx(&c), online, &ids(&["p1"])), "rsa key, clinician");
    }
    // API tokens.
    let p = check(
        &RequestContext::new("/ward.v1.Ingest/IngestPaths").with_bearer("dev-token-0123456789"),
        Action::HistoricalIdentified,
        &ids(&["p1"]),
    )
    .unwrap();
    assert_eq!(p.source, Source::ApiToken);
    expect_unauthenticated(
        check(
            &RequestContext::new("/ward.v1.Ingest/IngestPaths").with_bearer("dev-token-0123456788"),
            Action::Ingest,
            &[],
        ),
        "wrong API token",
    );

    // Every decision is in the audit trail, which verifies.
    let report = audit::verify(&env.audit_dir).unwrap();
    assert!(report.ok(), "{:?}", report.problem);
    assert_eq!(report.records, expected_records);
    assert!(
        report.files > 1,
        "the trail rotated ({} files)",
        report.files
    );
    // Who looked at (or tried to look at) p3: the refused clinician among them.
    let p3 = audit::query(&env.audit_dir, "p3").unwrap();
    assert!(p3
        .iter()
        .any(|a| a.record.entry.principal.as_deref() == Some("dr-a")
            && a.record.entry.decision == Outcome::Denied));
    assert!(p3.iter().all(
        |a| a.record.entry.client.as_deref() == Some("10.1.2.3:50000")
            || a.record.entry.rpc == "/ward.v1.Ingest/IngestPaths"
    ));
    // Unauthenticated attempts are recorded without a principal; historical reads in bulk.
    let all = audit::query(&env.audit_dir, "p1").unwrap();
    assert!(all
        .iter()
        .any(|a| a.record.entry.principal.is_none() && a.record.entry.decision == Outcome::Denied));
    let text: String = std::fs::read_dir(&env.audit_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        text.contains("\"bulk\":{\"count\":2"),
        "historical reads are recorded in bulk"
    );
    // No token ever reaches the audit trail.
    assert!(!text.contains(&good) && !text.contains("dev-token-0123456789"));
    let Patients::Bulk { .. } = Patients::bulk(&ids(&["p1"])) else {
        unreachable!()
    };
}

#[test]
fn example_configuration_loads() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(t0()));
    let example = crate::common::crate_dir().join("examples/security/security.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // The example's audit dir is the default (<store>/audit): point it at the temp dir.
    let s = Security::load(&example, &dir.path().join("audit"), clock).unwrap();
    assert!(s.authentication_configured());
    // The example API token works (its hash is in the example file, the token in a comment).
    assert!(text.contains("ward-dev-steward-token-change-me"));
    let p = s
        .check(
            &RequestContext::new("/ward.v1.Datasets/ListDatasets")
                .with_bearer("ward-dev-steward-token-change-me"),
            Action::DatasetsRead,
            &[],
        )
        .unwrap();
    assert_eq!(p.subject, "dev-steward");
    assert!(audit::verify(&dir.path().join("audit")).unwrap().ok());
}

#[test]
fn configuration_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(ManualClock::new(t0()));
    std::fs::write(
        dir.path().join("policy.toml"),
        "[roles.x]\npermissions = [\"reed\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("s.toml"), "policy = \"policy.toml\"\n").unwrap();
    let e = Security::load(&dir.path().join("s.toml"), dir.path(), clock.clone())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("policy.toml") && e.contains("roles.x.permissions") && e.contains("reed"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("s.toml"),
        "policy = \"policy.toml\"\nunknown = 1\n",
    )
    .unwrap();
    let e = Security::load(&dir.path().join("s.toml"), dir.path(), clock)
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.toml") && e.contains("unknown"), "{e}");
}

#[test]
fn gate_then_handler_two_phase_flow() {
    let env = setup();
    let s = &env.security;
    let ec = EncodingKey::from_ec_pem(env.ec.pem.as_bytes()).unwrap();
    let good = sign(
        Algorithm::ES256,
        "ec1",
        &ec,
        &claims("dr-a", &["clinician"]),
    );
    let ds = sign(
        Algorithm::ES256,
        "ec1",
        &ec,
        &claims("ana", &["data-scientist"]),
    );
    let call = |rpc: &str, token: Option<&str>| {
        let c = RequestContext::new(rpc).with_peer("127.0.0.1:1".parse().unwrap());
        match token {
            Some(t) => c.with_bearer(t),
            None => c,
        }
    };
    // What the server's gate layer does when a call ends: one record from the call's note.
    let finish = |note: &AuditNote, ctx: &RequestContext, r: Result<(), &Error>| {
        if !note.is_public() {
            s.record(note.entry(&ctx.rpc, ctx.peer, r)).unwrap();
        }
    };
    // Health and reflection are public and not audited.
    let note = AuditNote::default();
    let health = call("/grpc.health.v1.Health/Check", None);
    assert_eq!(s.admit(&health, &note).unwrap(), None);
    assert!(note.is_public());
    finish(&note, &health, Ok(()));
    // An unknown call is refused even when authenticated; unauthenticated first.
    for (token, what) in [
        (None, "unknown rpc, no token"),
        (Some(&good), "unknown rpc"),
    ] {
        let note = AuditNote::default();
        let c = call("/ward.v1.Secret/Dump", token.map(String::as_str));
        let r = s.admit(&c, &note);
        let e = r.as_ref().map(|_| ()).unwrap_err();
        finish(&note, &c, Err(e));
        if token.is_none() {
            expect_unauthenticated(r, what);
        } else {
            expect_denied(r, what);
        }
    }
    // A clinician has no datasets_read: refused at the gate.
    let note = AuditNote::default();
    let c = call("/ward.v1.Datasets/ListDatasets", Some(&good));
    let r = s.admit(&c, &note);
    finish(&note, &c, Err(r.as_ref().map(|_| ()).unwrap_err()));
    expect_denied(r, "clinician lists datasets");
    // Online lookups: admitted at the gate, decided by the handler with the patients.
    let online = call("/ward.v1.Features/GetOnlineFeatures", Some(&good));
    let note = AuditNote::default();
    let p = s.admit(&online, &note).unwrap().unwrap();
    s.authorize(&p, &online, Action::OnlineLookup, &ids(&["p1"]), &note)
        .unwrap();
    finish(&note, &online, Ok(()));
    let note = AuditNote::default();
    let p = s.admit(&online, &note).unwrap().unwrap();
    let r = s.authorize(
        &p,
        &online,
        Action::OnlineLookup,
        &ids(&["p1", "p3"]),
        &note,
    );
    finish(&note, &online, Err(r.as_ref().unwrap_err()));
    expect_denied(r, "handler: outside care team");
    // A clinician cannot even start a historical read.
    let note = AuditNote::default();
    let c = call("/ward.v1.Features/GetHistoricalFeatures", Some(&good));
    let r = s.admit(&c, &note);
    finish(&note, &c, Err(r.as_ref().map(|_| ()).unwrap_err()));
    expect_denied(r, "clinician historical");
    // A data scientist gets the de-identified historical action, never the identified one.
    let hist = call("/ward.v1.Features/GetHistoricalFeatures", Some(&ds));
    let note = AuditNote::default();
    let p = s.admit(&hist, &note).unwrap().unwrap();
    assert_eq!(
        s.historical_action(&p),
        Some(Action::HistoricalDeidentified)
    );
    s.authorize(&p, &hist, Action::HistoricalDeidentified, &[], &note)
        .unwrap();
    note.set_patients(&ids(&["p1", "p2", "p3"]));
    note.set_training_set("b3:training");
    // A request that fails after it was allowed is recorded once, allowed, with its outcome.
    let failed = Error::NotFound {
        reference: "readmission".into(),
    };
    finish(&note, &hist, Err(&failed));
    // 2 unknown + 1 clinician list + 2 online + 1 clinician historical + 1 historical = 7
    // records: one per request, never one for the admission and another for the handler.
    let r = audit::verify(&env.audit_dir).unwrap();
    assert!(r.ok(), "{:?}", r.problem);
    assert_eq!(r.records, 7);
    let all = audit::search(&env.audit_dir, &audit::QueryFilter::default()).unwrap();
    let last = &all.last().unwrap().record;
    assert_eq!(last.entry.decision, Outcome::Allowed);
    assert_eq!(last.entry.outcome.as_deref(), Some("not_found"));
    assert!(last.entry.error.as_deref().unwrap().contains("readmission"));
    assert_eq!(last.entry.training_set.as_deref(), Some("b3:training"));
    assert_eq!(last.entry.issuer.as_deref(), Some(ISS), "{last:?}");
    assert_eq!(last.entry.key_id.as_deref(), Some("ec1"));
    assert!(matches!(
        last.entry.patients,
        Patients::Bulk { count: 3, .. }
    ));
    let denied = &all[all.len() - 3].record;
    assert_eq!(
        (denied.entry.decision, denied.entry.outcome.as_deref()),
        (Outcome::Denied, Some("permission_denied"))
    );
    assert_eq!(denied.entry.patients, Patients::Ids(ids(&["p1", "p3"])));
    // Unauthenticated: no principal, denied, with the outcome.
    assert_eq!(all[0].record.entry.principal, None);
    assert_eq!(
        all[0].record.entry.outcome.as_deref(),
        Some("unauthenticated")
    );
}
