//! Log capture benchmark: how fast the agent moves an app's output to disk, against the same
//! command writing straight to a file (`sh -c 'CMD > FILE'`, the physical limit here), with
//! the agent's CPU time and memory.
//!
//! Run with `cargo bench --bench logs`. For each generator (1 GiB of zeros from
//! `head -c 1G /dev/zero`, with no newline at all; and 1 GiB of 64-byte lines from
//! `yes | head -c 1G`), it alternates runs of:
//!
//! - **direct**: `sh -c 'CMD > FILE'`, timed from spawn to exit (the file is complete then);
//! - **grpm**: `grpm start --name N --no-autorestart --log-max-size 2G -- sh -c CMD`, timed
//!   from issuing the command until the app's log file holds 1 GiB (polled every 2 ms), with
//!   the agent's CPU time (utime + stime from /proc) and peak RSS (VmHWM, reset before the run
//!   through /proc/PID/clear_refs) over the run.
//!
//! Then the line generator once more with the default rotation (10 MiB files, 5 kept: the
//! logical end, `X.offset` + the current file's size, is polled), and once with `--log-time`.
//! Files are removed after each run. Missed targets are reported, never fatal.

mod common;

use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{ms, print_table, Agent, Row, Stats, BIN};

const SIZE: u64 = 1 << 30;
const RUNS: usize = 3;
const LIMIT: Duration = Duration::from_secs(300);
const TARGET_RATIO: f64 = 80.0;
/// "RSS stays within a few MiB of idle".
const TARGET_RSS_GROWTH_MIB: f64 = 4.0;

struct Gen {
    label: &'static str,
    short: &'static str,
    cmd: String,
}

