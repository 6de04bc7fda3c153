//! The `grpm` command line: clap definitions, and one function per command.

pub mod appfile;
mod fleet;
mod follow;
pub mod logs;
pub mod render;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use tonic::Code;

use fleet::{prefix, Place};

use crate::{
    client::{self, ConnectError, Timeouts},
    home::Home,
    model::{parse_duration, parse_size, validate_name, EventKind, LogPolicy, Signal, Target},
    rpc::pb,
};

/// grpm: a process manager you can script over gRPC.
#[derive(Debug, Parser)]
#[command(name = "grpm", version, about, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Run on remote agents instead of the local one: NAME (from $GRPM_HOME/hosts.toml),
    /// HOST:PORT, a comma list, or @group; may be repeated.
    #[arg(long = "host", global = true, value_name = "HOSTS")]
    hosts: Vec<String>,
    /// With --host: act on N hosts at a time, in order, and stop at the first failure (a
    /// rolling restart).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    serial: Option<u32>,
    /// With --host: how long connecting to a host may take.
    #[arg(long, global = true, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// With --host: how long each request may take.
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground (other commands start one in the background).
    Agent {
        /// Events kept for subscribers to replay and resume from.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        events_kept: u32,
        #[command(flatten)]
        listen: ListenArgs,
    },
    /// Certificates for remote agents.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Start a new app (`--name N -- CMD...`), the apps of a TOML file, or a stopped app.
    Start(StartArgs),
    /// Stop apps: their whole process trees. TARGET is a name, an id or "all".
    Stop { target: String },
    /// Restart apps: exactly stop + start, with the same spec and environment.
    Restart {
        target: String,
        /// Replace the apps' captured environment with this shell's (declared --env entries
        /// still win). Without it, the caller's environment never reaches an app.
        #[arg(long)]
        update_env: bool,
    },
    /// Stop apps and forget them (their log files stay, unless --purge-logs).
    #[command(visible_alias = "del", alias = "rm")]
    Delete {
        target: String,
        /// Also remove the apps' log files.
        #[arg(long)]
        purge_logs: bool,
    },
    /// Show apps' output: the last lines of stdout and stderr, then (--follow) new ones.
    Logs(LogsArgs),
    /// Empty apps' log files (default: all apps).
    Flush {
        /// A name, an id or "all".
        #[arg(default_value = "all")]
        target: String,
    },
    /// Show every app: id, name, status, pid, restarts, uptime, cpu, memory.
    #[command(visible_alias = "ls")]
    List,
    /// Show everything about apps.
    #[command(visible_alias = "show")]
    Describe { target: String },
    /// Stop every app and the local agent (apps that should run come back with the next agent).
    Kill,
    /// Show events: the recent ones, then new ones as they happen (Ctrl-C ends).
    Events(EventsArgs),
    /// Publish a `notify` event about apps onto the event stream ("deployed v1.2").
    Notify {
        /// A name, an id or "all".
        target: String,
        /// What happened, in a word: deploy, migrate, alert...
        #[arg(long)]
        action: String,
        /// Free text.
        #[arg(long, default_value = "")]
        message: String,
        /// Details, K=V; may be repeated.
        #[arg(long = "data", value_name = "K=V", value_parser = parse_env_pair)]
        data: Vec<(String, String)>,
    },
}

