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

use std::sync::Arc;

use super::{
    pidfd::PidFd,
    procfs::{self, ProcStat},
    scan::{Scanner, Snapshot},
};
use crate::model::{AppId, Signal};

/// One process slot of an app: `(app id, slot)`. An instance `k` runs in slot `2k` or `2k + 1`
/// (a reload's replacement takes the other one), so that during a reload the old instance's
/// tree and its replacement's are told apart. Processes carry the slot as `GRPM_SLOT` (absent:
/// 0).
pub type TreeId = (AppId, u32);

/// Names one instance's processes.
#[derive(Debug, Clone)]
pub struct TreeKey {
    pub agent_id: String,
    pub app_id: AppId,
    pub slot: u32,
    /// The main process, when one was started (it is also the process group id).
    pub root: Option<u32>,
}

/// Every process of the tree in `snap`.
pub fn find(snap: &Snapshot, key: &TreeKey) -> Vec<ProcStat> {
    Forest::new(snap).members(key)
}

/// A snapshot indexed once (children, groups, grpm identities), so that finding many apps'
/// trees in it costs each app its own tree's size rather than a pass over every process. The
/// indexes are positions in the snapshot sorted by parent, by group and by pid (a few
/// allocations per snapshot, not one per parent and group).
pub struct Forest<'a> {
    procs: &'a [ProcStat],
    by_parent: Vec<usize>,
    by_group: Vec<usize>,
    by_pid: Vec<usize>,
    /// Processes marked with an identity, sorted by it.
    marked: Vec<((&'a str, TreeId), usize)>,
}

impl<'a> Forest<'a> {
    pub fn new(snap: &'a Snapshot) -> Forest<'a> {
        let procs = snap.procs.as_slice();
        let sorted = |key: fn(&ProcStat) -> u32| {
            let mut v: Vec<usize> = (0..procs.len()).collect();
            v.sort_unstable_by_key(|&i| key(&procs[i]));
            v
        };
        let by_pid = sorted(|p| p.pid);
        let at = |pid: u32| {
            let k = by_pid.partition_point(|&i| procs[i].pid < pid);
            by_pid.get(k).copied().filter(|&i| procs[i].pid == pid)
        };
        let mut marked: Vec<((&str, TreeId), usize)> = snap
            .identity
            .iter()
            .filter_map(|(pid, (agent, app))| Some(((agent.as_str(), *app), at(*pid)?)))
            .collect();
        marked.sort_unstable();
        Forest {
            procs,
            by_parent: sorted(|p| p.ppid),
            by_group: sorted(|p| p.pgrp),
            by_pid,
            marked,
        }
    }

    /// The positions in `index` (sorted by `key`) whose process has `key` `value`.
    fn run<'i>(&self, index: &'i [usize], key: fn(&ProcStat) -> u32, value: u32) -> &'i [usize] {
        let start = index.partition_point(|&i| key(&self.procs[i]) < value);
        let len = index[start..].partition_point(|&i| key(&self.procs[i]) == value);
        &index[start..start + len]
    }

    /// The tree of `key`: the root's process group and the root itself (even when it is not
    /// its group's leader), the processes marked with the app's identity, and all their
    /// descendants.
    pub fn members(&self, key: &TreeKey) -> Vec<ProcStat> {
        let mut seeds: Vec<usize> = Vec::new();
        if let Some(r) = key.root {
            seeds.extend(self.run(&self.by_group, |p| p.pgrp, r));
            seeds.extend(self.run(&self.by_pid, |p| p.pid, r));
        }
        let id = (key.agent_id.as_str(), (key.app_id, key.slot));
        let start = self.marked.partition_point(|(m, _)| *m < id);
        seeds.extend(
            self.marked[start..]
                .iter()
                .take_while(|(m, _)| *m == id)
                .map(|(_, i)| *i),
        );
        let mut seen: HashSet<usize> = HashSet::new();
        while let Some(i) = seeds.pop() {
            if seen.insert(i) {
                seeds.extend(self.run(&self.by_parent, |p| p.ppid, self.procs[i].pid));
            }
        }
        let mut out: Vec<ProcStat> = seen.into_iter().map(|i| self.procs[i]).collect();
        out.sort_by_key(|p| p.pid);
        out
    }
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
pub async fn stop(
    scanner: &Arc<Scanner>,
    key: &TreeKey,
    sig: Signal,
    kill_timeout: Duration,
) -> Result<(), Unkillable> {
    let mut sig = sig.number();
    let mut deadline = Instant::now() + kill_timeout;
    let mut killing = false;
    loop {
        let members = find(&*scanner.fresh().await, key);
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
            let left = find(&*scanner.fresh().await, key);
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
pub fn survivors(agent_id: &str) -> HashMap<TreeId, Vec<ProcStat>> {
    let me = std::process::id();
    let mut out: HashMap<TreeId, Vec<ProcStat>> = HashMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, pgrp: u32, session: u32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            session,
            cpu_ticks: 0,
            starttime: u64::from(pid),
            rss_pages: 0,
        }
    }

    #[test]
    fn finds_group_descendants_and_marked_escapees() {
        let agent = 10;
        let snap = Snapshot {
            procs: vec![
                p(100, agent, 100, 1),   // main process
                p(101, 100, 100, 1),     // child in the group
                p(102, 100, 102, 102),   // setsid child: found by descent
                p(103, 102, 102, 102),   // its child
                p(200, agent, 200, 200), // escaped daemon (parent gone): found by identity
                p(201, 200, 200, 200),   // its child
                p(300, agent, 300, 1),   // another app's main process
                p(301, 300, 100, 1),     // joined app 1's group oddly: still ours by group
                p(400, 1, 400, 400),     // someone else's daemon
            ],
            identity: [
                (200, ("agent-a".to_string(), (1, 0))),
                (300, ("agent-a".to_string(), (2, 0))),
                (400, ("agent-b".to_string(), (1, 0))),
            ]
            .into(),
            dead: Vec::new(),
        };
        let key = TreeKey {
            agent_id: "agent-a".into(),
            app_id: 1,
            slot: 0,
            root: Some(100),
        };
        let pids: Vec<u32> = find(&snap, &key).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [100, 101, 102, 103, 200, 201, 301]);
        let other = TreeKey {
            agent_id: "agent-a".into(),
            app_id: 2,
            slot: 0,
            root: None,
        };
        let pids: Vec<u32> = find(&snap, &other).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [300, 301]);
    }
}
