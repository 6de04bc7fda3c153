//! The supervisor's errors: each variant says which app and what went wrong, with a typed cause,
//! and maps to one gRPC code in `rpc::error`.

use std::{fmt, io, path::PathBuf};

use super::deps::GraphError;
use super::process::{escaped::Escaped, launch::SpawnError, tree::Unkillable};
use crate::model::{AppId, Condition, InvalidSpec};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no app matches {0:?}")]
    NotFound(String),
    #[error("an app named {name} already exists (id {id})")]
    AlreadyExists { name: String, id: AppId },
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    #[error("{what}: {problem}")]
    InvalidEnv { what: &'static str, problem: String },
    #[error("app {0} is given twice")]
    GivenTwice(String),
    /// An apply would take over an app that is not the file's: another file's, or one created
    /// without a file (`grpm start --name`, or a grpm from before files were recorded).
    #[error(
        "{name} (id {id}) exists but does not belong to {}: {}; apply changes only the apps it \
         created (delete {name} first, or give the file's app another name)",
        .file.display(),
        match .owner { Some(o) => format!("it was created from {}", o.display()), None => "it was created without an app file (grpm start --name, or a grpm from before apply)".to_string() }
    )]
    NotTheFiles {
        name: String,
        id: AppId,
        file: PathBuf,
        owner: Option<PathBuf>,
    },
    #[error("{app}: {cause}")]
    StartFailed { app: String, cause: SpawnError },
    #[error("{app}: {cause}")]
    NotReady { app: String, cause: String },
    #[error("{app}: cannot stop: {cause}")]
    StopFailed { app: String, cause: Unkillable },
    /// The tree ended, but processes that left it beyond reach still hold the app's output.
    #[error("{app}: {cause}")]
    Escaped { app: String, cause: Escaped },
    /// The change is made; only writing it to `state.json` failed, and is retried.
    #[error(
        "{app}: done, but state not saved yet ({cause}); the agent keeps the change and \
         writes it as soon as the disk allows"
    )]
    Persist { app: String, cause: StoreError },
    #[error("{app}: logs: {cause}")]
    Logs { app: String, cause: OsError },
    /// A request would create an app that depends on no app, or a cycle (refused as a whole).
    #[error(transparent)]
    Dependencies(#[from] GraphError),
    /// A dependency of `app` did not meet its condition (`cause`: why), so `app` was not
    /// started: `web: not started: db did not become ready: ...`.
    #[error("{app}: not started: {dep} did not {}: {}", verb(*.condition), .cause.reason())]
    NotStarted {
        app: String,
        dep: String,
        condition: Condition,
        cause: Box<Error>,
    },
    /// A one-shot dependency ran and did not exit 0 (`why`: how it ended instead).
    #[error("{app}: {why}")]
    NotCompleted { app: String, why: String },
    /// Deleting `app` would leave apps depending on nothing: `by` (delete them too, or first).
    #[error("{app}: cannot delete: {} depend{} on it; delete {} first, or in the same request", .by.join(", "), if .by.len() == 1 { "s" } else { "" }, .by.join(", "))]
    DependedOn { app: String, by: Vec<String> },
    /// A new app depends on one that a delete under way is ending.
    #[error("{app}: depends on {dep}, which is being deleted")]
    BeingDeleted { app: String, dep: String },
    /// An upgrade needs the keeper, which this agent does not run under (any more).
    #[error(
        "this agent runs without a keeper (started with --no-keeper, or its keeper died), so \
         it cannot be upgraded in place; stop it (grpm kill) and start the new binary"
    )]
    NoKeeper,
    #[error("too many subscribers ({0}); try again later")]
    TooManySubscribers(usize),
    #[error(
        "from_seq {from} is ahead of this agent's last event ({last}): resume from at most \
         {last}, or subscribe without from_seq"
    )]
    ResumeAhead { from: u64, last: u64 },
    /// Event numbers cannot be reserved on disk (`events.seq`): no event is published.
    #[error(
        "events are not published for now: their numbers cannot be reserved on disk \
         (events.seq; see the agent log); a gap event will count what was held back"
    )]
    EventsHeld,
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// A held socket could not be bound: nothing was created.
    #[error(transparent)]
    Bind(#[from] super::sockets::BindError),
    /// `api:5` of an app with fewer instances.
    #[error("no instance {target}: the app has {instances} instance{} (0 to {})", if *.instances == 1 { "" } else { "s" }, .instances.saturating_sub(1))]
    NoInstance { target: String, instances: u32 },
    #[error(
        "{target}: one instance cannot be deleted; scale the app down instead (grpm scale {app} N)"
    )]
    DeleteInstance { target: String, app: String },
    /// Scale names one app (not "all", not an instance).
    #[error("scale {0}: name one app (a name or an id)")]
    ScaleTarget(String),
    /// The app changed under a reload (deleted, scaled, or its instance replaced).
    #[error("{app}: changed during the reload ({why}); the reload stopped there")]
    ReloadInterrupted { app: String, why: String },
    #[error("{0}")]
    Io(String),
    /// Several apps failed; the others were acted on.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),
}

/// How a condition's failure reads: `db did not become ready`.
fn verb(c: Condition) -> &'static str {
    match c {
        Condition::Started => "start",
        Condition::Ready => "become ready",
        Condition::Completed => "complete",
    }
}

impl Error {
    /// The error without the app's name in front, for a chain that names the app itself
    /// (`web: not started: db did not become ready: <reason>`).
    pub fn reason(&self) -> String {
        match self {
            Error::StartFailed { cause, .. } => cause.to_string(),
            Error::NotReady { cause, .. } => cause.clone(),
            Error::NotCompleted { why, .. } => why.clone(),
            Error::NotStarted {
                dep,
                condition,
                cause,
                ..
            } => format!(
                "not started: {dep} did not {}: {}",
                verb(*condition),
                cause.reason()
            ),
            other => other.to_string(),
        }
    }
}

/// Why `state.json` could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the state writer stopped")]
    WriterStopped,
    #[error("refusing to write an empty app list over a non-empty state.json")]
    WouldEmpty,
    #[error("cannot write {}: {err}", path.display())]
    Write { path: PathBuf, err: OsError },
    #[error("cannot encode the state: {0}")]
    Encode(String),
}

/// An operating-system error kept as a value: its errno (to decide on) and its text (to show).
/// Unlike `io::Error`, it can be cloned into every reply and event that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    pub errno: Option<i32>,
    text: String,
}

impl From<io::Error> for OsError {
    fn from(e: io::Error) -> OsError {
        OsError {
            errno: e.raw_os_error(),
            text: e.to_string(),
        }
    }
}

impl From<nix::Error> for OsError {
    fn from(e: nix::Error) -> OsError {
        io::Error::from(e).into()
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