/// The agent's TCP listener. Without TLS and client authentication on a non-loopback address,
/// or without any client authentication on loopback, the agent refuses to start.
#[derive(Debug, Args)]
struct ListenArgs {
    /// Also serve the API on TCP at IP[:PORT] (port 7470 when omitted; port 0 picks a free
    /// one, written to $GRPM_HOME/agent.addr).
    #[arg(long, value_name = "ADDR", value_parser = crate::agent::listen::parse_addr)]
    listen: Option<SocketAddr>,
    /// The agent's TLS certificate (PEM), e.g. agent.pem from `grpm tls init`.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The agent's TLS private key (PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM), e.g. ca.pem.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer TOKEN` with the token in this file (mode 0600).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum TlsCommand {
    /// Make a CA, an agent certificate for the --host names/IPs, and a client certificate:
    /// ca.pem, agent.pem, agent-key.pem, client.pem, client-key.pem (keys 0600).
    Init {
        /// Directory to write them to (created 0700).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Only events about this app; may be repeated.
    #[arg(long = "app", value_name = "NAME")]
    apps: Vec<String>,
    /// Only these kinds, comma-separated (created, starting, online, exited, stopping, stopped,
    /// restarting, autorestart_scheduled, errored, deleted, notify).
    #[arg(long = "kind", value_delimiter = ',', value_parser = EventKind::parse)]
    kinds: Vec<EventKind>,
    /// Replay every kept event after this sequence number (resume without loss).
    #[arg(long, value_name = "SEQ")]
    from: Option<u64>,
    /// Without --from: how many recent events to show first.
    #[arg(long, default_value_t = 20)]
    recent: u32,
    /// End after the replay instead of following.
    #[arg(long)]
    no_follow: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// A name, an id or "all".
    target: String,
    /// How many of the last lines of each stream to show first.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    lines: u32,
    /// Only stdout.
    #[arg(long, conflicts_with = "err")]
    out: bool,
    /// Only stderr.
    #[arg(long)]
    err: bool,
    /// Keep printing new output (across rotations and restarts) until Ctrl-C.
    #[arg(long, short = 'f')]
    follow: bool,
}

#[derive(Debug, Args)]
struct StartArgs {
    /// An app file (.toml), or the name, id or "all" of existing apps to start again.
    #[arg(value_name = "FILE|TARGET")]
    what: Option<String>,
    /// Name of the new app (default: the command's file name).
    #[arg(long)]
    name: Option<String>,
    /// Working directory (default: the current one).
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Declared environment variable, K=V; may be repeated. Declared variables always win.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    env: Vec<(String, String)>,
    /// Time between the stop signal and SIGKILL (e.g. 500ms, 3s).
    #[arg(long, value_parser = parse_duration)]
    kill_timeout: Option<Duration>,
    /// Signal that asks the app to stop (default SIGTERM).
    #[arg(long, value_parser = Signal::parse)]
    stop_signal: Option<Signal>,
    /// Do not restart the app when it exits.
    #[arg(long)]
    no_autorestart: bool,
    /// First autorestart delay; it doubles after each restart (default 100ms).
    #[arg(long, value_parser = parse_duration)]
    restart_delay: Option<Duration>,
    /// Cap on the autorestart delay (default 3s).
    #[arg(long, value_parser = parse_duration)]
    restart_delay_max: Option<Duration>,
    /// More restarts than this within --restart-window mark the app errored (default 15).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_restarts: Option<u32>,
    /// The window for --max-restarts (default 60s).
    #[arg(long, value_parser = parse_duration)]
    restart_window: Option<Duration>,
    /// Prefix each line of output with the time it was read (RFC 3339, UTC, milliseconds).
    #[arg(long)]
    log_time: bool,
    /// Rotate a log file before it grows past this size: bytes, or 512K, 10M, 1G (default 10M).
    #[arg(long, value_name = "SIZE", value_parser = parse_log_size)]
    log_max_size: Option<u64>,
    /// Rotated log files kept per stream (default 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=LogPolicy::MAX_KEEP as i64))]
    log_keep: Option<u32>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
}

impl StartArgs {
    fn has_spec_flags(&self) -> bool {
        self.name.is_some()
            || self.cwd.is_some()
            || !self.env.is_empty()
            || self.kill_timeout.is_some()
            || self.stop_signal.is_some()
            || self.no_autorestart
            || self.restart_delay.is_some()
            || self.restart_delay_max.is_some()
            || self.max_restarts.is_some()
            || self.restart_window.is_some()
            || self.log_time
            || self.log_max_size.is_some()
            || self.log_keep.is_some()
    }
}

/// A size for --log-max-size, within the agent's bounds.
fn parse_log_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if !(LogPolicy::MIN_MAX_SIZE..=LogPolicy::MAX_MAX_SIZE).contains(&n) {
        return Err(format!("{s:?} is out of range: between 1K and 1T"));
    }
    Ok(n)
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?} is not K=V with a non-empty name K")),
    }
}

