//! Event stream benchmark: real agents (the real release binary) in temporary homes, with
//! in-process subscribers that use the library client over the agent's unix socket.
//!
//! Run with `cargo bench --bench events`. It measures, in this order:
//!
//! 1. the latency from a process's exit (our SIGKILL) to each subscriber receiving the
//!    `exited` event with that pid, with 1 subscriber and with 100 subscribers (one
//!    connection each, like 100 monitoring clients). The app restarts 1 ms after each kill,
//!    and the next sample starts as soon as every subscriber saw it online again;
//! 2. replay throughput: 50,000 notifications published first, then received by one
//!    `from_seq = 0, no_follow` subscription until its stream ends;
//! 3. live throughput: one following subscriber while several connections publish
//!    notifications as fast as they can for a few seconds; `gap` events (a subscriber that
//!    falls behind loses events by design) are counted, never fatal.
//!
//! Alongside, it reports the CPU time the agent and this process (subscribers, publishers)
//! used, from /proc, at clock-tick resolution: both share the machine's cores.
//!
//! Each phase has its own agent in a fresh temporary `GRPM_HOME`, stopped with `grpm kill`
//! before the next phase starts. Every command runs with a small known environment. Missed
//! targets are reported, never fatal; functional breakage (no `exited` event within 10 s, a
//! stream that ends early, processes left behind) panics with a clear message.

mod common;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{cpu_time, ms, of_home, print_table, Agent, Row, Stats, BIN};
use grpm::{
    client::{connect_unix, Client, EventStream, Subscription},
    model::{Env, EventKind, StatusKind},
};
use tokio::sync::{mpsc, oneshot, watch};

/// Timed kill → `exited` samples per subscriber count, after a few untimed warm-up samples.
const SAMPLES_ONE: usize = 200;
const SAMPLES_MANY: usize = 100;
const WARMUP_SAMPLES: usize = 5;
/// Subscribers of the second latency run, each on its own connection.
const MANY_SUBSCRIBERS: usize = 100;
/// How long an event (or an app coming back online) may take before we call it broken.
const EVENT_LIMIT: Duration = Duration::from_secs(10);
/// Pause between two `list` RPCs while waiting for the app to come back online.
const POLL_PAUSE: Duration = Duration::from_millis(1);

/// Notifications published before the replay, and the connections publishing them.
const REPLAY_EVENTS: usize = 50_000;
const REPLAY_RUNS: usize = 3;
const PUBLISHERS: usize = 8;
/// Publishing tasks per publisher connection (HTTP/2 multiplexes their requests).
const TASKS_PER_PUBLISHER: usize = 4;
/// How long the publishers of the live phase keep publishing.
const LIVE_FOR: Duration = Duration::from_secs(3);

/// Decimals of the durations (ms) in the summaries and the final table, and the width of
/// the table's MEASURED column.
const DECIMALS: usize = 3;
const MEASURED_WIDTH: usize = 16;

/// Targets (2-core machine), for 100 subscribers.
const TARGET_MEDIAN_MS: f64 = 1.0;
const TARGET_P99_MS: f64 = 5.0;

