//! Semantics 4: autorestart with backoff, errored after too many restarts, reset by a manual
//! start or restart; `--no-autorestart` leaves a crashed app down.

use std::time::Duration;

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::common::*;

#[test]
fn a_killed_app_comes_back_with_a_new_pid() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "napper", "--", "sleep", "1000"]);
    let pid1 = agent.wait_online("napper", None);
    kill(Pid::from_raw(pid1 as i32), Signal::SIGKILL).unwrap();
    let pid2 = agent.wait_online("napper", Some(pid1));
    assert_ne!(pid1, pid2);
    assert_eq!(agent.app("napper")["restarts"], 1);
    let d = agent.describe("napper");
    assert_eq!(d["last_exit"]["signal"], 9);
}

/// Starts `flaky`, which exits with code 3 until the returned flag file exists, with fast
/// restarts and `max_restarts`, and waits until it is errored.
fn errored_flaky(agent: &Agent, max_restarts: &str) -> String {
    let flag = agent.path("healthy");
    let script = agent.script(
        "flaky.sh",
        &format!("[ -e {flag} ] && exec sleep 1000\nexit 3"),
    );
    agent.ok(&[
        "start",
        "--name",
        "flaky",
        "--restart-delay",
        "5ms",
        "--restart-delay-max",
        "20ms",
        "--max-restarts",
        max_restarts,
        "--",
        &script,
    ]);
    agent.wait_status("flaky", "errored");
    flag
}

#[test]
fn a_crash_loop_ends_errored_and_restart_clears_it() {
    let agent = Agent::start();
    let flag = errored_flaky(&agent, "4");
    let d = agent.describe("flaky");
    assert_eq!(d["last_exit"]["code"], 3, "{d}");
    let err = d["error"].as_str().unwrap();
    assert!(
        err.contains("restarted 4 times") && err.contains("exit code 3"),
        "{err}"
    );
    assert_eq!(d["restarts"], 4);
    // errored stays errored: no more restarts happen.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(agent.status("flaky"), "errored");
    assert_eq!(agent.app("flaky")["restarts"], 4);

    std::fs::write(&flag, "").unwrap();
    agent.ok(&["restart", "flaky"]);
    agent.wait_online("flaky", None);
    assert!(agent.describe("flaky")["error"].is_null());
}

#[test]
fn start_clears_errored_too() {
    let agent = Agent::start();
    let flag = errored_flaky(&agent, "2");
    std::fs::write(&flag, "").unwrap();
    agent.ok(&["start", "flaky"]);
    agent.wait_online("flaky", None);
}

#[test]
fn no_autorestart_leaves_a_crashed_app_down() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "once",
        "--no-autorestart",
        "--",
        "sleep",
        "1000",
    ]);
    let pid = agent.wait_online("once", None);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    agent.wait_status("once", "errored");
    let d = agent.describe("once");
    assert!(
        d["error"].as_str().unwrap().contains("autorestart is off"),
        "{d}"
    );
    assert_eq!(d["desired"], "stopped");

    agent.ok(&["start", "--name", "done", "--no-autorestart", "--", "true"]);
    agent.wait_status("done", "stopped");
    assert_eq!(agent.describe("done")["last_exit"]["code"], 0);
}

#[test]
fn the_backoff_grows_between_restarts() {
    let agent = Agent::start();
    let stamps = agent.path("stamps");
    let script = agent.script("crash.sh", &format!("date +%s%N >> {stamps}\nexit 1"));
    agent.ok(&[
        "start",
        "--name",
        "crash",
        "--restart-delay",
        "40ms",
        "--restart-delay-max",
        "10s",
        "--",
        &script,
    ]);
    let mut times: Vec<u64> = Vec::new();
    wait_until("5 starts", Duration::from_secs(20), || {
        times = std::fs::read_to_string(&stamps)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        times.len() >= 5
    });
    agent.ok(&["stop", "crash"]);
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // Delays 40, 80, 160, 320 ms: each gap at least its delay.
    for (i, gap) in gaps.iter().enumerate().take(4) {
        assert!(
            *gap >= 40 << i,
            "gap {i} was {gap}ms; expected at least {}ms ({gaps:?})",
            40 << i
        );
    }
}
