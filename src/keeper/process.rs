//! The keeper's loop: one thread, no runtime. It starts the agent as its child, holds what the
//! agent gives it, reaps every child that ends (the agent, and apps orphaned by a dead agent),
//! and starts the next agent, handing it everything. It sleeps in `poll` on two descriptors:
//! a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP) and its end of the socket pair.

use std::{
    ffi::OsString,
    fs,
    io::{self, Write},
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{ffi::OsStrExt, fs::MetadataExt, process::CommandExt},
    },
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{SigSet, Signal},
        signalfd::{SfdFlags, SignalFd},
        socket::{socketpair, AddressFamily, SockFlag, SockType},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::Pid,
};

use super::wire::{self, Ended, Line, Tag};
use super::{FD_ENV, MODE_ENV, STATE_ENV};
use crate::{home::Home, model::now_unix_ms};

/// The pauses before starting the agent again when it keeps dying: 0 first, then from 100 ms
/// doubling to 5 s; back to 0 once an agent has stayed up for [`STABLE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);
const STABLE: Duration = Duration::from_secs(10);

/// A descriptor held for the agent.
struct Held {
    tag: Tag,
    fd: OwnedFd,
}

/// An app's main process that ended while it was the keeper's child.
struct Exit {
    app: u64,
    pid: u32,
    start: u64,
    ended: Ended,
}

/// The running agent.
struct Agent {
    pid: u32,
    /// Our end of the socket pair; `None` once the agent closed its end (it is exiting).
    sock: Option<OwnedFd>,
    since: Instant,
    ready: bool,
}

struct Keeper {
    home: Home,
    /// The binary to run (and to re-exec on upgrade): the path this keeper was started from,
    /// so an upgrade runs what is on disk now.
    exe: PathBuf,
    /// The agent's arguments: ours, plus `--no-keeper`.
    args: Vec<OsString>,
    held: Vec<Held>,
    exits: Vec<Exit>,
    agent: Option<Agent>,
    /// Some agent became ready under this keeper (or the one it was re-exec'd from): from
    /// then on, a dying agent is started again rather than reported.
    ever_ready: bool,
    /// Asked to stop (SIGTERM, SIGINT): the agent's exit ends the keeper too.
    stopping: bool,
    /// The agent asked for an upgrade: once it has exited, the keeper re-execs itself.
    upgrading: bool,
    /// When to start the next agent, and the pause after that one if it dies young.
    next_start: Option<Instant>,
    pause: Duration,
    /// Log lines go to `agent.log` by path (so they follow its rotations) when our stderr is
    /// that file; to stderr otherwise.
    log_by_path: bool,
    /// Descriptors not to close (the lock), kept across a re-exec.
    lock: OwnedFd,
    buf: Vec<u8>,
}

