//! The life of one app as a pure state machine: the app's state and an input give the next state
//! and the effects to carry out. No clocks, no processes, no I/O: time comes in as an argument,
//! and the owner task (`owner`) feeds the inputs and carries out the effects. Every rule of an
//! app's life is here, the restart policy included, and the tests are a table of (state, input,
//! next state, effects) with one row per pair.
//!
//! Operations that take time (spawning, ending a tree, reading its output to the end) are effects
//! whose outcome comes back as an input (`Spawned`/`SpawnFailed`; `Exited` then
//! `TreeGone`/`TreeSurvived`; `Drained`). While one is under way the app is `Starting`,
//! `Stopping` or `Draining`, and a command arriving then waits (`Defer`), so the commands on one
//! app apply one after the other.

use std::{collections::VecDeque, fmt, time::Duration};

use crate::model::{Cause, Desired, EventKind, Exit, RestartPolicy, Status};
use crate::supervisor::process::{launch::SpawnError, tree::Unkillable};

/// Where an app is. Each state carries only what is true in it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Nothing runs, as asked (or never started).
    Stopped,
    /// The main process is being spawned, for `by`.
    Starting { by: Origin },
    /// The main process runs. `adopted`: it survived a previous agent and is not our child.
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
    /// `start` or `restart`: the request is answered once the outcome is on disk.
    Request(Cause),
    /// The autorestart delay ran out: a failed spawn counts as a crash.
    Autorestart,
    /// A new agent brings back an app that should run.
    Recovery,
}

impl Origin {
    fn cause(&self) -> Cause {
        match self {
            Origin::Request(c) => c.clone(),
            Origin::Autorestart => Cause::Backoff,
            Origin::Recovery => Cause::Recovery,
        }
    }
}

/// Why a tree is being ended, and what follows once it is gone.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// `stop`: stopped, saved, answered.
    Stop(Cause),
    /// `restart`: started again (exactly stop + start).
    Restart(Cause),
    /// `delete`: forgotten, with its log files when `purge_logs`.
    Delete { purge_logs: bool, cause: Cause },
    /// The agent exits: the tree ends, the desired state is kept.
    Shutdown,
    /// The main process exited on its own after running `uptime_ms`: restart it or give up.
    Crashed { uptime_ms: u64 },
    /// Leftovers of a previous agent: then start the app if it should run.
    Recover,
}

impl Then {
    fn cause(&self) -> Cause {
        match self {
            Then::Stop(c) | Then::Restart(c) | Then::Delete { cause: c, .. } => c.clone(),
            Then::Shutdown => Cause::Shutdown,
            Then::Crashed { .. } => Cause::Crash,
            Then::Recover => Cause::Recovery,
        }
    }
}

/// Why an app is errored.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Spawn(SpawnError),
    Unkillable(Unkillable),
    /// More than `max_restarts` autorestarts within the window.
    CrashLoop {
        restarts: usize,
        window: Duration,
        last: Option<Exit>,
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
            } => {
                let last = last.map_or_else(|| "it could not be spawned".into(), |e| e.text());
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

/// What happens to an app: a command, a fact about its processes, or a timer.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start(Cause),
    Stop(Cause),
    Restart(Cause),
    Delete {
        purge_logs: bool,
        cause: Cause,
    },
    /// The agent exits.
    Shutdown,
    /// A new agent loaded the app: `survivor` is its recorded main process if that still runs
    /// as recorded; `leftovers`: some processes of the app survive (the survivor among them).
    Recovered {
        survivor: Option<Survivor>,
        leftovers: bool,
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
}

impl Input {
    /// Commands are answered; the other inputs are facts.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Input::Start(_)
                | Input::Stop(_)
                | Input::Restart(_)
                | Input::Delete { .. }
                | Input::Shutdown
        )
    }
}

/// A main process that outlived the previous agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survivor {
    pub pid: u32,
    pub since_ms: u64,
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
    /// End the whole tree; then `Exited` (when the main process was running) and `TreeGone` or
    /// `TreeSurvived` come back.
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
    fn new(kind: EventKind, cause: Cause) -> Note {
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

    fn pid(mut self, pid: Option<u32>) -> Note {
        self.pid = pid;
        self
    }
}

/// The rules an app is supervised by, from its spec.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub restart: RestartPolicy,
    pub autorestart: bool,
}

