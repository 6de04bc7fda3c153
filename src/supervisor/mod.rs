//! The supervisor: the process table and its owners. One task per app applies that app's
//! commands in order (see `actor`); this module routes requests to them and fans out `all`.
//! It knows nothing of gRPC.

mod error;
mod events;
mod lifecycle;
mod logs;
mod process;
mod store;
mod view;

use std::{
    collections::BTreeMap,
    io,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use error::Error;
pub use events::{Filter, Replay, Subscription};
pub use logs::{AppLogs, Piece, ReadFrom};
pub use process::usage::{Samples, Usage};
pub use view::AppView;

use lifecycle::{Actor, Cmd, Init, Reply};
use process::{launch, reaper::Reaper, scan, tree};
use store::{AppRecord, Store};

use crate::model::{now_unix_ms, AppId, AppSpec, Cause, Desired, Env, Event, EventKind, Target};
use events::Hub;

/// What every app owner shares.
pub(crate) struct Ctx {
    spawner: launch::Spawner,
    scanner: Arc<scan::Scanner>,
    hub: Arc<Hub>,
    store: Arc<Store>,
    agent_id: Arc<str>,
    logs_dir: PathBuf,
    /// The threads that write every app's log files.
    log_pool: Arc<logs::WriterPool>,
}

#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<Cmd>,
    view: watch::Receiver<AppView>,
    logs: Arc<logs::AppLogs>,
}

#[derive(Default)]
struct Registry {
    apps: BTreeMap<AppId, Handle>,
    next_id: AppId,
    closed: bool,
}

pub struct Supervisor {
    ctx: Arc<Ctx>,
    registry: Mutex<Registry>,
    /// The last tree usage sample of every app (see `process::usage`).
    samples: Arc<Mutex<Arc<Samples>>>,
    /// Log bytes of deleted apps, so the agent's total never goes down.
    deleted_log_bytes: std::sync::atomic::AtomicU64,
    tasks: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The agent's own CPU time (seconds) and resident memory (bytes). Blocking: reads /proc.
pub fn agent_usage() -> (f64, u64) {
    match process::procfs::read_stat(std::process::id()) {
        Ok(st) => (
            st.cpu_ticks as f64 / process::procfs::ticks_per_second() as f64,
            st.rss_pages * process::procfs::page_size(),
        ),
        Err(_) => (0.0, 0),
    }
}

/// What the agent counts (see [`Supervisor::stats`]).
pub struct Stats {
    pub apps: Vec<AppStats>,
    /// Events published by this agent, by kind.
    pub events: Vec<(EventKind, u64)>,
    /// Live event subscribers.
    pub subscribers: usize,
    /// Bytes of output in every app's logs (deleted apps' included), over their lives.
    pub log_bytes: u64,
    /// Successful writes of state.json by this agent.
    pub state_writes: u64,
}

/// One app, for metrics.
pub struct AppStats {
    pub view: AppView,
    pub usage: Usage,
    /// Bytes of stdout and stderr in its logs over its life (offsets: never reset).
    pub log_bytes: [u64; 2],
}

fn log_bytes(logs: &logs::AppLogs) -> [u64; 2] {
    [
        logs.get(crate::model::LogStream::Out).end(),
        logs.get(crate::model::LogStream::Err).end(),
    ]
}

/// Where the supervisor keeps things, and how many events it keeps.
pub struct Config {
    pub state_path: PathBuf,
    pub logs_dir: PathBuf,
    /// Where `events.jsonl` lives; `None` keeps events in memory only.
    pub events_dir: Option<PathBuf>,
    pub events_kept: usize,
    /// How often every app's tree is sampled for CPU and memory.
    pub sample_interval: std::time::Duration,
}

/// Commands queued per app before senders wait.
const QUEUE: usize = 64;

impl Supervisor {
    /// Loads `state_path`, starts the reaper and the state writer, and brings back every app:
    /// adopted if its main process survived the previous agent, otherwise started afresh (after
    /// ending any leftovers) when it should run. Returns a warning when the state was corrupt.
    pub async fn open(config: Config) -> io::Result<(Arc<Supervisor>, Option<String>)> {
        let Config {
            state_path,
            logs_dir,
            events_dir,
            events_kept,
            sample_interval,
        } = config;
        let state_path = state_path.as_path();
        let path = state_path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || store::load(&path))
            .await
            .map_err(io::Error::other)??;
        let log = match events_dir {
            Some(dir) => Some(
                tokio::task::spawn_blocking(move || events::EventLog::open(&dir, events_kept))
                    .await
                    .map_err(io::Error::other)??,
            ),
            None => None,
        };
        let hub = Arc::new(Hub::new(events_kept, log));
        let tasks = CancellationToken::new();
        let reaper = Reaper::start(tasks.clone())?;
        let store = Store::new(state_path.to_path_buf(), &loaded.state);
        let writer = tokio::spawn(store.clone().run_writer(tasks.clone()));
        let agent_id: Arc<str> = Arc::from(loaded.state.agent_id.as_str());
        let ctx = Arc::new(Ctx {
            spawner: launch::Spawner::start(reaper, 2)?,
            scanner: Arc::default(),
            hub,
            store,
            agent_id: agent_id.clone(),
            logs_dir,
            log_pool: Arc::new(logs::WriterPool::start(2)?),
        });
        let id = agent_id.to_string();
        let mut survivors = tokio::task::spawn_blocking(move || tree::survivors(&id))
            .await
            .map_err(io::Error::other)?;
        let sup = Arc::new(Supervisor {
            ctx,
            registry: Mutex::new(Registry {
                next_id: loaded.state.next_id.max(1),
                ..Registry::default()
            }),
            samples: Arc::default(),
            deleted_log_bytes: Default::default(),
            tasks,
            writer: Mutex::new(Some(writer)),
        });
        for rec in loaded.state.apps {
            let init = Init::Recovered {
                recorded: rec.pid.zip(rec.pid_starttime),
                survivors: survivors.remove(&rec.id).unwrap_or_default(),
            };
            sup.spawn_owner(rec, init);
        }
        sup.start_sampling(sample_interval);
        // Processes of apps that no longer exist: end them.
        for (app_id, procs) in survivors {
            tracing::warn!(
                app_id,
                count = procs.len(),
                "ending processes of a deleted app"
            );
            let key = tree::TreeKey {
                agent_id: agent_id.to_string(),
                app_id,
                root: None,
            };
            let scanner = sup.ctx.scanner.clone();
            tokio::spawn(async move {
                let _ = tree::stop(
                    &scanner,
                    &key,
                    crate::model::Signal::TERM,
                    AppSpec::DEFAULT_KILL_TIMEOUT,
                )
                .await;
            });
        }
        Ok((sup, loaded.warning))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the owner task of `rec`; the caller registers the handle.
    fn start_owner(&self, rec: AppRecord, init: Init) -> Handle {
        let logs = Arc::new(logs::AppLogs::new(
            &self.ctx.logs_dir,
            rec.id,
            &rec.spec.name,
            rec.spec.logs,
        ));
        let (actor, view) = Actor::new(self.ctx.clone(), rec, logs.clone());
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(actor.run(rx, init));
        Handle { tx, view, logs }
    }

