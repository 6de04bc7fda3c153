//! Lifecycle benchmark: real agents (the real release binary) in temporary homes, driven
//! through the real CLI, supervising real `sleep` processes.
//!
//! Run with `cargo bench --bench lifecycle`. It measures, in this order:
//!
//! 1. the agent's idle RSS, after it answered a first `grpm list`;
//! 2. the wall time of `grpm list` (the whole CLI process, spawn to exit) with 10 apps online;
//! 3. the wall time of `grpm restart` for one app that exits promptly on SIGTERM, on an agent
//!    of its own that supervises only that app;
//! 4. the time from issuing `grpm start FILE` (1,000 apps) until a `grpm list --json` poll
//!    shows all of them online, and the agent's RSS with those 1,000 apps online.
//!
//! Each phase has its own agent in a fresh temporary `GRPM_HOME`, stopped with `grpm kill`
//! before the next phase starts. Every command runs with a small known environment. Missed
//! targets are reported, never fatal; functional breakage (an app that never comes online, a
//! restart that keeps the old pid, processes left behind) panics with a clear message.

mod common;

use std::{
    fs, thread,
    time::{Duration, Instant},
};

use common::{alive, ms, print_table, Agent, Row, Stats, BIN};
use serde_json::Value;

/// Timed `grpm list` runs (phase 2) and `grpm restart` runs (phase 3), after a few untimed
/// warm-up runs that get the binary and its libraries into the page cache.
const LIST_RUNS: usize = 300;
const RESTART_RUNS: usize = 100;
const WARMUP_RUNS: usize = 5;

/// Apps in the many-apps phase, and how long they may take to come online before we call
/// it broken.
const MANY_APPS: usize = 1_000;
const ONLINE_LIMIT: Duration = Duration::from_secs(60);
/// Pause between two `grpm list --json` polls while the 1,000 apps start. A poll of 1,000 apps
/// costs ~30 ms of CPU, so polling much faster would mostly measure the polling; the figure
/// is `grpm start FILE` itself, which returns once every app is spawned and recorded, and the
/// polls show that other requests are answered meanwhile.
const POLL_PAUSE: Duration = Duration::from_millis(100);

/// Decimals of the durations (ms) in the summaries and the final table, and the width of
/// the table's MEASURED column.
const DECIMALS: usize = 2;
const MEASURED_WIDTH: usize = 14;

/// Targets (2-core machine).
const TARGET_IDLE_RSS_MIB: f64 = 8.0;
const TARGET_MANY_RSS_MIB: f64 = 40.0;
const TARGET_LIST_MEDIAN_MS: f64 = 10.0;
const TARGET_MANY_ONLINE_MS: f64 = 2_000.0;
const TARGET_RESTART_MEDIAN_MS: f64 = 20.0;

