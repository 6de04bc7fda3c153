//! Dependencies between apps (`depends_on`): start order, conditions, failing dependencies,
//! refusals at the edge, stop/restart propagation, delete refusal, agent restart order. A
//! readiness check on a log line makes "ready" observable and takes time (0.2 s here), so an
//! app that started too early would show in the event order.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// A service that prints `listening` after `delay` seconds and then runs.
fn service(delay: &str) -> String {
    format!("sleep {delay}; echo listening; exec sleep 1000")
}

/// An app-file entry for a service with a log readiness check.
fn entry(name: &str, delay: &str, deps: &[&str]) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[[app]]\nname = {name:?}\ncmd = [\"sh\", \"-c\", {:?}]\nkill_timeout = \"2s\"\ndepends_on = [{}]\n[app.ready]\nlog = \"listening\"\n",
        service(delay),
        deps.join(", ")
    )
}

/// `grpm ARGS` running on its own (its output discarded), killed if the test ends first.
fn in_background(agent: &Agent, args: &[&str]) -> ChildGuard {
    ChildGuard(Some(
        agent
            .cmd()
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

fn write(agent: &Agent, name: &str, text: &str) -> String {
    let path = agent.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Every event so far (of this home, across agents).
fn events(agent: &Agent) -> Vec<Value> {
    json_lines(&agent.ok(&["events", "--json", "--no-follow", "--from", "0"]))
}

fn last_seq(agent: &Agent) -> u64 {
    events(agent)
        .last()
        .map_or(0, |e| e["seq"].as_u64().unwrap())
}

/// The sequence number of the first `kind` event of `app` after `after`.
fn seq(events: &[Value], after: u64, app: &str, kind: &str) -> u64 {
    events
        .iter()
        .find(|e| e["seq"].as_u64().unwrap() > after && e["app"] == app && e["kind"] == kind)
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or_else(|| panic!("no {kind} event of {app} after {after} in {events:#?}"))
}

/// Asserts that (app, kind) pairs happened in this order after `after`.
fn in_order(events: &[Value], after: u64, steps: &[(&str, &str)]) {
    let seqs: Vec<u64> = steps
        .iter()
        .map(|(app, kind)| seq(events, after, app, kind))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "expected {steps:?} in this order, got seqs {seqs:?}"
    );
}

fn lines(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            // "stopped web (id 3), pid 42 (depends on db)": the pid varies; drop it.
            match (l.find(", pid "), l.find(" (")) {
                (Some(p), _) => {
                    let rest = &l[p + 6..];
                    let tail = rest.find(' ').map_or("", |i| &rest[i..]);
                    format!("{}{tail}", &l[..p])
                }
                _ => l.to_string(),
            }
        })
        .collect()
}

fn wait_all_online(agent: &Agent, names: &[&str]) -> Vec<u32> {
    names.iter().map(|n| agent.wait_online(n, None)).collect()
}

#[test]
fn a_chain_starts_in_order_and_a_start_brings_its_dependencies() {
    let agent = Agent::start();
    let file = write(
        &agent,
        "chain.toml",
        &[
            entry("web", "0.2", &["api"]),
            entry("api", "0.2", &["db"]),
            entry("db", "0.2", &[]),
        ]
        .concat(),
    );
    agent.ok(&["start", &file]);
    // Start answers once every app is ready.
    for n in ["db", "api", "web"] {
        assert_eq!(agent.status(n), "online", "{n}");
    }
    let ev = events(&agent);
    in_order(
        &ev,
        0,
        &[
            ("db", "starting"),
            ("db", "ready"),
            ("api", "starting"),
            ("api", "ready"),
            ("web", "starting"),
            ("web", "ready"),
        ],
    );

    // Stopping db takes its dependents down first, dependents first, and says so.
    let out = agent.ok(&["stop", "db"]);
    assert_eq!(
        lines(&out),
        [
            "stopped web (id 1) (depends on db)",
            "stopped api (id 2) (depends on db)",
            "stopped db (id 3)",
        ],
        "{out}"
    );
    let after = 0;
    let ev = events(&agent);
    in_order(
        &ev,
        after,
        &[
            ("web", "stopped"),
            ("api", "stopping"),
            ("api", "stopped"),
            ("db", "stopping"),
        ],
    );

    // Starting web starts what it needs first, and says so.
    let mark = last_seq(&agent);
    let out = agent.ok(&["start", "web"]);
    assert_eq!(
        lines(&out),
        [
            "started db (id 3) (needed by web)",
            "started api (id 2) (needed by web)",
            "started web (id 1)",
        ],
        "{out}"
    );
    let ev = events(&agent);
    in_order(
        &ev,
        mark,
        &[
            ("db", "ready"),
            ("api", "starting"),
            ("api", "ready"),
            ("web", "starting"),
        ],
    );
    // --json carries the reason as a field.
    agent.ok(&["stop", "web"]);
    let out: Value = serde_json::from_str(&agent.ok(&["start", "web", "--json"])).unwrap();
    assert_eq!(out.as_array().unwrap().len(), 1, "db and api run: {out}");
    let out: Value = serde_json::from_str(&agent.ok(&["stop", "api", "--json"])).unwrap();
    assert_eq!(out[0]["name"], "web");
    assert_eq!(out[0]["dependent_of"], "api");
    assert_eq!(out[1]["name"], "api");
    assert!(out[1].get("dependent_of").is_none(), "{out}");
}

#[test]
fn a_diamond_starts_its_branches_in_parallel() {
    let agent = Agent::start();
    let file = write(
        &agent,
        "diamond.toml",
        &[
            entry("base", "0.2", &[]),
            entry("left", "1", &["base"]),
            entry("right", "1", &["base"]),
            entry("top", "0.2", &["left", "right"]),
        ]
        .concat(),
    );
    agent.ok(&["start", &file]);
    let ev = events(&agent);
    in_order(&ev, 0, &[("base", "ready"), ("left", "starting")]);
    in_order(&ev, 0, &[("base", "ready"), ("right", "starting")]);
    in_order(&ev, 0, &[("left", "ready"), ("top", "starting")]);
    in_order(&ev, 0, &[("right", "ready"), ("top", "starting")]);
    // Both branches were on their way before either was ready.
    in_order(&ev, 0, &[("left", "starting"), ("right", "ready")]);
    in_order(&ev, 0, &[("right", "starting"), ("left", "ready")]);
    assert_eq!(agent.status("top"), "online");
}

#[test]
fn a_completed_gate_waits_for_a_successful_exit() {
    let mut agent = Agent::start();
    let marker = agent.path("migrated");
    let runs = agent.path("runs");
    let file = write(
        &agent,
        "gate.toml",
        &format!(
            r#"
[[app]]
name = "migrate"
cmd = ["sh", "-c", "sleep 0.3; echo run >> {runs}; touch {marker}"]
autorestart = false
[[app]]
name = "web"
cmd = ["sh", "-c", "test -f {marker} && exec sleep 1000"]
autorestart = false
depends_on = [{{ app = "migrate", condition = "completed" }}]
[[app]]
name = "bad-migrate"
cmd = ["sh", "-c", "sleep 0.1; exit 3"]
autorestart = false
[[app]]
name = "bad-web"
cmd = ["sleep", "1000"]
depends_on = [{{ app = "bad-migrate", condition = "completed" }}]
"#
        ),
    );
    let err = agent.fails(1, &["start", &file]);
    assert!(
        err.contains("bad-web: not started: bad-migrate did not complete: exited with exit code 3"),
        "{err}"
    );
    // web ran only after the migration had exited 0 (it would exit 1 otherwise).
    agent.wait_online("web", None);
    let ev = events(&agent);
    in_order(&ev, 0, &[("migrate", "exited"), ("web", "starting")]);
    assert_eq!(agent.status("migrate"), "stopped");
    assert_eq!(agent.status("bad-web"), "stopped");
    assert!(
        !ev.iter()
            .any(|e| e["app"] == "bad-web" && e["kind"] == "starting"),
        "bad-web must never have been started"
    );
    // A completed dependency is not run again for a later start.
    agent.ok(&["stop", "web"]);
    let mark = last_seq(&agent);
    agent.ok(&["start", "web"]);
    let ev = events(&agent);
    assert!(
        !ev.iter()
            .any(|e| e["seq"].as_u64().unwrap() > mark && e["app"] == "migrate"),
        "migrate ran again"
    );
    // Nor by a new agent, which brings web back: the job's exit is remembered.
    agent.ok(&["kill"]);
    agent.reap();
    agent.spawn();
    agent.wait_online("web", None);
    assert_eq!(agent.status("migrate"), "stopped");
    let ran = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        ran.lines().count(),
        1,
        "migrate ran again after an agent restart"
    );
    let detail = agent.ok(&["describe", "migrate"]);
    assert!(detail.contains("exit code 0"), "{detail}");
}

