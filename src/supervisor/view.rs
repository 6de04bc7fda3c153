//! What an app looks like from outside its owner: a snapshot the owner publishes after every
//! change, so listing never waits for an app that is busy stopping.

use std::{fmt, path::PathBuf, sync::Arc};

use super::{lifecycle::TriggerReport, probes::Live};
use crate::model::{AppId, AppSpec, Cause, Desired, Env, Exit, Status};

#[derive(Clone)]
pub struct AppView {
    pub id: AppId,
    pub spec: Arc<AppSpec>,
    /// The captured base environment (declared variables are in `spec.env`).
    pub base_env: Arc<Env>,
    pub agent_id: Arc<str>,
    pub status: Status,
    pub desired: Desired,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Why it is errored, or why the last start failed.
    pub error: Option<String>,
    pub created_at_unix_ms: u64,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    /// What the app's checks last found, when it has any (read live).
    pub probe: Option<Live>,
    /// Its next scheduled restart, and why watching fails, if it does.
    pub triggers: TriggerReport,
    /// Its last restart: why, and when (ms since the epoch).
    pub last_restart: Option<(Cause, u64)>,
}

impl AppView {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The environment the app's processes get.
    pub fn effective_env(&self) -> Env {
        effective_env(&self.base_env, &self.spec, &self.agent_id, self.id)
    }
}

pub use crate::model::effective_env;

/// Hand-written: the environment stays out of logs.
impl fmt::Debug for AppView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppView")
            .field("id", &self.id)
            .field("name", &self.spec.name)
            .field("status", &self.status)
            .field("desired", &self.desired)
            .field("restarts", &self.restarts)
            .field("last_exit", &self.last_exit)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}
