//! Keeper benchmark (issue #14): real agents under their keeper (the release binary) in
//! temporary homes, driven through the real CLI.
//!
//! Run with `cargo bench --bench keeper`. It measures:
//!
//! 1. the keeper's RSS and CPU while idle (5 s, one app running);
//! 2. `kill -9` of the agent → the next agent answering `list` with 100 apps adopted (same
//!    pids, online), 5 times;
//! 3. `grpm agent upgrade` with 100 apps, from the command to the new agent answering (the
//!    command returns once `list` is answered), 5 times;
//! 4. bytes lost across 10 agent kills while an app writes 1 GiB of 64-byte lines.

mod common;

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use common::{cpu_time, ms, print_table, rss_kib, Agent, Row, Stats, BIN};
use serde_json::Value;

const APPS: usize = 100;
const RUNS: usize = 5;
const KILLS: usize = 10;
const GIB: u64 = 1 << 30;

fn agent_pid(a: &Agent) -> u32 {
    fs::read_to_string(a.home.join("agent.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// (pid) of each app, when all are online.
fn online_pids(a: &Agent) -> Option<Vec<u64>> {
    let out = a.cmd().args(["list", "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let apps = v.as_array()?;
    apps.iter()
        .map(|a| {
            (a["status"] == "online")
                .then(|| a["pid"].as_u64())
                .flatten()
        })
        .collect()
}

/// Waits for an agent other than `old` whose `list` shows `want` online; the time it took.
fn wait_adopted(a: &Agent, old: u32, want: &[u64], t0: Instant) -> Duration {
    let deadline = t0 + Duration::from_secs(30);
    loop {
        let pid = agent_pid(a);
        if pid != old
            && pid != 0
            && std::os::unix::net::UnixStream::connect(a.socket()).is_ok()
            && online_pids(a).as_deref() == Some(want)
        {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no new agent with every app adopted"
        );
        thread::sleep(Duration::from_micros(500));
    }
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    println!("grpm keeper benchmark ({BIN})");
    let mut table = Vec::new();

    // 1. Idle keeper.
    {
        let a = Agent::start_kept("idle", &[]);
        a.ok(&["start", "--name", "calm", "--", "sleep", "1000"]);
        thread::sleep(Duration::from_secs(1));
        let keeper = a.pid();
        let cpu0 = cpu_time(keeper);
        thread::sleep(Duration::from_secs(5));
        let cpu = cpu_time(keeper) - cpu0;
        let rss = rss_kib(keeper) as f64 / 1024.0;
        let anon = status_kib(keeper, "RssAnon:") as f64 / 1024.0;
        let file = status_kib(keeper, "RssFile:") as f64 / 1024.0;
        println!(
            "\n[idle keeper] RSS {rss:.2} MiB (anonymous {anon:.2}, pages of the binary {file:.2}), \
             CPU over 5 s: {cpu:?}"
        );
        table.push(Row::at_most("keeper RSS, idle", rss, 1.5, "MiB"));
        table.push(Row::at_most(
            "keeper anonymous memory, idle",
            anon,
            1.5,
            "MiB",
        ));
        table.push(Row::at_most(
            "keeper CPU, idle (5 s)",
            cpu.as_secs_f64() / 5.0 * 100.0,
            0.0,
            "%",
        ));
        a.shutdown();
    }

    // 2 and 3 share an agent with 100 apps.
    let a = Agent::start_kept("hundred", &[]);
    let mut toml = String::new();
    for i in 0..APPS {
        toml.push_str(&format!(
            "[[app]]\nname = \"s{i}\"\ncmd = [\"sleep\", \"100000\"]\n\n"
        ));
    }
    let file = a.dir.path().join("apps.toml");
    fs::write(&file, toml).unwrap();
    a.ok(&["start", file.to_str().unwrap()]);
    let want = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(p) = online_pids(&a).filter(|p| p.len() == APPS) {
                break p;
            }
            assert!(Instant::now() < deadline, "100 apps never online");
            thread::sleep(Duration::from_millis(50));
        }
    };

    let mut kills = Vec::new();
    for _ in 0..RUNS {
        let old = agent_pid(&a);
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        kills.push(wait_adopted(&a, old, &want, t0));
        // Past the keeper's backoff window, so every run starts at once.
        thread::sleep(Duration::from_secs(11));
    }
    println!("\n[kill -9 → list with {APPS} apps adopted]");
    let k = Stats::of(&kills);
    k.print(1);
    table.push(Row::at_most(
        format!("kill -9 → list, {APPS} apps adopted (median)"),
        ms(k.median),
        100.0,
        "ms",
    ));

    let mut ups = Vec::new();
    for _ in 0..RUNS {
        let old = agent_pid(&a);
        let t0 = Instant::now();
        a.ok(&["agent", "upgrade"]);
        let took = t0.elapsed();
        assert_eq!(online_pids(&a).as_deref(), Some(&want[..]), "apps changed");
        assert_ne!(agent_pid(&a), old);
        ups.push(took);
    }
    println!("\n[grpm agent upgrade with {APPS} apps: command → new agent answering]");
    let u = Stats::of(&ups);
    u.print(1);
    table.push(Row::at_most(
        format!("agent upgrade, {APPS} apps (median)"),
        ms(u.median),
        200.0,
        "ms",
    ));
    a.shutdown();

    // 4. 1 GiB through 10 agent kills.
    let a = Agent::start_kept("gib", &[]);
    a.ok(&[
        "start",
        "--name",
        "gib",
        "--no-autorestart",
        "--log-max-size",
        "2G",
        "--",
        "sh",
        "-c",
        "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 1073741824",
    ]);
    let log = a.home.join("logs/1-gib.out.log");
    let size = || fs::metadata(&log).map_or(0, |m| m.len());
    let mut done = 0;
    for k in 0..KILLS {
        // Spread the kills over the write.
        let at = GIB * (k as u64 + 1) / (KILLS as u64 + 2);
        while size() < at {
            thread::sleep(Duration::from_millis(1));
        }
        if size() >= GIB {
            break;
        }
        let old = agent_pid(&a);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        done += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent_pid(&a) == old || std::os::unix::net::UnixStream::connect(a.socket()).is_err() {
            assert!(Instant::now() < deadline, "no new agent");
            thread::sleep(Duration::from_millis(1));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while size() < GIB && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(500));
    let got = size();
    let lost = GIB.saturating_sub(got);
    let extra = got.saturating_sub(GIB);
    // Every line whole and in place: 64-byte lines, each the same.
    let whole = {
        let data = fs::read(&log).unwrap_or_default();
        data.chunks(64)
            .all(|c| c.len() == 64 && c[63] == b'\n' && c[..63].iter().all(|&b| b == b'x'))
    };
    println!(
        "\n[1 GiB through {done} agent kills] captured {got} bytes: lost {lost}, extra {extra}, \
         every line whole: {whole}"
    );
    table.push(Row::at_most(
        format!("bytes lost across {done} agent kills, 1 GiB"),
        (lost + extra) as f64,
        0.0,
        "bytes",
    ));
    assert!(whole, "lines were cut or mixed");
    a.shutdown();

    print_table(&table, 2, 14);
}
