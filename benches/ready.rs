//! Readiness benchmark: a real agent (the real release binary) in a temporary home, real apps,
//! a subscriber through the library client.
//!
//! Run with `cargo bench --bench ready`. It measures:
//!
//! 1. the latency from an app's readiness, by its own clock (the time it writes to a file right
//!    before it sends `READY=1`, prints its "listening" line, or opens its TCP listener), to the
//!    `ready` event at a subscriber, for `notify`, `log` and `tcp` checks (the `tcp` check polls
//!    every 50 ms here, so its bound is one period). Each sample is a `restart --no-wait` of the
//!    app, then the wait for its next `ready` event;
//! 2. 500 apps (`sleep`), each with an `http` readiness check and a 1 s `tcp` liveness check,
//!    both against one small HTTP server in this process (the checks' cost is the agent's; the
//!    apps' own servers would only add their memory): the agent's CPU over 30 s at steady state
//!    (long enough for 15 sampling ticks, and for the 10 ms granularity of CPU time to be
//!    0.03 % of a core), as a share of one core, and its RSS; twice: with the default tree sampling (every 2 s,
//!    which 500 running apps cost on their own), and with sampling every hour, which leaves the
//!    checks' own cost.
//!
//! Missed targets are reported, never fatal; a `ready` event that never comes panics.

mod common;

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{cpu_time, ms, print_table, rss_kib, Agent, Row, Stats};
use grpm::{
    client::{self, Subscription},
    model::EventKind,
};

const SAMPLES: usize = 40;
const MANY: usize = 500;
/// How long the agent's CPU is measured at steady state.
const MEASURE: Duration = Duration::from_secs(30);

fn now_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

