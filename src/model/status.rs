//! Where an app is in its life. Each state carries only what is true in it.

use serde::{Deserialize, Serialize};

use super::Signal;

/// What the user asked for: the agent keeps `Online` apps running, across its own restarts too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Online,
    Stopped,
}

/// The live state of an app.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Being spawned, or spawned (`pid`) and not yet ready.
    Starting { pid: Option<u32> },
    /// Waiting out an autorestart delay; shown as `starting`.
    Backoff { until_unix_ms: u64 },
    /// The main process runs. `adopted`: it survived a previous agent and is not our child.
    Online {
        pid: u32,
        started_at_unix_ms: u64,
        adopted: bool,
    },
    /// The tree is being stopped.
    Stopping { pid: Option<u32> },
    /// Nothing runs, as asked.
    Stopped,
    /// Could not start, or restarted too often.
    Errored { cause: String },
}

impl Status {
    /// The status word users see: starting, online, stopping, stopped, errored.
    pub fn word(&self) -> &'static str {
        super::StatusKind::from(self).word()
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Status::Online { pid, .. } => Some(*pid),
            Status::Starting { pid } => *pid,
            Status::Stopping { pid } => *pid,
            _ => None,
        }
    }
}

/// How a main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_unix_ms: u64,
}

impl Exit {
    /// True for a clean `exit(0)`.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn text(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => match Signal::name_of(s) {
                Some(name) => format!("signal {s} ({name})"),
                None => format!("signal {s}"),
            },
            (None, None) => "unknown (the process was adopted, not our child)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_texts() {
        assert_eq!(Status::Backoff { until_unix_ms: 0 }.word(), "starting");
        let exit = Exit {
            code: None,
            signal: Some(9),
            at_unix_ms: 0,
        };
        assert_eq!(exit.text(), "signal 9 (SIGKILL)");
        assert!(!exit.success());
    }
}
