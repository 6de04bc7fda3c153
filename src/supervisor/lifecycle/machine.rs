//! The life of one app as a pure state machine: the app's state and an input give the next state
//! and the effects to carry out. No clocks, no processes, no I/O: time comes in as an argument,
//! and the owner task (`owner`) feeds the inputs and carries out the effects. Every rule of an
//! app's life is here, the restart policy and readiness included, and the tests are a table of
//! (state, input, next state, effects) with one row per pair. The states, inputs and effects
//! are in `state`.
//!
//! Operations that take time (spawning, ending a tree, reading its output to the end) are effects
//! whose outcome comes back as an input (`Spawned`/`SpawnFailed`; `Exited` then
//! `TreeGone`/`TreeSurvived`; `Drained`). While one is under way the app is `Starting`,
//! `Stopping` or `Draining`, and a command arriving then waits (`Defer`), so the commands on one
//! app apply one after the other. Probes run beside the app (`Probe`) and come back as verdicts
//! (`Ready`, `NotReady`, `Unhealthy`); while an app is `Unready` commands are taken at once, so
//! a stop need not wait out a start timeout.

use std::{collections::VecDeque, time::Duration};

pub use super::state::{
    Effect, Failure, Gone, Input, Note, Origin, Probe, Refusal, State, Survivor, Then,
};
use crate::model::{Cause, Desired, EventKind, Exit, RestartPolicy, Status};
use crate::supervisor::process::tree::Unkillable;

/// Recent autorestarts: what the crash-loop rule and the backoff look at.
#[derive(Debug, Default, Clone, PartialEq)]
struct History {
    /// Times (ms) of the autorestarts within the current window.
    restarts: VecDeque<u64>,
    /// Autorestarts since the app last stayed up for `STABLE_AFTER`; drives the backoff.
    consecutive: u32,
}

