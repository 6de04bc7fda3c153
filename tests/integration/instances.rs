//! Issue 11: instances (each supervised on its own), sockets held by the agent and passed by
//! systemd's socket activation, and reload with zero failed requests.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::common::*;

/// The rows of `name`'s instances, in instance order.
fn rows(agent: &Agent, name: &str) -> Vec<Value> {
    let mut r: Vec<Value> = agent
        .list()
        .into_iter()
        .filter(|a| a["name"] == name)
        .collect();
    r.sort_by_key(|a| a["instance"].as_u64());
    r
}

/// Waits until every instance of `name` (there are `n`) is online; returns their pids.
fn all_online(agent: &Agent, name: &str, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until(
        &format!("{n} instances of {name} online"),
        Duration::from_secs(30),
        || {
            let r = rows(agent, name);
            pids = r
                .iter()
                .filter_map(|a| a["pid"].as_u64())
                .map(|p| p as u32)
                .collect();
            r.len() == n && r.iter().all(|a| a["status"] == "online")
        },
    );
    pids
}

#[test]
fn instances_start_are_targeted_one_by_one_and_scale() {
    let agent = Agent::start();
    let out = agent.ok(&[
        "start",
        "--name",
        "api",
        "--instances",
        "2",
        "--",
        "sleep",
        "1000",
    ]);
    assert!(out.contains("api:0") && out.contains("api:1"), "{out}");
    let pids = all_online(&agent, "api", 2);
    let r = rows(&agent, "api");
    assert_eq!(
        (r[0]["instance"].clone(), r[1]["instance"].clone()),
        (0.into(), 1.into())
    );
    let table = agent.ok(&["list"]);
    assert!(
        table.contains("api:0") && table.contains("api:1"),
        "{table}"
    );
    // Each instance knows its number.
    let d: Value = serde_json::from_str(&agent.ok(&["describe", "api", "--json"])).unwrap();
    assert_eq!(d.as_array().unwrap().len(), 2);
    assert_eq!(d[0]["env"]["GRPM_INSTANCE"], "0");
    assert_eq!(d[1]["env"]["GRPM_INSTANCE"], "1");
    // One instance as a target.
    agent.ok(&["stop", "api:1"]);
    let r = rows(&agent, "api");
    assert_eq!(r[0]["status"], "online");
    assert_eq!(r[1]["status"], "stopped");
    assert!(!alive(pids[1]) && alive(pids[0]));
    agent.ok(&["start", "api:1"]);
    all_online(&agent, "api", 2);
    let err = agent.fails(1, &["restart", "api:7"]);
    assert!(
        err.contains("no instance api:7") && err.contains("2 instances"),
        "{err}"
    );
    let err = agent.fails(2, &["stop", "api:x"]);
    assert!(err.contains("instance number"), "{err}");
    let err = agent.fails(2, &["delete", "api:1"]);
    assert!(err.contains("scale"), "{err}");
    // Scale up: new instances start; down: the highest ones stop and are forgotten.
    agent.ok(&["scale", "api", "4"]);
    let four = all_online(&agent, "api", 4);
    agent.ok(&["scale", "api", "1"]);
    let one = all_online(&agent, "api", 1);
    assert_eq!(one[0], four[0], "instance 0 is left as it was");
    for p in &four[1..] {
        wait_until(
            "a scaled-away instance to end",
            Duration::from_secs(10),
            || !alive(*p),
        );
    }
    assert_eq!(
        agent
            .ok(&["list"])
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(1),
        Some("api")
    );
    let events = agent.ok(&[
        "events",
        "--no-follow",
        "--recent",
        "200",
        "--kind",
        "scaled",
        "--json",
    ]);
    let scaled = json_lines(&events);
    assert_eq!(scaled.len(), 2, "{events}");
    assert_eq!(scaled[1]["message"], "4 -> 1 instances");
    // Persisted: a new agent brings back one instance.
    let state = std::fs::read_to_string(agent.home.join("state.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["apps"].as_array().unwrap().len(), 1, "{state}");
    let err = agent.fails(2, &["scale", "api", "0"]);
    assert!(err.contains("instances 0 is out of range"), "{err}");
}

#[test]
fn each_instance_restarts_on_its_own() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "w",
        "--instances",
        "3",
        "--",
        "sleep",
        "1000",
    ]);
    let pids = all_online(&agent, "w", 3);
    kill(Pid::from_raw(pids[1] as i32), Signal::SIGKILL).unwrap();
    wait_until("instance 1 restarted", Duration::from_secs(20), || {
        let r = rows(&agent, "w");
        r[1]["status"] == "online" && r[1]["pid"].as_u64() != Some(u64::from(pids[1]))
    });
    let r = rows(&agent, "w");
    assert_eq!(r[1]["restarts"], 1);
    for i in [0, 2] {
        assert_eq!(r[i]["restarts"], 0);
        assert_eq!(r[i]["pid"].as_u64(), Some(u64::from(pids[i])));
    }
    let events = agent.ok(&["events", "--no-follow", "--recent", "100", "--json"]);
    let exited: Vec<Value> = json_lines(&events)
        .into_iter()
        .filter(|e| e["kind"] == "exited")
        .collect();
    assert_eq!(exited.len(), 1, "{events}");
    assert_eq!(exited[0]["instance"], 1);
}

