//! Issue #5, logs: everything an app writes is on disk, in order, through rotations, crashes and
//! restarts; readers tail and follow it; options are checked at the edge.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::*;

/// The log files of one stream, oldest first: `X.log.N` ... `X.log.1`, `X.log`.
fn log_files(agent: &Agent, id: u64, name: &str, stream: &str) -> Vec<PathBuf> {
    let current = agent.home.join(format!("logs/{id}-{name}.{stream}.log"));
    let mut files: Vec<PathBuf> = (1..=100)
        .map(|n| PathBuf::from(format!("{}.{n}", current.display())))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(current);
    files
}

fn concat(files: &[PathBuf]) -> Vec<u8> {
    files
        .iter()
        .flat_map(|f| fs::read(f).unwrap_or_default())
        .collect()
}

fn text(files: &[PathBuf]) -> String {
    String::from_utf8(concat(files)).unwrap()
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_fast_writer_is_captured_byte_for_byte_across_rotations() {
    let agent = Agent::start();
    let data = agent.path("data.txt");
    let made = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("head -c 12000000 /dev/urandom | base64 -w 100 > {data}"),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    agent.ok(&[
        "start",
        "--name",
        "fast",
        "--no-autorestart",
        "--log-max-size",
        "1M",
        "--log-keep",
        "40",
        "--",
        "cat",
        &data,
    ]);
    // The exit is handled (and the status leaves `online`) only once the pipe is drained.
    agent.wait_status("fast", "stopped");
    let files = log_files(&agent, 1, "fast", "out");
    assert!(files.len() >= 16, "{} files: no rotation?", files.len());
    let all = agent.path("all.txt");
    fs::write(&all, concat(&files)).unwrap();
    assert_eq!(
        fs::metadata(&all).unwrap().len(),
        fs::metadata(&data).unwrap().len()
    );
    assert_eq!(sha256(Path::new(&all)), sha256(Path::new(&data)));
    for f in &files {
        let len = fs::metadata(f).unwrap().len();
        // Output is spliced as it comes, so a file may end inside a line near the limit and
        // then grow (at most 64 KiB) past it to finish that line.
        assert!(
            len <= (1 << 20) + (64 << 10),
            "{} is {len} bytes",
            f.display()
        );
        let bytes = fs::read(f).unwrap();
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "{} ends inside a line",
            f.display()
        );
    }
}

#[test]
fn rotation_under_load_keeps_every_line_exactly_once_in_order() {
    let agent = Agent::start();
    let n = 150_000;
    agent.ok(&[
        "start",
        "--name",
        "load",
        "--no-autorestart",
        "--log-max-size",
        "64K",
        "--log-keep",
        "100",
        "--",
        "awk",
        &format!("BEGIN {{ for (i = 0; i < {n}; i++) printf \"line %08d\\n\", i }}"),
    ]);
    agent.wait_status("load", "stopped");
    let files = log_files(&agent, 1, "load", "out");
    assert!(files.len() > 20, "{} files", files.len());
    let all = text(&files);
    let want: String = (0..n).map(|i| format!("line {i:08}\n")).collect();
    assert!(all == want, "lines lost, duplicated or reordered");
    // Rotation falls between lines: each file holds whole lines and stays within its bound.
    for f in &files {
        let t = fs::read_to_string(f).unwrap();
        // Within the limit, or past it by the end of the line it had begun.
        assert!(t.len() <= 64 * 1024 + 13 && t.ends_with('\n') && t.starts_with("line "));
    }
}

