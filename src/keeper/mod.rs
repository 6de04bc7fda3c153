//! The keeper: a tiny process (this binary, in a mode of its own) that owns the agent, so the
//! agent can die or be upgraded while apps run on and none of their output is lost. It is a
//! child subreaper: when the agent dies, the apps become its children. It holds duplicates of
//! the descriptors that must outlive an agent (the read ends of every app's stdout and stderr
//! pipes, each app's notify socket, and any other kind an agent registers), reaps apps that
//! end while no agent watches them and keeps their exit statuses, and starts the next agent
//! at once (with a short backoff when agents keep dying), handing it everything. On an
//! upgrade it re-execs the binary on disk, handing itself its descriptors across `exec`.
//!
//! No runtime, no gRPC: `process` is a `poll` loop over a signalfd and a socket pair with the
//! agent; `wire` is what they say to each other; `link` is the agent's side.
//!
//! Entering the mode: `grpm agent` (without `--no-keeper`) re-execs itself with
//! [`MODE_ENV`] set, and `main` calls [`main_if_keeper`] before anything else (no clap, no
//! runtime), so the keeper's memory is what its loop needs. It starts the agent as
//! `grpm agent ... --no-keeper` with its end of the socket pair in [`FD_ENV`].

pub mod link;
mod process;
pub mod wire;

use std::{os::unix::process::CommandExt, process::ExitCode};

/// Set (to `1`) in the environment of a process that is to run as the keeper.
pub const MODE_ENV: &str = "GRPM_KEEPER_MODE";
/// The agent's end of its socket pair with the keeper (a descriptor number).
pub const FD_ENV: &str = "GRPM_KEEPER_FD";
/// What a keeper hands itself across `exec` on an upgrade: its lock, held descriptors and
/// exit statuses.
const STATE_ENV: &str = "GRPM_KEEPER_STATE";

/// Runs the keeper when this process is one (see [`MODE_ENV`]); `None` otherwise. Called
/// first thing in `main`.
pub fn main_if_keeper() -> Option<ExitCode> {
    std::env::var_os(MODE_ENV)?;
    Some(process::run())
}

/// Becomes the keeper: re-executes this binary with the same arguments in keeper mode. Returns
/// only on failure.
pub fn become_keeper() -> std::io::Error {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into());
    std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env(MODE_ENV, "1")
        .exec()
}

/// The keeper's pid file in the home (written while it runs).
pub fn pid_file(home: &crate::home::Home) -> std::path::PathBuf {
    home.root.join("keeper.pid")
}
