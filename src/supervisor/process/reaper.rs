//! The one place that waits for child processes. The agent is a child subreaper, so orphaned
//! descendants of apps become its children too: it reaps every child, hands the exit of each
//! main process to the app that spawned it, and drops the rest.

use std::{
    collections::HashMap,
    io,
    process::Command,
    sync::{Arc, Mutex},
};

use nix::{
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::oneshot,
};
use tokio_util::sync::CancellationToken;

use crate::model::{now_unix_ms, Exit};

#[derive(Default)]
pub struct Reaper {
    /// Set when the agent hands over to the next one: children that end from then on are
    /// left to the keeper (which reaps them once this agent is gone, keeping their status).
    frozen: std::sync::atomic::AtomicBool,
    /// Main pids whose exit someone waits for. The lock is held across `spawn` and across each
    /// reaping pass, so a child that exits at once cannot be reaped before it is registered.
    waiters: Mutex<HashMap<u32, oneshot::Sender<Exit>>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD. Must be called inside the runtime, before any spawn.
    pub fn start(shutdown: CancellationToken) -> io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper::default());
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            r.reap();
            loop {
                tokio::select! {
                    got = sigchld.recv() => {
                        if got.is_none() { break; }
                        r.reap();
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
            r.reap();
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and registers its pid; the receiver gets its exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(u32, oneshot::Receiver<Exit>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd.spawn()?;
        let pid = child.id();
        // Dropping a std Child neither waits nor kills; the reaper owns its exit from here on.
        drop(child);
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((pid, rx))
    }

    /// From now on, reaps nothing (see `frozen`).
    pub fn freeze(&self) {
        let _w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reaps every child that has exited.
    pub fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, exit(Some(code), None)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, exit(None, Some(sig as i32))),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    return;
                }
            };
            match waiters.remove(&(pid.as_raw() as u32)) {
                Some(tx) => {
                    let _ = tx.send(exit);
                }
                None => tracing::debug!(pid = pid.as_raw(), "reaped an orphaned descendant"),
            }
        }
    }
}

fn exit(code: Option<i32>, signal: Option<i32>) -> Exit {
    Exit {
        code,
        signal,
        at_unix_ms: now_unix_ms(),
    }
}
