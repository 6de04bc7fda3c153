//! Memory benchmark (issue #17): what the agent holds, with its default settings, under the
//! loads that used to grow it without bound. Real agents (the real release binary) in
//! temporary homes; in-process clients over the unix socket.
//!
//! Run with `cargo bench --bench memory`. Each phase has its own agent, started with no
//! options (the defaults: 10,000 events kept, at most 8 MiB of them):
//!
//! 1. a subscriber that never reads while 4,000 notifications of 32 KiB (125 MiB) are
//!    published: the agent's growth (VmRSS);
//! 2. no subscriber, 1,000 notifications of the largest size the API accepts (64 KiB of
//!    message, 64 data entries of 4 KiB: about 330 MB in all): the growth;
//! 3. 1,100 subscribers (past the cap of 1,024), each on its own connection, opened and closed
//!    four times: VmRSS and RssAnon (the heap, without the binary's pages) at idle, with the
//!    subscribers, and once they are gone (after the agent hands memory back, polled for up
//!    to 10 s).
//!
//! Figures are printed, with a table against the bounds the README states (growth by a stalled
//! subscriber at most 32 MiB, by the largest notifications at most 24 MiB; after the
//! subscribers leave, at most 6 MiB above idle, every round); missed bounds are reported,
//! never fatal.

#[allow(dead_code)]
mod common;

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use common::{print_table, Agent, Row};
use grpm::{
    client::{connect_unix, Subscription},
    model::Env,
};

fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn started(label: &'static str) -> Agent {
    let agent = Agent::start(label, &[]);
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    agent
}

/// Phase 1: a stalled subscriber, 4,000 notifications of 32 KiB. Returns the growth in KiB.
fn stalled_subscriber() -> u64 {
    let agent = started("stalled");
    let sock = agent.socket();
    let before = status_kib(agent.pid(), "VmRSS");
    runtime().block_on(async {
        let mut stalled_client = connect_unix(&sock).await.expect("connect");
        let _stalled = stalled_client
            .subscribe(&Subscription::default())
            .await
            .expect("subscribe");
        let mut c = connect_unix(&sock).await.expect("connect");
        let big = "x".repeat(32 * 1024);
        for i in 0..4000 {
            c.notify("web", "load", &format!("{i} {big}"), &Env::new())
                .await
                .expect("notify");
        }
    });
    let grown = status_kib(agent.pid(), "VmRSS").saturating_sub(before);
    println!(
        "[1] stalled subscriber, 4,000 x 32 KiB: VmRSS {:.1} MiB before, grew by {:.1} MiB",
        mib(before),
        mib(grown)
    );
    agent.shutdown();
    grown
}

/// Phase 2: no subscriber, 1,000 of the largest notifications. Returns the growth in KiB.
fn largest_notifications() -> u64 {
    let agent = started("largest");
    let sock = agent.socket();
    let before = status_kib(agent.pid(), "VmRSS");
    runtime().block_on(async {
        let mut c = connect_unix(&sock).await.expect("connect");
        let message = "m".repeat(64 * 1024);
        let data: Env = (0..64)
            .map(|i| (format!("k{i:03}"), "v".repeat(4096)))
            .collect();
        for _ in 0..1000 {
            c.notify("web", "load", &message, &data)
                .await
                .expect("notify");
        }
    });
    let grown = status_kib(agent.pid(), "VmRSS").saturating_sub(before);
    println!(
        "[2] 1,000 notifications of the largest size, no subscriber: VmRSS {:.1} MiB before, \
         grew by {:.1} MiB",
        mib(before),
        mib(grown)
    );
    agent.shutdown();
    grown
}

/// Phase 3: 1,100 subscribers opened and closed four times. Returns (idle VmRSS, VmRSS after
/// the last round) in KiB.
fn many_subscribers() -> (u64, u64) {
    let agent = started("subscribers");
    let sock = agent.socket();
    let pid = agent.pid();
    let idle = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"));
    println!(
        "[3] 1,100 subscribers opened and closed, four rounds; idle: VmRSS {:.1} MiB, RssAnon \
         {:.1} MiB",
        mib(idle.0),
        mib(idle.1)
    );
    let mut last = idle;
    for round in 1..=4 {
        // A runtime per round: dropping it ends the client's connection tasks.
        let rt = runtime();
        let open = rt.block_on(async {
            let mut held = Vec::new();
            for _ in 0..1100 {
                let mut c = connect_unix(&sock).await.expect("connect");
                if let Ok(s) = c.subscribe(&Subscription::default()).await {
                    held.push((c, s));
                }
            }
            let mut c = connect_unix(&sock).await.expect("connect");
            c.notify("web", "round", "", &Env::new())
                .await
                .expect("notify");
            let open = (
                held.len(),
                status_kib(pid, "VmRSS"),
                status_kib(pid, "RssAnon"),
            );
            drop(held);
            open
        });
        drop(rt);
        // What stays: polled until it stops falling (the agent hands memory back about a
        // second after the subscribers leave), at most 10 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"));
        let mut steady = 0;
        while Instant::now() < deadline && steady < 20 {
            thread::sleep(Duration::from_millis(100));
            let next = (status_kib(pid, "VmRSS"), status_kib(pid, "RssAnon"));
            steady = if next.1 + 64 >= now.1 { steady + 1 } else { 0 };
            now = next;
        }
        println!(
            "    round {round}: {} subscribed; with them VmRSS {:.1} / RssAnon {:.1} MiB; after \
             VmRSS {:.1} / RssAnon {:.1} MiB",
            open.0,
            mib(open.1),
            mib(open.2),
            mib(now.0),
            mib(now.1)
        );
        last = now;
    }
    agent.shutdown();
    (idle.0, last.0)
}

fn main() {
    let bin = Path::new(common::BIN);
    println!("memory benchmark: {}", bin.display());
    let stalled = stalled_subscriber();
    let largest = largest_notifications();
    let (idle, after) = many_subscribers();
    print_table(
        &[
            Row::at_most(
                "stalled subscriber, 4,000 x 32 KiB: growth",
                mib(stalled),
                32.0,
                "MiB",
            ),
            Row::at_most(
                "1,000 largest notifications: growth",
                mib(largest),
                24.0,
                "MiB",
            ),
            Row::info("1,100 subscribers x 4: idle VmRSS", mib(idle), "MiB"),
            Row::at_most(
                "1,100 subscribers x 4: VmRSS after",
                mib(after),
                (mib(idle) + 6.0).round(),
                "MiB",
            ),
        ],
        1,
        10,
    );
}