#[test]
fn a_dependency_that_never_becomes_ready_leaves_its_dependents_down() {
    let agent = Agent::start();
    let file = write(
        &agent,
        "stuck.toml",
        r#"
[[app]]
name = "db"
cmd = ["sleep", "1000"]
autorestart = false
[app.ready]
log = "never printed"
period = "100ms"
start_timeout = "1s"
[[app]]
name = "web"
cmd = ["sleep", "1000"]
depends_on = ["db"]
"#,
    );
    let err = agent.fails(1, &["start", &file]);
    assert!(
        err.contains("web: not started: db did not become ready: not ready after 1s"),
        "{err}"
    );
    assert_eq!(agent.status("web"), "stopped");
    assert!(!events(&agent)
        .iter()
        .any(|e| e["app"] == "web" && e["kind"] == "starting"));
    // The same through `start web`, with the chain's first link named.
    let err = agent.fails(1, &["start", "web"]);
    assert!(
        err.contains("web: not started: db did not become ready: not ready after 1s"),
        "{err}"
    );
}

#[test]
fn unknown_names_and_cycles_are_refused_and_nothing_is_created() {
    let agent = Agent::start();
    let err = agent.fails(
        2,
        &[
            "start",
            "--name",
            "web",
            "--depends-on",
            "nope",
            "--",
            "sleep",
            "1000",
        ],
    );
    assert!(
        err.contains("web depends on nope, which does not exist"),
        "{err}"
    );
    let file = write(
        &agent,
        "cycle.toml",
        r#"
[[app]]
name = "solo"
cmd = "sleep 1000"
[[app]]
name = "a"
cmd = "sleep 1000"
depends_on = ["b"]
[[app]]
name = "b"
cmd = "sleep 1000"
depends_on = ["a"]
"#,
    );
    let err = agent.fails(2, &["start", &file]);
    assert!(err.contains("cycle: a -> b -> a"), "{err}");
    assert!(agent.list().is_empty(), "nothing may be created");
    // A name may refer to an app of the same request, in any order.
    let file = write(
        &agent,
        "forward.toml",
        "[[app]]\nname = \"web\"\ncmd = \"sleep 1000\"\ndepends_on = [\"db\"]\n[[app]]\nname = \"db\"\ncmd = \"sleep 1000\"\n",
    );
    agent.ok(&["start", &file]);
    wait_all_online(&agent, &["web", "db"]);
}

