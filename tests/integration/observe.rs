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
    // systemd's own checker, where installed: the user unit and the system one.
    let system = config.join("grpm-system.service");
    std::fs::write(&system, &unit).unwrap();
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .arg(&system)
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
    // monit needs a terminal (here stdout is a pipe), startup a local machine.
    let err = agent.fails(2, &["monit"]);
    assert!(err.contains("terminal"), "{err}");
    let err = agent.fails(2, &["--host", "127.0.0.1:1", "startup", "systemd"]);
    assert!(err.contains("each host"), "{err}");
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

/// One HTTP/1.1 request on a fresh connection: (status line, headers, body).
fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (String, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_lowercase(), body.to_string())
}

/// A body sent with `Transfer-Encoding: chunked`, reassembled.
fn dechunk(headers: &str, body: &str) -> String {
    if !headers.contains("transfer-encoding: chunked") {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

/// The value of the sample `name{labels}` in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_pass_promtool_and_match_list() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, "s3cret-metrics-token-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let agent = Agent::start_with(&[
        "--sample-interval",
        "100ms",
        "--metrics-listen",
        "127.0.0.1:0",
        "--metrics-token-file",
        token_file.to_str().unwrap(),
    ]);
    // Odd but valid names: dots, dashes, underscores, a leading digit, upper case.
    for name in ["web.v2_x-1", "9Lives", "a"] {
        agent.ok(&["start", "--name", name, "--", "sh", "-c", TREE]);
    }
    agent.ok(&["restart", "a"]);
    wait_until("samples of every app", Duration::from_secs(20), || {
        agent.list().iter().all(|a| a["processes"] == 3)
    });
    let addr = std::fs::read_to_string(agent.home.join("metrics.addr"))
        .unwrap()
        .trim()
        .to_string();
    let auth = ("Authorization", "Bearer s3cret-metrics-token-0123456789");
    // No token, a wrong one: 401, nothing else.
    let (status, _, body) = http_get(&addr, "/metrics", &[]);
    assert!(status.contains(" 401 "), "{status}");
    assert!(!body.contains("grpm_"), "{body}");
    let (status, _, _) = http_get(&addr, "/metrics", &[("Authorization", "Bearer nope")]);
    assert!(status.contains(" 401 "), "{status}");
    let (status, _, _) = http_get(&addr, "/other", &[auth]);
    assert!(status.contains(" 404 "), "{status}");
    // The Prometheus text format by default.
    let (status, headers, body) = http_get(&addr, "/metrics", &[auth]);
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let text = dechunk(&headers, &body);
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut promtool = match promtool {
        Ok(p) => p,
        Err(e) => {
            panic!("promtool (Debian's prometheus package) is required: {e}; .ci/run installs it")
        }
    };
    {
        use std::io::Write;
        promtool
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // Values match what list says.
    for a in agent.list() {
        let labels = format!(
            "{{app=\"{}\",id=\"{}\"}}",
            a["name"].as_str().unwrap(),
            a["id"]
        );
        assert_eq!(
            sample(&text, &format!("grpm_app_processes{labels}")),
            a["processes"].as_f64(),
            "{labels}\n{text}"
        );
        assert_eq!(
            sample(&text, &format!("grpm_app_restarts_total{labels}")),
            a["restarts"].as_f64(),
            "{labels}\n{text}"
        );
        assert_eq!(sample(&text, &format!("grpm_app_up{labels}")), Some(1.0));
        let status = format!(
            "grpm_app_status{{app=\"{}\",id=\"{}\",status=\"online\"}}",
            a["name"].as_str().unwrap(),
            a["id"]
        );
        assert_eq!(sample(&text, &status), Some(1.0), "{status}\n{text}");
        assert!(sample(&text, &format!("grpm_app_memory_bytes{labels}")).unwrap() > 0.0);
    }
    assert_eq!(
        sample(&text, "grpm_app_restarts_total{app=\"a\",id=\"3\"}"),
        Some(1.0)
    );
    assert!(sample(&text, "grpm_events_total{kind=\"online\"}").unwrap() >= 4.0);
    assert!(sample(&text, "grpm_state_writes_total").unwrap() >= 1.0);
    assert!(sample(&text, "grpm_agent_memory_bytes").unwrap() > 1e6);
    // OpenMetrics on request.
    let (_, headers, body) = http_get(
        &addr,
        "/metrics",
        &[
            auth,
            ("Accept", "application/openmetrics-text;version=1.0.0"),
        ],
    );
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    assert!(dechunk(&headers, &body).trim_end().ends_with("# EOF"));
    // A deleted app's series are gone.
    agent.ok(&["delete", "9Lives"]);
    let (_, headers, body) = http_get(&addr, "/metrics", &[auth]);
    assert!(!dechunk(&headers, &body).contains("9Lives"));
}

#[test]
fn metrics_on_an_open_address_need_tls_and_authentication() {
    let agent = Agent::start();
    let err = agent.fails(1, &["agent", "--metrics-listen", "0.0.0.0:0"]);
    assert!(
        err.contains("refusing to serve metrics on 0.0.0.0:0"),
        "{err}"
    );
    let err = agent.fails(2, &["agent", "--metrics-token-file", "x"]);
    assert!(err.contains("--metrics-listen"), "{err}");
}

#[test]
fn metrics_over_tls_require_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let certs = Agent::start();
    certs.ok(&[
        "tls",
        "init",
        "--out",
        tls.to_str().unwrap(),
        "--host",
        "localhost",
        "--host",
        "127.0.0.1",
    ]);
    let file = |n: &str| tls.join(n).to_str().unwrap().to_string();
    let (cert, key, ca) = (file("agent.pem"), file("agent-key.pem"), file("ca.pem"));
    // Every interface: allowed only with TLS and client certificates.
    let agent = Agent::start_with(&[
        "--metrics-listen",
        "0.0.0.0:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ]);
    let bound = std::fs::read_to_string(agent.home.join("metrics.addr")).unwrap();
    let port = bound.trim().rsplit(':').next().unwrap().to_string();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let curl = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "20", "--cacert", &ca])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl is required; .ci/run installs it")
    };
    let ok = curl(&[
        "--cert",
        &file("client.pem"),
        "--key",
        &file("client-key.pem"),
    ]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("grpm_agent_memory_bytes"));
    let refused = curl(&[]);
    assert!(
        !refused.status.success(),
        "no client certificate: {refused:?}"
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("grpm_"));
}
