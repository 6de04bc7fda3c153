//! Helpers shared by the benchmarks: an agent (the real release binary) in a fresh temporary
//! home, driven through the real CLI and cleaned up even when a benchmark panics; /proc
//! probes; a summary of timed samples; and the final table of figures against targets.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// The `grpm` binary of this build (cargo builds it for benches, release profile).
pub const BIN: &str = env!("CARGO_BIN_EXE_grpm");

/// One agent in a fresh temporary home. Dropping it (also while unwinding from a panic) runs
/// `grpm kill`, reaps the agent, and SIGKILLs whatever process of this home is left.
pub struct Agent {
    /// What the agent is for, in messages.
    pub label: &'static str,
    /// The temporary directory: the home, the agent's output and any app files live in it.
    pub dir: TempDir,
    /// `GRPM_HOME` (and `HOME`) of every command.
    pub home: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Starts `grpm agent ARGS` in a fresh home and waits until its socket accepts
    /// connections.
    #[allow(dead_code)]
    pub fn start(label: &'static str, args: &[&str]) -> Agent {
        let mut all: Vec<&str> = args.to_vec();
        // The agent alone (its pid is the child's), as the figures before the keeper.
        all.push("--no-keeper");
        Agent::launch(label, &all)
    }

    /// Starts `grpm agent ARGS` under its keeper (as users run it): `pid()` is the keeper's,
    /// and the agent's is in `agent.pid`.
    #[allow(dead_code)]
    pub fn start_kept(label: &'static str, args: &[&str]) -> Agent {
        Agent::launch(label, args)
    }

    fn launch(label: &'static str, args: &[&str]) -> Agent {
        // A short prefix keeps the socket path well under the ~100-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("grpm")
            .tempdir()
            .expect("cannot create a temporary directory");
        let home = dir.path().join("h");
        let log = fs::File::create(dir.path().join("agent.out")).expect("cannot create a log");
        let mut cmd = Command::new(BIN);
        known_env(&mut cmd, &home);
        cmd.arg("agent")
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone a file handle"))
            .stderr(log);
        let child = cmd.spawn().expect("cannot spawn `grpm agent`");
        let agent = Agent {
            label,
            dir,
            home,
            child: Some(child),
        };
        let sock = agent.socket();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                alive(agent.pid()),
                "the {label} agent exited before answering; its log:\n{}",
                agent.log()
            );
            assert!(
                Instant::now() < deadline,
                "the {label} agent did not answer on {} within 20 s",
                sock.display()
            );
            thread::sleep(Duration::from_millis(1));
        }
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("agent.sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.out")).unwrap_or_default()
    }

    /// A `grpm` command for this home, with the known environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        known_env(&mut cmd, &self.home);
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// Runs `grpm ARGS`; panics unless it succeeded (see `check`). Returns its output.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self
            .cmd()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run grpm {args:?}: {e}"));
        self.check(&args.join(" "), &out);
        out
    }

    /// Panics, with the command's stderr and the agent's log, unless `out` is a success of a
    /// command run while our agent is alive (were it dead, the CLI would have started another
    /// one in the background).
    pub fn check(&self, what: &str, out: &Output) {
        assert!(
            out.status.success(),
            "`grpm {what}` failed ({}):\n{}\n{} agent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.label,
            self.log()
        );
        assert!(
            alive(self.pid()),
            "the {} agent died; its log:\n{}",
            self.label,
            self.log()
        );
    }

    /// Stops the agent and every app with `grpm kill`, reaps it, and checks that no process
    /// of this home is left; panics (after cleaning up) if something is. Returns how long
    /// `grpm kill` took (it returns once every app's tree and the agent are gone).
    pub fn shutdown(mut self) -> Duration {
        // Not `ok`: the agent is meant to be gone once `grpm kill` returns.
        let t = Instant::now();
        let out = self
            .cmd()
            .arg("kill")
            .output()
            .expect("cannot run `grpm kill`");
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "`grpm kill` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let leftovers = self.reap_and_sweep();
        assert!(
            leftovers.is_empty(),
            "`grpm kill` ({}) left processes of the {} home alive (killed now): {leftovers:?}",
            String::from_utf8_lossy(&out.stdout).trim(),
            self.label
        );
        took
    }

    /// Waits (up to 20 s) for the agent to exit and reaps it, killing it if it does not exit;
    /// then waits (up to 10 s) for the processes of this home to go, SIGKILLs those that stay,
    /// and returns their pids.
    fn reap_and_sweep(&mut self) -> Vec<u32> {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = processes_of(&self.home);
        while !left.is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
            left = processes_of(&self.home);
        }
        for &pid in &left {
            // Only processes whose environment carries this run's unique GRPM_HOME: started
            // by us or by our agent.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        left
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.is_some() {
            // The way out of a panic: best effort, nothing may panic here.
            let _ = self
                .cmd()
                .arg("kill")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.reap_and_sweep();
        }
    }
}