#[test]
fn grpcurl_sees_the_refusals_as_invalid_argument() {
    let agent = Agent::start();
    let cycle = r#"{"apps": [
        {"name": "a", "cmd": ["sleep", "1000"], "depends_on": [{"app": "b"}]},
        {"name": "b", "cmd": ["sleep", "1000"], "depends_on": [{"app": "a", "condition": "CONDITION_STARTED"}]}
    ]}"#;
    let out = crate::grpcurl::call(&agent, Some(cycle), &["grpm.v1.ProcessManager/Start"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("cycle: a -> b -> a"), "{err}");
    let unknown =
        r#"{"app": {"name": "web", "cmd": ["sleep", "1000"], "depends_on": [{"app": "db"}]}}"#;
    let out = crate::grpcurl::call(&agent, Some(unknown), &["grpm.v1.ProcessManager/Start"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(
        err.contains("web depends on db, which does not exist"),
        "{err}"
    );
    assert!(agent.list().is_empty());
    // What a Stop answer says about a dependent.
    let ok = r#"{"apps": [
        {"name": "db", "cmd": ["sleep", "1000"]},
        {"name": "web", "cmd": ["sleep", "1000"], "depends_on": [{"app": "db"}]}
    ]}"#;
    let out = crate::grpcurl::call(&agent, Some(ok), &["grpm.v1.ProcessManager/Start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = crate::grpcurl::call(
        &agent,
        Some(r#"{"target": "db"}"#),
        &["grpm.v1.ProcessManager/Stop"],
    );
    let stopped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stopped["apps"][0]["name"], "web");
    assert_eq!(stopped["apps"][0]["dependentOf"], "db");
    assert_eq!(stopped["apps"][1]["name"], "db");
}

#[test]
fn restart_takes_the_running_dependents_along_in_order() {
    let agent = Agent::start();
    let file = write(
        &agent,
        "chain.toml",
        &[
            entry("db", "0.2", &[]),
            entry("api", "0.2", &["db"]),
            entry("web", "0.2", &["api"]),
            entry("other", "0", &[]),
        ]
        .concat(),
    );
    agent.ok(&["start", &file]);
    let before = wait_all_online(&agent, &["db", "api", "web", "other"]);
    let mark = last_seq(&agent);
    let out = agent.ok(&["restart", "db"]);
    assert_eq!(
        lines(&out),
        [
            "restarted db (id 1)",
            "restarted api (id 2) (depends on db)",
            "restarted web (id 3) (depends on db)",
        ],
        "{out}"
    );
    let after = wait_all_online(&agent, &["db", "api", "web", "other"]);
    for i in 0..3 {
        assert_ne!(before[i], after[i], "app {i} kept its pid");
    }
    assert_eq!(before[3], after[3], "other does not depend on db");
    let ev = events(&agent);
    in_order(
        &ev,
        mark,
        &[
            ("web", "stopped"),
            ("api", "stopping"),
            ("api", "stopped"),
            ("db", "stopping"),
            ("db", "stopped"),
            ("db", "starting"),
            ("db", "ready"),
            ("api", "starting"),
            ("api", "ready"),
            ("web", "starting"),
        ],
    );
}

#[test]
fn deleting_an_app_others_depend_on_is_refused() {
    let agent = Agent::start();
    let file = write(
        &agent,
        "pair.toml",
        "[[app]]\nname = \"db\"\ncmd = \"sleep 1000\"\n[[app]]\nname = \"web\"\ncmd = \"sleep 1000\"\ndepends_on = [\"db\"]\n[[app]]\nname = \"api\"\ncmd = \"sleep 1000\"\ndepends_on = [\"db\"]\n",
    );
    agent.ok(&["start", &file]);
    let err = agent.fails(1, &["delete", "db"]);
    assert!(
        err.contains("db: cannot delete: api, web depend on it"),
        "{err}"
    );
    assert_eq!(agent.status("db"), "online");
    // Together, in reverse order.
    let out = agent.ok(&["delete", "all"]);
    let names: Vec<&str> = out.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(names.last(), Some(&"db"), "{out}");
    assert!(agent.list().is_empty());
}

#[test]
fn a_new_agent_brings_apps_back_in_dependency_order() {
    let mut agent = Agent::start();
    let file = write(
        &agent,
        "chain.toml",
        &[
            entry("web", "0.2", &["api"]),
            entry("api", "0.2", &["db"]),
            entry("db", "0.2", &[]),
        ]
        .concat(),
    );
    agent.ok(&["start", &file]);
    let mark = last_seq(&agent);
    // The agent's shutdown stops dependents first.
    agent.ok(&["kill"]);
    agent.reap();
    agent.spawn();
    wait_until("every app online", Duration::from_secs(30), || {
        ["db", "api", "web"]
            .iter()
            .all(|n| agent.status(n) == "online")
    });
    let ev = events(&agent);
    in_order(
        &ev,
        mark,
        &[
            ("web", "stopped"),
            ("api", "stopping"),
            ("api", "stopped"),
            ("db", "stopping"),
            ("db", "stopped"),
            ("db", "starting"),
            ("db", "ready"),
            ("api", "starting"),
            ("api", "ready"),
            ("web", "starting"),
            ("web", "ready"),
        ],
    );
}

#[test]
fn a_started_condition_does_not_wait_for_readiness() {
    let agent = Agent::start();
    let file = write(
        &agent,
        "started.toml",
        &[entry("db", "1", &[]), entry("logger", "0", &[])].concat(),
    );
    agent.ok(&["start", "--no-wait", &file]);
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--depends-on",
        "logger",
        "--depends-on",
        "db:started",
        "--",
        "sleep",
        "1000",
    ]);
    agent.wait_online("db", None);
    let ev = events(&agent);
    in_order(
        &ev,
        0,
        &[("db", "starting"), ("web", "starting"), ("db", "ready")],
    );
    // `stop all` goes in reverse order too.
    let out = agent.ok(&["stop", "all"]);
    let names: Vec<&str> = out.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert_eq!(names.first(), Some(&"web"), "{out}");
}

