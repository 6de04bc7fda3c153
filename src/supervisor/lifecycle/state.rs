//! What the lifecycle machine speaks: an app's states (each carrying only what is true in it),
//! the inputs that move it, and the effects it asks for. The rules are in `machine`.

use std::{fmt, time::Duration};

use crate::model::{Cause, EventKind, Exit};
use crate::supervisor::process::{launch::SpawnError, tree::Unkillable};

/// Where an app is.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Nothing runs, as asked (or never started).
    Stopped,
    /// It should run and waits for its turn: a new agent starts apps in dependency order.
    Queued,
    /// The main process is being spawned, for `by`.
    Starting { by: Origin },
    /// The main process runs; its readiness check has not passed yet.
    Unready { pid: u32, since_ms: u64, by: Origin },
    /// The main process runs (and is ready). `adopted`: it survived a previous agent and is not
    /// our child.
    Online {
        pid: u32,
        since_ms: u64,
        adopted: bool,
    },
    /// The whole tree is being ended, then `then` follows. `pid`: the main process, until its
    /// exit is seen. `announce`: whether `stopped` is published once the tree is gone (not when
    /// it was stopped already, or after a crash, whose outcome the restart policy publishes).
    Stopping {
        pid: Option<u32>,
        then: Then,
        announce: bool,
    },
    /// The tree is gone (`survivors`: or these outlived SIGKILL); its output is being read to
    /// the end before `then` follows, so the last bytes are on disk before anything else happens.
    Draining {
        then: Then,
        announce: bool,
        survivors: Option<Unkillable>,
    },
    /// Waiting out an autorestart delay, until this time (ms since the epoch).
    Backoff { until_ms: u64 },
    /// Could not start, could not stop, or restarted too often.
    Errored { why: Failure },
}

/// Who asked for a spawn; it says what follows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// `start` or `restart`: answered once the outcome is on disk, and with `wait`, once the
    /// app is ready.
    Request { cause: Cause, wait: bool },
    /// The autorestart delay ran out: a failed spawn counts as a crash.
    Autorestart,
}

impl Origin {
    pub fn cause(&self) -> Cause {
        match self {
            Origin::Request { cause, .. } => cause.clone(),
            Origin::Autorestart => Cause::Backoff,
        }
    }

    /// A request waits for the app's readiness.
    pub fn waits(&self) -> bool {
        matches!(self, Origin::Request { wait: true, .. })
    }
}

/// Why a tree is being ended, and what follows once it is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// `stop`: stopped, saved, answered.
    Stop(Cause),
    /// `restart`: started again (exactly stop + start).
    Restart { cause: Cause, wait: bool },
    /// `delete`: forgotten, with its log files when `purge_logs`.
    Delete { purge_logs: bool, cause: Cause },
    /// The agent exits: the tree ends, the desired state is kept.
    Shutdown,
    /// The instance goes away while its app stays: replaced by a reload, or removed by a
    /// scale down. Forgotten like a delete, but its log files stay open for the app (a
    /// replacement writes on) and no `deleted` is published: the app is not deleted.
    Retire(Cause),
    /// The main process exited on its own after running `uptime_ms` (`why`: crash), or its
    /// checks failed (`why`: unhealthy): restart it or give up. `waiting`: a request waits for
    /// this instance's readiness and is answered with `Refusal::NotReady(waiting)`.
    Crashed {
        uptime_ms: u64,
        why: Cause,
        waiting: Option<String>,
    },
    /// Leftovers of a previous agent: then queued if it should run.
    Recover,
}

impl Then {
    pub fn cause(&self) -> Cause {
        match self {
            Then::Stop(c)
            | Then::Restart { cause: c, .. }
            | Then::Delete { cause: c, .. }
            | Then::Retire(c) => c.clone(),
            Then::Shutdown => Cause::Shutdown,
            Then::Crashed { why, .. } => why.clone(),
            Then::Recover => Cause::Recovery,
        }
    }
}

/// Why an app is errored.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Spawn(SpawnError),
    Unkillable(Unkillable),
    /// More than `max_restarts` autorestarts within the window. `last`: the last exit (none:
    /// the last spawn failed); `unhealthy`: the last end was for failed checks.
    CrashLoop {
        restarts: usize,
        window: Duration,
        last: Option<Exit>,
        unhealthy: bool,
    },
    /// It exited unsuccessfully and autorestart is off.
    ExitedWithoutRestart {
        last: Option<Exit>,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Spawn(e) => write!(f, "{e}"),
            Failure::Unkillable(u) => write!(f, "cannot stop: {u}"),
            Failure::CrashLoop {
                restarts,
                window,
                last,
                unhealthy,
            } => {
                let last = match (unhealthy, last) {
                    (true, _) => "it failed its checks".into(),
                    (false, Some(e)) => e.text(),
                    (false, None) => "it could not be spawned".into(),
                };
                write!(
                    f,
                    "restarted {restarts} times within {}s; last exit: {last}",
                    window.as_secs()
                )
            }
            Failure::ExitedWithoutRestart { last } => {
                let how = last.map_or_else(|| "could not start".into(), |e| e.text());
                write!(f, "exited with {how} (autorestart is off)")
            }
        }
    }
}