/// A failed command: its message, and whether it was bad usage (exit 2) or a failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Failed(String),
    /// Our stdout was closed by its reader (`grpm events | head -1`): stop quietly.
    Closed,
    /// Already reported on stderr (per host): exit with this code.
    Reported(u8),
}

/// Writes a line to stdout. A closed pipe ends the command quietly instead of panicking as
/// `println!` would.
pub(crate) fn out(line: impl std::fmt::Display) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
        Err(e) => Err(Failure::Failed(format!("cannot write to stdout: {e}"))),
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        let mut msg = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        // A transport failure's status says "transport error"; the cause (a TLS alert, a
        // reset connection) is in its sources.
        if let Some(src) = std::error::Error::source(&s) {
            let detail = client::chain(src);
            if !msg.contains(&detail) {
                msg = format!("{msg}: {detail}");
            }
            // Layers repeat each other ("http2 error: http2 error: ..."): say each thing once.
            let mut parts: Vec<&str> = Vec::new();
            for p in msg.split(": ") {
                if parts.last() != Some(&p) {
                    parts.push(p);
                }
            }
            msg = parts.join(": ");
        }
        match s.code() {
            Code::InvalidArgument => Failure::Usage(msg),
            Code::Unavailable => Failure::Failed(format!("agent unavailable: {msg}")),
            _ => Failure::Failed(msg),
        }
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Failure {
        Failure::Failed(e.to_string())
    }
}

