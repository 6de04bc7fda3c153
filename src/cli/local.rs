//! The commands about this machine's agent rather than apps: `grpm agent` (run it in the
//! foreground), `grpm kill` (stop it and wait until its process is gone), and `grpm tls init`
//! (the certificates a remote agent and its clients use).

use std::{path::Path, time::Duration};

use super::{
    args::{ListenArgs, ObserveArgs},
    failure::{out, Failure},
    render,
};
use crate::{
    client::{self, ConnectError},
    home::Home,
};

/// `grpm agent`: runs until a signal or a Shutdown call.
/// `kept`: how many events the agent keeps, and at most how many bytes of them.
pub fn agent(
    home: &Home,
    kept: (u32, u64),
    listen: ListenArgs,
    observe: ObserveArgs,
    keeper: bool,
) -> Result<(), Failure> {
    if keeper {
        // Refused before anything is touched (the keeper makes the home): what the agent
        // would refuse at once, the keeper is not started for.
        let options = options(kept, listen, observe, None, false);
        options.listen.load().map_err(Failure::Failed)?;
        options.metrics.load().map_err(Failure::Failed)?;
        // The keeper runs the agent (this same command, with --no-keeper) as its child.
        let e = crate::keeper::become_keeper();
        return Err(Failure::Failed(format!("cannot start the keeper: {e}")));
    }
    crate::agent::limit_arenas();
    let log = init_tracing(home);
    let options = options(kept, listen, observe, log, true);
    crate::agent::main(home, &options).map_err(Failure::Failed)
}

/// The agent's settings from its flags.
fn options(
    kept: (u32, u64),
    listen: ListenArgs,
    observe: ObserveArgs,
    log: Option<crate::agent::log::Sink>,
    for_agent: bool,
) -> crate::agent::Options {
    let (events_kept, events_kept_bytes) = kept;
    // The agent's certificate also secures the metrics endpoint; without --listen, the TLS
    // flags are for the metrics alone.
    let metrics = crate::agent::metrics::MetricsSpec {
        addr: observe.metrics_listen,
        tls_cert: listen.tls_cert.clone(),
        tls_key: listen.tls_key.clone(),
        tls_client_ca: listen.tls_client_ca.clone(),
        token_file: observe.metrics_token_file,
    };
    let for_api = listen.listen.is_some() || metrics.addr.is_none();
    crate::agent::Options {
        events_kept: events_kept as usize,
        events_kept_bytes: usize::try_from(events_kept_bytes).unwrap_or(usize::MAX),
        listen: crate::agent::listen::ListenSpec {
            addr: listen.listen,
            tls_cert: listen.tls_cert.filter(|_| for_api),
            tls_key: listen.tls_key.filter(|_| for_api),
            tls_client_ca: listen.tls_client_ca.filter(|_| for_api),
            token_file: listen.token_file,
        },
        log,
        metrics,
        sample_interval: observe.sample_interval,
        // Taken (and removed from the environment) only by the agent itself.
        notify: for_agent
            .then(crate::agent::sdnotify::take_from_env)
            .flatten(),
    }
}

/// Creates the local agent's home when it is missing (its last component only), and says so;
/// an existing one is left to the agent's own checks.
pub fn ensure_home(home: &Home) -> Result<(), Failure> {
    if crate::home::exists(&home.root) {
        return Ok(());
    }
    let created = home.ensure().map_err(|e| {
        Failure::Failed(format!("cannot use GRPM_HOME {}: {e}", home.root.display()))
    })?;
    if created {
        eprintln!("grpm: created GRPM_HOME {}", home.root.display());
    }
    Ok(())
}

/// The agent logs through a writer that never blocks or panics (see `agent::log`); when even
/// that cannot start, straight to stderr.
fn init_tracing(home: &Home) -> Option<crate::agent::log::Sink> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRPM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .log_internal_errors(false);
    match crate::agent::log::start_on_stderr(home.log_file()) {
        Ok(sink) => {
            let _ = builder.with_writer(sink.clone()).try_init();
            Some(sink)
        }
        Err(_) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            None
        }
    }
}

/// How long `grpm kill` waits for the agent's process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(15);

/// `grpm kill`: stops every app and the local agent, and returns once the agent's process is
/// gone, so that `grpm kill && grpm ...` is safe.
pub async fn kill(home: &Home, json: bool) -> Result<(), Failure> {
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
    let keeper = keeper_pid(home);
    let pid = c.shutdown().await?;
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    // The keeper exits once its agent has stopped.
    while client::process_alive(pid) || keeper.is_some_and(client::process_alive) {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::Failed(format!(
                "agent pid {pid} is still alive after {}s",
                KILL_WAIT.as_secs()
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

/// The running keeper of `home`, if any (its pid file names a live `grpm-keeper`).
pub(super) fn keeper_pid(home: &Home) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(crate::keeper::pid_file(home))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "grpm-keeper" && client::process_alive(pid)).then_some(pid)
}

/// Whether a local agent may still come back: it is up, or a keeper will start the next.
pub(super) fn may_come_back(home: &Home) -> bool {
    home.socket().exists() || keeper_pid(home).is_some()
}

/// How long `grpm agent upgrade` waits for the new agent to answer.
const UPGRADE_WAIT: Duration = Duration::from_secs(15);

/// `grpm agent upgrade`: the agent hands over to its keeper, which re-execs the binary on
/// disk and starts the new agent; returns once the new agent answers.
pub async fn upgrade(home: &Home, json: bool) -> Result<(), Failure> {
    let mut c = match client::connect_local(home, false).await {
        Ok(c) => c,
        Err(ConnectError::NoAgent(_)) => {
            return Err(Failure::Failed(format!(
                "no agent is running for {}",
                home.root.display()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    let (old, keeper) = c.upgrade().await?;
    drop(c);
    let deadline = tokio::time::Instant::now() + UPGRADE_WAIT;
    let new = loop {
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::Failed(format!(
                "no new agent answered within {}s; see {}",
                UPGRADE_WAIT.as_secs(),
                home.log_file().display()
            )));
        }
        let pid = std::fs::read_to_string(home.pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| *p != old);
        if let Some(pid) = pid {
            if let Ok(mut c) = client::connect_local(home, false).await {
                if c.list().await.is_ok() {
                    break pid;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    if json {
        out(format_args!(
            "{}",
            render::json(
                &serde_json::json!({ "old_agent_pid": old, "agent_pid": new, "keeper_pid": keeper })
            )
        ))?;
    } else {
        out(format_args!(
            "agent {old} replaced by agent {new} (keeper {keeper})"
        ))?;
    }
    Ok(())
}

/// `grpm tls init`: the names come from --host (the agent's names and addresses).
pub fn tls_init(names: &[String], dir: &Path, force: bool, json: bool) -> Result<(), Failure> {
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
