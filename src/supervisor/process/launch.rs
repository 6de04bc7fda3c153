//! Turning a spec into a running main process: resolve the program, make the output pipes,
//! spawn in a new process group with exactly the stored environment.

use std::{
    os::{
        fd::OwnedFd,
        unix::{fs::PermissionsExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{mpsc, Arc, Mutex},
};

use nix::{fcntl::OFlag, unistd::pipe2};

use tokio::sync::oneshot;

use super::{procfs, reaper::Reaper};
use crate::model::{AppSpec, Env, Exit};
use crate::supervisor::error::OsError;

/// Everything a spawn needs, computed by the app's owner.
pub struct Launch {
    pub spec: Arc<AppSpec>,
    /// The complete environment: nothing else reaches the process.
    pub env: Env,
    /// The app's held sockets, passed with systemd's socket activation (see `activation`).
    pub sockets: Option<Arc<crate::supervisor::sockets::HeldSet>>,
}

/// A started main process: its pid, its start time (with the pid, its identity), and where its
/// exit status will arrive.
pub struct Spawned {
    pub pid: u32,
    pub starttime: Option<u64>,
    pub exit: oneshot::Receiver<Exit>,
    /// The read ends of the process's stdout and stderr pipes.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Why a main process could not be started; the text says what failed, with the OS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    #[error("the command is empty")]
    EmptyCommand,
    #[error("cwd {} is not a directory", .0.display())]
    CwdNotDirectory(PathBuf),
    #[error("cwd {}: {err}", path.display())]
    Cwd { path: PathBuf, err: OsError },
    #[error("cannot start {}: not an executable file", .0.display())]
    NotExecutable(PathBuf),
    #[error("cannot start {name}: no such command in PATH ({search}) (os error 2)")]
    NotInPath { name: String, search: String },
    #[error("cannot create an output pipe: {0}")]
    Pipe(OsError),
    #[error("cannot start {}: {err}", program.display())]
    Exec { program: PathBuf, err: OsError },
    #[error("cannot run as the configured user: {0}")]
    RunAs(OsError),
    #[error("the spawner thread is gone")]
    SpawnerGone,
    #[error("{0}")]
    Sockets(String),
}

type Job = (Launch, oneshot::Sender<Result<Spawned, SpawnError>>);

/// Spawns on dedicated threads. Spawning blocks (file checks, fork/exec); doing it
/// here keeps the async workers free, so a burst of a thousand starts does not hold up `list`
/// or any other request. Two threads overlap one spawn's file work with another's fork (which
/// the reaper serializes).
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts `threads` spawner threads sharing one queue.
    pub fn start(reaper: Arc<Reaper>, threads: usize) -> std::io::Result<Spawner> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let (rx, reaper) = (rx.clone(), reaper.clone());
            std::thread::Builder::new()
                .name(format!("grpm-spawner-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((launch, reply)) = job else { return };
                    let _ = reply.send(spawn(&reaper, &launch));
                })?;
        }
        Ok(Spawner { jobs })
    }

    pub async fn spawn(&self, launch: Launch) -> Result<Spawned, SpawnError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send((launch, reply))
            .map_err(|_| SpawnError::SpawnerGone)?;
        rx.await.map_err(|_| SpawnError::SpawnerGone)?
    }
}

