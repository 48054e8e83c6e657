//! Security, one wing with one door: who is calling, what they may do, the record of what
//! they did, what leaves de-identified, and the TLS the calls arrive over
//! (`docs/security.md`).
//!
//! The door is [`gate`]: the route table that maps every RPC to the action it needs, and
//! [`gate::Security`], the one object every call passes (authenticate, authorize, note for
//! the audit trail). The server's tower layer (`crate::service::GateLayer`) only carries
//! calls to it.
//!
//! In the order a call meets them:
//! - [`tls`]: the rustls server configuration with certificate reload.
//! - [`auth`]: authentication (JWT, mTLS, API tokens) into a [`auth::Principal`].
//! - [`policy`]: roles and the permissions they grant; the actions calls take.
//! - [`care_team`]: which patients are on a clinician's care team at a time.
//! - [`authorize`]: the one decision, principal × action × patients.
//! - [`config`]: the security configuration file the gate is built from.
//! - [`gate`]: the door (above).
//! - [`note`]: what a call's audit record will say, and the one place it is built.
//! - [`audit`]: the append-only, hash-chained audit trail; verify and query.
//! - [`deid`]: de-identification of training sets (HIPAA Safe Harbor by default) and
//!   research consent.

pub mod tls;

pub mod auth;

pub mod policy;

pub mod care_team;

pub mod authorize;

pub mod config;

pub mod keyring;

pub mod gate;

pub mod note;

pub mod audit;

pub mod deid;