    fn spawn_owner(&self, rec: AppRecord, init: Init) {
        let id = rec.id;
        let handle = self.start_owner(rec, init);
        self.lock().apps.insert(id, handle);
    }

    /// Creates apps from specs, in order (ids follow it), each with `base_env` as its captured
    /// environment, and starts them. All or nothing up to the start: an invalid spec or a taken
    /// name creates none. A start failure leaves that app in place, errored, and is returned
    /// after the others have started.
    pub async fn create(
        &self,
        specs: Vec<AppSpec>,
        base_env: Env,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        crate::model::validate_env(&base_env).map_err(|problem| Error::InvalidEnv {
            what: "base environment",
            problem,
        })?;
        let mut names = std::collections::HashSet::new();
        for spec in &specs {
            spec.check()?;
            if !names.insert(spec.name.as_str()) {
                return Err(Error::GivenTwice(spec.name.clone()));
            }
        }
        let base_env = Arc::new(base_env);
        let handles = {
            let mut reg = self.lock();
            if reg.closed {
                return Err(Error::ShuttingDown);
            }
            if let Some((id, h)) = reg
                .apps
                .iter()
                .find(|(_, h)| names.contains(h.view.borrow().name()))
            {
                return Err(Error::AlreadyExists {
                    name: h.view.borrow().name().to_string(),
                    id: *id,
                });
            }
            let mut handles = Vec::with_capacity(specs.len());
            for spec in specs {
                let id = reg.next_id;
                reg.next_id += 1;
                let rec = AppRecord {
                    id,
                    spec,
                    base_env: base_env.clone(),
                    desired: Desired::Stopped,
                    created_at_unix_ms: now_unix_ms(),
                    restarts: 0,
                    pid: None,
                    pid_starttime: None,
                };
                // Registered under the lock, so a concurrent create of the same name sees it.
                self.ctx.hub.publish(Event::new(
                    EventKind::Created,
                    id,
                    &rec.spec.name,
                    cause.clone(),
                ));
                let handle = self.start_owner(rec, Init::New);
                reg.apps.insert(id, handle.clone());
                handles.push(handle);
            }
            self.ctx.store.set_next_id(reg.next_id);
            handles
        };
        Self::send_all(
            handles,
            |reply| Cmd::Start {
                cause: cause.clone(),
                reply,
            },
            "new app",
        )
        .await
    }

