//! Fleet benchmark: `grpm --host @all list` across 50 real agents on loopback (mutual TLS, and
//! token-only for comparison), and a rolling restart (`--serial 1`) across 10. Every figure is
//! the wall time of the real CLI process, as an operator meets it: process start, hosts.toml,
//! 50 connections with their TLS handshakes, 50 requests, one merged table.
//!
//! Run: `cargo bench --bench fleet`.

#[allow(dead_code)]
mod common;

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use common::{ms, print_table, rss_kib, Agent, Row, Stats, BIN};

const AGENTS: usize = 50;
const ROLLING: usize = 10;
const APPS_PER_AGENT: usize = 2;
const WARMUP_RUNS: usize = 5;
const LIST_RUNS: usize = 50;
const RESTART_RUNS: usize = 10;
const TARGET_LIST_MS: f64 = 100.0;

/// A measured command: title, runs, arguments, output check, metric name.
type Case<'a> = (&'a str, usize, &'a [&'a str], &'a dyn Fn(&Output), String);

/// The operator: a home with hosts.toml and no agent.
struct Operator {
    dir: tempfile::TempDir,
}

impl Operator {
    fn run(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("h");
        let out = Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("GRPM_HOME", &home)
            .env("HOME", &home)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run grpm {args:?}: {e}"));
        assert!(
            out.status.success(),
            "grpm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn timed(&self, runs: usize, args: &[&str], check: &dyn Fn(&Output)) -> Vec<Duration> {
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let out = self.run(args);
                let d = t.elapsed();
                check(&out);
                d
            })
            .collect()
    }
}

fn main() {
    println!("grpm fleet benchmark ({BIN})");
    println!(
        "machine: {} CPUs available; {AGENTS} agents on loopback, {APPS_PER_AGENT} apps each",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let op = Operator {
        dir: tempfile::Builder::new()
            .prefix("grpm-fleet")
            .tempdir()
            .unwrap(),
    };
    let home = op.dir.path().join("h");
    fs::create_dir_all(&home).unwrap();
    let tls = op.dir.path().join("tls");
    op.run(&[
        "tls",
        "init",
        "--out",
        tls.to_str().unwrap(),
        "--host",
        "localhost",
    ]);
    let token = op.dir.path().join("token");
    fs::write(&token, "fleet-bench-token-0123456789abcdef").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let p = |f: &str| tls.join(f).to_string_lossy().into_owned();
    let (cert, key, ca) = (p("agent.pem"), p("agent-key.pem"), p("ca.pem"));
    let tok = token.to_string_lossy().into_owned();

    // 50 agents with mutual TLS, and 50 with a token on plaintext loopback for comparison.
    let t0 = Instant::now();
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|_| {
            Agent::start(
                "fleet",
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    "--tls-client-ca",
                    &ca,
                ],
            )
        })
        .collect();
    let token_agents: Vec<Agent> = (0..AGENTS)
        .map(|_| Agent::start("token", &["--listen", "127.0.0.1:0", "--token-file", &tok]))
        .collect();
    println!(
        "\nstarted {} agents in {:.1} s",
        agents.len() + token_agents.len(),
        t0.elapsed().as_secs_f64()
    );
    let addr = |a: &Agent| {
        fs::read_to_string(a.home.join("agent.addr"))
            .expect("agent.addr")
            .trim()
            .to_string()
    };
    let mut hosts = String::new();
    let (client, client_key) = (p("client.pem"), p("client-key.pem"));
    let mut all = Vec::new();
    let mut toks = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        writeln!(
            hosts,
            "[hosts.m{i}]\naddress = \"{}\"\nca = \"{ca}\"\ncert = \"{client}\"\nkey = \"{client_key}\"\nserver_name = \"localhost\"",
            addr(a)
        )
        .unwrap();
        all.push(format!("\"m{i}\""));
    }
    for (i, a) in token_agents.iter().enumerate() {
        writeln!(
            hosts,
            "[hosts.t{i}]\naddress = \"{}\"\ntoken_file = \"{tok}\"",
            addr(a)
        )
        .unwrap();
        toks.push(format!("\"t{i}\""));
    }
    writeln!(
        hosts,
        "[groups]\nall = [{}]\ntokens = [{}]\nten = [{}]",
        all.join(", "),
        toks.join(", "),
        all[..ROLLING].join(", ")
    )
    .unwrap();
    fs::write(home.join("hosts.toml"), &hosts).unwrap();

    for (i, a) in agents.iter().chain(&token_agents).enumerate() {
        for j in 0..APPS_PER_AGENT {
            a.ok(&[
                "start",
                "--name",
                &format!("app-{j}"),
                "--",
                "sleep",
                "1000",
            ]);
        }
        if i == 0 {
            println!(
                "agent RSS with a TLS listener and {APPS_PER_AGENT} apps: {} KiB",
                rss_kib(a.pid())
            );
        }
    }
    let mut table = Vec::new();

    // [1] list across 50 agents over mutual TLS.
    let rows = AGENTS * APPS_PER_AGENT + 1;
    let check = |out: &Output| {
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, rows, "a header and every host's apps");
    };
    op.timed(WARMUP_RUNS, &["--host", "@all", "list"], &check);
    let times = op.timed(LIST_RUNS, &["--host", "@all", "list"], &check);
    let s = Stats::of(&times);
    println!("\n[1] grpm --host @all list ({AGENTS} agents, mutual TLS):");
    s.print(1);
    table.push(Row::at_most(
        format!("list, {AGENTS} agents mTLS, median"),
        ms(s.median),
        TARGET_LIST_MS,
        "ms",
    ));
    table.push(Row::info(
        format!("list, {AGENTS} agents mTLS, p99"),
        ms(s.p99),
        "ms",
    ));

    // [2] The same over plaintext loopback with a token: what TLS costs. [3] One host over
    // mTLS, for scale. [4] A rolling restart across 10, one host at a time; [5] all 10 at once.
    let restart_check = |out: &Output| {
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert_eq!(lines, ROLLING, "a line per host");
    };
    let rolling = ["--host", "@ten", "--serial", "1", "restart", "app-0"];
    let cases: [Case; 4] = [
        (
            "[2] 50 agents, token, no TLS",
            LIST_RUNS,
            &["--host", "@tokens", "list"],
            &check,
            format!("list, {AGENTS} agents token, median"),
        ),
        (
            "[3] one agent, mutual TLS",
            LIST_RUNS,
            &["--host", "m0", "list"],
            &|_| {},
            "list, 1 agent mTLS, median".into(),
        ),
        (
            "[4] rolling, 10 agents",
            RESTART_RUNS,
            &rolling,
            &restart_check,
            format!("rolling restart, {ROLLING} agents, median"),
        ),
        (
            "[5] all 10 at once",
            RESTART_RUNS,
            &["--host", "@ten", "restart", "app-0"],
            &restart_check,
            format!("parallel restart, {ROLLING} agents, median"),
        ),
    ];
    for (title, runs, args, check, metric) in cases {
        let s = Stats::of(&op.timed(runs, args, check));
        println!("\n{title}: grpm {}", args.join(" "));
        s.print(1);
        table.push(Row::info(metric, ms(s.median), "ms"));
    }

    print_table(&table, 1, 10);
    let t = Instant::now();
    drop(agents);
    drop(token_agents);
    println!(
        "(stopped every agent in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
}
