//! The one place where Ward's errors become gRPC status codes.
//!
//! Every handler (gRPC and Flight) and the gate return [`crate::Error`]; they reach the wire
//! only through [`to_status`]. The table (also in `docs/service.md`):
//!
//! | error | code | why |
//! | --- | --- | --- |
//! | `InvalidArgument`, `BadInput`, `InvalidRef`, `UnsupportedType`, `Parquet` | `INVALID_ARGUMENT` | the caller's request or data is wrong; the message names the field, row or file |
//! | `NotFound`, `Io` of kind "not found" | `NOT_FOUND` | an unknown hash, name, feature set, feature, or a path that does not exist |
//! | `FailedPrecondition` | `FAILED_PRECONDITION` | well-formed, not allowed now (a label asked online) |
//! | `Corrupt`, `Manifest` | `DATA_LOSS` | stored bytes no longer match their hash or manifest |
//! | `Unauthenticated` | `UNAUTHENTICATED` | |
//! | `PermissionDenied` | `PERMISSION_DENIED` | |
//! | `Io` (other kinds), `Lance` | `UNAVAILABLE` | the disk or object store failed; retrying later may succeed |
//! | `Store`, `Arrow`, `Internal` | `INTERNAL` | a misconfigured store directory or a bug: retrying will not help |

use tonic::{Code, Status};

use crate::error::Error;

/// The gRPC status for `e`, with `e`'s message (which names what is wrong).
pub fn to_status(e: &Error) -> Status {
    Status::new(code(e), e.to_string())
}

/// The gRPC code for `e` (see the module documentation for the table).
pub fn code(e: &Error) -> Code {
    match e {
        Error::InvalidArgument { .. }
        | Error::BadInput { .. }
        | Error::InvalidRef { .. }
        | Error::UnsupportedType { .. }
        | Error::Parquet { .. } => Code::InvalidArgument,
        Error::NotFound { .. } => Code::NotFound,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Code::NotFound,
        Error::FailedPrecondition { .. } => Code::FailedPrecondition,
        Error::Corrupt { .. } | Error::Manifest { .. } => Code::DataLoss,
        Error::Unauthenticated { .. } => Code::Unauthenticated,
        Error::PermissionDenied { .. } => Code::PermissionDenied,
        Error::Io { .. } | Error::Lance { .. } => Code::Unavailable,
        Error::Store { .. } | Error::Arrow(_) | Error::Internal(_) => Code::Internal,
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
            assert_eq!(s.message(), e.to_string());
        }
    }
}