    /// Starts stopped or errored apps; online ones are left as they are.
    pub async fn start(&self, target: &Target, cause: Cause) -> Result<Vec<AppView>, Error> {
        self.each(target, |reply| Cmd::Start {
            cause: cause.clone(),
            reply,
        })
        .await
    }

    pub async fn stop(&self, target: &Target, cause: Cause) -> Result<Vec<AppView>, Error> {
        self.each(target, |reply| Cmd::Stop {
            cause: cause.clone(),
            reply,
        })
        .await
    }

    /// Stop + start. With `base_env`, each app's captured environment is replaced first.
    pub async fn restart(
        &self,
        target: &Target,
        base_env: Option<Env>,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        if let Some(env) = &base_env {
            crate::model::validate_env(env).map_err(|problem| Error::InvalidEnv {
                what: "environment",
                problem,
            })?;
        }
        self.each(target, |reply| Cmd::Restart {
            base_env: base_env.clone(),
            cause: cause.clone(),
            reply,
        })
        .await
    }

    /// Stops apps and forgets them; their log files stay unless `purge_logs`.
    pub async fn delete(
        &self,
        target: &Target,
        purge_logs: bool,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        let views = self
            .each(target, |reply| Cmd::Delete {
                purge_logs,
                cause: cause.clone(),
                reply,
            })
            .await;
        // Deleted owners have ended; forget them (also after a partial failure).
        let mut gone = 0;
        self.lock().apps.retain(|_, h| {
            let closed = h.tx.is_closed();
            if closed {
                gone += log_bytes(&h.logs).iter().sum::<u64>();
            }
            !closed
        });
        self.deleted_log_bytes
            .fetch_add(gone, std::sync::atomic::Ordering::Relaxed);
        views
    }

    /// Every app, by id.
    pub fn list(&self) -> Vec<AppView> {
        self.lock()
            .apps
            .values()
            .map(|h| h.view.borrow().clone())
            .collect()
    }

    /// The logs of the apps matching `target`, with the apps as they are now.
    pub fn logs(&self, target: &Target) -> Result<Vec<(AppView, Arc<logs::AppLogs>)>, Error> {
        Ok(self
            .handles(target)?
            .into_iter()
            .map(|h| (h.view.borrow().clone(), h.logs))
            .collect())
    }

    /// Empties the logs of the apps matching `target` (see `StreamLog::flush` in `logs`).
    pub async fn flush(&self, target: &Target) -> Result<Vec<AppView>, Error> {
        let mut views = Vec::new();
        for (view, logs) in self.logs(target)? {
            let flushed = tokio::task::spawn_blocking(move || logs.flush())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            if let Err(e) = flushed {
                return Err(Error::Logs {
                    app: view.name().to_string(),
                    cause: e.into(),
                });
            }
            views.push(view);
        }
        Ok(views)
    }

    /// Apps matching `target`, as they are now.
    pub fn describe(&self, target: &Target) -> Result<Vec<AppView>, Error> {
        Ok(self
            .handles(target)?
            .into_iter()
            .map(|h| h.view.borrow().clone())
            .collect())
    }

    /// Publishes a user notification about each app of `target` (PM2's `notifyByProcessId`);
    /// returns the events as published, with their sequence numbers.
    pub fn notify(
        &self,
        target: &Target,
        action: &str,
        message: &str,
        data: std::collections::BTreeMap<String, String>,
        cause: Cause,
    ) -> Result<Vec<Arc<Event>>, Error> {
        let views = self.describe(target)?;
        Ok(views
            .iter()
            .map(|v| {
                self.ctx.hub.publish(Hub::notify_event(
                    v.id,
                    v.name(),
                    action,
                    message,
                    data.clone(),
                    cause.clone(),
                ))
            })
            .collect())
    }

    /// Subscribes to events: replay as `from` says, then live ones when `follow`.
    pub fn subscribe(
        &self,
        from: Replay,
        filter: Filter,
        follow: bool,
    ) -> Result<(Vec<Arc<Event>>, Option<Subscription>), Error> {
        self.ctx
            .hub
            .subscribe(from, filter, follow)
            .map_err(|events::TooMany(max)| Error::TooManySubscribers(max))
    }