/// Runs the keeper until the agent stops for good. `Err`: it could not start at all.
pub fn run() -> ExitCode {
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("grpm: {e}");
            return ExitCode::from(2);
        }
    };
    match Keeper::start(home) {
        Ok(mut k) => k.run(),
        Err(e) => {
            eprintln!("grpm: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Keeper {
    fn start(home: Home) -> Result<Keeper, String> {
        home.ensure()
            .map_err(|e| format!("cannot use {}: {e}", home.root.display()))?;
        // SAFETY: prctl with integer options only.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::prctl(libc::PR_SET_NAME, c"grpm-keeper".as_ptr(), 0, 0, 0);
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find our binary: {e}"))?;
        let exe = strip_deleted(exe);
        let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
        args.push("--no-keeper".into());
        let inherited = std::env::var_os(STATE_ENV);
        // SAFETY: single-threaded here; nothing else reads the environment meanwhile.
        unsafe {
            std::env::remove_var(STATE_ENV);
            std::env::remove_var(MODE_ENV);
        }
        let log_by_path = stderr_is(&home.log_file());
        let (lock, held, exits, ever_ready) = match inherited {
            Some(state) => restore(&state.to_string_lossy())?,
            None => (lock(&home)?, Vec::new(), Vec::new(), false),
        };
        let _ = fs::write(
            home.root.join("keeper.pid"),
            format!("{}\n", std::process::id()),
        );
        let k = Keeper {
            home,
            exe,
            args,
            held,
            exits,
            agent: None,
            ever_ready,
            stopping: false,
            upgrading: false,
            next_start: Some(Instant::now()),
            pause: Duration::ZERO,
            log_by_path,
            lock,
            buf: vec![0; wire::MAX_MESSAGE],
        };
        if ever_ready {
            k.log(&format!(
                "keeper {} re-executed {}: holding {} descriptors and {} exit statuses",
                std::process::id(),
                k.exe.display(),
                k.held.len(),
                k.exits.len()
            ));
        }
        Ok(k)
    }

    fn run(&mut self) -> ExitCode {
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        if let Err(e) = mask.thread_block() {
            eprintln!("grpm: keeper: cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
        let sigfd =
            match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("grpm: keeper: cannot watch signals: {e}");
                    return ExitCode::FAILURE;
                }
            };
        // Children that ended while this image was being exec'd signalled no one.
        if let Some(code) = self.reap() {
            return code;
        }
        loop {
            if self.agent.is_none() {
                if let Some(at) = self.next_start {
                    if Instant::now() >= at {
                        self.next_start = None;
                        if let Err(e) = self.spawn_agent() {
                            self.log(&format!("cannot start the agent: {e}"));
                            self.schedule_restart();
                        }
                    }
                }
            }
            let timeout = match (self.agent.is_none(), self.next_start) {
                (true, Some(at)) => at
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
                _ => -1,
            };
            let mut fds = [
                libc::pollfd {
                    fd: sigfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self
                        .agent
                        .as_ref()
                        .and_then(|a| a.sock.as_ref())
                        .map_or(-1, |s| s.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfd structs we own.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    self.log(&format!("poll failed: {e}"));
                }
                continue;
            }
            if fds[1].revents != 0 {
                self.read_agent();
            }
            if fds[0].revents != 0 {
                while let Ok(Some(info)) = sigfd.read_signal() {
                    let sig = info.ssi_signo as i32;
                    if sig == libc::SIGCHLD {
                        continue;
                    }
                    if let Some(code) = self.signalled(sig) {
                        return code;
                    }
                }
                if let Some(code) = self.reap() {
                    return code;
                }
            }
        }
    }

    /// SIGTERM and SIGINT are passed to the agent, which stops every app and exits; then so
    /// does the keeper. SIGHUP is passed on (the agent reopens its log).
    fn signalled(&mut self, sig: i32) -> Option<ExitCode> {
        let name = Signal::try_from(sig).map_or("?", |s| s.as_str());
        match &self.agent {
            Some(a) => {
                if sig != libc::SIGHUP {
                    self.stopping = true;
                }
                // SAFETY: kill with a pid and a signal number.
                unsafe { libc::kill(a.pid as i32, sig) };
                None
            }
            None if sig == libc::SIGHUP => None,
            None => {
                self.log(&format!(
                    "{name} while no agent runs: the keeper exits; the apps run on, and the next agent adopts them"
                ));
                Some(self.exit(ExitCode::SUCCESS))
            }
        }
    }

    fn exit(&mut self, code: ExitCode) -> ExitCode {
        let _ = fs::remove_file(self.home.root.join("keeper.pid"));
        code
    }

    /// Starts `grpm agent --no-keeper` with its end of a new socket pair, and hands it every
    /// descriptor and exit status held.
    fn spawn_agent(&mut self) -> io::Result<()> {
        let (mine, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let raw = theirs.as_raw_fd();
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .env(FD_ENV, raw.to_string())
            .env_remove(MODE_ENV)
            .env_remove(STATE_ENV);
        // SAFETY: fcntl and sigprocmask only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // The keeper blocks the signals it reads from its signalfd; a blocked mask is
                // inherited across exec, and the agent (and its apps) must start with none.
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                if libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let pid = child.id();
        // The keeper reaps with waitpid(-1); std's handle neither waits nor kills when dropped.
        drop(child);
        let mut lines = vec![Line::Keeper {
            pid: std::process::id(),
        }];
        let mut fds: Vec<RawFd> = Vec::with_capacity(self.held.len());
        for h in &self.held {
            lines.push(Line::Fd(h.tag.clone()));
            fds.push(h.fd.as_raw_fd());
        }
        for e in &self.exits {
            lines.push(Line::Exit {
                app: e.app,
                pid: e.pid,
                start: e.start,
                ended: e.ended,
            });
        }
        lines.push(Line::End);
        if let Err(e) = wire::send(mine.as_fd(), &lines, &fds) {
            self.log(&format!("cannot hand over to agent {pid}: {e}"));
        }
        self.log(&format!(
            "started agent {pid}; handed it {} descriptors and {} exit statuses",
            fds.len(),
            self.exits.len()
        ));
        self.agent = Some(Agent {
            pid,
            sock: Some(mine),
            since: Instant::now(),
            ready: false,
        });
        Ok(())
    }

    /// Reads what the agent sent.
    fn read_agent(&mut self) {
        let Some(sock) = self.agent.as_ref().and_then(|a| a.sock.as_ref()) else {
            return;
        };
        let msg = match wire::recv(sock.as_fd(), &mut self.buf) {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => {
                // The agent closed its end (it is exiting); its exit comes as SIGCHLD.
                if let Some(a) = self.agent.as_mut() {
                    a.sock = None;
                }
                return;
            }
        };
        for (line, fd) in msg {
            match (line, fd) {
                (Line::Hold(tag), Some(fd)) => {
                    self.held.retain(|h| {
                        !(h.tag.app == tag.app
                            && h.tag.kind == tag.kind
                            && h.tag.pid == tag.pid
                            && h.tag.slot == tag.slot)
                    });
                    self.held.push(Held { tag, fd });
                }
                (Line::Release { app, pid, slot }, _) => {
                    self.held
                        .retain(|h| !(h.tag.app == app && h.tag.pid == pid && h.tag.slot == slot));
                    if pid != 0 {
                        self.exits.retain(|e| !(e.app == app && e.pid == pid));
                    }
                }
                (Line::Ready { pid }, _) => {
                    let apps = {
                        let mut a: Vec<u64> = self.held.iter().map(|h| h.tag.app).collect();
                        a.dedup();
                        a.len()
                    };
                    if let Some(a) = self.agent.as_mut() {
                        a.ready = true;
                    }
                    self.ever_ready = true;
                    self.log(&format!(
                        "agent {pid} ready; holding {} descriptors of {apps} apps",
                        self.held.len()
                    ));
                }
                (Line::Upgrade, _) => {
                    self.upgrading = true;
                    self.log(
                        "upgrade asked: the keeper re-executes itself once the agent has exited",
                    );
                }
                _ => {}
            }
        }
    }

    /// Reaps every child that ended. Returns an exit code when the keeper is done.
    fn reap(&mut self) -> Option<ExitCode> {
        loop {
            let (pid, ended) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ended(Some(code), None)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ended(None, Some(sig as i32))),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return None,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    self.log(&format!("waitpid failed: {e}"));
                    return None;
                }
            };
            let pid = pid.as_raw() as u32;
            if self.agent.as_ref().is_some_and(|a| a.pid == pid) {
                if let Some(code) = self.agent_ended(ended) {
                    return Some(code);
                }
                continue;
            }
            self.app_ended(pid, ended);
        }
    }

    /// An app's main process ended as our child (its agent had died): its status is kept for
    /// the next agent, or passed to the current one at once.
    fn app_ended(&mut self, pid: u32, ended: Ended) {
        let Some(tag) = self
            .held
            .iter()
            .find(|h| h.tag.pid == pid && pid != 0)
            .map(|h| h.tag.clone())
        else {
            return;
        };
        if self.exits.iter().any(|e| e.app == tag.app && e.pid == pid) {
            return;
        }
        let e = Exit {
            app: tag.app,
            pid,
            start: tag.start,
            ended,
        };
        self.log(&format!(
            "app {} (pid {pid}) exited ({})",
            tag.app,
            describe(&ended)
        ));
        if let Some(sock) = self.agent.as_ref().and_then(|a| a.sock.as_ref()) {
            let line = Line::Exit {
                app: e.app,
                pid,
                start: e.start,
                ended,
            };
            let _ = wire::send(sock.as_fd(), &[line], &[]);
        }
        self.exits.push(e);
    }

    /// The agent ended: the keeper ends too after a stop, re-execs after an upgrade, reports
    /// a first start that failed, and otherwise starts the next agent.
    fn agent_ended(&mut self, ended: Ended) -> Option<ExitCode> {
        let agent = self.agent.take()?;
        let lived = agent.since.elapsed();
        if self.upgrading {
            self.upgrading = false;
            self.log(&format!(
                "agent {} exited for the upgrade ({}); re-executing {}",
                agent.pid,
                describe(&ended),
                self.exe.display()
            ));
            let e = self.reexec();
            self.log(&format!(
                "cannot re-execute {}: {e}; starting an agent without upgrading the keeper",
                self.exe.display()
            ));
            self.pause = Duration::ZERO;
            self.next_start = Some(Instant::now());
            return None;
        }
        let clean = ended.code == Some(0);
        if self.stopping || (clean && agent.ready) {
            self.log(&format!(
                "agent {} stopped ({}); the keeper exits",
                agent.pid,
                describe(&ended)
            ));
            return Some(self.exit(ExitCode::SUCCESS));
        }
        if !self.ever_ready {
            // The first agent could not start (another one serves this home, bad flags...):
            // it said why on stderr; its exit code is ours.
            let code = ended.code.map_or(1, |c| c.clamp(1, 255)) as u8;
            return Some(self.exit(ExitCode::from(code)));
        }
        if lived >= STABLE {
            self.pause = Duration::ZERO;
        }
        let pause = self.pause;
        self.log(&format!(
            "agent {} died ({}) after {:.1}s; starting a new one in {} ms",
            agent.pid,
            describe(&ended),
            lived.as_secs_f64(),
            pause.as_millis()
        ));
        self.next_start = Some(Instant::now() + pause);
        self.pause = if pause.is_zero() {
            FIRST_PAUSE
        } else {
            (pause * 2).min(MAX_PAUSE)
        };
        None
    }

    fn schedule_restart(&mut self) {
        let pause = self.pause.max(FIRST_PAUSE);
        self.next_start = Some(Instant::now() + pause);
        self.pause = (pause * 2).min(MAX_PAUSE);
    }

    /// Replaces this process with the binary on disk now, handing itself every descriptor it
    /// holds (listed in an environment variable, CLOEXEC cleared for the exec). Returns only
    /// on failure.
    fn reexec(&mut self) -> io::Error {
        let mut state = format!("L:{}|R:1", self.lock.as_raw_fd());
        for h in &self.held {
            state.push_str(&format!(
                "|{}:{}",
                h.fd.as_raw_fd(),
                Line::Fd(h.tag.clone())
            ));
        }
        for e in &self.exits {
            let line = Line::Exit {
                app: e.app,
                pid: e.pid,
                start: e.start,
                ended: e.ended,
            };
            state.push_str(&format!("|-:{line}"));
        }
        let keep: Vec<RawFd> = std::iter::once(self.lock.as_raw_fd())
            .chain(self.held.iter().map(|h| h.fd.as_raw_fd()))
            .collect();
        for fd in &keep {
            // SAFETY: fcntl on descriptors we own.
            unsafe { libc::fcntl(*fd, libc::F_SETFD, 0) };
        }
        let mut args = self.args.clone();
        args.pop(); // --no-keeper
        let err = Command::new(&self.exe)
            .args(&args)
            .env(MODE_ENV, "1")
            .env(STATE_ENV, state)
            .exec();
        for fd in &keep {
            // SAFETY: as above.
            unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        err
    }

    /// One line in the agent's log, in the agent's format.
    fn log(&self, msg: &str) {
        let line = format!(
            "{}  INFO grpm::keeper: {msg} keeper={}\n",
            crate::model::rfc3339_ms(now_unix_ms()),
            std::process::id()
        );
        if self.log_by_path {
            if let Ok(mut f) = fs::OpenOptions::new()
                .append(true)
                .open(self.home.log_file())
            {
                let _ = f.write_all(line.as_bytes());
                return;
            }
        }
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// What a re-exec'd keeper finds in its environment: its lock, its held descriptors (each
/// made close-on-exec again) and exit statuses.
#[allow(clippy::type_complexity)]
fn restore(state: &str) -> Result<(OwnedFd, Vec<Held>, Vec<Exit>, bool), String> {
    let mut lock = None;
    let mut held = Vec::new();
    let mut exits = Vec::new();
    let mut ready = false;
    let take = |fd: &str| -> Option<OwnedFd> {
        let fd: RawFd = fd.parse().ok()?;
        // SAFETY: the previous image of this process left this descriptor open for us, and
        // listed it once.
        unsafe {
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
                return None;
            }
            Some(OwnedFd::from_raw_fd(fd))
        }
    };
    for part in state.split('|') {
        let Some((key, rest)) = part.split_once(':') else {
            continue;
        };
        match key {
            "L" => lock = take(rest),
            "R" => ready = rest == "1",
            "-" => {
                if let Some(Line::Exit {
                    app,
                    pid,
                    start,
                    ended,
                }) = Line::parse(rest)
                {
                    exits.push(Exit {
                        app,
                        pid,
                        start,
                        ended,
                    });
                }
            }
            fd => {
                if let (Some(Line::Fd(tag)), Some(fd)) = (Line::parse(rest), take(fd)) {
                    held.push(Held { tag, fd });
                }
            }
        }
    }
    let lock = lock.ok_or("the keeper's state lacks its lock")?;
    Ok((lock, held, exits, ready))
}

/// The keeper's own lock (`keeper.lock`), so that two keepers never serve one home.
fn lock(home: &Home) -> Result<OwnedFd, String> {
    let path = home.root.join("keeper.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let other = fs::read_to_string(home.root.join("keeper.pid")).unwrap_or_default();
        return Err(format!(
            "another agent already serves {} (keeper pid {})",
            home.root.display(),
            other.trim()
        ));
    }
    Ok(file.into())
}

fn ended(code: Option<i32>, signal: Option<i32>) -> Ended {
    Ended {
        code,
        signal,
        at_ms: now_unix_ms(),
    }
}

fn describe(e: &Ended) -> String {
    match (e.code, e.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!(
            "signal {}",
            Signal::try_from(s).map_or_else(|_| s.to_string(), |s| s.as_str().to_string())
        ),
        (None, None) => "unknown".into(),
    }
}

/// `current_exe` of a binary replaced on disk reads "PATH (deleted)": the path is what an
/// upgrade runs.
fn strip_deleted(p: PathBuf) -> PathBuf {
    let bytes = p.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(b) => PathBuf::from(std::ffi::OsStr::from_bytes(b)),
        None => p,
    }
}

/// Whether our stderr is the file at `path`.
fn stderr_is(path: &std::path::Path) -> bool {
    let Ok(file) = fs::metadata(path) else {
        return false;
    };
    // SAFETY: fstat of fd 2 into a struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == file.dev() && st.st_ino == file.ino()
}