#[test]
fn the_last_words_of_a_crash_are_kept_and_restarts_never_interleave() {
    let agent = Agent::start();
    let crash = agent.script(
        "crash.sh",
        "i=0\nwhile [ $i -lt 500 ]; do echo \"line $i\"; i=$((i+1)); done\nprintf 'last words'\nkill -9 $$",
    );
    agent.ok(&["start", "--name", "crash", "--no-autorestart", "--", &crash]);
    agent.wait_status("crash", "errored");
    let out = text(&log_files(&agent, 1, "crash", "out"));
    let want: String = (0..500).map(|i| format!("line {i}\n")).collect::<String>() + "last words\n";
    assert_eq!(out, want);

    // Three generations, each ending on a partial line: every line stays whole.
    let again = agent.script(
        "again.sh",
        &format!(
            "echo $$ >> {}\necho \"hello $$\"\nprintf 'partial %s' $$\nkill -9 $$",
            agent.path("pids")
        ),
    );
    agent.ok(&[
        "start",
        "--name",
        "again",
        "--restart-delay",
        "50ms",
        "--restart-delay-max",
        "50ms",
        "--",
        &again,
    ]);
    let pids = read_pids(&agent.path("pids"), 4);
    agent.ok(&["stop", "again"]);
    let out = text(&log_files(&agent, 2, "again", "out"));
    let lines: Vec<&str> = out.lines().collect();
    for (i, pid) in pids.iter().take(3).enumerate() {
        assert_eq!(lines[2 * i], format!("hello {pid}"), "{out}");
        assert_eq!(lines[2 * i + 1], format!("partial {pid}"), "{out}");
    }
}

#[test]
fn stdout_and_stderr_written_at_once_stay_apart_and_complete() {
    let agent = Agent::start();
    let n = 40_000;
    let both = agent.script(
        "both.sh",
        &format!(
            "awk 'BEGIN {{ for (i = 0; i < {n}; i++) printf \"out %d\\n\", i }}' &\n\
             awk 'BEGIN {{ for (i = 0; i < {n}; i++) printf \"err %d\\n\", i > \"/dev/stderr\" }}' &\n\
             wait"
        ),
    );
    agent.ok(&["start", "--name", "both", "--no-autorestart", "--", &both]);
    agent.wait_status("both", "stopped");
    for stream in ["out", "err"] {
        let got = text(&log_files(&agent, 1, "both", stream));
        let want: String = (0..n).map(|i| format!("{stream} {i}\n")).collect();
        assert!(got == want, "{stream}: lines lost or mixed");
    }
    // `grpm logs`: the last lines of each stream, tagged.
    let shown = agent.ok(&["logs", "both", "--lines", "2"]);
    assert_eq!(
        shown,
        format!(
            "both out | out {}\nboth out | out {}\nboth err | err {}\nboth err | err {}\n",
            n - 2,
            n - 1,
            n - 2,
            n - 1
        )
    );
    let json = json_lines(&agent.ok(&["logs", "1", "--err", "-n", "1", "--json"]));
    assert_eq!(json.len(), 1);
    let line = format!("err {}", n - 1);
    let size: u64 = (0..n).map(|i| format!("err {i}\n").len() as u64).sum();
    assert_eq!(json[0]["app"], "both");
    assert_eq!(json[0]["id"], 1);
    assert_eq!(json[0]["stream"], "err");
    assert_eq!(json[0]["line"], line.as_str());
    assert_eq!(json[0]["offset"], size - line.len() as u64 - 1);
}