#[test]
fn instances_have_their_own_logs_and_logs_merges_them() {
    let agent = Agent::start();
    let script = agent.script(
        "hello.sh",
        "echo \"hello from $GRPM_INSTANCE\"\nexec sleep 1000",
    );
    agent.ok(&["start", "--name", "h", "--instances", "2", "--", &script]);
    all_online(&agent, "h", 2);
    let d: Value = serde_json::from_str(&agent.ok(&["describe", "h", "--json"])).unwrap();
    let (out0, out1) = (
        d[0]["stdout_path"].as_str().unwrap(),
        d[1]["stdout_path"].as_str().unwrap(),
    );
    assert!(
        out0.ends_with("1-h.out.log") && out1.ends_with("1-h-1.out.log"),
        "{out0} {out1}"
    );
    wait_until("both lines logged", Duration::from_secs(10), || {
        let text = agent.ok(&["logs", "h"]);
        text.contains("h:0 out | hello from 0") && text.contains("h:1 out | hello from 1")
    });
    assert_eq!(std::fs::read_to_string(out1).unwrap(), "hello from 1\n");
    let json = json_lines(&agent.ok(&["logs", "h", "--json"]));
    assert!(
        json.iter()
            .any(|l| l["line"] == "hello from 1" && l["app"] == "h:1"),
        "{json:?}"
    );
}

/// A Python app that reports what socket activation gave it (a JSON line in `report`), then
/// serves its pid on fd 3 (TCP) and fd 4 (unix) until SIGTERM.
const ACTIVATED: &str = r#"
import json, os, socket, sys, threading
report = {"pid": os.getpid(), "LISTEN_PID": os.environ.get("LISTEN_PID"),
          "LISTEN_FDS": os.environ.get("LISTEN_FDS"),
          "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES")}
socks = [socket.socket(fileno=3), socket.socket(fileno=4)]
report["families"] = [s.family.name for s in socks]
report["listening"] = [s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in socks]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(report) + "\n")
def serve(s):
    while True:
        c, _ = s.accept()
        c.sendall(("%d\n" % os.getpid()).encode())
        c.close()
threading.Thread(target=serve, args=(socks[1],), daemon=True).start()
serve(socks[0])
"#;

