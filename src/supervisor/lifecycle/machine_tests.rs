//! The machine as a table: one row per (state, input) pair, with the next state and the effects
//! in a short notation, then whole runs (crash loops, backoff, restart ≡ stop + start).
//! `every_state_meets_every_input` fails when a pair of a base state and an input has no row.

use std::collections::BTreeSet;

use super::*;
use crate::supervisor::process::launch::SpawnError;
use crate::supervisor::process::procfs::ProcStat;

const NOW: u64 = 1_000_000;

fn rules() -> Rules {
    Rules {
        restart: RestartPolicy::default(),
        autorestart: true,
        ready_check: false,
        alive_check: false,
    }
}

/// An app with a readiness and a liveness check.
fn checked() -> Rules {
    Rules {
        ready_check: true,
        alive_check: true,
        ..rules()
    }
}

fn request(wait: bool) -> Origin {
    Origin::Request { cause: req(), wait }
}

fn req() -> Cause {
    Cause::Request {
        method: "Test".into(),
        uid: None,
        pid: None,
        peer: "unix".into(),
    }
}

fn exit(code: i32) -> Exit {
    Exit {
        code: Some(code),
        signal: None,
        at_unix_ms: NOW,
    }
}

/// A main process the keeper reaped between two agents: exit 7 after 5 s.
fn gone() -> Gone {
    Gone {
        pid: 30,
        since_ms: NOW - 6_000,
        exit: Exit {
            code: Some(7),
            signal: None,
            at_unix_ms: NOW - 1_000,
        },
    }
}

fn unkillable() -> Unkillable {
    Unkillable(vec![ProcStat {
        pid: 66,
        state: 'D',
        ppid: 1,
        pgrp: 66,
        session: 66,
        cpu_ticks: 0,
        starttime: 1,
        rss_pages: 0,
    }])
}

fn with(state: State, desired: Desired) -> Life {
    let mut life = Life::new(desired, 0);
    life.state = state;
    life
}

fn stopping(then: Then, pid: Option<u32>, announce: bool, desired: Desired) -> Life {
    with(
        State::Stopping {
            pid,
            then,
            announce,
        },
        desired,
    )
}

fn draining(then: Then, announce: bool, survived: bool, desired: Desired) -> Life {
    with(
        State::Draining {
            then,
            announce,
            survivors: survived.then(unkillable),
        },
        desired,
    )
}

fn restart() -> Then {
    Then::Restart {
        cause: req(),
        wait: true,
    }
}

fn crashed(waiting: Option<&str>) -> Then {
    Then::Crashed {
        uptime_ms: 5_000,
        why: Cause::Crash,
        waiting: waiting.map(String::from),
    }
}

fn delete(purge_logs: bool) -> Then {
    Then::Delete {
        purge_logs,
        cause: req(),
    }
}

/// The states of the table by name. These are the base states every input must meet.
const BASE_STATES: [&str; 9] = [
    "stopped", "queued", "starting", "unready", "online", "stopping", "draining", "backoff",
    "errored",
];

fn state(name: &str) -> Life {
    use Desired::{Online as Up, Stopped as Down};
    match name {
        "stopped" => with(State::Stopped, Down),
        "stopped-up" => with(State::Stopped, Up),
        "queued" => with(State::Queued, Up),
        "starting" => with(State::Starting { by: request(true) }, Up),
        "starting-nowait" => with(State::Starting { by: request(false) }, Up),
        "starting-auto" => with(
            State::Starting {
                by: Origin::Autorestart,
            },
            Up,
        ),
        "unready" | "unready-nowait" => with(
            State::Unready {
                pid: 10,
                since_ms: NOW - 5_000,
                by: request(name == "unready"),
            },
            Up,
        ),
        "online" => with(
            State::Online {
                pid: 10,
                since_ms: NOW - 5_000,
                adopted: false,
            },
            Up,
        ),
        "stopping" => stopping(Then::Stop(req()), Some(10), true, Down),
        "stopping-crashed" => {
            let mut life = stopping(crashed(None), None, false, Up);
            life.last_exit = Some(exit(1));
            life
        }
        "draining" => draining(Then::Stop(req()), true, false, Down),
        "draining-survived" => draining(Then::Stop(req()), true, true, Down),
        "draining-quiet" => draining(Then::Stop(req()), false, false, Down),
        "draining-restart" => draining(restart(), true, false, Up),
        "draining-restart-survived" => draining(restart(), true, true, Up),
        "draining-delete" => draining(delete(false), true, false, Up),
        "draining-delete-purge" => draining(delete(true), true, false, Up),
        "draining-delete-survived" => draining(delete(false), true, true, Up),
        "draining-retire" => draining(Then::Retire(req()), true, false, Up),
        "draining-retire-survived" => draining(Then::Retire(req()), true, true, Up),
        "draining-shutdown" => draining(Then::Shutdown, true, false, Up),
        "draining-shutdown-survived" => draining(Then::Shutdown, true, true, Up),
        "draining-crashed" | "draining-crashed-survived" => {
            let mut life = draining(crashed(None), false, name.ends_with("survived"), Up);
            life.last_exit = Some(exit(1));
            life
        }
        "draining-crashed-waiting" => {
            let mut life = draining(
                crashed(Some("exited before it was ready")),
                false,
                false,
                Up,
            );
            life.last_exit = Some(exit(1));
            life
        }
        "draining-unhealthy" => {
            let then = Then::Crashed {
                uptime_ms: 5_000,
                why: Cause::Unhealthy,
                waiting: None,
            };
            let mut life = draining(then, false, false, Up);
            life.last_exit = Some(exit(143));
            life
        }
        "draining-recover" => draining(Then::Recover, false, false, Up),
        "draining-recovered-exit" => {
            let then = Then::Crashed {
                uptime_ms: 5_000,
                why: Cause::Recovery,
                waiting: None,
            };
            let mut life = draining(then, false, false, Up);
            life.last_exit = Some(gone().exit);
            life
        }
        "draining-recover-survived" => draining(Then::Recover, false, true, Up),
        "draining-recover-down" => draining(Then::Recover, false, false, Down),
        "backoff" => with(
            State::Backoff {
                until_ms: NOW + 100,
            },
            Up,
        ),
        "errored" => with(
            State::Errored {
                why: Failure::Spawn(SpawnError::SpawnerGone),
            },
            Up,
        ),
        other => panic!("no state named {other}"),
    }
}

