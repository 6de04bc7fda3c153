//! Shared `/proc` snapshots. Finding a tree needs a scan of every process; when a thousand apps
//! stop at once, a thousand scans of a thousand processes each would take half a minute. The
//! scanner runs one scan at a time and hands each finished snapshot to every request made
//! before that scan began, so concurrent stops share scans, and no one gets a view older than
//! their request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::{sync::Notify, time::Instant};

use super::procfs::{self, Listing, ProcStat};
use super::tree::TreeId;

/// Every live (non-zombie) process but the agent, with the grpm identity of those that may have
/// left their app's tree.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub procs: Vec<ProcStat>,
    /// `(GRPM_AGENT_ID, GRPM_APP_ID)` by pid, read only for orphans and session or group
    /// leaders: the others are reached by descent from them or from an app's main process.
    pub identity: HashMap<u32, (String, TreeId)>,
    /// Zombies (exited, not reaped): in no snapshot's `procs`, and dead for good.
    pub dead: Vec<u32>,
}

/// Identities read before, by `(pid, starttime)`: a process's environment is set when it
/// starts, so each process's is read once, not at every scan.
pub type Identities = HashMap<(u32, u64), Option<(String, TreeId)>>;

/// What scans keep between them: the processes' open stat files and their identities.
pub struct ScanCache {
    stats: procfs::StatFiles,
    known: Identities,
}

impl Default for ScanCache {
    fn default() -> ScanCache {
        ScanCache {
            stats: procfs::StatFiles::sized_to_open_files(),
            known: Identities::new(),
        }
    }
}

impl Snapshot {
    /// Takes a snapshot now, reading only the identities the cache lacks; the cache is left
    /// with the processes of this snapshot only. Blocking.
    pub fn take_with(cache: &mut ScanCache) -> Snapshot {
        Snapshot::take_skipping(cache, &Listing::new(), None)
    }

    /// A snapshot without the processes of `skip` that are still the same processes (see
    /// `StatFiles::scan_skipping`): for tree sampling, never for a stop. Their identities stay
    /// in the cache. `listed` gets every process listed, read or not.
    pub fn take_skipping(
        cache: &mut ScanCache,
        skip: &Listing,
        listed: Option<&mut Listing>,
    ) -> Snapshot {
        let me = std::process::id();
        let mut procs = cache.stats.scan_skipping(skip, listed);
        let dead = procs
            .iter()
            .filter(|p| p.is_dead())
            .map(|p| p.pid)
            .collect();
        procs.retain(|p| !p.is_dead() && p.pid != me);
        let known = &mut cache.known;
        let mut seen = Identities::with_capacity(known.len());
        if !skip.is_empty() {
            let carried: Vec<(u32, u64)> = known
                .keys()
                .filter(|(pid, _)| skip.contains_key(pid))
                .copied()
                .collect();
            for key in carried {
                if let Some(id) = known.remove(&key) {
                    seen.insert(key, id);
                }
            }
        }
        let identity = procs
            .iter()
            .filter(|p| p.ppid == 1 || p.ppid == me || p.session == p.pid || p.pgrp == p.pid)
            .filter_map(|p| {
                let key = (p.pid, p.starttime);
                let id = match known.remove(&key) {
                    Some(id) => id,
                    None => procfs::grpm_identity(p.pid),
                };
                seen.insert(key, id.clone());
                Some((p.pid, id?))
            })
            .collect();
        *known = seen;
        Snapshot {
            procs,
            identity,
            dead,
        }
    }
}

#[derive(Default)]
struct State {
    latest: Option<(Instant, Arc<Snapshot>)>,
    /// When the scan in progress began.
    running: Option<Instant>,
}

#[derive(Default)]
pub struct Scanner {
    state: Mutex<State>,
    done: Notify,
    /// Open files and identities from the previous scans (only the scanning task touches it).
    known: Arc<Mutex<ScanCache>>,
}

impl Scanner {
    /// A snapshot taken entirely after `after`.
    pub async fn after(self: &Arc<Self>, after: Instant) -> Arc<Snapshot> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            {
                let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((began, snap)) = &st.latest {
                    if *began >= after {
                        return snap.clone();
                    }
                }
                // Register for the end of the current scan before letting go of the lock.
                notified.as_mut().enable();
                if st.running.is_none() {
                    let began = Instant::now();
                    st.running = Some(began);
                    // The scan runs in its own task: a caller that gives up cannot leave
                    // `running` set forever.
                    let me = self.clone();
                    tokio::spawn(async move {
                        let known = me.known.clone();
                        let snap = tokio::task::spawn_blocking(move || {
                            let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
                            Snapshot::take_with(&mut known)
                        })
                        .await
                        .unwrap_or_default();
                        let mut st = me.state.lock().unwrap_or_else(|e| e.into_inner());
                        st.latest = Some((began, Arc::new(snap)));
                        st.running = None;
                        drop(st);
                        me.done.notify_waiters();
                    });
                }
            }
            notified.await;
        }
    }

    /// A snapshot taken after this call.
    pub async fn fresh(self: &Arc<Self>) -> Arc<Snapshot> {
        self.after(Instant::now()).await
    }

    /// A snapshot of its own, without the processes of `skip` that are still the same
    /// (`Snapshot::take_skipping`), with `skip` back and every process listed. Never shared:
    /// a stop needs every process.
    pub async fn sparse(self: &Arc<Self>, skip: Listing) -> (Snapshot, Listing, Listing) {
        let known = self.known.clone();
        tokio::task::spawn_blocking(move || {
            let mut cache = known.lock().unwrap_or_else(|e| e.into_inner());
            let mut listed = Listing::with_capacity(skip.len() + 64);
            let snap = Snapshot::take_skipping(&mut cache, &skip, Some(&mut listed));
            (snap, skip, listed)
        })
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_requests_share_scans_and_never_get_an_older_one() {
        let scanner = Arc::new(Scanner::default());
        let asked = Instant::now();
        let snaps = futures_util::future::join_all((0..50).map(|_| scanner.fresh())).await;
        // Fifty concurrent requests: at most two scans (one running, one after it).
        let distinct: std::collections::HashSet<*const Snapshot> =
            snaps.iter().map(Arc::as_ptr).collect();
        assert!(distinct.len() <= 2, "{} scans", distinct.len());
        let me = std::process::id();
        assert!(snaps[0].procs.iter().all(|p| p.pid != me && !p.is_dead()));
        // A later request gets a later scan.
        let later = scanner.fresh().await;
        assert!(!snaps.iter().any(|s| Arc::ptr_eq(s, &later)));
        let began = scanner.state.lock().unwrap().latest.as_ref().unwrap().0;
        assert!(began >= asked);
    }
}
