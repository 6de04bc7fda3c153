//! The command line's arguments: clap derive, doc comments as help. Only syntax is checked
//! here (a number, a duration, a signal, K=V); the bounds of an app's settings are the model's
//! (`AppDraft::validate`), so the CLI refuses what the agent would, with its message.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::model::{parse_duration, parse_limit, parse_size, parse_umask, EventKind, Signal};

/// `NAME=VALUE` of `--limit`.
fn parse_limit_pair(s: &str) -> Result<(String, u64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE, e.g. nofile=65536"))?;
    Ok((name.to_string(), parse_limit(name, value)?))
}

#[derive(Debug, Parser)]
#[command(name = "grpm", version, about, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Also accepted after the command (`grpm list --host box1`), where it is shown only for
    /// the commands that talk to agents.
    #[command(flatten)]
    pub reach: Reach,
    #[command(subcommand)]
    pub command: Command,
}

/// Which agents a command talks to, and how long it waits for them: given before the command
/// (`grpm --host box1 list`) or after it (`grpm list --host box1`), and shown in the help of
/// the commands that talk to agents only.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Agent options")]
pub struct Reach {
    /// Run on remote agents instead of the local one: NAME (from $GRPM_HOME/hosts.toml),
    /// HOST:PORT, a comma list, or @group; may be repeated.
    #[arg(long = "host", value_name = "HOSTS")]
    pub hosts: Vec<String>,
    /// With --host: act on N hosts at a time, in order, and stop at the first failure (a
    /// rolling restart).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub serial: Option<u32>,
    /// With --host: how long connecting to a host may take [default: 3s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// How long each request may take (the local agent's too; a stream until its first
    /// answer) [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

impl Reach {
    /// `self` (before the command) with `after` (after it) on top: hosts add up, the other
    /// options given after the command win.
    pub fn merge(mut self, after: Option<&Reach>) -> Reach {
        if let Some(a) = after {
            self.hosts.extend(a.hosts.iter().cloned());
            self.serial = a.serial.or(self.serial);
            self.connect_timeout = a.connect_timeout.or(self.connect_timeout);
            self.timeout = a.timeout.or(self.timeout);
        }
        self
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout.unwrap_or(Duration::from_secs(3))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(60))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent in the foreground (other commands start one in the background).
    Agent {
        /// Events kept for subscribers to replay and resume from.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        events_kept: u32,
        /// ... and at most this many bytes of them (approximately; e.g. 8M, 64M).
        #[arg(long, default_value = "8M", value_name = "SIZE", value_parser = parse_events_bytes)]
        events_kept_bytes: u64,
        #[command(flatten)]
        listen: ListenArgs,
        #[command(flatten)]
        observe: ObserveArgs,
        /// Run without a keeper: when this agent dies, its apps' output pipes die with it (a
        /// later agent adopts the apps, without their output). For debugging, and tests.
        #[arg(long)]
        no_keeper: bool,
        #[command(subcommand)]
        action: Option<AgentCommand>,
    },
    /// Certificates for remote agents.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Start a new app (`--name N -- CMD...`, a script, a quoted command line), the apps of a
    /// TOML file, or stopped apps.
    Start(Box<StartArgs>),
    /// Make the apps match an app file: create new ones, restart changed ones with their new
    /// spec, start stopped ones, leave the rest alone; prints the plan, then the apps. Exit
    /// code with --dry-run: 0 nothing to do, 3 changes to make.
    Apply(ApplyArgs),
    /// What `grpm apply FILE` would do, without doing it (= apply --dry-run). Exit code: 0
    /// nothing to do, 3 changes to make.
    Diff(DiffArgs),
    /// Stop apps: their whole process trees.
    Stop {
        /// A name, an id or "all".
        target: String,
        #[command(flatten)]
        reach: Reach,
    },
    /// Restart apps: exactly stop + start, with the same spec and environment.
    Restart {
        /// A name, an id or "all".
        target: String,
        #[command(flatten)]
        reach: Reach,
        /// Replace the apps' captured environment with this shell's (declared --env entries
        /// still win). Without it, the caller's environment never reaches an app.
        #[arg(long)]
        update_env: bool,
        /// Return once the apps are spawned, without waiting for their readiness checks.
        #[arg(long)]
        no_wait: bool,
    },
    /// Replace apps' instances without downtime: each new instance is ready (on the same held
    /// sockets) before the old one stops. TARGET is a name, an id, "all", or one instance (api:1).
    Reload {
        /// A name, an id, "all", or one instance (api:1).
        target: String,
        #[command(flatten)]
        reach: Reach,
        /// Replace this many instances at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
        parallel: u32,
    },
    /// Set how many instances an app runs: new ones start, the highest-numbered ones stop and
    /// are forgotten.
    Scale {
        /// A name or an id.
        target: String,
        /// The number of instances (1 to 256).
        instances: u32,
        #[command(flatten)]
        reach: Reach,
    },
    /// Stop apps and forget them (their log files stay, unless --purge-logs).
    #[command(visible_alias = "del", alias = "rm")]
    Delete {
        /// A name, an id or "all".
        target: String,
        #[command(flatten)]
        reach: Reach,
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
        #[command(flatten)]
        reach: Reach,
    },
    /// Show every app: id, name, status, pid, restarts, uptime, cpu, memory.
    #[command(visible_alias = "ls")]
    List {
        #[command(flatten)]
        reach: Reach,
    },
    /// Show everything about apps.
    #[command(visible_alias = "show")]
    Describe {
        /// A name, an id or "all".
        target: String,
        #[command(flatten)]
        reach: Reach,
    },
    /// Stop every app and the local agent (apps that should run come back with the next agent).
    Kill,
    /// Show events: the recent ones, then new ones as they happen (Ctrl-C ends).
    Events(EventsArgs),
    /// A live view: the apps table, the selected app's output, keys to restart, stop, start.
    Monit(MonitArgs),
    /// Have the agent start at boot: print (or --install) a service unit for it.
    Startup {
        #[command(subcommand)]
        system: Option<StartupCommand>,
    },
    /// Print a shell completion script (e.g. `grpm completions bash > /etc/bash_completion.d/grpm`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Translate a PM2 ecosystem file or a supervisord.conf into a grpm app file, printed on
    /// stdout; what is not translated (or differs) is listed on stderr.
    Import {
        #[command(subcommand)]
        source: ImportCommand,
    },
    /// Print the man page (roff; `grpm man | man -l -`), or write every page to --out DIR.
    Man {
        /// Write grpm.1 and a page per command (grpm-start.1...) to this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
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
        #[command(flatten)]
        reach: Reach,
    },
}

/// What `apply` and `diff` read and how.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The app file (.toml).
    pub file: PathBuf,
    /// Also delete the apps created from this file that it no longer lists.
    #[arg(long)]
    pub prune: bool,
    /// Replace the captured environment of the file's apps with this shell's (the remote
    /// agent's own with --host); apps whose environment differs are restarted.
    #[arg(long)]
    pub update_env: bool,
    /// Apply this env profile ([env_profiles.NAME] and [app.env_profiles.NAME]).
    #[arg(long, value_name = "NAME")]
    pub env_profile: Option<String>,
    #[command(flatten)]
    pub reach: Reach,
}

