//! The `grpm` command line, one file per job: `args` (clap), `failure` (exit codes and
//! messages), `start` and `appfile` (new apps from flags and files), `checks` (their readiness,
//! liveness and dependencies), `action` (stop, restart,
//! delete, flush, list, describe), `events`, `follow` (a fleet's merged events), `logs`,
//! `local` (the agent itself, kill, tls init), `fleet` (one local agent or many remote ones),
//! `monit` (the live view), `boot` (startup unit, completions, man page), `import` (PM2 and
//! supervisord files as grpm app files), `apply` (apply and diff), `render` (tables and JSON),
//! `script` (what `start WHAT` means: app file, script, command line, target), `caller_env`
//! (the environment new apps capture), `habits` (answers to PM2 commands grpm has no use for)
//! and `reader` (a follow ends when its reader leaves). It talks to agents only through
//! [`crate::client`], in model types.

mod action;
pub mod appfile;
mod apply;
mod args;
mod boot;
mod caller_env;
mod checks;
mod checks_view;
mod events;
mod failure;
mod fleet;
mod follow;
mod habits;
mod import;
mod local;
mod logs;
mod monit;
mod reader;
mod render;
mod script;
mod start;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
pub use failure::Failure;

use action::Action;
use args::{AgentCommand, Command, ImportCommand, StartupCommand, TlsCommand};
use failure::fail;
use fleet::Place;

use crate::{
    client::{BaseEnv, Timeouts},
    home::Home,
};

