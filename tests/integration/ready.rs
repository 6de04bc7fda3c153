//! Readiness and liveness against real targets: an HTTP server, a TCP listener, a script, a log
//! line, sd_notify (a Python sender, and `systemd-notify` where installed), and the watchdog.
//! `start` returns when the app is ready; a start that never becomes ready fails naming the
//! check; a hung app is caught by its liveness check and restarted.

use std::{net::TcpListener, time::Duration};

use serde_json::Value;

use crate::common::{alive, json_lines, read_pids, wait_until, Agent};

/// A loopback port nothing listens on (right now).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The events of `app`, oldest first.
fn events(agent: &Agent, app: &str) -> Vec<Value> {
    json_lines(&agent.ok(&[
        "events",
        "--app",
        app,
        "--no-follow",
        "--recent",
        "200",
        "--json",
    ]))
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A Python HTTP server on `port` that starts listening after `delay` seconds.
fn slow_http_server(port: u16, delay: f64) -> String {
    format!(
        "import time, http.server\ntime.sleep({delay})\n\
         http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
}

#[test]
fn http_readiness_start_returns_once_ready() {
    let agent = Agent::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let code = slow_http_server(port, 0.6);
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--ready-http",
        &url,
        "--",
        "python3",
        "-c",
        &code,
    ]);
    // It answered only once ready: online at once, with a `ready` event that says how long.
    let app = agent.app("web");
    assert_eq!(app["status"], "online", "{app}");
    let evs = events(&agent, "web");
    let k = kinds(&evs);
    let ready = k.iter().position(|k| k == "ready").expect("a ready event");
    assert_eq!(k[ready + 1], "online", "{k:?}");
    let took = evs[ready]["delay_ms"].as_u64().unwrap();
    assert!(
        took >= 500,
        "ready after {took} ms, but the server waited 600"
    );
    let d = agent.describe("web");
    assert_eq!(d["probe"]["check"], "ready", "{d}");
    assert_eq!(d["probe"]["ok"], true, "{d}");
    assert!(d["ready"]["check"]["http"]
        .as_str()
        .unwrap()
        .contains(&port.to_string()));
    let text = agent.ok(&["describe", "web"]);
    assert!(
        text.contains("ready check") && text.contains("ready after"),
        "{text}"
    );
}

#[test]
fn no_wait_returns_at_spawn_and_the_status_is_starting_until_ready() {
    let agent = Agent::start();
    let port = free_port();
    let code = slow_http_server(port, 1.0);
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--no-wait",
        "--ready-tcp",
        &format!("127.0.0.1:{port}"),
        "--",
        "python3",
        "-c",
        &code,
    ]);
    let app = agent.app("web");
    assert_eq!(app["status"], "starting", "{app}");
    assert!(
        app["pid"].as_u64().is_some(),
        "a starting app shows its pid: {app}"
    );
    agent.wait_online("web", None);
    // A restart waits again.
    agent.ok(&["restart", "web"]);
    assert_eq!(agent.status("web"), "online");
}

#[test]
fn exec_and_log_readiness() {
    let agent = Agent::start();
    let flag = agent.path("flag");
    agent.ok(&[
        "start",
        "--name",
        "job",
        "--ready-exec",
        &format!("test -e {flag}"),
        "--",
        "sh",
        "-c",
        &format!("sleep 0.4; touch {flag}; exec sleep 1000"),
    ]);
    assert_eq!(agent.status("job"), "online");
    agent.ok(&[
        "start",
        "--name",
        "srv",
        "--log-time",
        "--ready-log",
        r"^listening on \d+$",
        "--",
        "sh",
        "-c",
        "echo starting; sleep 0.3; echo listening on 8080 >&2; exec sleep 1000",
    ]);
    assert_eq!(agent.status("srv"), "online");
    let evs = events(&agent, "srv");
    assert!(kinds(&evs).contains(&"ready".to_string()));
}

