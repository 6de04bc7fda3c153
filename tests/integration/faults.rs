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
    wait_until(
        "the agent to say it ignored SIGHUP",
        Duration::from_secs(10),
        || agent.log().contains("SIGHUP: ignored"),
    );
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
        "5s",
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
            err.contains(&format!(
                "from_seq {from} is ahead of this agent's last event ({last})"
            )),
            "{err}"
        );
    }
    // The last number itself: nothing replayed, no made-up gap.
    assert_eq!(
        agent.ok(&[
            "events",
            "--from",
            &last.to_string(),
            "--no-follow",
            "--json"
        ]),
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

/// A tmpfs of `size` mounted at `at` for the test's life; `None` where mounting is not
/// permitted (not root, no CAP_SYS_ADMIN, a restricted container).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(at.to_path_buf()))
    }

    /// Bytes still free.
    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.0).unwrap();
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The whole "full disk" story on a real 4 MiB filesystem that an app's output fills: requests
/// fail clearly and quickly, their changes stay made and are written once space returns,
/// logging neither panics nor blocks, no event number is used past what is on disk, and all
/// of it works again without restarting the agent.
#[test]
fn a_full_disk_fails_requests_clearly_and_everything_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let Some(mount) = Mount::tmpfs(&home, "4m") else {
        return;
    };
    let agent = Spawned::new(&home, dir.path());
    agent.ok(&[
        "start",
        "--name",
        "filler",
        "--",
        "sh",
        "-c",
        "head -c 16M /dev/zero; sleep 1000",
    ]);
    wait_until("the filesystem to be full", Duration::from_secs(30), || {
        mount.free() == 0
    });
    // What is left in partly used pages is taken too: a ballast file, and the agent log's
    // last page (so that the agent's next log lines cannot be written).
    let fill = |path: &Path| {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        while std::io::Write::write_all(&mut f, b"ballast\n").is_ok() {}
    };
    fill(&home.join("ballast"));
    fill(&home.join("agent.log"));
    let fails = |args: &[&str]| {
        let mut all = vec!["--timeout", "20s"];
        all.extend_from_slice(args);
        let out = agent.run(&all);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "grpm {args:?}: {err}");
        err
    };
    let pending = "state not saved yet";
    let err = fails(&["start", "--name", "sleeper", "--", "sleep", "1000"]);
    assert!(
        err.contains(pending) && err.contains("writes it as soon as the disk allows"),
        "{err}"
    );
    let err = fails(&["stop", "filler"]);
    assert!(err.contains(pending), "{err}");
    // The changes are made: the list says so.
    let list = agent.list();
    let status = |name: &str| {
        list.iter().find(|a| a["name"] == name).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (status("sleeper").as_str(), status("filler").as_str()),
        ("online", "stopped")
    );
    // Notifications go on (they are kept in memory), and nothing is left half-written.
    agent.ok(&["notify", "sleeper", "--action", "while-full"]);
    assert!(!home.join("state.json.tmp").exists());
    assert!(!home.join("events.seq.tmp").exists());
    assert!(alive(agent.pid()));

    // Space returns (the filler's log is emptied): everything is written again, unasked.
    fs::remove_file(home.join("ballast")).unwrap();
    for e in fs::read_dir(home.join("logs")).unwrap().flatten() {
        if e.file_name().to_string_lossy().contains("filler") {
            fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_len(0)
                .unwrap();
        }
    }
    let desired = || -> Vec<(String, String)> {
        let text = fs::read_to_string(home.join("state.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let mut apps: Vec<(String, String)> = v["apps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| {
                        (
                            a["spec"]["name"].as_str().unwrap_or("").to_string(),
                            a["desired"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        apps.sort();
        apps
    };
    wait_until(
        "state.json to hold the changes made while full",
        Duration::from_secs(30),
        || {
            desired()
                == [
                    ("filler".to_string(), "stopped".to_string()),
                    ("sleeper".to_string(), "online".to_string()),
                ]
        },
    );
    agent.ok(&["start", "--name", "after", "--", "sleep", "1000"]);
    agent.ok(&["restart", "sleeper"]);
    wait_until(
        "the agent log to say what it dropped",
        Duration::from_secs(20),
        || {
            agent.ok(&["notify", "after", "--action", "tick"]);
            agent.log().contains("agent log lines were dropped")
        },
    );
    // Numbers: strictly increasing, and never past what events.seq has reserved.
    let events = json_lines(&agent.ok(&["events", "--from", "0", "--no-follow", "--json"]));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let reserved: u64 = fs::read_to_string(home.join("events.seq"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        *seqs.last().unwrap() < reserved,
        "{seqs:?} against {reserved}"
    );
    // And the agent still stops on request.
    let pid = agent.pid();
    agent.ok(&["kill"]);
    assert!(!alive(pid));
}

/// With the defaults (no `--events-kept`), the largest notifications the API accepts, while a
/// subscriber never reads: the kept events are bounded by bytes, so the agent stays small.
#[test]
fn the_largest_notifications_keep_the_agent_bounded_with_default_settings() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = agent.home.join("agent.sock");
        let mut stalled_client = grpm::client::connect_unix(&sock).await.unwrap();
        let _stalled = stalled_client
            .subscribe(&grpm::client::Subscription::default())
            .await
            .unwrap();
        let mut c = grpm::client::connect_unix(&sock).await.unwrap();
        let before = rss_kib(agent.pid());
        // 64 KiB of message and 64 entries of 4 KiB: about 330 KiB each, 330 MB in all.
        let message = "m".repeat(64 * 1024);
        let data: grpm::model::Env = (0..64)
            .map(|i| (format!("k{i:03}"), "v".repeat(4096)))
            .collect();
        for _ in 0..1000 {
            c.notify("web", "load", &message, &data).await.unwrap();
        }
        let grown = rss_kib(agent.pid()).saturating_sub(before);
        eprintln!("agent RSS: {before} KiB before, grew by {grown} KiB");
        assert!(
            grown < 48 * 1024,
            "agent RSS grew by {grown} KiB for 1,000 of the largest notifications"
        );
    });
}

/// The agent's anonymous resident memory (its heap; not the binary's pages) in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// 1,100 subscribers (past the cap of 1,024) opened and closed four times: what they took is
/// handed back each time, so the agent's memory neither stays up nor ratchets round after
/// round. Run with `--nocapture` for the figures.
#[test]
fn many_subscribers_opened_and_closed_leave_no_memory_behind() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let sock = agent.home.join("agent.sock");
    let idle = rss_anon_kib(agent.pid());
    let mut peaks = Vec::new();
    let mut after = Vec::new();
    for round in 0..4 {
        // A runtime per round: dropping it ends the client's connection tasks, so every
        // socket is closed on our side.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut held = Vec::new();
            for _ in 0..1100 {
                let mut c = grpm::client::connect_unix(&sock).await.unwrap();
                if let Ok(s) = c.subscribe(&grpm::client::Subscription::default()).await {
                    held.push((c, s));
                }
            }
            assert_eq!(held.len(), 1024);
            let mut c = grpm::client::connect_unix(&sock).await.unwrap();
            c.notify("web", "round", "", &grpm::model::Env::new())
                .await
                .unwrap();
            peaks.push(rss_anon_kib(agent.pid()));
            drop(held);
        });
        drop(rt);
        // Back near idle (what a thousand connections leave in the allocator and runtime is
        // bounded), and no higher after later rounds than after the first: no ratchet.
        let bound = after.first().map_or(idle + 8 * 1024, |first| first + 1024);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut now = rss_anon_kib(agent.pid());
        while now >= bound {
            assert!(
                Instant::now() < deadline,
                "round {round}: the agent's heap stays at {now} KiB (idle {idle} KiB; with \
                 1,024 subscribers {peaks:?}; after the rounds before {after:?})"
            );
            std::thread::sleep(Duration::from_millis(20));
            now = rss_anon_kib(agent.pid());
        }
        after.push(now);
    }
    eprintln!("agent RssAnon: idle {idle} KiB; with 1,024 subscribers {peaks:?}; after {after:?}");
}
