//! What the agent reports about an app: a row of a listing ([`AppInfo`]) and everything it
//! knows ([`AppDetail`]). These are what clients receive (`List`, `Describe`, and the answers
//! of start, stop, restart, delete and flush), in model terms, for the CLI to render.

use std::{fmt, path::PathBuf};

use super::{AppId, AppSpec, Desired, Env, Exit, ProbeReport, Status};

/// The status as a listing shows it: a word per state, without the state's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// Being spawned, or waiting out an autorestart delay.
    Starting,
    Online,
    Stopping,
    Stopped,
    Errored,
    /// An agent sent a status this client does not know.
    Unknown,
}

impl StatusKind {
    /// The word users see: starting, online, stopping, stopped, errored (or unknown).
    pub fn word(self) -> &'static str {
        match self {
            StatusKind::Starting => "starting",
            StatusKind::Online => "online",
            StatusKind::Stopping => "stopping",
            StatusKind::Stopped => "stopped",
            StatusKind::Errored => "errored",
            StatusKind::Unknown => "unknown",
        }
    }
}

impl From<&Status> for StatusKind {
    fn from(s: &Status) -> StatusKind {
        match s {
            Status::Starting { .. } | Status::Backoff { .. } => StatusKind::Starting,
            Status::Online { .. } => StatusKind::Online,
            Status::Stopping { .. } => StatusKind::Stopping,
            Status::Stopped => StatusKind::Stopped,
            Status::Errored { .. } => StatusKind::Errored,
        }
    }
}

/// One app in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct AppInfo {
    pub id: AppId,
    pub name: String,
    pub status: StatusKind,
    /// The main process, when one runs.
    pub pid: Option<u32>,
    /// Manual restarts and autorestarts.
    pub restarts: u32,
    /// Since the main process started; 0 when none runs.
    pub uptime_ms: u64,
    /// CPU of the app's whole tree, in percent of one core, over the last sampling interval.
    pub cpu_percent: f64,
    /// Memory of the app's whole tree (PSS where readable, else RSS), summed.
    pub memory_bytes: u64,
    /// In a start's or restart's answer: started first because this app (which the request
    /// started) depends on it.
    pub needed_by: Option<String>,
    /// In a stop's or restart's answer: stopped first because it depends on this app (which
    /// the request stopped).
    pub dependent_of: Option<String>,
    /// Live processes in the app's tree.
    pub processes: u32,
    /// Which instance this row is (0 to `instances` - 1).
    pub instance: u32,
    /// How many instances the app has.
    pub instances: u32,
}

impl AppInfo {
    /// The name as a listing shows it: `api:1` for an app of several instances, `api` otherwise.
    pub fn label(&self) -> String {
        if self.instances > 1 {
            format!("{}:{}", self.name, self.instance)
        } else {
            self.name.clone()
        }
    }
}

/// Everything the agent knows about one app.
#[derive(Clone, PartialEq)]
pub struct AppDetail {
    pub info: AppInfo,
    /// The spec as stored, defaults filled in.
    pub spec: AppSpec,
    /// The environment the app starts with (base, declared, profile, and grpm's own variables).
    pub env: Env,
    /// Where each variable of `env` comes from.
    pub env_sources: std::collections::BTreeMap<String, super::EnvOrigin>,
    pub desired: Desired,
    pub last_exit: Option<Exit>,
    /// Why the app is errored, or why its last start failed.
    pub error: Option<String>,
    pub created_at_unix_ms: u64,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    /// Until a pending autorestart; 0 when none is pending.
    pub restart_in_ms: u64,
    /// What the app's checks last found, when it has any.
    pub probe: Option<ProbeReport>,
    /// The next scheduled restart (ms since the epoch).
    pub next_restart_unix_ms: Option<u64>,
    /// Why its watch does not work, if it does not.
    pub watch_error: Option<String>,
    /// Its last restart: why, and when (ms since the epoch).
    pub last_restart: Option<(super::Cause, u64)>,
    /// The app's held sockets as bound.
    pub sockets: Vec<super::HeldSocket>,
}

/// Hand-written so that env values (which often hold secrets) never reach a log.
impl fmt::Debug for AppDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppDetail")
            .field("info", &self.info)
            .field("spec", &self.spec)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("env_sources", &self.env_sources)
            .field("desired", &self.desired)
            .field("last_exit", &self.last_exit)
            .field("error", &self.error)
            .field("created_at_unix_ms", &self.created_at_unix_ms)
            .field("stdout_path", &self.stdout_path)
            .field("stderr_path", &self.stderr_path)
            .field("restart_in_ms", &self.restart_in_ms)
            .field("probe", &self.probe)
            .field("next_restart_unix_ms", &self.next_restart_unix_ms)
            .field("watch_error", &self.watch_error)
            .field("last_restart", &self.last_restart)
            .field("sockets", &self.sockets)
            .finish()
    }
}
