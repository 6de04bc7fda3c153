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

/// Even when the socket is reachable (a loosened mode, say), another uid is refused by the
/// SO_PEERCRED check and nothing happens. Needs root to act as another user; CI runs as root.
#[test]
fn another_user_is_refused_by_peer_credentials() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: acting as another user needs root");
        return;
    }
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let set = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    set(agent.dir.path(), 0o755);
    set(&agent.home, 0o755);
    set(&agent.home.join("agent.sock"), 0o666);
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            BIN,
            "stop",
            "web",
        ])
        .env_clear()
        .env("GRPM_HOME", &agent.home)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    wait_until(
        "the refusal in the agent log",
        std::time::Duration::from_secs(10),
        || {
            agent
                .log()
                .contains("refused a connection from another user")
        },
    );
    assert_eq!(
        agent.status("web"),
        "online",
        "a refused caller changed something"
    );
}