/// Recent autorestarts: what the crash-loop rule and the backoff look at.
#[derive(Debug, Default, Clone, PartialEq)]
struct History {
    /// Times (ms) of the autorestarts within the current window.
    restarts: VecDeque<u64>,
    /// Autorestarts since the app last stayed up for `STABLE_AFTER`; drives the backoff.
    consecutive: u32,
}

/// Everything the machine knows of one app.
#[derive(Debug, Clone, PartialEq)]
pub struct Life {
    pub state: State,
    pub desired: Desired,
    /// Restarts so far: `restart` requests and autorestarts.
    pub restarts: u32,
    /// How the main process last ended.
    pub last_exit: Option<Exit>,
    /// Why it is errored, or why its last start failed; cleared by a successful spawn.
    pub last_failure: Option<Failure>,
    history: History,
}

impl Life {
    /// An app as created or loaded: stopped until its first input.
    pub fn new(desired: Desired, restarts: u32) -> Life {
        Life {
            state: State::Stopped,
            desired,
            restarts,
            last_exit: None,
            last_failure: None,
            history: History::default(),
        }
    }

    /// An operation (a spawn, a tree's end) is under way: commands wait.
    pub fn busy(&self) -> bool {
        matches!(
            self.state,
            State::Starting { .. } | State::Stopping { .. } | State::Draining { .. }
        )
    }

    /// The status users see.
    pub fn status(&self) -> Status {
        match &self.state {
            State::Stopped => Status::Stopped,
            State::Starting { .. } => Status::Starting,
            State::Online {
                pid,
                since_ms,
                adopted,
            } => Status::Online {
                pid: *pid,
                started_at_unix_ms: *since_ms,
                adopted: *adopted,
            },
            State::Stopping { pid, .. } => Status::Stopping { pid: *pid },
            State::Draining { .. } => Status::Stopping { pid: None },
            State::Backoff { until_ms } => Status::Backoff {
                until_unix_ms: *until_ms,
            },
            State::Errored { why } => Status::Errored {
                cause: why.to_string(),
            },
        }
    }

    /// Applies `input` at time `now_ms` (ms since the epoch): the state moves on, and the effects
    /// to carry out, in order, are returned. An input that makes no sense in the current state (a
    /// stale timer, say) changes nothing.
    pub fn step(&mut self, input: Input, rules: &Rules, now_ms: u64) -> Vec<Effect> {
        use Effect as E;
        let mut fx = Vec::new();
        if self.busy() && input.is_command() {
            return vec![E::Defer];
        }
        match input {
            Input::Start(cause) => {
                if matches!(self.state, State::Online { .. }) {
                    fx.push(E::Reply(Ok(())));
                } else {
                    self.history = History::default();
                    self.desired = Desired::Online;
                    self.spawn(Origin::Request(cause), &mut fx);
                }
            }
            Input::Stop(cause) => {
                self.desired = Desired::Stopped;
                self.end_tree(Then::Stop(cause), &mut fx);
            }
            Input::Restart(cause) => {
                self.desired = Desired::Online;
                fx.push(E::Emit(Note::new(EventKind::Restarting, cause.clone())));
                self.end_tree(Then::Restart(cause), &mut fx);
            }
            Input::Delete { purge_logs, cause } => {
                self.end_tree(Then::Delete { purge_logs, cause }, &mut fx);
            }
            Input::Shutdown => self.end_tree(Then::Shutdown, &mut fx),
            Input::Recovered {
                survivor,
                leftovers,
            } => {
                if self.state == State::Stopped {
                    self.recover(survivor, leftovers, &mut fx);
                }
            }
            Input::Spawned { pid } => {
                if let State::Starting { by } = &self.state {
                    let by = by.clone();
                    self.state = State::Online {
                        pid,
                        since_ms: now_ms,
                        adopted: false,
                    };
                    self.last_failure = None;
                    fx.push(E::Emit(
                        Note::new(EventKind::Online, by.cause()).pid(Some(pid)),
                    ));
                    match by {
                        Origin::Request(_) => {
                            fx.push(E::Persist { wait: true });
                            fx.push(E::Reply(Ok(())));
                        }
                        Origin::Autorestart | Origin::Recovery => {
                            fx.push(E::Persist { wait: false })
                        }
                    }
                }
            }
            Input::SpawnFailed(error) => {
                if let State::Starting { by } = &self.state {
                    let by = by.clone();
                    self.errored(Failure::Spawn(error.clone()), by.cause(), &mut fx);
                    match by {
                        Origin::Request(_) => {
                            fx.push(E::Persist { wait: true });
                            fx.push(E::Reply(Err(Refusal::Start(error))));
                        }
                        Origin::Autorestart => {
                            self.decide(None, 0, Cause::Backoff, rules, now_ms, &mut fx);
                            fx.push(E::Persist { wait: false });
                        }
                        Origin::Recovery => fx.push(E::Persist { wait: false }),
                    }
                }
            }
            Input::Exited(exit) => match &mut self.state {
                State::Online { pid, since_ms, .. } => {
                    let (pid, uptime_ms) = (*pid, now_ms.saturating_sub(*since_ms));
                    self.last_exit = Some(exit);
                    fx.push(E::Emit(exited(Cause::Crash, pid, exit)));
                    self.state = State::Stopping {
                        pid: None,
                        then: Then::Crashed { uptime_ms },
                        announce: false,
                    };
                    fx.push(E::EndTree);
                }
                State::Stopping {
                    pid: pid @ Some(_),
                    then,
                    ..
                } => {
                    let main = pid.take();
                    self.last_exit = Some(exit);
                    fx.push(E::Emit(exited(then.cause(), main.unwrap_or(0), exit)));
                }
                _ => {}
            },
            Input::TreeGone => self.tree_ended(None, &mut fx),
            Input::TreeSurvived(u) => self.tree_ended(Some(u), &mut fx),
            Input::Drained => self.drained(rules, now_ms, &mut fx),
            Input::BackoffElapsed => {
                if matches!(self.state, State::Backoff { .. }) {
                    self.restarts = self.restarts.saturating_add(1);
                    self.spawn(Origin::Autorestart, &mut fx);
                }
            }
        }
        fx
    }

