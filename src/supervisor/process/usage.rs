//! Tree usage: the CPU and memory of every app's whole tree (the same set `stop` would end),
//! sampled on a fixed interval from one shared `/proc` snapshot per tick. Listing reads the
//! last sample; nothing here runs per request.

use std::{
    collections::{HashMap, HashSet},
    fs,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{
    outsiders::Outsiders,
    procfs::{self, ProcStat},
    scan::{Scanner, Snapshot},
    tree::{Forest, TreeId, TreeKey},
};

/// Resource use of one app's tree, as of the last sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Percent of one core used by the tree over the last sampling interval.
    pub cpu_percent: f64,
    /// PSS summed over the tree where `/proc/PID/smaps_rollup` is readable (shared pages split
    /// between the processes that map them, so never counted twice), RSS otherwise. PSS is read
    /// about once a minute per process (`PSS_EVERY`) and follows its RSS in between.
    pub memory_bytes: u64,
    /// Live processes in the tree.
    pub processes: u32,
    /// CPU seconds the app's trees used while sampled, since the app was created in this agent
    /// (a counter: it never goes down).
    pub cpu_seconds_total: f64,
}

/// Per-app figures of the last tick.
#[derive(Debug, Default)]
pub struct Samples {
    pub by_app: HashMap<TreeId, Usage>,
}

impl Samples {
    /// The usage of one instance's tree (`(app id, slot)`).
    pub fn get(&self, id: TreeId) -> Usage {
        self.by_app.get(&id).copied().unwrap_or_default()
    }
}

/// What a sampler remembers between ticks.
pub struct TreeSampler {
    /// Each process's PSS is read at least every this many ticks (see `PSS_EVERY`).
    memory_every: u64,
    /// CPU ticks of each process `(pid, starttime)` at the previous tick.
    prev: HashMap<(u32, u64), u64>,
    /// Seconds since boot at the previous tick.
    prev_uptime: Option<f64>,
    /// Cumulative CPU seconds per app.
    totals: HashMap<TreeId, f64>,
    /// The last memory reading of each process, with its RSS (pages) at that moment.
    memory: HashMap<(u32, u64), (u64, u64)>,
    ticks: u64,
}

/// A process's PSS is read when it is new, when its RSS moved by more than 1/8 since the last
/// reading, and otherwise once in this long (in ticks: this over the interval, at least every
/// tick): reading PSS costs the kernel a walk of the process's page tables (more, the more
/// memory it maps), and is most of what sampling costs after the `stat` of every process.
/// Processes are spread over the ticks by pid. In between, the figure follows the process's
/// RSS (free: it is in the snapshot) at the PSS/RSS ratio of the last reading, so growth shows
/// at once; only a change in sharing alone (a copy-on-write page written, a sibling gone) waits
/// for the next reading.
pub const PSS_EVERY: Duration = Duration::from_secs(60);

impl TreeSampler {
    /// A sampler ticking every `interval`.
    pub fn new(interval: Duration) -> TreeSampler {
        let every = PSS_EVERY.as_millis() / interval.as_millis().max(1);
        TreeSampler {
            memory_every: (every as u64).max(1),
            prev: HashMap::new(),
            prev_uptime: None,
            totals: HashMap::new(),
            memory: HashMap::new(),
            ticks: 0,
        }
    }
}

/// Facts from outside the snapshot, so the arithmetic is testable.
pub struct Clock {
    /// Seconds since boot now (`/proc/uptime`).
    pub uptime: f64,
    /// Clock ticks per second.
    pub hz: f64,
}

