//! The audit note of one request: what the gate and the handler learn of it, turned into the
//! request's one [`AuditEntry`] when its outcome is known: the one place the server builds
//! an audit entry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::audit::{AuditEntry, Outcome, Patients};
use super::auth::{Principal, RequestContext};
use super::policy::Action;
use crate::error::Error;

/// What is known of one request for its one audit record, filled in as the request is
/// decided (the gate, the handler) and handled (the datasets and training set it used), and
/// turned into the record by [`AuditNote::entry`] when the request's outcome is known: the
/// one place a request's [`AuditEntry`] is built. Clones share the note.
#[derive(Debug, Clone, Default)]
pub struct AuditNote(Arc<Mutex<NoteState>>);

#[derive(Debug, Default)]
struct NoteState {
    public: bool,
    principal: Option<Principal>,
    subject: Option<String>,
    action: Option<Action>,
    allowed: Option<String>,
    denied: Option<String>,
    feature_set: Option<String>,
    datasets: Vec<String>,
    patients: Vec<String>,
    training_set: Option<String>,
}

/// How a request ended, for [`AuditNote::entry`].
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    /// Answered.
    Ok,
    /// Failed with a status `code` (`not_found`, `permission_denied`, ...) and a message.
    Failed {
        /// The status code's name, snake case.
        code: &'a str,
        /// The message the caller got.
        message: &'a str,
    },
}

impl AuditNote {
    fn with<T>(&self, f: impl FnOnce(&mut NoteState) -> T) -> T {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Marks the call public (health, reflection): not audited.
    pub fn set_public(&self) {
        self.with(|s| s.public = true);
    }

    /// Whether the call is public (no record).
    pub fn is_public(&self) -> bool {
        self.with(|s| s.public)
    }

    /// Who is calling.
    pub fn set_principal(&self, p: &Principal) {
        self.with(|s| {
            if s.principal.as_ref() != Some(p) {
                s.principal = Some(p.clone());
            }
        });
    }

    /// Who is calling, when a gate knows only a name (no [`Principal`]).
    pub fn set_subject(&self, subject: &str) {
        self.with(|s| s.subject = Some(subject.to_string()));
    }

    /// The principal recorded so far.
    pub fn principal(&self) -> Option<Principal> {
        self.with(|s| s.principal.clone())
    }

    /// The action the request is decided as (before a decision).
    pub fn set_action(&self, action: Action) {
        self.with(|s| s.action = Some(action));
    }

    /// The feature set and datasets `ctx` names (added to what is known).
    pub fn set_context(&self, ctx: &RequestContext) {
        self.with(|s| {
            if ctx.feature_set.is_some() {
                s.feature_set.clone_from(&ctx.feature_set);
            }
            for d in &ctx.datasets {
                if !s.datasets.contains(d) {
                    s.datasets.push(d.clone());
                }
            }
        });
    }

    /// The patients the request touches.
    pub fn set_patients(&self, patients: &[String]) {
        self.with(|s| s.patients = patients.to_vec());
    }

    /// Adds datasets the request read or wrote.
    pub fn add_datasets(&self, datasets: impl IntoIterator<Item = String>) {
        self.with(|s| {
            for d in datasets {
                if !s.datasets.contains(&d) {
                    s.datasets.push(d);
                }
            }
        });
    }

    /// The training set a historical lookup made (the hash the caller gets).
    pub fn set_training_set(&self, hash: impl Into<String>) {
        self.with(|s| s.training_set = Some(hash.into()));
    }

    /// Records an allowed decision (a later decision replaces it).
    pub fn allowed(&self, action: Action, reason: String) {
        self.with(|s| {
            s.action = Some(action);
            s.allowed = Some(reason);
            s.denied = None;
        });
    }

    /// Adds to the reason of an allowed decision (e.g. the reason a quality gate was
    /// overridden), so the record says it; with no decision yet it becomes the reason.
    pub fn add_reason(&self, text: &str) {
        self.with(|s| {
            s.allowed = Some(match s.allowed.take() {
                Some(r) => format!("{r}; {text}"),
                None => text.to_string(),
            });
        });
    }

    /// Records a refusal (`e` is its error).
    pub fn refused(&self, action: Option<Action>, e: &Error) {
        self.with(|s| {
            if action.is_some() {
                s.action = action;
            }
            s.denied = Some(e.to_string());
        });
    }

    /// The record of the request: who (the principal, its issuer and key id; `None` when
    /// authentication failed), from where (`peer`), the call, the decision, what it touched
    /// and how it ended. A request that failed with `permission_denied` or `unauthenticated`
    /// without a recorded decision is recorded as denied.
    pub fn entry(
        &self,
        rpc: &str,
        peer: Option<SocketAddr>,
        finish: std::result::Result<(), &Error>,
    ) -> AuditEntry {
        let (code, message) = match finish {
            Ok(()) => (None, None),
            Err(e) => (Some(status_name(e).to_string()), Some(e.to_string())),
        };
        let f = match (&code, &message) {
            (Some(c), Some(m)) => Finish::Failed {
                code: c,
                message: m,
            },
            _ => Finish::Ok,
        };
        self.entry_finished(rpc, peer, f)
    }

    /// [`AuditNote::entry`] for a request whose outcome is a status code name (as the
    /// server's gate sees the response).
    pub fn entry_finished(
        &self,
        rpc: &str,
        peer: Option<SocketAddr>,
        finish: Finish<'_>,
    ) -> AuditEntry {
        self.with(|s| {
            let (decision, reason) = match (&s.denied, &s.allowed, finish) {
                (Some(r), _, _) => (Outcome::Denied, r.clone()),
                (None, _, Finish::Failed { code, message })
                    if code == "permission_denied" || code == "unauthenticated" =>
                {
                    (Outcome::Denied, message.to_string())
                }
                (None, Some(r), _) => (Outcome::Allowed, r.clone()),
                (None, None, _) => (
                    Outcome::Allowed,
                    "admitted by the gate (no authorization configured)".to_string(),
                ),
            };
            let mut e = AuditEntry::new(rpc, decision, reason);
            if let Some(p) = &s.principal {
                e.principal = Some(p.subject.clone());
                e.auth = Some(p.source.as_str().to_string());
                e.roles = p.roles.iter().cloned().collect();
                e.issuer.clone_from(&p.issuer);
                e.key_id.clone_from(&p.key_id);
            } else {
                e.principal.clone_from(&s.subject);
            }
            e.client = peer.map(|a| a.to_string());
            e.action = s.action.map(|a| a.as_str().to_string());
            e.feature_set.clone_from(&s.feature_set);
            e.datasets.clone_from(&s.datasets);
            e.patients = if s.action.is_some_and(Action::bulk_patients) {
                Patients::bulk(&s.patients)
            } else {
                Patients::Ids(s.patients.clone())
            };
            e.training_set.clone_from(&s.training_set);
            match finish {
                Finish::Ok => e.outcome = Some("ok".into()),
                Finish::Failed { code, message } => {
                    e.outcome = Some(code.to_string());
                    e.error = Some(message.to_string());
                }
            }
            e
        })
    }
}

/// The name of the error's class ([`Error::class`]), as audit records name outcomes.
fn status_name(e: &Error) -> &'static str {
    e.class().name()
}

/// The snake-case name of a gRPC status code, as audit records name outcomes.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}