/// A ten-line sd_notify sender, as any language would write one.
const PY_NOTIFY: &str = "\
import os, socket, sys, time
def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg.encode(), os.environ['NOTIFY_SOCKET'])
time.sleep(0.3)
notify('STATUS=warming up')
notify('READY=1\\nSTATUS=serving')
period = int(os.environ.get('WATCHDOG_USEC', '0')) / 1e6 / 4
for _ in range(int(sys.argv[1])):
    time.sleep(period); notify('WATCHDOG=1')
time.sleep(1000)
";

#[test]
fn notify_readiness_with_a_python_sender() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "svc",
        "--ready-notify",
        "--",
        "python3",
        "-c",
        PY_NOTIFY,
        "0",
    ]);
    assert_eq!(agent.status("svc"), "online");
    let d = agent.describe("svc");
    assert_eq!(d["probe"]["notify_status"], "serving", "{d}");
    let sock = d["env"]["NOTIFY_SOCKET"].as_str();
    // The socket is the app's own, in the home, and nobody else's to read.
    let pid = agent.app("svc")["pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let path = environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix("NOTIFY_SOCKET="))
        .expect("NOTIFY_SOCKET in the app's environment")
        .to_string();
    assert!(sock.is_none(), "describe's env is the captured one: {d}");
    assert!(path.starts_with(agent.home.to_str().unwrap()), "{path}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn systemd_notify_works_unchanged() {
    if std::process::Command::new("systemd-notify")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!(
            "skipped: systemd-notify is not installed (the Python sender test covers the protocol)"
        );
        return;
    }
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "unit",
        "--ready-notify",
        "--",
        "sh",
        "-c",
        "sleep 0.2; systemd-notify --ready --status=up; exec sleep 1000",
    ]);
    assert_eq!(agent.status("unit"), "online");
}

#[test]
fn a_start_that_never_becomes_ready_fails_naming_the_check() {
    let agent = Agent::start();
    let port = free_port();
    let err = agent.fails(
        1,
        &[
            "start",
            "--name",
            "never",
            "--ready-tcp",
            &format!("127.0.0.1:{port}"),
            "--start-timeout",
            "700ms",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert!(
        err.contains("never: not ready after")
            && err.contains(&format!("127.0.0.1:{port}: connection refused")),
        "{err}"
    );
    // The instance was ended and the autorestart policy applies.
    let evs = events(&agent, "never");
    let k = kinds(&evs);
    let unhealthy = k.iter().position(|k| k == "unhealthy").expect("unhealthy");
    assert!(k[unhealthy..].contains(&"exited".to_string()), "{k:?}");
    assert!(
        k[unhealthy..].contains(&"autorestart_scheduled".to_string()),
        "{k:?}"
    );
    assert_eq!(evs[unhealthy]["cause"]["kind"], "unhealthy");
    assert!(!k.contains(&"online".to_string()), "{k:?}");
    agent.ok(&["delete", "never"]);
}

#[test]
fn a_hanging_exec_check_is_killed_at_its_timeout() {
    let agent = Agent::start();
    let pids = agent.path("probe-pids");
    let file = agent.path("apps.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[app]]
name = "slow"
cmd = "sleep 1000"
autorestart = false
[app.ready]
exec = ["sh", "-c", "echo $$ >> {pids}; exec sleep 1000"]
period = "100ms"
timeout = "300ms"
start_timeout = "1500ms"
"#
        ),
    )
    .unwrap();
    let err = agent.fails(1, &["start", &file]);
    assert!(
        err.contains("slow: not ready after 1500ms: sh: still running after")
            && err.contains("(killed)"),
        "{err}"
    );
    let probes = read_pids(&pids, 2);
    for p in probes {
        wait_until(
            &format!("probe {p} to be gone"),
            Duration::from_secs(5),
            || !alive(p),
        );
    }
    assert_eq!(agent.status("slow"), "errored");
}

#[test]
fn a_hung_app_is_caught_by_liveness_and_restarted() {
    let agent = Agent::start();
    let port = free_port();
    let file = agent.path("apps.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[app]]
name = "api"
cmd = ["python3", "-c", "{}"]
[app.ready]
http = "http://127.0.0.1:{port}/"
[app.alive]
http = "http://127.0.0.1:{port}/"
period = "200ms"
timeout = "300ms"
failure_threshold = 2
"#,
            slow_http_server(port, 0.0).replace('\n', "\\n")
        ),
    )
    .unwrap();
    agent.ok(&["start", &file]);
    let pid = agent.wait_online("api", None);
    // Hang it: the kernel still accepts connections, but nothing answers.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let new = agent.wait_online("api", Some(pid));
    assert_ne!(new, pid);
    let evs = events(&agent, "api");
    let u = evs
        .iter()
        .find(|e| e["kind"] == "unhealthy")
        .expect("an unhealthy event");
    assert!(
        u["error"]
            .as_str()
            .unwrap()
            .contains("2 failed checks in a row"),
        "{u}"
    );
    assert_eq!(u["cause"]["kind"], "unhealthy");
    assert!(!alive(pid), "the hung instance is gone");
}