/// Entry point of the binary: parses, runs, prints, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(Failure::Usage(e)),
    };
    if let Command::Agent {
        events_kept,
        listen,
    } = cli.command
    {
        if !cli.hosts.is_empty() {
            return fail(Failure::Usage(
                "the agent runs here; --host is for commands sent to remote agents".into(),
            ));
        }
        init_tracing();
        let options = crate::agent::Options {
            events_kept: events_kept as usize,
            listen: crate::agent::listen::ListenSpec {
                addr: listen.listen,
                tls_cert: listen.tls_cert,
                tls_key: listen.tls_key,
                tls_client_ca: listen.tls_client_ca,
                token_file: listen.token_file,
            },
        };
        return match crate::agent::main(&home, &options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(Failure::Failed(e)),
        };
    }
    if let Command::Tls {
        command: TlsCommand::Init { out, force },
    } = &cli.command
    {
        return match tls_init(&cli.hosts, out, *force, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => fail(f),
        };
    }
    // One thread for the local agent; on a fleet, TLS handshakes and decoding for many hosts
    // are spread over the cores.
    let mut builder = if cli.hosts.is_empty() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(4),
        );
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(Failure::Failed(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli, &home)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    match f {
        Failure::Closed => ExitCode::SUCCESS,
        Failure::Reported(code) => ExitCode::from(code),
        Failure::Usage(m) => {
            eprintln!("grpm: {m}");
            ExitCode::from(2)
        }
        Failure::Failed(m) => {
            eprintln!("grpm: {m}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRPM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli, home: &Home) -> Result<(), Failure> {
    let json = cli.json;
    let timeouts = Timeouts {
        connect: cli.connect_timeout,
        request: Some(cli.timeout),
    };
    let place = Place::new(home, &cli.hosts, cli.serial, timeouts)?;
    match cli.command {
        Command::Agent { .. } | Command::Tls { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Kill => {
            if place.is_remote() {
                return Err(Failure::Usage(
                    "kill stops the local agent; on a remote host, stop its agent there (its \
                     service manager, or SIGTERM)"
                        .into(),
                ));
            }
            kill(home, json).await
        }
        Command::Events(args) => events(&place, args, json).await,
        Command::Notify {
            target,
            action,
            message,
            data,
        } => {
            check_target(&target)?;
            let req = pb::NotifyGodRequest {
                target,
                action,
                message,
                data: data.into_iter().collect(),
            };
            let outcomes = place
                .each(|mut c| {
                    let req = req.clone();
                    async move { Ok(c.notify_god(req).await?.into_inner().events) }
                })
                .await;
            let (oks, failed) = fleet::split(outcomes)?;
            for (host, events) in &oks {
                for e in events {
                    if json {
                        out(render::json(&render::event_json(e, host.as_deref())))?;
                    } else {
                        out(format_args!("{}{}", prefix(host), render::event_line(e)))?;
                    }
                }
            }
            failed.map_or(Ok(()), Err)
        }
        Command::Start(args) => start(&place, args, json).await,
        Command::Stop { target } => {
            check_target(&target)?;
            let outcomes = place
                .each(|mut c| {
                    let target = target.clone();
                    async move { Ok(c.stop(pb::StopRequest { target }).await?.into_inner().apps) }
                })
                .await;
            report(outcomes, json, "stopped")
        }
        Command::Restart { target, update_env } => {
            check_target(&target)?;
            if update_env && place.is_remote() {
                eprintln!(
                    "grpm: note: --update-env on a remote host takes the remote agent's own \
                     environment, never this shell's"
                );
            }
            let req = pb::RestartRequest {
                target,
                update_env,
                client_env: (update_env && !place.is_remote()).then(caller_env),
            };
            let outcomes = place
                .each(|mut c| {
                    let req = req.clone();
                    async move { Ok(c.restart(req).await?.into_inner().apps) }
                })
                .await;
            report(outcomes, json, "restarted")
        }
        Command::Delete { target, purge_logs } => {
            check_target(&target)?;
            let outcomes = place
                .each(|mut c| {
                    let target = target.clone();
                    async move {
                        Ok(c.delete(pb::DeleteRequest { target, purge_logs })
                            .await?
                            .into_inner()
                            .apps)
                    }
                })
                .await;
            report(outcomes, json, "deleted")
        }
        Command::Logs(args) => {
            check_target(&args.target)?;
            let stream = match (args.out, args.err) {
                (true, _) => pb::LogStream::Stdout,
                (_, true) => pb::LogStream::Stderr,
                _ => pb::LogStream::Unspecified,
            };
            let req = pb::LogsRequest {
                target: args.target,
                stream: stream as i32,
                lines: Some(args.lines),
                follow: args.follow,
                from: Vec::new(),
            };
            // On a fleet, every host's lines as they come, each tagged with its host; a
            // followed host that drops is reconnected and resumed.
            let outcomes = match &place {
                Place::Fleet {
                    hosts, timeouts, ..
                } if req.follow => {
                    futures_util::future::join_all(hosts.iter().map(|h| async {
                        fleet::Outcome {
                            host: Some(h.label.clone()),
                            result: logs::follow_remote(h, timeouts, req.clone(), json).await,
                        }
                    }))
                    .await
                }
                _ => {
                    place
                        .each_labelled(|mut c, host| {
                            let req = req.clone();
                            async move { logs::logs(&mut c, req, json, host.as_deref()).await }
                        })
                        .await
                }
            };
            let (_, failed) = fleet::split(outcomes)?;
            failed.map_or(Ok(()), Err)
        }
        Command::Flush { target } => {
            check_target(&target)?;
            let outcomes = place
                .each(|mut c| {
                    let target = target.clone();
                    async move {
                        Ok(c.flush(pb::FlushRequest { target })
                            .await?
                            .into_inner()
                            .apps)
                    }
                })
                .await;
            report(outcomes, json, "flushed the logs of")
        }
        Command::List => {
            let outcomes = place
                .each(
                    |mut c| async move { Ok(c.list(pb::ListRequest {}).await?.into_inner().apps) },
                )
                .await;
            let (oks, failed) = fleet::split(outcomes)?;
            print_apps(&oks, json)?;
            failed.map_or(Ok(()), Err)
        }
        Command::Describe { target } => {
            check_target(&target)?;
            let outcomes = place
                .each(|mut c| {
                    let target = target.clone();
                    async move {
                        Ok(c.describe(pb::DescribeRequest { target })
                            .await?
                            .into_inner()
                            .apps)
                    }
                })
                .await;
            let (oks, failed) = fleet::split(outcomes)?;
            if json {
                let mut all: Vec<serde_json::Value> = Vec::new();
                for (host, apps) in &oks {
                    for d in apps {
                        let mut v = detail_json(d);
                        if let (Some(h), Some(obj)) = (host, v.as_object_mut()) {
                            obj.insert("host".into(), h.as_str().into());
                        }
                        all.push(v);
                    }
                }
                out(render::json(&all))?;
            } else {
                let mut texts: Vec<String> = Vec::new();
                for (host, apps) in &oks {
                    for d in apps {
                        let text = render::detail(d);
                        texts.push(match host {
                            Some(h) => format!("{:<14}{h}\n{text}", "host"),
                            None => text,
                        });
                    }
                }
                out(texts.join("\n").trim_end())?;
            }
            failed.map_or(Ok(()), Err)
        }
    }
}

/// Prints the apps of one agent (the plain table) or of several (with a HOST column).
fn print_apps(oks: &[(Option<String>, Vec<pb::AppInfo>)], json: bool) -> Result<(), Failure> {
    if oks.is_empty() {
        // Every host failed (and said why on stderr): no table, an empty array for scripts.
        return if json { out("[]") } else { Ok(()) };
    }
    if let [(None, apps)] = oks {
        if json {
            out(render::json(&render::rows(apps)))?;
        } else {
            out(render::table(apps).trim_end())?;
        }
        return Ok(());
    }
    let rows: Vec<(&str, &pb::AppInfo)> = oks
        .iter()
        .flat_map(|(h, apps)| apps.iter().map(move |a| (h.as_deref().unwrap_or(""), a)))
        .collect();
    if json {
        out(render::json(&render::host_rows(&rows)))?;
    } else {
        out(render::host_table(&rows).trim_end())?;
    }
    Ok(())
}

/// `grpm tls init`: the names come from --host (the agent's names and addresses).
fn tls_init(
    names: &[String],
    dir: &std::path::Path,
    force: bool,
    json: bool,
) -> Result<(), Failure> {
    let names: Vec<String> = names
        .iter()
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let bundle = crate::certs::generate(&names).map_err(Failure::Usage)?;
    let files = crate::certs::write(dir, &bundle, force).map_err(Failure::Failed)?;
    if json {
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        out(render::json(
            &serde_json::json!({ "files": paths, "hosts": names }),
        ))?;
        return Ok(());
    }
    for f in &files {
        out(format_args!("wrote {}", f.display()))?;
    }
    let d = dir.display();
    out(format_args!(
        "agent:  grpm agent --listen 0.0.0.0:7470 --tls-cert {d}/agent.pem --tls-key {d}/agent-key.pem --tls-client-ca {d}/ca.pem"
    ))?;
    out(format_args!(
        "client: in $GRPM_HOME/hosts.toml, ca = \"{d}/ca.pem\", cert = \"{d}/client.pem\", key = \"{d}/client-key.pem\""
    ))?;
    Ok(())
}

fn check_target(t: &str) -> Result<(), Failure> {
    Target::parse(t).map(|_| ()).map_err(Failure::Usage)
}

/// This process's environment, as the base of apps it creates. Entries that are not UTF-8
/// cannot cross the API; they are left out, and said so.
fn caller_env() -> pb::Environment {
    let mut vars = std::collections::HashMap::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                if !matches!(
                    k.as_str(),
                    "GRPM_APP_ID" | "GRPM_AGENT_ID" | "GRPM_APP_NAME"
                ) {
                    vars.insert(k, v);
                }
            }
            (k, _) => eprintln!(
                "grpm: warning: environment variable {:?} is not UTF-8; left out",
                k.unwrap_or_else(|os| os.to_string_lossy().into_owned())
            ),
        }
    }
    pb::Environment { vars }
}

/// Prints what an action did, per agent ("box1: restarted api (id 3), pid 4242" on a fleet),
/// after the failed hosts were named on stderr; fails if any host failed.
fn report(
    outcomes: Vec<fleet::Outcome<Vec<pb::AppInfo>>>,
    json: bool,
    verb: &str,
) -> Result<(), Failure> {
    let (oks, failed) = fleet::split(outcomes)?;
    if json {
        print_apps(&oks, true)?;
        return failed.map_or(Ok(()), Err);
    }
    for (host, apps) in &oks {
        let p = prefix(host);
        if apps.is_empty() {
            out(format_args!("{p}no apps"))?;
        }
        for a in apps {
            let pid = if a.pid != 0 {
                format!(", pid {}", a.pid)
            } else {
                String::new()
            };
            out(format_args!("{p}{verb} {} (id {}){pid}", a.name, a.id))?;
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn start(place: &Place, args: StartArgs, json: bool) -> Result<(), Failure> {
    let remote = place.is_remote();
    if !args.cmd.is_empty() {
        if let Some(what) = &args.what {
            return Err(Failure::Usage(format!(
                "give either a command after -- or {what:?}, not both"
            )));
        }
        let req = pb::StartRequest {
            app: Some(spec_from_args(args, remote)?),
            // A remote agent gives its apps its own environment, never this shell's.
            client_env: (!remote).then(caller_env),
            ..Default::default()
        };
        let outcomes = place
            .each(|mut c| {
                let req = req.clone();
                async move { Ok(c.start(req).await?.into_inner().apps) }
            })
            .await;
        return report(outcomes, json, "started");
    }
    let Some(what) = args.what.clone() else {
        return Err(Failure::Usage(
            "nothing to start: give `--name NAME -- CMD [ARG...]`, an app file, or a target".into(),
        ));
    };
    let is_file = what.ends_with(".toml") || std::path::Path::new(&what).is_file();
    if args.has_spec_flags() {
        return Err(Failure::Usage(format!(
            "options such as --name or --env describe a new app; put the command after -- (or, for {what:?}, drop them)"
        )));
    }
    if is_file {
        let specs = appfile::load(std::path::Path::new(&what), remote).map_err(Failure::Usage)?;
        return start_file(place, specs, json).await;
    }
    check_target(&what)?;
    let outcomes = place
        .each(|mut c| {
            let target = what.clone();
            async move {
                Ok(c.start(pb::StartRequest {
                    target,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .apps)
            }
        })
        .await;
    report(outcomes, json, "started")
}

/// The spec of `start --name ... -- CMD`. Locally a relative or missing --cwd is taken from
/// this shell; on a remote agent --cwd must be absolute, and without it the app runs in the
/// agent's home directory.
fn spec_from_args(a: StartArgs, remote: bool) -> Result<pb::AppSpec, Failure> {
    let name = match a.name {
        Some(n) => n,
        None => {
            let base = std::path::Path::new(&a.cmd[0])
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if validate_name(&base).is_err() {
                return Err(Failure::Usage(format!(
                    "cannot derive an app name from {:?}; give --name",
                    a.cmd[0]
                )));
            }
            base
        }
    };
    validate_name(&name).map_err(Failure::Usage)?;
    let cwd = match a.cwd {
        Some(p) if p.is_absolute() => p,
        Some(p) if remote => {
            return Err(Failure::Usage(format!(
                "--cwd {}: give an absolute path on the remote host",
                p.display()
            )))
        }
        None if remote => PathBuf::new(),
        Some(p) => std::env::current_dir()
            .map_err(|e| Failure::Failed(format!("cannot read the current directory: {e}")))?
            .join(p),
        None => std::env::current_dir()
            .map_err(|e| Failure::Failed(format!("cannot read the current directory: {e}")))?,
    };
    let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis().max(1) as u64);
    Ok(pb::AppSpec {
        name,
        cmd: a.cmd,
        cwd: cwd.to_string_lossy().into_owned(),
        env: a.env.into_iter().collect(),
        kill_timeout_ms: ms(a.kill_timeout),
        stop_signal: a.stop_signal.map(|s| s.to_string()).unwrap_or_default(),
        autorestart: a.no_autorestart.then_some(false),
        restart_delay_ms: ms(a.restart_delay),
        restart_delay_max_ms: ms(a.restart_delay_max),
        max_restarts: a.max_restarts.unwrap_or(0),
        restart_window_ms: ms(a.restart_window),
        log_time: a.log_time,
        log_max_size: a.log_max_size.unwrap_or(0),
        log_keep: a.log_keep.unwrap_or(0),
    })
}

/// What starting an app file did on one agent.
struct FileStart {
    /// Said before the table ("web already exists: ...").
    notes: Vec<String>,
    /// The file's apps, as the agent lists them afterwards.
    rows: Vec<pb::AppInfo>,
    /// Apps that could not be started (they exist, errored).
    errors: Vec<Failure>,
}

/// Starts the apps of a file: the new ones in one request (ids follow the file's order; one
/// bad spec creates none), and existing ones by name, with their stored spec: applying an edited
/// file is a delete and a start, on purpose. Ends, like PM2, with the table of the file's apps
/// (of every host's, on a fleet).
async fn start_file(place: &Place, specs: Vec<pb::AppSpec>, json: bool) -> Result<(), Failure> {
    let remote = place.is_remote();
    let outcomes = place
        .each(|c| start_file_on(c, specs.clone(), remote))
        .await;
    let (oks, failed) = fleet::split(outcomes)?;
    if !json {
        for (host, r) in &oks {
            for n in &r.notes {
                out(format_args!("{}{n}", prefix(host)))?;
            }
        }
    }
    let tables: Vec<(Option<String>, Vec<pb::AppInfo>)> = oks
        .iter()
        .map(|(h, r)| (h.clone(), r.rows.clone()))
        .collect();
    print_apps(&tables, json)?;
    let mut worst = fleet::Worst::default();
    if let Some(f) = failed {
        worst.report("", f)?;
    }
    for (host, r) in oks {
        for e in r.errors {
            worst.report(&prefix(&host), e)?;
        }
    }
    worst.failure().map_or(Ok(()), Err)
}

async fn start_file_on(
    mut c: client::Client,
    specs: Vec<pb::AppSpec>,
    remote: bool,
) -> Result<FileStart, Failure> {
    let existing: Vec<String> = c
        .list(pb::ListRequest {})
        .await?
        .into_inner()
        .apps
        .into_iter()
        .map(|a| a.name)
        .collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let (old, new): (Vec<pb::AppSpec>, Vec<pb::AppSpec>) =
        specs.into_iter().partition(|s| existing.contains(&s.name));
    let mut result = FileStart {
        notes: Vec::new(),
        rows: Vec::new(),
        errors: Vec::new(),
    };
    if !new.is_empty() {
        let created = c
            .start(pb::StartRequest {
                apps: new,
                client_env: (!remote).then(caller_env),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => {}
            // Nothing was created: report as is.
            Err(s) if matches!(s.code(), Code::InvalidArgument | Code::AlreadyExists) => {
                return Err(s.into())
            }
            // Created, but some failed to start: show the table, then fail.
            Err(s) => result.errors.push(Failure::from(s)),
        }
    }
    for spec in old {
        result.notes.push(format!(
            "{} already exists: started with its stored spec if it was down",
            spec.name
        ));
        let r = c
            .start(pb::StartRequest {
                target: spec.name.clone(),
                ..Default::default()
            })
            .await;
        if let Err(s) = r {
            result.errors.push(Failure::from(s));
        }
    }
    result.rows = c
        .list(pb::ListRequest {})
        .await?
        .into_inner()
        .apps
        .into_iter()
        .filter(|a| names.contains(&a.name))
        .collect();
    Ok(result)
}

async fn events(place: &Place, args: EventsArgs, json: bool) -> Result<(), Failure> {
    for app in &args.apps {
        validate_name(app).map_err(Failure::Usage)?;
    }
    let req = pb::SubscribeRequest {
        from_seq: args.from,
        recent: args.recent,
        no_follow: args.no_follow,
        apps: args.apps,
        kinds: args
            .kinds
            .into_iter()
            .map(|k| crate::rpc::convert::kind_to_pb(k) as i32)
            .collect(),
    };
    let home = match place {
        Place::Local(home) => home,
        Place::Fleet {
            hosts, timeouts, ..
        } => return follow::merged(hosts, *timeouts, req, json).await,
    };
    let mut c = client::connect_local(home, true).await?;
    let mut stream = c.subscribe(req).await?.into_inner();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let next = tokio::select! {
            n = stream.message() => n?,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(e) = next else { return Ok(()) };
        print_event(&e, None, json)?;
    }
}

/// One event: a JSON line, or a text line ("box1: " first on a fleet).
fn print_event(e: &pb::Event, host: Option<&str>, json: bool) -> Result<(), Failure> {
    if json {
        out(render::json(&render::event_json(e, host)))
    } else {
        match host {
            Some(h) => out(format_args!("{h}: {}", render::event_line(e))),
            None => out(render::event_line(e)),
        }
    }
}

async fn kill(home: &Home, json: bool) -> Result<(), Failure> {
    let mut c = match client::connect_local(home, false).await {
        Ok(c) => c,
        Err(ConnectError::NoAgent(_)) => {
            if !json {
                out(format_args!(
                    "no agent is running for {}",
                    home.root.display()
                ))?;
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let pid = c
        .shutdown(pb::ShutdownRequest {})
        .await?
        .into_inner()
        .agent_pid;
    // Wait for the process itself to be gone, so that `grpm kill && grpm ...` is safe.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while process_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::Failed(format!(
                "agent pid {pid} is still alive after 15s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if json {
        out(format_args!(
            "{}",
            render::json(&serde_json::json!({ "agent_pid": pid, "stopped": true }))
        ))?;
    } else {
        out(format_args!("agent {pid} stopped"))?;
    }
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    crate::supervisor::alive(pid)
}

fn detail_json(d: &pb::AppDetail) -> serde_json::Value {
    let info = d.info.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let mut row = serde_json::to_value(render::AppRow::from(&info)).unwrap_or_default();
    if let Some(obj) = row.as_object_mut() {
        obj.insert(
            "desired".into(),
            (if d.desired_online {
                "online"
            } else {
                "stopped"
            })
            .into(),
        );
        obj.insert("cmd".into(), spec.cmd.clone().into());
        obj.insert("cwd".into(), spec.cwd.clone().into());
        obj.insert(
            "declared_env".into(),
            serde_json::to_value(&spec.env).unwrap_or_default(),
        );
        obj.insert(
            "env".into(),
            serde_json::to_value(&d.env).unwrap_or_default(),
        );
        obj.insert("kill_timeout_ms".into(), spec.kill_timeout_ms.into());
        obj.insert("stop_signal".into(), spec.stop_signal.clone().into());
        obj.insert(
            "autorestart".into(),
            spec.autorestart.unwrap_or(true).into(),
        );
        obj.insert(
            "last_exit".into(),
            d.last_exit
                .as_ref()
                .map(|e| serde_json::json!({ "code": e.code, "signal": e.signal, "text": e.text }))
                .unwrap_or(serde_json::Value::Null),
        );
        obj.insert(
            "error".into(),
            if d.error.is_empty() {
                serde_json::Value::Null
            } else {
                d.error.clone().into()
            },
        );
        obj.insert("log_time".into(), spec.log_time.into());
        obj.insert("log_max_size".into(), spec.log_max_size.into());
        obj.insert("log_keep".into(), spec.log_keep.into());
        obj.insert("stdout_path".into(), d.stdout_path.clone().into());
        obj.insert("stderr_path".into(), d.stderr_path.clone().into());
        obj.insert("restart_in_ms".into(), d.restart_in_ms.into());
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env_pair("A="), Ok(("A".into(), "".into())));
        assert!(parse_env_pair("=x").is_err());
        assert!(parse_env_pair("novalue").is_err());
    }
}
