//! Issue #16, the CLI half: what a PM2 user meets first. Scripts and one-argument command
//! lines for `start`, default names after the script, `logs` without a target, PM2 words
//! answered, streams that end with their reader, scoped help, GRPM_HOME creation, the
//! environment captured without the launching tool's variables, and tables for terminals.

use std::{fs, path::Path};

use crate::common::*;

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_script_runs_with_its_interpreter_and_is_named_after_its_stem() {
    let agent = Agent::start();
    let dir = agent.dir.path();
    write(
        dir,
        "app.py",
        "import sys, time\nprint('args', sys.argv[1:], flush=True)\ntime.sleep(1000)\n",
    );
    // No extension, not executable: its #! line names the interpreter.
    write(
        dir,
        "worker",
        "#!/bin/sh\necho worker $1\nexec sleep 1000\n",
    );
    let out = agent.run(&["start", "app.py", "--", "x", "y z"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_eq!(
        err.lines().count(),
        1,
        "one line says the interpreter: {err}"
    );
    assert!(
        err.contains("app.py: run with python3 (its extension .py)"),
        "{err}"
    );
    let d = agent.describe("app");
    let script = dir.join("app.py").canonicalize().unwrap();
    assert_eq!(
        d["cmd"],
        serde_json::json!(["python3", script.to_str().unwrap(), "x", "y z"])
    );
    let err = stderr_of(&agent.run(&["start", "worker", "--", "1"]));
    assert!(
        err.contains("worker: run with /bin/sh (its #! line)"),
        "{err}"
    );
    wait_until(
        "both scripts' output",
        std::time::Duration::from_secs(20),
        || {
            let logs = agent.ok(&["logs", "--lines", "5"]);
            logs.contains("app out | args ['x', 'y z']") && logs.contains("worker out | worker 1")
        },
    );
    // PM2's flags still describe the app.
    agent.ok(&["start", "app.py", "--name", "app2", "--env", "A=1"]);
    assert_eq!(agent.describe("app2")["declared_env"]["A"], "1");
}

#[test]
fn the_default_name_is_the_script_not_the_interpreter() {
    let agent = Agent::start();
    let dir = agent.dir.path();
    write(dir, "api.py", "import time\ntime.sleep(1000)\n");
    write(dir, "jobs.py", "import time\ntime.sleep(1000)\n");
    agent.ok(&["start", "--", "python3", "-u", "api.py"]);
    agent.ok(&["start", "--", "python3", "jobs.py"]);
    agent.ok(&["start", "--", "sleep", "1000"]);
    // --name still wins.
    agent.ok(&["start", "--name", "third", "--", "python3", "api.py"]);
    let names: Vec<String> = agent
        .list()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["api", "jobs", "sleep", "third"]);
}

#[test]
fn one_argument_with_spaces_is_a_command_line() {
    let agent = Agent::start();
    agent.ok(&["start", "sh -c 'echo \"one two\"; exec sleep 1000'"]);
    assert_eq!(
        agent.describe("sh")["cmd"],
        serde_json::json!(["sh", "-c", "echo \"one two\"; exec sleep 1000"])
    );
    agent.ok(&["start", "sleep 1000", "--name", "nap"]);
    agent.wait_online("nap", None);
    let err = agent.fails(2, &["start", "sleep 1000", "--", "sleep", "5"]);
    assert!(err.contains("not both"), "{err}");
    let err = agent.fails(2, &["start", "sh -c 'unbalanced"]);
    assert!(err.contains("unbalanced quotes"), "{err}");
}

#[test]
fn files_that_cannot_run_are_refused_and_create_nothing() {
    let agent = Agent::start();
    let dir = agent.dir.path();
    write(dir, "apps.json", "{}\n");
    write(dir, "apps.yaml", "apps: []\n");
    write(dir, "app.ts", "console.log(1)\n");
    write(dir, "notes.txt", "hello\n");
    write(dir, "x.py", "#!/usr/bin/env grpm-no-such-interpreter\n");
    let cases: [(&str, &str); 5] = [
        ("apps.json", "app files are TOML"),
        ("apps.yaml", "app files are TOML"),
        ("app.ts", "npx tsx"),
        ("notes.txt", "give the command after --"),
        ("x.py", "grpm-no-such-interpreter, which is not on PATH"),
    ];
    for (file, says) in cases {
        let err = agent.fails(2, &["start", file]);
        assert!(err.contains(says), "{file}: {err}");
    }
    assert!(agent.list().is_empty());
}

#[test]
fn logs_without_a_target_shows_every_app_and_silence_is_explained() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "a",
        "--",
        "sh",
        "-c",
        "echo from-a; exec sleep 1000",
    ]);
    agent.ok(&[
        "start",
        "--name",
        "b",
        "--",
        "sh",
        "-c",
        "echo from-b >&2; exec sleep 1000",
    ]);
    agent.ok(&["start", "--name", "quiet", "--", "sleep", "1000"]);
    wait_until("both lines", std::time::Duration::from_secs(20), || {
        let logs = agent.ok(&["logs"]);
        logs.contains("a out | from-a") && logs.contains("b err | from-b")
    });
    let out = agent.run(&["logs", "3"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr_of(&out);
    let file = agent.home.join("logs/3-quiet.out.log");
    assert!(
        err.contains("quiet (id 3) has no output yet") && err.contains(file.to_str().unwrap()),
        "{err}"
    );
    // Scripts see no note in --json's stdout.
    assert_eq!(agent.ok(&["logs", "quiet", "--json"]), "");
}

#[test]
fn pm2_words_get_a_one_line_answer() {
    let agent = Agent::start();
    for (word, says) in [
        ("save", "grpm saves every change automatically"),
        ("dump", "grpm saves every change automatically"),
        ("resurrect", "starts again every app that should be running"),
        ("jlist", "grpm list --json"),
        ("prettylist", "grpm describe all"),
        ("startup", "grpm startup systemd"),
    ] {
        let err = agent.fails(2, &[word]);
        assert_eq!(err.trim_end().lines().count(), 1, "{word}: {err}");
        assert!(err.contains(says), "{word}: {err}");
        assert!(!err.contains("similar"), "{word}: {err}");
    }
}

/// Spawns `cmd` with its stdout piped, reads `n` lines, then closes the pipe (its reader goes
/// away, as `| head -n` does) and asserts the command ends at once, exit 0, though the stream
/// is quiet.
pub fn ends_when_its_reader_leaves(mut cmd: std::process::Command, n: usize) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = ChildGuard(Some(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let stdout = child.0.as_mut().unwrap().stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    for i in 0..n {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "line {i} never came"
        );
    }
    drop(reader);
    let status = child.wait_exit(std::time::Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn quiet_follows_end_when_their_reader_leaves() {
    let agent = Agent::start();
    // Two lines, then silence: only the closed pipe can end the follow.
    agent.ok(&[
        "start",
        "--name",
        "quiet",
        "--",
        "sh",
        "-c",
        "echo a; echo b; exec sleep 1000",
    ]);
    wait_until(
        "both lines on disk",
        std::time::Duration::from_secs(20),
        || agent.ok(&["logs", "quiet"]).lines().count() == 2,
    );
    let mut logs = agent.cmd();
    logs.args(["logs", "quiet", "-f"]);
    ends_when_its_reader_leaves(logs, 2);
    let mut events = agent.cmd();
    // Its one online event, then silence.
    events.args(["events", "--app", "quiet", "--kind", "online"]);
    ends_when_its_reader_leaves(events, 1);
}

#[test]
fn agent_options_work_before_or_after_the_command_and_help_names_what_they_mean() {
    let agent = Agent::start();
    for args in [&["--serial", "2", "list"][..], &["list", "--serial", "2"]] {
        let err = agent.fails(2, args);
        assert!(err.contains("add --host"), "{args:?}: {err}");
    }
    agent.ok(&["list", "--timeout", "5s"]);
    let help = agent.ok(&["tls", "init", "--help"]);
    assert!(help.contains("certificate is valid for"), "{help}");
    assert!(!help.contains("Run on remote agents"), "{help}");
    for cmd in ["agent", "kill"] {
        let help = agent.ok(&[cmd, "--help"]);
        for flag in ["--host", "--serial", "--connect-timeout", "--timeout"] {
            assert!(!help.contains(flag), "{cmd} --help shows {flag}: {help}");
        }
    }
    let help = agent.ok(&["stop", "--help"]);
    assert!(
        help.contains("<TARGET>  A name, an id or \"all\""),
        "{help}"
    );
    assert!(help.contains("--host <HOSTS>"), "{help}");
}

#[test]
fn grpm_home_is_created_like_mkdir_without_p_and_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = |home: &Path, args: &[&str]| {
        let mut cmd = std::process::Command::new(BIN);
        base_env(&mut cmd, home);
        cmd.args(args).output().unwrap()
    };
    // A missing parent: an error naming it, and nothing created.
    let deep = dir.path().join("missing/home");
    let out = run(&deep, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    let parent = dir.path().join("missing");
    assert!(
        err.contains(&format!(
            "parent directory {} does not exist",
            parent.display()
        )),
        "{err}"
    );
    assert!(!parent.exists());
    // The last component: created, said once.
    let home = dir.path().join("home");
    let out = run(&home, &["list"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(
        stderr_of(&out),
        format!("grpm: created GRPM_HOME {}\n", home.display())
    );
    let out = run(&home, &["list"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let out = run(&home, &["kill"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_launchers_variables_stay_out_of_the_captured_environment() {
    let agent = Agent::start();
    let exe_dir = Path::new(BIN)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    // What `cargo run` (through rustup) adds to the environment of the program it runs.
    let cargo_run = |cmd: &mut std::process::Command| {
        cmd.env("CARGO", "/r/toolchains/stable/bin/cargo")
            .env("CARGO_HOME", "/c")
            .env("CARGO_PKG_NAME", "grpm")
            .env("CARGO_MANIFEST_DIR", "/src/grpm")
            .env("RUSTUP_HOME", "/r")
            .env("RUSTUP_TOOLCHAIN", "stable")
            .env("RUST_RECURSION_COUNT", "1")
            .env(
                "LD_LIBRARY_PATH",
                format!("{exe_dir}:{exe_dir}/deps:/r/toolchains/stable/lib:/opt/lib"),
            )
            // The user's own: kept.
            .env("RUST_LOG", "debug")
            .env("RUST_BACKTRACE", "1")
            .env("MY_VAR", "x");
    };
    let mut start = agent.cmd();
    start.args(["start", "--name", "e", "--", "sleep", "1000"]);
    cargo_run(&mut start);
    assert!(start.status().unwrap().success());
    let mut restart = agent.cmd();
    restart.args(["restart", "e", "--update-env"]);
    cargo_run(&mut restart);
    assert!(restart.status().unwrap().success());
    let env = &agent.describe("e")["env"];
    for gone in [
        "CARGO",
        "CARGO_HOME",
        "CARGO_PKG_NAME",
        "CARGO_MANIFEST_DIR",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "RUST_RECURSION_COUNT",
    ] {
        assert!(env.get(gone).is_none(), "{gone} in {env}");
    }
    assert_eq!(env["LD_LIBRARY_PATH"], "/opt/lib");
    assert_eq!(env["RUST_LOG"], "debug");
    assert_eq!(env["RUST_BACKTRACE"], "1");
    assert_eq!(env["MY_VAR"], "x");
}

/// Runs `grpm ARGS` in a tmux terminal `width` columns wide (extra environment `env`) and
/// returns the screen with its colour escapes, once the command has printed `until`.
fn in_terminal(agent: &Agent, width: u16, env: &[(&str, &str)], args: &str, until: &str) -> String {
    let socket = agent
        .dir
        .path()
        .join(format!("tmux-{width}-{}.sock", env.len()));
    let tmux = |args: &[&str]| {
        let mut c = std::process::Command::new("tmux");
        base_env(&mut c, &agent.home);
        c.env("TERM", "xterm-256color")
            .arg("-u")
            .arg("-S")
            .arg(&socket);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(args).output().expect("tmux is installed");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let width = width.to_string();
    let command = format!("{BIN} {args}; sleep 30");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        &width,
        "-y",
        "20",
        &command,
    ]);
    let mut screen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        screen = tmux(&["capture-pane", "-p", "-e", "-t", "t"]);
        if screen.contains(until) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tmux(&["kill-server"]);
    assert!(
        screen.contains(until),
        "no {until:?} on the screen:\n{screen}"
    );
    screen
}

#[test]
fn tables_are_coloured_and_fitted_on_a_terminal_only() {
    let agent = Agent::start();
    let long = "a-very-long-application-name-that-goes-on-and-on-and-on";
    agent.ok(&["start", "--name", long, "--", "sleep", "1000"]);
    agent.ok(&["start", "--name", "short", "--", "sleep", "1000"]);
    agent.wait_online(long, None);
    agent.wait_online("short", None);
    let screen = in_terminal(&agent, 80, &[], "list", "PROCS");
    assert!(screen.contains("\x1b[32monline"), "{screen:?}");
    let row = screen.lines().find(|l| l.contains("a-very-long-")).unwrap();
    assert!(row.contains('…') && !row.contains(long), "{screen}");
    let visible = row
        .replace("\x1b[32m", "")
        .replace("\x1b[39m", "")
        .replace("\x1b[0m", "");
    assert!(visible.trim_end().chars().count() <= 80, "{visible:?}");
    // NO_COLOR: fitted, not coloured.
    let screen = in_terminal(&agent, 80, &[("NO_COLOR", "1")], "list", "PROCS");
    assert!(!screen.contains("\x1b[32m"), "{screen:?}");
    assert!(screen.contains('…'), "{screen}");
    // A pipe, and --json: whole names, no escapes.
    let piped = agent.ok(&["list"]);
    assert!(piped.contains(long) && !piped.contains('\x1b'), "{piped}");
    let json = agent.ok(&["list", "--json"]);
    assert!(json.contains(long) && !json.contains('\x1b'), "{json}");
}

/// A bare word that names an app starts that app, even where a file of that name sits in the
/// current directory (the app's own binary, say); `./api` would be the file.
#[test]
fn a_bare_word_that_names_an_app_is_the_app_even_beside_a_file_of_that_name() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "api", "--", "sleep", "1000"]);
    let first = agent.wait_online("api", None);
    agent.ok(&["stop", "api"]);
    write(agent.dir.path(), "api", "#!/bin/sh\nexec sleep 1000\n");
    let out = agent.run(&["start", "api"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("run with"), "{}", stderr_of(&out));
    assert_ne!(agent.wait_online("api", Some(first)), first);
    assert_eq!(agent.list().len(), 1, "no second app");
    assert_eq!(
        agent.describe("api")["cmd"],
        serde_json::json!(["sleep", "1000"])
    );
}
