//! The keeper (issue #14): the agent can die or be upgraded while apps run on and none of
//! their output is lost. Each test runs `grpm agent` under its keeper, as users do.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::common::{alive, json_lines, wait_until, Agent, ChildGuard};

/// Lines each writer prints: ~30 MB per app, long enough for a kill to land mid-write.
const MANY: u32 = 3_000_000;
/// Lines of the followed writer in the upgrade test (a follower prints each of them).
const LINES: u32 = 600_000;

/// The agent's pid (not the keeper's): from `agent.pid`.
fn agent_pid(agent: &Agent) -> u32 {
    fs::read_to_string(agent.home.join("agent.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until an agent other than `old` answers.
fn wait_new_agent(agent: &Agent, old: u32) -> u32 {
    let mut pid = 0;
    wait_until("a new agent to answer", Duration::from_secs(30), || {
        pid = agent_pid(agent);
        pid != 0
            && pid != old
            && alive(pid)
            && std::os::unix::net::UnixStream::connect(agent.home.join("agent.sock")).is_ok()
    });
    pid
}

/// Three apps that print `wN ready`, wait for the file `go`, then write `lines` numbered lines
/// at full speed, the third ending on a partial line, each then staying alive. Returns each
/// app's name and exactly what it writes.
fn start_writers(agent: &Agent, lines: u32) -> Vec<(String, Vec<u8>)> {
    let go = agent.path("go");
    let mut out = Vec::new();
    for n in 1..=3 {
        let name = format!("w{n}");
        let tail = if n == 3 {
            "partial line, no newline"
        } else {
            ""
        };
        let script = agent.script(
            &format!("{name}.sh"),
            &format!(
                "echo '{name} ready'\nwhile [ ! -e {go} ]; do sleep 0.01; done\n\
                 awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) print \"{name} \" i }}'\n\
                 printf '{tail}'\nexec sleep 1000"
            ),
        );
        // One file: what is compared is the whole log (no rotation).
        agent.ok(&[
            "start",
            "--name",
            &name,
            "--log-max-size",
            "1G",
            "--",
            &script,
        ]);
        let mut want: Vec<u8> = Vec::with_capacity(lines as usize * 10);
        want.extend_from_slice(format!("{name} ready\n").as_bytes());
        for i in 1..=lines {
            want.extend_from_slice(format!("{name} {i}\n").as_bytes());
        }
        want.extend_from_slice(tail.as_bytes());
        out.push((name, want));
    }
    out
}

/// Waits until each app's log holds exactly what it wrote (byte for byte: nothing lost,
/// repeated or interleaved).
fn wait_captured(agent: &Agent, apps: &[(String, Vec<u8>)]) {
    for (i, (name, want)) in apps.iter().enumerate() {
        let path = agent.home.join(format!("logs/{}-{name}.out.log", i + 1));
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = (0, Instant::now());
        loop {
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            if len >= want.len() as u64 {
                break;
            }
            if len != last.0 {
                last = (len, Instant::now());
            }
            // Growing, or still (everything there is was captured: say what differs).
            if Instant::now() > deadline || last.1.elapsed() > Duration::from_secs(10) {
                let got = fs::read(&path).unwrap_or_default();
                let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
                panic!(
                    "{name}: {len} of {} bytes captured; first difference at {at:?}",
                    want.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let got = fs::read(&path).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: captured size");
        assert!(
            got == *want,
            "{name}: captured bytes differ from what it wrote"
        );
    }
}

/// (pid, restarts) of every app.
fn pids(agent: &Agent) -> Vec<(u64, u64)> {
    agent
        .list()
        .iter()
        .map(|a| {
            (
                a["pid"].as_u64().unwrap_or(0),
                a["restarts"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Lets the writers go, and waits until every app's log has some bytes (they are writing).
fn wait_writing(agent: &Agent, apps: &[(String, Vec<u8>)]) {
    fs::write(agent.path("go"), "").unwrap();
    for (i, (name, _)) in apps.iter().enumerate() {
        let path = agent.home.join(format!("logs/{}-{name}.out.log", i + 1));
        wait_until(&format!("{name} to write"), Duration::from_secs(20), || {
            fs::metadata(&path).is_ok_and(|m| m.len() > 100_000)
        });
    }
}

#[test]
fn kill_9_of_the_agent_loses_no_byte_and_restarts_no_app() {
    let agent = Agent::with_keeper();
    let apps = start_writers(&agent, MANY);
    for (name, _) in &apps {
        agent.wait_online(name, None);
    }
    let before = pids(&agent);
    wait_writing(&agent, &apps);
    let old = agent_pid(&agent);
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    wait_new_agent(&agent, old);
    wait_captured(&agent, &apps);
    let after = pids(&agent);
    assert_eq!(after, before, "same pids, no restart");
    assert!(after.iter().all(|&(_, restarts)| restarts == 0));
    for (name, _) in &apps {
        assert_eq!(agent.status(name), "online");
    }
}

#[test]
fn an_app_that_exits_while_the_agent_is_dead_gets_its_exit_code_and_its_policy() {
    let agent = Agent::with_keeper();
    let go = agent.path("go");
    let script = agent.script(
        "seven.sh",
        &format!("echo started\nwhile [ ! -e {go} ]; do sleep 0.02; done\necho leaving\nexit 7"),
    );
    agent.ok(&["start", "--name", "seven", "--", &script]);
    let first = agent.wait_online("seven", None);
    // The agent is stopped (it cannot reap), the app exits, then the agent dies: the app's
    // status reaches the keeper, not the agent.
    let old = agent_pid(&agent);
    kill(Pid::from_raw(old as i32), Signal::SIGSTOP).unwrap();
    fs::write(&go, "").unwrap();
    wait_until("the app to exit", Duration::from_secs(10), || !alive(first));
    // Its next instance waits again.
    fs::remove_file(&go).unwrap();
    kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
    wait_new_agent(&agent, old);
    // The autorestart policy applied: a new instance runs.
    let second = agent.wait_online("seven", Some(first));
    assert_ne!(second, first);
    let d = agent.describe("seven");
    assert_eq!(d["last_exit"]["code"], 7, "{d}");
    assert_eq!(d["restarts"], 1, "{d}");
    let events = json_lines(&agent.ok(&["events", "--no-follow", "--json", "--recent", "1000"]));
    let exited = events
        .iter()
        .find(|e| e["kind"] == "exited" && e["pid"] == first)
        .unwrap_or_else(|| panic!("no exited event for pid {first}: {events:?}"));
    assert_eq!(exited["exit_code"], 7);
    assert_eq!(exited["cause"]["kind"], "recovery");
    let seq = exited["seq"].as_u64().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "autorestart_scheduled" && e["seq"].as_u64() > Some(seq)),
        "{events:?}"
    );
    // What it wrote before and after the agent died is in its log, in order.
    let log = fs::read_to_string(agent.home.join("logs/1-seven.out.log")).unwrap();
    assert!(log.starts_with("started\nleaving\nstarted\n"), "{log:?}");
}

/// Lines from a child's stdout, on a channel.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn upgrade_under_load_restarts_nothing_and_loses_nothing() {
    let agent = Agent::with_keeper();
    let apps = start_writers(&agent, LINES);
    for (name, _) in &apps {
        agent.wait_online(name, None);
    }
    let before = pids(&agent);
    let mut sub = agent
        .cmd()
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = lines_of(&mut sub);
    let _sub = ChildGuard(Some(sub));
    let mut fol = agent
        .cmd()
        .args(["logs", "w1", "--follow", "--json", "--lines", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let followed = lines_of(&mut fol);
    let _fol = ChildGuard(Some(fol));
    // The follower is there before the writing starts.
    let first = followed
        .recv_timeout(Duration::from_secs(20))
        .expect("w1's first line");
    assert!(first.contains("w1 ready"), "{first}");
    wait_writing(&agent, &apps);
    let old = agent_pid(&agent);
    let out = agent.ok(&["agent", "upgrade"]);
    assert!(
        out.contains(&format!("agent {old} replaced by agent")),
        "{out}"
    );
    assert_ne!(agent_pid(&agent), old);
    // Events after the upgrade: numbered on from the old agent's.
    agent.ok(&["notify", "w1", "--action", "after-upgrade"]);
    wait_captured(&agent, &apps);
    assert_eq!(pids(&agent), before, "same pids, no restart");

    // The subscriber saw one sequence without a gap, through the notification.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seqs = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = events.recv_timeout(left).expect("the notification event");
        let e: Value = serde_json::from_str(&line).unwrap();
        assert_ne!(e["kind"], "gap", "{e}");
        seqs.push(e["seq"].as_u64().unwrap());
        if e["kind"] == "notify" {
            break;
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "not one continuous sequence: {seqs:?}"
    );
    // The follower printed w1's lines once each, in order, to the last.
    let mut next: Option<u32> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = followed
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("w1's last line ({e}; next due: {next:?})"));
        let v: Value = serde_json::from_str(&line).unwrap();
        let text = v["line"].as_str().unwrap();
        let i: u32 = text.strip_prefix("w1 ").unwrap().parse().unwrap();
        // From the first line on, each once and in order.
        let n = next.unwrap_or(1);
        assert_eq!(i, n, "line {i} where {n} was due: lost or repeated");
        next = Some(i + 1);
        if i == LINES {
            break;
        }
    }
}

#[test]
fn an_agent_killed_five_times_in_a_row_is_restarted_with_backoff_apps_untouched() {
    let agent = Agent::with_keeper();
    agent.ok(&["start", "--name", "calm", "--", "sleep", "1000"]);
    let pid = agent.wait_online("calm", None);
    let mut old = agent_pid(&agent);
    for _ in 0..5 {
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        old = wait_new_agent(&agent, old);
    }
    assert!(alive(pid));
    assert_eq!(agent.wait_online("calm", None), pid);
    assert_eq!(agent.app("calm")["restarts"], 0);
    // The keeper logs where the agent does (here, the harness's file for its stderr).
    let log = agent.log();
    for ms in [0, 100, 200, 400, 800] {
        assert!(
            log.contains(&format!("starting a new one in {ms} ms")),
            "no {ms} ms backoff in the log:\n{log}"
        );
    }
}

#[test]
fn kill_9_of_the_keeper_leaves_the_agent_serving_and_kill_ends_everything() {
    let mut agent = Agent::with_keeper();
    agent.ok(&["start", "--name", "calm", "--", "sleep", "1000"]);
    let app = agent.wait_online("calm", None);
    let keeper = agent.pid();
    let serving = agent_pid(&agent);
    assert_ne!(keeper, serving);
    agent.crash(); // SIGKILL of the harness's child: the keeper
    assert!(!alive(keeper));
    assert!(alive(serving));
    assert_eq!(agent.wait_online("calm", None), app);
    agent.ok(&["kill"]);
    wait_until(
        "the agent and the app to end",
        Duration::from_secs(20),
        || !alive(serving) && !alive(app),
    );
    assert!(!Path::new(&agent.home.join("agent.sock")).exists());
}

/// Pids of `name`'s instances, in instance order, once all `n` are online.
fn instance_pids(agent: &Agent, name: &str, n: usize) -> Vec<u64> {
    let mut pids = Vec::new();
    wait_until(
        &format!("{n} instances of {name} online"),
        Duration::from_secs(30),
        || {
            let mut rows: Vec<Value> = agent
                .list()
                .into_iter()
                .filter(|a| a["name"] == name)
                .collect();
            rows.sort_by_key(|a| a["instance"].as_u64());
            pids = rows.iter().filter_map(|a| a["pid"].as_u64()).collect();
            rows.len() == n && rows.iter().all(|a| a["status"] == "online")
        },
    );
    pids
}

/// Instances under a keeper: each instance's pipes and notify socket are handed over by slot,
/// and the app's held socket too, so after a kill -9 of the agent the instances are adopted
/// as they ran, and a reload (which needs the held socket, and a notify socket per slot) works,
/// twice, with an agent crash between (the instances then run in their other slot).
#[test]
fn instances_with_a_held_socket_survive_the_agent_and_reload_after() {
    let agent = Agent::with_keeper();
    let app = agent.path("server.py");
    fs::write(&app, crate::instances::SERVER).unwrap();
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--instances",
        "2",
        "--socket",
        "http=127.0.0.1:0",
        "--ready-notify",
        "--start-timeout",
        "20s",
        "--",
        "python3",
        &app,
        "0.1",
    ]);
    let first = instance_pids(&agent, "web", 2);
    let addr = agent.describe("web")["sockets"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(crate::instances::request(&addr, Duration::from_secs(2)));
    for round in 0..2 {
        let before = instance_pids(&agent, "web", 2);
        let old = agent_pid(&agent);
        kill(Pid::from_raw(old as i32), Signal::SIGKILL).unwrap();
        wait_new_agent(&agent, old);
        assert_eq!(
            instance_pids(&agent, "web", 2),
            before,
            "round {round}: adopted, not restarted"
        );
        assert_eq!(
            agent.describe("web")["sockets"][0]["address"],
            addr.as_str(),
            "round {round}: the same held socket"
        );
        assert!(crate::instances::request(&addr, Duration::from_secs(2)));
        agent.ok(&["reload", "web"]);
        let after = instance_pids(&agent, "web", 2);
        assert!(
            after
                .iter()
                .all(|p| !before.contains(p) && !first.contains(p)),
            "round {round}: new processes {after:?} after {before:?}"
        );
        assert!(crate::instances::request(&addr, Duration::from_secs(2)));
    }
}