#[test]
fn an_agent_that_dies_inside_a_restart_brings_the_dependents_back() {
    let mut agent = Agent::start();
    // db is ready while its marker exists: with the marker gone, a restart of db waits in its
    // second half (db starting, web stopped), which is where the agent dies.
    let marker = agent.path("db-ready");
    std::fs::write(&marker, "").unwrap();
    let file = write(
        &agent,
        "pair.toml",
        &format!(
            r#"
[[app]]
name = "db"
cmd = ["sleep", "1000"]
[app.ready]
exec = ["test", "-f", "{marker}"]
period = "50ms"
[[app]]
name = "web"
cmd = ["sleep", "1000"]
depends_on = ["db"]
"#
        ),
    );
    agent.ok(&["start", &file]);
    std::fs::remove_file(&marker).unwrap();
    let restart = in_background(&agent, &["restart", "db"]);
    wait_until(
        "web stopped and db starting",
        Duration::from_secs(10),
        || agent.status("web") == "stopped" && agent.status("db") == "starting",
    );
    agent.crash();
    drop(restart);
    std::fs::write(&marker, "").unwrap();
    agent.spawn();
    // Nobody asked web to stop: the new agent brings it back, after db.
    agent.wait_online("db", None);
    agent.wait_online("web", None);
}