/// Restarts `app` `SAMPLES` times; each time, from the app's own timestamp (in `stamp`) to the
/// `ready` event at a subscriber.
fn latencies(agent: &Agent, rt: &tokio::runtime::Runtime, app: &str, stamp: &str) -> Vec<Duration> {
    rt.block_on(async {
        let mut c = client::connect_unix(&agent.socket())
            .await
            .expect("connect");
        let mut sub = client::connect_unix(&agent.socket())
            .await
            .expect("connect")
            .subscribe(&Subscription {
                apps: vec![app.to_string()],
                kinds: vec![EventKind::Ready],
                ..Subscription::default()
            })
            .await
            .expect("subscribe");
        c.set_no_wait(true);
        let mut out = Vec::new();
        for i in 0..SAMPLES {
            let _ = fs::remove_file(stamp);
            c.restart(app, client::BaseEnv::Keep)
                .await
                .unwrap_or_else(|e| panic!("restart {app}: {e}"));
            let ev = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap_or_else(|_| panic!("{app}: no ready event within 10 s (sample {i})"))
                .expect("the stream")
                .expect("an event");
            let got = now_ms_f64();
            assert_eq!(ev.kind, EventKind::Ready);
            let t: f64 = fs::read_to_string(stamp)
                .unwrap_or_else(|e| panic!("{app} wrote no timestamp: {e}"))
                .trim()
                .parse()
                .expect("a timestamp");
            out.push(Duration::from_secs_f64(((got - t).max(0.0)) / 1e3));
        }
        out
    })
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut rows = Vec::new();

    // [1] Latency, per kind of check.
    let agent = Agent::start("latency", &[]);
    let stamp = |n: &str| agent.dir.path().join(n).to_string_lossy().into_owned();
    let (s_notify, s_log, s_tcp) = (stamp("notify.t"), stamp("log.t"), stamp("tcp.t"));
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("a port");
        l.local_addr().expect("its address").port()
    };
    let notify = format!(
        "import os, socket, time\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         time.sleep(0.05)\n\
         open('{s_notify}.tmp', 'w').write(repr(time.time() * 1000)); os.rename('{s_notify}.tmp', '{s_notify}')\n\
         s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)"
    );
    let log = format!(
        "import os, sys, time\n\
         time.sleep(0.05)\n\
         open('{s_log}.tmp', 'w').write(repr(time.time() * 1000)); os.rename('{s_log}.tmp', '{s_log}')\n\
         print('listening', flush=True)\n\
         time.sleep(1000)"
    );
    let tcp = format!(
        "import os, socket, time\n\
         time.sleep(0.05)\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         open('{s_tcp}.tmp', 'w').write(repr(time.time() * 1000)); os.rename('{s_tcp}.tmp', '{s_tcp}')\n\
         l.bind(('127.0.0.1', {port})); l.listen(16)\n\
         time.sleep(1000)"
    );
    let file = agent.dir.path().join("latency.toml");
    let q = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('"', "\\\"")
    };
    fs::write(
        &file,
        format!(
            "[[app]]\nname = \"notify\"\ncmd = [\"python3\", \"-c\", \"{}\"]\n[app.ready]\nnotify = true\n\n\
             [[app]]\nname = \"log\"\ncmd = [\"python3\", \"-c\", \"{}\"]\n[app.ready]\nlog = \"^listening$\"\n\n\
             [[app]]\nname = \"tcp\"\ncmd = [\"python3\", \"-c\", \"{}\"]\n[app.ready]\ntcp = \"127.0.0.1:{port}\"\nperiod = \"50ms\"\n",
            q(&notify),
            q(&log),
            q(&tcp)
        ),
    )
    .expect("an app file");
    agent.ok(&["start", &file.to_string_lossy()]);
    println!("[1] app's own readiness -> `ready` event at a subscriber, {SAMPLES} restarts each:");
    for (app, stamp, target) in [
        ("notify", &s_notify, 2.0),
        ("log", &s_log, 2.0),
        ("tcp", &s_tcp, 50.0),
    ] {
        let l = latencies(&agent, &rt, app, stamp);
        let s = Stats::of(&l);
        println!("  {app}:");
        s.print(2);
        rows.push(Row::at_most(
            format!("{app}: readiness -> event, median"),
            ms(s.median),
            target,
            "ms",
        ));
        rows.push(Row::info(format!("{app}: p99"), ms(s.p99), "ms"));
    }
    agent.shutdown();

    // [2] 500 apps with an http readiness and a 1 s tcp liveness check.
    let server = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = server.local_addr().expect("its address");
    thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(mut c) = conn else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                if matches!(c.read(&mut buf), Ok(n) if n > 0) {
                    let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
            });
        }
    });
    for (label, args) in [
        ("default sampling", &[][..]),
        ("sampling hourly", &["--sample-interval", "1h"][..]),
    ] {
        let agent = Agent::start("many", args);
        let mut text = String::new();
        for i in 0..MANY {
            text.push_str(&format!(
                "[[app]]\nname = \"a{i}\"\ncmd = \"sleep 1000\"\n[app.ready]\nhttp = \"http://{addr}/\"\n\
                 [app.alive]\ntcp = \"{addr}\"\nperiod = \"1s\"\n\n"
            ));
        }
        let file = agent.dir.path().join("many.toml");
        fs::write(&file, text).expect("an app file");
        let t = Instant::now();
        agent.ok(&["start", &file.to_string_lossy()]);
        println!(
            "\n[2] {MANY} apps with an http readiness and a 1 s tcp liveness check ({label}): all ready after {:.0} ms",
            ms(t.elapsed())
        );
        // Steady state: let every liveness probe run a few rounds first.
        thread::sleep(Duration::from_secs(3));
        let (c0, w0) = (cpu_time(agent.pid()), Instant::now());
        thread::sleep(MEASURE);
        let share = (cpu_time(agent.pid()) - c0).as_secs_f64() / w0.elapsed().as_secs_f64() * 100.0;
        let rss = rss_kib(agent.pid()) as f64 / 1024.0;
        println!(
            "    agent CPU over {} s: {share:.2} % of one core; RSS {rss:.1} MiB",
            MEASURE.as_secs()
        );
        rows.push(Row::at_most(
            format!("{MANY} apps, checks, {label}: agent CPU"),
            share,
            2.0,
            "%",
        ));
        rows.push(Row::at_most(
            format!("{MANY} apps, checks, {label}: RSS"),
            rss,
            40.0,
            "MiB",
        ));
        agent.shutdown();
    }
    print_table(&rows, 2, 12);
}
