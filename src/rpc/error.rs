//! The one table from supervisor errors to gRPC status codes.

use tonic::{Code, Status};

use crate::supervisor::Error;

fn code(e: &Error) -> Code {
    match e {
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::Invalid(_) => Code::InvalidArgument,
        Error::StartFailed { .. } | Error::StopFailed { .. } => Code::FailedPrecondition,
        Error::Persist { .. } | Error::Logs { .. } => Code::Internal,
        Error::ShuttingDown => Code::Unavailable,
        Error::Several(all) => all.first().map_or(Code::Unknown, code),
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(code(&e), e.to_string())
    }
}
