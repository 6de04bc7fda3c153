//! The one table from errors to gRPC status codes: the supervisor's, and what the service itself
//! refuses. Nothing else in the agent builds a `Status`, except `convert`, for a field it cannot
//! read.

use tonic::{Code, Status};

use crate::supervisor;

/// What a request can fail with at the gRPC edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Supervisor(#[from] supervisor::Error),
    #[error(
        "client_env is only accepted over the agent's unix socket; apps created or updated \
         over TCP get the agent's own environment (plus their declared env)"
    )]
    EnvOverTcp,
    #[error("set app or apps, not both")]
    AppAndApps,
    #[error("set either target (existing apps) or app/apps (new apps), not both")]
    TargetAndApps,
    #[error("set target (existing apps) or app/apps (new apps)")]
    NothingToStart,
    #[error("{count} apps in one request; at most {max} are allowed")]
    TooManyApps { count: usize, max: usize },
    #[error("lines: {asked} asked; at most {max}")]
    TooManyLines { asked: u32, max: u32 },
    #[error("{0} log readers already; close one and retry")]
    TooManyLogReaders(usize),
    #[error("action must be 1 to {max} bytes without NUL or control characters")]
    BadAction { max: usize },
    #[error("message is {len} bytes; at most {max} are allowed")]
    MessageTooLong { len: usize, max: usize },
    #[error(
        "data: at most {entries} entries, keys 1 to {key} bytes, values at most {value} bytes"
    )]
    BadData {
        entries: usize,
        key: usize,
        value: usize,
    },
    /// NUL or a terminal control character in a notification's text.
    #[error(
        "{field}: control character U+{code:04X} at byte {at}; only tab and newline are \
         allowed (encode binary data, e.g. as base64)"
    )]
    ControlCharacter { field: String, at: usize, code: u32 },
    /// A name in a subscription's app filter.
    #[error("apps: {0}")]
    BadAppFilter(String),
    /// Refused by the TCP listener's authentication, before any service sees the request.
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{app}: reading logs: {cause}")]
    LogRead { app: String, cause: std::io::Error },
    /// An Apply without a usable file path.
    #[error("file: {0:?} is not an absolute path; Apply names the app file it applies by its canonical absolute path")]
    ApplyFile(String),
    /// A message that is not valid protobuf for its type (a string field that is not UTF-8
    /// among others): decoded by the codec, before any handler runs.
    #[error("malformed message: {0}")]
    Malformed(prost::DecodeError),
}

fn supervisor_code(e: &supervisor::Error) -> Code {
    use supervisor::Error as E;
    match e {
        E::NotFound(_) | E::NoInstance { .. } => Code::NotFound,
        E::DeleteInstance { .. } | E::ScaleTarget(_) => Code::InvalidArgument,
        E::Bind(_) | E::ReloadInterrupted { .. } => Code::FailedPrecondition,
        E::Io(_) => Code::Internal,
        E::AlreadyExists { .. } | E::NotTheFiles { .. } => Code::AlreadyExists,
        E::InvalidSpec(_)
        | E::InvalidEnv { .. }
        | E::GivenTwice(_)
        | E::Dependencies(_)
        | E::ResumeAhead { .. } => Code::InvalidArgument,
        E::StartFailed { .. }
        | E::StopFailed { .. }
        | E::NotReady { .. }
        | E::NotStarted { .. }
        | E::NotCompleted { .. }
        | E::DependedOn { .. }
        | E::BeingDeleted { .. }
        | E::Escaped { .. }
        | E::NoKeeper => Code::FailedPrecondition,
        E::Persist { .. } | E::Logs { .. } | E::EventsHeld => Code::Internal,
        E::TooManySubscribers(_) => Code::ResourceExhausted,
        E::ShuttingDown => Code::Unavailable,
        E::Several(all) => all.first().map_or(Code::Unknown, supervisor_code),
    }
}

fn code(e: &Error) -> Code {
    match e {
        Error::Supervisor(e) => supervisor_code(e),
        Error::EnvOverTcp
        | Error::AppAndApps
        | Error::TargetAndApps
        | Error::NothingToStart
        | Error::TooManyApps { .. }
        | Error::TooManyLines { .. }
        | Error::BadAction { .. }
        | Error::MessageTooLong { .. }
        | Error::BadData { .. }
        | Error::BadAppFilter(_)
        | Error::Malformed(_)
        | Error::ApplyFile(_)
        | Error::ControlCharacter { .. } => Code::InvalidArgument,
        Error::TooManyLogReaders(_) => Code::ResourceExhausted,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::LogRead { .. } => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(code(&e), e.to_string())
    }
}

impl From<supervisor::Error> for Status {
    fn from(e: supervisor::Error) -> Status {
        Error::Supervisor(e).into()
    }
}
