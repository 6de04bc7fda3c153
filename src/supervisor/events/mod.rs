//! The event hub: numbers every event, keeps the most recent ones so a subscriber can resume
//! from a sequence number, and fans out to subscribers without ever waiting for one.
//!
//! Each subscriber has its own bounded queue. A publisher only locks, pushes and notifies; when a
//! queue is full the event is counted as lost for that subscriber, and the subscriber later gets
//! one `gap` event in its place saying how many it missed. A subscriber that never reads costs at
//! most its queue's bound.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
};

use tokio::sync::Notify;

mod journal;

use journal::cost;
pub(super) use journal::EventLog;

use crate::model::{Cause, Event, EventKind};

/// Which events a subscriber wants. Empty sets mean "all"; gaps are always delivered.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub apps: HashSet<String>,
    pub kinds: HashSet<EventKind>,
}

impl Filter {
    fn wants(&self, e: &Event) -> bool {
        e.kind == EventKind::Gap
            || ((self.apps.is_empty() || self.apps.contains(&e.app))
                && (self.kinds.is_empty() || self.kinds.contains(&e.kind)))
    }
}

/// Missed events, pending a gap event.
#[derive(Debug, Clone, Copy)]
struct Missed {
    last_seq: u64,
    count: u64,
}

struct Queue {
    events: VecDeque<Arc<Event>>,
    /// Approximate bytes held by `events`.
    bytes: usize,
    missed: Option<Missed>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    filter: Filter,
    bound: Bound,
}

/// How much one subscriber may have queued: events and (approximate) bytes.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub events: usize,
    pub bytes: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn offer(&self, e: &Arc<Event>) {
        if !self.filter.wants(e) {
            return;
        }
        {
            let mut q = self.lock();
            if q.closed {
                return;
            }
            let size = cost(e);
            if q.events.len() >= self.bound.events
                || (q.bytes + size > self.bound.bytes && !q.events.is_empty())
            {
                let m = q.missed.get_or_insert(Missed {
                    last_seq: e.seq,
                    count: 0,
                });
                m.last_seq = e.seq;
                m.count += 1;
                return;
            }
            if let Some(m) = q.missed.take() {
                q.events.push_back(Arc::new(gap(m)));
            }
            q.bytes += size;
            q.events.push_back(e.clone());
        }
        self.ready.notify_one();
    }
}

/// A gap event: numbered as the last event it stands for, so a client that resumes from it
/// continues right after the loss.
fn gap(m: Missed) -> Event {
    let mut e = Event::new(EventKind::Gap, 0, "", Cause::Recovery);
    e.seq = m.last_seq;
    e.lost = m.count;
    e
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    shared: Arc<Shared>,
    gauge: Arc<Gauge>,
}

/// How many subscriptions are live, to tell when many have ended: what a thousand streams
/// and their connections took is then free in the allocator, but stays in the process until
/// it is handed back (see [`Hub::shrunk`]).
#[derive(Default)]
struct Gauge {
    live: AtomicUsize,
    /// The most live at once since the last shrink.
    peak: AtomicUsize,
    shrunk: Notify,
}

/// Fewer than this many subscriptions ending is not worth handing memory back for.
const SHRINK_FROM: usize = 64;

impl Drop for Subscription {
    fn drop(&mut self) {
        let g = &self.gauge;
        let live = g.live.fetch_sub(1, Ordering::Relaxed) - 1;
        let peak = g.peak.load(Ordering::Relaxed);
        if peak >= SHRINK_FROM && live <= peak / 2 {
            g.peak.store(live, Ordering::Relaxed);
            g.shrunk.notify_one();
        }
    }
}

impl Subscription {
    /// The next event, in order (a `gap` where events were lost); `None` once the hub closed.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            {
                let mut q = self.shared.lock();
                if let Some(e) = q.events.pop_front() {
                    q.bytes = q.bytes.saturating_sub(cost(&e));
                    return Some(e);
                }
                if let Some(m) = q.missed.take() {
                    return Some(Arc::new(gap(m)));
                }
                if q.closed {
                    return None;
                }
            }
            self.shared.ready.notified().await;
        }
    }
}

