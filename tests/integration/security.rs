//! The home and socket are private: home 0700, socket 0600, state written whole.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn home_and_socket_modes() {
    let agent = Agent::start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&agent.home), 0o700);
    assert_eq!(mode(&agent.home.join("agent.sock")), 0o600);
    let pid: u32 = std::fs::read_to_string(agent.home.join("agent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, agent.pid());
}

#[test]
fn a_second_agent_on_the_same_home_refuses_to_start() {
    let agent = Agent::start();
    let out = agent.run(&["agent"]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("another agent already serves"), "{e}");
    // The first one still answers.
    agent.ok(&["list"]);
}

#[test]
fn grpm_kill_without_an_agent_is_fine() {
    let dir = tempfile::Builder::new().prefix("grpm").tempdir().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    base_env(&mut cmd, &dir.path().join("h"));
    let out = cmd.arg("kill").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no agent is running"));
}
