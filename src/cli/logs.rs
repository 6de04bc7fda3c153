//! `grpm logs`: prints the chunks of a Logs stream as lines, each tagged with its app and
//! stream (and host, when given). Takes a connected client, so that a caller can run it for
//! several agents at once.

use std::collections::HashMap;

use super::{out, Failure};
use crate::{client::Client, rpc::pb};

/// A line longer than this is printed in pieces.
const LINE_MAX: usize = 64 * 1024;

/// Streams `req` from `client` and prints every line until the stream ends (or Ctrl-C, or a
/// closed stdout). `host`, when set, is added to every line.
pub async fn logs(
    client: &mut Client,
    req: pb::LogsRequest,
    json: bool,
    host: Option<&str>,
) -> Result<(), Failure> {
    let follow = req.follow;
    let mut stream = client.logs(req).await?.into_inner();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut printer = Printer {
        json,
        host,
        follow,
        carry: HashMap::new(),
    };
    loop {
        let next = tokio::select! {
            n = stream.message() => n?,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(chunk) = next else {
            return printer.finish();
        };
        printer.chunk(&chunk)?;
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
    carry: HashMap<(u64, i32), Carry>,
}

impl Printer<'_> {
    fn chunk(&mut self, c: &pb::LogChunk) -> Result<(), Failure> {
        let key = (c.app_id, c.stream);
        let stream = stream_word(c.stream);
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
            let carry = self.carry.entry(key).or_insert_with(|| Carry {
                app: c.app.clone(),
                offset: at,
                bytes: Vec::new(),
            });
            carry.bytes.extend_from_slice(data);
            if carry.bytes.len() >= LINE_MAX {
                if let Some(carry) = self.carry.remove(&key) {
                    self.line(&carry.app, c.app_id, stream, carry.offset, &carry.bytes)?;
                }
            }
        }
        Ok(())
    }

    /// Prints what is left (a last line without its newline).
    fn finish(&mut self) -> Result<(), Failure> {
        let mut left: Vec<_> = self.carry.drain().collect();
        left.sort_by_key(|(k, _)| *k);
        for ((id, s), carry) in left {
            self.line(&carry.app, id, stream_word(s), carry.offset, &carry.bytes)?;
        }
        Ok(())
    }

    fn line(
        &self,
        app: &str,
        id: u64,
        stream: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), Failure> {
        let text = String::from_utf8_lossy(bytes);
        if self.json {
            let mut v = serde_json::json!({
                "app": app, "id": id, "stream": stream, "offset": offset, "line": text,
            });
            self.tag(&mut v);
            out(super::render::json(&v))
        } else {
            match self.host {
                Some(h) => out(format_args!("{h} {app} {stream} | {text}")),
                None => out(format_args!("{app} {stream} | {text}")),
            }
        }
    }

    fn skipped(
        &self,
        app: &str,
        id: u64,
        stream: &str,
        offset: u64,
        n: u64,
    ) -> Result<(), Failure> {
        if self.json {
            let mut v = serde_json::json!({
                "app": app, "id": id, "stream": stream, "offset": offset, "skipped": n,
            });
            self.tag(&mut v);
            out(super::render::json(&v))
        } else {
            let text = format!("[grpm: {n} bytes skipped: no longer on disk (rotated or flushed)]");
            match self.host {
                Some(h) => out(format_args!("{h} {app} {stream} | {text}")),
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

fn stream_word(s: i32) -> &'static str {
    match pb::LogStream::try_from(s) {
        Ok(pb::LogStream::Stdout) => "out",
        Ok(pb::LogStream::Stderr) => "err",
        _ => "?",
    }
}
