//! Issue #17 (faults and hostile input): a full disk, signals, a hand-edited or copied home,
//! the far ends of `from_seq`, and the local CLI's deadline.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::common::*;

/// An agent spawned by the CLI (as a user gets one): its stderr is `$GRPM_HOME/agent.log`.
/// `grpm kill` on drop; the home is wherever the caller says (a mount, say).
struct Spawned {
    home: PathBuf,
    cwd: PathBuf,
}

impl Spawned {
    fn new(home: &Path, cwd: &Path) -> Spawned {
        let s = Spawned {
            home: home.to_path_buf(),
            cwd: cwd.to_path_buf(),
        };
        s.ok(&["list"]);
        s
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        base_env(&mut cmd, &self.home);
        cmd.current_dir(&self.cwd);
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "grpm {args:?} failed ({}):\n{}\nagent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.home.join("agent.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        fs::read_to_string(self.home.join("agent.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn list(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let pid = fs::read_to_string(self.home.join("agent.pid")).ok();
        let _ = self
            .cmd()
            .arg("kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Last resort, by the pid it wrote (ours: this test spawned it).
        if let Some(pid) = pid.and_then(|p| p.trim().parse::<i32>().ok()) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while alive(pid as u32) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if alive(pid as u32) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn sighup_reopens_the_agent_log_or_is_ignored_never_ends_the_agent() {
    // An agent whose stderr is not the home's log: ignored, and said.
    let agent = Agent::start();
    kill(Pid::from_raw(agent.pid() as i32), Signal::SIGHUP).unwrap();
    wait_until("the agent to say it ignored SIGHUP", Duration::from_secs(10), || {
        agent.log().contains("SIGHUP: ignored")
    });
    agent.ok(&["list"]);
    assert!(alive(agent.pid()));

    // An agent spawned by the CLI writes agent.log: moved away (logrotate), then SIGHUP.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let spawned = Spawned::new(&home, dir.path());
    fs::rename(home.join("agent.log"), dir.path().join("agent.log.old")).unwrap();
    kill(Pid::from_raw(spawned.pid() as i32), Signal::SIGHUP).unwrap();
    wait_until("a reopened agent.log", Duration::from_secs(10), || {
        spawned.log().contains("SIGHUP: reopened")
    });
    spawned.ok(&["list"]);
}

#[test]
fn local_requests_have_a_deadline() {
    let agent = Agent::start();
    // Ignores SIGTERM (inherited by its sleeps), so stopping it takes its whole kill timeout.
    agent.ok(&[
        "start",
        "--name",
        "stubborn",
        "--kill-timeout",
        "20s",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 1; done",
    ]);
    agent.wait_online("stubborn", None);
    let err = agent.fails(1, &["--timeout", "1s", "stop", "stubborn"]);
    assert!(err.contains("no answer in time (--timeout)"), "{err}");
    // The agent goes on; the stop completes on its own.
    agent.wait_status("stubborn", "stopping");
}

#[test]
fn resuming_from_a_number_past_the_last_event_is_refused_at_both_ends() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "a", "--", "sleep", "1000"]);
    agent.wait_online("a", None);
    let last = json_lines(&agent.ok(&["events", "--from", "0", "--no-follow", "--json"]))
        .last()
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    for from in [u64::MAX, i64::MAX as u64, last + 1] {
        let err = agent.fails(2, &["events", "--from", &from.to_string(), "--no-follow"]);
        assert!(
            err.contains(&format!("from_seq {from} is ahead of this agent's last event ({last})")),
            "{err}"
        );
    }
    // The last number itself: nothing replayed, no made-up gap.
    assert_eq!(
        agent.ok(&["events", "--from", &last.to_string(), "--no-follow", "--json"]),
        ""
    );
}

#[test]
fn a_hand_edited_state_is_repaired_or_set_aside_never_fatal() {
    let mut agent = Agent::start();
    agent.ok(&["start", "--name", "a", "--", "sleep", "1000"]);
    agent.ok(&["start", "--name", "b", "--", "sleep", "1000"]);
    agent.ok(&["kill"]);
    agent.reap();
    // Duplicate id and name, next_id below, a kill timeout of ten years, a zero restart delay.
    let path = agent.home.join("state.json");
    let mut state: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    state["next_id"] = 1.into();
    state["apps"][0]["spec"]["kill_timeout"] = (10 * 365 * 86_400_000u64).into();
    state["apps"][0]["spec"]["restart"]["delay"] = 0.into();
    let mut twin = state["apps"][1].clone();
    twin["spec"]["name"] = "c".into();
    state["apps"].as_array_mut().unwrap().push(twin);
    fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    agent.spawn();
    wait_until("a and b online", Duration::from_secs(20), || {
        let l = agent.list();
        l.len() == 2 && l.iter().all(|a| a["status"] == "online")
    });
    let log = agent.log();
    for said in [
        "app 2 (\"c\") refused: id 2 is already \"b\"",
        "kill timeout is longer than an hour: kill_timeout set to the default",
        "the restart policy set to the defaults",
        "next_id 1 is not above every app id",
    ] {
        assert!(log.contains(said), "{said:?} not in the agent log:\n{log}");
    }
    // The next app gets a fresh id.
    agent.ok(&["start", "--name", "d", "--", "sleep", "1000"]);
    assert_eq!(agent.app("d")["id"], 3);
    agent.ok(&["kill"]);
    agent.reap();

    // Not UTF-8: set aside and reported; the agent starts with no apps.
    fs::write(&path, b"{\"version\": 1, \"agent_id\": \"\xff\"}").unwrap();
    agent.spawn();
    assert!(agent.list().is_empty());
    assert!(agent.log().contains("not UTF-8"), "{}", agent.log());
    assert!(fs::read_dir(&agent.home).unwrap().flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with("state.json.corrupt-")));
}

#[test]
fn a_copied_home_does_not_take_the_original_agents_apps() {
    let a = Agent::start();
    a.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let original = a.wait_online("web", None);
    // `cp -r` of the running home into another, whose agent then starts.
    let mut b = Agent::start();
    b.ok(&["kill"]);
    b.reap();
    fs::copy(a.home.join("state.json"), b.home.join("state.json")).unwrap();
    b.spawn();
    let copy = b.wait_online("web", None);
    assert_ne!(copy, original, "the copy adopted the original's app");
    assert_ne!(b.agent_id(), a.agent_id());
    assert!(b.log().contains("this home is a copy of"), "{}", b.log());
    // Ending the copy's apps leaves the original's alone.
    b.ok(&["stop", "web"]);
    assert!(alive(original));
    assert_eq!(a.wait_online("web", None), original);
}
