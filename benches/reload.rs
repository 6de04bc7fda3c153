//! Reload benchmark: a real agent (the real release binary) in a temporary home, real apps on a
//! socket the agent holds, and a loopback load from this process.
//!
//! Run with `cargo bench --bench reload`. It measures:
//!
//! 1. a Python HTTP server (2 instances on one held socket, ready by `notify` 1.2 s after it
//!    starts, finishing its request in hand on SIGTERM) under a load of 4 clients, each sending
//!    one request per new connection and failing a request that takes over 1 s: the requests
//!    that fail during 20 `grpm reload`s, and during 20 `grpm restart`s for contrast; and the
//!    latency of the requests (median, p99) with no reload and during the reloads;
//! 2. `grpm reload` of a 4-instance app whose instances are ready 200 ms after their spawn (a
//!    shell that sleeps 0.2 s and prints the line its `log` check waits for), against
//!    4 × (200 ms + the time an old instance takes to stop, from its `stopping` to its
//!    `stopped` event) + 10 %.
//!
//! Missed targets are reported, never fatal.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use common::{ms, print_table, Agent, Row, Stats};

/// The same server as the zero-downtime test's (tests/integration/instances.rs).
const SERVER: &str = include_str!("../tests/fixtures/held_http_server.py");

const CLIENTS: usize = 4;
const LIMIT: Duration = Duration::from_secs(1);
const ROUNDS: usize = 20;

/// One request on a new connection: its latency, or `None` when it failed or took over `LIMIT`.
fn request(addr: &std::net::SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let mut c = TcpStream::connect_timeout(addr, LIMIT).ok()?;
    c.set_read_timeout(Some(LIMIT)).ok()?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).ok()?;
    (buf.starts_with(b"HTTP/1.0 200") && t.elapsed() <= LIMIT).then(|| t.elapsed())
}

/// What a load saw: every successful request's latency, and the failures.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    failed: u64,
}

/// Runs the load while `during` runs; returns what it saw.
fn under_load(addr: &str, during: impl FnOnce()) -> Seen {
    let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || {
                let mut mine = Seen::default();
                while !stop.load(Ordering::Relaxed) {
                    match request(&addr) {
                        Some(d) => mine.latencies.push(d),
                        None => mine.failed += 1,
                    }
                }
                let mut all = seen.lock().unwrap();
                all.latencies.extend(mine.latencies);
                all.failed += mine.failed;
            })
        })
        .collect();
    during();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a load client panicked");
    }
    Arc::try_unwrap(seen)
        .ok()
        .expect("clients are done")
        .into_inner()
        .unwrap()
}

fn describe(agent: &Agent, target: &str) -> serde_json::Value {
    let out = agent.ok(&["describe", target, "--json"]);
    serde_json::from_slice(&out.stdout).expect("describe --json")
}