/// The rules an app is supervised by, from its spec.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub restart: RestartPolicy,
    pub autorestart: bool,
    /// It has a readiness check: spawned is not yet online.
    pub ready_check: bool,
    /// It has a liveness check, run once it is online.
    pub alive_check: bool,
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
    /// The last restart (a request, an autorestart, a trigger): why, and when (ms).
    pub last_restart: Option<(Cause, u64)>,
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
            last_restart: None,
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
            State::Queued | State::Starting { .. } => Status::Starting { pid: None },
            State::Unready { pid, .. } => Status::Starting { pid: Some(*pid) },
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
    /// stale timer or probe verdict, say) changes nothing.
    pub fn step(&mut self, input: Input, rules: &Rules, now_ms: u64) -> Vec<Effect> {
        use Effect as E;
        let mut fx = Vec::new();
        if self.busy() && input.is_command() {
            return vec![E::Defer];
        }
        match input {
            Input::Start { cause, wait } => match &self.state {
                State::Online { .. } => fx.push(E::Reply(Ok(()))),
                // Already on its way: answered with the instance's readiness.
                State::Unready { .. } if wait => fx.push(E::Hold),
                State::Unready { .. } => fx.push(E::Reply(Ok(()))),
                _ => {
                    self.history = History::default();
                    self.desired = Desired::Online;
                    self.spawn(Origin::Request { cause, wait }, &mut fx);
                }
            },
            Input::Stop(cause) => {
                self.desired = Desired::Stopped;
                self.end_tree(Then::Stop(cause), &mut fx);
            }
            Input::StopForRestart(cause) => self.end_tree(Then::Stop(cause), &mut fx),
            Input::Restart { cause, wait } => {
                self.desired = Desired::Online;
                fx.push(E::Emit(Note::new(EventKind::Restarting, cause.clone())));
                self.end_tree(Then::Restart { cause, wait }, &mut fx);
            }
            Input::Trigger(cause) => {
                if matches!(self.state, State::Online { .. } | State::Unready { .. }) {
                    fx.push(E::Emit(Note::new(EventKind::Restarting, cause.clone())));
                    self.end_tree(Then::Restart { cause, wait: false }, &mut fx);
                }
            }
            Input::Delete { purge_logs, cause } => {
                self.end_tree(Then::Delete { purge_logs, cause }, &mut fx);
            }
            Input::Shutdown => self.end_tree(Then::Shutdown, &mut fx),
            Input::Retire(cause) => self.end_tree(Then::Retire(cause), &mut fx),
            Input::Resume => match self.state {
                State::Queued => {
                    let cause = Cause::Recovery;
                    self.spawn(Origin::Request { cause, wait: true }, &mut fx);
                }
                _ => fx.push(E::Reply(Ok(()))),
            },
            Input::Recovered {
                survivor,
                leftovers,
                gone,
            } => {
                if self.state == State::Stopped {
                    self.recover(survivor, leftovers, gone, rules, &mut fx);
                }
            }
            Input::Spawned { pid } => {
                if let State::Starting { by } = &self.state {
                    let by = by.clone();
                    self.last_failure = None;
                    if rules.ready_check {
                        self.state = State::Unready {
                            pid,
                            since_ms: now_ms,
                            by: by.clone(),
                        };
                        fx.push(E::Probe(Probe::Ready));
                    } else {
                        self.online(pid, now_ms, by.cause(), rules, &mut fx);
                    }
                    match by {
                        Origin::Request { wait, .. } => {
                            fx.push(E::Persist { wait: true });
                            fx.push(if wait && rules.ready_check {
                                E::Hold
                            } else {
                                E::Reply(Ok(()))
                            });
                        }
                        Origin::Autorestart => fx.push(E::Persist { wait: false }),
                    }
                }
            }
            Input::SpawnFailed(error) => {
                if let State::Starting { by } = &self.state {
                    let by = by.clone();
                    self.errored(Failure::Spawn(error.clone()), by.cause(), &mut fx);
                    match by {
                        Origin::Request { .. } => {
                            fx.push(E::Persist { wait: true });
                            fx.push(E::Reply(Err(Refusal::Start(error))));
                        }
                        Origin::Autorestart => {
                            self.decide(None, 0, Cause::Backoff, rules, now_ms, &mut fx);
                            fx.push(E::Persist { wait: false });
                        }
                    }
                }
            }
            Input::Ready => {
                if let State::Unready { pid, since_ms, by } = &self.state {
                    let (pid, since_ms, by) = (*pid, *since_ms, by.clone());
                    let mut ready = Note::new(EventKind::Ready, by.cause()).pid(Some(pid));
                    ready.delay = Some(Duration::from_millis(now_ms.saturating_sub(since_ms)));
                    fx.push(E::Emit(ready));
                    self.online(pid, since_ms, by.cause(), rules, &mut fx);
                    if by.waits() {
                        fx.push(E::Release(Ok(())));
                    }
                }
            }
            Input::NotReady(why) => {
                if let State::Unready { since_ms, by, .. } = &self.state {
                    let uptime_ms = now_ms.saturating_sub(*since_ms);
                    let waiting = by.waits().then(|| why.clone());
                    self.unhealthy(why, uptime_ms, waiting, &mut fx);
                }
            }
            Input::Unhealthy(why) => {
                if let State::Online { since_ms, .. } = &self.state {
                    let uptime_ms = now_ms.saturating_sub(*since_ms);
                    self.unhealthy(why, uptime_ms, None, &mut fx);
                }
            }
            Input::Exited(exit) => match &mut self.state {
                State::Online { pid, since_ms, .. } | State::Unready { pid, since_ms, .. } => {
                    let (pid, uptime_ms) = (*pid, now_ms.saturating_sub(*since_ms));
                    let waiting = match &self.state {
                        State::Unready { by, .. } if by.waits() => {
                            Some(format!("exited before it was ready: {}", exit.text()))
                        }
                        _ => None,
                    };
                    self.last_exit = Some(exit);
                    fx.push(E::Emit(exited(Cause::Crash, pid, exit)));
                    self.state = State::Stopping {
                        pid: None,
                        then: Then::Crashed {
                            uptime_ms,
                            why: Cause::Crash,
                            waiting,
                        },
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
                    self.last_restart = Some((Cause::Backoff, now_ms));
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

    /// The main process runs and is ready: online, and watched by its liveness check.
    fn online(
        &mut self,
        pid: u32,
        since_ms: u64,
        cause: Cause,
        rules: &Rules,
        fx: &mut Vec<Effect>,
    ) {
        self.state = State::Online {
            pid,
            since_ms,
            adopted: false,
        };
        fx.push(Effect::Emit(
            Note::new(EventKind::Online, cause).pid(Some(pid)),
        ));
        if rules.alive_check {
            fx.push(Effect::Probe(Probe::Alive));
        }
    }

    /// A check failed (`why`): the tree ends and the restart policy decides, as after a crash.
    fn unhealthy(
        &mut self,
        why: String,
        uptime_ms: u64,
        waiting: Option<String>,
        fx: &mut Vec<Effect>,
    ) {
        let pid = match self.state {
            State::Online { pid, .. } | State::Unready { pid, .. } => Some(pid),
            _ => None,
        };
        let mut note = Note::new(EventKind::Unhealthy, Cause::Unhealthy).pid(pid);
        note.error = Some(why);
        fx.push(Effect::Emit(note));
        self.state = State::Stopping {
            pid,
            then: Then::Crashed {
                uptime_ms,
                why: Cause::Unhealthy,
                waiting,
            },
            announce: false,
        };
        fx.push(Effect::EndTree);
    }

    /// Ends the tree, then `then`. An app that is stopped already gets no events, but its
    /// leftovers are still looked for. A request waiting for the app's readiness is answered
    /// first: the instance it waited for is going away.
    fn end_tree(&mut self, then: Then, fx: &mut Vec<Effect>) {
        let announce = self.state != State::Stopped;
        let pid = match &self.state {
            State::Online { pid, .. } => Some(*pid),
            State::Unready { pid, by, .. } => {
                if by.waits() {
                    let why = format!("stopped before it was ready ({})", then.cause().text());
                    fx.push(Effect::Release(Err(Refusal::NotReady(why))));
                }
                Some(*pid)
            }
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

    /// A previous agent's app: adopted if its main process survived; if it ended meanwhile
    /// (`gone`, known from the keeper), its exit is published and the restart policy decides,
    /// as after a crash; otherwise its leftovers are ended; then, if it should run, queued for
    /// a start (in dependency order).
    fn recover(
        &mut self,
        survivor: Option<Survivor>,
        leftovers: bool,
        gone: Option<Gone>,
        rules: &Rules,
        fx: &mut Vec<Effect>,
    ) {
        let wanted = self.desired == Desired::Online;
        if let (None, Some(g)) = (survivor, gone) {
            self.last_exit = Some(g.exit);
            fx.push(Effect::Emit(exited(Cause::Recovery, g.pid, g.exit)));
            if wanted {
                self.state = State::Stopping {
                    pid: None,
                    then: Then::Crashed {
                        uptime_ms: g.exit.at_unix_ms.saturating_sub(g.since_ms),
                        why: Cause::Recovery,
                        waiting: None,
                    },
                    announce: false,
                };
                fx.push(Effect::EndTree);
            } else if leftovers {
                self.end_tree(Then::Recover, fx);
            }
            return;
        }
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
                if rules.alive_check {
                    fx.push(Effect::Probe(Probe::Alive));
                }
            }
            _ if leftovers => self.end_tree(Then::Recover, fx),
            _ if wanted => self.state = State::Queued,
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
            Then::Restart { cause, wait } => match refused {
                Some(r) => {
                    fx.push(E::Persist { wait: true });
                    fx.push(E::Reply(Err(r)));
                }
                None => {
                    self.history = History::default();
                    self.restarts = self.restarts.saturating_add(1);
                    self.last_restart = Some((cause.clone(), now_ms));
                    self.spawn(Origin::Request { cause, wait }, fx);
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
            Then::Retire(_) => match refused {
                Some(r) => fx.push(E::Reply(Err(r))),
                None => {
                    fx.push(E::Forget);
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
            Then::Crashed {
                uptime_ms,
                why,
                waiting,
            } => {
                if let Some(text) = waiting {
                    fx.push(E::Release(Err(Refusal::NotReady(text))));
                }
                // Ended for its checks, it did not exit on its own: the exit is not the app's.
                let exit = matches!(why, Cause::Crash | Cause::Recovery)
                    .then_some(self.last_exit)
                    .flatten();
                self.decide(exit, uptime_ms, why, rules, now_ms, fx);
                fx.push(E::Persist { wait: false });
            }
            Then::Recover => {
                if self.desired == Desired::Online {
                    self.state = State::Queued;
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
                unhealthy: why == Cause::Unhealthy,
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