/// How a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Only events published from now on.
    Now,
    /// Every kept event after this sequence number.
    After(u64),
    /// The last n kept events (that pass the filter).
    Recent(usize),
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("too many subscribers ({0}); try again later")]
    TooMany(usize),
    /// `After(from)` names a number this agent has not handed out yet: there is nothing to
    /// resume from, and live events (numbered below `from`) would look like a replay.
    #[error(
        "from_seq {from} is ahead of this agent's last event ({last}): resume from at most \
         {last}, or subscribe without from_seq"
    )]
    Ahead { from: u64, last: u64 },
}

/// Events not published because their numbers could not be reserved on disk.
struct Held {
    count: u64,
    error: String,
}

struct Inner {
    next_seq: u64,
    /// Set while events are refused (see [`Hub::publish`]).
    held: Option<Held>,
    kept: VecDeque<Arc<Event>>,
    keep: usize,
    /// What `kept` holds (approximate bytes, see `journal::cost`), and its bound.
    kept_bytes: usize,
    keep_bytes: usize,
    subscribers: Vec<Weak<Shared>>,
    closed: bool,
    /// Handed over to the next agent: nothing more is numbered.
    sealed: bool,
    /// Events published by this hub, by kind (for metrics).
    published: HashMap<EventKind, u64>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    gauge: Arc<Gauge>,
    log: Option<Arc<EventLog>>,
    queue_bound: Bound,
    max_subscribers: usize,
}

/// What a subscriber may have queued before it starts missing events: 4,096 events or 4 MiB.
pub const QUEUE_BOUND: Bound = Bound {
    events: 4096,
    bytes: 4 << 20,
};
/// What the kept events may hold by default (approximate bytes; `--events-kept-bytes`).
pub const KEEP_BYTES: usize = 8 << 20;
/// Subscribers at once.
pub const MAX_SUBSCRIBERS: usize = 1024;

impl Hub {
    /// A hub keeping `keep` events, continuing after what `log` holds (if any).
    pub fn new(keep: usize, log: Option<Arc<EventLog>>) -> Hub {
        let (next_seq, kept) = match &log {
            Some(l) => l.recovered(keep),
            None => (1, VecDeque::new()),
        };
        Hub {
            inner: Mutex::new(Inner {
                next_seq,
                held: None,
                kept_bytes: kept.iter().map(cost).sum(),
                kept: kept.into_iter().map(Arc::new).collect(),
                keep: keep.max(1),
                keep_bytes: usize::MAX,
                subscribers: Vec::new(),
                closed: false,
                sealed: false,
                published: HashMap::new(),
            }),
            log,
            gauge: Arc::default(),
            queue_bound: QUEUE_BOUND,
            max_subscribers: MAX_SUBSCRIBERS,
        }
    }

    /// Bounds the kept events by their (approximate) bytes too, [`KEEP_BYTES`] by default in
    /// the agent: 10,000 notifications of the largest size would otherwise hold gigabytes.
    /// The newest event is always kept.
    pub fn keep_bytes(self, bytes: usize) -> Hub {
        {
            let mut inner = self.lock();
            inner.keep_bytes = bytes;
            Self::trim(&mut inner, 0);
        }
        self
    }

    /// Drops the oldest kept events until one more of `incoming` bytes fits both bounds.
    fn trim(inner: &mut Inner, incoming: usize) {
        let extra = usize::from(incoming > 0);
        while let Some(front) = inner.kept.front() {
            if inner.kept.len() + extra <= inner.keep
                && inner.kept_bytes + incoming <= inner.keep_bytes
            {
                break;
            }
            inner.kept_bytes -= cost(front);
            inner.kept.pop_front();
        }
    }

