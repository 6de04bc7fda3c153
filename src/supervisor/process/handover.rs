//! What the keeper hands a new agent, sorted by app and instance slot (one owner each): each
//! main process's output pipes (with its exit status when the keeper reaped it), and the
//! slot's notify socket;
//! and the board where exit statuses the keeper reaps later arrive, for adopted apps (which
//! are the keeper's children, not ours).

use std::{
    collections::{BTreeMap, HashMap},
    os::fd::OwnedFd,
    sync::Mutex,
    time::Duration,
};

use tokio::sync::Notify;

use crate::keeper::{
    link::{Exited, Handover},
    wire::{Ended, Kind},
};
use crate::model::{AppId, Exit};

/// One instance of an app, as the keeper held it.
#[derive(Debug, Default)]
pub struct Instance {
    pub pid: u32,
    pub start: u64,
    pub out: Option<OwnedFd>,
    pub err: Option<OwnedFd>,
    /// How its main process ended, when the keeper reaped it.
    pub exit: Option<Exit>,
}

/// Everything handed over for one instance slot of an app.
#[derive(Debug, Default)]
pub struct Handed {
    /// Oldest first (by start time).
    pub instances: Vec<Instance>,
    pub notify: Option<OwnedFd>,
    /// The app's held sockets, by their index in the spec (slot `sockets::APP_SLOT` only).
    pub listen: Vec<(usize, OwnedFd)>,
}

impl Handed {
    /// The instance whose main process is `pid` started at `start`.
    pub fn take(&mut self, pid: u32, start: u64) -> Option<Instance> {
        let i = self
            .instances
            .iter()
            .position(|x| x.pid == pid && x.start == start)?;
        Some(self.instances.remove(i))
    }
}

pub fn exit_of(e: Ended) -> Exit {
    Exit {
        code: e.code,
        signal: e.signal,
        at_unix_ms: e.at_ms,
    }
}

/// Sorts a hand-over by app and instance slot. Kinds this agent does not use are closed (the
/// keeper keeps its own copies until the app is gone).
pub fn by_app(h: Handover) -> BTreeMap<(AppId, u32), Handed> {
    let mut out: BTreeMap<(AppId, u32), Handed> = BTreeMap::new();
    for (tag, fd) in h.held {
        let app = out.entry((tag.app, tag.slot)).or_default();
        if tag.kind == Kind::Notify {
            app.notify = Some(fd);
            continue;
        }
        if let Some(i) = crate::supervisor::sockets::keeper_index(&tag.kind) {
            app.listen.push((i, fd));
            continue;
        }
        let i = match app
            .instances
            .iter()
            .position(|x| x.pid == tag.pid && x.start == tag.start)
        {
            Some(i) => i,
            None => {
                app.instances.push(Instance {
                    pid: tag.pid,
                    start: tag.start,
                    ..Instance::default()
                });
                app.instances.len() - 1
            }
        };
        match tag.kind {
            Kind::Out => app.instances[i].out = Some(fd),
            Kind::Err => app.instances[i].err = Some(fd),
            _ => {}
        }
    }
    for e in h.exits {
        if let Some(x) = out
            .iter_mut()
            .filter(|((app, _), _)| *app == e.app)
            .find_map(|(_, a)| a.instances.iter_mut().find(|x| x.pid == e.pid))
        {
            x.exit = Some(exit_of(e.ended));
        }
    }
    for a in out.values_mut() {
        a.instances.sort_by_key(|x| x.start);
    }
    out
}

/// Exit statuses the keeper passes on while this agent runs, by pid, until taken.
#[derive(Default)]
pub struct ExitBoard {
    exits: Mutex<HashMap<u32, Exit>>,
    arrived: Notify,
}

impl ExitBoard {
    pub fn put(&self, e: Exited) {
        self.exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(e.pid, exit_of(e.ended));
        self.arrived.notify_waiters();
    }

    /// The exit status of `pid`, waiting for it at most `limit`.
    pub async fn wait(&self, pid: u32, limit: Duration) -> Option<Exit> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.arrived.notified();
            if let Some(e) = self
                .exits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pid)
            {
                return Some(e);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}
