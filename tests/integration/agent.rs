//! The agent as a daemon: signals, `all` targets, the CLI's follow mode.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::common::*;

#[test]
fn sigterm_stops_every_tree_keeps_desired_state_and_cleans_up() {
    let mut agent = Agent::start();
    agent.ok(&["start", "--name", "a", "--", "sleep", "1000"]);
    agent.ok(&["start", "--name", "b", "--", "sleep", "1000"]);
    agent.ok(&["stop", "b"]);
    let a = agent.wait_online("a", None);
    kill(Pid::from_raw(agent.pid() as i32), Signal::SIGTERM).unwrap();
    agent.reap();
    assert!(!alive(a), "SIGTERM to the agent left an app running");
    assert!(!agent.home.join("agent.sock").exists());
    assert!(!agent.home.join("agent.pid").exists());
    agent.spawn();
    agent.wait_online("a", Some(a));
    assert_eq!(agent.status("b"), "stopped");
    let shutdown: Vec<String> = json_lines(&agent.ok(&[
        "events",
        "--json",
        "--no-follow",
        "--from",
        "0",
        "--app",
        "a",
    ]))
    .iter()
    .filter(|e| e["cause"]["kind"] == "shutdown")
    .map(|e| e["kind"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(shutdown, ["stopping", "exited", "stopped"]);
}

#[test]
fn all_targets_every_app() {
    let agent = Agent::start();
    for n in ["a", "b", "c"] {
        agent.ok(&["start", "--name", n, "--", "sleep", "1000"]);
    }
    let before: Vec<u32> = ["a", "b", "c"]
        .iter()
        .map(|n| agent.wait_online(n, None))
        .collect();
    let out = agent.ok(&["restart", "all", "--json"]);
    let restarted: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(restarted.len(), 3);
    for (n, old) in ["a", "b", "c"].iter().zip(&before) {
        assert_ne!(agent.wait_online(n, None), *old);
    }
    agent.ok(&["stop", "all"]);
    assert!(agent.list().iter().all(|a| a["status"] == "stopped"));
    let described: Vec<serde_json::Value> =
        serde_json::from_str(&agent.ok(&["describe", "all", "--json"])).unwrap();
    assert_eq!(described.len(), 3);
    assert!(described.iter().all(|d| d["desired"] == "stopped"));
    agent.ok(&["start", "all"]);
    assert!(agent.list().iter().all(|a| a["status"] == "online"));
    agent.ok(&["delete", "all"]);
    assert!(agent.list().is_empty());
    // `all` with no apps is not an error.
    agent.ok(&["stop", "all"]);
}

/// Starts `grpm events --json --recent 0` and produces events until it prints one; returns
/// the follower and a receiver of its further output lines.
fn follower_with_first_event(agent: &Agent) -> (ChildGuard, std::sync::mpsc::Receiver<String>) {
    let mut follower = agent
        .cmd()
        .args(["events", "--json", "--recent", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    let follower = ChildGuard(Some(follower));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let mut first = None;
    wait_until("an event at the follower", Duration::from_secs(20), || {
        agent.ok(&["notify", "web", "--action", "ping"]);
        first = rx.recv_timeout(Duration::from_millis(50)).ok();
        first.is_some()
    });
    assert!(first.unwrap().contains("\"app\":\"web\""));
    (follower, rx)
}

#[test]
fn events_follow_until_ctrl_c() {
    let agent = Agent::start();
    let (mut follower, _lines) = follower_with_first_event(&agent);
    kill(Pid::from_raw(follower.id() as i32), Signal::SIGINT).unwrap();
    let status = follower.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "Ctrl-C should end `grpm events` cleanly"
    );
}

#[test]
fn a_closed_stdout_ends_events_quietly() {
    // `grpm events | head -1`: the reader goes away; the follower must exit, not panic.
    let agent = Agent::start();
    let (mut follower, lines) = follower_with_first_event(&agent);
    drop(lines); // the reading thread stops at its next line and closes the pipe
    let mut status = None;
    wait_until(
        "the follower to notice its closed stdout",
        Duration::from_secs(20),
        || {
            agent.ok(&["notify", "web", "--action", "more"]);
            status = follower.0.as_mut().unwrap().try_wait().unwrap();
            status.is_some()
        },
    );
    follower.0 = None;
    // Exit 0 and no panic (a panic exits 101).
    assert_eq!(status.unwrap().code(), Some(0));
}
