//! Seeing what runs: tree usage in list/describe, Prometheus metrics, sd_notify, the systemd
//! unit, completions and the man page, and `grpm monit` in a real terminal.

use std::time::Duration;

use serde_json::Value;

use crate::common::{wait_until, Agent};

/// A tree of three: the shell and two sleeps.
const TREE: &str = "sleep 1000 & sleep 1000 & wait";

#[test]
fn list_and_describe_report_the_whole_tree() {
    let agent = Agent::start_with(&["--sample-interval", "100ms"]);
    agent.ok(&["start", "--name", "tree", "--", "sh", "-c", TREE]);
    agent.ok(&["start", "--name", "single", "--", "sleep", "1000"]);
    agent.wait_online("tree", None);
    wait_until(
        "a sample showing three processes",
        Duration::from_secs(20),
        || agent.app("tree")["processes"] == 3,
    );
    let tree = agent.app("tree");
    let single = agent.app("single");
    wait_until(
        "a sample of the single app",
        Duration::from_secs(20),
        || agent.app("single")["processes"] == 1,
    );
    // Three processes use more memory than one of them.
    let single_mem = agent.app("single")["memory_bytes"].as_u64().unwrap();
    assert!(single_mem > 0, "{single}");
    assert!(
        tree["memory_bytes"].as_u64().unwrap() > single_mem,
        "tree {tree} vs single {single}"
    );
    assert!(tree["cpu_percent"].as_f64().unwrap() >= 0.0);
    let d: Value = agent.describe("tree");
    assert_eq!(d["processes"], 3, "{d}");
    let table = agent.ok(&["list"]);
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("PROCS"), "{table}");
    let row = table.lines().find(|l| l.contains(" tree ")).unwrap();
    assert!(row.trim_end().ends_with(" 3"), "{table}");
    // A stopped app has no tree.
    agent.ok(&["stop", "tree"]);
    assert_eq!(agent.app("tree")["processes"], 0);
    // The interval is checked at the edge.
    let err = agent.fails(2, &["agent", "--sample-interval", "1ms"]);
    assert!(err.contains("100ms to 1h"), "{err}");
}

/// The agent tells systemd READY=1 once its socket answers, and STOPPING=1 when it stops; the
/// notify socket is a datagram socket the test binds (no systemd needed).
#[test]
fn agent_speaks_sd_notify() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = std::process::Command::new(crate::common::BIN);
    crate::common::base_env(&mut cmd, &home);
    let mut child = cmd
        .arg("agent")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 20s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready:?}"
    );
    // Ready means the socket answers.
    assert!(std::os::unix::net::UnixStream::connect(home.join("agent.sock")).is_ok());
    // Apps do not inherit the notify socket.
    let mut grpm = std::process::Command::new(crate::common::BIN);
    crate::common::base_env(&mut grpm, &home);
    let started = grpm
        .args(["start", "--name", "env", "--", "sleep", "1000"])
        .output()
        .unwrap();
    assert!(started.status.success());
    let mut kill = std::process::Command::new(crate::common::BIN);
    crate::common::base_env(&mut kill, &home);
    assert!(kill.arg("kill").output().unwrap().status.success());
    let n = notify.recv(&mut buf).expect("STOPPING=1 within 20s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    child.wait().unwrap();
}

#[test]
fn startup_systemd_unit_verifies_and_installs() {
    let agent = Agent::start();
    let unit = agent.ok(&["startup", "systemd"]);
    assert!(unit.contains("Type=notify"), "{unit}");
    assert!(unit.contains("KillMode=process"), "{unit}");
    assert!(
        unit.contains(&format!("Environment=GRPM_HOME={}", agent.home.display())),
        "{unit}"
    );
    // --install --user writes the user unit under XDG_CONFIG_HOME.
    let config = agent.dir.path().join("config");
    let out = agent
        .cmd()
        .args(["startup", "systemd", "--user", "--install"])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let path = config.join("systemd/user/grpm.service");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("WantedBy=default.target"), "{written}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("systemctl --user"));
    // systemd's own checker, where installed.
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output();
    match analyze {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze is not installed: the unit is not verified here");
        }
        Err(e) => panic!("systemd-analyze: {e}"),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "systemd-analyze verify: {err}\n{written}"
            );
            assert!(
                !err.contains("grpm.service:"),
                "warnings about the unit: {err}"
            );
        }
    }
}

