//! How a command fails: bad usage (exit 2), a failure (exit 1), a failed call to an agent
//! (carrying the client's typed error: its gRPC code decides the exit code), a closed stdout
//! (quiet success), or failures already said per host. Also `out`, which writes a line to
//! stdout and turns a closed pipe into [`Failure::Closed`].

use std::process::ExitCode;

use crate::client::{self, Code};

/// The exit code of `grpm diff FILE` and `grpm apply FILE --dry-run` when applying would
/// change something (0: nothing to do; 1 and 2 keep their meanings: failed, bad usage).
pub const EXIT_CHANGES: u8 = 3;

/// A failed command.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage: the message, exit 2.
    Usage(String),
    /// A failure here: the message, exit 1.
    Failed(String),
    /// A call to an agent, or connecting to one, failed. An invalid argument is bad usage
    /// (exit 2); anything else exits 1.
    Agent(client::Error),
    /// Our stdout was closed by its reader (`grpm events | head -1`): stop quietly.
    Closed,
    /// Already reported on stderr (per host): exit with this code.
    Reported(u8),
}

impl Failure {
    /// The process exit code this failure ends the command with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Closed => 0,
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
            Failure::Agent(e) if e.code() == Some(Code::InvalidArgument) => 2,
            Failure::Agent(_) => 1,
            Failure::Reported(c) => *c,
        }
    }

    /// What to say on stderr (after "grpm: "); empty when there is nothing to say.
    pub fn message(&self) -> String {
        match self {
            Failure::Usage(m) | Failure::Failed(m) => m.clone(),
            Failure::Agent(e) if e.code() == Some(Code::Unavailable) => {
                format!("agent unavailable: {e}")
            }
            Failure::Agent(e)
                if matches!(e.code(), Some(Code::DeadlineExceeded | Code::Cancelled)) =>
            {
                format!(
                    "no answer in time (--timeout): {e}; the request may still complete (see the \
                 agent's log, $GRPM_HOME/agent.log for a local agent)"
                )
            }
            Failure::Agent(e) => e.to_string(),
            Failure::Closed | Failure::Reported(_) => String::new(),
        }
    }

    /// The gRPC code of a failed call, if this is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Failure::Agent(e) => e.code(),
            _ => None,
        }
    }
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Failure {
        Failure::Agent(e)
    }
}

impl From<client::ConnectError> for Failure {
    fn from(e: client::ConnectError) -> Failure {
        Failure::Agent(e.into())
    }
}

/// Says `f` on stderr and turns it into the exit code.
pub fn fail(f: Failure) -> ExitCode {
    let msg = f.message();
    if !msg.is_empty() {
        eprintln!("grpm: {msg}");
    }
    ExitCode::from(f.exit_code())
}

/// Writes a line to stdout. A closed pipe ends the command quietly instead of panicking as
/// `println!` would.
pub fn out(line: impl std::fmt::Display) -> Result<(), Failure> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
        Err(e) => Err(Failure::Failed(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_exit_codes_and_words() {
        let refused = Failure::from(client::Error::from(tonic::Status::invalid_argument("bad")));
        assert_eq!((refused.exit_code(), refused.message()), (2, "bad".into()));
        let down = Failure::from(client::Error::from(tonic::Status::unavailable("gone")));
        assert_eq!(down.exit_code(), 1);
        assert_eq!(down.message(), "agent unavailable: gone");
        assert_eq!(Failure::Closed.exit_code(), 0);
    }
}