impl TreeSampler {
    /// One tick: `running` are the apps with a main process (their trees are found in `snap`),
    /// `known` every app (others are forgotten). `memory` gives one process's memory in bytes.
    pub fn sample(
        &mut self,
        snap: &Snapshot,
        running: &[TreeKey],
        known: &[TreeId],
        clock: &Clock,
        memory: impl Fn(&ProcStat) -> u64,
    ) -> Samples {
        let forest = Forest::new(snap);
        self.ticks += 1;
        let mut next = HashMap::with_capacity(self.prev.len());
        let mut next_memory = HashMap::with_capacity(self.memory.len());
        let mut by_app = HashMap::with_capacity(known.len());
        let elapsed = self.prev_uptime.map(|then| clock.uptime - then);
        for key in running {
            let members = forest.members(key);
            let mut ticks = 0u64;
            let mut mem = 0u64;
            for p in &members {
                let k = (p.pid, p.starttime);
                ticks += match self.prev.get(&k) {
                    Some(then) => p.cpu_ticks.saturating_sub(*then),
                    // New since the last tick: all its time falls in this interval. Seen for
                    // the first time but older (the first tick, an adopted tree): none does.
                    None => match self.prev_uptime {
                        Some(then) if p.starttime as f64 / clock.hz >= then => p.cpu_ticks,
                        _ => 0,
                    },
                };
                next.insert(k, p.cpu_ticks);
                let (m, rss_then) = match self.memory.get(&k) {
                    Some(&(m, rss_then))
                        if (u64::from(p.pid) + self.ticks) % self.memory_every != 0
                            && p.rss_pages.abs_diff(rss_then) * 8 <= rss_then =>
                    {
                        (m, rss_then)
                    }
                    _ => (memory(p), p.rss_pages),
                };
                next_memory.insert(k, (m, rss_then));
                mem += if rss_then > 0 && rss_then != p.rss_pages {
                    (m as f64 * p.rss_pages as f64 / rss_then as f64) as u64
                } else {
                    m
                };
            }
            let secs = ticks as f64 / clock.hz;
            let total = self.totals.entry((key.app_id, key.slot)).or_default();
            *total += secs;
            let cpu_percent = match elapsed {
                Some(e) if e > 0.0 => 100.0 * secs / e,
                _ => 0.0,
            };
            by_app.insert(
                (key.app_id, key.slot),
                Usage {
                    cpu_percent,
                    memory_bytes: mem,
                    processes: members.len() as u32,
                    cpu_seconds_total: *total,
                },
            );
        }
        let known_set: HashSet<&TreeId> = known.iter().collect();
        self.totals.retain(|id, _| known_set.contains(id));
        for id in known {
            if let Some(total) = self.totals.get(id) {
                by_app.entry(*id).or_insert(Usage {
                    cpu_seconds_total: *total,
                    ..Usage::default()
                });
            }
        }
        self.prev = next;
        self.memory = next_memory;
        self.prev_uptime = Some(clock.uptime);
        Samples { by_app }
    }

    /// `p` was in an app's tree at the last tick.
    pub fn sampled(&self, p: &ProcStat) -> bool {
        self.prev.contains_key(&(p.pid, p.starttime))
    }
}