/// Entry point of the binary: parses, runs, prints, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_error(e),
    };
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(Failure::Usage(e)),
    };
    if let Command::Agent {
        events_kept,
        events_kept_bytes,
        listen,
        observe,
        no_keeper,
        action: None,
    } = cli.command
    {
        if !cli.reach.hosts.is_empty() {
            return fail(Failure::Usage(
                "the agent runs here; --host is for commands sent to remote agents".into(),
            ));
        }
        let kept = (events_kept, events_kept_bytes);
        return match local::agent(&home, kept, listen, observe, !no_keeper) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => fail(f),
        };
    }
    if let Command::Tls {
        command: TlsCommand::Init { hosts, out, force },
    } = &cli.command
    {
        // Before `tls`, --host was global once: its names still count.
        let names: Vec<String> = cli.reach.hosts.iter().chain(hosts).cloned().collect();
        return match local::tls_init(&names, out, *force, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => fail(f),
        };
    }
    let generated = match &cli.command {
        Command::Startup { .. } if !cli.reach.hosts.is_empty() => Some(Err(Failure::Usage(
            "startup writes a unit for this machine's agent; run it on each host".into(),
        ))),
        Command::Startup { system: None } => Some(Err(Failure::Usage(habits::STARTUP.into()))),
        Command::Startup {
            system: Some(StartupCommand::Systemd { user, install }),
        } => Some(boot::startup_systemd(&home, *user, *install)),
        Command::Completions { shell } => Some(boot::completions(*shell)),
        Command::Man { out } => Some(boot::man(out.as_deref())),
        Command::Import { .. } if !cli.reach.hosts.is_empty() => Some(Err(Failure::Usage(
            "import reads a file here and prints an app file; it talks to no agent (start the \
             result with --host)"
                .into(),
        ))),
        Command::Import { .. } if cli.json => Some(Err(Failure::Usage(
            "import prints a TOML app file; --json does not apply".into(),
        ))),
        Command::Import { source } => Some(match source {
            ImportCommand::Pm2 { file } => import::run(import::Source::Pm2, file),
            ImportCommand::Supervisord { file } => import::run(import::Source::Supervisord, file),
        }),
        _ => None,
    };
    if let Some(result) = generated {
        return match result {
            Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
            Err(f) => fail(f),
        };
    }
    // One thread for the local agent; on a fleet, TLS handshakes and decoding for many hosts
    // are spread over the cores.
    let reach = std::mem::take(&mut cli.reach).merge(cli.command.reach());
    let mut builder = if reach.hosts.is_empty() {
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
    match runtime.block_on(run(cli, reach, &home)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

/// A command line clap refused: a PM2 command grpm has no use for gets its one-line answer
/// (exit 2) instead of a "similar subcommand" tip; anything else clap's own message.
fn parse_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::InvalidSubcommand {
        if let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidSubcommand) {
            if let Some(answer) = habits::answer(word) {
                return fail(Failure::Usage(format!(
                    "there is no `{word}` command: {answer}"
                )));
            }
        }
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

async fn run(cli: Cli, reach: args::Reach, home: &Home) -> Result<(), Failure> {
    let json = cli.json;
    let timeouts = Timeouts {
        connect: reach.connect_timeout(),
        request: Some(reach.timeout()),
    };
    let place = Place::new(home, &reach.hosts, reach.serial, timeouts)?;
    // Every local command but kill starts an agent when none answers: its home first.
    if !place.is_remote() && !matches!(cli.command, Command::Kill) {
        local::ensure_home(home)?;
    }
    match cli.command {
        Command::Agent {
            action: Some(AgentCommand::Upgrade),
            ..
        } => {
            if place.is_remote() {
                return Err(Failure::Usage(
                    "upgrade replaces the local agent; on a remote host, run it there".into(),
                ));
            }
            local::upgrade(home, json).await
        }
        Command::Agent { .. }
        | Command::Tls { .. }
        | Command::Startup { .. }
        | Command::Completions { .. }
        | Command::Import { .. }
        | Command::Man { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Monit(args) => monit::run(&place, args).await,
        Command::Kill => {
            if place.is_remote() {
                return Err(Failure::Usage(
                    "kill stops the local agent; on a remote host, stop its agent there (its \
                     service manager, or SIGTERM)"
                        .into(),
                ));
            }
            local::kill(home, json).await
        }
        Command::Events(args) if args.no_follow => events::events(&place, args, json).await,
        // A stream that follows ends as soon as its reader goes away, even while quiet.
        Command::Events(args) => reader::until_gone(events::events(&place, args, json)).await,
        Command::Notify {
            target,
            action,
            message,
            data,
            ..
        } => {
            events::notify(
                &place,
                target,
                action,
                message,
                data.into_iter().collect(),
                json,
            )
            .await
        }
        Command::Start(args) => start::start(&place, *args, json).await,
        Command::Apply(args) => apply::apply(&place, args, json).await,
        Command::Diff(args) => apply::diff(&place, args, json).await,
        Command::Stop { target, .. } => action::act(&place, target, Action::Stop, json).await,
        Command::Restart {
            target,
            update_env,
            no_wait,
            ..
        } => {
            action::check_target(&target)?;
            let env = match (update_env, place.is_remote()) {
                (false, _) => BaseEnv::Keep,
                (true, true) => {
                    eprintln!(
                        "grpm: note: --update-env on a remote host takes the remote agent's own \
                         environment, never this shell's"
                    );
                    BaseEnv::Agent
                }
                (true, false) => BaseEnv::This(caller_env::caller_env()),
            };
            action::act(&place, target, Action::Restart { env, no_wait }, json).await
        }
        Command::Delete {
            target, purge_logs, ..
        } => action::act(&place, target, Action::Delete { purge_logs }, json).await,
        Command::Flush { target, .. } => action::act(&place, target, Action::Flush, json).await,
        Command::Logs(args) if args.follow => {
            reader::until_gone(logs::run(&place, args, json)).await
        }
        Command::Reload {
            target, parallel, ..
        } => action::act(&place, target, Action::Reload { parallel }, json).await,
        Command::Scale {
            target, instances, ..
        } => action::act(&place, target, Action::Scale { instances }, json).await,
        Command::Logs(args) => logs::run(&place, args, json).await,
        Command::List { .. } => action::list(&place, json).await,
        Command::Describe { target, .. } => action::describe(&place, target, json).await,
    }
}