fn main() {
    println!("grpm log capture benchmark ({BIN})");
    println!(
        "machine: {} CPUs available",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let line = "x".repeat(63);
    let gens = [
        Gen {
            label: "zeros (no newline)",
            short: "zeros",
            cmd: format!("head -c {SIZE} /dev/zero"),
        },
        Gen {
            label: "64-byte lines",
            short: "lines",
            cmd: format!("yes {line} | head -c {SIZE}"),
        },
    ];
    let agent = Agent::start("logs", &[]);
    agent.ok(&["list"]);
    let pid = agent.pid();
    let idle = status_kib(pid, "VmRSS");
    println!("\nidle agent (pid {pid}): VmRSS {:.2} MiB", mib(idle));
    let mut table = Vec::new();
    let mut worst_growth: f64 = 0.0;
    let mut app = 0;
    for g in &gens {
        println!("\n[{}] `{}`", g.label, g.cmd);
        let (mut direct, mut grpm, mut cpu, mut peak) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for run in 0..RUNS {
            let d = direct_run(&agent, &g.cmd);
            app += 1;
            let r = grpm_run(
                &agent,
                app,
                &format!("{}-{run}", g.short),
                &g.cmd,
                &[],
                SIZE,
            );
            println!(
                "    run {}: direct {:.0} ms = {:.0} MB/s, grpm {:.0} ms = {:.0} MB/s, agent CPU {:.2} s, agent peak RSS {:.2} MiB",
                run + 1,
                ms(d),
                mbps(SIZE, d),
                ms(r.took),
                mbps(SIZE, r.took),
                r.cpu,
                mib(r.peak_kib)
            );
            direct.push(d);
            grpm.push(r.took);
            cpu.push(r.cpu);
            peak = peak.max(r.peak_kib);
        }
        println!("    direct:");
        Stats::of(&direct).print(0);
        println!("    grpm:");
        Stats::of(&grpm).print(0);
        let (d, r) = (Stats::of(&direct).median, Stats::of(&grpm).median);
        let c = median_f(&cpu);
        let ratio = 100.0 * d.as_secs_f64() / r.as_secs_f64();
        println!(
            "    median: direct {:.0} MB/s, grpm {:.0} MB/s = {ratio:.1} % of direct; agent CPU {c:.2} s ({:.0} % of one core)",
            mbps(SIZE, d),
            mbps(SIZE, r),
            100.0 * c / r.as_secs_f64()
        );
        worst_growth = worst_growth.max(mib(peak) - mib(idle));
        table.push(Row::info(
            format!("{}: direct", g.short),
            mbps(SIZE, d),
            "MB/s",
        ));
        table.push(Row::info(
            format!("{}: through grpm", g.short),
            mbps(SIZE, r),
            "MB/s",
        ));
        table.push(Row {
            at_least: true,
            ..Row::at_most(
                format!("{}: grpm / direct", g.short),
                ratio,
                TARGET_RATIO,
                "%",
            )
        });
        table.push(Row::info(format!("{}: agent CPU per GiB", g.short), c, "s"));
    }

    let lines = &gens[1];
    println!("\n[64-byte lines, default rotation: 10 MiB files, 5 kept]");
    app += 1;
    let r = grpm_run(
        &agent,
        app,
        "rotated",
        &lines.cmd,
        &["--log-max-size", "10M"],
        SIZE,
    );
    println!(
        "    grpm {:.0} MB/s, agent CPU {:.2} s, peak RSS {:.2} MiB",
        mbps(SIZE, r.took),
        r.cpu,
        mib(r.peak_kib)
    );
    worst_growth = worst_growth.max(mib(r.peak_kib) - mib(idle));
    table.push(Row::info(
        "lines, rotating every 10 MiB",
        mbps(SIZE, r.took),
        "MB/s",
    ));

    println!("\n[64-byte lines, --log-time]");
    app += 1;
    // Each 64-byte line gets a 24-byte timestamp and a space.
    let stamped = SIZE + SIZE / 64 * 25;
    let r = grpm_run(
        &agent,
        app,
        "stamped",
        &lines.cmd,
        &["--log-time", "--log-max-size", "2G"],
        stamped,
    );
    println!(
        "    grpm {:.0} MB/s of app output, agent CPU {:.2} s, peak RSS {:.2} MiB",
        mbps(SIZE, r.took),
        r.cpu,
        mib(r.peak_kib)
    );
    worst_growth = worst_growth.max(mib(r.peak_kib) - mib(idle));
    table.push(Row::info("lines, --log-time", mbps(SIZE, r.took), "MB/s"));

    let after = status_kib(pid, "VmRSS");
    println!(
        "\nagent VmRSS after: {:.2} MiB (idle {:.2} MiB)",
        mib(after),
        mib(idle)
    );
    table.push(Row::info("agent RSS, idle", mib(idle), "MiB"));
    table.push(Row::at_most(
        "agent peak RSS above idle, any run",
        worst_growth,
        TARGET_RSS_GROWTH_MIB,
        "MiB",
    ));
    table.push(Row::info("agent RSS after the runs", mib(after), "MiB"));
    print_table(&table, 1, 12);
    agent.shutdown();
}

/// `sh -c 'CMD > FILE'`: spawn to exit.
fn direct_run(agent: &Agent, cmd: &str) -> Duration {
    let file = agent.dir.path().join("direct.out");
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{cmd} > {}", file.display()))
        .status()
        .expect("cannot run sh");
    let took = t.elapsed();
    assert!(status.success(), "`{cmd} > file` failed");
    let len = fs::metadata(&file).map_or(0, |m| m.len());
    assert_eq!(len, SIZE, "the direct run wrote {len} bytes");
    let _ = fs::remove_file(&file);
    took
}

struct GrpmRun {
    took: Duration,
    cpu: f64,
    peak_kib: u64,
}

/// Starts the app and waits until `want` bytes of its stdout are logged (current file, or
/// logical end when rotating); then deletes it with its logs.
fn grpm_run(agent: &Agent, id: u32, name: &str, cmd: &str, flags: &[&str], want: u64) -> GrpmRun {
    let pid = agent.pid();
    // Resets VmHWM, so that it shows this run's peak.
    let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let cpu0 = cpu_seconds(pid);
    let logs = agent.home.join("logs");
    let current = logs.join(format!("{id}-{name}.out.log"));
    let offset = logs.join(format!("{id}-{name}.out.offset"));
    let mut args = vec!["start", "--name", name, "--no-autorestart"];
    if !flags.contains(&"--log-max-size") {
        args.extend_from_slice(&["--log-max-size", "2G"]);
    }
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", cmd]);
    let t = Instant::now();
    agent.ok(&args);
    while logged(&current, &offset) < want {
        assert!(
            t.elapsed() < LIMIT,
            "{name}: only {} of {want} bytes logged after {LIMIT:?}",
            logged(&current, &offset)
        );
        thread::sleep(Duration::from_millis(2));
    }
    let took = t.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    let peak_kib = status_kib(pid, "VmHWM");
    agent.ok(&["delete", name, "--purge-logs"]);
    GrpmRun {
        took,
        cpu,
        peak_kib,
    }
}

/// Bytes logged so far: where the current file starts in the log, plus its size.
fn logged(current: &Path, offset: &Path) -> u64 {
    let start = fs::read_to_string(offset)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    start + fs::metadata(current).map_or(0, |m| m.len())
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 12 and 13 after the state.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn median_f(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
