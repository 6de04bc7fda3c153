//! The event stream: order and completeness, `manual`, resume without loss (also across agent
//! restarts), gap events, slow subscribers, NotifyGod.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use grpm::{
    client::{BaseEnv, Subscription},
    model::{Env, EventKind},
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use crate::common::*;

fn events(agent: &Agent, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json", "--no-follow"];
    all.extend_from_slice(args);
    json_lines(&agent.ok(&all))
}

fn kinds_of(evs: &[Value]) -> Vec<(String, bool)> {
    evs.iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["manual"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Seqs increase by one, or jump over exactly what a gap event says it stands for.
fn assert_continuous(evs: &[Value]) {
    for w in evs.windows(2) {
        let (a, b) = (w[0]["seq"].as_u64().unwrap(), w[1]["seq"].as_u64().unwrap());
        let lost = if w[1]["kind"] == "gap" {
            w[1]["lost"].as_u64().unwrap()
        } else {
            1
        };
        assert!(
            b == a + 1 || (w[1]["kind"] == "gap" && b - lost == a),
            "discontinuity between {} and {}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn a_full_lifecycle_in_order_with_manual_only_on_requests() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    agent.ok(&["restart", "web"]);
    let pid = agent.wait_online("web", None);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    agent.wait_online("web", Some(pid));
    agent.ok(&["stop", "web"]);
    agent.ok(&["delete", "web"]);
    let evs = events(&agent, &["--from", "0"]);
    let t = |k: &str, m: bool| (k.to_string(), m);
    assert_eq!(
        kinds_of(&evs),
        [
            t("created", true),
            t("starting", true),
            t("online", true),
            t("restarting", true),
            t("stopping", true),
            t("exited", true),
            t("stopped", true),
            t("starting", true),
            t("online", true),
            t("exited", false),
            t("autorestart_scheduled", false),
            t("starting", false),
            t("online", false),
            t("stopping", true),
            t("exited", true),
            t("stopped", true),
            t("deleted", true),
        ]
    );
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=17).collect::<Vec<u64>>());
    assert!(evs.iter().all(|e| e["app"] == "web"
        && e["app_id"] == 1
        && e["time"].as_str().unwrap().ends_with('Z')));
    // The details that apply.
    assert_eq!(evs[5]["signal"], 15);
    assert_eq!(evs[9]["signal"], 9);
    assert_eq!(evs[9]["pid"], pid);
    assert_eq!(evs[9]["cause"]["kind"], "crash");
    assert_eq!(evs[10]["delay_ms"], 100);
    assert_eq!(evs[11]["cause"]["kind"], "backoff");
    assert_eq!(evs[3]["cause"]["method"], "Restart");
    assert_eq!(evs[3]["cause"]["uid"], nix::unistd::getuid().as_raw());
    // Times never go backwards.
    let times: Vec<u64> = evs
        .iter()
        .map(|e| e["at_unix_ms"].as_u64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn errored_events_carry_the_cause() {
    let agent = Agent::start();
    agent.fails(1, &["start", "--name", "ghost", "--", "/nonexistent/ghost"]);
    let evs = events(&agent, &["--from", "0", "--kind", "errored"]);
    assert_eq!(evs.len(), 1);
    assert!(
        evs[0]["error"].as_str().unwrap().contains("No such file"),
        "{}",
        evs[0]
    );
    assert_eq!(evs[0]["manual"], true);
}

#[test]
fn resume_from_a_sequence_number_loses_and_repeats_nothing() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let all = events(&agent, &["--from", "0"]);
    let n = all[1]["seq"].as_u64().unwrap();
    let replay = events(&agent, &["--from", &n.to_string()]);
    assert_eq!(replay, all[2..]);

    // Live: a follower started from N sees the replay, then new events, in one unbroken run.
    let mut follower = agent
        .cmd()
        .args(["events", "--json", "--from", &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    agent.ok(&["restart", "web"]);
    agent.ok(&["notify", "web", "--action", "deploy", "--message", "v1.2"]);
    let mut got: Vec<Value> = Vec::new();
    while got.last().is_none_or(|e| e["kind"] != "notify") {
        got.push(serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap());
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(got.first().unwrap()["seq"].as_u64().unwrap(), n + 1);
    assert_continuous(&got);
    assert!(got.iter().all(|e| e["kind"] != "gap"));
    assert_eq!(got, events(&agent, &["--from", &n.to_string()]));
}

#[test]
fn sequence_numbers_and_resume_survive_agent_restarts_and_crashes() {
    let mut agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let before = events(&agent, &["--from", "0"]);
    let last = before.last().unwrap()["seq"].as_u64().unwrap();

    // A clean restart of the agent: resume from `last` continues exactly.
    agent.ok(&["kill"]);
    agent.reap();
    agent.spawn();
    agent.wait_online("web", None);
    let after = events(&agent, &["--from", &last.to_string()]);
    assert_eq!(after[0]["seq"].as_u64().unwrap(), last + 1, "{after:?}");
    assert_continuous(&after);
    assert!(after.iter().all(|e| e["kind"] != "gap"));
    assert_eq!(events(&agent, &["--from", "0"])[..before.len()], before[..]);

    // A crash: numbers are never reused; the unknown stretch is reported as a gap.
    let last2 = events(&agent, &["--from", "0"]).last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    agent.crash();
    agent.spawn();
    // The survivor's adoption is evented by its owner, concurrently with our first request:
    // wait for it, so that the notification comes last.
    wait_until(
        "the adoption's online event",
        std::time::Duration::from_secs(20),
        || {
            events(&agent, &["--from", &last2.to_string()])
                .iter()
                .any(|e| e["kind"] == "online")
        },
    );
    agent.ok(&["notify", "web", "--action", "check"]);
    let resumed = events(&agent, &["--from", &last2.to_string()]);
    assert_eq!(resumed[0]["kind"], "gap", "{resumed:?}");
    assert_continuous(&resumed);
    assert!(resumed.last().unwrap()["seq"].as_u64().unwrap() > last2);
    assert_eq!(resumed.last().unwrap()["kind"], "notify");
}

#[test]
fn resuming_past_what_is_kept_says_how_many_were_lost() {
    let agent = Agent::start_with(&["--events-kept", "5"]);
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]); // 3 events
    agent.ok(&["restart", "web"]); // 6 more: 9 in all, 5 kept
    let evs = events(&agent, &["--from", "1"]);
    assert_eq!(evs[0]["kind"], "gap");
    assert_eq!(
        (evs[0]["seq"].as_u64(), evs[0]["lost"].as_u64()),
        (Some(4), Some(3))
    );
    let seqs: Vec<u64> = evs[1..]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9]);
    // From a kept number there is no gap.
    assert_eq!(events(&agent, &["--from", "4"]).len(), 5);
}

#[test]
fn filters_and_notify_round_trip() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    agent.ok(&["start", "--name", "db", "--", "sleep", "1000"]);
    let out = agent.ok(&[
        "notify",
        "web",
        "--action",
        "deploy",
        "--message",
        "v1.2",
        "--data",
        "sha=abc1",
        "--json",
    ]);
    let sent = json_lines(&out);
    assert_eq!(sent.len(), 1);
    let evs = events(
        &agent,
        &["--from", "0", "--app", "web", "--kind", "notify,online"],
    );
    assert_eq!(
        kinds_of(&evs),
        [("online".into(), true), ("notify".into(), true)]
    );
    let n = &evs[1];
    assert_eq!(n, &sent[0]);
    assert_eq!(
        (n["action"].as_str(), n["message"].as_str()),
        (Some("deploy"), Some("v1.2"))
    );
    assert_eq!(n["data"]["sha"], "abc1");
    // Fields that do not apply are null, `data` included.
    assert!(
        evs[0]["data"].is_null() && evs[0]["action"].is_null(),
        "{}",
        evs[0]
    );
    assert_eq!(n["cause"]["method"], "NotifyGod");
    let e = agent.fails(1, &["notify", "nosuch", "--action", "deploy"]);
    assert!(e.contains("no app matches"), "{e}");
    let e = agent.fails(2, &["events", "--kind", "exploded"]);
    assert!(e.contains("unknown event kind"), "{e}");
    // Human lines too.
    let text = agent.ok(&["events", "--no-follow", "--recent", "1"]);
    assert!(
        text.contains("web[1] notify deploy: v1.2 sha=abc1") && text.contains("manual: NotifyGod"),
        "{text}"
    );
    let bare = json_lines(&agent.ok(&["notify", "web", "--action", "ping", "--json"]));
    assert!(
        bare[0]["data"].is_null() && bare[0]["message"].is_null(),
        "{}",
        bare[0]
    );
}

#[test]
fn a_subscriber_that_never_reads_blocks_nothing_and_stays_bounded() {
    let agent = Agent::start_with(&["--events-kept", "50"]);
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sock = agent.home.join("agent.sock");
        let mut stalled_client = grpm::client::connect_unix(&sock).await.unwrap();
        let mut stalled = stalled_client
            .subscribe(&Subscription::default())
            .await
            .unwrap();
        let mut c = grpm::client::connect_unix(&sock).await.unwrap();
        let rss_before = rss_kib(agent.pid());
        // 4,000 notifications of 32 KiB: 125 MiB if the agent buffered them for the stalled
        // subscriber. Its bounds (queue 4 MiB, event-log backlog 4 MiB, 50 kept events) plus
        // allocator slack stay far below the threshold.
        let big = "x".repeat(32 * 1024);
        for i in 0..4000 {
            c.notify("web", "load", &format!("{i} {big}"), &Env::new())
                .await
                .unwrap();
        }
        // The supervisor is not held up: a restart goes through at once.
        let t = Instant::now();
        c.restart("web", BaseEnv::Keep).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "restart took {:?}",
            t.elapsed()
        );
        let grown = rss_kib(agent.pid()).saturating_sub(rss_before);
        assert!(
            grown < 48 * 1024,
            "agent RSS grew by {grown} KiB for a stalled subscriber"
        );
        // Reading at last: the first events, then one gap where the rest were lost, then on.
        let mut got = Vec::new();
        let mut saw_gap = false;
        while let Some(e) = tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("the stalled stream to deliver")
            .unwrap()
        {
            if e.kind == EventKind::Gap {
                saw_gap = true;
                assert!(e.lost > 0);
            }
            let done = e.kind == EventKind::Online;
            got.push(e);
            if done {
                break;
            }
        }
        assert!(saw_gap, "no gap event after an overflow");
        for w in got.windows(2) {
            let lost = if w[1].kind == EventKind::Gap {
                w[1].lost
            } else {
                1
            };
            assert_eq!(w[1].seq - lost, w[0].seq, "discontinuity");
        }
    });
}

#[test]
fn an_unknown_app_in_the_filter_is_refused_as_stop_refuses_it() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    agent.ok(&["start", "--name", "db", "--", "sleep", "1000"]);
    let stop = agent.fails(1, &["stop", "nosuch"]);
    for args in [
        &["events", "--app", "nosuch"][..],
        &["events", "--app", "web", "--app", "nosuch", "--no-follow"],
    ] {
        let e = agent.fails(1, args);
        assert_eq!(e, stop, "grpm {args:?}");
    }
    assert!(stop.contains(r#"no app matches "nosuch""#), "{stop}");
    // A deleted app's kept events are still reachable by its name.
    agent.ok(&["delete", "db"]);
    let evs = events(&agent, &["--from", "0", "--app", "db"]);
    assert_eq!(evs.last().unwrap()["kind"], "deleted");
}