#[test]
fn a_missed_watchdog_restarts_the_app() {
    let agent = Agent::start();
    let file = agent.path("apps.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[app]]
name = "dog"
cmd = ["python3", "-c", "{}", "3"]
[app.ready]
notify = true
[app.alive]
watchdog = "800ms"
"#,
            PY_NOTIFY.replace('\\', "\\\\").replace('\n', "\\n")
        ),
    )
    .unwrap();
    agent.ok(&["start", &file]);
    let pid = agent.wait_online("dog", None);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains("WATCHDOG_USEC=800000"));
    // Three pings at a quarter of the interval, then silence: unhealthy, restarted.
    agent.wait_online("dog", Some(pid));
    let evs = events(&agent, "dog");
    let u = evs
        .iter()
        .find(|e| e["kind"] == "unhealthy")
        .expect("unhealthy");
    assert!(
        u["error"]
            .as_str()
            .unwrap()
            .contains("no WATCHDOG=1 within 800ms"),
        "{u}"
    );
}

#[test]
fn bad_checks_are_refused_with_what_is_wrong() {
    let agent = Agent::start();
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "x",
            "--ready-http",
            "https://x/",
            "--",
            "true",
        ],
    );
    assert!(
        err.contains("--ready-http") && err.contains("http://"),
        "{err}"
    );
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "x",
            "--ready-log",
            "(unclosed",
            "--",
            "true",
        ],
    );
    assert!(err.contains("regular expression"), "{err}");
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "x",
            "--start-timeout",
            "1s",
            "--",
            "true",
        ],
    );
    assert!(err.contains("--start-timeout"), "{err}");
    assert!(agent.list().is_empty(), "nothing was created");
}

#[test]
fn right_after_an_agent_starts_apps_that_will_run_show_starting_never_stopped() {
    let mut agent = Agent::start();
    // `db` takes a second to be ready; `web` waits for it, so it is queued meanwhile.
    agent.ok(&[
        "start",
        "--name",
        "db",
        "--ready-log",
        "^ready$",
        "--",
        "sh",
        "-c",
        "sleep 1; echo ready; exec sleep 1000",
    ]);
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--depends-on",
        "db",
        "--",
        "sleep",
        "1000",
    ]);
    agent.ok(&["kill"]);
    agent.reap();
    agent.spawn();
    let mut seen = Vec::new();
    wait_until(
        "web online after the new agent",
        Duration::from_secs(20),
        || {
            let list = agent.list();
            for a in &list {
                seen.push(format!("{}={}", a["name"], a["status"]));
            }
            list.iter().all(|a| a["status"] == "online")
        },
    );
    assert!(
        !seen.iter().any(|s| s.ends_with("\"stopped\"")),
        "an app that will run showed stopped: {seen:?}"
    );
    assert!(seen.iter().any(|s| s == "\"web\"=\"starting\""), "{seen:?}");
}