fn events(agent: &Agent, kinds: &str) -> Vec<serde_json::Value> {
    let out = agent.ok(&[
        "events",
        "--no-follow",
        "--recent",
        "10000",
        "--json",
        "--kind",
        kinds,
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn main() {
    let mut rows = Vec::new();

    // 1. Failed requests and latency under load.
    let agent = Agent::start("reload", &[]);
    let app = agent.dir.path().join("server.py");
    std::fs::write(&app, SERVER).expect("write the server");
    let app = app.to_string_lossy().into_owned();
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--instances",
        "2",
        "--socket",
        "http=127.0.0.1:0",
        "--ready-notify",
        "--kill-timeout",
        "3s",
        "--",
        "python3",
        &app,
        "1.2",
    ]);
    let addr = describe(&agent, "web")[0]["sockets"][0]["address"]
        .as_str()
        .expect("the held socket's address")
        .to_string();
    println!("web on {addr}: 2 instances, ready 1.2 s after spawn; {CLIENTS} clients");

    let quiet = under_load(&addr, || thread::sleep(Duration::from_secs(10)));
    let q = Stats::of(&quiet.latencies);
    println!(
        "no reload, 10 s: {} requests, {} failed",
        quiet.latencies.len() as u64 + quiet.failed,
        quiet.failed
    );
    q.print(2);

    let t = Instant::now();
    let reloading = under_load(&addr, || {
        for _ in 0..ROUNDS {
            agent.ok(&["reload", "web"]);
        }
    });
    let r = Stats::of(&reloading.latencies);
    println!(
        "{ROUNDS} reloads in {:.1} s: {} requests, {} failed",
        t.elapsed().as_secs_f64(),
        reloading.latencies.len() as u64 + reloading.failed,
        reloading.failed
    );
    r.print(2);

    let t = Instant::now();
    let restarting = under_load(&addr, || {
        for _ in 0..ROUNDS {
            agent.ok(&["restart", "web"]);
        }
    });
    println!(
        "{ROUNDS} restarts in {:.1} s: {} requests, {} failed",
        t.elapsed().as_secs_f64(),
        restarting.latencies.len() as u64 + restarting.failed,
        restarting.failed
    );
    rows.push(Row::at_most(
        format!("failed requests, {ROUNDS} reloads"),
        reloading.failed as f64,
        0.0,
        "",
    ));
    rows.push(Row::info(
        format!("failed requests, {ROUNDS} restarts"),
        restarting.failed as f64,
        "",
    ));
    rows.push(Row::info("latency p99, no reload", ms(q.p99), "ms"));
    rows.push(Row::at_most(
        "latency p99, during reloads",
        ms(r.p99),
        (2.0 * ms(q.p99) * 100.0).round() / 100.0,
        "ms",
    ));
    rows.push(Row::info("latency median, no reload", ms(q.median), "ms"));
    rows.push(Row::info(
        "latency median, during reloads",
        ms(r.median),
        "ms",
    ));
    agent.shutdown();

    // 2. Reload of 4 instances ready 200 ms after spawn.
    let agent = Agent::start("reload-4", &[]);
    agent.ok(&[
        "start",
        "--name",
        "four",
        "--instances",
        "4",
        "--socket",
        "http=127.0.0.1:0",
        "--ready-log",
        "^ready$",
        "--",
        "sh",
        "-c",
        "sleep 0.2; echo ready; exec sleep 100000",
    ]);
    let mut totals = Vec::new();
    let mut stops = Vec::new();
    let mut readies = Vec::new();
    for _ in 0..5 {
        let before = events(&agent, "stopping,stopped,ready").len();
        let t = Instant::now();
        agent.ok(&["reload", "four"]);
        totals.push(t.elapsed());
        let all = events(&agent, "stopping,stopped,ready");
        let mut stopping: Vec<(u64, u64)> = Vec::new();
        for e in &all[before..] {
            let (at, instance) = (
                e["at_unix_ms"].as_u64().unwrap_or(0),
                e["instance"].as_u64().unwrap_or(0),
            );
            match e["kind"].as_str() {
                Some("stopping") => stopping.push((instance, at)),
                Some("stopped") => {
                    if let Some(i) = stopping.iter().position(|(k, _)| *k == instance) {
                        let (_, from) = stopping.remove(i);
                        stops.push(Duration::from_millis(at.saturating_sub(from)));
                    }
                }
                Some("ready") => {
                    readies.push(Duration::from_millis(e["delay_ms"].as_u64().unwrap_or(0)))
                }
                _ => {}
            }
        }
    }
    let total = Stats::of(&totals);
    let stop = Stats::of(&stops);
    let ready = Stats::of(&readies);
    println!("\nreload of 4 instances ready 200 ms after spawn, 5 runs:");
    total.print(1);
    println!("  an old instance's stop (stopping -> stopped event):");
    stop.print(1);
    println!("  a replacement's spawn -> ready (ready event's delay):");
    ready.print(1);
    let bound = 4.0 * (200.0 + ms(stop.mean)) * 1.1;
    rows.push(Row::at_most(
        "reload, 4 instances, median",
        ms(total.median),
        (bound * 10.0).round() / 10.0,
        "ms",
    ));
    rows.push(Row::info(
        "  old instance's stop, mean",
        ms(stop.mean),
        "ms",
    ));
    agent.shutdown();

    print_table(&rows, 1, 12);
}
