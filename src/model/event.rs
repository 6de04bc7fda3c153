//! Events: every transition of every app, numbered by the agent, for subscribers to follow and
//! resume.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AppId, Exit};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Starting,
    Online,
    /// The main process ended (exit code or signal in `exit`).
    Exited,
    Stopping,
    Stopped,
    /// A manual restart began (a stop and a start follow).
    Restarting,
    /// An autorestart will happen after `delay_ms`.
    AutorestartScheduled,
    Errored,
    Deleted,
    /// A user notification (NotifyGod).
    Notify,
    /// Events were lost to this subscriber (`lost` says how many); not a transition.
    Gap,
    /// The readiness check passed (`delay_ms`: from spawn to ready).
    Ready,
    /// The liveness check failed too often, or the app was not ready in time (`error`).
    Unhealthy,
    /// A reload began: each instance is replaced by a new one, ready before the old one stops.
    Reloading,
    /// A reload ended, every instance replaced (or failed: `error` says which and why).
    Reloaded,
    /// The number of instances changed (`message`: "2 -> 4").
    Scaled,
}

impl EventKind {
    pub const ALL: [EventKind; 17] = [
        EventKind::Created,
        EventKind::Starting,
        EventKind::Online,
        EventKind::Exited,
        EventKind::Stopping,
        EventKind::Stopped,
        EventKind::Restarting,
        EventKind::AutorestartScheduled,
        EventKind::Errored,
        EventKind::Deleted,
        EventKind::Notify,
        EventKind::Gap,
        EventKind::Ready,
        EventKind::Unhealthy,
        EventKind::Reloading,
        EventKind::Reloaded,
        EventKind::Scaled,
    ];

    /// The lowercase word used in JSON lines and on the command line.
    pub fn word(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Starting => "starting",
            EventKind::Online => "online",
            EventKind::Exited => "exited",
            EventKind::Stopping => "stopping",
            EventKind::Stopped => "stopped",
            EventKind::Restarting => "restarting",
            EventKind::AutorestartScheduled => "autorestart_scheduled",
            EventKind::Errored => "errored",
            EventKind::Deleted => "deleted",
            EventKind::Notify => "notify",
            EventKind::Gap => "gap",
            EventKind::Ready => "ready",
            EventKind::Unhealthy => "unhealthy",
            EventKind::Reloading => "reloading",
            EventKind::Reloaded => "reloaded",
            EventKind::Scaled => "scaled",
        }
    }

    pub fn parse(s: &str) -> Result<EventKind, String> {
        let w = s.trim().to_ascii_lowercase().replace('-', "_");
        EventKind::ALL
            .into_iter()
            .find(|k| k.word() == w)
            .ok_or_else(|| {
                format!(
                    "unknown event kind {s:?}; use one of {}",
                    EventKind::ALL.map(EventKind::word).join(", ")
                )
            })
    }
}

/// Who or what caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// An API request: which method, from which caller.
    Request {
        method: String,
        #[serde(default)]
        uid: Option<u32>,
        #[serde(default)]
        pid: Option<u32>,
        /// How the caller reached the agent ("unix", or a remote address).
        peer: String,
    },
    /// The app's main process ended on its own.
    Crash,
    /// The autorestart delay ran out.
    Backoff,
    /// The agent (re)started and brought the app back, or adopted it.
    Recovery,
    /// The agent is shutting down.
    Shutdown,
    /// A liveness check failed, or a readiness check did not pass in time.
    Unhealthy,
    /// Its `restart_schedule` fired.
    Schedule,
    /// A file it watches changed.
    Watch,
    /// Its tree's memory stayed above `max_memory`.
    Memory,
    /// `grpm apply` (the Apply RPC): which caller, as for a request.
    Apply {
        #[serde(default)]
        uid: Option<u32>,
        #[serde(default)]
        pid: Option<u32>,
        peer: String,
    },
}

impl Cause {
    /// Events caused by an API request are `manual`.
    pub fn is_manual(&self) -> bool {
        matches!(self, Cause::Request { .. } | Cause::Apply { .. })
    }

    /// The word in JSON lines and event lines: request, crash, backoff, recovery, shutdown.
    pub fn word(&self) -> &'static str {
        match self {
            Cause::Request { .. } => "request",
            Cause::Crash => "crash",
            Cause::Backoff => "backoff",
            Cause::Recovery => "recovery",
            Cause::Shutdown => "shutdown",
            Cause::Unhealthy => "unhealthy",
            Cause::Schedule => "schedule",
            Cause::Watch => "watch",
            Cause::Memory => "memory",
            Cause::Apply { .. } => "apply",
        }
    }

    pub fn text(&self) -> String {
        match self {
            Cause::Request {
                method,
                uid,
                pid,
                peer,
            } => {
                let mut s = format!("{method} request via {peer}");
                if let Some(u) = uid {
                    s.push_str(&format!(" uid {u}"));
                }
                if let Some(p) = pid {
                    s.push_str(&format!(" pid {p}"));
                }
                s
            }
            Cause::Crash => "crash".into(),
            Cause::Backoff => "backoff".into(),
            Cause::Recovery => "agent recovery".into(),
            Cause::Shutdown => "agent shutdown".into(),
            Cause::Unhealthy => "unhealthy".into(),
            Cause::Schedule => "restart schedule".into(),
            Cause::Watch => "watched files changed".into(),
            Cause::Memory => "memory limit".into(),
            Cause::Apply { uid, pid, peer } => {
                let mut s = format!("apply via {peer}");
                if let Some(u) = uid {
                    s.push_str(&format!(" uid {u}"));
                }
                if let Some(p) = pid {
                    s.push_str(&format!(" pid {p}"));
                }
                s
            }
        }
    }
}

/// One event. `seq` is assigned by the agent when the event is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at_unix_ms: u64,
    pub app: String,
    pub app_id: AppId,
    /// Which instance of the app (0 for an app of one instance, and for app-level events).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance: u32,
    #[serde(default)]
    pub pid: Option<u32>,
    pub kind: EventKind,
    pub cause: Cause,
    #[serde(default)]
    pub exit: Option<Exit>,
    /// Autorestart delay, for `autorestart_scheduled`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Why, for `errored`.
    #[serde(default)]
    pub error: Option<String>,
    /// For `notify`: what the user says happened, and details.
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// For `gap`: how many events this subscriber missed.
    #[serde(default)]
    pub lost: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Event {
    /// A fresh event about an app; the hub numbers it.
    pub fn new(kind: EventKind, app_id: AppId, app: &str, cause: Cause) -> Event {
        Event {
            seq: 0,
            at_unix_ms: super::now_unix_ms(),
            app: app.to_string(),
            app_id,
            instance: 0,
            pid: None,
            kind,
            cause,
            exit: None,
            delay_ms: None,
            error: None,
            action: String::new(),
            message: String::new(),
            data: BTreeMap::new(),
            lost: 0,
        }
    }

    pub fn manual(&self) -> bool {
        self.cause.is_manual()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_words() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.word()), Ok(k));
        }
        assert_eq!(
            EventKind::parse("Autorestart-Scheduled"),
            Ok(EventKind::AutorestartScheduled)
        );
        assert!(EventKind::parse("exploded").unwrap_err().contains("exited"));
    }

    #[test]
    fn manual_means_requested() {
        let req = Cause::Request {
            method: "Restart".into(),
            uid: Some(0),
            pid: Some(42),
            peer: "unix".into(),
        };
        assert!(req.is_manual());
        assert_eq!(req.text(), "Restart request via unix uid 0 pid 42");
        assert!(!Cause::Crash.is_manual());
    }
}