/// Lines of a `grpm logs --follow --json` child, as they arrive.
fn follower(agent: &Agent, args: &[&str]) -> (ChildGuard, mpsc::Receiver<Value>) {
    let mut child = agent
        .cmd()
        .args(["logs", "--follow", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    (ChildGuard(Some(child)), rx)
}

fn next_line(rx: &mpsc::Receiver<Value>, deadline: Instant) -> Value {
    let left = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(left)
        .unwrap_or_else(|e| panic!("no line from the follower in time: {e}"))
}

#[test]
fn follow_survives_rotation_and_restart_without_loss() {
    let agent = Agent::start();
    let ticker = agent.script(
        "tick.sh",
        "i=0\nwhile :; do echo \"$$ $i\"; i=$((i+1)); [ $((i % 20)) = 0 ] && sleep 0.01; done",
    );
    agent.ok(&[
        "start",
        "--name",
        "tick",
        "--log-max-size",
        "4K",
        "--log-keep",
        "2",
        "--",
        &ticker,
    ]);
    let first = agent.wait_online("tick", None);
    let (_child, rx) = follower(&agent, &["tick", "--out", "--lines", "5"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<(u32, u64)> = Vec::new();
    let mut offset: Option<u64> = None;
    let mut restarted = None;
    loop {
        let v = next_line(&rx, deadline);
        let line = v["line"].as_str().unwrap().to_string();
        let at = v["offset"].as_u64().unwrap();
        if let Some(o) = offset {
            assert_eq!(at, o, "offsets are not contiguous at {line:?}");
        }
        offset = Some(at + line.len() as u64 + 1);
        let (pid, i) = line.split_once(' ').unwrap();
        let (pid, i): (u32, u64) = (pid.parse().unwrap(), i.parse().unwrap());
        if let Some(&(p, j)) = seen.last() {
            if p == pid {
                assert_eq!(i, j + 1, "line {i} of {pid} follows {j}: lost or repeated");
            } else {
                assert_eq!(i, 0, "the new instance's first line is missing");
            }
        }
        seen.push((pid, i));
        // Some rotations (4K of ~10-byte lines is ~400 lines), then a restart.
        if restarted.is_none() && pid == first && i >= 3000 {
            agent.ok(&["restart", "tick"]);
            restarted = Some(agent.wait_online("tick", Some(first)));
        }
        if let Some(second) = restarted {
            if pid == second && i >= 1000 {
                break;
            }
        }
    }
    assert!(
        agent.home.join("logs/1-tick.out.log.2").exists(),
        "no rotation happened"
    );
}

#[test]
fn flush_empties_the_files_and_offsets_go_on() {
    let agent = Agent::start();
    let script = agent.script(
        "echo.sh",
        &format!(
            "while :; do if [ -e {0} ]; then echo after; rm {0}; fi; sleep 0.02; done &\n\
             i=0; while [ $i -lt 2000 ]; do echo \"before $i\"; i=$((i+1)); done\nwait",
            agent.path("go")
        ),
    );
    agent.ok(&[
        "start",
        "--name",
        "fl",
        "--log-max-size",
        "4K",
        "--",
        &script,
    ]);
    let out = agent.home.join("logs/1-fl.out.log");
    let rotated = agent.home.join("logs/1-fl.out.log.1");
    let mut before = Vec::new();
    wait_until("all 2000 lines, rotated", Duration::from_secs(10), || {
        before = json_lines(&agent.ok(&["logs", "fl", "--json", "-n", "1"]));
        rotated.exists() && before.len() == 1 && before[0]["line"] == "before 1999"
    });
    let end = before[0]["offset"].as_u64().unwrap() + "before 1999\n".len() as u64;
    assert_eq!(
        agent.ok(&["flush"]),
        "flushed the logs of fl (id 1), pid ".to_string()
            + &agent.app("fl")["pid"].to_string()
            + "\n"
    );
    assert_eq!(fs::metadata(&out).unwrap().len(), 0);
    assert!(!rotated.exists());
    assert_eq!(agent.ok(&["logs", "fl"]), "");
    fs::write(agent.path("go"), "").unwrap();
    wait_until("the line after the flush", Duration::from_secs(10), || {
        fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > 0
    });
    let after = json_lines(&agent.ok(&["logs", "fl", "--json"]));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["line"], "after");
    assert_eq!(after[0]["offset"].as_u64().unwrap(), end);
}

#[test]
fn delete_keeps_the_logs_unless_asked_to_purge_them() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "keep",
        "--",
        "sh",
        "-c",
        "echo kept; sleep 100",
    ]);
    agent.ok(&[
        "start",
        "--name",
        "purge",
        "--",
        "sh",
        "-c",
        "echo gone >&2; sleep 100",
    ]);
    let logs = agent.home.join("logs");
    let keep = logs.join("1-keep.out.log");
    let purge = logs.join("2-purge.err.log");
    wait_until("both apps' output", Duration::from_secs(10), || {
        fs::read_to_string(&keep).unwrap_or_default() == "kept\n"
            && fs::read_to_string(&purge).unwrap_or_default() == "gone\n"
    });
    let d = agent.describe("keep");
    assert_eq!(d["stdout_path"], keep.to_str().unwrap());
    assert_eq!(
        d["stderr_path"],
        logs.join("1-keep.err.log").to_str().unwrap()
    );
    agent.ok(&["delete", "keep"]);
    agent.ok(&["delete", "purge", "--purge-logs"]);
    assert_eq!(fs::read_to_string(&keep).unwrap(), "kept\n");
    let left: Vec<String> = fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("2-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn timestamps_are_rfc3339_in_utc_with_milliseconds() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "t",
        "--log-time",
        "--",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 100",
    ]);
    let out = agent.home.join("logs/1-t.out.log");
    wait_until("a line", Duration::from_secs(10), || {
        fs::read_to_string(&out).is_ok_and(|t| t.ends_with('\n'))
    });
    let line = fs::read_to_string(&out).unwrap();
    // 2026-11-25T17:02:28.606Z one
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "one\n");
    let b = stamp.as_bytes();
    assert_eq!(b.len(), 24, "{stamp}");
    assert!(
        b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{stamp}"
    );
    assert_eq!(agent.describe("t")["log_time"], true);
}

