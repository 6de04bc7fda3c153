//! Assembling a `Logs` response: one stream of chunks per (app, output stream), merged. Without
//! follow they come one after the other; with it, whichever has output first, and (for
//! `all`) apps created later join as they appear.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use futures_util::StreamExt;
use tokio_stream::{Stream, StreamMap};
use tonic::Status;

use super::{convert, error::Error, pb};
use crate::{
    model::{AppId, LogStream, Target},
    supervisor::{AppLogs, AppView, ReadFrom, Subscription, Supervisor},
};

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

/// The chunks of one output stream of one app. The log is watched when this is called, before
/// any of it is read.
pub fn part(
    view: &AppView,
    app_logs: &AppLogs,
    s: LogStream,
    from: ReadFrom,
    follow: bool,
) -> ChunkStream {
    // An instance of an app of several is tagged `api:1` (see `LogChunk.app`).
    let (name, id, instance) = (view.label(), view.id, view.instance);
    let pieces = app_logs.pieces(s, from, follow);
    Box::pin(pieces.map(move |r| {
        r.map(|p| convert::chunk_to_pb(&name, id, instance, s, p))
            .map_err(|cause| {
                Error::LogRead {
                    app: name.clone(),
                    cause,
                }
                .into()
            })
    }))
}

/// Without follow: each part to its end, in order.
pub fn in_order(parts: Vec<ChunkStream>) -> ChunkStream {
    Box::pin(futures_util::stream::iter(parts).flatten())
}

/// Following: chunks from whichever part has some. With `created` (a subscription to
/// `created` events, taken before `parts` were made), apps that appear later join, from their
/// first byte. Ends when every part has ended and no app can join any more.
pub fn following(
    parts: Vec<((AppId, u32, LogStream), ChunkStream)>,
    created: Option<(Subscription, Arc<Supervisor>, Vec<LogStream>)>,
) -> ChunkStream {
    let mut map = StreamMap::new();
    let mut seen = HashSet::new();
    for (key, p) in parts {
        seen.insert((key.0, key.1));
        map.insert(key, p);
    }
    let state = (map, created, seen);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut map, mut created, mut seen)| async move {
            loop {
                if map.is_empty() && created.is_none() {
                    return None;
                }
                tokio::select! {
                    item = map.next(), if !map.is_empty() => {
                        if let Some((_, chunk)) = item {
                            return Some((chunk, (map, created, seen)));
                        }
                    }
                    event = next_event(&mut created) => {
                        let Some((sub, sup, streams)) = created.take() else { continue };
                        if event.is_none() {
                            // The agent is stopping: no app will join.
                            continue;
                        }
                        // On a `created` event (or a gap, which may hide one), look for apps
                        // not followed yet.
                        for (view, app_logs) in sup.logs(&Target::All).unwrap_or_default() {
                            if seen.insert((view.id, view.instance)) {
                                for &s in &streams {
                                    let p = part(&view, &app_logs, s, ReadFrom::Offset(0), true);
                                    map.insert((view.id, view.instance, s), p);
                                }
                            }
                        }
                        created = Some((sub, sup, streams));
                    }
                }
            }
        },
    ))
}

async fn next_event(
    created: &mut Option<(Subscription, Arc<Supervisor>, Vec<LogStream>)>,
) -> Option<()> {
    match created {
        Some((sub, _, _)) => sub.next().await.map(|_| ()),
        None => std::future::pending().await,
    }
}