fn main() {
    println!("grpm lifecycle benchmark ({BIN})");
    println!(
        "machine: {} CPUs available",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut table = Vec::new();

    // Phase 1 and 2: idle RSS, then `grpm list` with 10 apps.
    {
        let agent = Agent::start("list", &[]);
        agent.list();
        let idle = agent.rss_kib();
        println!(
            "\n[1] idle agent (pid {}): VmRSS {} after its first `grpm list`",
            agent.pid(),
            kib(idle)
        );
        table.push(Row::at_most(
            "agent RSS, idle",
            mib(idle),
            TARGET_IDLE_RSS_MIB,
            "MiB",
        ));

        for i in 1..=10 {
            let name = format!("app-{i:02}");
            agent.ok(&["start", "--name", &name, "--", "sleep", "1000"]);
        }
        agent.wait_all_online(10, Instant::now());

        // `grpm list` prints a header line and one line per app.
        let list = || {
            let out = agent.ok(&["list"]);
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            assert_eq!(lines, 11, "`grpm list` should print a header and 10 apps");
        };
        for _ in 0..WARMUP_RUNS {
            list();
        }
        let times = timed(LIST_RUNS, list);
        let s = Stats::of(&times);
        println!("\n[2] `grpm list` with 10 apps online, {LIST_RUNS} runs (spawn to exit):");
        s.print(DECIMALS);
        table.push(Row::at_most(
            "`grpm list` median, 10 apps",
            ms(s.median),
            TARGET_LIST_MEDIAN_MS,
            "ms",
        ));
        table.push(Row::info("`grpm list` p99, 10 apps", ms(s.p99), "ms"));
        agent.shutdown();
    }

    // Phase 3: restart latency, on an agent that supervises only the app being restarted (run
    // before the 1,000-app phase, whose agent is a separate one anyway).
    {
        let agent = Agent::start("restart", &[]);
        agent.ok(&["start", "--name", "victim", "--", "sleep", "1000"]);
        agent.wait_all_online(1, Instant::now());
        let mut pid = agent.pid_of("victim");

        // One restart: timed from issuing the command to its exit, then checked (untimed):
        // the app must be online with a new, live pid, and the old process must be gone.
        let mut restart = || -> Duration {
            let t0 = Instant::now();
            agent.ok(&["restart", "victim"]);
            let took = t0.elapsed();
            let app = agent.app("victim");
            let new = app["pid"].as_u64().map(|p| p as u32);
            assert!(
                app["status"] == "online" && new.is_some_and(|p| p != pid && alive(p)),
                "after `grpm restart victim` returned, the app should be online with a new \
                 live pid (old pid {pid}), but the list says {app}"
            );
            assert!(
                !alive(pid),
                "`grpm restart` returned while the old process {pid} is still alive"
            );
            pid = new.unwrap_or_default();
            took
        };
        for _ in 0..WARMUP_RUNS {
            restart();
        }
        let times: Vec<Duration> = (0..RESTART_RUNS).map(|_| restart()).collect();
        let s = Stats::of(&times);
        println!(
            "\n[3] `grpm restart` of one `sleep 1000` app (its own agent, run before the \
             1,000-app phase), {RESTART_RUNS} runs (command issued -> returns with a new pid \
             online; pid change verified with `list --json` after each run):"
        );
        s.print(DECIMALS);
        table.push(Row::at_most(
            "`grpm restart` median",
            ms(s.median),
            TARGET_RESTART_MEDIAN_MS,
            "ms",
        ));
        table.push(Row::info("`grpm restart` p99", ms(s.p99), "ms"));
        agent.shutdown();
    }

    // Phase 4: 1,000 apps from one app file.
    {
        let agent = Agent::start("many", &[]);
        agent.list();
        let file = agent.dir.path().join("many.toml");
        let mut text = String::new();
        for i in 1..=MANY_APPS {
            text.push_str(&format!(
                "[[app]]\nname = \"app-{i:04}\"\ncmd = [\"sleep\", \"1000\"]\n\n"
            ));
        }
        fs::write(&file, text).expect("cannot write the app file");

        // `grpm start FILE` runs on a thread of its own, so polling starts as soon as the
        // command is issued, whether or not it returns before every app is online.
        let mut start = agent.cmd();
        start.arg("start").arg(&file);
        let t0 = Instant::now();
        let starter = thread::spawn(move || {
            let out = start.output().expect("cannot run `grpm start FILE`");
            (out, t0.elapsed())
        });
        let online = agent.wait_all_online(MANY_APPS, t0);
        let (out, start_returned) = starter.join().expect("the start thread panicked");
        agent.check("start FILE", &out);
        // `start FILE` answers once every app is spawned: the very next listing shows them all.
        let confirm = agent.wait_all_online(MANY_APPS, Instant::now());
        assert_eq!(
            confirm.polls, 1,
            "`grpm start FILE` returned before every app was online"
        );

        // Every app is a distinct, live process.
        let mut distinct = online.pids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            MANY_APPS,
            "pids of online apps are not distinct"
        );
        let dead = online.pids.iter().filter(|&&p| !alive(p)).count();
        assert_eq!(dead, 0, "{dead} apps listed online have no live process");

        let rss_now = agent.rss_kib();
        // Let the agent settle (first samples for cpu/memory, log flushes...), then read the
        // RSS again right after one more `grpm list` answered.
        thread::sleep(Duration::from_secs(1));
        agent.wait_all_online(MANY_APPS, Instant::now());
        let rss_settled = agent.rss_kib();
        let hwm = agent.proc_status_kib("VmHWM");

        // One `list --json` of 1,000 apps, timed, for context.
        let list_times = timed(20, || {
            agent.list();
        });
        let ls = Stats::of(&list_times);

        println!("\n[4] {MANY_APPS} apps (`sleep 1000`) from one app file:");
        println!(
            "    `grpm start FILE` returned after {:.1} ms, every app online (checked by a \
             `list --json` right after)",
            ms(start_returned)
        );
        println!(
            "    meanwhile `list --json` was polled every {POLL_PAUSE:?}: {} polls, the first \
             showing all online ended at {:.1} ms; slowest poll {:.1} ms",
            online.polls,
            ms(online.after),
            ms(online.slowest_poll)
        );
        println!(
            "    agent VmRSS: {} when all were online, {} one second later; VmHWM (peak) {}",
            kib(rss_now),
            kib(rss_settled),
            kib(hwm)
        );
        println!(
            "    `grpm list --json` with {MANY_APPS} apps: median {:.2} ms, p99 {:.2} ms (20 runs)",
            ms(ls.median),
            ms(ls.p99)
        );
        table.push(Row::at_most(
            "1,000 apps online (`start FILE`)",
            ms(start_returned),
            TARGET_MANY_ONLINE_MS,
            "ms",
        ));
        table.push(Row::at_most(
            "agent RSS, 1,000 apps online",
            mib(rss_settled.max(rss_now)),
            TARGET_MANY_RSS_MIB,
            "MiB",
        ));
        let kill = agent.shutdown();
        println!(
            "    `grpm kill` (every app's tree and the agent gone) took {:.1} ms",
            ms(kill)
        );
        table.push(Row::info("`grpm kill` with 1,000 apps", ms(kill), "ms"));
    }

    print_table(&table, DECIMALS, MEASURED_WIDTH);
}

