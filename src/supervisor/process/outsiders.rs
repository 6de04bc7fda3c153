//! Processes tree sampling can leave out: those in no app's tree. A host runs many processes
//! that are none of the agent's business, and reading each one's `stat` every tick would cost
//! the agent as much as its apps' own. A process that was in no tree when first read stays out
//! of every tree: its descendants are its own, an app's group lives in the app's own session
//! (which another process cannot join), and a process marked with an app's identity is read
//! anyway. So it is read once and then skipped while its `/proc` entry stays the same (the
//! entry's inode number names one process: a reused pid gets a new one).
//!
//! Two cases would break that, and are handled: a process becomes an app's main process after
//! it was first read (a spawn between its fork and the agent learning its pid): every skip is
//! dropped when a main process is among them; and anything unforeseen is bounded by reading
//! every process again every `FULL_EVERY` ticks. Stops never skip anything.

use super::{
    procfs::{Listing, ProcStat},
    scan::Snapshot,
};

/// Every this many ticks, every process is read again.
const FULL_EVERY: u64 = 30;

#[derive(Default)]
pub struct Outsiders {
    known: Listing,
    ticks: u64,
}

impl Outsiders {
    /// What the next scan may skip, given the main processes of the apps running now; taken
    /// out of `self` until `learn` gives the next set.
    pub fn skip(&mut self, roots: impl IntoIterator<Item = u32>) -> Listing {
        self.ticks += 1;
        let mut skip = std::mem::take(&mut self.known);
        if self.ticks % FULL_EVERY == 0 || roots.into_iter().any(|r| skip.contains_key(&r)) {
            skip.clear();
        }
        skip
    }

    /// After a scan that skipped `skipped` and listed `listed`: the skipped processes still
    /// listed as the same entry stay out; of those read (`snap`), the ones in no tree
    /// (`sampled`), not the agent's children (a spawn in flight) and not marked with an
    /// identity, join them, and so do zombies (dead until reaped, when their entry goes).
    pub fn learn(
        &mut self,
        skipped: Listing,
        snap: &Snapshot,
        listed: &Listing,
        sampled: impl Fn(&ProcStat) -> bool,
        agent: u32,
    ) {
        let mut next = skipped;
        next.retain(|pid, ino| listed.get(pid) == Some(ino));
        for pid in &snap.dead {
            if let Some(&ino) = listed.get(pid) {
                next.insert(*pid, ino);
            }
        }
        for p in &snap.procs {
            if sampled(p) || p.ppid == agent || snap.identity.contains_key(&p.pid) {
                continue;
            }
            if let Some(&ino) = listed.get(&p.pid) {
                next.insert(p.pid, ino);
            }
        }
        self.known = next;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn p(pid: u32, ppid: u32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp: pid,
            session: pid,
            cpu_ticks: 0,
            starttime: 1,
            rss_pages: 1,
        }
    }

    fn listing(pairs: &[(u32, u64)]) -> Listing {
        pairs.iter().copied().collect()
    }

    #[test]
    fn outsiders_are_skipped_while_they_are_the_same_processes() {
        let mut o = Outsiders::default();
        let agent = 5;
        // 10: an app's main process; 11 its child; 20: another program; 30: a spawn in
        // flight (the agent's child); 40: marked with an identity.
        let mut snap = Snapshot {
            procs: vec![p(10, agent), p(11, 10), p(20, 1), p(30, agent), p(40, 1)],
            ..Snapshot::default()
        };
        snap.identity.insert(40, ("a".into(), (9, 0)));
        // 50: a zombie.
        snap.dead.push(50);
        let listed = listing(&[
            (10, 100),
            (11, 110),
            (20, 200),
            (30, 300),
            (40, 400),
            (50, 500),
        ]);
        let members: HashSet<u32> = [10, 11].into();
        let skip = o.skip([10]);
        assert!(skip.is_empty(), "nothing is skipped at first");
        o.learn(skip, &snap, &listed, |p| members.contains(&p.pid), agent);
        assert_eq!(o.skip([10]), listing(&[(20, 200), (50, 500)]));
        // Still there as the same entry: stays out. A new entry under the pid (a reused pid):
        // read again, and out again only if it is in no tree.
        o.learn(
            listing(&[(20, 200)]),
            &Snapshot::default(),
            &listed,
            |p| members.contains(&p.pid),
            agent,
        );
        assert_eq!(o.skip([10]), listing(&[(20, 200)]));
        let reused = listing(&[(10, 100), (11, 110), (20, 201)]);
        o.learn(
            listing(&[(20, 200)]),
            &Snapshot::default(),
            &reused,
            |p| members.contains(&p.pid),
            agent,
        );
        assert!(o.skip([10]).is_empty());
    }

    #[test]
    fn a_main_process_among_them_and_every_thirtieth_tick_read_everything() {
        let mut o = Outsiders::default();
        let snap = Snapshot {
            procs: vec![p(20, 1), p(21, 20)],
            ..Snapshot::default()
        };
        let listed = listing(&[(20, 200), (21, 210)]);
        let skip = o.skip([]);
        o.learn(skip, &snap, &listed, |_| false, 5);
        // 20 turned out to be an app's main process: nothing is skipped this tick.
        assert!(o.skip([20]).is_empty());
        o.learn(Listing::new(), &snap, &listed, |_| false, 5);
        let mut full = 0;
        for _ in 0..FULL_EVERY {
            let skip = o.skip([]);
            if skip.is_empty() {
                full += 1;
            }
            // A full read finds them out of every tree again.
            o.learn(skip, &snap, &listed, |_| false, 5);
        }
        assert_eq!(full, 1, "one full read in {FULL_EVERY} ticks");
    }
}
