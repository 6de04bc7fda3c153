//! `grpm logs`: prints the chunks of a Logs stream as lines, each tagged with its app and
//! stream (and host, when given). Takes a connected client, so that a caller can run it for
//! several agents at once.

use std::collections::HashMap;

use super::{
    action::check_target,
    args::LogsArgs,
    failure::{out, Failure},
    fleet::{self, Place},
    follow::{permanent, Reconnect},
};
use crate::{
    client::{self, Client, LogsQuery, Timeouts},
    hosts::Host,
    model::{AppId, LogChunk, LogPosition, LogStream},
};

/// `grpm logs TARGET`: on a fleet, every host's lines as they come, each tagged with its
/// host; a followed host that drops is reconnected and resumed.
pub async fn run(place: &Place, args: LogsArgs, json: bool) -> Result<(), Failure> {
    check_target(&args.target)?;
    let query = LogsQuery {
        target: args.target,
        stream: match (args.out, args.err) {
            (true, _) => Some(LogStream::Out),
            (_, true) => Some(LogStream::Err),
            _ => None,
        },
        lines: Some(args.lines),
        follow: args.follow,
        from: Vec::new(),
    };
    let outcomes = match place {
        Place::Local(home, t) if query.follow => vec![fleet::Outcome {
            host: None,
            result: follow_local(home, t, query.clone(), json).await,
        }],
        Place::Fleet {
            hosts, timeouts, ..
        } if query.follow => {
            futures_util::future::join_all(hosts.iter().map(|h| async {
                fleet::Outcome {
                    host: Some(h.label.clone()),
                    result: follow_remote(h, timeouts, query.clone(), json).await,
                }
            }))
            .await
        }
        _ => {
            place
                .each_labelled(|mut c, host| {
                    let query = query.clone();
                    async move { logs(&mut c, query, json, host.as_deref()).await }
                })
                .await
        }
    };
    let (_, failed) = fleet::split(outcomes)?;
    failed.map_or(Ok(()), Err)
}

/// A line up to this long is printed whole; a longer one in pieces of this size, each but the
/// last marked (`[grpm: line continues]` in text, `"continues": true` in JSON), so the CLI
/// holds at most this much per stream.
const LINE_MAX: usize = 1024 * 1024;
/// What ends a piece of a line that continues, in text output.
const CONTINUES: &str = " [grpm: line continues]";

/// Streams `req` from `client` and prints every line until the stream ends (or Ctrl-C, or a
/// closed stdout). `host`, when set, is added to every line.
pub async fn logs(
    client: &mut Client,
    req: LogsQuery,
    json: bool,
    host: Option<&str>,
) -> Result<(), Failure> {
    let mut printer = Printer::new(json, host, req.follow);
    let target = req.target.clone();
    match stream_into(client, req, &mut printer).await {
        Ok(Ended::Interrupted) => Ok(()),
        Ok(Ended::Done) => {
            printer.finish()?;
            if printer.printed == 0 {
                no_output_yet(client, &target, host).await;
            }
            Ok(())
        }
        Err((f, _)) => Err(f),
    }
}

/// Says on stderr that the apps of `target` wrote nothing yet, and where their files are (a
/// user who just started an app otherwise sees nothing at all).
async fn no_output_yet(client: &mut Client, target: &str, host: Option<&str>) {
    let tag = host.map_or_else(String::new, |h| format!("{h}: "));
    match client.describe(target).await {
        Ok(apps) if !apps.is_empty() => {
            for d in apps {
                eprintln!(
                    "grpm: {tag}{} (id {}) has no output yet; its files: {} and {}",
                    d.info.name,
                    d.info.id,
                    d.stdout_path.display(),
                    d.stderr_path.display()
                );
            }
        }
        _ => eprintln!("grpm: {tag}no output yet"),
    }
}

/// `logs --follow` on a remote host: when the connection drops (the agent restarted, the
/// network blinked), reconnects with backoff and resumes every stream at the offset after the
/// last byte printed, so no line is lost or printed twice (bytes rotated away meanwhile are
/// reported as skipped). Ends on Ctrl-C, a closed stdout, or a refusal that retrying cannot
/// cure (bad request, unknown app, credentials).
pub async fn follow_remote(
    host: &Host,
    t: &Timeouts,
    req: LogsQuery,
    json: bool,
) -> Result<(), Failure> {
    let mut printer = Printer::new(json, Some(&host.label), true);
    let mut reconnect = Reconnect::new();
    loop {
        let mut req = req.clone();
        req.from = printer.resume_points();
        let why = match client::connect_remote(host, t).await {
            Err(e) => Failure::from(e),
            Ok(mut c) => match stream_into(&mut c, req, &mut printer).await {
                Ok(Ended::Interrupted) => return Ok(()),
                Ok(Ended::Done) => Failure::Failed("the agent ended the stream".into()),
                Err((f, false)) => return Err(f),
                Err((f, true)) => f,
            },
        };
        // A stream that delivered something worked for a while: a new outage.
        if std::mem::take(&mut printer.received) {
            reconnect.connected();
        }
        if let Some(text) = reconnect.dropped(&why) {
            eprintln!("grpm: {}: {text}", host.label);
        }
        reconnect.wait().await;
    }
}

