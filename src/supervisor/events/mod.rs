//! The event hub: numbers every event, keeps the most recent ones so a subscriber can resume
//! from a sequence number, and fans out to subscribers without ever waiting for one.
//!
//! Each subscriber has its own bounded queue. A publisher only locks, pushes and notifies; when a
//! queue is full the event is counted as lost for that subscriber, and the subscriber later gets
//! one `gap` event in its place saying how many it missed. A subscriber that never reads costs at
//! most its queue's bound.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, Weak},
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many subscribers ({0}); try again later")]
pub struct TooMany(pub usize);

struct Inner {
    next_seq: u64,
    kept: VecDeque<Arc<Event>>,
    keep: usize,
    subscribers: Vec<Weak<Shared>>,
    closed: bool,
    /// Events published by this hub, by kind (for metrics).
    published: HashMap<EventKind, u64>,
}

pub struct Hub {
    inner: Mutex<Inner>,
    log: Option<Arc<EventLog>>,
    queue_bound: Bound,
    max_subscribers: usize,
}

/// What a subscriber may have queued before it starts missing events: 4,096 events or 4 MiB.
pub const QUEUE_BOUND: Bound = Bound {
    events: 4096,
    bytes: 4 << 20,
};
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
                kept: kept.into_iter().map(Arc::new).collect(),
                keep: keep.max(1),
                subscribers: Vec::new(),
                closed: false,
                published: HashMap::new(),
            }),
            log,
            queue_bound: QUEUE_BOUND,
            max_subscribers: MAX_SUBSCRIBERS,
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
    pub fn publish(&self, mut e: Event) -> Arc<Event> {
        let mut inner = self.lock();
        e.seq = inner.next_seq;
        if let Some(log) = &self.log {
            log.reserve_through(e.seq);
        }
        inner.next_seq += 1;
        *inner.published.entry(e.kind).or_default() += 1;
        let e = Arc::new(e);
        if inner.kept.len() >= inner.keep {
            inner.kept.pop_front();
        }
        inner.kept.push_back(e.clone());
        inner.subscribers.retain(|w| match w.upgrade() {
            Some(s) => {
                s.offer(&e);
                true
            }
            None => false,
        });
        drop(inner);
        if let Some(log) = &self.log {
            log.append(e.clone());
        }
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
    ) -> Result<(Vec<Arc<Event>>, Option<Subscription>), TooMany> {
        let mut inner = self.lock();
        inner.subscribers.retain(|w| w.strong_count() > 0);
        if follow && inner.subscribers.len() >= self.max_subscribers {
            return Err(TooMany(self.max_subscribers));
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
            Some(Subscription { shared })
        } else {
            None
        };
        Ok((replay, sub))
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
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
            Some(TooMany(1))
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
}
