//! The supervisor's errors: each variant says which app and what went wrong, and maps to one
//! gRPC code in `rpc::error`.

use crate::model::AppId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no app matches {0:?}")]
    NotFound(String),
    #[error("an app named {name} already exists (id {id})")]
    AlreadyExists { name: String, id: AppId },
    #[error("{0}")]
    Invalid(String),
    #[error("{app}: {cause}")]
    StartFailed { app: String, cause: String },
    #[error("{app}: cannot stop: {cause}")]
    StopFailed { app: String, cause: String },
    #[error("{app}: state not saved: {cause}")]
    Persist { app: String, cause: String },
    #[error("{app}: logs: {cause}")]
    Logs { app: String, cause: String },
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// Several apps failed; the others were acted on.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),
}