/// The sampling task: every `interval`, a snapshot of every process but those known to be in
/// no app's tree (see `outsiders`), and every running app's tree in it; the result replaces
/// `out`. Ticks with no app running read nothing. Ends when `cancel` fires.
pub async fn run(
    scanner: Arc<Scanner>,
    interval: Duration,
    apps: impl Fn() -> (Vec<TreeKey>, Vec<TreeId>),
    out: tokio::sync::watch::Sender<Arc<Samples>>,
    cancel: CancellationToken,
) {
    let sampler = Arc::new(Mutex::new((
        TreeSampler::new(interval),
        Outsiders::default(),
    )));
    let agent = std::process::id();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let (running, known) = apps();
        let (snap, skipped, listed) = if running.is_empty() {
            Default::default()
        } else {
            let skip = lock(&sampler).1.skip(running.iter().filter_map(|k| k.root));
            scanner.sparse(skip).await
        };
        let sampler = sampler.clone();
        let taken = tokio::task::spawn_blocking(move || {
            let clock = Clock::now();
            let (trees, outsiders) = &mut *lock(&sampler);
            let samples = trees.sample(&snap, &running, &known, &clock, memory);
            outsiders.learn(skipped, &snap, &listed, |p| trees.sampled(p), agent);
            samples
        })
        .await;
        if let Ok(samples) = taken {
            // Owners with a memory limit watch this; the others never wake.
            out.send_replace(Arc::new(samples));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clock {
    pub fn now() -> Clock {
        let uptime = fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Clock {
            uptime,
            hz: procfs::ticks_per_second() as f64,
        }
    }
}

/// A process's memory: its PSS from `smaps_rollup` when readable, else its RSS.
pub fn memory(p: &ProcStat) -> u64 {
    pss_kib_of(p.pid).map_or_else(|| p.rss_pages * procfs::page_size(), |kib| kib * 1024)
}

/// Reads `smaps_rollup` with one read into a stack buffer: the file is a few lines (under
/// 1 KiB), produced whole by the first read; `Pss:` is its third line.
fn pss_kib_of(pid: u32) -> Option<u64> {
    use std::io::Read;
    let mut f = fs::File::open(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut buf = [0u8; 2048];
    let n = f.read(&mut buf).ok()?;
    pss_kib(std::str::from_utf8(&buf[..n]).ok()?)
}

/// The `Pss:` line of `smaps_rollup`, in KiB.
fn pss_kib(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, pgrp: u32, ticks: u64, start: u64) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            session: pgrp,
            cpu_ticks: ticks,
            starttime: start,
            rss_pages: 1,
        }
    }

    fn key(app_id: crate::model::AppId, root: u32) -> TreeKey {
        TreeKey {
            agent_id: "a".into(),
            app_id,
            slot: 0,
            root: Some(root),
        }
    }

    #[test]
    fn cpu_is_a_rate_over_the_interval_and_memory_a_sum_over_the_tree() {
        let mut s = TreeSampler::new(Duration::from_secs(2));
        let clock = |uptime| Clock { uptime, hz: 100.0 };
        // App 1: a master and two workers; app 2: one process. Started at 1 s after boot.
        let snap = |w: u64| Snapshot {
            procs: vec![
                p(10, 1, 10, 50, 100),
                p(11, 10, 10, w, 100),
                p(12, 10, 10, w, 100),
                p(20, 1, 20, 7, 100),
            ],
            identity: HashMap::new(),
            dead: Vec::new(),
        };
        let keys = [key(1, 10), key(2, 20)];
        let first = s.sample(&snap(100), &keys, &[(1, 0), (2, 0)], &clock(10.0), |_| 1000);
        // The first tick knows no interval: no rate, no time counted for old processes.
        assert_eq!(first.get((1, 0)).processes, 3);
        assert_eq!(first.get((1, 0)).memory_bytes, 3000);
        assert_eq!(first.get((1, 0)).cpu_percent, 0.0);
        // Two seconds later each worker used 0.5 s: 1 s of CPU in 2 s is 50 %.
        let second = s.sample(&snap(150), &keys, &[(1, 0), (2, 0)], &clock(12.0), |_| 1000);
        assert!((second.get((1, 0)).cpu_percent - 50.0).abs() < 1e-9);
        assert!((second.get((1, 0)).cpu_seconds_total - 1.0).abs() < 1e-9);
        assert_eq!(second.get((2, 0)).cpu_percent, 0.0);
        // A process born in the interval counts with all its time; a vanished one drops out.
        let mut third_snap = snap(150);
        third_snap.procs.retain(|p| p.pid != 12);
        third_snap.procs.push(p(13, 10, 10, 20, 1300));
        let third = s.sample(&third_snap, &keys, &[(1, 0), (2, 0)], &clock(14.0), |_| {
            1000
        });
        assert!((third.get((1, 0)).cpu_percent - 10.0).abs() < 1e-9);
        assert_eq!(third.get((1, 0)).processes, 3);
        // Stopped (no main process): zeros, and the counter stays; deleted: forgotten.
        let fourth = s.sample(
            &third_snap,
            &keys[1..],
            &[(1, 0), (2, 0)],
            &clock(16.0),
            |_| 1000,
        );
        assert_eq!(fourth.get((1, 0)).processes, 0);
        assert!((fourth.get((1, 0)).cpu_seconds_total - 1.2).abs() < 1e-9);
        let fifth = s.sample(&third_snap, &keys[1..], &[(2, 0)], &clock(18.0), |_| 1000);
        assert_eq!(fifth.get((1, 0)), Usage::default());
    }

    #[test]
    fn memory_is_read_now_and_then_and_follows_rss_in_between() {
        let mut s = TreeSampler::new(Duration::from_secs(2));
        let clock = Clock {
            uptime: 10.0,
            hz: 100.0,
        };
        let reads = std::cell::Cell::new(0);
        let pss = |_: &ProcStat| {
            reads.set(reads.get() + 1);
            500
        };
        let mut proc = p(10, 1, 10, 0, 100);
        let snap = |p: ProcStat| Snapshot {
            procs: vec![p],
            identity: HashMap::new(),
            dead: Vec::new(),
        };
        let keys = [key(1, 10)];
        let mut seen = Vec::new();
        // Every 30 ticks at 2 s.
        assert_eq!(s.memory_every, 30);
        assert_eq!(TreeSampler::new(Duration::from_secs(120)).memory_every, 1);
        for tick in 0..30 {
            // RSS grows by 1/16 after the first tick: PSS scales with it until read again.
            proc.rss_pages = if tick == 0 { 16 } else { 17 };
            let usage = s
                .sample(&snap(proc), &keys, &[(1, 0)], &clock, pss)
                .get((1, 0));
            seen.push(usage.memory_bytes);
        }
        assert_eq!(reads.get(), 2, "read when new and once per 30 ticks");
        assert_eq!(seen[0], 500);
        assert!(seen[1..].iter().all(|&m| m == 531 || m == 500), "{seen:?}");
        assert!(seen.contains(&531), "{seen:?}");
        // RSS doubling is read at once.
        proc.rss_pages = 34;
        s.sample(&snap(proc), &keys, &[(1, 0)], &clock, pss);
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn reads_pss_from_smaps_rollup() {
        let text = "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:                4096 kB\n\
                    Pss:                1234 kB\nPss_Dirty:  100 kB\n";
        assert_eq!(pss_kib(text), Some(1234));
        assert_eq!(pss_kib("Rss: 1 kB\n"), None);
        let me = procfs::read_stat(std::process::id()).unwrap();
        assert!(memory(&me) > 0);
    }
}
