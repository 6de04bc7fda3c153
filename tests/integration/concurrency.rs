//! Semantics 3: one owner per app applies its commands in order; concurrent restarts leave
//! exactly one instance and no orphan.

use std::{process::Stdio, time::Duration};

use crate::common::*;

#[test]
fn twenty_concurrent_restarts_leave_exactly_one_instance() {
    let agent = Agent::start();
    let pids = agent.path("gens");
    // Each generation has a child too, so an orphaned tree would show.
    let script = agent.script("gen.sh", &format!("echo $$ >> {pids}\nsleep 1000 &\nwait"));
    agent.ok(&["start", "--name", "web", "--", &script]);
    agent.wait_online("web", None);
    let children: Vec<_> = (0..20)
        .map(|_| {
            agent
                .cmd()
                .args(["restart", "web"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let main = agent.wait_online("web", None);
    // The generations as the agent spawned them (a generation stopped by the next restart
    // before its shell ran `echo` leaves no line in the file, so the events count them).
    let gens: Vec<u32> = json_lines(&agent.ok(&[
        "events",
        "--app",
        "web",
        "--kind",
        "online",
        "--no-follow",
        "--recent",
        "100",
        "--json",
    ]))
    .iter()
    .filter_map(|e| e["pid"].as_u64().map(|p| p as u32))
    .collect();
    assert_eq!(gens.len(), 21, "each restart is one stop + one start");
    let mut distinct = gens.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 21, "every generation is a new process");
    // Every generation that ran its script was one of them.
    for p in read_pids_now(&pids) {
        assert!(gens.contains(&p), "pid {p} ran but was not a generation");
    }
    let live: Vec<u32> = gens.iter().copied().filter(|p| alive(*p)).collect();
    assert_eq!(live, vec![main], "exactly one generation may be alive");
    // The live tree is the main process and its one child: nothing else carries the app id.
    wait_until("one main + one child", Duration::from_secs(10), || {
        app_processes(&agent.agent_id(), 1).len() == 2
    });
    assert_eq!(agent.app("web")["restarts"], 20);
}

/// The pids in `path` so far.
fn read_pids_now(path: &str) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn two_clis_on_a_fresh_home_share_one_agent() {
    // No agent yet: both CLIs try to spawn one at the same moment.
    let dir = tempfile::Builder::new().prefix("grpm").tempdir().unwrap();
    let home = dir.path().join("h");
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(BIN);
        base_env(&mut cmd, &home);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = run(&["list", "--json"]);
    let b = run(&["list", "--json"]);
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
    let pid: u32 = std::fs::read_to_string(home.join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    // Exactly one live agent serves this home.
    let agents: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            alive(*p)
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.ends_with(b"agent\0--no-keeper\0"))
                && std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|e| {
                    e.split(|&b| b == 0)
                        .any(|v| v == format!("GRPM_HOME={}", home.display()).as_bytes())
                })
        })
        .collect();
    assert_eq!(agents, vec![pid]);
    let mut cmd = std::process::Command::new(BIN);
    base_env(&mut cmd, &home);
    assert!(cmd.arg("kill").output().unwrap().status.success());
    assert!(!alive(pid));
}