/// What happens to an app: a command, a fact about its processes, a probe's verdict, or a
/// timer.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start {
        cause: Cause,
        wait: bool,
    },
    Stop(Cause),
    /// The first half of a restart that takes this app along (it depends on an app being
    /// restarted): a stop that keeps the desired state, so that an agent that dies before the
    /// second half brings the app back.
    StopForRestart(Cause),
    Restart {
        cause: Cause,
        wait: bool,
    },
    Delete {
        purge_logs: bool,
        cause: Cause,
    },
    /// The agent exits.
    Shutdown,
    /// This instance goes away, its app stays (see `Then::Retire`).
    Retire(Cause),
    /// A new agent's turn to start the app (in dependency order): a start if it is still
    /// queued, nothing otherwise (a command since then decided).
    Resume,
    /// A new agent loaded the app: `survivor` is its recorded main process if that still runs
    /// as recorded; `leftovers`: some processes of the app survive (the survivor among them);
    /// `gone`: its main process ended while no agent watched it, and the keeper kept how.
    Recovered {
        survivor: Option<Survivor>,
        leftovers: bool,
        gone: Option<Gone>,
    },
    Spawned {
        pid: u32,
    },
    SpawnFailed(SpawnError),
    /// The main process ended.
    Exited(Exit),
    /// No process of the tree is left.
    TreeGone,
    /// These processes survived SIGKILL.
    TreeSurvived(Unkillable),
    /// The output pipes were read to their end.
    Drained,
    /// The autorestart delay ran out.
    BackoffElapsed,
    /// The readiness check passed.
    Ready,
    /// The readiness check did not pass within the start timeout (the text says why).
    NotReady(String),
    /// The liveness check failed too many times in a row (the text says why).
    Unhealthy(String),
    /// The app's own policy asks for a restart (`cause`: its schedule fired, or files it
    /// watches changed): exactly a restart, when it runs; nothing otherwise.
    Trigger(Cause),
}

impl Input {
    /// Commands are answered; the other inputs are facts.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Input::Start { .. }
                | Input::Stop(_)
                | Input::StopForRestart(_)
                | Input::Restart { .. }
                | Input::Delete { .. }
                | Input::Shutdown
                | Input::Retire(_)
                | Input::Resume
        )
    }
}

/// A main process that outlived the previous agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survivor {
    pub pid: u32,
    pub since_ms: u64,
}

/// A main process that ended between two agents: the keeper reaped it and kept its status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gone {
    pub pid: u32,
    /// When it had started (ms since the epoch).
    pub since_ms: u64,
    pub exit: Exit,
}

/// Which check a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ready,
    Alive,
}

/// What the owner carries out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish an event about the app.
    Emit(Note),
    /// Spawn the main process; the outcome comes back as `Spawned` or `SpawnFailed`.
    Spawn,
    /// Watch the survivor that `Recovered` named as the main process.
    Adopt,
    /// Run this check against the main process; its verdict comes back as `Ready`/`NotReady`
    /// or `Unhealthy`. Any other probe of the app stops.
    Probe(Probe),
    /// End the whole tree (its probes stop first); then `Exited` (when the main process was
    /// running) and `TreeGone` or `TreeSurvived` come back.
    EndTree,
    /// Read the output pipes to their end; then `Drained` comes back.
    Drain,
    /// Come back with `BackoffElapsed` after this delay.
    ArmBackoff(Duration),
    PurgeLogs,
    /// No more output will come: followers end once they have read everything.
    CloseLogs,
    /// Queue the app's record for writing; with `wait`, until it is on disk (a failure then
    /// answers the pending request).
    Persist {
        wait: bool,
    },
    /// Remove the app's record and wait until that is on disk.
    Forget,
    /// Answer the pending command.
    Reply(Result<(), Refusal>),
    /// Keep the pending command unanswered until the app is ready (or fails to be).
    Hold,
    /// Answer the commands held for the app's readiness.
    Release(Result<(), Refusal>),
    /// Not now: the command waits until the current operation is over.
    Defer,
    /// The owner ends (the app was deleted, or the agent exits).
    End,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Start(SpawnError),
    Stop(Unkillable),
    /// The instance never became ready (the text says why).
    NotReady(String),
}

/// An event to publish, without the app's identity (the owner adds it).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: EventKind,
    pub cause: Cause,
    pub pid: Option<u32>,
    pub exit: Option<Exit>,
    pub delay: Option<Duration>,
    pub error: Option<String>,
    pub message: Option<&'static str>,
}

impl Note {
    pub fn new(kind: EventKind, cause: Cause) -> Note {
        Note {
            kind,
            cause,
            pid: None,
            exit: None,
            delay: None,
            error: None,
            message: None,
        }
    }

    pub fn pid(mut self, pid: Option<u32>) -> Note {
        self.pid = pid;
        self
    }
}