#[test]
fn held_sockets_reach_a_python_app_by_socket_activation() {
    let agent = Agent::start();
    let app = agent.path("activated.py");
    std::fs::write(&app, ACTIVATED).unwrap();
    let report = agent.path("report.jsonl");
    let unix = agent.path("api.sock");
    agent.ok(&[
        "start",
        "--name",
        "api",
        "--instances",
        "2",
        "--socket",
        "http=127.0.0.1:0",
        "--socket",
        &format!("admin=unix:{unix}"),
        "--",
        "python3",
        &app,
        &report,
    ]);
    let pids = all_online(&agent, "api", 2);
    wait_until("both reports", Duration::from_secs(20), || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.lines().count() >= 2)
    });
    for line in json_lines(&std::fs::read_to_string(&report).unwrap()) {
        let pid = line["pid"].as_u64().unwrap();
        assert!(pids.contains(&(pid as u32)), "{line}");
        assert_eq!(
            line["LISTEN_PID"],
            pid.to_string(),
            "LISTEN_PID is the app's own pid"
        );
        assert_eq!(line["LISTEN_FDS"], "2");
        assert_eq!(line["LISTEN_FDNAMES"], "http:admin");
        assert_eq!(line["families"], serde_json::json!(["AF_INET", "AF_UNIX"]));
        assert_eq!(line["listening"], serde_json::json!([1, 1]));
    }
    let d = agent.describe("api");
    let tcp = d["sockets"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(d["sockets"][1]["address"], format!("unix:{unix}"));
    assert_eq!(d["sockets"][1]["fd"], 4);
    let served = |s: &mut dyn Read| {
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.trim().parse::<u32>().unwrap()
    };
    assert!(pids.contains(&served(&mut TcpStream::connect(&tcp).unwrap())));
    assert!(pids.contains(&served(&mut UnixStream::connect(&unix).unwrap())));
    // The socket outlives the instances: a restart keeps the same address.
    agent.ok(&["restart", "api"]);
    all_online(&agent, "api", 2);
    assert_eq!(agent.describe("api")["sockets"][0]["address"], tcp.as_str());
    served(&mut TcpStream::connect(&tcp).unwrap());
    // Deleted: the socket is closed and its file removed.
    agent.ok(&["delete", "api"]);
    assert!(TcpStream::connect(&tcp).is_err());
    assert!(!std::path::Path::new(&unix).exists());
}

#[test]
fn a_socket_that_cannot_be_bound_changes_nothing() {
    let agent = Agent::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = agent.fails(
        1,
        &[
            "start",
            "--name",
            "api",
            "--socket",
            "a=127.0.0.1:0",
            "--socket",
            &format!("b={addr}"),
            "--",
            "sleep",
            "1000",
        ],
    );
    assert!(
        err.contains("socket b: cannot listen on") && err.contains("os error 98"),
        "{err}"
    );
    assert!(agent.list().is_empty());
    // Refused at the edge: a readiness check of the shared address cannot tell new from old.
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "api",
            "--socket",
            "http=127.0.0.1:8123",
            "--ready-http",
            "http://127.0.0.1:8123/health",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert!(err.contains("per-instance check"), "{err}");
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "api",
            "--socket",
            "http=localhost:80",
            "--",
            "true",
        ],
    );
    assert!(err.contains("not an address to listen on"), "{err}");
    assert!(agent.list().is_empty());
}

/// A Python HTTP server on fd 3 that is ready (READY=1 on NOTIFY_SOCKET) `delay` seconds after
/// it starts, and on SIGTERM finishes the request in hand and exits: an app written for
/// zero-downtime deploys.
pub const SERVER: &str = include_str!("../fixtures/held_http_server.py");

/// One request on a new connection: true when it got a 200 within `limit`.
pub fn request(addr: &str, limit: Duration) -> bool {
    let Ok(sock) = addr.parse() else { return false };
    let Ok(mut c) = TcpStream::connect_timeout(&sock, limit) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(limit));
    let _ = c.set_write_timeout(Some(limit));
    if c.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.0 200")
}

/// Requests from `clients` threads, one connection each, until `stop` (or `cap` requests):
/// (sent, failed).
fn load(
    addr: String,
    clients: usize,
    cap: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let (addr, stop, sent, failed) =
                    (addr.clone(), stop.clone(), sent.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed)
                        && sent.fetch_add(1, Ordering::Relaxed) < cap
                    {
                        if !request(&addr, Duration::from_secs(1)) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        (
            sent.load(Ordering::Relaxed).min(cap),
            failed.load(Ordering::Relaxed),
        )
    })
}