/// The small known environment of every command: PATH, and HOME = GRPM_HOME = the temp home.
fn known_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("GRPM_HOME", home);
}

/// True if /proc shows `pid` and it is not a zombie (a dead process nobody reaped yet).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z' | 'X' | 'x') | None)
}

/// True if `pid` is a live process whose environment has `GRPM_HOME=home`.
pub fn of_home(pid: u32, home: &Path) -> bool {
    let mut wanted = b"GRPM_HOME=".to_vec();
    wanted.extend_from_slice(home.as_os_str().as_encoded_bytes());
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_slice()))
        && alive(pid)
}

/// Live processes whose environment has `GRPM_HOME=home`: the agent, CLI runs and apps of
/// that home (the path is a fresh temporary one, so nobody else's processes match).
fn processes_of(home: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| of_home(pid, home))
        .collect();
    pids.sort_unstable();
    pids
}

/// Summary of a sample of durations.
pub struct Stats {
    pub n: usize,
    pub min: Duration,
    pub median: Duration,
    pub mean: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Stats {
    pub fn of(times: &[Duration]) -> Stats {
        assert!(!times.is_empty(), "no samples");
        let mut t = times.to_vec();
        t.sort_unstable();
        let n = t.len();
        let median = if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2
        };
        // Nearest rank: the smallest sample with at least 99% of samples at or below it.
        let p99 = t[(n * 99).div_ceil(100) - 1];
        Stats {
            n,
            min: t[0],
            median,
            mean: t.iter().sum::<Duration>() / n as u32,
            p99,
            max: t[n - 1],
        }
    }

    /// One line: the sample size and each figure in ms, with `decimals` decimals.
    pub fn print(&self, decimals: usize) {
        let f = |d: Duration| format!("{:.*}", decimals, ms(d));
        println!(
            "    n {}  min {} ms  median {} ms  mean {} ms  p99 {} ms  max {} ms",
            self.n,
            f(self.min),
            f(self.median),
            f(self.mean),
            f(self.p99),
            f(self.max)
        );
    }
}

/// A line of the final table; `target` is an upper bound (a lower one with `at_least`), if
/// the metric has one.
pub struct Row {
    pub metric: String,
    pub value: f64,
    /// Decimals to print the value with; `None`: the table's.
    pub decimals: Option<usize>,
    pub target: Option<f64>,
    pub unit: &'static str,
    /// The target is a minimum (a throughput), not a maximum.
    pub at_least: bool,
}

impl Row {
    pub fn at_most(metric: impl Into<String>, value: f64, target: f64, unit: &'static str) -> Row {
        Row {
            metric: metric.into(),
            value,
            decimals: None,
            target: Some(target),
            unit,
            at_least: false,
        }
    }

    fn met(&self) -> Option<bool> {
        self.target.map(|t| {
            if self.at_least {
                self.value >= t
            } else {
                self.value <= t
            }
        })
    }

    /// A duration (or other fractional figure) without a target.
    #[allow(dead_code)]
    pub fn info(metric: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row {
            metric: metric.into(),
            value,
            decimals: None,
            target: None,
            unit,
            at_least: false,
        }
    }
}

/// Prints the final table: values with `decimals` decimals (unless a row has its own),
/// right-aligned in a MEASURED column `measured_width` wide; then how many targets were met.
pub fn print_table(rows: &[Row], decimals: usize, measured_width: usize) {
    println!(
        "\n{:<40} {:>measured_width$} {:>14}  MET",
        "METRIC", "MEASURED", "TARGET"
    );
    for r in rows {
        let measured = format!("{:.*} {}", r.decimals.unwrap_or(decimals), r.value, r.unit);
        let (target, met) = match r.target {
            Some(t) => (
                format!("{} {t} {}", if r.at_least { ">=" } else { "<=" }, r.unit),
                if r.met() == Some(true) { "yes" } else { "NO" },
            ),
            None => ("-".to_string(), "-"),
        };
        println!(
            "{:<40} {:>measured_width$} {target:>14}  {met}",
            r.metric,
            measured.trim_end()
        );
    }
    let missed = rows.iter().filter(|r| r.met() == Some(false)).count();
    let total = rows.iter().filter(|r| r.target.is_some()).count();
    println!("\n{} of {total} targets met", total - missed);
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// These two serve only some of the benchmarks that include this module.

/// CPU time (user + system) process `pid` has used so far, from /proc/PID/stat; zero if it
/// cannot be read.
#[allow(dead_code)]
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // After the command name: utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rfind(')')
        .map_or(Vec::new(), |i| stat[i + 1..].split_whitespace().collect());
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / per_sec)
}

/// VmRSS of process `pid`, in KiB; zero if it cannot be read.
#[allow(dead_code)]
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
