//! The `grpm` command line, one file per job: `args` (clap), `failure` (exit codes and
//! messages), `start` and `appfile` (new apps from flags and files), `checks` (their readiness,
//! liveness and dependencies), `action` (stop, restart,
//! delete, flush, list, describe), `events`, `follow` (a fleet's merged events), `logs`,
//! `local` (the agent itself, kill, tls init), `fleet` (one local agent or many remote ones),
//! `monit` (the live view), `boot` (startup unit, completions, man page) and `render` (tables
//! and JSON). It talks to agents only through [`crate::client`], in model types.

mod action;
pub mod appfile;
mod args;
mod boot;
mod checks;
mod checks_view;
mod events;
mod failure;
mod fleet;
mod follow;
mod local;
mod logs;
mod monit;
mod render;
mod start;

use std::process::ExitCode;

use clap::Parser;

pub use args::Cli;
pub use failure::Failure;

use action::Action;
use args::{Command, StartupCommand, TlsCommand};
use failure::fail;
use fleet::Place;

use crate::{
    client::{BaseEnv, Timeouts},
    home::Home,
};

/// Entry point of the binary: parses, runs, prints, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match Home::from_env() {
        Ok(h) => h,
        Err(e) => return fail(Failure::Usage(e)),
    };
    if let Command::Agent {
        events_kept,
        events_kept_bytes,
        listen,
        observe,
    } = cli.command
    {
        if !cli.hosts.is_empty() {
            return fail(Failure::Usage(
                "the agent runs here; --host is for commands sent to remote agents".into(),
            ));
        }
        return match local::agent(&home, (events_kept, events_kept_bytes), listen, observe) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => fail(f),
        };
    }
    if let Command::Tls {
        command: TlsCommand::Init { out, force },
    } = &cli.command
    {
        return match local::tls_init(&cli.hosts, out, *force, cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => fail(f),
        };
    }
    let generated = match &cli.command {
        Command::Startup { .. } if !cli.hosts.is_empty() => Some(Err(Failure::Usage(
            "startup writes a unit for this machine's agent; run it on each host".into(),
        ))),
        Command::Startup {
            system: StartupCommand::Systemd { user, install },
        } => Some(boot::startup_systemd(&home, *user, *install)),
        Command::Completions { shell } => Some(boot::completions(*shell)),
        Command::Man { out } => Some(boot::man(out.as_deref())),
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

async fn run(cli: Cli, home: &Home) -> Result<(), Failure> {
    let json = cli.json;
    let timeouts = Timeouts {
        connect: cli.connect_timeout,
        request: Some(cli.timeout),
    };
    let place = Place::new(home, &cli.hosts, cli.serial, timeouts)?;
    match cli.command {
        Command::Agent { .. }
        | Command::Tls { .. }
        | Command::Startup { .. }
        | Command::Completions { .. }
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
        Command::Events(args) => events::events(&place, args, json).await,
        Command::Notify {
            target,
            action,
            message,
            data,
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
        Command::Stop { target } => action::act(&place, target, Action::Stop, json).await,
        Command::Restart {
            target,
            update_env,
            no_wait,
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
                (true, false) => BaseEnv::This(start::caller_env()),
            };
            action::act(&place, target, Action::Restart { env, no_wait }, json).await
        }
        Command::Delete { target, purge_logs } => {
            action::act(&place, target, Action::Delete { purge_logs }, json).await
        }
        Command::Flush { target } => action::act(&place, target, Action::Flush, json).await,
        Command::Reload { target, parallel } => {
            action::act(&place, target, Action::Reload { parallel }, json).await
        }
        Command::Scale { target, instances } => {
            action::act(&place, target, Action::Scale { instances }, json).await
        }
        Command::Logs(args) => logs::run(&place, args, json).await,
        Command::List => action::list(&place, json).await,
        Command::Describe { target } => action::describe(&place, target, json).await,
    }
}