/// The inputs of the table by name. These are the base inputs.
const BASE_INPUTS: [&str; 20] = [
    "start",
    "stop",
    "stop-for-restart",
    "restart",
    "delete",
    "retire",
    "shutdown",
    "resume",
    "recovered",
    "spawned",
    "spawn-failed",
    "exited",
    "tree-gone",
    "tree-survived",
    "drained",
    "backoff-elapsed",
    "ready",
    "not-ready",
    "unhealthy",
    "trigger",
];

fn input(name: &str) -> Input {
    let survivor = Survivor {
        pid: 30,
        since_ms: NOW - 1_000,
    };
    match name {
        "start" => Input::Start {
            cause: req(),
            wait: true,
        },
        "start-nowait" => Input::Start {
            cause: req(),
            wait: false,
        },
        "stop" => Input::Stop(req()),
        "stop-for-restart" => Input::StopForRestart(req()),
        "restart" => Input::Restart {
            cause: req(),
            wait: true,
        },
        "delete" => Input::Delete {
            purge_logs: false,
            cause: req(),
        },
        "retire" => Input::Retire(req()),
        "shutdown" => Input::Shutdown,
        "resume" => Input::Resume,
        "recovered" => Input::Recovered {
            survivor: Some(survivor),
            leftovers: true,
            gone: None,
        },
        "recovered-leftovers" => Input::Recovered {
            survivor: None,
            leftovers: true,
            gone: None,
        },
        "recovered-nothing" => Input::Recovered {
            survivor: None,
            leftovers: false,
            gone: None,
        },
        "recovered-exited" | "recovered-exited-leftovers" => Input::Recovered {
            survivor: None,
            leftovers: name.ends_with("leftovers"),
            gone: Some(gone()),
        },
        "spawned" => Input::Spawned { pid: 20 },
        "spawn-failed" => Input::SpawnFailed(SpawnError::SpawnerGone),
        "exited" => Input::Exited(exit(1)),
        "tree-gone" => Input::TreeGone,
        "tree-survived" => Input::TreeSurvived(unkillable()),
        "drained" => Input::Drained,
        "backoff-elapsed" => Input::BackoffElapsed,
        "ready" => Input::Ready,
        "not-ready" => Input::NotReady("not ready after 60s: x: connection refused".into()),
        "unhealthy" => Input::Unhealthy("3 failed checks in a row; last: x".into()),
        "trigger" => Input::Trigger(Cause::Schedule),
        other => panic!("no input named {other}"),
    }
}

fn state_code(life: &Life) -> String {
    let s = match &life.state {
        State::Stopped => "stopped".to_string(),
        State::Queued => "queued".to_string(),
        State::Starting { by } => format!(
            "starting:{}",
            match by {
                Origin::Request { .. } => "request",
                Origin::Autorestart => "autorestart",
            }
        ),
        State::Unready { pid, .. } => format!("unready:{pid}"),
        State::Online { pid, adopted, .. } => {
            format!("online:{pid}{}", if *adopted { ":adopted" } else { "" })
        }
        State::Stopping { pid, then, .. } => format!(
            "stopping:{}:{}",
            then_code(then),
            pid.map_or("-".to_string(), |p| p.to_string())
        ),
        State::Draining {
            then, survivors, ..
        } => format!(
            "draining:{}{}",
            then_code(then),
            if survivors.is_some() { "!" } else { "" }
        ),
        State::Backoff { until_ms } => format!("backoff:+{}", until_ms - NOW),
        State::Errored { why } => format!(
            "errored:{}",
            match why {
                Failure::Spawn(_) => "spawn",
                Failure::Unkillable(_) => "unkillable",
                Failure::CrashLoop { .. } => "crash-loop",
                Failure::ExitedWithoutRestart { .. } => "no-restart",
            }
        ),
    };
    let desired = match life.desired {
        Desired::Online => "up",
        Desired::Stopped => "down",
    };
    format!("{s} {desired}")
}