/// What only this benchmark asks of an agent.
impl Agent {
    /// `grpm list --json`, parsed.
    fn list(&self) -> Vec<Value> {
        let out = self.ok(&["list", "--json"]);
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(apps)) => apps,
            _ => panic!(
                "`grpm list --json` printed no JSON array: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
        }
    }

    /// The `list --json` entry of the app `name`.
    fn app(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no app {name:?} in `grpm list --json`"))
    }

    fn pid_of(&self, name: &str) -> u32 {
        let app = self.app(name);
        app["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("app {name:?} has no pid: {app}")) as u32
    }

    /// Polls `grpm list --json` until it shows exactly `n` apps, all online; panics after
    /// `ONLINE_LIMIT` (counted from `since`).
    fn wait_all_online(&self, n: usize, since: Instant) -> Online {
        let mut polls = 0;
        let mut slowest_poll = Duration::ZERO;
        loop {
            let t0 = Instant::now();
            let apps = self.list();
            slowest_poll = slowest_poll.max(t0.elapsed());
            polls += 1;
            let pids: Vec<u32> = apps
                .iter()
                .filter(|a| a["status"] == "online")
                .filter_map(|a| a["pid"].as_u64())
                .map(|p| p as u32)
                .collect();
            if apps.len() == n && pids.len() == n {
                return Online {
                    after: since.elapsed(),
                    polls,
                    slowest_poll,
                    pids,
                };
            }
            if since.elapsed() > ONLINE_LIMIT {
                let mut statuses: Vec<String> = apps
                    .iter()
                    .map(|a| a["status"].as_str().unwrap_or("?").to_string())
                    .collect();
                statuses.sort();
                statuses.dedup_by(|a, b| a == b);
                panic!(
                    "after {ONLINE_LIMIT:?}, {} of {n} apps are online ({} listed; statuses \
                     seen: {statuses:?}); {} agent log:\n{}",
                    pids.len(),
                    apps.len(),
                    self.label,
                    self.log()
                );
            }
            thread::sleep(POLL_PAUSE);
        }
    }

    /// A `kB` field (VmRSS, VmHWM) of the agent's /proc/PID/status, in KiB.
    fn proc_status_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("cannot read the agent's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the agent's /proc status"))
    }

    fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }
}

/// What `Agent::wait_all_online` saw.
struct Online {
    /// From `since` to the end of the first poll that showed every app online.
    after: Duration,
    /// `grpm list --json` runs it took, and the longest of them.
    polls: usize,
    slowest_poll: Duration,
    /// The apps' pids, as that poll listed them.
    pids: Vec<u32>,
}

/// Runs `f` `n` times and returns the wall time of each run.
fn timed(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed()
        })
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn kib(kib: u64) -> String {
    format!("{kib} KiB ({:.2} MiB)", mib(kib))
}