fn main() {
    println!("grpm events benchmark ({BIN})");
    println!(
        "machine: {} CPUs available",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Declared before the agents, so it is dropped after them (also when unwinding).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot build the tokio runtime");
    let mut table = Vec::new();

    // Phase 1: exit → `exited` latency. The app comes back 1 ms after each kill, and may do
    // so as often as we need (the default policy would mark it errored after 15 restarts).
    {
        let agent = Agent::start("latency", &[]);
        agent.ok(&[
            "start",
            "--name",
            "victim",
            "--restart-delay",
            "1ms",
            "--restart-delay-max",
            "1ms",
            "--max-restarts",
            "100000",
            "--",
            "sleep",
            "1000",
        ]);

        let one = rt.block_on(exit_latency(&agent, 1, SAMPLES_ONE));
        let s = Stats::of(&one.all);
        println!(
            "\n[1a] SIGKILL -> `exited` event, 1 subscriber, {SAMPLES_ONE} samples \
             (after {WARMUP_SAMPLES} warm-up samples):"
        );
        s.print(DECIMALS);
        one.print_extra();
        table.push(Row::info(
            "exit -> event median, 1 subscriber",
            ms(s.median),
            "ms",
        ));
        table.push(Row::info(
            "exit -> event p99, 1 subscriber",
            ms(s.p99),
            "ms",
        ));

        let many = rt.block_on(exit_latency(&agent, MANY_SUBSCRIBERS, SAMPLES_MANY));
        let s = Stats::of(&many.all);
        let slowest = Stats::of(&many.slowest);
        let fastest = Stats::of(&many.fastest);
        println!(
            "\n[1b] SIGKILL -> `exited` event, {MANY_SUBSCRIBERS} subscribers (one connection \
             each), {SAMPLES_MANY} samples (after {WARMUP_SAMPLES} warm-up samples):"
        );
        println!("    all subscriber x sample latencies:");
        s.print(DECIMALS);
        println!("    per sample, the first subscriber to receive it:");
        fastest.print(DECIMALS);
        println!("    per sample, the last subscriber to receive it:");
        slowest.print(DECIMALS);
        many.print_extra();
        table.push(Row::at_most(
            "exit -> event median, 100 subscribers",
            ms(s.median),
            TARGET_MEDIAN_MS,
            "ms",
        ));
        table.push(Row::at_most(
            "exit -> event p99, 100 subscribers",
            ms(s.p99),
            TARGET_P99_MS,
            "ms",
        ));
        table.push(Row::info(
            "slowest of 100, median per sample",
            ms(slowest.median),
            "ms",
        ));
        agent.shutdown();
    }

    // Phase 2: replay throughput.
    let publishers = format!("{PUBLISHERS} conns x {TASKS_PER_PUBLISHER} tasks");
    {
        let agent = Agent::start("replay", &["--events-kept", "100000"]);
        agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
        let replay = rt.block_on(replay_throughput(&agent));
        println!(
            "\n[2] replay: {} notifications published by {publishers} in {:.0} ms ({:.0} \
             events/s; each task awaits a NotifyGod RPC before it sends the next):",
            replay.published.count,
            ms(replay.published.took),
            replay.published.rate()
        );
        replay.publish_cpu.print(replay.published.count, "event");
        println!(
            "    then a `from_seq = 0, no_follow` subscription received all {} kept events \
             (seq 1..={}, no gap), {REPLAY_RUNS} runs (Subscribe call -> end of stream):",
            replay.received, replay.published.last_seq
        );
        for (i, took) in replay.runs.iter().enumerate() {
            println!(
                "    run {}: {:.1} ms, {:.0} events/s",
                i + 1,
                ms(*took),
                replay.received as f64 / took.as_secs_f64()
            );
        }
        replay
            .replay_cpu
            .print(replay.received * REPLAY_RUNS, "event replayed");
        let median = Stats::of(&replay.runs).median;
        let rate = replay.received as f64 / median.as_secs_f64();
        table.push(Row::count(
            "replay to 1 subscriber (median run)",
            rate,
            "ev/s",
        ));
        table.push(Row::count(
            format!("published for it ({publishers})"),
            replay.published.rate(),
            "ev/s",
        ));
        agent.shutdown();
    }

    // Phase 3: live throughput.
    {
        let agent = Agent::start("live", &["--events-kept", "100000"]);
        agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
        let live = rt.block_on(live_throughput(&agent));
        let received_rate = live.received as f64 / live.receiving.as_secs_f64();
        println!(
            "\n[3] live: {publishers} published {} notifications in {:.0} ms ({:.0} events/s) \
             while one subscriber followed:",
            live.published.count,
            ms(live.published.took),
            live.published.rate()
        );
        println!(
            "    it received {} events in {:.0} ms ({received_rate:.0} events/s, from the first \
             publish to the last event received; that last event arrived {:+.1} ms after \
             every publisher had returned)",
            live.received,
            ms(live.receiving),
            live.lag_ms
        );
        println!(
            "    gap events: {}, events they say were lost: {} (received + lost = {}, \
             published = {})",
            live.gaps,
            live.lost,
            live.received + live.lost,
            live.published.count
        );
        live.cpu.print(live.published.count, "event");
        table.push(Row::count(
            "live, received by 1 subscriber",
            received_rate,
            "ev/s",
        ));
        table.push(Row::count(
            format!("live, published ({publishers})"),
            live.published.rate(),
            "ev/s",
        ));
        table.push(Row::count("live, gap events", live.gaps as f64, ""));
        table.push(Row::count(
            "live, events lost (per gaps)",
            live.lost as f64,
            "",
        ));
        agent.shutdown();
    }

    print_table(&table, DECIMALS, MEASURED_WIDTH);
}

/// What a subscriber's reader task reports.
enum Seen {
    /// An `exited`, `online` or `gap` event, and when it was received.
    Event {
        sub: usize,
        kind: EventKind,
        pid: u32,
        lost: u64,
        at: Instant,
    },
    /// The stream ended or failed: the agent stopped serving this subscriber.
    Ended { sub: usize, why: String },
}

/// Reads one subscription to its end, reporting what the latency phase needs through `tx`.
/// Keeps `client` (its connection) alive as long as it reads.
async fn read_events(
    sub: usize,
    client: Client,
    mut stream: EventStream,
    tx: mpsc::UnboundedSender<Seen>,
) {
    let _connection = client;
    loop {
        let seen = match stream.next().await {
            Ok(Some(e)) => {
                let at = Instant::now();
                let kind = e.kind;
                if !matches!(kind, EventKind::Exited | EventKind::Online | EventKind::Gap) {
                    continue;
                }
                Seen::Event {
                    sub,
                    kind,
                    pid: e.pid.unwrap_or(0),
                    lost: e.lost,
                    at,
                }
            }
            Ok(None) => Seen::Ended {
                sub,
                why: "the stream ended".into(),
            },
            Err(status) => Seen::Ended {
                sub,
                why: format!("the stream failed: {status}"),
            },
        };
        let ended = matches!(seen, Seen::Ended { .. });
        if tx.send(seen).is_err() || ended {
            return;
        }
    }
}

/// What one latency run measured.
struct Latency {
    subscribers: usize,
    /// Every subscriber × timed sample latency.
    all: Vec<Duration>,
    /// Per timed sample: the first and the last subscriber to receive the event.
    fastest: Vec<Duration>,
    slowest: Vec<Duration>,
    /// Per timed sample: from the kill until every subscriber saw the app online again.
    back_online: Vec<Duration>,
    /// Gap events seen by any subscriber (none expected: the stream is nearly idle).
    gaps: usize,
    /// CPU used over the timed samples (kill, events, `list` polls until back online).
    cpu: Cpu,
}

impl Latency {
    fn print_extra(&self) {
        let back = Stats::of(&self.back_online);
        println!(
            "    kill -> new pid `online` at all {} subscriber(s): median {:.2} ms, p99 {:.2} ms; \
             gap events: {}",
            self.subscribers,
            ms(back.median),
            ms(back.p99),
            self.gaps
        );
        self.cpu.print(self.back_online.len(), "kill cycle");
    }
}

/// SIGKILLs the agent's only app `samples` times (plus warm-up) and measures, at each of
/// `subscribers` subscribers (one connection each), the time from the kill until the
/// `exited` event with the killed pid arrives. Before the next kill, every subscriber has
/// seen the app `online` again and the `list` RPC shows that new pid.
async fn exit_latency(agent: &Agent, subscribers: usize, samples: usize) -> Latency {
    let sock = agent.socket();
    let mut client = connect(&sock).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut readers = Vec::with_capacity(subscribers);
    for sub in 0..subscribers {
        let mut c = connect(&sock).await;
        // Once the call returns, the agent has registered the subscription (live events only).
        let stream = c
            .subscribe(&Subscription::default())
            .await
            .unwrap_or_else(|e| panic!("subscriber {sub}: Subscribe failed: {e}"));
        readers.push(tokio::spawn(read_events(sub, c, stream, tx.clone())));
    }
    drop(tx);

    let mut pid = online_pid(&mut client, 0).await;
    let mut out = Latency {
        subscribers,
        all: Vec::with_capacity(subscribers * samples),
        fastest: Vec::with_capacity(samples),
        slowest: Vec::with_capacity(samples),
        back_online: Vec::with_capacity(samples),
        gaps: 0,
        cpu: Cpu {
            agent: Duration::ZERO,
            bench: Duration::ZERO,
            wall: Duration::ZERO,
        },
    };
    let mut cpu_start = (Duration::ZERO, Duration::ZERO, Instant::now());
    for i in 0..WARMUP_SAMPLES + samples {
        if i == WARMUP_SAMPLES {
            cpu_start = (cpu_time(agent.pid()), cpu_time(0), Instant::now());
        }
        // Never signal a process that is not an app of this run's home.
        assert!(
            of_home(pid, &agent.home),
            "pid {pid} from `list` is not a live process of the {} home",
            agent.label
        );
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("cannot SIGKILL the app (pid {pid}): {e}"));

        // Every subscriber must see `exited` for this pid, then `online` for its successor.
        let deadline = tokio::time::Instant::from_std(t0 + EVENT_LIMIT);
        let mut exited: Vec<Option<Duration>> = vec![None; subscribers];
        let mut online: Vec<Option<u32>> = vec![None; subscribers];
        let mut pending = 2 * subscribers;
        let mut last_online = t0;
        while pending > 0 {
            let Ok(seen) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                let missing = exited.iter().filter(|e| e.is_none()).count();
                panic!(
                    "sample {i}: {missing} of {subscribers} subscribers got no `exited` event \
                     for pid {pid}, and {} no `online` event after it, within {EVENT_LIMIT:?} \
                     ({} gap events so far); {} agent log:\n{}",
                    online.iter().filter(|o| o.is_none()).count(),
                    out.gaps,
                    agent.label,
                    agent.log()
                );
            };
            match seen {
                Some(Seen::Event {
                    sub,
                    kind,
                    pid: p,
                    lost,
                    at,
                }) => match kind {
                    EventKind::Exited => {
                        assert_eq!(
                            p, pid,
                            "subscriber {sub} got an `exited` event for pid {p}, but we killed \
                             pid {pid}"
                        );
                        assert!(
                            exited[sub].is_none(),
                            "subscriber {sub} got two `exited` events for pid {pid}"
                        );
                        exited[sub] = Some(at.duration_since(t0));
                        pending -= 1;
                    }
                    EventKind::Online if exited[sub].is_some() && online[sub].is_none() => {
                        online[sub] = Some(p);
                        last_online = last_online.max(at);
                        pending -= 1;
                    }
                    EventKind::Online => panic!(
                        "subscriber {sub} got an unexpected `online` event (pid {p}) while we \
                         waited for pid {pid} to exit"
                    ),
                    _ => {
                        println!("    (subscriber {sub} got a gap event: {lost} lost)");
                        out.gaps += 1;
                    }
                },
                Some(Seen::Ended { sub, why }) => {
                    panic!(
                        "subscriber {sub}: {why}; {} agent log:\n{}",
                        agent.label,
                        agent.log()
                    )
                }
                None => panic!("every subscriber's reader task is gone"),
            }
        }

        // The app is back: one new pid, seen by all, and shown online by `list`.
        let new = online[0].unwrap_or_default();
        assert!(
            new != pid && online.iter().all(|o| *o == Some(new)),
            "after pid {pid} was killed, subscribers saw these new pids online: {online:?}"
        );
        let listed = online_pid(&mut client, pid).await;
        assert_eq!(
            listed, new,
            "`list` shows pid {listed} online, but the `online` events said pid {new}"
        );
        if i >= WARMUP_SAMPLES {
            let times: Vec<Duration> = exited.into_iter().flatten().collect();
            out.fastest.extend(times.iter().min());
            out.slowest.extend(times.iter().max());
            out.all.extend(times);
            out.back_online.push(last_online.duration_since(t0));
        }
        pid = new;
    }
    out.cpu = Cpu {
        agent: cpu_time(agent.pid()).saturating_sub(cpu_start.0),
        bench: cpu_time(0).saturating_sub(cpu_start.1),
        wall: cpu_start.2.elapsed(),
    };

    for r in &readers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    out
}

