//! The harness: a real agent (the real binary) in a temporary GRPM_HOME, driven through the
//! real CLI, with real child processes. No fixed paths or ports; every wait polls a condition
//! with a deadline and says which condition timed out.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_grpm");

/// Polls `cond` every few ms until it holds; panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A process is alive if /proc shows it and it is not a zombie (PID 1 here reaps nothing, so a
/// dead orphan stays a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 1..].trim_start().chars().next();
            !matches!(state, Some('Z' | 'X' | 'x'))
        }
        Err(_) => false,
    }
}

/// Live processes whose environment carries this agent's id and this app id.
pub fn app_processes(agent_id: &str, app_id: u64) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        let has = |k: &str, v: &str| vars.iter().any(|e| *e == format!("{k}={v}").as_bytes());
        if has("GRPM_AGENT_ID", agent_id) && has("GRPM_APP_ID", &app_id.to_string()) && alive(pid) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// The environment every command of the harness runs with: small and known, so tests can say
/// exactly what an app should see.
pub fn base_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("GRPM_HOME", home)
        .env("LANG", "C");
}

pub struct Agent {
    pub dir: TempDir,
    pub home: PathBuf,
    child: Option<Child>,
    /// Extra arguments for `grpm agent`.
    args: Vec<String>,
    /// Run the agent under its keeper (as users do). Off by default: most tests exercise
    /// the agent itself, and `crash` then kills the agent, not its keeper.
    pub keeper: bool,
}

impl Agent {
    /// Starts `grpm agent` in a fresh home and waits until it answers.
    pub fn start() -> Agent {
        Agent::start_with(&[])
    }

    /// Starts an agent with extra `grpm agent` arguments.
    pub fn start_with(args: &[&str]) -> Agent {
        Agent::launch(args, false)
    }

    /// Starts `grpm agent` under its keeper (the default for users); `pid()` is the keeper's.
    pub fn with_keeper() -> Agent {
        Agent::launch(&[], true)
    }

    fn launch(args: &[&str], keeper: bool) -> Agent {
        let dir = tempfile::Builder::new().prefix("grpm").tempdir().unwrap();
        let home = dir.path().join("h");
        let mut agent = Agent {
            dir,
            home,
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            keeper,
        };
        agent.spawn();
        agent
    }

    /// Starts another agent process on the same home (after a kill).
    pub fn spawn(&mut self) {
        fs::create_dir_all(&self.home).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.out"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        base_env(&mut cmd, &self.home);
        cmd.arg("agent")
            .args(&self.args)
            .args((!self.keeper).then_some("--no-keeper"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap());
        let sock = self.home.join("agent.sock");
        wait_until(
            "the agent to answer on its socket",
            Duration::from_secs(20),
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Starts another agent process on the same home with other `grpm agent` arguments.
    pub fn spawn_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// The address the agent's TCP listener is bound to (`--listen 127.0.0.1:0`).
    pub fn addr(&self) -> String {
        fs::read_to_string(self.home.join("agent.addr"))
            .unwrap_or_else(|e| panic!("no agent.addr: {e}\nagent log:\n{}", self.log()))
            .trim()
            .to_string()
    }

    /// SIGKILLs the agent (a crash), and reaps it.
    pub fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for the agent process to exit by itself (after `grpm kill`), and reaps it.
    pub fn reap(&mut self) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the agent did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The agent's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.out")).unwrap_or_default()
    }

    /// A `grpm` command bound to this home, with the harness's known environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        base_env(&mut cmd, &self.home);
        cmd.current_dir(self.dir.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs `grpm ARGS`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "grpm {args:?} failed ({}):\n{}\nagent log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `grpm ARGS`, asserts exit code `code`, returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "grpm {args:?}: expected exit {code}; stdout {:?} stderr {err:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        err
    }

    pub fn list(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.ok(&["list", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    pub fn app(&self, name: &str) -> Value {
        self.list()
            .into_iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no app {name} in the list"))
    }

    pub fn describe(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["describe", name, "--json"])).unwrap();
        v[0].clone()
    }

    pub fn status(&self, name: &str) -> String {
        self.app(name)["status"].as_str().unwrap().to_string()
    }

    /// Waits until `name` is online with a pid other than `not`; returns the pid.
    pub fn wait_online(&self, name: &str, not: Option<u32>) -> u32 {
        let mut pid = 0;
        wait_until(
            &format!("{name} online (not pid {not:?})"),
            Duration::from_secs(20),
            || {
                let a = self.app(name);
                match (a["status"].as_str(), a["pid"].as_u64()) {
                    (Some("online"), Some(p)) if Some(p as u32) != not => {
                        pid = p as u32;
                        true
                    }
                    _ => false,
                }
            },
        );
        pid
    }

    pub fn wait_status(&self, name: &str, status: &str) {
        wait_until(
            &format!("{name} to be {status}"),
            Duration::from_secs(30),
            || self.status(name) == status,
        );
    }

    /// This home's agent id (what GRPM_AGENT_ID is set to in every app).
    pub fn agent_id(&self) -> String {
        let state: Value =
            serde_json::from_str(&fs::read_to_string(self.home.join("state.json")).unwrap())
                .unwrap();
        state["agent_id"].as_str().unwrap().to_string()
    }

    /// Writes an executable shell script into the test dir and returns its path.
    pub fn script(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Ends every app's tree too.
            let _ = self
                .cmd()
                .arg("kill")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a file of whitespace-separated pids, once it holds at least `n`.
pub fn read_pids(path: &str, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until(
        &format!("{n} pids in {path}"),
        Duration::from_secs(20),
        || {
            pids = fs::read_to_string(path)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            pids.len() >= n
        },
    );
    pids
}

/// Events as `grpm events --json` prints them (one object per line).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// The agent's resident memory in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A child process the test started: killed (by pid) and reaped when dropped, so a failing test
/// never leaves it behind or hangs on it.
pub struct ChildGuard(pub Option<std::process::Child>);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// Waits for the child to exit by itself, up to `limit`; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.0.as_mut().unwrap();
        let mut status = None;
        wait_until("the child to exit", limit, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        self.0 = None;
        status.unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