#[test]
fn hostile_names_are_refused_and_logs_stay_in_their_directory() {
    let agent = Agent::start();
    for name in ["../evil", "a/b", ".hidden", "/tmp/x", "..", "a\\b"] {
        agent.fails(2, &["start", "--name", name, "--", "sh", "-c", "echo x"]);
    }
    let file = agent.path("apps.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"../../escape\"\ncmd = \"echo x\"\n",
    )
    .unwrap();
    agent.fails(2, &["start", &file]);
    // A name with dots is a name, not a path.
    agent.ok(&[
        "start",
        "--name",
        "a..b",
        "--",
        "sh",
        "-c",
        "echo dots; sleep 100",
    ]);
    let d = agent.describe("a..b");
    let logs = agent.home.join("logs");
    for key in ["stdout_path", "stderr_path"] {
        let p = PathBuf::from(d[key].as_str().unwrap());
        assert_eq!(p.parent(), Some(logs.as_path()), "{key}: {}", p.display());
    }
    wait_until("the app's output", Duration::from_secs(10), || {
        fs::read_to_string(logs.join("1-a..b.out.log")).is_ok_and(|t| t == "dots\n")
    });
    assert!(agent.list().len() == 1);
    let outside: Vec<String> = fs::read_dir(agent.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("evil") || n.contains("escape"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
}

#[test]
fn bad_log_options_are_usage_errors_and_change_nothing() {
    let agent = Agent::start();
    let cases: [&[&str]; 5] = [
        &["--log-max-size", "10X"],
        &["--log-max-size", "100"],
        &["--log-max-size", "2T"],
        &["--log-keep", "0"],
        &["--log-keep", "101"],
    ];
    for flags in cases {
        let mut args = vec!["start", "--name", "web"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "sleep", "100"]);
        let err = agent.fails(2, &args);
        assert!(err.contains("log-"), "{flags:?}: {err}");
    }
    let file = agent.path("apps.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"web\"\ncmd = \"sleep 100\"\nlog_max_size = \"1Q\"\n",
    )
    .unwrap();
    let err = agent.fails(2, &["start", &file]);
    assert!(err.contains("apps.toml:4: log_max_size"), "{err}");
    fs::write(
        &file,
        "[[app]]\nname = \"web\"\ncmd = \"sleep 100\"\nlog_keep = 500\n",
    )
    .unwrap();
    agent.fails(2, &["start", &file]);
    agent.fails(2, &["logs", "web", "--lines", "100001"]);
    agent.fails(2, &["logs", "../x"]);
    assert!(agent.list().is_empty());
    assert!(!agent.home.join("logs").exists());
    // Unknown apps: not found (exit 1).
    agent.fails(1, &["logs", "nope"]);
    agent.fails(1, &["flush", "nope"]);
}

/// Without a keeper (`--no-keeper`, or after the keeper itself was killed), the pipes die with
/// the agent: after `kill -9` of the agent, a running app's next write finds no reader and it
/// dies of SIGPIPE; the next agent starts it again, and its output is captured again. (Under
/// a keeper nothing of this happens: see `keeper.rs`.)
#[test]
fn without_a_keeper_an_agent_crash_restarts_a_writing_app_and_captures_it_again() {
    let mut agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "tick",
        "--",
        "sh",
        "-c",
        "while :; do echo \"tick $$\"; sleep 0.05; done",
    ]);
    let first = agent.wait_online("tick", None);
    let out = agent.home.join("logs/1-tick.out.log");
    wait_until(
        "the first instance's output",
        Duration::from_secs(10),
        || fs::read_to_string(&out).is_ok_and(|t| t.contains(&format!("tick {first}\n"))),
    );
    agent.crash();
    wait_until(
        "the orphaned writer to die of SIGPIPE",
        Duration::from_secs(10),
        || !alive(first),
    );
    agent.spawn();
    let second = agent.wait_online("tick", Some(first));
    wait_until("the new instance's output", Duration::from_secs(10), || {
        fs::read_to_string(&out).is_ok_and(|t| t.contains(&format!("tick {second}\n")))
    });
    // Whole lines only, and the new agent appended to what the old one wrote.
    let text = fs::read_to_string(&out).unwrap();
    assert!(text.starts_with(&format!("tick {first}\n")));
    assert!(
        text.lines()
            .all(|l| l == format!("tick {first}") || l == format!("tick {second}")),
        "{text}"
    );
}