/// Polls the `list` RPC until the agent's only app is online with a pid other than `not`;
/// returns that pid. Panics after `EVENT_LIMIT`.
async fn online_pid(client: &mut Client, not: u32) -> u32 {
    let deadline = Instant::now() + EVENT_LIMIT;
    loop {
        let apps = client
            .list()
            .await
            .unwrap_or_else(|e| panic!("List failed: {e}"));
        assert_eq!(apps.len(), 1, "expected one app, `list` shows {apps:?}");
        let app = &apps[0];
        if let (StatusKind::Online, Some(pid)) = (app.status, app.pid) {
            if pid != not {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the app did not come back online (other than pid {not}) within {EVENT_LIMIT:?}: \
             {app:?}"
        );
        tokio::time::sleep(POLL_PAUSE).await;
    }
}

/// What a batch of publishers did.
struct Published {
    /// Notifications published (one event each: the target is one app).
    count: usize,
    /// The highest sequence number the agent gave them.
    last_seq: u64,
    took: Duration,
}

impl Published {
    fn rate(&self) -> f64 {
        self.count as f64 / self.took.as_secs_f64()
    }
}

/// When publishers stop.
#[derive(Clone, Copy)]
enum Stop {
    /// After this many notifications, all publishers together.
    After(usize),
    /// At this instant.
    At(Instant),
}

/// `PUBLISHERS` connections, each used by `TASKS_PER_PUBLISHER` tasks, publish `load`
/// notifications about `web` until `stop`; each task awaits a notification before it sends
/// the next one.
async fn publish(sock: &Path, stop: Stop) -> Published {
    let mut clients = Vec::with_capacity(PUBLISHERS * TASKS_PER_PUBLISHER);
    for _ in 0..PUBLISHERS {
        let c = connect(sock).await;
        clients.extend(std::iter::repeat_n(c, TASKS_PER_PUBLISHER));
    }
    let claimed = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let claimed = claimed.clone();
            tokio::spawn(async move {
                let (mut count, mut last_seq) = (0usize, 0u64);
                loop {
                    let more = match stop {
                        Stop::After(n) => claimed.fetch_add(1, Ordering::Relaxed) < n,
                        Stop::At(end) => Instant::now() < end,
                    };
                    if !more {
                        return (count, last_seq);
                    }
                    let events = c
                        .notify("web", "load", "", &Env::new())
                        .await
                        .unwrap_or_else(|e| panic!("NotifyGod failed: {e}"));
                    assert_eq!(events.len(), 1, "one notification should be one event");
                    count += 1;
                    last_seq = last_seq.max(events[0].seq);
                }
            })
        })
        .collect();
    let mut out = Published {
        count: 0,
        last_seq: 0,
        took: Duration::ZERO,
    };
    for t in tasks {
        let (count, last_seq) = t.await.expect("a publisher task panicked");
        out.count += count;
        out.last_seq = out.last_seq.max(last_seq);
    }
    out.took = t0.elapsed();
    out
}

