//! `grpm apply` and `grpm diff`: the file states what should exist. Apps keep their id,
//! restart count, logs and events across a change; unchanged ones are not touched; a dry run
//! touches nothing and says by its exit code whether there is work; a bad file changes
//! nothing; the captured environment changes only with --update-env; env profiles show where
//! each variable comes from.

use serde_json::Value;

use crate::common::*;

fn write(agent: &Agent, name: &str, text: &str) -> String {
    let path = agent.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Events after `seq`, as JSON.
fn events_after(agent: &Agent, seq: u64) -> Vec<Value> {
    json_lines(&agent.ok(&[
        "events",
        "--no-follow",
        "--json",
        "--from",
        &seq.to_string(),
    ]))
}

fn last_seq(agent: &Agent) -> u64 {
    json_lines(&agent.ok(&["events", "--no-follow", "--json", "--recent", "1"]))
        .last()
        .map_or(0, |e| e["seq"].as_u64().unwrap())
}

fn diff_json(agent: &Agent, args: &[&str], code: i32) -> Value {
    let out = agent.run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "grpm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const TWO: &str = r#"
[[app]]
name = "web"
cmd = "sleep 1000"
env = { TOKEN = "hunter2" }
[[app]]
name = "worker"
cmd = "sleep 1001"
"#;

#[test]
fn a_changed_app_keeps_its_id_and_history_and_an_unchanged_one_is_not_touched() {
    let agent = Agent::start();
    let file = write(&agent, "apps.toml", TWO);
    let out = agent.ok(&["apply", &file]);
    assert!(
        out.contains("create     web") && out.contains("ID  NAME"),
        "{out}"
    );
    let (web, worker) = (
        agent.wait_online("web", None),
        agent.wait_online("worker", None),
    );
    let canonical = std::fs::canonicalize(&file).unwrap();
    assert_eq!(
        agent.describe("web")["file"],
        canonical.to_string_lossy().as_ref()
    );

    // Unchanged: no restart, no event.
    let seq = last_seq(&agent);
    let out = agent.ok(&["apply", &file]);
    assert!(out.contains("unchanged  web (id 1)"), "{out}");
    assert!(events_after(&agent, seq).is_empty());
    assert_eq!(agent.wait_online("web", None), web);

    // One field changes: web is restarted with it, in place; worker is left alone.
    std::fs::write(&file, TWO.replace("sleep 1000", "sleep 1002")).unwrap();
    let seq = last_seq(&agent);
    let out = agent.ok(&["apply", &file]);
    assert!(
        out.contains("change     web (id 1)")
            && out.contains(r#"cmd: ["sleep","1000"] -> ["sleep","1002"]"#),
        "{out}"
    );
    let new_web = agent.wait_online("web", Some(web));
    let app = agent.app("web");
    assert_eq!(
        (app["id"].as_u64(), app["restarts"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(agent.describe("web")["cmd"][1], "1002");
    assert!(!alive(web), "the old instance is gone");
    assert_eq!(agent.wait_online("worker", None), worker);
    assert_eq!(agent.app("worker")["restarts"], 0);
    let events = events_after(&agent, seq);
    assert!(events.iter().all(|e| e["app"] == "web"), "{events:?}");
    let restarting = events
        .iter()
        .find(|e| e["kind"] == "restarting")
        .expect("a restarting event");
    assert_eq!(restarting["cause"]["kind"], "apply");
    assert_eq!(restarting["cause"]["method"], "Apply");
    assert_eq!(restarting["manual"], true);
    assert!(events
        .iter()
        .any(|e| e["kind"] == "online" && e["pid"] == new_web));
    // A stopped app of the file is started again (as `grpm start FILE` does).
    agent.ok(&["stop", "worker"]);
    let plan = diff_json(&agent, &["diff", &file, "--json"], 3);
    assert_eq!(plan["plan"][1]["action"], "start");
    agent.ok(&["apply", &file]);
    assert_ne!(agent.wait_online("worker", None), worker);
    // The same log files (the app's, not the instance's).
    assert_eq!(
        agent.describe("web")["stdout_path"],
        agent
            .home
            .join("logs/1-web.out.log")
            .to_string_lossy()
            .as_ref()
    );
}

#[test]
fn dry_run_and_diff_touch_nothing_and_say_by_exit_code_whether_there_is_work() {
    let agent = Agent::start();
    let file = write(&agent, "apps.toml", TWO);
    // Nothing exists yet: two to create, exit 3, nothing created.
    let plan = diff_json(&agent, &["diff", &file, "--json"], 3);
    assert_eq!(plan["has_work"], true);
    assert_eq!(plan["plan"][0]["action"], "create");
    let out = agent.run(&["apply", &file, "--dry-run"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dry run: nothing was touched"));
    assert!(agent.list().is_empty());

    agent.ok(&["apply", &file]);
    let web = agent.wait_online("web", None);
    let plan = diff_json(&agent, &["diff", &file, "--json"], 0);
    assert_eq!(plan["has_work"], false);
    assert_eq!(plan["plan"][1]["action"], "unchanged");
    agent.ok(&["apply", &file, "--dry-run"]);

    // A change: listed with its fields, env values masked, and nothing restarted.
    std::fs::write(
        &file,
        TWO.replace("hunter2", "s3cret")
            .replace("sleep 1000", "sleep 1003"),
    )
    .unwrap();
    let seq = last_seq(&agent);
    let out = agent.run(&["diff", &file, "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
    let plan: Value = serde_json::from_str(&text).unwrap();
    let web_plan = &plan["plan"][0];
    assert_eq!(
        (web_plan["name"].as_str(), web_plan["action"].as_str()),
        (Some("web"), Some("change"))
    );
    let fields: Vec<&str> = web_plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["cmd", "env.TOKEN"]);
    assert_eq!(web_plan["changes"][1]["to"], "***");
    let text = agent.fails(3, &["diff", &file]);
    assert!(text.is_empty(), "{text}");
    assert!(events_after(&agent, seq).is_empty());
    assert_eq!(agent.wait_online("web", None), web);
    assert_eq!(agent.describe("web")["cmd"][1], "1000");
}

#[test]
fn prune_deletes_only_apps_of_the_same_file() {
    let agent = Agent::start();
    let file = write(&agent, "apps.toml", TWO);
    agent.ok(&["apply", &file]);
    agent.ok(&["start", "--name", "manual", "--", "sleep", "1000"]);
    let other = write(
        &agent,
        "other.toml",
        "[[app]]\nname = \"other\"\ncmd = \"sleep 1000\"\n",
    );
    agent.ok(&["apply", &other]);
    // worker leaves the file: without --prune it stays and is not in the plan.
    std::fs::write(
        &file,
        "[[app]]\nname = \"web\"\ncmd = \"sleep 1000\"\nenv = { TOKEN = \"hunter2\" }\n",
    )
    .unwrap();
    let plan = diff_json(&agent, &["diff", &file, "--json"], 0);
    assert_eq!(plan["plan"].as_array().unwrap().len(), 1);
    let plan = diff_json(&agent, &["diff", &file, "--prune", "--json"], 3);
    assert_eq!(plan["plan"][1]["name"], "worker");
    assert_eq!(plan["plan"][1]["action"], "delete");
    assert_eq!(agent.list().len(), 4);
    let out = agent.ok(&["apply", &file, "--prune"]);
    assert!(out.contains("delete     worker (id 2)"), "{out}");
    let names: Vec<String> = agent
        .list()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web", "manual", "other"]);
    let deleted = json_lines(&agent.ok(&["events", "--no-follow", "--json", "--kind", "deleted"]));
    assert_eq!(deleted[0]["cause"]["kind"], "apply");
}

#[test]
fn a_bad_entry_or_a_name_that_is_not_the_files_changes_nothing() {
    let agent = Agent::start();
    let file = write(&agent, "apps.toml", TWO);
    agent.ok(&["apply", &file]);
    let web = agent.wait_online("web", None);
    let seq = last_seq(&agent);
    // A change beside an invalid entry: refused as a whole.
    std::fs::write(
        &file,
        format!(
            "{}\n[[app]]\nname = \"bad\"\ncmd = \"sleep 1\"\nmax_restarts = 0\n",
            TWO.replace("sleep 1000", "sleep 1004")
        ),
    )
    .unwrap();
    let e = agent.fails(2, &["apply", &file]);
    assert!(e.contains("max_restarts"), "{e}");
    // A name another file's app has: refused by the agent, naming the other file.
    let other = write(
        &agent,
        "other.toml",
        "[[app]]\nname = \"web\"\ncmd = \"sleep 5\"\n[[app]]\nname = \"fresh\"\ncmd = \"sleep 5\"\n",
    );
    let e = agent.fails(1, &["apply", &other]);
    assert!(e.contains("web (id 1)") && e.contains("apps.toml"), "{e}");
    let e = agent.fails(1, &["diff", &other]);
    assert!(e.contains("does not belong to"), "{e}");
    // A name an app created without a file has (grpm start --name, or before apply): refused.
    agent.ok(&["start", "--name", "cli", "--", "sleep", "1000"]);
    let third = write(
        &agent,
        "third.toml",
        "[[app]]\nname = \"new1\"\ncmd = \"sleep 5\"\n[[app]]\nname = \"cli\"\ncmd = \"sleep 5\"\n",
    );
    let e = agent.fails(1, &["apply", &third]);
    assert!(
        e.contains("cli (id 3)") && e.contains("without an app file"),
        "{e}"
    );
    // A dependency on nothing: refused too.
    let fourth = write(
        &agent,
        "fourth.toml",
        "[[app]]\nname = \"new2\"\ncmd = \"sleep 5\"\ndepends_on = [\"nope\"]\n",
    );
    let e = agent.fails(2, &["apply", &fourth]);
    assert!(e.contains("nope, which does not exist"), "{e}");
    // Nothing changed.
    assert_eq!(agent.list().len(), 3);
    assert_eq!(agent.wait_online("web", None), web);
    assert_eq!(agent.describe("web")["cmd"][1], "1000");
    let events: Vec<Value> = events_after(&agent, seq)
        .into_iter()
        .filter(|e| e["app"] != "cli")
        .collect();
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn the_captured_environment_changes_only_with_update_env() {
    let agent = Agent::start();
    let file = write(&agent, "apps.toml", TWO);
    let apply = |foo: &str, extra: &[&str]| {
        let out = agent
            .cmd()
            .env("FOO", foo)
            .args(["apply", &file])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    apply("1", &[]);
    agent.wait_online("web", None);
    assert_eq!(agent.describe("web")["env"]["FOO"], "1");
    // The file changes and the shell's FOO too: the app is restarted, its FOO stays.
    std::fs::write(&file, TWO.replace("sleep 1000", "sleep 1005")).unwrap();
    let out = apply("2", &[]);
    assert!(
        out.contains("change     web") && !out.contains("captured_env"),
        "{out}"
    );
    assert_eq!(agent.describe("web")["cmd"][1], "1005");
    assert_eq!(agent.describe("web")["env"]["FOO"], "1");
    // Nothing else changed: another apply with FOO=2 leaves it alone.
    let out = apply("2", &[]);
    assert!(out.contains("unchanged  web"), "{out}");
    // --update-env: the captured environment is the shell's now; both apps restart.
    let out = apply("2", &["--update-env"]);
    assert!(out.contains("captured_env.FOO: *** -> ***"), "{out}");
    assert_eq!(agent.describe("web")["env"]["FOO"], "2");
    assert_eq!(agent.describe("worker")["env"]["FOO"], "2");
    assert_eq!(agent.app("worker")["restarts"], 1);
}

#[test]
fn env_profiles_apply_and_describe_says_where_each_variable_comes_from() {
    let agent = Agent::start();
    let text = r#"
[env_profiles.production]
LOG_LEVEL = "warn"
REGION = "eu"

[[app]]
name = "web"
cmd = "sleep 1000"
env = { PORT = "8080", LOG_LEVEL = "debug" }
[app.env_profiles.production]
REGION = "us"
"#;
    let file = write(&agent, "apps.toml", text);
    let e = agent.fails(2, &["apply", &file, "--env-profile", "staging"]);
    assert!(
        e.contains("\"staging\" is not declared") && e.contains("production"),
        "{e}"
    );
    assert!(agent.list().is_empty());
    agent.ok(&["apply", &file, "--env-profile", "production"]);
    agent.wait_online("web", None);
    let d = agent.describe("web");
    assert_eq!(d["env_profile"], "production");
    assert_eq!(
        (
            d["env"]["LOG_LEVEL"].as_str(),
            d["env"]["REGION"].as_str(),
            d["env"]["PORT"].as_str()
        ),
        (Some("warn"), Some("us"), Some("8080"))
    );
    let src = &d["env_sources"];
    assert_eq!(src["LOG_LEVEL"]["origin"], "profile");
    assert_eq!(src["LOG_LEVEL"]["profile"], "production");
    assert_eq!(src["REGION"]["origin"], "profile");
    assert_eq!(src["PORT"]["origin"], "declared");
    assert_eq!(src["HOME"]["origin"], "captured");
    assert_eq!(src["GRPM_APP_ID"]["origin"], "grpm");
    // The app's processes see it too.
    let pid = agent.wait_online("web", None);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.split(|b| *b == 0).any(|v| v == b"REGION=us"));
    // Without the profile the file is different: a change, back to the declared values.
    let plan = diff_json(&agent, &["diff", &file, "--json"], 3);
    assert_eq!(plan["plan"][0]["changes"][0]["field"], "env_profile");
    let text_out = agent.ok(&["describe", "web"]);
    assert!(
        text_out.contains("LOG_LEVEL=warn  (profile production)"),
        "{text_out}"
    );

    // start FILE takes a profile too.
    let other = write(
        &agent,
        "other.toml",
        "[env_profiles.production]\nMODE = \"prod\"\n[[app]]\nname = \"job\"\ncmd = \"sleep 1000\"\n",
    );
    agent.ok(&["start", &other, "--env-profile", "production"]);
    let d = agent.describe("job");
    assert_eq!(d["env"]["MODE"], "prod");
    assert_eq!(d["env_sources"]["MODE"]["profile"], "production");
}

#[test]
fn changed_apps_restart_in_dependency_order() {
    let agent = Agent::start();
    let text = r#"
[[app]]
name = "api"
cmd = "sleep 1000"
depends_on = ["db"]
[[app]]
name = "db"
cmd = "sh -c 'echo up; exec sleep 1001'"
ready = { log = "up", period = "50ms" }
[[app]]
name = "other"
cmd = "sleep 1002"
"#;
    let file = write(&agent, "apps.toml", text);
    agent.ok(&["apply", &file]);
    let other = agent.wait_online("other", None);
    // Both api and db change: db goes first (and api, which depends on it, stops before it).
    let changed = std::fs::read_to_string(&file)
        .unwrap()
        .replace("sleep 1000", "sleep 2000")
        .replace("exec sleep 1001", "exec sleep 2001");
    std::fs::write(&file, changed).unwrap();
    let seq = last_seq(&agent);
    agent.ok(&["apply", &file]);
    let events = events_after(&agent, seq);
    let at = |app: &str, kind: &str| {
        events
            .iter()
            .position(|e| e["app"] == app && e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} of {app} in {events:?}"))
    };
    assert!(at("api", "stopped") < at("db", "stopping"), "{events:?}");
    assert!(at("db", "ready") < at("api", "starting"), "{events:?}");
    assert_eq!(agent.wait_online("other", None), other);
    for app in ["api", "db"] {
        assert_eq!(agent.app(app)["restarts"], 1, "{app}");
    }
}

#[test]
fn apply_over_grpcurl_plans_then_acts() {
    let agent = Agent::start();
    let sock_data = |dry: bool| {
        format!(
            r#"{{"file":"/srv/apps.toml","dryRun":{dry},"apps":[{{"name":"api","cmd":["sleep","1000"],"env":{{"K":"v"}}}}]}}"#
        )
    };
    let call = |dry: bool| {
        let out = crate::grpcurl::call(
            &agent,
            Some(&sock_data(dry)),
            &["grpm.v1.ProcessManager/Apply"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let plan = call(true);
    assert_eq!(plan["plan"][0]["action"], "PLAN_ACTION_CREATE");
    assert_eq!(plan["hasWork"], true);
    assert!(agent.list().is_empty());
    let done = call(false);
    assert_eq!(done["apps"][0]["name"], "api");
    agent.wait_online("api", None);
    assert_eq!(agent.describe("api")["file"], "/srv/apps.toml");
    let again = call(true);
    assert_eq!(again["plan"][0]["action"], "PLAN_ACTION_UNCHANGED");
    assert!(again.get("hasWork").is_none(), "{again}");
}
