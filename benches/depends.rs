//! Dependency-ordered start benchmark: a real agent (the real release binary) in a temporary
//! home, driven through the real CLI.
//!
//! Run with `cargo bench --bench depends`. It builds an app file of 20 apps in 4 levels of 5;
//! each app of a level depends on two apps of the level below (a lattice, so every level
//! waits for the one before it), and each app becomes ready 100 ms after it is spawned (it
//! prints `listening` after `sleep 0.1`, and its readiness check is that log line). It then
//! times `grpm start FILE`, which answers once every app is ready, over several runs (each
//! run deletes the apps afterwards), and reads the agent's events to split the time into the
//! critical path (4 × 100 ms) and grpm's overhead. Target: all online within
//! 4 × 100 ms + 10 % = 440 ms. Missed targets are reported, never fatal.

mod common;

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use common::{ms, print_table, Agent, Row, Stats, BIN};
use serde_json::Value;

const LEVELS: usize = 4;
const WIDTH: usize = 5;
const READY_AFTER: Duration = Duration::from_millis(100);
const RUNS: usize = 10;
const WARMUP_RUNS: usize = 2;
const TARGET_MS: f64 = 440.0;

fn name(level: usize, i: usize) -> String {
    format!("l{level}-{i}")
}

/// The app file: levels in reverse (dependents first), so the file's order is no help.
fn app_file() -> String {
    let mut text = String::new();
    for level in (0..LEVELS).rev() {
        for i in 0..WIDTH {
            let deps: Vec<String> = if level == 0 {
                Vec::new()
            } else {
                [i, (i + 1) % WIDTH]
                    .iter()
                    .map(|j| format!("{:?}", name(level - 1, *j)))
                    .collect()
            };
            text.push_str(&format!(
                "[[app]]\nname = {:?}\ncmd = [\"sh\", \"-c\", \"sleep {}; echo listening; exec sleep 1000\"]\ndepends_on = [{}]\n[app.ready]\nlog = \"listening\"\nperiod = \"100ms\"\n\n",
                name(level, i),
                READY_AFTER.as_secs_f64(),
                deps.join(", ")
            ));
        }
    }
    text
}

fn main() {
    println!("grpm dependency-order benchmark ({BIN})");
    println!(
        "machine: {} CPUs available",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let agent = Agent::start("depends", &[]);
    let file = agent.dir.path().join("graph.toml");
    fs::write(&file, app_file()).expect("cannot write the app file");
    let file = file.to_string_lossy().into_owned();
    println!(
        "\n{} apps in {LEVELS} levels of {WIDTH}, each ready {} ms after spawn; {RUNS} runs \
         after {WARMUP_RUNS} warm-up runs",
        LEVELS * WIDTH,
        READY_AFTER.as_millis()
    );

    let mut walls = Vec::new();
    let mut spans = Vec::new();
    let mut own = Vec::new();
    let mut gaps = Vec::new();
    for run in 0..WARMUP_RUNS + RUNS {
        let from = last_seq(&agent);
        let t0 = Instant::now();
        agent.ok(&["start", &file]);
        let wall = t0.elapsed();
        let apps = list(&agent);
        let online = apps.iter().filter(|a| a["status"] == "online").count();
        assert_eq!(
            online,
            LEVELS * WIDTH,
            "`grpm start FILE` answered with {online} apps online: {apps:?}"
        );
        let ev = events(&agent, from);
        let span = span(&ev);
        if run >= WARMUP_RUNS {
            walls.push(wall);
            spans.push(span);
            own.extend(ready_delays(&ev));
            gaps.extend(handoffs(&ev));
        }
        agent.ok(&["delete", "all"]);
    }
    println!("\n`grpm start FILE` wall time (CLI spawn to exit, every app ready):");
    let wall = Stats::of(&walls);
    wall.print(1);
    println!("first `starting` event to last `ready` event, in the agent:");
    let inside = Stats::of(&spans);
    inside.print(1);
    println!(
        "each app's own spawn-to-ready time (the `ready` event's delay: sh, sleep, the log line):"
    );
    let own = Stats::of(&own);
    own.print(1);
    println!(
        "a dependency's `ready` event to its dependent's `starting` event (grpm's hand-over):"
    );
    let gaps = Stats::of(&gaps);
    gaps.print(1);
    let ideal = ms(READY_AFTER) * LEVELS as f64;
    println!(
        "critical path {ideal} ms; median overhead {:.1} ms ({:.1} ms per level)",
        ms(wall.median) - ideal,
        (ms(wall.median) - ideal) / LEVELS as f64
    );
    print_table(
        &[
            Row::at_most(
                "start FILE, 20 apps/4 levels, median",
                ms(wall.median),
                TARGET_MS,
                "ms",
            ),
            Row::at_most(
                "start FILE, 20 apps/4 levels, max",
                ms(wall.max),
                TARGET_MS,
                "ms",
            ),
            Row::info(
                "agent: first starting to last ready",
                ms(inside.median),
                "ms",
            ),
            Row::info("app: spawn to ready, median", ms(own.median), "ms"),
            Row::info("ready -> dependent starting, median", ms(gaps.median), "ms"),
            Row::info("same, max", ms(gaps.max), "ms"),
        ],
        1,
        12,
    );
    agent.shutdown();
}

fn list(agent: &Agent) -> Vec<Value> {
    let out = agent.ok(&["list", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .expect("`grpm list --json` is not a JSON array")
}

fn events(agent: &Agent, from: u64) -> Vec<Value> {
    let out = agent.ok(&[
        "events",
        "--json",
        "--no-follow",
        "--from",
        &from.to_string(),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn last_seq(agent: &Agent) -> u64 {
    events(agent, 0)
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0)
}

/// From the first `starting` to the last `ready` event, by their timestamps.
fn span(ev: &[Value]) -> Duration {
    let at = |kind: &str| -> Vec<u64> {
        ev.iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["at_unix_ms"].as_u64())
            .collect()
    };
    let (starts, readies) = (at("starting"), at("ready"));
    match (starts.iter().min(), readies.iter().max()) {
        (Some(a), Some(b)) => Duration::from_millis(b.saturating_sub(*a)),
        _ => panic!("no starting/ready events: {ev:?}"),
    }
}

/// The time from spawn to ready each `ready` event reports.
fn ready_delays(ev: &[Value]) -> Vec<Duration> {
    ev.iter()
        .filter(|e| e["kind"] == "ready")
        .filter_map(|e| e["delay_ms"].as_u64())
        .map(Duration::from_millis)
        .collect()
}

/// For each app above the first level: from the `ready` event of the later of its two
/// dependencies to its own `starting` event.
fn handoffs(ev: &[Value]) -> Vec<Duration> {
    let at = |app: &str, kind: &str| -> Option<u64> {
        ev.iter()
            .find(|e| e["app"] == app && e["kind"] == kind)
            .and_then(|e| e["at_unix_ms"].as_u64())
    };
    let mut out = Vec::new();
    for level in 1..LEVELS {
        for i in 0..WIDTH {
            let ready = [i, (i + 1) % WIDTH]
                .iter()
                .filter_map(|j| at(&name(level - 1, *j), "ready"))
                .max();
            if let (Some(r), Some(s)) = (ready, at(&name(level, i), "starting")) {
                out.push(Duration::from_millis(s.saturating_sub(r)));
            }
        }
    }
    out
}