/// What the replay phase measured.
struct Replay {
    published: Published,
    publish_cpu: Cpu,
    /// Events each replay received (every kept event).
    received: usize,
    /// Subscribe call to the end of the stream, per run.
    runs: Vec<Duration>,
    /// CPU used over all the runs.
    replay_cpu: Cpu,
}

/// Publishes `REPLAY_EVENTS` notifications, then replays every kept event to one
/// subscriber `REPLAY_RUNS` times, timing each from the Subscribe call to the stream's end.
async fn replay_throughput(agent: &Agent) -> Replay {
    let sock = agent.socket();
    let (published, publish_cpu) =
        Cpu::during(agent.pid(), publish(&sock, Stop::After(REPLAY_EVENTS))).await;
    assert_eq!(
        published.count, REPLAY_EVENTS,
        "not every notification went out"
    );
    let mut client = connect(&sock).await;
    let mut received = 0;
    let mut runs = Vec::with_capacity(REPLAY_RUNS);
    let cpu_start = (cpu_time(agent.pid()), cpu_time(0), Instant::now());
    for run in 0..REPLAY_RUNS {
        let t0 = Instant::now();
        let mut stream = client
            .subscribe(&Subscription {
                from_seq: Some(0),
                no_follow: true,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("replay Subscribe failed: {e}"));
        let (mut n, mut last, mut gaps) = (0usize, 0u64, 0usize);
        loop {
            let next = tokio::time::timeout(EVENT_LIMIT, stream.next())
                .await
                .unwrap_or_else(|_| panic!("replay run {run}: no event within {EVENT_LIMIT:?}"))
                .unwrap_or_else(|e| panic!("replay run {run}: the stream failed: {e}"));
            let Some(e) = next else { break };
            assert!(e.seq > last, "replay run {run}: seq {} after {last}", e.seq);
            n += 1;
            last = e.seq;
            gaps += usize::from(e.kind == EventKind::Gap);
        }
        runs.push(t0.elapsed());
        // Nothing may be missing: 100,000 events are kept and the agent started from seq 1.
        assert!(
            gaps == 0 && last == published.last_seq && n as u64 == last,
            "replay run {run}: {n} events up to seq {last} with {gaps} gap(s); expected seq \
             1..={} without gaps",
            published.last_seq
        );
        received = n;
    }
    let replay_cpu = Cpu {
        agent: cpu_time(agent.pid()).saturating_sub(cpu_start.0),
        bench: cpu_time(0).saturating_sub(cpu_start.1),
        wall: cpu_start.2.elapsed(),
    };
    Replay {
        published,
        publish_cpu,
        received,
        runs,
        replay_cpu,
    }
}

/// What the live phase measured.
struct Live {
    published: Published,
    /// Non-gap events the subscriber received, gap events, and what the gaps said was lost.
    received: u64,
    gaps: u64,
    lost: u64,
    /// From the first publish to the last event received.
    receiving: Duration,
    /// From the moment every publisher had returned to the last event received, in ms;
    /// negative when that event arrived earlier.
    lag_ms: f64,
    /// CPU used from the first publish until the subscriber was done.
    cpu: Cpu,
}

/// What the live subscriber counted.
struct Counted {
    received: u64,
    gaps: u64,
    lost: u64,
    last_at: Instant,
}

/// One following subscriber while `PUBLISHERS` connections publish for `LIVE_FOR`; the
/// subscriber is done once it got (or was told it lost) the last published event.
async fn live_throughput(agent: &Agent) -> Live {
    let sock = agent.socket();
    let mut client = connect(&sock).await;
    let mut stream = client
        .subscribe(&Subscription::default())
        .await
        .unwrap_or_else(|e| panic!("live Subscribe failed: {e}"));
    // The last published seq, once the publishers are done (0 until then).
    let (last_tx, mut last_rx) = watch::channel(0u64);
    let (done_tx, done_rx) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let _connection = client;
        let mut c = Counted {
            received: 0,
            gaps: 0,
            lost: 0,
            last_at: Instant::now(),
        };
        let mut seen = 0u64;
        loop {
            tokio::select! {
                next = stream.next() => {
                    let e = match next {
                        Ok(Some(e)) => e,
                        Ok(None) => panic!("the live stream ended early"),
                        Err(e) => panic!("the live stream failed: {e}"),
                    };
                    c.last_at = Instant::now();
                    seen = e.seq;
                    if e.kind == EventKind::Gap {
                        c.gaps += 1;
                        c.lost += e.lost;
                    } else {
                        c.received += 1;
                    }
                }
                changed = last_rx.changed() => {
                    changed.expect("the live phase is gone");
                }
            }
            let last = *last_rx.borrow();
            if last != 0 && seen >= last {
                let _ = done_tx.send(c);
                return;
            }
        }
    });

    let (agent_cpu, bench_cpu) = (cpu_time(agent.pid()), cpu_time(0));
    let t0 = Instant::now();
    let published = publish(&sock, Stop::At(t0 + LIVE_FOR)).await;
    let publishing_ended = Instant::now();
    last_tx
        .send(published.last_seq)
        .expect("the live subscriber is gone");
    let counted = tokio::time::timeout(EVENT_LIMIT, done_rx)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the live subscriber did not reach seq {} within {EVENT_LIMIT:?} after the \
                 publishers stopped",
                published.last_seq
            )
        })
        .expect("the live subscriber task failed");
    let _ = reader.await;
    let cpu = Cpu {
        agent: cpu_time(agent.pid()).saturating_sub(agent_cpu),
        bench: cpu_time(0).saturating_sub(bench_cpu),
        wall: t0.elapsed(),
    };
    let lag_ms = if counted.last_at >= publishing_ended {
        ms(counted.last_at - publishing_ended)
    } else {
        -ms(publishing_ended - counted.last_at)
    };
    Live {
        received: counted.received,
        gaps: counted.gaps,
        lost: counted.lost,
        receiving: counted.last_at.duration_since(t0),
        lag_ms,
        cpu,
        published,
    }
}