fn then_code(then: &Then) -> &'static str {
    match then {
        Then::Stop(_) => "stop",
        Then::Restart { .. } => "restart",
        Then::Delete { .. } => "delete",
        Then::Retire(_) => "retire",
        Then::Shutdown => "shutdown",
        Then::Crashed { .. } => "crashed",
        Then::Recover => "recover",
    }
}

fn effect_code(e: &Effect) -> String {
    match e {
        Effect::Emit(n) => format!("emit:{}", n.kind.word()),
        Effect::Spawn => "spawn".into(),
        Effect::Adopt => "adopt".into(),
        Effect::EndTree => "end-tree".into(),
        Effect::Drain => "drain".into(),
        Effect::ArmBackoff(d) => format!("arm:{}ms", d.as_millis()),
        Effect::PurgeLogs => "purge-logs".into(),
        Effect::CloseLogs => "close-logs".into(),
        Effect::Persist { wait: true } => "persist+wait".into(),
        Effect::Persist { wait: false } => "persist".into(),
        Effect::Forget => "forget".into(),
        Effect::Reply(Ok(())) => "reply:ok".into(),
        Effect::Reply(Err(Refusal::Start(_))) => "reply:start-failed".into(),
        Effect::Reply(Err(Refusal::Stop(_))) => "reply:stop-failed".into(),
        Effect::Reply(Err(Refusal::NotReady(_))) => "reply:not-ready".into(),
        Effect::Probe(Probe::Ready) => "probe:ready".into(),
        Effect::Probe(Probe::Alive) => "probe:alive".into(),
        Effect::Hold => "hold".into(),
        Effect::Release(Ok(())) => "release:ok".into(),
        Effect::Release(Err(Refusal::NotReady(_))) => "release:not-ready".into(),
        Effect::Release(Err(_)) => "release:failed".into(),
        Effect::Defer => "defer".into(),
        Effect::End => "end".into(),
    }
}

fn codes(effects: &[Effect]) -> String {
    effects
        .iter()
        .map(effect_code)
        .collect::<Vec<_>>()
        .join(" ")
}

