//! The two server streams in model terms: events ([`EventStream`], asked for with a
//! [`Subscription`]) and apps' output ([`ChunkStream`], asked for with a [`LogsQuery`]).

use tonic::Streaming;

use super::Error;
use crate::{
    model::{Event, EventKind, LogChunk, LogPosition, LogStream},
    rpc::{convert, pb},
};

/// What a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Replay every kept event after this sequence number (resume without loss).
    pub from_seq: Option<u64>,
    /// Without `from_seq`: how many recent events to replay first.
    pub recent: u32,
    /// End after the replay instead of following new events.
    pub no_follow: bool,
    /// Only events about these apps (by name); empty: all.
    pub apps: Vec<String>,
    /// Only these kinds; empty: all (gaps always come).
    pub kinds: Vec<EventKind>,
}

impl Subscription {
    pub(super) fn to_pb(&self) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            from_seq: self.from_seq,
            recent: self.recent,
            no_follow: self.no_follow,
            apps: self.apps.clone(),
            kinds: self
                .kinds
                .iter()
                .map(|k| convert::kind_to_pb(*k) as i32)
                .collect(),
        }
    }
}

/// What output to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsQuery {
    /// A name, an id or "all".
    pub target: String,
    /// One stream, or both (`None`).
    pub stream: Option<LogStream>,
    /// Last lines of each stream to send first; `None`: the agent's default (20).
    pub lines: Option<u32>,
    /// Keep the stream open for new output.
    pub follow: bool,
    /// Resume points: a listed stream starts at its offset instead of with its last lines.
    pub from: Vec<LogPosition>,
}

impl LogsQuery {
    pub(super) fn to_pb(&self) -> pb::LogsRequest {
        pb::LogsRequest {
            target: self.target.clone(),
            stream: convert::log_streams_to_pb(self.stream) as i32,
            lines: self.lines,
            follow: self.follow,
            from: self.from.iter().map(convert::position_to_pb).collect(),
        }
    }
}

/// Events as they come; `Ok(None)` when the agent ends the stream.
pub struct EventStream {
    inner: Streaming<pb::Event>,
}

impl EventStream {
    pub(super) fn new(inner: Streaming<pb::Event>) -> EventStream {
        EventStream { inner }
    }

    pub async fn next(&mut self) -> Result<Option<Event>, Error> {
        match self.inner.message().await? {
            Some(e) => convert::event_from_pb(e)
                .map(Some)
                .map_err(Error::Malformed),
            None => Ok(None),
        }
    }
}

/// Output chunks as they come; `Ok(None)` when the agent ends the stream.
pub struct ChunkStream {
    inner: Streaming<pb::LogChunk>,
}

impl ChunkStream {
    pub(super) fn new(inner: Streaming<pb::LogChunk>) -> ChunkStream {
        ChunkStream { inner }
    }

    pub async fn next(&mut self) -> Result<Option<LogChunk>, Error> {
        match self.inner.message().await? {
            Some(c) => convert::chunk_from_pb(c)
                .map(Some)
                .map_err(Error::Malformed),
            None => Ok(None),
        }
    }
}
