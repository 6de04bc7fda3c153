//! Restarts an app's spec asks for: a cron schedule, and watched files (a burst restarts once;
//! ignored paths change nothing; a deleted watched directory is reported).

use std::{fs, time::Duration};

use serde_json::Value;

use crate::common::{json_lines, wait_until, Agent};

/// The `restarting` events of `app` caused by `cause`.
fn restarts_by(agent: &Agent, app: &str, cause: &str) -> usize {
    json_lines(&agent.ok(&[
        "events",
        "--app",
        app,
        "--kind",
        "restarting",
        "--no-follow",
        "--recent",
        "500",
        "--json",
    ]))
    .iter()
    .filter(|e: &&Value| e["cause"]["kind"] == cause)
    .count()
}

/// Checks that `cond` holds for all of `span` (a condition that must stay true, observed).
fn stays(what: &str, span: Duration, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + span;
    while std::time::Instant::now() < end {
        assert!(cond(), "{what} stopped holding");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_schedule_restarts_the_app_and_describe_shows_the_next_firing() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "cron",
        "--restart-schedule",
        "*/2 * * * * *",
        "--",
        "sleep",
        "1000",
    ]);
    let d = agent.describe("cron");
    let next = d["next_restart_unix_ms"].as_u64().expect("a next firing");
    let now = grpm::model::now_unix_ms();
    assert!(next > now && next <= now + 2_100, "next {next}, now {now}");
    wait_until("two scheduled restarts", Duration::from_secs(8), || {
        restarts_by(&agent, "cron", "schedule") >= 2
    });
    // The `restarting` event comes before the restart is counted (once the old tree is gone).
    wait_until("two restarts counted", Duration::from_secs(8), || {
        agent.app("cron")["restarts"].as_u64().unwrap() >= 2
    });
    assert_eq!(agent.describe("cron")["last_restart"]["cause"], "schedule");
    // Stopped, nothing fires, and describe says so.
    agent.ok(&["stop", "cron"]);
    assert!(agent.describe("cron")["next_restart_unix_ms"].is_null());
    let before = restarts_by(&agent, "cron", "schedule");
    stays(
        "no firing while stopped",
        Duration::from_millis(2_500),
        || restarts_by(&agent, "cron", "schedule") == before,
    );
}

#[test]
fn a_malformed_schedule_is_refused_with_the_parsers_message() {
    let agent = Agent::start();
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "x",
            "--restart-schedule",
            "61 * * * *",
            "--",
            "true",
        ],
    );
    assert!(
        err.contains("--restart-schedule") && err.contains("\"61 * * * *\""),
        "{err}"
    );
    assert!(agent.list().is_empty());
}

#[test]
fn watched_files_restart_once_per_burst_and_ignored_ones_never() {
    let agent = Agent::start();
    let dir = agent.path("proj");
    fs::create_dir_all(format!("{dir}/src/.git")).unwrap();
    fs::write(format!("{dir}/src/app.py"), "v1").unwrap();
    let file = agent.path("apps.toml");
    fs::write(
        &file,
        format!(
            "[[app]]\nname = \"dev\"\ncmd = \"sleep 1000\"\ncwd = \"{dir}\"\nwatch = [\"src\"]\n\
             watch_ignore = [\"*.tmp\"]\nwatch_debounce = \"300ms\"\n"
        ),
    )
    .unwrap();
    agent.ok(&["start", &file]);
    let pid = agent.wait_online("dev", None);
    // One change: one restart, after the debounce.
    fs::write(format!("{dir}/src/app.py"), "v2").unwrap();
    let pid2 = agent.wait_online("dev", Some(pid));
    wait_until("one watch restart", Duration::from_secs(5), || {
        restarts_by(&agent, "dev", "watch") == 1
    });
    // A burst of 100 writes within 200 ms: one more restart.
    for i in 0..100 {
        fs::write(format!("{dir}/src/app.py"), format!("v{i}")).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    agent.wait_online("dev", Some(pid2));
    wait_until("the burst's restart", Duration::from_secs(5), || {
        restarts_by(&agent, "dev", "watch") == 2
    });
    stays(
        "one restart per burst",
        Duration::from_millis(1_200),
        || restarts_by(&agent, "dev", "watch") == 2,
    );
    // Ignored paths: ours and the defaults.
    fs::write(format!("{dir}/src/scratch.tmp"), "x").unwrap();
    fs::write(format!("{dir}/src/.git/HEAD"), "x").unwrap();
    fs::write(format!("{dir}/src/debug.log"), "x").unwrap();
    stays(
        "ignored paths change nothing",
        Duration::from_millis(1_200),
        || restarts_by(&agent, "dev", "watch") == 2,
    );
    let d = agent.describe("dev");
    assert_eq!(d["watch"][0], "src", "{d}");
    assert_eq!(d["last_restart"]["cause"], "watch", "{d}");
    // The watched directory goes away: reported.
    fs::remove_dir_all(format!("{dir}/src")).unwrap();
    wait_until(
        "the deleted directory reported",
        Duration::from_secs(5),
        || {
            agent.describe("dev")["watch_error"]
                .as_str()
                .is_some_and(|e| e.contains("was deleted"))
        },
    );
}

#[test]
fn a_watched_path_that_does_not_exist_is_refused() {
    let agent = Agent::start();
    let err = agent.fails(
        2,
        &[
            "start", "--name", "x", "--watch", "nope", "--", "sleep", "1",
        ],
    );
    assert!(err.contains("nope does not exist"), "{err}");
    assert!(agent.list().is_empty());
}

#[test]
fn a_tree_over_its_memory_limit_is_restarted_and_a_spike_is_not() {
    let agent = Agent::start_with(&["--sample-interval", "200ms"]);
    let file = agent.path("apps.toml");
    // `hog`: a child of the main process holds 80 MiB (written, so resident).
    // `spike`: 80 MiB for a quarter of a second (at most two samples), under a grace of 5.
    fs::write(
        &file,
        r#"
[[app]]
name = "hog"
cmd = ["sh", "-c", "python3 -c 'import time; b = b\"x\" * (80 << 20); time.sleep(1000)' & wait"]
max_memory = "40M"

[[app]]
name = "spike"
cmd = ["python3", "-c", "import time; b = b'x' * (80 << 20); time.sleep(0.25); del b; time.sleep(1000)"]
max_memory = "40M"
memory_grace = 5
"#,
    )
    .unwrap();
    agent.ok(&["start", &file]);
    let hog = agent.wait_online("hog", None);
    let spike = agent.wait_online("spike", None);
    wait_until("a memory restart of hog", Duration::from_secs(15), || {
        restarts_by(&agent, "hog", "memory") >= 1
    });
    assert_ne!(agent.wait_online("hog", Some(hog)), hog);
    let d = agent.describe("hog");
    assert_eq!(d["max_memory"], 40 << 20, "{d}");
    assert_eq!(d["last_restart"]["cause"], "memory", "{d}");
    stays("the spike restarts nothing", Duration::from_secs(2), || {
        restarts_by(&agent, "spike", "memory") == 0
    });
    assert_eq!(agent.app("spike")["pid"], spike);
}