/// (state, input, next state and desired state, effects). "=" as the next state: unchanged.
#[rustfmt::skip]
const TABLE: &[(&str, &str, &str, &str)] = &[
    // Stopped: commands act; facts about processes that do not exist are stale.
    ("stopped", "start",           "starting:request up",     "emit:starting spawn"),
    ("stopped", "stop",            "stopping:stop:- down",    "end-tree"),
    ("stopped", "stop-for-restart", "stopping:stop:- down", "end-tree"),
    ("stopped", "restart",         "stopping:restart:- up",   "emit:restarting end-tree"),
    ("stopped", "delete",          "stopping:delete:- down",  "end-tree"),
    ("stopped", "retire",          "stopping:retire:- down",  "end-tree"),
    ("stopped", "shutdown",        "stopping:shutdown:- down", "end-tree"),
    ("stopped", "trigger", "=", ""),
    ("stopped", "resume", "=", "reply:ok"),
    ("stopped", "recovered",       "stopping:recover:- down", "end-tree"),
    ("stopped", "spawned",         "=",                       ""),
    ("stopped", "spawn-failed",    "=",                       ""),
    ("stopped", "exited",          "=",                       ""),
    ("stopped", "tree-gone",       "=",                       ""),
    ("stopped", "tree-survived",   "=",                       ""),
    ("stopped", "drained",        "=",                       ""),
    ("stopped", "backoff-elapsed", "=",                       ""),
    ("stopped", "ready", "=", ""),
    ("stopped", "not-ready", "=", ""),
    ("stopped", "unhealthy", "=", ""),
    // Starting (for a request): commands wait for the outcome.
    ("starting", "start",           "=",                     "defer"),
    ("starting", "stop",            "=",                     "defer"),
    ("starting", "stop-for-restart", "=", "defer"),
    ("starting", "restart",         "=",                     "defer"),
    ("starting", "delete",          "=",                     "defer"),
    ("starting", "retire",          "=",                     "defer"),
    ("starting", "shutdown",        "=",                     "defer"),
    ("starting", "trigger", "=", ""),
    ("starting", "resume", "=", "defer"),
    ("starting", "recovered",       "=",                     ""),
    ("starting", "spawned",         "online:20 up",          "emit:online persist+wait reply:ok"),
    ("starting", "spawn-failed",    "errored:spawn up",      "emit:errored persist+wait reply:start-failed"),
    ("starting", "exited",          "=",                     ""),
    ("starting", "tree-gone",       "=",                     ""),
    ("starting", "tree-survived",   "=",                     ""),
    ("starting", "drained",        "=",                       ""),
    ("starting", "backoff-elapsed", "=",                     ""),
    ("starting", "ready", "=", ""),
    ("starting", "not-ready", "=", ""),
    ("starting", "unhealthy", "=", ""),
    ("starting-auto", "spawned",          "online:20 up",     "emit:online persist"),
    ("starting-auto", "spawn-failed",     "backoff:+100 up",  "emit:errored emit:autorestart_scheduled arm:100ms persist"),
    // Online.
    ("online", "start",           "=",                        "reply:ok"),
    ("online", "stop",            "stopping:stop:10 down",    "emit:stopping end-tree"),
    ("online", "stop-for-restart", "stopping:stop:10 up", "emit:stopping end-tree"),
    ("online", "restart",         "stopping:restart:10 up",   "emit:restarting emit:stopping end-tree"),
    ("online", "delete",          "stopping:delete:10 up",    "emit:stopping end-tree"),
    ("online", "retire",          "stopping:retire:10 up",    "emit:stopping end-tree"),
    ("online", "shutdown",        "stopping:shutdown:10 up",  "emit:stopping end-tree"),
    ("online", "trigger", "stopping:restart:10 up", "emit:restarting emit:stopping end-tree"),
    ("online", "resume", "=", "reply:ok"),
    ("online", "recovered",       "=",                        ""),
    ("online", "spawned",         "=",                        ""),
    ("online", "spawn-failed",    "=",                        ""),
    ("online", "exited",          "stopping:crashed:- up",    "emit:exited end-tree"),
    ("online", "tree-gone",       "=",                        ""),
    ("online", "tree-survived",   "=",                        ""),
    ("online", "drained",        "=",                       ""),
    ("online", "backoff-elapsed", "=",                        ""),
    ("online", "ready", "=", ""),
    ("online", "not-ready", "=", ""),
    ("online", "unhealthy", "stopping:crashed:10 up", "emit:unhealthy end-tree"),
    // Stopping (for a stop): commands wait; the exit is recorded; the end decides.
    ("stopping", "start",           "=",                       "defer"),
    ("stopping", "stop",            "=",                       "defer"),
    ("stopping", "stop-for-restart", "=", "defer"),
    ("stopping", "restart",         "=",                       "defer"),
    ("stopping", "delete",          "=",                       "defer"),
    ("stopping", "retire",          "=",                       "defer"),
    ("stopping", "shutdown",        "=",                       "defer"),
    ("stopping", "trigger", "=", ""),
    ("stopping", "resume", "=", "defer"),
    ("stopping", "recovered",       "=",                       ""),
    ("stopping", "spawned",         "=",                       ""),
    ("stopping", "spawn-failed",    "=",                       ""),
    ("stopping", "exited",          "stopping:stop:- down",    "emit:exited"),
    ("stopping", "tree-gone",       "draining:stop down",      "drain"),
    ("stopping", "tree-survived",   "draining:stop! down",     "drain"),
    ("stopping", "drained",         "=",                       ""),
    ("stopping", "backoff-elapsed", "=",                       ""),
    ("stopping", "ready", "=", ""),
    ("stopping", "not-ready", "=", ""),
    ("stopping", "unhealthy", "=", ""),
    ("stopping-crashed", "exited",          "=",                       ""),
    ("stopping-crashed", "tree-survived",   "draining:crashed! up",    "drain"),
    // Draining: the tree is gone; its output is read to the end before anything follows.
    ("draining", "start",           "=",                       "defer"),
    ("draining", "stop",            "=",                       "defer"),
    ("draining", "stop-for-restart", "=", "defer"),
    ("draining", "restart",         "=",                       "defer"),
    ("draining", "delete",          "=",                       "defer"),
    ("draining", "retire",          "=",                       "defer"),
    ("draining", "shutdown",        "=",                       "defer"),
    ("draining", "trigger", "=", ""),
    ("draining", "resume", "=", "defer"),
    ("draining", "recovered",       "=",                       ""),
    ("draining", "spawned",         "=",                       ""),
    ("draining", "spawn-failed",    "=",                       ""),
    ("draining", "exited",          "=",                       ""),
    ("draining", "tree-gone",       "=",                       ""),
    ("draining", "tree-survived",   "=",                       ""),
    ("draining", "drained",         "stopped down",            "emit:stopped persist+wait reply:ok"),
    ("draining", "backoff-elapsed", "=",                       ""),
    ("draining", "ready", "=", ""),
    ("draining", "not-ready", "=", ""),
    ("draining", "unhealthy", "=", ""),
    ("draining-survived", "drained",          "errored:unkillable down", "emit:errored persist+wait reply:stop-failed"),
    ("draining-quiet", "drained",             "stopped down",            "persist+wait reply:ok"),
    ("draining-restart", "drained",           "starting:request up",     "emit:stopped emit:starting spawn"),
    ("draining-restart-survived", "drained",  "errored:unkillable up",   "emit:errored persist+wait reply:stop-failed"),
    ("draining-delete", "drained",            "stopped up",              "emit:stopped close-logs forget emit:deleted end reply:ok"),
    ("draining-delete-purge", "drained",      "stopped up",              "emit:stopped purge-logs close-logs forget emit:deleted end reply:ok"),
    ("draining-delete-survived", "drained",   "errored:unkillable up",   "emit:errored reply:stop-failed"),
    ("draining-retire", "drained",            "stopped up",              "emit:stopped forget end reply:ok"),
    ("draining-retire-survived", "drained",   "errored:unkillable up",   "emit:errored reply:stop-failed"),
    ("draining-shutdown", "drained",          "stopped up",              "emit:stopped close-logs persist end reply:ok"),
    ("draining-shutdown-survived", "drained", "errored:unkillable up",   "emit:errored close-logs persist end reply:ok"),
    ("draining-crashed", "drained",           "backoff:+100 up",         "emit:autorestart_scheduled arm:100ms persist"),
    ("draining-crashed-survived", "drained",  "backoff:+100 up",         "emit:autorestart_scheduled arm:100ms persist"),
    ("draining-recover", "drained",           "queued up",               ""),
    ("draining-recover-survived", "drained",  "queued up",               "emit:errored"),
    ("draining-recover-down", "drained",      "stopped down",            ""),
    // Waiting out a backoff: a stop cancels it (the timer is then stale).
    ("backoff", "start",           "starting:request up",      "emit:starting spawn"),
    ("backoff", "stop",            "stopping:stop:- down",     "emit:stopping end-tree"),
    ("backoff", "stop-for-restart", "stopping:stop:- up", "emit:stopping end-tree"),
    ("backoff", "restart",         "stopping:restart:- up",    "emit:restarting emit:stopping end-tree"),
    ("backoff", "delete",          "stopping:delete:- up",     "emit:stopping end-tree"),
    ("backoff", "retire",          "stopping:retire:- up",     "emit:stopping end-tree"),
    ("backoff", "shutdown",        "stopping:shutdown:- up",   "emit:stopping end-tree"),
    ("backoff", "trigger", "=", ""),
    ("backoff", "resume", "=", "reply:ok"),
    ("backoff", "recovered",       "=",                        ""),
    ("backoff", "spawned",         "=",                        ""),
    ("backoff", "spawn-failed",    "=",                        ""),
    ("backoff", "exited",          "=",                        ""),
    ("backoff", "tree-gone",       "=",                        ""),
    ("backoff", "tree-survived",   "=",                        ""),
    ("backoff", "drained",        "=",                       ""),
    ("backoff", "backoff-elapsed", "starting:autorestart up",  "emit:starting spawn"),
    ("backoff", "ready", "=", ""),
    ("backoff", "not-ready", "=", ""),
    ("backoff", "unhealthy", "=", ""),
    // Errored: start and restart reset it; its leftovers are still looked for.
    ("errored", "start",           "starting:request up",      "emit:starting spawn"),
    ("errored", "stop",            "stopping:stop:- down",     "emit:stopping end-tree"),
    ("errored", "stop-for-restart", "stopping:stop:- up", "emit:stopping end-tree"),
    ("errored", "restart",         "stopping:restart:- up",    "emit:restarting emit:stopping end-tree"),
    ("errored", "delete",          "stopping:delete:- up",     "emit:stopping end-tree"),
    ("errored", "retire",          "stopping:retire:- up",     "emit:stopping end-tree"),
    ("errored", "shutdown",        "stopping:shutdown:- up",   "emit:stopping end-tree"),
    ("errored", "trigger", "=", ""),
    ("errored", "resume", "=", "reply:ok"),
    ("errored", "recovered",       "=",                        ""),
    ("errored", "spawned",         "=",                        ""),
    ("errored", "spawn-failed",    "=",                        ""),
    ("errored", "exited",          "=",                        ""),
    ("errored", "tree-gone",       "=",                        ""),
    ("errored", "tree-survived",   "=",                        ""),
    ("errored", "drained",        "=",                       ""),
    ("errored", "backoff-elapsed", "=",                        ""),
    ("errored", "ready", "=", ""),
    ("errored", "not-ready", "=", ""),
    ("errored", "unhealthy", "=", ""),
    // Recovery of an app that should run.
    ("stopped-up", "recovered",           "online:30:adopted up",  "adopt emit:online"),
    ("stopped-up", "recovered-leftovers", "stopping:recover:- up", "end-tree"),
    ("stopped-up", "recovered-nothing",   "queued up",             ""),
    ("stopped", "recovered-nothing",      "=",                     ""),
    // Recovery of an app whose main process ended between two agents (the keeper kept its
    // exit): published, its leftovers ended and its output drained, then the restart policy.
    ("stopped-up", "recovered-exited",    "stopping:crashed:- up", "emit:exited end-tree"),
    ("stopped-up", "recovered-exited-leftovers", "stopping:crashed:- up", "emit:exited end-tree"),
    ("stopped", "recovered-exited",       "stopped down",          "emit:exited"),
    ("stopped", "recovered-exited-leftovers", "stopping:recover:- down", "emit:exited end-tree"),
    ("draining-recovered-exit", "drained", "backoff:+100 up",      "emit:autorestart_scheduled arm:100ms persist"),
    // Queued after a new agent started: its turn comes with a start.
    ("queued", "start",           "starting:request up",      "emit:starting spawn"),
    ("queued", "stop",            "stopping:stop:- down",     "emit:stopping end-tree"),
    ("queued", "stop-for-restart", "stopping:stop:- up", "emit:stopping end-tree"),
    ("queued", "restart",         "stopping:restart:- up",    "emit:restarting emit:stopping end-tree"),
    ("queued", "delete",          "stopping:delete:- up",     "emit:stopping end-tree"),
    ("queued", "retire",          "stopping:retire:- up",     "emit:stopping end-tree"),
    ("queued", "shutdown",        "stopping:shutdown:- up",   "emit:stopping end-tree"),
    ("queued", "trigger", "=", ""),
    ("queued", "resume", "starting:request up", "emit:starting spawn"),
    ("queued", "recovered",       "=", ""),
    ("queued", "spawned",         "=", ""),
    ("queued", "spawn-failed",    "=", ""),
    ("queued", "exited",          "=", ""),
    ("queued", "tree-gone",       "=", ""),
    ("queued", "tree-survived",   "=", ""),
    ("queued", "drained",         "=", ""),
    ("queued", "backoff-elapsed", "=", ""),
    ("queued", "ready",           "=", ""),
    ("queued", "not-ready",       "=", ""),
    ("queued", "unhealthy",       "=", ""),
    // Spawned, not yet ready: commands are taken at once; a request waiting for readiness is
    // answered when the instance it waited for goes away.
    ("unready", "start",           "=",                       "hold"),
    ("unready", "start-nowait",    "=",                       "reply:ok"),
    ("unready", "stop",            "stopping:stop:10 down",   "release:not-ready emit:stopping end-tree"),
    ("unready", "stop-for-restart", "stopping:stop:10 up", "release:not-ready emit:stopping end-tree"),
    ("unready-nowait", "stop",     "stopping:stop:10 down",   "emit:stopping end-tree"),
    ("unready-nowait", "stop-for-restart", "stopping:stop:10 up", "emit:stopping end-tree"),
    ("unready", "restart",         "stopping:restart:10 up",  "emit:restarting release:not-ready emit:stopping end-tree"),
    ("unready", "delete",          "stopping:delete:10 up",   "release:not-ready emit:stopping end-tree"),
    ("unready", "retire",          "stopping:retire:10 up",   "release:not-ready emit:stopping end-tree"),
    ("unready", "shutdown",        "stopping:shutdown:10 up", "release:not-ready emit:stopping end-tree"),
    ("unready", "trigger", "stopping:restart:10 up", "emit:restarting release:not-ready emit:stopping end-tree"),
    ("unready", "resume", "=", "reply:ok"),
    ("unready", "recovered",       "=", ""),
    ("unready", "spawned",         "=", ""),
    ("unready", "spawn-failed",    "=", ""),
    ("unready", "exited",          "stopping:crashed:- up",   "emit:exited end-tree"),
    ("unready", "tree-gone",       "=", ""),
    ("unready", "tree-survived",   "=", ""),
    ("unready", "drained",         "=", ""),
    ("unready", "backoff-elapsed", "=", ""),
    ("unready", "ready",           "online:10 up",            "emit:ready emit:online release:ok"),
    ("unready-nowait", "ready",    "online:10 up",            "emit:ready emit:online"),
    ("unready", "not-ready",       "stopping:crashed:10 up",  "emit:unhealthy end-tree"),
    ("unready", "unhealthy",       "=", ""),
    ("draining-crashed-waiting", "drained", "backoff:+100 up", "release:not-ready emit:autorestart_scheduled arm:100ms persist"),
    ("draining-unhealthy", "drained",       "backoff:+100 up", "emit:autorestart_scheduled arm:100ms persist"),
];

