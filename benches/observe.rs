//! Observe benchmark (issue #12): what seeing what runs costs. Real agents (the release
//! binary) in temporary homes, real `sleep` processes. Run with `cargo bench --bench observe`.
//!
//! 1. Tree sampling: the agent's CPU over a 30 s window with 1,000 apps online, sampling
//!    every 2 s (the default), against the same with `--sample-interval 1h` (no sampling in
//!    the window): the difference is what sampling costs.
//! 2. `/metrics` with 1,000 apps: the wall time of a scrape (connect, GET, whole body), and the
//!    agent's RSS before and after 100 scrapes.
//! 3. `grpm monit` with 200 apps online and 10 more in a crash loop, in a real terminal (tmux)
//!    for 15 s: frames drawn per second and the CPU of the monit process.
//!
//! Missed targets are reported, never fatal.

mod common;

use std::{
    fs,
    io::{Read, Write},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{cpu_time, ms, print_table, rss_kib, Agent, Row, Stats, BIN};

const APPS: usize = 1_000;
const SAMPLE_WINDOW: Duration = Duration::from_secs(30);
const SCRAPES: usize = 100;
const MONIT_APPS: usize = 200;
const MONIT_CRASHING: usize = 10;
const MONIT_RUN: Duration = Duration::from_secs(15);

const TARGET_SAMPLING_PERCENT: f64 = 1.0;
const TARGET_SCRAPE_MS: f64 = 20.0;
const TARGET_SCRAPE_RSS_MIB: f64 = 2.0;
const TARGET_MONIT_FPS: f64 = 5.0;
const TARGET_MONIT_CPU_PERCENT: f64 = 5.0;

fn main() {
    println!("grpm observe benchmark ({BIN})");
    let mut table = Vec::new();

    // Phase 1: sampling cost, with and without sampling in the window.
    let mut cpu = Vec::new();
    for (label, interval) in [("sampled", "2s"), ("unsampled", "1h")] {
        let agent = Agent::start(label, &["--sample-interval", interval]);
        start_many(&agent, APPS, "sleep 1000");
        // Let the start settle (and the first samples happen).
        thread::sleep(Duration::from_secs(5));
        let before = cpu_time(agent.pid()).as_secs_f64();
        thread::sleep(SAMPLE_WINDOW);
        let used = cpu_time(agent.pid()).as_secs_f64() - before;
        println!(
            "\n[1] {label} agent (--sample-interval {interval}), {APPS} apps online: {:.3} s of \
             CPU in {:?} ({:.2} % of one core)",
            used,
            SAMPLE_WINDOW,
            100.0 * used / SAMPLE_WINDOW.as_secs_f64()
        );
        cpu.push(used);
        agent.shutdown();
    }
    let sampling = 100.0 * (cpu[0] - cpu[1]).max(0.0) / SAMPLE_WINDOW.as_secs_f64();
    table.push(Row::at_most(
        "tree sampling, 1,000 apps, every 2 s (% of one core)",
        sampling,
        TARGET_SAMPLING_PERCENT,
        "%",
    ));

    // Phase 2: /metrics with 1,000 apps.
    {
        let agent = Agent::start("metrics", &["--metrics-listen", "127.0.0.1:0"]);
        start_many(&agent, APPS, "sleep 1000");
        thread::sleep(Duration::from_secs(3));
        let addr = fs::read_to_string(agent.home.join("metrics.addr"))
            .expect("no metrics.addr")
            .trim()
            .to_string();
        // One scrape first: the families' first allocation is part of "growth".
        let rss0 = rss_kib(agent.pid());
        let first = scrape(&addr);
        assert!(
            first.contains("grpm_app_up{app=\"app-1000\""),
            "the scrape lacks apps"
        );
        let bytes = first.len();
        let times: Vec<Duration> = (0..SCRAPES)
            .map(|_| {
                let t = Instant::now();
                scrape(&addr);
                t.elapsed()
            })
            .collect();
        let rss1 = rss_kib(agent.pid());
        let s = Stats::of(&times);
        println!("\n[2] /metrics with {APPS} apps ({bytes} bytes), {SCRAPES} scrapes:");
        s.print(2);
        println!(
            "    agent VmRSS {rss0} KiB before the first scrape, {rss1} KiB after {} ({:+} KiB)",
            SCRAPES + 1,
            rss1 as i64 - rss0 as i64
        );
        table.push(Row::at_most(
            "/metrics scrape, 1,000 apps, median",
            ms(s.median),
            TARGET_SCRAPE_MS,
            "ms",
        ));
        table.push(Row::info(
            "/metrics scrape, 1,000 apps, p99",
            ms(s.p99),
            "ms",
        ));
        table.push(Row::at_most(
            "agent RSS growth over 101 scrapes",
            (rss1 as f64 - rss0 as f64) / 1024.0,
            TARGET_SCRAPE_RSS_MIB,
            "MiB",
        ));
        agent.shutdown();
    }

    // Phase 3: monit with 200 apps and a crash loop of 10.
    {
        let agent = Agent::start("monit", &[]);
        start_many(&agent, MONIT_APPS, "sleep 1000");
        for i in 0..MONIT_CRASHING {
            let name = format!("crash-{i}");
            agent.ok(&[
                "start",
                "--name",
                &name,
                "--restart-delay",
                "100ms",
                "--restart-delay-max",
                "200ms",
                "--max-restarts",
                "100000",
                "--",
                "sh",
                "-c",
                "echo up; sleep 0.2; exit 1",
            ]);
        }
        let socket = agent.dir.path().join("tmux.sock");
        let frames_file = agent.dir.path().join("frames");
        let tmux = |args: &[&str]| {
            let mut c = Command::new("tmux");
            c.arg("-S").arg(&socket).args(args);
            c
        };
        let mut new = tmux(&["new-session", "-d", "-s", "monit", "-x", "160", "-y", "50"]);
        new.env("GRPM_HOME", &agent.home)
            .env("HOME", &agent.home)
            .env("TERM", "xterm-256color")
            .arg(format!(
                "exec {BIN} monit --frames-file {}",
                frames_file.display()
            ));
        let out = new.output().expect("tmux is required");
        assert!(out.status.success(), "tmux: {out:?}");
        let pane = tmux(&["display", "-p", "-t", "monit", "#{pane_pid}"])
            .output()
            .expect("tmux display");
        let pid: u32 = String::from_utf8_lossy(&pane.stdout)
            .trim()
            .parse()
            .expect("the pane's pid");
        thread::sleep(MONIT_RUN);
        let used = cpu_time(pid).as_secs_f64();
        let _ = tmux(&["send-keys", "-t", "monit", "q"]).output();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !frames_file.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = tmux(&["kill-server"]).output();
        let text = fs::read_to_string(&frames_file).expect("monit wrote no frames file");
        let mut parts = text.split_whitespace();
        let frames: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let secs: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(1.0);
        println!(
            "\n[3] grpm monit, {MONIT_APPS} apps + {MONIT_CRASHING} crash-looping, {secs:.1} s \
             in tmux (160x50): {frames} frames ({:.1}/s), {used:.2} s of CPU ({:.2} % of one \
             core)",
            frames / secs,
            100.0 * used / secs
        );
        table.push(Row::info(
            "monit frames per second, 200 apps + crash loop of 10",
            frames / secs,
            "/s",
        ));
        if frames / secs < TARGET_MONIT_FPS {
            println!("    (below the {TARGET_MONIT_FPS} frames/s target)");
        }
        table.push(Row::at_most(
            "monit CPU, 200 apps + crash loop of 10 (% of one core)",
            100.0 * used / secs,
            TARGET_MONIT_CPU_PERCENT,
            "%",
        ));
        agent.shutdown();
    }

    print_table(&table, 2, 14);
}

/// Starts `n` apps `app-0001`... running `cmd` from one app file; waits until all are online.
fn start_many(agent: &Agent, n: usize, cmd: &str) {
    let file = agent.dir.path().join("apps.toml");
    let mut text = String::new();
    for i in 1..=n {
        text.push_str(&format!(
            "[[app]]\nname = \"app-{i:04}\"\ncmd = {cmd:?}\n\n"
        ));
    }
    fs::write(&file, text).expect("cannot write the app file");
    let out = agent
        .cmd()
        .arg("start")
        .arg(&file)
        .output()
        .expect("cannot run grpm start");
    agent.check("start FILE", &out);
}

/// One scrape on a fresh connection; the body.
fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("cannot connect to /metrics");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("cannot send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("cannot read the answer");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200"), "scrape failed: {raw:.200}");
    raw
}