#[test]
fn following_all_picks_up_apps_created_later_from_their_first_line() {
    let agent = Agent::start();
    agent.ok(&[
        "start",
        "--name",
        "early",
        "--",
        "sh",
        "-c",
        "echo early; sleep 100",
    ]);
    let early = agent.home.join("logs/1-early.out.log");
    wait_until("early's line", Duration::from_secs(10), || {
        fs::read_to_string(&early).is_ok_and(|t| t == "early\n")
    });
    let (_child, rx) = follower(&agent, &["all", "--lines", "1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = next_line(&rx, deadline);
    assert_eq!(
        (first["app"].as_str(), first["line"].as_str()),
        (Some("early"), Some("early"))
    );
    agent.ok(&[
        "start",
        "--name",
        "late",
        "--",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 100",
    ]);
    let mut got = Vec::new();
    while got.len() < 2 {
        let v = next_line(&rx, deadline);
        got.push((
            v["app"].as_str().unwrap().to_string(),
            v["stream"].as_str().unwrap().to_string(),
            v["line"].as_str().unwrap().to_string(),
            v["offset"].as_u64().unwrap(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("late".into(), "err".into(), "two".into(), 0),
            ("late".into(), "out".into(), "one".into(), 0)
        ]
    );
}

/// Each running app holds two pipes in the agent: with the usual soft limit of 1,024 open
/// files, about 500 apps would fit. The agent raises its soft limit to the hard one.
#[test]
fn more_apps_than_the_inherited_open_files_limit_allows_run_with_their_pipes() {
    let mut agent = Agent::start();
    agent.ok(&["kill"]);
    agent.reap();
    /// Stops the agent the CLI starts below, also when the test fails.
    struct Kill<'a>(&'a Agent);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.cmd().arg("kill").output();
        }
    }
    let n = 100;
    let file = agent.path("apps.toml");
    let apps: String = (0..n)
        .map(|i| format!("[[app]]\nname = \"s{i}\"\ncmd = \"sleep 1000\"\n"))
        .collect();
    fs::write(&file, apps).unwrap();
    // The CLI finds no agent and starts one, which inherits the low limit.
    let mut cmd = std::process::Command::new("sh");
    base_env(&mut cmd, &agent.home);
    let out = cmd
        .current_dir(agent.dir.path())
        .args(["-c", &format!("ulimit -Sn 128 && exec {BIN} start {file}")])
        .output()
        .unwrap();
    let _kill = Kill(&agent);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let online = agent
        .list()
        .iter()
        .filter(|a| a["status"] == "online")
        .count();
    assert_eq!(online, n);
}

/// A follower that never reads costs the writer nothing: the app's output still reaches the
/// disk at full speed, and the agent does not buffer it for the follower.
#[test]
fn a_follower_that_never_reads_neither_slows_the_writer_nor_grows_the_agent() {
    let agent = Agent::start();
    agent.ok(&["start", "--name", "idle", "--", "sleep", "1000"]);
    // Its stdout is a pipe nobody reads: once that fills, the CLI stops reading the stream.
    let mut stalled = agent
        .cmd()
        .args(["logs", "all", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stalled_out = stalled.stdout.take().unwrap();
    let _stalled = ChildGuard(Some(stalled));
    let before = rss_kib(agent.pid());
    let n = 400_000;
    agent.ok(&[
        "start",
        "--name",
        "loud",
        "--no-autorestart",
        "--log-max-size",
        "1G",
        "--",
        "awk",
        &format!("BEGIN {{ for (i = 0; i < {n}; i++) printf \"%0100d\\n\", i }}"),
    ]);
    agent.wait_status("loud", "stopped");
    let file = agent.home.join("logs/2-loud.out.log");
    assert_eq!(fs::metadata(&file).unwrap().len(), n * 101);
    let grown = rss_kib(agent.pid()).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "the agent grew by {grown} KiB for 40 MB of output"
    );
    // The follower was there, and got output of the loud app (from its first line, unless it
    // connected late and started with the last 20).
    let mut first = String::new();
    BufReader::new(stalled_out).read_line(&mut first).unwrap();
    let line = first.strip_prefix("loud out | ").unwrap_or_default();
    assert!(
        line.len() == 101 && line.trim_end().bytes().all(|b| b.is_ascii_digit()),
        "{first:?}"
    );
}

/// Runs `grpm ARGS` with its stdout on a pseudo-terminal; returns what the terminal received.
fn on_terminal(agent: &Agent, args: &[&str]) -> Vec<u8> {
    use std::{io::Read, os::fd::FromRawFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes the two descriptors it opens; no name, termios or size given.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here only.
    let (mut master, slave) =
        unsafe { (fs::File::from_raw_fd(master), fs::File::from_raw_fd(slave)) };
    let mut child = {
        let mut cmd = agent.cmd();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(slave.try_clone().unwrap())
            .stderr(Stdio::null());
        ChildGuard(Some(cmd.spawn().unwrap()))
    };
    drop(slave);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the child has exited and the last slave descriptor is closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    assert!(child.wait_exit(Duration::from_secs(20)).success());
    reader.join().unwrap()
}

#[test]
fn control_characters_reach_a_terminal_as_escapes_and_scripts_as_they_are() {
    let agent = Agent::start();
    let app = agent.script(
        "ansi.sh",
        r"printf '\033[31mred\033[0m \033]0;pwned\007 over\rwritten\n'; printf 'done\n'; exec sleep 1000",
    );
    agent.ok(&["start", "--name", "ansi", "--", &app]);
    wait_until("ansi's output", Duration::from_secs(20), || {
        agent.ok(&["logs", "ansi", "--out"]).contains("done")
    });
    let tty = agent_output(on_terminal(&agent, &["logs", "ansi", "--out"]));
    assert!(!tty.contains('\u{1b}') && !tty.contains('\u{7}'), "{tty:?}");
    assert!(
        tty.contains(r"ansi out | \x1b[31mred\x1b[0m \x1b]0;pwned\x07 over\rwritten"),
        "{tty:?}"
    );
    // Redirected, the app's bytes are kept as they are; JSON escapes them its own way.
    let piped = agent.ok(&["logs", "ansi", "--out"]);
    assert!(piped.contains("ansi out | \u{1b}[31mred\u{1b}[0m \u{1b}]0;pwned\u{7} over\rwritten\n"));
    let json = agent.ok(&["logs", "ansi", "--out", "--json"]);
    assert!(json.contains(r#""line":"\u001b[31mred"#), "{json}");
    // Events: the error of a command that cannot be spawned names it, escapes and all.
    let e = agent.fails(
        1,
        &["start", "--name", "bad", "--", "/nonexistent/\u{1b}[2Jx"],
    );
    assert!(e.contains("nonexistent"), "{e}");
    let tty = agent_output(on_terminal(
        &agent,
        &["events", "--no-follow", "--app", "bad"],
    ));
    assert!(tty.contains(r"/nonexistent/\x1b[2Jx"), "{tty:?}");
    assert!(!tty.contains('\u{1b}'), "{tty:?}");
}

/// What a terminal received, as text (the terminal turns "\n" into "\r\n").
fn agent_output(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
}

#[test]
fn long_lines_are_printed_whole_or_marked_where_they_continue() {
    let agent = Agent::start();
    let app = agent.script(
        "long.sh",
        "head -c 200000 /dev/zero | tr '\\0' a; echo; head -c 1500000 /dev/zero | tr '\\0' b; echo; echo end; exec sleep 1000",
    );
    agent.ok(&["start", "--name", "long", "--", &app]);
    wait_until("long's output", Duration::from_secs(20), || {
        agent
            .ok(&["logs", "long", "--out", "--lines", "1"])
            .contains("end")
    });
    let text = agent.ok(&["logs", "long", "--out", "--lines", "3"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{:?}",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert_eq!(lines[0], format!("long out | {}", "a".repeat(200_000)));
    // 1.5 MB: a first piece of 1 MiB that says it continues, then the rest.
    assert_eq!(
        lines[1],
        format!("long out | {} [grpm: line continues]", "b".repeat(1 << 20))
    );
    assert_eq!(
        lines[2],
        format!("long out | {}", "b".repeat(1_500_000 - (1 << 20)))
    );
    assert_eq!(lines[3], "long out | end");
    let json = json_lines(&agent.ok(&["logs", "long", "--out", "--lines", "3", "--json"]));
    assert_eq!(json.len(), 4);
    assert_eq!(json[1]["continues"], true);
    assert_eq!(json[2]["offset"], 200_001 + (1 << 20));
    assert!(json[2].get("continues").is_none());
}

#[test]
fn a_stream_without_newlines_rotates_within_64_kib_past_the_limit() {
    let agent = Agent::start();
    let app = agent.script(
        "nonl.sh",
        "head -c 3000000 /dev/zero | tr '\\0' x; exec sleep 1000",
    );
    agent.ok(&[
        "start",
        "--name",
        "nonl",
        "--log-max-size",
        "100K",
        "--log-keep",
        "100",
        "--",
        &app,
    ]);
    let files = || log_files(&agent, 1, "nonl", "out");
    wait_until("3,000,000 bytes on disk", Duration::from_secs(30), || {
        concat(&files()).len() >= 3_000_000
    });
    let all = files();
    let largest = all
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .max()
        .unwrap();
    eprintln!("{} files, the largest {largest} bytes", all.len());
    assert!(
        largest <= (100 + 64) * 1024,
        "a file of {largest} bytes: {} past the limit",
        largest - 100 * 1024
    );
    assert_eq!(concat(&all), vec![b'x'; 3_000_000]);
}