/// `grpm apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub diff: DiffArgs,
    /// Print the plan without touching anything (exit 0: nothing to do, 3: changes to make).
    #[arg(long)]
    pub dry_run: bool,
    /// Return once the apps are spawned, without waiting for their readiness checks.
    #[arg(long)]
    pub no_wait: bool,
}

/// The agent's TCP listener. Without TLS and client authentication on a non-loopback address,
/// or without any client authentication on loopback, the agent refuses to start.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Also serve the API on TCP at IP[:PORT] (port 7470 when omitted; port 0 picks a free
    /// one, written to $GRPM_HOME/agent.addr).
    #[arg(long, value_name = "ADDR", value_parser = crate::agent::listen::parse_addr)]
    pub listen: Option<SocketAddr>,
    /// The agent's TLS certificate (PEM), e.g. agent.pem from `grpm tls init`.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The agent's TLS private key (PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM), e.g. ca.pem.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer TOKEN` with the token in this file (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// What the agent measures, and where it serves the measurements.
#[derive(Debug, Args)]
pub struct ObserveArgs {
    /// How often every app's process tree is sampled for CPU and memory (100ms to 1h).
    #[arg(long, value_name = "DURATION", default_value = "2s", env = "GRPM_SAMPLE_INTERVAL",
          value_parser = parse_sample_interval)]
    pub sample_interval: Duration,
    /// Serve Prometheus metrics on http(s)://ADDR/metrics. A loopback address may be plain
    /// HTTP; any other needs --tls-cert/--tls-key and --tls-client-ca or --metrics-token-file.
    #[arg(long, value_name = "ADDR", value_parser = crate::agent::listen::parse_addr)]
    pub metrics_listen: Option<SocketAddr>,
    /// Require `authorization: Bearer TOKEN` on /metrics, with the token in this file (mode
    /// 0600, at least 16 characters).
    #[arg(long, value_name = "FILE", requires = "metrics_listen")]
    pub metrics_token_file: Option<PathBuf>,
}