    fn spawn(&mut self, by: Origin, fx: &mut Vec<Effect>) {
        fx.push(Effect::Emit(Note::new(EventKind::Starting, by.cause())));
        self.state = State::Starting { by };
        fx.push(Effect::Spawn);
    }

    /// Ends the tree, then `then`. An app that is stopped already gets no events, but its
    /// leftovers are still looked for.
    fn end_tree(&mut self, then: Then, fx: &mut Vec<Effect>) {
        let announce = self.state != State::Stopped;
        let pid = match self.state {
            State::Online { pid, .. } => Some(pid),
            _ => None,
        };
        if announce {
            fx.push(Effect::Emit(
                Note::new(EventKind::Stopping, then.cause()).pid(pid),
            ));
        }
        self.state = State::Stopping {
            pid,
            then,
            announce,
        };
        fx.push(Effect::EndTree);
    }

    fn recover(&mut self, survivor: Option<Survivor>, leftovers: bool, fx: &mut Vec<Effect>) {
        let wanted = self.desired == Desired::Online;
        match survivor {
            Some(s) if wanted => {
                self.state = State::Online {
                    pid: s.pid,
                    since_ms: s.since_ms,
                    adopted: true,
                };
                fx.push(Effect::Adopt);
                let mut note = Note::new(EventKind::Online, Cause::Recovery).pid(Some(s.pid));
                note.message = Some("adopted from the previous agent");
                fx.push(Effect::Emit(note));
            }
            _ if leftovers => self.end_tree(Then::Recover, fx),
            _ if wanted => self.spawn(Origin::Recovery, fx),
            _ => {}
        }
    }

    /// The tree is gone (`survivors`: or these outlived SIGKILL): its output is read to the end.
    fn tree_ended(&mut self, survivors: Option<Unkillable>, fx: &mut Vec<Effect>) {
        let State::Stopping { then, announce, .. } = &self.state else {
            return;
        };
        self.state = State::Draining {
            then: then.clone(),
            announce: *announce,
            survivors,
        };
        fx.push(Effect::Drain);
    }

