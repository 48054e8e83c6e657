//! The one place where Ward's errors become gRPC status codes.
//!
//! Every handler (gRPC and Flight) and the gate return [`crate::Error`]; they reach the wire
//! only through [`to_status`], by their class ([`crate::error::Error::class`]). The table
//! (also in `docs/service.md`):
//!
//! | error | code | why |
//! | --- | --- | --- |
//! | `InvalidArgument`, `BadInput`, `InvalidRef`, `UnsupportedType`, `Parquet` | `INVALID_ARGUMENT` | the caller's request or data is wrong; the message names the field, row or file |
//! | `NotFound`, `Io` of kind "not found" | `NOT_FOUND` | an unknown hash, name, feature set, feature, or a path that does not exist |
//! | `FailedPrecondition` | `FAILED_PRECONDITION` | well-formed, not allowed now (a label asked online) |
//! | `Corrupt`, `Manifest` | `DATA_LOSS` | stored bytes no longer match their hash or manifest |
//! | `Conflict` | `ABORTED` | a name's head moved during the write (after the server's own retries); retry |
//! | `Unauthenticated` | `UNAUTHENTICATED` | |
//! | `PermissionDenied` | `PERMISSION_DENIED` | |
//! | `Io` (other kinds), `Lance` | `UNAVAILABLE` | the disk or object store failed; retrying later may succeed |
//! | `Store`, `Arrow`, `Internal` | `INTERNAL` | a misconfigured store directory or a bug: retrying will not help |
//!
//! Messages: a caller's error keeps its message, which names the field, row, file or
//! reference at fault. A server-side error (`Io`, `Lance`, `Store`, `Manifest`, `Arrow`,
//! `Internal`: [`is_internal`]) keeps its code but not its text, which can hold the server's
//! paths, library internals or data: the client gets `internal error (id XXXXXXXXXXXXXXXX)`
//! and the server logs (`tracing::error!`) the same id with the full text, so an operator
//! finds one from the other.

use tonic::{Code, Status};

use crate::error::{Error, ErrorClass};

/// The gRPC status for `e`: a caller's error with `e`'s message (which names what is wrong),
/// a server-side one ([`is_internal`]) with [`internal_message`] of a new id, logged with
/// the full text.
pub fn to_status(e: &Error) -> Status {
    let code = code(e);
    if is_internal(e) {
        let id = error_id();
        tracing::error!(error_id = %id, code = ?code, "internal error (id {id}): {e}");
        Status::new(code, internal_message(&id))
    } else {
        Status::new(code, e.to_string())
    }
}

/// Whether `e` is the server's fault, so its text stays in the server's log.
pub fn is_internal(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. }
            | Error::Lance { .. }
            | Error::Store { .. }
            | Error::Manifest { .. }
            | Error::Arrow(_)
            | Error::Internal(_)
    )
}

/// What the client is told of a server-side error logged under `id`.
pub fn internal_message(id: &str) -> String {
    format!("internal error (id {id})")
}

/// A new error id: 16 hex digits, random (not derived from the time or the error).
fn error_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The status for an error of an Arrow Flight stream: a status passes through; anything
/// else (an encoding error) is mapped by [`to_status`], so its text is logged, not sent.
pub(crate) fn flight_status(e: arrow_flight::error::FlightError) -> Status {
    use arrow_flight::error::FlightError;
    match e {
        FlightError::Tonic(s) => *s,
        FlightError::Arrow(a) => to_status(&Error::Arrow(a)),
        other => to_status(&Error::Internal(format!("Arrow Flight: {other}"))),
    }
}