/// Spawns the main process; the error says what failed, with the OS error.
pub fn spawn(reaper: &Reaper, l: &Launch) -> Result<Spawned, SpawnError> {
    let spec = &l.spec;
    // Specs are validated at the edge, but a hand-edited state.json is not the edge.
    let Some((arg0, args)) = spec.cmd.split_first() else {
        return Err(SpawnError::EmptyCommand);
    };
    match std::fs::metadata(&spec.cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(SpawnError::CwdNotDirectory(spec.cwd.clone())),
        Err(e) => {
            return Err(SpawnError::Cwd {
                path: spec.cwd.clone(),
                err: e.into(),
            })
        }
    }
    let program = resolve_program(arg0, &spec.cwd, l.env.get("PATH").map(String::as_str))?;
    // Close-on-exec, so that no other child spawned meanwhile keeps a write end open (which
    // would delay the end of this app's output); the child's own copies (fds 1 and 2) are
    // made by dup2 and stay open.
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe(e.into()));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut cmd = Command::new(&program);
    cmd.arg0(arg0)
        .args(args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(&l.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .process_group(0);
    // Another user, a umask, limits: applied in the child, between fork and exec.
    let run_as = super::run_as::prepare(spec).map_err(|e| SpawnError::RunAs(e.into()))?;
    // Held sockets: the last step execs the program itself, with LISTEN_PID its own pid.
    let activation = match &l.sockets {
        Some(set) if !set.sockets.is_empty() => {
            let mut env = l.env.clone();
            if let Some(p) = &run_as {
                env.extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let argv: Vec<String> = std::iter::once(arg0.clone())
                .chain(args.iter().cloned())
                .collect();
            let a = super::activation::Activation::prepare(set.clone(), &program, &argv, &env)
                .ok_or_else(|| SpawnError::Exec {
                    program: program.clone(),
                    err: std::io::Error::from(std::io::ErrorKind::InvalidInput).into(),
                })?;
            Some(a)
        }
        _ => None,
    };
    if let Some(p) = run_as {
        cmd.envs(p.env.iter().map(|(k, v)| (k, v)));
        // SAFETY: `apply` makes system calls only (setrlimit, umask, setgroups, setgid,
        // setuid) on values prepared before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || p.apply());
        }
    }
    if let Some(mut a) = activation {
        // SAFETY: `exec` is async-signal-safe (fcntl, dup2, getpid, execve, writes into
        // buffers prepared before the fork); it runs last and returns only with exec's error.
        unsafe {
            cmd.pre_exec(move || Err(a.exec()));
        }
    }
    let spawned = reaper.spawn(&mut cmd);
    // Our copies of the write ends close here: the pipes end when the app's tree is gone.
    drop(cmd);
    let (pid, exit) = spawned.map_err(|e| SpawnError::Exec {
        program: program.clone(),
        err: e.into(),
    })?;
    let starttime = procfs::read_stat(pid).ok().map(|s| s.starttime);
    Ok(Spawned {
        pid,
        starttime,
        exit,
        stdout: out_r,
        stderr: err_r,
    })
}

/// Finds the program as `execvp` would, but relative paths are taken from the app's cwd and the
/// search uses the app's own PATH, so errors can say exactly what was looked at.
pub fn resolve_program(arg0: &str, cwd: &Path, path: Option<&str>) -> Result<PathBuf, SpawnError> {
    if arg0.contains('/') {
        let p = cwd.join(arg0);
        return match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p),
            Ok(_) => Err(SpawnError::NotExecutable(p)),
            Err(e) => Err(SpawnError::Exec {
                program: p,
                err: e.into(),
            }),
        };
    }
    let search = path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in search.split(':').filter(|d| !d.is_empty()) {
        let p = cwd.join(dir).join(arg0);
        if let Ok(m) = std::fs::metadata(&p) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(SpawnError::NotInPath {
        name: arg0.to_string(),
        search: search.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_execvp() {
        let sh = resolve_program("sh", Path::new("/"), Some("/nonexistent:/bin")).unwrap();
        assert_eq!(sh, Path::new("/bin/sh"));
        let err = resolve_program("no-such-cmd-grpm", Path::new("/"), Some("/bin"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such command in PATH (/bin)"), "{err}");
        let err = resolve_program("./nope", Path::new("/tmp"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/tmp/./nope") && err.contains("os error 2"),
            "{err}"
        );
        assert!(resolve_program("/etc/passwd", Path::new("/"), None)
            .unwrap_err()
            .to_string()
            .contains("not an executable"));
    }
}
