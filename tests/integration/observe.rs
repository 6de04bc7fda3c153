//! Seeing what runs: tree usage in list/describe, Prometheus metrics, sd_notify, the systemd
//! unit, completions and the man page, and `grpm monit` in a real terminal.

use std::time::Duration;

use serde_json::Value;

use crate::common::{wait_until, Agent};

/// A tree of three: the shell and two sleeps.
const TREE: &str = "sleep 1000 & sleep 1000 & wait";

#[test]
fn list_and_describe_report_the_whole_tree() {
    let agent = Agent::start_with(&["--sample-interval", "100ms"]);
    agent.ok(&["start", "--name", "tree", "--", "sh", "-c", TREE]);
    agent.ok(&["start", "--name", "single", "--", "sleep", "1000"]);
    agent.wait_online("tree", None);
    wait_until(
        "a sample showing three processes",
        Duration::from_secs(20),
        || agent.app("tree")["processes"] == 3,
    );
    let tree = agent.app("tree");
    let single = agent.app("single");
    wait_until(
        "a sample of the single app",
        Duration::from_secs(20),
        || agent.app("single")["processes"] == 1,
    );
    // Three processes use more memory than one of them.
    let single_mem = agent.app("single")["memory_bytes"].as_u64().unwrap();
    assert!(single_mem > 0, "{single}");
    assert!(
        tree["memory_bytes"].as_u64().unwrap() > single_mem,
        "tree {tree} vs single {single}"
    );
    assert!(tree["cpu_percent"].as_f64().unwrap() >= 0.0);
    let d: Value = agent.describe("tree");
    assert_eq!(d["processes"], 3, "{d}");
    let table = agent.ok(&["list"]);
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("PROCS"), "{table}");
    let row = table.lines().find(|l| l.contains(" tree ")).unwrap();
    assert!(row.trim_end().ends_with(" 3"), "{table}");
    // A stopped app has no tree.
    agent.ok(&["stop", "tree"]);
    assert_eq!(agent.app("tree")["processes"], 0);
    // The interval is checked at the edge.
    let err = agent.fails(2, &["agent", "--sample-interval", "1ms"]);
    assert!(err.contains("100ms to 1h"), "{err}");
}