/// A client of the agent on `sock`; panics if it does not answer.
async fn connect(sock: &Path) -> Client {
    connect_unix(sock)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", sock.display()))
}

/// CPU used by the agent and by this process (its subscribers and publishers) over a span.
struct Cpu {
    agent: Duration,
    bench: Duration,
    wall: Duration,
}

impl Cpu {
    /// Runs `f`, measuring the CPU the agent `agent_pid` and this process use meanwhile.
    async fn during<T>(agent_pid: u32, f: impl std::future::Future<Output = T>) -> (T, Cpu) {
        let (a0, b0, t0) = (cpu_time(agent_pid), cpu_time(0), Instant::now());
        let out = f.await;
        let cpu = Cpu {
            agent: cpu_time(agent_pid).saturating_sub(a0),
            bench: cpu_time(0).saturating_sub(b0),
            wall: t0.elapsed(),
        };
        (out, cpu)
    }

    /// One line: each side's CPU, in ms and in cores busy, and per `unit` of `n`.
    fn print(&self, n: usize, unit: &str) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let cores = |d: Duration| d.as_secs_f64() / self.wall.as_secs_f64();
        println!(
            "    CPU over {:.0} ms (clock-tick resolution): agent {:.0} ms ({:.2} cores, {:.1} us \
             per {unit}); bench process {:.0} ms ({:.2} cores, {:.1} us per {unit})",
            ms(self.wall),
            ms(self.agent),
            cores(self.agent),
            per(self.agent),
            ms(self.bench),
            cores(self.bench),
            per(self.bench)
        );
    }
}

impl Row {
    /// A rate or a count, without a target: printed as a whole number.
    fn count(metric: impl Into<String>, value: f64, unit: &'static str) -> Row {
        Row {
            decimals: Some(0),
            ..Row::info(metric, value, unit)
        }
    }
}