/// `logs --follow` on the local agent: as [`follow_remote`], for an agent that goes away
/// without ending the stream (a crash, an upgrade: its keeper starts the next one). An agent
/// stopped by `grpm kill` ends the stream, and the command.
pub async fn follow_local(
    home: &crate::home::Home,
    t: &Timeouts,
    req: LogsQuery,
    json: bool,
) -> Result<(), Failure> {
    let mut printer = Printer::new(json, None, true);
    let mut reconnect = Reconnect::new();
    let mut first = true;
    loop {
        let mut req = req.clone();
        req.from = printer.resume_points();
        let why = match client::connect_local_with(home, first, t.request).await {
            Err(e) if first => return Err(e.into()),
            Err(e) => Failure::from(e),
            Ok(mut c) => match stream_into(&mut c, req, &mut printer).await {
                Ok(Ended::Interrupted) => return Ok(()),
                Ok(Ended::Done) => return printer.finish(),
                Err((f, false)) => return Err(f),
                Err((f, true)) => f,
            },
        };
        first = false;
        if !super::local::may_come_back(home) {
            return Err(why);
        }
        if std::mem::take(&mut printer.received) {
            reconnect.connected();
        }
        if let Some(text) = reconnect.dropped(&why) {
            eprintln!("grpm: {text}");
        }
        reconnect.wait().await;
    }
}

enum Ended {
    /// The agent ended the stream (the tail without follow is complete).
    Done,
    /// Ctrl-C.
    Interrupted,
}

/// Streams `req` into `printer`. An error comes with whether retrying may help (a dropped
/// connection) or not (a refused request, a closed stdout).
async fn stream_into(
    client: &mut Client,
    req: LogsQuery,
    printer: &mut Printer<'_>,
) -> Result<Ended, (Failure, bool)> {
    let mut stream = match client.logs(&req).await {
        Ok(s) => s,
        Err(e) => {
            let retry = !e.code().is_some_and(permanent);
            return Err((e.into(), retry));
        }
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let next = tokio::select! {
            n = stream.next() => n.map_err(|e| (Failure::from(e), true))?,
            _ = &mut ctrl_c => return Ok(Ended::Interrupted),
        };
        let Some(chunk) = next else {
            return Ok(Ended::Done);
        };
        printer.received = true;
        printer.chunk(&chunk).map_err(|f| (f, false))?;
    }
}

/// The partial last line of each (app, stream), waiting for its end.
struct Carry {
    app: String,
    offset: u64,
    bytes: Vec<u8>,
}

struct Printer<'a> {
    json: bool,
    host: Option<&'a str>,
    /// Without follow, streams come one after the other: a new one means the previous ended.
    follow: bool,
    carry: HashMap<(AppId, u32, LogStream), Carry>,
    /// Where each (app, stream) was received up to: the resume points after a reconnection.
    positions: HashMap<(AppId, u32, LogStream), u64>,
    /// Something arrived since the last connection was made.
    received: bool,
    /// Lines (and notes of skipped bytes) printed.
    printed: u64,
    /// Stdout is a terminal: control characters are shown, not sent.
    terminal: bool,
}

/// Where to cut `bytes` at most `max` in without splitting a UTF-8 character (at `max` when
/// the bytes there are not UTF-8 anyway).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let max = max.min(bytes.len());
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i == bytes.len() || (bytes[i] & 0xc0) != 0x80)
        .filter(|&i| i > 0)
        .unwrap_or(max)
}

impl<'a> Printer<'a> {
    /// Where a reconnected stream resumes: after the last byte received of each stream.
    fn resume_points(&self) -> Vec<LogPosition> {
        self.positions
            .iter()
            .map(|(&(app_id, instance, stream), &offset)| LogPosition {
                app_id,
                instance,
                stream,
                offset,
            })
            .collect()
    }

