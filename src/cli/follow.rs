//! `grpm --host ... events`: the event streams of several agents merged into one, each event
//! tagged with its host. When a host's stream drops (the agent restarted, the network blinked),
//! it reconnects with backoff and resumes after the last sequence number it printed, so nothing
//! is lost or printed twice (events the agent no longer keeps arrive as one `gap` event).

use std::time::Duration;

use tokio::sync::mpsc;

use super::{events::print_event, failure::Failure, fleet::Worst};
use crate::{
    client::{self, Code, Subscription, Timeouts},
    hosts::Host,
    model::Event,
};

/// First and longest pause between reconnection attempts.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Reconnecting a followed stream (events here, logs in `logs.rs`): the backoff, and whether
/// the current outage was already said.
pub(super) struct Reconnect {
    pause: Duration,
    lost: bool,
}

impl Reconnect {
    pub fn new() -> Reconnect {
        Reconnect {
            pause: FIRST_PAUSE,
            lost: false,
        }
    }

    /// The stream works (again): the next drop starts over at the first pause. True if an
    /// outage had been said, so that its end can be said too.
    pub fn connected(&mut self) -> bool {
        self.pause = FIRST_PAUSE;
        std::mem::take(&mut self.lost)
    }

    /// The stream dropped because of `why`: what to say, once per outage.
    pub fn dropped(&mut self, why: &Failure) -> Option<String> {
        if std::mem::replace(&mut self.lost, true) {
            return None;
        }
        let text = match why {
            Failure::Closed | Failure::Reported(_) => "stream lost".to_string(),
            f => f.message(),
        };
        Some(format!("{text}; reconnecting (resuming where it left off)"))
    }

    /// Waits before the next attempt; each wait doubles, up to the longest pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }
}

/// Refusals that retrying cannot cure: a bad request, an unknown app, credentials.
pub(super) fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
    )
}

enum Msg {
    Event(String, Box<Event>),
    /// Said on stderr: lost, reconnected...
    Note(String, String),
    /// The host's replay ended (`--no-follow`).
    Done,
    /// The host cannot be followed (refused credentials, bad request, unreachable with
    /// `--no-follow`).
    Fatal(String, Failure),
}

/// Follows every host until Ctrl-C (or, with `--no-follow`, until every replay has ended).
pub async fn merged(
    hosts: &[Host],
    timeouts: Timeouts,
    req: Subscription,
    json: bool,
) -> Result<(), Failure> {
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut tasks = Vec::with_capacity(hosts.len());
    for h in hosts {
        tasks.push(tokio::spawn(follow(
            h.clone(),
            timeouts,
            req.clone(),
            tx.clone(),
        )));
    }
    drop(tx);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ended = 0;
    let mut worst = Worst::default();
    let result = loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = &mut ctrl_c => break Ok(()),
        };
        let Some(msg) = msg else { break Ok(()) };
        match msg {
            Msg::Event(host, e) => {
                if let Err(f) = print_event(&e, Some(&host), json) {
                    break Err(f);
                }
            }
            Msg::Note(host, note) => eprintln!("grpm: {host}: {note}"),
            Msg::Done => ended += 1,
            Msg::Fatal(host, f) => {
                ended += 1;
                if let Err(f) = worst.report(&format!("{host}: "), f) {
                    break Err(f);
                }
            }
        }
        if ended == hosts.len() {
            break Ok(());
        }
    };
    for t in tasks {
        t.abort();
    }
    result?;
    worst.failure().map_or(Ok(()), Err)
}

/// One host's stream, reconnected until the receiver goes away.
async fn follow(host: Host, t: Timeouts, mut req: Subscription, tx: mpsc::Sender<Msg>) {
    let label = host.label.clone();
    let note = |s: String| Msg::Note(label.clone(), s);
    let mut reconnect = Reconnect::new();
    let mut last: Option<u64> = None;
    loop {
        if let Some(seq) = last {
            req.from_seq = Some(seq);
        }
        let why = match client::connect_remote(&host, &t).await {
            Err(e) => Failure::from(e),
            Ok(mut c) => match c.subscribe(&req).await {
                Err(e) if e.code().is_some_and(permanent) => {
                    let _ = tx.send(Msg::Fatal(label.clone(), e.into())).await;
                    return;
                }
                Err(e) => Failure::from(e),
                Ok(mut stream) => {
                    if reconnect.connected() {
                        let after = last.map_or_else(String::new, |s| format!(" after seq {s}"));
                        if tx
                            .send(note(format!("reconnected; resuming{after}")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    loop {
                        match stream.next().await {
                            Ok(Some(e)) => {
                                last = Some(e.seq);
                                if tx
                                    .send(Msg::Event(label.clone(), Box::new(e)))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Ok(None) if req.no_follow => {
                                let _ = tx.send(Msg::Done).await;
                                return;
                            }
                            Ok(None) => break Failure::Failed("the agent ended the stream".into()),
                            Err(e) => break Failure::from(e),
                        }
                    }
                }
            },
        };
        if req.no_follow {
            let _ = tx.send(Msg::Fatal(label.clone(), why)).await;
            return;
        }
        if let Some(text) = reconnect.dropped(&why) {
            if tx.send(note(text)).await.is_err() {
                return;
            }
        }
        reconnect.wait().await;
    }
}