#[test]
fn table() {
    check_rows(TABLE, &rules());
}

/// With a readiness and a liveness check (the rules of `checked()`).
#[rustfmt::skip]
const CHECKED: &[(&str, &str, &str, &str)] = &[
    ("starting", "spawned",        "unready:20 up",          "probe:ready persist+wait hold"),
    ("starting-nowait", "spawned", "unready:20 up",          "probe:ready persist+wait reply:ok"),
    ("starting-auto", "spawned",   "unready:20 up",          "probe:ready persist"),
    ("unready", "ready",           "online:10 up",           "emit:ready emit:online probe:alive release:ok"),
    ("online", "unhealthy",        "stopping:crashed:10 up", "emit:unhealthy end-tree"),
    ("stopped-up", "recovered",    "online:30:adopted up",   "adopt emit:online probe:alive"),
    ("draining-unhealthy", "drained", "backoff:+100 up",     "emit:autorestart_scheduled arm:100ms persist"),
];

#[test]
fn with_checks() {
    check_rows(CHECKED, &checked());
}

fn check_rows(table: &[(&str, &str, &str, &str)], rules: &Rules) {
    let mut failures = Vec::new();
    for &(s, i, want_state, want_effects) in table {
        let before = state(s);
        let mut life = before.clone();
        let effects = life.step(input(i), rules, NOW);
        let unchanged = want_state == "=";
        let want_state = if unchanged {
            state_code(&before)
        } else {
            want_state.to_string()
        };
        let (got_state, got_effects) = (state_code(&life), codes(&effects));
        if got_state != want_state || got_effects != want_effects {
            failures.push(format!(
                "({s}, {i}): got {got_state:?} [{got_effects}], want {want_state:?} [{want_effects}]"
            ));
        }
        if unchanged {
            assert_eq!(life, before, "({s}, {i}) changed what it must not");
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_state_meets_every_input() {
    let rows: BTreeSet<(&str, &str)> = TABLE.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(rows.len(), TABLE.len(), "a pair has two rows");
    let missing: Vec<String> = BASE_STATES
        .iter()
        .flat_map(|s| BASE_INPUTS.iter().map(move |i| (*s, *i)))
        .filter(|pair| !rows.contains(pair))
        .map(|(s, i)| format!("({s}, {i})"))
        .collect();
    assert!(missing.is_empty(), "no row for {}", missing.join(", "));
    assert_eq!(BASE_STATES.len() * BASE_INPUTS.len(), 180);
}

/// Feeds inputs at the given times; returns every effect in the short notation.
fn run(life: &mut Life, rules: &Rules, inputs: Vec<(Input, u64)>) -> Vec<String> {
    let mut all = Vec::new();
    for (i, now) in inputs {
        all.extend(life.step(i, rules, now).iter().map(effect_code));
    }
    all
}

/// One crash and its autorestart, as the owner would feed them: `at` is the time of the exit.
/// Returns the delay the machine chose, or the failure it gave up with.
fn crash(life: &mut Life, rules: &Rules, code: i32, at: u64) -> Result<u64, Failure> {
    life.step(Input::Exited(exit(code)), rules, at);
    life.step(Input::TreeGone, rules, at);
    life.step(Input::Drained, rules, at);
    match &life.state {
        State::Backoff { until_ms } => {
            let until = *until_ms;
            life.step(Input::BackoffElapsed, rules, until);
            life.step(Input::Spawned { pid: 20 }, rules, until);
            Ok(until - at)
        }
        State::Errored { why } => Err(why.clone()),
        other => panic!("after a crash: {other:?}"),
    }
}

fn online() -> Life {
    state("online")
}

#[test]
fn restart_is_stop_then_start() {
    let mut life = online();
    let fx = run(
        &mut life,
        &rules(),
        vec![
            (
                Input::Restart {
                    cause: req(),
                    wait: true,
                },
                NOW,
            ),
            (Input::Exited(exit(0)), NOW),
            (Input::TreeGone, NOW),
            (Input::Drained, NOW),
            (Input::Spawned { pid: 20 }, NOW),
        ],
    );
    assert_eq!(
        fx.join(" "),
        "emit:restarting emit:stopping end-tree emit:exited drain emit:stopped \
         emit:starting spawn emit:online persist+wait reply:ok"
    );
    assert_eq!(state_code(&life), "online:20 up");
    assert_eq!((life.restarts, life.last_exit), (1, Some(exit(0))));
}

#[test]
fn a_dependent_taken_along_by_a_restart_is_saved_as_wanted_between_the_halves() {
    // The table's inputs, in order, all at NOW.
    let steps = |names: &[&str]| names.iter().map(|n| (input(n), NOW)).collect();
    let mut life = online();
    let fx = run(
        &mut life,
        &rules(),
        steps(&["stop-for-restart", "exited", "tree-gone", "drained"]),
    );
    // What is saved between the halves still wants the app online: an agent that dies here
    // brings it back.
    assert_eq!(
        fx.join(" "),
        "emit:stopping end-tree emit:exited drain emit:stopped persist+wait reply:ok"
    );
    assert_eq!(state_code(&life), "stopped up");
    let fx = run(
        &mut life,
        &rules(),
        steps(&["restart", "tree-gone", "drained", "spawned"]),
    );
    assert_eq!(
        fx.join(" "),
        "emit:restarting end-tree drain emit:starting spawn emit:online persist+wait reply:ok"
    );
    assert_eq!(state_code(&life), "online:20 up");
}

#[test]
fn backoff_doubles_and_caps() {
    let p = RestartPolicy::default();
    let got: Vec<u128> = (0..8).map(|n| backoff(&p, n).as_millis()).collect();
    assert_eq!(got, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
    assert_eq!(backoff(&p, 200), p.delay_max);
    // And the machine uses it: quick crashes double the delay.
    let mut life = online();
    let delays: Vec<u64> = (0..7)
        .map(|n| crash(&mut life, &rules(), 1, NOW + n * 4_000).unwrap())
        .collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3000, 3000]);
    assert_eq!(life.restarts, 7);
}

#[test]
fn a_crash_loop_gives_up_after_max_restarts_in_the_window() {
    let mut life = online();
    let mut now = NOW;
    for i in 0..15 {
        now += crash(&mut life, &rules(), 1, now).unwrap();
        assert!(now - NOW < 60_000, "restart {i} fell outside the window");
    }
    let why = crash(&mut life, &rules(), 1, now).unwrap_err();
    assert_eq!(
        why.to_string(),
        "restarted 15 times within 60s; last exit: exit code 1"
    );
    assert_eq!(life.desired, Desired::Online);
    assert_eq!(life.last_failure, Some(why));
}

#[test]
fn restarts_spread_beyond_the_window_never_give_up() {
    let mut life = online();
    for i in 0..100 {
        crash(&mut life, &rules(), 1, NOW + i * 10_000).unwrap();
    }
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let mut life = online();
    let mut now = NOW;
    for _ in 0..4 {
        now += crash(&mut life, &rules(), 1, now).unwrap();
    }
    // Up for 31 s since its last spawn: the next crash starts over at the first delay.
    assert_eq!(crash(&mut life, &rules(), 1, now + 31_000), Ok(100));
}

#[test]
fn a_start_or_restart_clears_the_crash_loop() {
    for command in [
        Input::Start {
            cause: req(),
            wait: true,
        },
        Input::Restart {
            cause: req(),
            wait: true,
        },
    ] {
        let mut life = online();
        let mut now = NOW;
        while let Ok(d) = crash(&mut life, &rules(), 1, now) {
            now += d;
        }
        life.step(command.clone(), &rules(), now);
        if matches!(command, Input::Restart { .. }) {
            life.step(Input::TreeGone, &rules(), now);
            life.step(Input::Drained, &rules(), now);
        }
        life.step(Input::Spawned { pid: 21 }, &rules(), now);
        assert_eq!(state_code(&life), "online:21 up");
        assert_eq!(life.last_failure, None);
        assert_eq!(crash(&mut life, &rules(), 1, now), Ok(100), "{command:?}");
    }
}

#[test]
fn autorestart_off_leaves_it_down() {
    let off = Rules {
        autorestart: false,
        ..rules()
    };
    let mut life = online();
    let fx = run(
        &mut life,
        &off,
        vec![
            (Input::Exited(exit(0)), NOW),
            (Input::TreeGone, NOW),
            (Input::Drained, NOW),
        ],
    );
    assert_eq!(
        fx.join(" "),
        "emit:exited end-tree drain emit:stopped persist"
    );
    assert_eq!(state_code(&life), "stopped down");

    let mut life = online();
    run(
        &mut life,
        &off,
        vec![
            (Input::Exited(exit(3)), NOW),
            (Input::TreeGone, NOW),
            (Input::Drained, NOW),
        ],
    );
    assert_eq!(state_code(&life), "errored:no-restart down");
    assert_eq!(
        life.status(),
        Status::Errored {
            cause: "exited with exit code 3 (autorestart is off)".into()
        }
    );
}

#[test]
fn failed_autorestarts_count_as_crashes() {
    let mut life = state("backoff");
    let mut now = NOW + 100;
    for _ in 0..15 {
        life.step(Input::BackoffElapsed, &rules(), now);
        life.step(Input::SpawnFailed(SpawnError::SpawnerGone), &rules(), now);
        match life.state {
            State::Backoff { until_ms } => now = until_ms,
            ref other => panic!("{other:?}"),
        }
    }
    life.step(Input::BackoffElapsed, &rules(), now);
    life.step(Input::SpawnFailed(SpawnError::SpawnerGone), &rules(), now);
    let State::Errored { why } = &life.state else {
        panic!("{:?}", life.state)
    };
    assert!(why.to_string().contains("it could not be spawned"), "{why}");
    assert_eq!(life.restarts, 16);
}

#[test]
fn stop_while_waiting_out_a_backoff_makes_the_timer_stale() {
    let mut life = state("backoff");
    let fx = run(
        &mut life,
        &rules(),
        vec![
            (Input::Stop(req()), NOW),
            (Input::TreeGone, NOW),
            (Input::Drained, NOW),
            (Input::BackoffElapsed, NOW + 100),
        ],
    );
    assert_eq!(
        fx.join(" "),
        "emit:stopping end-tree drain emit:stopped persist+wait reply:ok"
    );
    assert_eq!(state_code(&life), "stopped down");
}

#[test]
fn events_carry_pids_exits_and_causes() {
    let mut life = online();
    let fx = life.step(Input::Stop(req()), &rules(), NOW);
    let Effect::Emit(stopping) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!((stopping.pid, &stopping.cause), (Some(10), &req()));
    let fx = life.step(Input::Exited(exit(143)), &rules(), NOW);
    assert_eq!(
        fx,
        vec![Effect::Emit(Note {
            exit: Some(exit(143)),
            ..Note::new(EventKind::Exited, req()).pid(Some(10))
        })]
    );
    let mut life = online();
    let fx = life.step(Input::Exited(exit(1)), &rules(), NOW);
    let Effect::Emit(crashed) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!((crashed.pid, &crashed.cause), (Some(10), &Cause::Crash));
    life.step(Input::TreeGone, &rules(), NOW);
    let fx = life.step(Input::Drained, &rules(), NOW);
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Emit(Note { kind: EventKind::AutorestartScheduled, delay: Some(d), cause: Cause::Crash, .. })
            if d.as_millis() == 100
    )));
}

