//! The README's commands run as written, in order, as on a fresh machine: the shell blocks of
//! the CLI walk-through ("The two commands", "Events", "Logs") and of "Scripting with grpcurl",
//! against a temp agent, with `grpm` from the target dir and grpcurl on PATH. Any command that
//! exits non-zero fails the test, naming it.
//!
//! Two things differ from a user's terminal, and only these: the demo is started with
//! `grpm start` (not `cargo run --release -- start`) from a copy of `examples/demo.toml` whose
//! port is a free one (a fixed port would make the test depend on the machine); and a command
//! that follows (`--follow`, `grpm events` without `--no-follow`) gets Ctrl-C (SIGINT) after
//! a second, as its comment says a user does, and passes if it was still running or had
//! ended with 0.

use std::{path::Path, process::Command};

use crate::common::*;

/// The ```sh blocks of the `## ` section titled `title`, in order.
fn blocks<'a>(readme: &'a str, title: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut in_section = false;
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        if let Some(b) = block.as_mut() {
            if line.starts_with("```") {
                out.push(block.take().unwrap());
            } else {
                b.push(line);
            }
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            in_section = h == title;
        } else if in_section && line == "```sh" {
            block = Some(Vec::new());
        }
    }
    out
}

fn follows(line: &str) -> bool {
    let command = line.split(" #").next().unwrap_or(line);
    command.contains("--follow")
        || (command.trim_start().starts_with("grpm events") && !command.contains("--no-follow"))
}

#[test]
fn the_readme_walk_through_and_grpcurl_examples_run_as_written() {
    let agent = Agent::start();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();

    // The demo, on a free port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml"))
        .unwrap()
        .replace("8765", &port.to_string());
    let demo_path = agent.dir.path().join("demo.toml");
    std::fs::write(&demo_path, demo).unwrap();

    let two = blocks(&readme, "The two commands");
    assert_eq!(
        two.len(),
        3,
        "the demo, the tests, the walk-through: {two:?}"
    );
    assert_eq!(
        two[0],
        ["cargo run --release -- start examples/demo.toml"],
        "the demo's command changed: update this test"
    );
    let mut script = vec![format!("grpm start {}", demo_path.display())];
    let mut sections = vec![two[2].clone()];
    for title in ["Events", "Logs", "Scripting with grpcurl"] {
        let b = blocks(&readme, title);
        assert!(!b.is_empty(), "no sh block under ## {title}");
        sections.extend(b);
    }
    for line in sections.into_iter().flatten() {
        if follows(line) {
            script.push(format!("follow {line}"));
        } else {
            script.push(line.to_string());
        }
    }
    assert!(
        script.iter().any(|l| l.starts_with("grpcurl ")),
        "no grpcurl command found"
    );

    let mut path = vec![Path::new(BIN).parent().unwrap().to_path_buf()];
    let grpcurl = crate::grpcurl::grpcurl();
    if let Some(dir) = Path::new(&grpcurl)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        path.push(dir.to_path_buf());
    }
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let text = format!(
        "set -euo pipefail\n\
         follow() {{ local rc=0; timeout -k 5 -s INT 1 \"$@\" || rc=$?; \
         [ $rc -eq 0 ] || [ $rc -eq 124 ] || {{ echo \"failed ($rc): $*\" >&2; return $rc; }}; }}\n\
         PS4='+ $SECONDS '; set -x\n{}\n",
        script.join("\n")
    );
    let mut cmd = Command::new("bash");
    base_env(&mut cmd, &agent.home);
    let started = std::time::Instant::now();
    let out = cmd
        .arg("-c")
        .arg(&text)
        .env("PATH", std::env::join_paths(path).unwrap())
        .current_dir(agent.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a README command failed ({}):\n{}\nscript:\n{text}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(agent.home.join("agent.log")).unwrap_or_default()
    );
    eprintln!("the README's commands ran in {:?}", started.elapsed());
}