    /// The last sample of every app's tree usage (taken every `sample_interval`; an app started
    /// since has none yet).
    pub fn samples(&self) -> Arc<Samples> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the agent counts, for metrics. Blocking: a log never read yet is looked up on disk.
    pub fn stats(&self) -> Stats {
        let handles: Vec<Handle> = self.lock().apps.values().cloned().collect();
        let samples = self.samples();
        let apps: Vec<AppStats> = handles
            .iter()
            .map(|h| {
                let view = h.view.borrow().clone();
                let usage = if view.status.pid().is_some() {
                    samples.get(view.id)
                } else {
                    Usage {
                        cpu_seconds_total: samples.get(view.id).cpu_seconds_total,
                        ..Usage::default()
                    }
                };
                AppStats {
                    view,
                    usage,
                    log_bytes: log_bytes(&h.logs),
                }
            })
            .collect();
        let (events, subscribers) = self.ctx.hub.counts();
        let live: u64 = apps.iter().flat_map(|a| a.log_bytes).sum();
        Stats {
            log_bytes: live
                + self
                    .deleted_log_bytes
                    .load(std::sync::atomic::Ordering::Relaxed),
            apps,
            events,
            subscribers,
            state_writes: self.ctx.store.writes(),
        }
    }

    /// Starts the task that samples every running app's tree.
    fn start_sampling(self: &Arc<Self>, interval: std::time::Duration) {
        let me = Arc::downgrade(self);
        let apps = move || {
            let Some(sup) = me.upgrade() else {
                return (Vec::new(), Vec::new());
            };
            let reg = sup.lock();
            let mut running = Vec::new();
            let mut known = Vec::with_capacity(reg.apps.len());
            for (id, h) in &reg.apps {
                known.push(*id);
                if let Some(pid) = h.view.borrow().status.pid() {
                    running.push(tree::TreeKey {
                        agent_id: sup.ctx.agent_id.to_string(),
                        app_id: *id,
                        root: Some(pid),
                    });
                }
            }
            (running, known)
        };
        tokio::spawn(process::usage::run(
            self.ctx.scanner.clone(),
            interval,
            apps,
            self.samples.clone(),
            self.tasks.clone(),
        ));
    }

    /// Ends every app's tree (keeping desired states), flushes state.json, and stops the
    /// supervisor's tasks. New requests get `ShuttingDown`.
    pub async fn shutdown(&self) {
        let handles: Vec<Handle> = {
            let mut reg = self.lock();
            reg.closed = true;
            reg.apps.values().cloned().collect()
        };
        let mut waits = Vec::new();
        for h in handles {
            let (reply, rx) = oneshot::channel();
            if h.tx.send(Cmd::Shutdown { reply }).await.is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
        self.ctx.hub.close();
        self.tasks.cancel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }

    fn handles(&self, target: &Target) -> Result<Vec<Handle>, Error> {
        let reg = self.lock();
        if reg.closed {
            return Err(Error::ShuttingDown);
        }
        let found: Vec<Handle> = match target {
            Target::All => reg.apps.values().cloned().collect(),
            Target::Id(id) => reg.apps.get(id).cloned().into_iter().collect(),
            Target::Name(name) => reg
                .apps
                .values()
                .filter(|h| h.view.borrow().name() == name)
                .cloned()
                .collect(),
        };
        if found.is_empty() && *target != Target::All {
            return Err(Error::NotFound(target.to_string()));
        }
        Ok(found)
    }

    /// Sends a command to every app of `target` and waits for all replies. The apps act
    /// concurrently; each applies its own commands in order.
    async fn each(
        &self,
        target: &Target,
        make: impl Fn(Reply) -> Cmd,
    ) -> Result<Vec<AppView>, Error> {
        let handles = self.handles(target)?;
        Self::send_all(handles, make, &target.to_string()).await
    }

    async fn send_all(
        handles: Vec<Handle>,
        make: impl Fn(Reply) -> Cmd,
        what: &str,
    ) -> Result<Vec<AppView>, Error> {
        let mut waits = Vec::with_capacity(handles.len());
        for h in handles {
            let (reply, rx) = oneshot::channel();
            // A closed queue means the app was deleted meanwhile.
            if h.tx.send(make(reply)).await.is_ok() {
                waits.push(rx);
            }
        }
        let mut views = Vec::with_capacity(waits.len());
        let mut errors = Vec::new();
        for rx in waits {
            match rx.await {
                Ok(Ok(view)) => views.push(view),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(Error::NotFound(what.to_string())),
            }
        }
        match errors.len() {
            0 => Ok(views),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }
}