    /// For tests: small bounds.
    #[cfg(test)]
    pub fn with_bounds(mut self, queue_events: usize, max_subscribers: usize) -> Hub {
        self.queue_bound = Bound {
            events: queue_events,
            bytes: usize::MAX,
        };
        self.max_subscribers = max_subscribers;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers `e`, keeps it, hands it to every subscriber, queues it for the log; returns it.
    /// Never waits for a subscriber.
    ///
    /// A number is handed out only once it is below the mark reserved on disk
    /// (`events.seq`), so that no number is ever used twice, even after a crash. When the mark
    /// must move and cannot be written (a full disk), the event is not published (`None`):
    /// it is counted, and the first event published after that is preceded by one `gap`
    /// event saying how many were held back and why. Apps' states are unaffected (`list`
    /// and `describe` stay true); only the stream misses those transitions.
    pub fn publish(&self, e: Event) -> Option<Arc<Event>> {
        let mut inner = self.lock();
        if inner.sealed {
            return None;
        }
        if let Some(log) = &self.log {
            let needed = inner.next_seq + u64::from(inner.held.is_some());
            if let Err(err) = log.reserve_through(needed) {
                let held = inner.held.get_or_insert_with(|| {
                    tracing::error!(
                        error = %err,
                        "cannot reserve event numbers in events.seq: events are not published \
                         until it can be written (one gap event will say how many)"
                    );
                    Held {
                        count: 0,
                        error: err.to_string(),
                    }
                });
                held.count += 1;
                return None;
            }
        }
        let gap = inner.held.take().map(|held| {
            tracing::info!(held = held.count, "event numbers reserved again");
            let mut g = Event::new(EventKind::Gap, 0, "", Cause::Recovery);
            g.lost = held.count;
            g.message = format!(
                "{} events were not published: their numbers could not be reserved on disk ({})",
                held.count, held.error
            );
            Self::number(&mut inner, g)
        });
        let e = Self::number(&mut inner, e);
        drop(inner);
        if let Some(log) = &self.log {
            if let Some(g) = &gap {
                log.append(g.clone());
            }
            log.append(e.clone());
        }
        Some(e)
    }

    /// Gives `e` the next number, keeps it, and offers it to every subscriber.
    fn number(inner: &mut Inner, mut e: Event) -> Arc<Event> {
        e.seq = inner.next_seq;
        inner.next_seq += 1;
        *inner.published.entry(e.kind).or_default() += 1;
        let e = Arc::new(e);
        let size = cost(&e);
        Self::trim(inner, size);
        inner.kept_bytes += size;
        inner.kept.push_back(e.clone());
        inner.subscribers.retain(|w| match w.upgrade() {
            Some(s) => {
                s.offer(&e);
                true
            }
            None => false,
        });
        e
    }

    /// Events published since the hub was made, by kind, and the live subscribers.
    pub fn counts(&self) -> (Vec<(EventKind, u64)>, usize) {
        let inner = self.lock();
        let live = inner
            .subscribers
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count();
        (
            inner.published.iter().map(|(k, n)| (*k, *n)).collect(),
            live,
        )
    }

    /// Replays kept events as `from` says, then (with `follow`) delivers live ones, with no gap
    /// and no duplicate between the two: both are taken under one lock. When `After(n)` reaches
    /// back past what is kept, the replay starts with a gap event saying how many are gone.
    pub fn subscribe(
        &self,
        from: Replay,
        filter: Filter,
        follow: bool,
    ) -> Result<(Vec<Arc<Event>>, Option<Subscription>), Refused> {
        let mut inner = self.lock();
        inner.subscribers.retain(|w| w.strong_count() > 0);
        if follow && inner.subscribers.len() >= self.max_subscribers {
            return Err(Refused::TooMany(self.max_subscribers));
        }
        // The last number handed out is `next_seq - 1`; resuming from it (or before) is
        // fine, resuming from a later one is a client's mistake (or another agent's number).
        let last = inner.next_seq - 1;
        if let Replay::After(from) = from {
            if from > last {
                return Err(Refused::Ahead { from, last });
            }
        }
        let mut replay: Vec<Arc<Event>> = Vec::new();
        match from {
            Replay::Now => {}
            Replay::After(n) => {
                let oldest = inner.kept.front().map_or(inner.next_seq, |e| e.seq);
                if n + 1 < oldest {
                    replay.push(Arc::new(gap(Missed {
                        last_seq: oldest - 1,
                        count: oldest - 1 - n,
                    })));
                }
                replay.extend(
                    inner
                        .kept
                        .iter()
                        .filter(|e| e.seq > n && filter.wants(e))
                        .cloned(),
                );
            }
            Replay::Recent(count) => {
                let mut recent: Vec<Arc<Event>> = inner
                    .kept
                    .iter()
                    .rev()
                    .filter(|e| filter.wants(e))
                    .take(count)
                    .cloned()
                    .collect();
                recent.reverse();
                replay = recent;
            }
        }
        let sub = if follow {
            let shared = Arc::new(Shared {
                queue: Mutex::new(Queue {
                    events: VecDeque::new(),
                    bytes: 0,
                    missed: None,
                    closed: inner.closed,
                }),
                ready: Notify::new(),
                filter,
                bound: self.queue_bound,
            });
            inner.subscribers.push(Arc::downgrade(&shared));
            let live = self.gauge.live.fetch_add(1, Ordering::Relaxed) + 1;
            self.gauge.peak.fetch_max(live, Ordering::Relaxed);
            Some(Subscription {
                shared,
                gauge: self.gauge.clone(),
            })
        } else {
            None
        };
        Ok((replay, sub))
    }

    /// Resolves once at least half of the subscriptions live at a peak of 64 or more have
    /// ended (the agent then hands free memory back to the system).
    pub async fn shrunk(&self) {
        self.gauge.shrunk.notified().await;
        // The ended subscriptions' slots (each holds its allocation until pruned).
        let mut inner = self.lock();
        inner.subscribers.retain(|w| w.strong_count() > 0);
        inner.subscribers.shrink_to_fit();
    }

    /// Whether a kept event is about the app named `app`.
    pub fn has_events_about(&self, app: &str) -> bool {
        self.lock().kept.iter().any(|e| e.app == app)
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// For a hand-over to the next agent: no event is numbered from now on, and the log
    /// records exactly the next number, so the next agent goes on from it. Subscriptions are
    /// left as they are: they break when this agent exits, and their clients resume from the
    /// next agent.
    pub fn seal(&self) {
        let mut inner = self.lock();
        inner.sealed = true;
        if let Some(log) = &self.log {
            log.close(inner.next_seq);
        }
    }

    /// Ends every subscription (after what they have queued) and flushes the log.
    pub fn close(&self) {
        let subs: Vec<Arc<Shared>> = {
            let mut inner = self.lock();
            inner.closed = true;
            inner
                .subscribers
                .drain(..)
                .filter_map(|w| w.upgrade())
                .collect()
        };
        for s in subs {
            s.lock().closed = true;
            s.ready.notify_one();
        }
        if let Some(log) = &self.log {
            log.close(self.next_seq());
        }
    }

    /// Publishes a notification about an app.
    pub fn notify_event(
        app_id: u64,
        app: &str,
        action: &str,
        message: &str,
        data: std::collections::BTreeMap<String, String>,
        cause: Cause,
    ) -> Event {
        let mut e = Event::new(EventKind::Notify, app_id, app, cause);
        e.action = action.to_string();
        e.message = message.to_string();
        e.data = data;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn ev(app: &str, kind: EventKind) -> Event {
        Event::new(kind, 1, app, Cause::Crash)
    }

    fn seqs(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[tokio::test]
    async fn replay_then_live_without_gap_or_duplicate() {
        let hub = Hub::new(100, None);
        for _ in 0..5 {
            hub.publish(ev("a", EventKind::Online));
        }
        let (replay, sub) = hub
            .subscribe(Replay::After(2), Filter::default(), true)
            .unwrap();
        assert_eq!(seqs(&replay), [3, 4, 5]);
        let mut sub = sub.unwrap();
        hub.publish(ev("a", EventKind::Stopped));
        assert_eq!(sub.next().await.unwrap().seq, 6);
    }

    #[tokio::test]
    async fn resuming_past_what_is_kept_starts_with_a_gap() {
        let hub = Hub::new(3, None);
        for _ in 0..10 {
            hub.publish(ev("a", EventKind::Online));
        }
        let (replay, _) = hub
            .subscribe(Replay::After(2), Filter::default(), false)
            .unwrap();
        assert_eq!(replay[0].kind, EventKind::Gap);
        assert_eq!((replay[0].seq, replay[0].lost), (7, 5));
        assert_eq!(seqs(&replay[1..]), [8, 9, 10]);
        // Nothing missing: no gap.
        let (replay, _) = hub
            .subscribe(Replay::After(7), Filter::default(), false)
            .unwrap();
        assert_eq!(seqs(&replay), [8, 9, 10]);
    }

    #[tokio::test]
    async fn a_full_queue_loses_events_into_one_gap_and_goes_on() {
        let hub = Hub::new(100, None).with_bounds(2, 10);
        let (_, sub) = hub.subscribe(Replay::Now, Filter::default(), true).unwrap();
        let mut sub = sub.unwrap();
        for _ in 0..10 {
            hub.publish(ev("a", EventKind::Online));
        }
        assert_eq!(sub.next().await.unwrap().seq, 1);
        assert_eq!(sub.next().await.unwrap().seq, 2);
        let g = sub.next().await.unwrap();
        assert_eq!((g.kind, g.seq, g.lost), (EventKind::Gap, 10, 8));
        hub.publish(ev("a", EventKind::Stopped));
        assert_eq!(sub.next().await.unwrap().seq, 11);
    }

    #[tokio::test]
    async fn the_gap_sits_where_the_loss_happened() {
        let hub = Hub::new(100, None).with_bounds(2, 10);
        let (_, sub) = hub.subscribe(Replay::Now, Filter::default(), true).unwrap();
        let mut sub = sub.unwrap();
        for _ in 0..4 {
            hub.publish(ev("a", EventKind::Online));
        }
        assert_eq!(sub.next().await.unwrap().seq, 1);
        hub.publish(ev("a", EventKind::Online)); // seq 5 fits again, after the gap
        let got: Vec<(EventKind, u64)> = [sub.next().await, sub.next().await, sub.next().await]
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                (e.kind, e.seq)
            })
            .collect();
        assert_eq!(
            got,
            [
                (EventKind::Online, 2),
                (EventKind::Gap, 4),
                (EventKind::Online, 5)
            ]
        );
    }

    #[tokio::test]
    async fn filters_by_app_and_kind() {
        let hub = Hub::new(100, None);
        let filter = Filter {
            apps: ["web".to_string()].into(),
            kinds: [EventKind::Exited].into(),
        };
        let (_, sub) = hub.subscribe(Replay::Now, filter.clone(), true).unwrap();
        let mut sub = sub.unwrap();
        hub.publish(ev("web", EventKind::Online));
        hub.publish(ev("db", EventKind::Exited));
        hub.publish(ev("web", EventKind::Exited));
        assert_eq!(sub.next().await.unwrap().seq, 3);
        let (recent, _) = hub.subscribe(Replay::Recent(5), filter, false).unwrap();
        assert_eq!(seqs(&recent), [3]);
    }

    #[tokio::test]
    async fn subscribers_are_bounded_and_closing_ends_them() {
        let hub = Hub::new(10, None).with_bounds(10, 1);
        let (_, sub) = hub.subscribe(Replay::Now, Filter::default(), true).unwrap();
        assert_eq!(
            hub.subscribe(Replay::Now, Filter::default(), true).err(),
            Some(Refused::TooMany(1))
        );
        // Not following takes no slot.
        assert!(hub.subscribe(Replay::Now, Filter::default(), false).is_ok());
        let mut sub = sub.unwrap();
        hub.publish(ev("a", EventKind::Online));
        hub.close();
        assert_eq!(sub.next().await.unwrap().seq, 1);
        assert!(sub.next().await.is_none());
        drop(sub);
        assert!(hub.subscribe(Replay::Now, Filter::default(), true).is_ok());
    }

    #[tokio::test]
    async fn resuming_from_a_number_not_yet_handed_out_is_refused_at_both_ends() {
        let hub = Hub::new(3, None);
        for _ in 0..5 {
            hub.publish(ev("a", EventKind::Online));
        }
        for from in [6, u64::MAX / 2, u64::MAX] {
            assert_eq!(
                hub.subscribe(Replay::After(from), Filter::default(), true)
                    .err(),
                Some(Refused::Ahead { from, last: 5 }),
                "from {from}"
            );
        }
        // The last number itself: nothing to replay, no gap, then live.
        let (replay, sub) = hub
            .subscribe(Replay::After(5), Filter::default(), true)
            .unwrap();
        assert!(replay.is_empty());
        hub.publish(ev("a", EventKind::Stopped));
        assert_eq!(sub.unwrap().next().await.unwrap().seq, 6);
        // 0 on a fresh hub: nothing, no gap.
        let fresh = Hub::new(3, None);
        let (replay, _) = fresh
            .subscribe(Replay::After(0), Filter::default(), false)
            .unwrap();
        assert!(replay.is_empty());
    }

    #[tokio::test]
    async fn numbers_that_cannot_be_reserved_on_disk_are_never_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path(), 100).unwrap();
        let hub = Hub::new(100, Some(log.clone()));
        let (_, sub) = hub.subscribe(Replay::Now, Filter::default(), true).unwrap();
        let mut sub = sub.unwrap();
        assert_eq!(hub.publish(ev("a", EventKind::Online)).unwrap().seq, 1);
        // Past the reserved block, with events.seq unwritable (its temporary name taken by a
        // directory, as a full disk refuses it): nothing is numbered or delivered.
        let reserved: u64 = fs::read_to_string(dir.path().join("events.seq"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        hub.lock().next_seq = reserved;
        let blocker = dir.path().join("events.seq.tmp");
        fs::create_dir(&blocker).unwrap();
        for _ in 0..3 {
            assert!(hub.publish(ev("a", EventKind::Online)).is_none());
        }
        assert_eq!(hub.next_seq(), reserved);
        // The disk allows it again: one gap counts the held events, then numbering goes on
        // above what is on disk.
        fs::remove_dir(&blocker).unwrap();
        let e = hub.publish(ev("a", EventKind::Stopped)).unwrap();
        assert_eq!(sub.next().await.unwrap().seq, 1);
        let gap = sub.next().await.unwrap();
        assert_eq!((gap.kind, gap.seq, gap.lost), (EventKind::Gap, reserved, 3));
        assert_eq!(sub.next().await.unwrap().seq, e.seq);
        assert_eq!(e.seq, reserved + 1);
        let on_disk: u64 = fs::read_to_string(dir.path().join("events.seq"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(on_disk > e.seq);
        hub.close();
    }

    #[tokio::test]
    async fn kept_events_are_bounded_by_bytes_as_well_as_count() {
        let big = |n: usize| {
            let mut e = ev("a", EventKind::Notify);
            e.message = "x".repeat(n);
            e
        };
        let hub = Hub::new(100, None).keep_bytes(10_000);
        for _ in 0..10 {
            hub.publish(big(3000));
        }
        let (replay, _) = hub
            .subscribe(Replay::After(0), Filter::default(), false)
            .unwrap();
        // Three fit in 10,000 bytes; the gap says what is gone.
        assert_eq!(replay[0].kind, EventKind::Gap);
        assert_eq!(seqs(&replay[1..]), [8, 9, 10]);
        assert!(hub.lock().kept_bytes <= 10_000);
        // One larger than the bound is still kept, alone.
        hub.publish(big(20_000));
        assert_eq!(
            seqs(&hub.lock().kept.iter().cloned().collect::<Vec<_>>()),
            [11]
        );
        hub.publish(big(10));
        assert_eq!(hub.lock().kept.len(), 1);
    }

    #[tokio::test]
    async fn many_subscriptions_ending_is_told_once_per_halving() {
        let hub = Arc::new(Hub::new(10, None));
        let subs: Vec<Subscription> = (0..100)
            .map(|_| {
                hub.subscribe(Replay::Now, Filter::default(), true)
                    .unwrap()
                    .1
                    .unwrap()
            })
            .collect();
        let waiter = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.shrunk().await })
        };
        drop(subs);
        waiter.await.unwrap();
        assert_eq!(hub.gauge.live.load(Ordering::Relaxed), 0);
    }
}