    fn new(json: bool, host: Option<&'a str>, follow: bool) -> Printer<'a> {
        Printer {
            json,
            host,
            follow,
            carry: HashMap::new(),
            positions: HashMap::new(),
            received: false,
            printed: 0,
            terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }

    fn chunk(&mut self, c: &LogChunk) -> Result<(), Failure> {
        // An instance of an app of several comes tagged by the agent: `api:1`.
        let key = (c.app_id, c.instance, c.stream);
        self.positions.insert(key, c.offset + c.data.len() as u64);
        let stream = c.stream.word();
        if !self.follow && self.carry.keys().any(|k| *k != key) {
            let mine = self.carry.remove(&key);
            self.finish()?;
            if let Some(mine) = mine {
                self.carry.insert(key, mine);
            }
        }
        if c.skipped > 0 {
            if let Some(carry) = self.carry.remove(&key) {
                self.line(&carry.app, c.app_id, stream, carry.offset, &carry.bytes)?;
            }
            self.skipped(&c.app, c.app_id, stream, c.offset, c.skipped)?;
        }
        let mut data = &c.data[..];
        let mut at = c.offset;
        while let Some(i) = memchr::memchr(b'\n', data) {
            match self.carry.remove(&key) {
                Some(mut carry) => {
                    carry.bytes.extend_from_slice(&data[..i]);
                    self.line(&c.app, c.app_id, stream, carry.offset, &carry.bytes)?;
                }
                None => self.line(&c.app, c.app_id, stream, at, &data[..i])?,
            }
            at += i as u64 + 1;
            data = &data[i + 1..];
        }
        if !data.is_empty() {
            let mut carry = self.carry.remove(&key).unwrap_or_else(|| Carry {
                app: c.app.clone(),
                offset: at,
                bytes: Vec::new(),
            });
            carry.bytes.extend_from_slice(data);
            while carry.bytes.len() >= LINE_MAX {
                // A piece ends on a character boundary, so text output never splits one.
                let cut = utf8_cut(&carry.bytes, LINE_MAX);
                let piece: Vec<u8> = carry.bytes.drain(..cut).collect();
                self.piece(&carry.app, c.app_id, stream, carry.offset, &piece, true)?;
                carry.offset += cut as u64;
            }
            if !carry.bytes.is_empty() {
                self.carry.insert(key, carry);
            }
        }
        Ok(())
    }

    /// Prints what is left (a last line without its newline).
    fn finish(&mut self) -> Result<(), Failure> {
        let mut left: Vec<_> = self.carry.drain().collect();
        left.sort_by_key(|(k, _)| *k);
        for ((id, _, s), carry) in left {
            self.line(&carry.app, id, s.word(), carry.offset, &carry.bytes)?;
        }
        Ok(())
    }

    fn line(
        &mut self,
        app: &str,
        id: u64,
        stream: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        self.piece(app, id, stream, offset, bytes, false)
    }

    /// A line, or a piece of one that `continues`. On a terminal, control characters are
    /// shown as escapes (an app's output cannot drive the operator's terminal); redirected,
    /// the app's text goes out as it is; JSON escapes them anyway.
    fn piece(
        &mut self,
        app: &str,
        id: u64,
        stream: &str,
        offset: u64,
        bytes: &[u8],
        continues: bool,
    ) -> Result<(), Failure> {
        let text = String::from_utf8_lossy(bytes);
        self.printed += 1;
        if self.json {
            let mut v = serde_json::json!({
                "app": app, "id": id, "stream": stream, "offset": offset, "line": text,
            });
            if continues {
                v["continues"] = true.into();
            }
            self.tag(&mut v);
            out(super::render::json(&v))
        } else {
            let text = if self.terminal {
                super::render::visible(&text)
            } else {
                text
            };
            let mark = if continues { CONTINUES } else { "" };
            match self.host {
                Some(h) => out(format_args!("{h}: {app} {stream} | {text}{mark}")),
                None => out(format_args!("{app} {stream} | {text}{mark}")),
            }
        }
    }

    fn skipped(
        &mut self,
        app: &str,
        id: u64,
        stream: &str,
        offset: u64,
        n: u64,
    ) -> Result<(), Failure> {
        self.printed += 1;
        if self.json {
            let mut v = serde_json::json!({
                "app": app, "id": id, "stream": stream, "offset": offset, "skipped": n,
            });
            self.tag(&mut v);
            out(super::render::json(&v))
        } else {
            let text = format!("[grpm: {n} bytes skipped: no longer on disk (rotated or flushed)]");
            match self.host {
                Some(h) => out(format_args!("{h}: {app} {stream} | {text}")),
                None => out(format_args!("{app} {stream} | {text}")),
            }
        }
    }

    fn tag(&self, v: &mut serde_json::Value) {
        if let (Some(h), Some(obj)) = (self.host, v.as_object_mut()) {
            obj.insert("host".into(), h.into());
        }
    }
}
