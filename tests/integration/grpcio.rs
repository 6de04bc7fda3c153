//! Python's grpcio (PyPI's `grpcio`, with `grpcio-tools` for the stubs; `tests/deps.sh`
//! installs both) with its defaults over the unix socket: no `:authority` override, no option.
//! The stubs are generated from the proto at test time. Without grpcio the test fails, it does
//! not skip.

use std::process::Command;

use serde_json::Value;

use crate::common::*;

/// Connects, lists, subscribes, restarts: prints one JSON object with what it saw.
const SCRIPT: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc
from grpm.v1 import grpm_pb2 as pb, grpm_pb2_grpc as rpc

channel = grpc.insecure_channel("unix:" + sys.argv[2])
grpc.channel_ready_future(channel).result(timeout=20)
stub = rpc.ProcessManagerStub(channel)
listed = stub.List(pb.ListRequest(), timeout=20)
events = stub.Subscribe(pb.SubscribeRequest(apps=["web"]), timeout=60)
events.initial_metadata()  # the subscription is in place once the answer's headers arrive
restarted = stub.Restart(pb.RestartRequest(target="web"), timeout=60)
kinds = []
for e in events:
    kinds.append(pb.EventKind.Name(e.kind))
    if e.kind == pb.EVENT_KIND_ONLINE:
        break
events.cancel()
try:
    stub.Describe(pb.DescribeRequest(target="nosuch"), timeout=20)
    missing = None
except grpc.RpcError as err:
    missing = [err.code().name, err.details()]
print(json.dumps({
    "listed": [[a.name, pb.Status.Name(a.status), a.pid] for a in listed.apps],
    "restarted": [[a.name, a.restarts, a.pid] for a in restarted.apps],
    "events": kinds,
    "missing": missing,
}))
"#;

#[test]
fn grpcio_with_its_defaults_lists_subscribes_and_restarts() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "web", "--", "sleep", "1000"]);
    let pid = agent.wait_online("web", None);

    let stubs = agent.dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let gen = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", proto])
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg("grpm/v1/grpm.proto")
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "grpcio-tools could not generate the stubs (run tests/deps.sh): {}",
        String::from_utf8_lossy(&gen.stderr)
    );

    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&stubs)
        .arg(agent.home.join("agent.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the grpcio client failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["listed"],
        serde_json::json!([["web", "STATUS_ONLINE", pid]])
    );
    assert_eq!(seen["restarted"][0][0], "web");
    assert_eq!(seen["restarted"][0][1], 1);
    assert_ne!(seen["restarted"][0][2], pid);
    let events: Vec<&str> = seen["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"EVENT_KIND_RESTARTING"), "{events:?}");
    assert_eq!(events.last(), Some(&"EVENT_KIND_ONLINE"), "{events:?}");
    assert_eq!(
        seen["missing"],
        serde_json::json!(["NOT_FOUND", "no app matches \"nosuch\""])
    );
}

/// An HPACK literal without indexing (no Huffman), short strings only.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        out.push(u8::try_from(s.len()).unwrap());
        out.extend_from_slice(s.as_bytes());
    }
}

#[test]
fn a_refused_request_and_a_replaced_authority_are_logged_at_debug_level() {
    use std::io::{Read, Write};
    let dir = tempfile::Builder::new().prefix("grpm").tempdir().unwrap();
    let home = dir.path().join("h");
    let log = dir.path().join("agent.out");
    let mut cmd = Command::new(BIN);
    base_env(&mut cmd, &home);
    let out = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .arg("agent")
        .env("GRPM_LOG", "grpm=debug,info")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let sock = home.join("agent.sock");
    wait_until(
        "the agent to answer on its socket",
        std::time::Duration::from_secs(20),
        || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
    );
    // One request without :method (refused by the HTTP/2 layer), on stream 1, with the socket
    // path as its authority (replaced).
    let mut block = Vec::new();
    literal(&mut block, ":scheme", "http");
    literal(&mut block, ":path", "/grpm.v1.ProcessManager/List");
    literal(&mut block, ":authority", &sock.display().to_string());
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    bytes.extend([len[1], len[2], len[3], 1, 0x4 | 0x1, 0, 0, 0, 1]); // HEADERS, END_*
    bytes.extend(block);
    let mut conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    conn.write_all(&bytes).unwrap();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        "the refusal in the agent's log",
        std::time::Duration::from_secs(20),
        || text().contains("no :method"),
    );
    let _ = conn.read(&mut [0; 64]);
    let mut kill = Command::new(BIN);
    base_env(&mut kill, &home);
    assert!(kill.arg("kill").status().unwrap().success());
    child.wait().unwrap();
    let text = text();
    let refused = text.lines().find(|l| l.contains("no :method")).unwrap();
    assert!(
        refused.contains("DEBUG") && refused.contains("will refuse this request"),
        "{refused}"
    );
    let replaced = text
        .lines()
        .find(|l| l.contains("not a valid :authority"))
        .unwrap_or_else(|| panic!("no replacement logged:\n{text}"));
    assert!(
        replaced.contains(&format!("authority={}", sock.display())),
        "{replaced}"
    );
}
