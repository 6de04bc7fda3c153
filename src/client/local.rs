//! The local agent: connecting over `$GRPM_HOME/agent.sock`, spawning it in the background when
//! none answers (as PM2 does), and watching its pid after a shutdown.

use std::{
    io,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, time::Instant};
use tonic::transport::{Endpoint, Uri};
use tower::service_fn;

use super::{Client, ConnectError, Credentials};
use crate::home::Home;

/// How long a spawned agent may take to answer.
const SPAWN_DEADLINE: Duration = Duration::from_secs(10);

/// Connects to the agent listening on the unix socket `path`, with no deadline on requests.
pub async fn connect_unix(path: &Path) -> Result<Client, tonic::transport::Error> {
    connect_unix_with(path, None).await
}

/// Connects to the agent listening on the unix socket `path`; each unary call fails with
/// `DEADLINE_EXCEEDED` after `deadline` (streams: until their first answer), so a stuck agent
/// never hangs the caller.
pub async fn connect_unix_with(
    path: &Path,
    deadline: Option<Duration>,
) -> Result<Client, tonic::transport::Error> {
    let path = path.to_path_buf();
    let mut endpoint =
        Endpoint::from_static("http://localhost").connect_timeout(Duration::from_secs(3));
    if let Some(d) = deadline {
        endpoint = endpoint.timeout(d);
    }
    let channel = endpoint
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?;
    Ok(Client::new(channel, Credentials::default()))
}

/// Connects to the local agent of `home`; when none answers and `spawn` is set, starts one in
/// the background and waits until it answers. When two callers race, the agents' lock lets one
/// win, and both callers end up talking to it.
pub async fn connect_local(home: &Home, spawn: bool) -> Result<Client, ConnectError> {
    connect_local_with(home, spawn, None).await
}

/// As [`connect_local`], each request bounded by `deadline` (see [`connect_unix_with`]).
pub async fn connect_local_with(
    home: &Home,
    spawn: bool,
    deadline: Option<Duration>,
) -> Result<Client, ConnectError> {
    let connect_unix = |p: std::path::PathBuf| async move { connect_unix_with(&p, deadline).await };
    if let Ok(c) = connect_unix(home.socket()).await {
        return Ok(c);
    }
    if !spawn {
        return Err(ConnectError::NoAgent(home.socket()));
    }
    home.ensure()
        .map(drop)
        .map_err(|e| ConnectError::Home(format!("cannot use {}: {e}", home.root.display())))?;
    let mut child = spawn_agent(home).map_err(|e| ConnectError::Spawn(e.to_string()))?;
    let deadline = Instant::now() + SPAWN_DEADLINE;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(c) = connect_unix(home.socket()).await {
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
        .env_remove("GRPM_INSTANCE")
        .env_remove("GRPM_SLOT")
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

/// Whether process `pid` still lives: it exists and is not a zombie (a zombie has exited and
/// only waits to be reaped). Read from `/proc/PID/stat`, whose state follows the last ')'.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| state_of(&text))
        .is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
}

/// The state letter of a `/proc/PID/stat` text (the command name may hold ')' and spaces).
fn state_of(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_state_after_the_command_name() {
        assert_eq!(state_of("42 (a) b) c) Z 1 42 42"), Some('Z'));
        assert_eq!(state_of("42 (sleep) S 1"), Some('S'));
        assert_eq!(state_of("garbage"), None);
        assert!(process_alive(std::process::id()));
    }
}