/// The gRPC code for `e`: its [`ErrorClass`] (the table is [`Error::class`]).
pub fn code(e: &Error) -> Code {
    match e.class() {
        ErrorClass::InvalidArgument => Code::InvalidArgument,
        ErrorClass::NotFound => Code::NotFound,
        ErrorClass::FailedPrecondition => Code::FailedPrecondition,
        ErrorClass::Aborted => Code::Aborted,
        ErrorClass::DataLoss => Code::DataLoss,
        ErrorClass::Unauthenticated => Code::Unauthenticated,
        ErrorClass::PermissionDenied => Code::PermissionDenied,
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::Internal => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        to_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_table() {
        let cases: Vec<(Error, Code)> = vec![
            (Error::invalid("x", "y"), Code::InvalidArgument),
            (
                Error::InvalidRef {
                    reference: "b3:zz".into(),
                    reason: "not hex".into(),
                },
                Code::InvalidArgument,
            ),
            (
                Error::BadInput {
                    location: "entities:3".into(),
                    field: "patient_id".into(),
                    reason: "null".into(),
                },
                Code::InvalidArgument,
            ),
            (
                Error::UnsupportedType {
                    column: "c".into(),
                    data_type: "Union".into(),
                },
                Code::InvalidArgument,
            ),
            (
                Error::NotFound {
                    reference: "b3:00".into(),
                },
                Code::NotFound,
            ),
            (
                Error::io("/nope", std::io::ErrorKind::NotFound.into()),
                Code::NotFound,
            ),
            (
                Error::io("/disk", std::io::Error::other("disk full")),
                Code::Unavailable,
            ),
            (
                Error::precondition("set", "labels"),
                Code::FailedPrecondition,
            ),
            (
                Error::Corrupt {
                    hash: "b3:00".into(),
                    what: "digest".into(),
                },
                Code::DataLoss,
            ),
            (
                Error::Unauthenticated {
                    reason: "no token".into(),
                },
                Code::Unauthenticated,
            ),
            (
                Error::PermissionDenied {
                    reason: "role".into(),
                },
                Code::PermissionDenied,
            ),
            (
                Error::Store {
                    path: "/s".into(),
                    reason: "r".into(),
                },
                Code::Internal,
            ),
            (Error::Internal("bug".into()), Code::Internal),
        ];
        for (e, want) in cases {
            let s = to_status(&e);
            assert_eq!(s.code(), want, "{e}");
            if is_internal(&e) {
                assert!(s.message().starts_with("internal error (id "), "{e}: {s:?}");
            } else {
                assert_eq!(s.message(), e.to_string());
            }
        }
    }

    /// A writer the test subscriber logs into.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn internal_details_stay_in_the_log_under_the_id_sent() {
        let log = Captured::default();
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(log.clone())
                .with_ansi(false)
                .finish(),
        );
        let secret_path = "/var/lib/ward/store/versions/b3:ab12/data/0.lance";
        let cases = [
            Error::Internal("invariant broken at row 17 (patient P0000042)".into()),
            Error::io(secret_path, std::io::Error::other("disk full")),
            Error::io(secret_path, std::io::ErrorKind::NotFound.into()),
            Error::Store {
                path: secret_path.into(),
                reason: "not a store".into(),
            },
            Error::Arrow(arrow::error::ArrowError::ComputeError(
                "overflow in P0000042".into(),
            )),
            Error::Internal("x".into()),
        ];
        let mut ids = Vec::new();
        for e in &cases {
            let s = tracing::dispatcher::with_default(&dispatch, || to_status(e));
            let msg = s.message().to_string();
            let id = msg
                .strip_prefix("internal error (id ")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{msg}"));
            assert_eq!(id.len(), 16, "{msg}");
            assert!(
                !msg.contains("P0000042") && !msg.contains("/var/lib"),
                "{msg}"
            );
            assert_eq!(s.code(), code(e));
            let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
            let line = text
                .lines()
                .find(|l| l.contains(id))
                .unwrap_or_else(|| panic!("id {id} not logged:\n{text}"));
            assert!(
                line.contains("ERROR") && line.contains(&e.to_string()),
                "{line}"
            );
            ids.push(id.to_string());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), cases.len(), "every error gets its own id");
        // A caller's error keeps its message and is not logged as an internal error.
        let e = Error::invalid("paths[0]", "/data/in/x.csv: does not exist");
        let s = tracing::dispatcher::with_default(&dispatch, || to_status(&e));
        assert_eq!(s.message(), e.to_string());
        // Flight stream errors go through the same place.
        let s = flight_status(arrow_flight::error::FlightError::Arrow(
            arrow::error::ArrowError::IpcError("bad buffer at /var/lib".into()),
        ));
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().starts_with("internal error (id "), "{s:?}");
        let passed = flight_status(arrow_flight::error::FlightError::Tonic(Box::new(
            Status::not_found("b3:00"),
        )));
        assert_eq!((passed.code(), passed.message()), (Code::NotFound, "b3:00"));
    }
}