fn start_server(agent: &Agent, name: &str, delay: &str, extra: &[&str]) -> String {
    let app = agent.path("server.py");
    std::fs::write(&app, SERVER).unwrap();
    let mut args = vec![
        "start",
        "--name",
        name,
        "--instances",
        "2",
        "--socket",
        "http=127.0.0.1:0",
        "--ready-notify",
        "--start-timeout",
        "20s",
        "--kill-timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", &app, delay]);
    agent.ok(&args);
    all_online(agent, name, 2);
    agent.describe(name)["sockets"][0]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn reload_under_load_fails_no_request_while_restart_does() {
    let agent = Agent::start();
    // Ready 1.5 s after spawn: a restart leaves nobody serving for longer than the clients
    // wait (1 s); a reload keeps the old instances serving until the new ones are ready.
    let addr = start_server(&agent, "web", "1.5", &[]);
    assert!(request(&addr, Duration::from_secs(2)));
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(addr.clone(), 4, 20_000, stop.clone());
    let before = rows(&agent, "web");
    for _ in 0..5 {
        agent.ok(&["reload", "web"]);
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = running.join().unwrap();
    assert!(sent >= 200, "only {sent} requests were made");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during 5 reloads"
    );
    let after = rows(&agent, "web");
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b["pid"], a["pid"], "every instance was replaced");
        assert_eq!(a["status"], "online");
    }
    let events = json_lines(&agent.ok(&[
        "events",
        "--no-follow",
        "--recent",
        "1000",
        "--json",
        "--kind",
        "reloading,reloaded",
    ]));
    assert_eq!(events.len(), 10);
    assert!(events.iter().all(|e| e["manual"] == true), "{events:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let running = load(addr.clone(), 4, 20_000, stop.clone());
    agent.ok(&["restart", "web"]);
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = running.join().unwrap();
    assert!(
        failed > 0,
        "restart ({sent} requests) should have failed some"
    );
}

#[test]
fn a_replacement_that_never_becomes_ready_leaves_the_old_one_serving() {
    let agent = Agent::start();
    let app = agent.path("server.py");
    std::fs::write(&app, SERVER).unwrap();
    // Ready (exec check) while the flag file is absent.
    let flag = agent.path("broken");
    agent.ok(&[
        "start",
        "--name",
        "one",
        "--socket",
        "http=127.0.0.1:0",
        "--ready-exec",
        &format!("test ! -e {flag}"),
        "--start-timeout",
        "1s",
        "--",
        "python3",
        &app,
        "0",
    ]);
    let pid = agent.wait_online("one", None);
    let addr = agent.describe("one")["sockets"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&flag, "").unwrap();
    let err = agent.fails(1, &["reload", "one"]);
    assert!(
        err.contains("one") && err.contains("not ready after 1s"),
        "{err}"
    );
    assert_eq!(agent.app("one")["pid"].as_u64(), Some(u64::from(pid)));
    assert_eq!(agent.status("one"), "online");
    assert!(
        request(&addr, Duration::from_secs(2)),
        "the old instance still serves"
    );
    assert_eq!(rows(&agent, "one").len(), 1);
    wait_until(
        "the replacement's processes gone",
        Duration::from_secs(10),
        || app_processes(&agent.agent_id(), 1) == vec![pid],
    );
    let events = json_lines(&agent.ok(&[
        "events",
        "--no-follow",
        "--recent",
        "100",
        "--json",
        "--kind",
        "reloaded",
    ]));
    assert!(
        events[0]["error"].as_str().unwrap().contains("not ready"),
        "{events:?}"
    );
    // Fixed: the reload goes through, with a new pid, and the socket stays the same.
    std::fs::remove_file(&flag).unwrap();
    agent.ok(&["reload", "one"]);
    let new = agent.wait_online("one", Some(pid));
    assert_ne!(new, pid);
    assert!(request(&addr, Duration::from_secs(2)));
    // The replacement lives in the instance's other slot: a new agent adopts it there.
    let mut agent = agent;
    agent.crash();
    agent.spawn();
    assert_eq!(agent.wait_online("one", None), new);
    assert_eq!(rows(&agent, "one").len(), 1);
    assert!(alive(new));
}

#[test]
fn one_instance_is_acted_on_alone_and_dependents_see_the_whole_app() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "db",
        "--instances",
        "2",
        "--",
        "sleep",
        "1000",
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
    let dbs = all_online(&agent, "db", 2);
    let web = agent.wait_online("web", None);
    agent.ok(&["restart", "db:1"]);
    let after = all_online(&agent, "db", 2);
    assert_eq!(after[0], dbs[0]);
    assert_ne!(after[1], dbs[1]);
    assert_eq!(
        agent.app("web")["pid"].as_u64(),
        Some(u64::from(web)),
        "web left alone"
    );
    agent.ok(&["stop", "db:0"]);
    assert_eq!(agent.status("web"), "online");
    // The whole app: its dependents stop first.
    let out = agent.ok(&["stop", "db"]);
    assert!(out.contains("stopped web (id 2) (depends on db)"), "{out}");
    // Starting web starts every instance of db first.
    agent.ok(&["start", "web"]);
    all_online(&agent, "db", 2);
    agent.wait_online("web", None);
}
