//! Finding and ending an app's whole process tree.
//!
//! The tree is: the main process's process group; every descendant of the main process; and
//! every process carrying the app's `GRPM_AGENT_ID`/`GRPM_APP_ID` pair (how a daemon that
//! `setsid`-ed and double-forked away is still found), with all of their descendants.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use tokio::time::{timeout_at, Instant};

use super::{
    pidfd::PidFd,
    procfs::{self, ProcStat},
};
use crate::model::{AppId, Signal};

/// Names one app's processes.
#[derive(Debug, Clone)]
pub struct TreeKey {
    pub agent_id: String,
    pub app_id: AppId,
    /// The main process, when one was started (it is also the process group id).
    pub root: Option<u32>,
}

/// Every live (non-zombie) process of the tree, found in one `/proc` scan. Blocking: call it
/// through `spawn_blocking`.
pub fn find(key: &TreeKey) -> Vec<ProcStat> {
    let me = std::process::id();
    let procs: Vec<ProcStat> = procfs::scan()
        .into_iter()
        .filter(|p| !p.is_dead() && p.pid != me)
        .collect();
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let mut seeds: Vec<usize> = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let in_group = key.root.is_some_and(|r| p.pgrp == r || p.pid == r);
        // Only processes that could have left the tree (orphans, and leaders of their own
        // session or group) need their environment read; the rest are reached by descent.
        let may_have_left = p.ppid == 1 || p.ppid == me || p.session == p.pid || p.pgrp == p.pid;
        if in_group
            || (may_have_left
                && procfs::grpm_identity(p.pid)
                    .is_some_and(|(agent, app)| agent == key.agent_id && app == key.app_id))
        {
            seeds.push(i);
        }
    }
    let mut seen: HashSet<usize> = HashSet::new();
    while let Some(i) = seeds.pop() {
        if seen.insert(i) {
            if let Some(kids) = children.get(&procs[i].pid) {
                seeds.extend(kids);
            }
        }
    }
    let mut out: Vec<ProcStat> = seen.into_iter().map(|i| procs[i]).collect();
    out.sort_by_key(|p| p.pid);
    out
}

async fn find_async(key: &TreeKey) -> Vec<ProcStat> {
    let key = key.clone();
    tokio::task::spawn_blocking(move || find(&key))
        .await
        .unwrap_or_default()
}

/// Why a tree could not be ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unkillable(pub Vec<ProcStat>);

impl std::fmt::Display for Unkillable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self
            .0
            .iter()
            .map(|p| format!("pid {} (state {})", p.pid, p.state))
            .collect();
        write!(f, "still alive after SIGKILL: {}", list.join(", "))
    }
}

/// How long SIGKILL may take before a process counts as unkillable (stuck in `D` state, say).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Sends `sig` to every process of the tree; after `kill_timeout`, SIGKILL to whatever remains.
/// Returns when no process of the tree is alive, or with the survivors of SIGKILL.
pub async fn stop(key: &TreeKey, sig: Signal, kill_timeout: Duration) -> Result<(), Unkillable> {
    let mut sig = sig.number();
    let mut deadline = Instant::now() + kill_timeout;
    let mut killing = false;
    loop {
        let members = find_async(key).await;
        if members.is_empty() {
            return Ok(());
        }
        let fds: Vec<PidFd> = members.iter().filter_map(open_checked).collect();
        if let Some(root) = key.root {
            if members.iter().any(|p| p.pgrp == root) {
                // Also reaches group members forked since the scan.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(root as i32),
                    nix::sys::signal::Signal::try_from(sig).ok(),
                );
            }
        }
        for fd in &fds {
            if let Err(e) = fd.signal(sig) {
                tracing::warn!(error = %e, "signalling a process of the tree failed");
            }
        }
        let all_exited = async {
            for fd in &fds {
                fd.exited().await;
            }
        };
        if timeout_at(deadline, all_exited).await.is_ok() {
            // Rescan: something may have forked meanwhile.
            continue;
        }
        if killing {
            let left = find_async(key).await;
            return if left.is_empty() {
                Ok(())
            } else {
                Err(Unkillable(left))
            };
        }
        killing = true;
        sig = Signal::KILL.number();
        deadline = Instant::now() + KILL_GRACE;
    }
}

/// A pidfd for `p`, only if the pid still names the process the scan saw.
fn open_checked(p: &ProcStat) -> Option<PidFd> {
    let fd = PidFd::open(p.pid).ok()?;
    let now = procfs::read_stat(p.pid).ok()?;
    (now.starttime == p.starttime && !now.is_dead()).then_some(fd)
}

/// Processes of this agent, by app, found through their environment: what a previous agent left
/// behind. Blocking.
pub fn survivors(agent_id: &str) -> HashMap<AppId, Vec<ProcStat>> {
    let me = std::process::id();
    let mut out: HashMap<AppId, Vec<ProcStat>> = HashMap::new();
    for p in procfs::scan() {
        if p.is_dead() || p.pid == me {
            continue;
        }
        if let Some((agent, app)) = procfs::grpm_identity(p.pid) {
            if agent == agent_id {
                out.entry(app).or_default().push(p);
            }
        }
    }
    out
}