#[test]
fn an_exit_between_two_agents_is_published_and_the_policy_applies() {
    let recovered = Input::Recovered {
        survivor: None,
        leftovers: false,
        gone: Some(gone()),
    };
    // Autorestart on: the exit, then a restart after the backoff, with the exit recorded.
    let mut life = state("stopped-up");
    let fx = life.step(recovered.clone(), &rules(), NOW);
    assert_eq!(
        fx[0],
        Effect::Emit(Note {
            exit: Some(gone().exit),
            ..Note::new(EventKind::Exited, Cause::Recovery).pid(Some(30))
        })
    );
    let fx = run(
        &mut life,
        &rules(),
        vec![(Input::TreeGone, NOW), (Input::Drained, NOW)],
    );
    assert_eq!(
        fx.join(" "),
        "drain emit:autorestart_scheduled arm:100ms persist"
    );
    assert_eq!(life.last_exit, Some(gone().exit));
    // Autorestart off: errored, saying how it exited.
    let off = Rules {
        autorestart: false,
        ..rules()
    };
    let mut life = state("stopped-up");
    run(
        &mut life,
        &off,
        vec![
            (recovered, NOW),
            (Input::TreeGone, NOW),
            (Input::Drained, NOW),
        ],
    );
    assert_eq!(
        life.status(),
        Status::Errored {
            cause: "exited with exit code 7 (autorestart is off)".into()
        }
    );
}
