//! Where a command runs: the local agent, or a fleet of remote agents (`--host`). On a fleet,
//! one operation runs on every host in parallel (or `--serial N` at a time, stopping at the
//! first failure), each with its own connect timeout and deadline, so one dead host never
//! hangs the command or hides the others' results.

use std::future::Future;

use futures_util::future::join_all;

use super::failure::Failure;
use crate::{
    client::{self, Client, Timeouts},
    home::Home,
    hosts::{Host, Hosts},
};

pub enum Place {
    /// The local agent, spawned when none answers; each request bounded by `--timeout`.
    Local(Home, Timeouts),
    Fleet {
        hosts: Vec<Host>,
        /// Hosts acted on at a time; `None` for all at once.
        serial: Option<usize>,
        timeouts: Timeouts,
    },
}

/// One host's result; `host` is `None` for the local agent.
pub struct Outcome<T> {
    pub host: Option<String>,
    pub result: Result<T, Failure>,
}

impl Place {
    /// The local agent when `specs` is empty, else the hosts they name (see [`Hosts::resolve`]).
    pub fn new(
        home: &Home,
        specs: &[String],
        serial: Option<u32>,
        timeouts: Timeouts,
    ) -> Result<Place, Failure> {
        if specs.is_empty() {
            if serial.is_some() {
                return Err(Failure::Usage(
                    "--serial rolls an action through hosts: add --host".into(),
                ));
            }
            return Ok(Place::Local(home.clone(), timeouts));
        }
        let config = Hosts::load(&home.hosts_file()).map_err(Failure::Usage)?;
        let mut hosts: Vec<Host> = Vec::new();
        for spec in specs {
            for h in config.resolve(spec).map_err(Failure::Usage)? {
                if !hosts.iter().any(|o| o.label == h.label) {
                    hosts.push(h);
                }
            }
        }
        Ok(Place::Fleet {
            hosts,
            serial: serial.map(|n| n as usize),
            timeouts,
        })
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Place::Fleet { .. })
    }

    /// Runs `op` against each agent with a fresh connection; results come back in host order.
    pub async fn each<T, F, Fut>(&self, op: F) -> Vec<Outcome<T>>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.each_labelled(|c, _| op(c)).await
    }

    /// As [`Place::each`], telling `op` which host it runs for (`None`: the local agent), for
    /// output that is printed as it comes.
    pub async fn each_labelled<T, F, Fut>(&self, op: F) -> Vec<Outcome<T>>
    where
        F: Fn(Client, Option<String>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        match self {
            Place::Local(home, t) => {
                let result = match client::connect_local_with(home, true, t.request).await {
                    Ok(c) => op(c, None).await,
                    Err(e) => Err(e.into()),
                };
                vec![Outcome { host: None, result }]
            }
            Place::Fleet {
                hosts,
                serial,
                timeouts,
            } => {
                let one = |h| on_host(h, timeouts, &op);
                let Some(n) = serial else {
                    return join_all(hosts.iter().map(one)).await;
                };
                let mut out = Vec::with_capacity(hosts.len());
                let mut chunks = hosts.chunks((*n).max(1));
                for chunk in chunks.by_ref() {
                    let done = join_all(chunk.iter().map(one)).await;
                    let failed = done.iter().any(|o| o.result.is_err());
                    out.extend(done);
                    if failed {
                        break;
                    }
                }
                for h in chunks.flatten() {
                    out.push(Outcome {
                        host: Some(h.label.clone()),
                        result: Err(Failure::Failed(
                            "not attempted: an earlier host failed (--serial stops there)".into(),
                        )),
                    });
                }
                out
            }
        }
    }
}

async fn on_host<T, F, Fut>(h: &Host, t: &Timeouts, op: &F) -> Outcome<T>
where
    F: Fn(Client, Option<String>) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let result = match client::connect_remote(h, t).await {
        Ok(c) => op(c, Some(h.label.clone())).await,
        Err(e) => Err(e.into()),
    };
    let result = result.map_err(|f| match f {
        Failure::Agent(e) if e.dropped() => Failure::Failed(hint(h, &Failure::Agent(e).message())),
        f => f,
    });
    Outcome {
        host: Some(h.label.clone()),
        result,
    }
}

/// Adds what a dropped connection most likely means, from how the host is set up.
fn hint(h: &Host, msg: &str) -> String {
    if h.ca.is_none() {
        format!(
            "{msg} (the agent dropped the connection: if it uses TLS, give this host a ca \
             in hosts.toml)"
        )
    } else {
        format!(
            "{msg} (the agent dropped the TLS connection: it may not accept {})",
            if h.cert.is_some() {
                "this client certificate"
            } else {
                "a client without a certificate"
            }
        )
    }
}

/// Separates successes from failures. The local agent's failure is returned as is (the
/// command fails with its message). Remote failures are printed at once, each naming its host,
/// and the command then fails with the worst exit code once the successes are printed.
#[allow(clippy::type_complexity)]
pub fn split<T>(
    outcomes: Vec<Outcome<T>>,
) -> Result<(Vec<(Option<String>, T)>, Option<Failure>), Failure> {
    let mut oks = Vec::with_capacity(outcomes.len());
    let mut worst = Worst::default();
    for o in outcomes {
        match (o.host, o.result) {
            (host, Ok(v)) => oks.push((host, v)),
            (None, Err(f)) => return Err(f),
            (Some(h), Err(f)) => worst.report(&format!("{h}: "), f)?,
        }
    }
    Ok((oks, worst.failure()))
}

/// The outcome of several failures said one by one: the exit code of the worst. Any plain
/// failure (1) makes the command a failure, even beside bad usage (2).
#[derive(Default)]
pub struct Worst(u8);

impl Worst {
    /// Says `f` on stderr after `prefix` ("box1: ") and counts it. A closed stdout is not
    /// counted but returned, to end the command quietly.
    pub fn report(&mut self, prefix: &str, f: Failure) -> Result<(), Failure> {
        if let Failure::Closed = f {
            return Err(Failure::Closed);
        }
        let (msg, code) = (f.message(), f.exit_code());
        if !msg.is_empty() {
            eprintln!("grpm: {prefix}{msg}");
        }
        self.0 = match (self.0, code) {
            (0, c) => c,
            (1, _) | (_, 1) => 1,
            (a, _) => a,
        };
        Ok(())
    }

    /// `None` while nothing failed; else the failure (already said) to end the command with.
    pub fn failure(&self) -> Option<Failure> {
        (self.0 != 0).then_some(Failure::Reported(self.0))
    }
}

/// "box1: " on a fleet, nothing locally.
pub fn prefix(host: &Option<String>) -> String {
    host.as_ref().map_or_else(String::new, |h| format!("{h}: "))
}