/// `--sample-interval`: a duration from 100 ms to an hour.
fn parse_sample_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
        return Err(format!(
            "{s:?}: the sampling interval must be from 100ms to 1h"
        ));
    }
    Ok(d)
}

impl Command {
    /// The agent options given after the command, for the commands that talk to agents.
    pub fn reach(&self) -> Option<&Reach> {
        Some(match self {
            Command::Start(a) => &a.reach,
            Command::Stop { reach, .. }
            | Command::Restart { reach, .. }
            | Command::Reload { reach, .. }
            | Command::Scale { reach, .. }
            | Command::Delete { reach, .. }
            | Command::Flush { reach, .. }
            | Command::List { reach }
            | Command::Describe { reach, .. }
            | Command::Notify { reach, .. } => reach,
            Command::Logs(a) => &a.reach,
            Command::Apply(a) => &a.diff.reach,
            Command::Diff(a) => &a.reach,
            Command::Events(a) => &a.reach,
            Command::Monit(a) => &a.reach,
            Command::Agent { .. }
            | Command::Tls { .. }
            | Command::Kill
            | Command::Import { .. }
            | Command::Startup { .. }
            | Command::Completions { .. }
            | Command::Man { .. } => return None,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A PM2 ecosystem file: .json, .yaml, .yml, or .js/.cjs/.mjs (evaluated with node).
    Pm2 {
        /// The ecosystem file (e.g. ecosystem.config.js).
        file: PathBuf,
    },
    /// A supervisord.conf: its [program:x] sections, and those of the files its [include]
    /// names.
    Supervisord {
        /// The configuration file (e.g. /etc/supervisor/supervisord.conf).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Replace the running agent (and its keeper) with the binary on disk now: the apps run
    /// on, untouched, with their output; event numbers go on. Returns once the new agent
    /// answers.
    Upgrade,
}

#[derive(Debug, Subcommand)]
pub enum StartupCommand {
    /// A systemd unit (Type=notify) that runs `grpm agent` for this GRPM_HOME: printed, or
    /// written with --install.
    Systemd {
        /// A unit for the user's own systemd (`systemctl --user`), not a system one.
        #[arg(long)]
        user: bool,
        /// Write it (/etc/systemd/system/grpm-USER.service, or with --user
        /// ~/.config/systemd/user/grpm.service) instead of printing it.
        #[arg(long)]
        install: bool,
    },
}

#[derive(Debug, Args)]
pub struct MonitArgs {
    /// Redraw at most this often (the table changes as events arrive and usage is sampled).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    pub refresh: Duration,
    /// For the benchmark: write the frames drawn and the seconds run to FILE on exit.
    #[arg(long, hide = true, value_name = "FILE")]
    pub frames_file: Option<PathBuf>,
    #[command(flatten)]
    pub reach: Reach,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make a CA, an agent certificate for the --host names/IPs, and a client certificate:
    /// ca.pem, agent.pem, agent-key.pem, client.pem, client-key.pem (keys 0600).
    Init {
        /// A name or IP address the agent's certificate is valid for (what clients put in
        /// hosts.toml); a comma list; may be repeated.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Directory to write them to (created 0700).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events about this app; may be repeated.
    #[arg(long = "app", value_name = "NAME")]
    pub apps: Vec<String>,
    /// Only these kinds, comma-separated (created, starting, online, exited, stopping, stopped,
    /// restarting, autorestart_scheduled, errored, deleted, notify).
    #[arg(long = "kind", value_delimiter = ',', value_parser = EventKind::parse)]
    pub kinds: Vec<EventKind>,
    /// Replay every kept event after this sequence number (resume without loss).
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Without --from: how many recent events to show first.
    #[arg(long, default_value_t = 20)]
    pub recent: u32,
    /// End after the replay instead of following.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub reach: Reach,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A name, an id or "all" (the default).
    #[arg(default_value = "all")]
    pub target: String,
    /// How many of the last lines of each stream to show first.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub lines: u32,
    /// Only stdout.
    #[arg(long, conflicts_with = "err")]
    pub out: bool,
    /// Only stderr.
    #[arg(long)]
    pub err: bool,
    /// Keep printing new output (across rotations and restarts) until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub reach: Reach,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// An app file (.toml); a script to run (app.py: the interpreter its #! line or its
    /// extension names); a command line in one argument ("python3 -m http.server 8099", split
    /// like a shell); or the name, id or "all" of existing apps to start again.
    #[arg(value_name = "FILE|SCRIPT|CMDLINE|TARGET")]
    pub what: Option<String>,
    /// With an app file: apply this env profile ([env_profiles.NAME] and
    /// [app.env_profiles.NAME]) to the apps it creates.
    #[arg(long, value_name = "NAME")]
    pub env_profile: Option<String>,
    /// Name of the new app (default: the script's file stem, `app` for app.py or `python3
    /// app.py`; else the command's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Working directory (default: the current one).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Declared environment variable, K=V; may be repeated. Declared variables always win.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Time between the stop signal and SIGKILL (e.g. 500ms, 3s).
    #[arg(long, value_parser = parse_duration)]
    pub kill_timeout: Option<Duration>,
    /// Signal that asks the app to stop (default SIGTERM).
    #[arg(long, value_parser = Signal::parse)]
    pub stop_signal: Option<Signal>,
    /// Do not restart the app when it exits.
    #[arg(long)]
    pub no_autorestart: bool,
    /// First autorestart delay; it doubles after each restart (default 100ms).
    #[arg(long, value_parser = parse_duration)]
    pub restart_delay: Option<Duration>,
    /// Cap on the autorestart delay (default 3s).
    #[arg(long, value_parser = parse_duration)]
    pub restart_delay_max: Option<Duration>,
    /// More restarts than this within --restart-window mark the app errored (default 15).
    #[arg(long)]
    pub max_restarts: Option<u32>,
    /// The window for --max-restarts (default 60s).
    #[arg(long, value_parser = parse_duration)]
    pub restart_window: Option<Duration>,
    /// Prefix each line of output with the time it was read (RFC 3339, UTC, milliseconds).
    #[arg(long)]
    pub log_time: bool,
    /// Rotate a log file before it grows past this size: bytes, or 512K, 10M, 1G (default 10M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub log_max_size: Option<u64>,
    /// Rotated log files kept per stream (default 5).
    #[arg(long, value_name = "N")]
    pub log_keep: Option<u32>,
    #[command(flatten)]
    pub checks: CheckArgs,
    /// Restart on this cron schedule, local time: "0 3 * * *" (or 6 fields, seconds first).
    #[arg(long, value_name = "CRON")]
    pub restart_schedule: Option<String>,
    /// Restart when files under PATH (relative to --cwd; `*` in its last part) change; may be
    /// repeated.
    #[arg(long = "watch", value_name = "PATH")]
    pub watch: Vec<String>,
    /// Ignore changes to paths matching GLOB (beside .git, node_modules, __pycache__, target,
    /// *.log); may be repeated.
    #[arg(long = "watch-ignore", value_name = "GLOB")]
    pub watch_ignore: Vec<String>,
    /// Run as this user (the agent must run as root).
    #[arg(long)]
    pub user: Option<String>,
    /// Run with this group instead of the user's own.
    #[arg(long)]
    pub group: Option<String>,
    /// File mode creation mask, octal (e.g. 027).
    #[arg(long, value_parser = parse_umask)]
    pub umask: Option<u32>,
    /// A resource limit, NAME=VALUE: nofile=65536, nproc=512, core=0, memlock=64M, stack=8M,
    /// as, data, fsize, cpu (seconds); "unlimited" allowed; may be repeated.
    #[arg(long = "limit", value_name = "NAME=VALUE", value_parser = parse_limit_pair)]
    pub limits: Vec<(String, u64)>,
    /// Restart when the app's tree stays above this much memory for 2 samples (512M, 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Run N instances of the app, each supervised on its own (GRPM_INSTANCE = 0..N-1).
    #[arg(long, value_name = "N")]
    pub instances: Option<u32>,
    /// A listening socket the agent holds and passes to every instance (systemd socket
    /// activation: fd 3 on, LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID): NAME=IP:PORT,
    /// NAME=[IPv6]:PORT or NAME=unix:/path; may be repeated.
    #[arg(long = "socket", value_name = "NAME=ADDR", value_parser = crate::model::SocketSpec::parse_flag)]
    pub sockets: Vec<crate::model::SocketSpec>,
    /// How long `reload` waits for a replacement without a readiness check (default 1s).
    #[arg(long, value_parser = parse_duration)]
    pub reload_grace: Option<Duration>,
    /// Return once the apps are spawned, without waiting for their readiness checks.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub reach: Reach,
    /// The command and its arguments, after `--` (after a script: the script's arguments).
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Readiness, liveness and dependencies of a new app (see `checks.rs`).
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Ready when a GET to this http:// URL answers 2xx or 3xx.
    #[arg(long, value_name = "URL", group = "ready")]
    pub ready_http: Option<String>,
    /// Ready when a TCP connect to HOST:PORT succeeds.
    #[arg(long, value_name = "HOST:PORT", group = "ready")]
    pub ready_tcp: Option<String>,
    /// Ready when this command (split like a shell; the app's env and cwd) exits 0.
    #[arg(long, value_name = "CMD", group = "ready")]
    pub ready_exec: Option<String>,
    /// Ready when a line of output matches this regular expression.
    #[arg(long, value_name = "REGEX", group = "ready")]
    pub ready_log: Option<String>,
    /// Ready when the app sends READY=1 on NOTIFY_SOCKET (sd_notify).
    #[arg(long, group = "ready")]
    pub ready_notify: bool,
    /// How long the app may take to become ready (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub start_timeout: Option<Duration>,
    /// Healthy while a GET to this http:// URL answers 2xx or 3xx (every 10s, 3 failures).
    #[arg(long, value_name = "URL", conflicts_with_all = ["alive_tcp", "alive_exec", "watchdog"])]
    pub alive_http: Option<String>,
    /// Healthy while a TCP connect to HOST:PORT succeeds.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["alive_exec", "watchdog"])]
    pub alive_tcp: Option<String>,
    /// Healthy while this command exits 0.
    #[arg(long, value_name = "CMD", conflicts_with = "watchdog")]
    pub alive_exec: Option<String>,
    /// Healthy while the app sends WATCHDOG=1 at least this often (sd_notify, WATCHDOG_USEC).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub watchdog: Option<Duration>,
    /// Start NAME first and wait for it (NAME:started, NAME:ready (default), NAME:completed);
    /// may be repeated.
    #[arg(long, value_name = "NAME[:CONDITION]")]
    pub depends_on: Vec<String>,
}

impl StartArgs {
    pub fn has_spec_flags(&self) -> bool {
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
            || self.checks.has_any()
            || self.restart_schedule.is_some()
            || !self.watch.is_empty()
            || !self.watch_ignore.is_empty()
            || self.user.is_some()
            || self.group.is_some()
            || self.umask.is_some()
            || !self.limits.is_empty()
            || self.max_memory.is_some()
            || self.log_time
            || self.log_max_size.is_some()
            || self.log_keep.is_some()
    }
}

/// `--env K=V` and `--data K=V`: a non-empty name, no NUL.
pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains('\0') && !v.contains('\0') => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!("{s:?} is not K=V with a non-empty name K")),
    }
}

/// `--events-kept-bytes`: a size from 64K to 1G.
fn parse_events_bytes(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if !(64 << 10..=1 << 30).contains(&n) {
        return Err(format!("{s}: between 64K and 1G"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every positional argument of every command says what it is.
    #[test]
    fn every_positional_argument_is_described() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_positionals() {
                if a.get_help().is_none() {
                    missing.push(format!("{path} <{}>", a.get_id()));
                }
            }
            for sub in c.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "grpm", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    /// The agent options show only where they mean something.
    #[test]
    fn agent_options_are_shown_only_by_commands_that_talk_to_agents() {
        let cli = Cli::command();
        let has = |path: &[&str], id: &str| {
            let mut c = &cli;
            for p in path {
                c = c.find_subcommand(p).unwrap();
            }
            c.get_arguments().any(|a| a.get_id() == id)
        };
        for path in [
            &["agent"][..],
            &["kill"],
            &["tls", "init"],
            &["startup", "systemd"],
            &["man"],
        ] {
            for id in ["serial", "connect_timeout", "timeout"] {
                assert!(!has(path, id), "{path:?} shows --{id}");
            }
        }
        assert!(!has(&["agent"], "hosts") && !has(&["kill"], "hosts"));
        for cmd in [
            "start", "stop", "restart", "delete", "logs", "flush", "list", "describe", "events",
            "monit", "notify",
        ] {
            for id in ["hosts", "serial", "connect_timeout", "timeout"] {
                assert!(has(&[cmd], id), "{cmd} lacks --{id}");
            }
        }
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env_pair("A="), Ok(("A".into(), "".into())));
        assert!(parse_env_pair("=x").is_err());
        assert!(parse_env_pair("novalue").is_err());
    }
}