#[test]
fn completions_and_man_page_come_from_the_parser() {
    let agent = Agent::start();
    let bash = agent.ok(&["completions", "bash"]);
    assert!(
        bash.contains("monit") && bash.contains("--sample-interval"),
        "bash"
    );
    let dir = agent.dir.path();
    std::fs::write(dir.join("grpm.bash"), &bash).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(dir.join("grpm.bash"))
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{syntax:?}");
    assert!(agent
        .ok(&["completions", "zsh"])
        .starts_with("#compdef grpm"));
    assert!(agent
        .ok(&["completions", "fish"])
        .contains("complete -c grpm"));
    agent.fails(2, &["completions", "tcsh"]);
    let man = agent.ok(&["man"]);
    assert!(man.contains(".TH grpm 1"), "{man}");
    assert!(man.contains("monit"), "{man}");
    agent.ok(&["man", "--out", "pages"]);
    assert!(dir.join("pages/grpm.1").exists());
    assert!(dir.join("pages/grpm-monit.1").exists());
}

/// A tmux server of the test's own (its socket in the test's directory), ended with it.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("tmux is installed");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "monit"])
    }

    fn wait_screen(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            last = self.screen();
            if cond(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for the screen to show {what}; it shows:\n{last}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The RESTARTS cell of `name`'s row on a monit screen.
fn restarts_on(screen: &str, name: &str) -> Option<u32> {
    let line = screen
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))?;
    let cells: Vec<&str> = line
        .split_whitespace()
        .filter(|w| !matches!(*w, "│" | ">"))
        .collect();
    cells.get(cells.len().checked_sub(2)?)?.parse().ok()
}

#[test]
fn monit_in_a_real_terminal_restarts_an_app_with_a_key() {
    let agent = Agent::start_with(&["--sample-interval", "200ms"]);
    agent.ok(&[
        "start",
        "--name",
        "ticker",
        "--",
        "sh",
        "-c",
        "while :; do echo tick; sleep 0.2; done",
    ]);
    agent.ok(&["start", "--name", "other", "--", "sleep", "1000"]);
    let tmux = Tmux {
        socket: agent.dir.path().join("tmux.sock"),
    };
    let mut new = tmux.cmd();
    crate::common::base_env(&mut new, &agent.home);
    let out = new
        .env("TERM", "xterm-256color")
        .args(["new-session", "-d", "-s", "monit", "-x", "120", "-y", "30"])
        .arg(format!("{} monit", crate::common::BIN))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    tmux.run(&["set-option", "-t", "monit", "remain-on-exit", "on"]);
    let screen = tmux.wait_screen("ticker online with its output", |s| {
        s.contains("ticker") && s.contains("online") && s.contains("out | tick")
    });
    assert_eq!(restarts_on(&screen, "ticker"), Some(0), "{screen}");
    // Restart asks first, then acts; the restart count follows.
    tmux.run(&["send-keys", "-t", "monit", "r"]);
    tmux.wait_screen("the question", |s| s.contains("restart ticker? y/n"));
    tmux.run(&["send-keys", "-t", "monit", "y"]);
    let screen = tmux.wait_screen("one restart", |s| restarts_on(s, "ticker") == Some(1));
    assert_eq!(restarts_on(&screen, "other"), Some(0), "{screen}");
    assert_eq!(agent.app("ticker")["restarts"], 1);
    // The filter hides the other app.
    tmux.run(&["send-keys", "-t", "monit", "/", "o", "t", "h", "Enter"]);
    tmux.wait_screen("only the other app", |s| {
        restarts_on(s, "other").is_some() && restarts_on(s, "ticker").is_none()
    });
    // q leaves a clean terminal: the alternate screen is gone with the table.
    tmux.run(&["send-keys", "-t", "monit", "q"]);
    let after = tmux.wait_screen("monit to exit", |s| !s.contains("grpm monit"));
    assert!(!after.contains("RESTARTS"), "{after}");
}