    /// The tree is gone and its output on disk: what the stop was for follows.
    fn drained(&mut self, rules: &Rules, now_ms: u64, fx: &mut Vec<Effect>) {
        use Effect as E;
        let (then, announce, survivors) = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Draining {
                then,
                announce,
                survivors,
            } => (then, announce, survivors),
            other => {
                self.state = other;
                return;
            }
        };
        let cause = then.cause();
        // Leftovers of a crash that survive are only reported (the owner logs them): the
        // restart policy decides as if they were gone.
        let survivors = survivors.filter(|_| !matches!(then, Then::Crashed { .. }));
        match &survivors {
            None => {
                self.state = State::Stopped;
                if announce {
                    fx.push(E::Emit(Note::new(EventKind::Stopped, cause.clone())));
                }
            }
            Some(u) => self.errored(Failure::Unkillable(u.clone()), cause.clone(), fx),
        }
        let refused = survivors.map(Refusal::Stop);
        match then {
            Then::Stop(_) => {
                fx.push(E::Persist { wait: true });
                fx.push(E::Reply(refused.map_or(Ok(()), Err)));
            }
            Then::Restart(cause) => match refused {
                Some(r) => {
                    fx.push(E::Persist { wait: true });
                    fx.push(E::Reply(Err(r)));
                }
                None => {
                    self.history = History::default();
                    self.restarts = self.restarts.saturating_add(1);
                    self.spawn(Origin::Request(cause), fx);
                }
            },
            Then::Delete { purge_logs, cause } => match refused {
                Some(r) => fx.push(E::Reply(Err(r))),
                None => {
                    if purge_logs {
                        fx.push(E::PurgeLogs);
                    }
                    fx.push(E::CloseLogs);
                    fx.push(E::Forget);
                    fx.push(E::Emit(Note::new(EventKind::Deleted, cause)));
                    fx.push(E::End);
                    fx.push(E::Reply(Ok(())));
                }
            },
            Then::Shutdown => {
                fx.push(E::CloseLogs);
                fx.push(E::Persist { wait: false });
                fx.push(E::End);
                fx.push(E::Reply(Ok(())));
            }
            Then::Crashed { uptime_ms } => {
                let exit = self.last_exit;
                self.decide(exit, uptime_ms, Cause::Crash, rules, now_ms, fx);
                fx.push(E::Persist { wait: false });
            }
            Then::Recover => {
                if self.desired == Desired::Online {
                    self.spawn(Origin::Recovery, fx);
                }
            }
        }
    }

    /// The restart policy, after an unasked exit (`exit`) or a failed autorestart (`None`):
    /// restart after a delay that doubles with each consecutive restart, or give up after too
    /// many restarts within the window; with autorestart off, leave it down.
    fn decide(
        &mut self,
        exit: Option<Exit>,
        uptime_ms: u64,
        why: Cause,
        rules: &Rules,
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) {
        let policy = &rules.restart;
        if !rules.autorestart {
            self.desired = Desired::Stopped;
            if exit.is_some_and(|e| e.success()) {
                self.state = State::Stopped;
                fx.push(Effect::Emit(Note::new(EventKind::Stopped, why)));
            } else {
                let last = self.last_exit;
                self.errored(Failure::ExitedWithoutRestart { last }, why, fx);
            }
            return;
        }
        let h = &mut self.history;
        if uptime_ms >= RestartPolicy::STABLE_AFTER.as_millis() as u64 {
            h.consecutive = 0;
        }
        let window = policy.window.as_millis() as u64;
        while h
            .restarts
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= window)
        {
            h.restarts.pop_front();
        }
        if h.restarts.len() >= policy.max_restarts as usize {
            let failure = Failure::CrashLoop {
                restarts: h.restarts.len(),
                window: policy.window,
                last: exit,
            };
            self.errored(failure, why, fx);
            return;
        }
        h.restarts.push_back(now_ms);
        let delay = backoff(policy, h.consecutive);
        h.consecutive = h.consecutive.saturating_add(1);
        self.state = State::Backoff {
            until_ms: now_ms + delay.as_millis() as u64,
        };
        let mut note = Note::new(EventKind::AutorestartScheduled, why);
        note.delay = Some(delay);
        fx.push(Effect::Emit(note));
        fx.push(Effect::ArmBackoff(delay));
    }

    fn errored(&mut self, why: Failure, cause: Cause, fx: &mut Vec<Effect>) {
        let mut note = Note::new(EventKind::Errored, cause);
        note.error = Some(why.to_string());
        note.exit = self.last_exit;
        fx.push(Effect::Emit(note));
        self.last_failure = Some(why.clone());
        self.state = State::Errored { why };
    }
}

fn exited(cause: Cause, pid: u32, exit: Exit) -> Note {
    let mut note = Note::new(EventKind::Exited, cause).pid(Some(pid));
    note.exit = Some(exit);
    note
}

/// The delay before the `n`th consecutive autorestart (0-based): `delay * 2^n`, capped.
pub fn backoff(policy: &RestartPolicy, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    policy
        .delay
        .checked_mul(factor)
        .map_or(policy.delay_max, |d| d.min(policy.delay_max))
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
