//! App files: several apps in one request, ids in file order, existing apps left as they are.

use crate::common::*;

fn write(agent: &Agent, text: &str) -> String {
    let path = agent.path("apps.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_file_starts_its_apps_in_order_and_again_without_duplicates() {
    let agent = Agent::start();
    let file = write(
        &agent,
        r#"
[[app]]
name = "alpha"
cmd = "sleep 1000"
[[app]]
name = "beta"
cmd = ["sleep", "1000"]
kill_timeout = "1s"
[[app]]
name = "gamma"
cmd = "sleep 1000"
env = { GREETING = "hi" }
"#,
    );
    let table = agent.ok(&["start", &file]);
    assert!(table.starts_with("ID  NAME"), "{table}");
    let ids: Vec<(u64, String)> = agent
        .list()
        .iter()
        .map(|a| {
            (
                a["id"].as_u64().unwrap(),
                a["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [(1, "alpha".into()), (2, "beta".into()), (3, "gamma".into())]
    );
    let pids: Vec<u32> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|n| agent.wait_online(n, None))
        .collect();
    assert_eq!(agent.describe("gamma")["declared_env"]["GREETING"], "hi");
    assert_eq!(agent.describe("beta")["kill_timeout_ms"], 1000);

    // Again: nothing is duplicated or restarted.
    let out = agent.ok(&["start", &file]);
    assert!(out.contains("alpha already exists"), "{out}");
    assert_eq!(agent.list().len(), 3);
    assert_eq!(agent.wait_online("alpha", None), pids[0]);

    // A stopped app of the file is started again.
    agent.ok(&["stop", "beta"]);
    agent.ok(&["start", &file]);
    assert_ne!(agent.wait_online("beta", None), pids[1]);
}

#[test]
fn a_bad_spec_creates_nothing_and_a_failed_start_fails_the_command() {
    let agent = Agent::start();
    let bad = write(&agent, "[[app]]\nname = \"ok\"\ncmd = \"sleep 1000\"\n[[app]]\nname = \"rel\"\ncmd = \"sleep 1\"\nstop_signal = \"SIGSEGV\"\n");
    let e = agent.fails(2, &["start", &bad]);
    assert!(e.contains("apps.toml:7: stop_signal"), "{e}");
    assert!(agent.list().is_empty());

    let mixed = write(&agent, "[[app]]\nname = \"good\"\ncmd = \"sleep 1000\"\n[[app]]\nname = \"ghost\"\ncmd = \"/nonexistent/ghost\"\n");
    let out = agent.run(&["start", &mixed]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("ghost") && e.contains("No such file"), "{e}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("errored"), "{table}");
    agent.wait_online("good", None);
    assert_eq!(agent.status("ghost"), "errored");
}

#[test]
fn the_demo_file_parses() {
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.toml");
    let apps = grpm::cli::appfile::load(&demo, false, None).unwrap();
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
}

#[test]
fn a_relative_cwd_is_stored_without_dot_components() {
    let agent = Agent::start();
    std::fs::create_dir(agent.path("www")).unwrap();
    let file = write(
        &agent,
        r#"
[[app]]
name = "here"
cmd = "sleep 1000"
cwd = "."
[[app]]
name = "www"
cmd = "sleep 1000"
cwd = "./www/."
"#,
    );
    agent.ok(&["start", &file]);
    // The file's directory, as the agent's temp dir is spelled (symlinks resolved by the CLI
    // for the file's own path only).
    let dir = std::fs::canonicalize(agent.dir.path()).unwrap();
    assert_eq!(agent.describe("here")["cwd"], dir.display().to_string());
    assert_eq!(
        agent.describe("www")["cwd"],
        dir.join("www").display().to_string()
    );
    // From --cwd too, with no symlink resolved: a `.` is dropped, a `..` kept.
    let odd = format!("{}/./www/../www/.", agent.dir.path().display());
    agent.ok(&[
        "start", "--name", "api", "--cwd", &odd, "--", "sleep", "1000",
    ]);
    assert_eq!(
        agent.describe("api")["cwd"],
        format!("{}/www/../www", agent.dir.path().display())
    );
}
