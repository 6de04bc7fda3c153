//! Connecting to an agent: the local one over `$GRPM_HOME/agent.sock`, spawning it in the
//! background when none answers (as PM2 does), or a remote one over TCP (`remote`). Used by
//! the CLI, the tests and the benches.

mod remote;

pub use remote::{chain, connect_remote, Timeouts};

use std::{
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, time::Instant};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint, Uri},
    Request, Status,
};
use tower::service_fn;

use crate::{home::Home, rpc::pb::process_manager_client::ProcessManagerClient};

pub type Client = ProcessManagerClient<InterceptedService<Channel, Credentials>>;

/// What every request carries: a bearer token for agents that want one.
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// `authorization: Bearer TOKEN`; fails on characters a header cannot carry.
    pub fn bearer(token: &str) -> Result<Credentials, String> {
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token has characters a header cannot carry".to_string())?;
        Ok(Credentials {
            bearer: Some(value),
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(b) = &self.bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    }
}

/// Largest message a client decodes (a `list` of many apps) and encodes.
const MAX_DECODE: usize = 64 * 1024 * 1024;
const MAX_ENCODE: usize = 8 * 1024 * 1024;

fn client(channel: Channel, credentials: Credentials) -> Client {
    ProcessManagerClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(MAX_ENCODE)
}

/// How long a spawned agent may take to answer.
const SPAWN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no agent answers on {0}")]
    NoAgent(PathBuf),
    #[error("cannot start an agent: {0}")]
    Spawn(String),
    #[error("{0}")]
    Home(String),
    /// A remote agent could not be reached or its credentials could not be read.
    #[error("{0}")]
    Remote(String),
}

/// Connects to the agent listening on the unix socket `path`.
pub async fn connect_unix(path: &Path) -> Result<Client, tonic::transport::Error> {
    let path = path.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(3))
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(client(channel, Credentials::default()))
}

/// Connects to the local agent of `home`; when none answers and `spawn` is set, starts one in
/// the background and waits until it answers. When two callers race, the agents' lock lets one
/// win, and both callers end up talking to it.
pub async fn connect_local(home: &Home, spawn: bool) -> Result<Client, ConnectError> {
    if let Ok(c) = connect_unix(&home.socket()).await {
        return Ok(c);
    }
    if !spawn {
        return Err(ConnectError::NoAgent(home.socket()));
    }
    home.ensure()
        .map_err(|e| ConnectError::Home(format!("cannot use {}: {e}", home.root.display())))?;
    let mut child = spawn_agent(home).map_err(|e| ConnectError::Spawn(e.to_string()))?;
    let deadline = Instant::now() + SPAWN_DEADLINE;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(c) = connect_unix(&home.socket()).await {
            // Reap our child once it exits (it only does when another agent won the race).
            std::thread::spawn(move || child.wait());
            return Ok(c);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The agent we spawned gave up; maybe another one won the race and is still
            // binding: keep trying until the deadline, then report what the log says.
            if Instant::now() >= deadline {
                return Err(ConnectError::Spawn(format!(
                    "the agent exited ({status}); see {}",
                    home.log_file().display()
                )));
            }
        }
        if Instant::now() >= deadline {
            return Err(ConnectError::Spawn(format!(
                "no answer within {}s; see {}",
                SPAWN_DEADLINE.as_secs(),
                home.log_file().display()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Starts `grpm agent` detached (own session, stdio to agent.log), with this process's
/// environment minus any grpm app identity (the agent is not part of any app's tree).
fn spawn_agent(home: &Home) -> io::Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.log_file())?;
    let mut cmd = Command::new(exe);
    cmd.arg("agent")
        .env("GRPM_HOME", &home.root)
        .env_remove("GRPM_APP_ID")
        .env_remove("GRPM_AGENT_ID")
        .env_remove("GRPM_APP_NAME")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    cmd.spawn()
}