#[test]
fn an_app_cannot_be_created_on_a_dependency_being_deleted() {
    let agent = Agent::start();
    // db ignores SIGTERM, so its delete takes its whole kill_timeout.
    let db = write(
        &agent,
        "db.toml",
        "[[app]]\nname = \"db\"\ncmd = [\"sh\", \"-c\", \"trap '' TERM; while :; do sleep 0.1; done\"]\nkill_timeout = \"3s\"\n",
    );
    agent.ok(&["start", &db]);
    let mut delete = in_background(&agent, &["delete", "db"]);
    wait_until("db stopping", Duration::from_secs(10), || {
        agent.status("db") == "stopping"
    });
    let web = write(
        &agent,
        "web.toml",
        "[[app]]\nname = \"web\"\ncmd = [\"sleep\", \"1000\"]\ndepends_on = [\"db\"]\n",
    );
    let err = agent.fails(1, &["start", &web]);
    assert!(
        err.contains("web: depends on db, which is being deleted"),
        "{err}"
    );
    assert!(delete.wait_exit(Duration::from_secs(20)).success());
    // Nothing was created, and the name is free again once the delete is done.
    assert!(agent.list().is_empty(), "{:?}", agent.list());
    let err = agent.fails(2, &["start", &web]);
    assert!(err.contains("depends on db, which does not exist"), "{err}");
}
