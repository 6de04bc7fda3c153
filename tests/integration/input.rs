//! Semantics 6 and 7: bad input gets a clear message and the right exit code or gRPC code, and
//! changes nothing.

use grpm::{
    model::{AppDraft, Env},
    rpc::pb,
};
use tonic::Code;

use crate::common::*;

fn names(agent: &Agent) -> Vec<String> {
    agent
        .list()
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["name"].as_str().unwrap(),
                a["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn cli_errors_and_exit_codes() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    agent.wait_online("web", None);
    let before = names(&agent);

    let e = agent.fails(1, &["stop", "nosuch"]);
    assert!(e.contains("no app matches \"nosuch\""), "{e}");
    let e = agent.fails(1, &["restart", "99"]);
    assert!(e.contains("\"99\""), "{e}");
    let e = agent.fails(1, &["start", "--name", "web", "--", "sleep", "1"]);
    assert!(e.contains("already exists"), "{e}");
    let e = agent.fails(2, &["start", "--name", "bad/name", "--", "sleep", "1"]);
    assert!(e.contains("bad/name") && e.contains("'/'"), "{e}");
    let e = agent.fails(2, &["start", "--name", "all", "--", "sleep", "1"]);
    assert!(e.contains("reserved"), "{e}");
    let e = agent.fails(2, &["start", "--name", &"x".repeat(65), "--", "sleep", "1"]);
    assert!(e.contains("at most 64"), "{e}");
    let e = agent.fails(
        2,
        &[
            "start", "--name", "x", "--env", "NOEQUALS", "--", "sleep", "1",
        ],
    );
    assert!(e.contains("K=V"), "{e}");
    let e = agent.fails(
        2,
        &[
            "start",
            "--name",
            "x",
            "--kill-timeout",
            "3 parsecs",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(e.contains("unit"), "{e}");
    let e = agent.fails(
        2,
        &[
            "start",
            "--name",
            "x",
            "--stop-signal",
            "SIGFOO",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(e.contains("unknown signal"), "{e}");
    agent.fails(2, &["frobnicate"]);
    agent.fails(2, &["stop"]);
    let e = agent.fails(2, &["start"]);
    assert!(e.contains("nothing to start"), "{e}");
    assert_eq!(names(&agent), before, "a refused command changed something");

    // Exit 0 on success, with or without --json.
    agent.ok(&["describe", "web"]);
    agent.ok(&["stop", "all", "--json"]);
}

#[test]
fn missing_binary_or_cwd_is_an_error_and_an_errored_app() {
    let agent = Agent::start();
    let e = agent.fails(
        1,
        &["start", "--name", "ghost", "--", "/nonexistent/bin/app"],
    );
    assert!(
        e.contains("ghost") && e.contains("No such file or directory"),
        "{e}"
    );
    assert_eq!(agent.status("ghost"), "errored");
    let d = agent.describe("ghost");
    assert!(d["error"].as_str().unwrap().contains("No such file"), "{d}");

    let e = agent.fails(
        1,
        &["start", "--name", "nocmd", "--", "no-such-command-grpm"],
    );
    assert!(e.contains("no such command in PATH"), "{e}");

    let e = agent.fails(
        1,
        &[
            "start",
            "--name",
            "nodir",
            "--cwd",
            "/nonexistent/dir",
            "--",
            "sleep",
            "1",
        ],
    );
    assert!(
        e.contains("cwd /nonexistent/dir") && e.contains("No such file"),
        "{e}"
    );
    assert_eq!(agent.status("nodir"), "errored");

    // Fixing the cause and starting again works; the failure did not wedge the app's owner.
    agent.ok(&["delete", "nodir"]);
    agent.ok(&["start", "--name", "nodir", "--", "sleep", "1000"]);
    agent.wait_online("nodir", None);
}

#[test]
fn malformed_app_files_name_the_line_and_key() {
    let agent = Agent::start();
    let file = agent.path("apps.toml");
    let cases = [
        (
            "[[app]]\nname = \"web\"\ncmd = [\"sleep\", \"1\"]\nkill_timout = \"3s\"\n",
            ":4:",
            "kill_timout",
        ),
        (
            "[[app]]\nname = \"we b\"\ncmd = \"sleep 1\"\n",
            ":2: name:",
            "' '",
        ),
        (
            "[[app]]\nname = \"web\"\ncmd = \"sleep 1\"\nstop_signal = \"NOPE\"\n",
            ":4: stop_signal:",
            "unknown signal",
        ),
        ("[[app]\nname = \"web\"\n", ":1", ""),
    ];
    for (text, at, what) in cases {
        std::fs::write(&file, text).unwrap();
        let e = agent.fails(2, &["start", &file]);
        assert!(
            e.contains(&format!("apps.toml{at}")) && e.contains(what),
            "{text:?}: {e}"
        );
    }
    assert!(
        agent.list().is_empty(),
        "a malformed file started something"
    );
}

#[test]
fn rpc_validation_returns_proper_codes() {
    let agent = Agent::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = grpm::client::connect_unix(&agent.home.join("agent.sock"))
            .await
            .unwrap();
        let spec = |name: &str, cmd: Vec<String>| AppDraft {
            name: name.into(),
            cmd,
            ..Default::default()
        };
        let bad_env: Env = [("A=B".to_string(), "1".to_string())].into();
        // The typed client sends drafts as they are; the agent's edge checks them.
        let cases: Vec<(Vec<AppDraft>, Option<&Env>, &str)> = vec![
            (
                vec![spec("nul", vec!["sleep".into(), "1\0".into()])],
                None,
                "NUL",
            ),
            (
                vec![spec("huge", vec!["x".repeat(200_000)])],
                None,
                "bytes long",
            ),
            (
                vec![spec("many", vec!["x".into(); 5000])],
                None,
                "arguments",
            ),
            (vec![spec("", vec!["sleep".into()])], None, "empty"),
            (
                vec![spec("../etc", vec!["sleep".into()])],
                None,
                "must start",
            ),
            (vec![spec("empty", vec![])], None, "command is empty"),
            (
                vec![spec("badenv", vec!["sleep".into()])],
                Some(&bad_env),
                "contains '='",
            ),
            (
                vec![AppDraft {
                    cwd: Some("relative".into()),
                    ..spec("rel", vec!["sleep".into()])
                }],
                None,
                "absolute",
            ),
            (vec![], None, "set target"),
        ];
        for (drafts, env, want) in cases {
            let s = c.start(&drafts, env).await.expect_err(want);
            assert_eq!(s.code(), Some(Code::InvalidArgument), "{want}: {s:?}");
            assert!(s.to_string().contains(want), "{want}: {s}");
        }
        // A signal name the model cannot hold: only the raw wire can send it.
        let s = c
            .raw()
            .start(pb::StartRequest {
                app: Some(pb::AppSpec {
                    name: "sig".into(),
                    cmd: vec!["sleep".into()],
                    stop_signal: "SIGNOPE".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("unknown signal");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("unknown signal"), "{}", s.message());
        let s = c.stop("nosuch").await.unwrap_err();
        assert_eq!(s.code(), Some(Code::NotFound));
        let s = c.stop("").await.unwrap_err();
        assert_eq!(s.code(), Some(Code::InvalidArgument));
        c.start(&[spec("dup", vec!["sleep".into(), "1000".into()])], None)
            .await
            .unwrap();
        let s = c
            .start(&[spec("dup", vec!["sleep".into()])], None)
            .await
            .unwrap_err();
        assert_eq!(s.code(), Some(Code::AlreadyExists));
        let s = c
            .start(&[spec("gone", vec!["/nonexistent".into()])], None)
            .await
            .unwrap_err();
        assert_eq!(s.code(), Some(Code::FailedPrecondition));
        let list = c.list().await.unwrap();
        let names: Vec<&str> = list.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["dup", "gone"], "only the valid creates happened");
    });
}

/// Sends `payload` as the one message of a unary call to `path` over the agent's socket, with
/// nothing in between (no codec): returns the reply's grpc-status and grpc-message.
async fn raw_call(sock: &std::path::Path, path: &str, payload: &[u8]) -> (String, String) {
    use std::io::Cursor;
    use tonic::codegen::http;
    let io = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .handshake::<_, Cursor<Vec<u8>>>(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (reply, mut send) = client.send_request(req, false).unwrap();
    let mut frame = vec![0u8];
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    send.send_data(Cursor::new(frame), true).unwrap();
    let reply = reply.await.unwrap();
    let (parts, mut body) = reply.into_parts();
    let mut headers = parts.headers;
    if !headers.contains_key("grpc-status") {
        while let Some(d) = body.data().await {
            let d = d.unwrap();
            let _ = body.flow_control().release_capacity(d.len());
        }
        headers = body.trailers().await.unwrap().unwrap_or_default();
    }
    let get = |k: &str| {
        headers
            .get(k)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[test]
fn undecodable_requests_and_control_characters_are_invalid_arguments() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let sock = agent.home.join("agent.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // INVALID_ARGUMENT is 3 (INTERNAL, 13, says the agent is at fault).
        let cases: [(&str, &[u8]); 4] = [
            // Field 1 (target), a length that runs past the end.
            ("/grpm.v1.ProcessManager/Stop", &[0x0a, 0x7f, b'w']),
            // Field 1 (target) that is not UTF-8.
            ("/grpm.v1.ProcessManager/Stop", &[0x0a, 0x02, 0xff, 0xfe]),
            // NotifyGod: target "web", action "x", message not UTF-8.
            (
                "/grpm.v1.ProcessManager/NotifyGod",
                &[
                    0x0a, 3, b'w', b'e', b'b', 0x12, 1, b'x', 0x1a, 2, 0xc3, 0x28,
                ],
            ),
            // A varint that never ends.
            ("/grpm.v1.ProcessManager/List", &[0x08, 0xff, 0xff, 0xff]),
        ];
        for (path, payload) in cases {
            let (code, msg) = raw_call(&sock, path, payload).await;
            assert_eq!(code, "3", "{path} {payload:?}: {msg}");
            assert!(msg.contains("malformed"), "{msg}");
        }
        let mut c = grpm::client::connect_unix(&sock).await.unwrap();
        let none = Env::default();
        for (message, data, want) in [
            (
                "a\0b",
                none.clone(),
                "message: control character U+0000 at byte 1",
            ),
            ("\u{1b}[2J\u{1b}[Hfake", none.clone(), "U+001B at byte 0"),
            ("over\rwrite", none.clone(), "U+000D"),
            ("csi \u{9b}31m", none.clone(), "U+009B"),
            (
                "ok",
                [("k".to_string(), "v\0".to_string())].into(),
                "data[\"k\"]: control character U+0000",
            ),
            (
                "ok",
                [("k\u{7}".to_string(), "v".to_string())].into(),
                "U+0007",
            ),
        ] {
            let s = c.notify("web", "deploy", message, &data).await.unwrap_err();
            assert_eq!(s.code(), Some(Code::InvalidArgument), "{message:?}: {s:?}");
            assert!(s.to_string().contains(want), "{want}: {s}");
        }
        let e = c
            .notify("web", "de\u{1b}ploy", "", &none)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(Code::InvalidArgument), "{e:?}");
        // Tabs and newlines are text.
        c.notify("web", "deploy", "v1.2\n\tdone", &none)
            .await
            .unwrap();
    });
    let e = agent.fails(
        2,
        &[
            "notify",
            "web",
            "--action",
            "x",
            "--message",
            "\u{1b}]0;pwned\u{7}",
        ],
    );
    assert!(e.contains("U+001B"), "{e}");
    // Nothing was published but the one valid notification.
    let events = json_lines(&agent.ok(&["events", "--no-follow", "--json", "--kind", "notify"]));
    assert_eq!(events.len(), 1, "{events:?}");
}
