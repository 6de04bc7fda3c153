//! The supervisor: the process table and its owners. One task per app applies that app's
//! commands in order (see `lifecycle`); this module routes requests to them, in dependency
//! order: `deps` decides what a request touches and in which order (pure), `order` sends the
//! commands and waits for each dependency's condition. It knows nothing of gRPC.

mod apply;
mod deps;
mod error;
mod events;
mod lifecycle;
mod logs;
mod order;
mod probes;
mod process;
mod reload;
mod scale;
mod sockets;
mod store;
mod view;

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    io,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use apply::{Applied, ApplyRequest};
pub use deps::GraphError;
pub use error::Error;
pub use events::{Filter, Replay, Subscription, KEEP_BYTES};
pub use logs::{AppLogs, Piece, ReadFrom};
pub use order::{Acted, Reason};
pub use process::usage::{Samples, Usage};
pub use view::AppView;

use lifecycle::{Actor, Cmd, Init};
use order::{Act, Member, Table};
use process::{handover, launch, reaper::Reaper, scan, tree};
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
    /// Where apps' notify sockets live (`<id>.sock`).
    notify_dir: PathBuf,
    /// Reaps our children; exec checks are spawned through it.
    reaper: Arc<Reaper>,
    /// The threads that write every app's log files.
    log_pool: Arc<logs::WriterPool>,
    /// The last tree usage sample of every app, replaced every `sample_interval`.
    samples: watch::Sender<Arc<Samples>>,
    /// The keeper this agent runs under, if any: it holds duplicates of every instance's
    /// output pipes and notify socket.
    keeper: Option<Arc<crate::keeper::link::Link>>,
    /// Exit statuses of adopted apps, reaped by the keeper.
    exits: Arc<handover::ExitBoard>,
    /// Every app's held sockets.
    sockets: sockets::Sockets,
}

#[derive(Clone)]
struct Handle {
    tx: mpsc::Sender<Cmd>,
    view: watch::Receiver<AppView>,
    logs: Arc<logs::AppLogs>,
}

/// The owners, one per instance, by `(app id, instance)`.
#[derive(Default)]
struct Registry {
    apps: BTreeMap<(AppId, u32), Handle>,
    /// Reload replacements not in `apps` yet: ended with the others at shutdown.
    spares: Vec<Handle>,
    next_id: AppId,
    closed: bool,
    /// Names of apps a delete is ending: a new app may not depend on them (see `Deleting`).
    deleting: BTreeSet<String>,
}

impl Registry {
    /// Refuses new apps that depend on an app being deleted: the delete checked that nothing
    /// depends on it, so the new app would be left depending on nothing.
    fn refuse_deleting(&self, specs: &[AppSpec]) -> Result<(), Error> {
        for s in specs {
            if let Some(d) = s.depends_on.iter().find(|d| self.deleting.contains(&d.app)) {
                return Err(Error::BeingDeleted {
                    app: s.name.clone(),
                    dep: d.app.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Marks apps as being deleted for as long as it lives (also when the delete is abandoned).
struct Deleting<'a> {
    sup: &'a Supervisor,
    names: BTreeSet<String>,
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        let mut reg = self.sup.lock();
        for n in &self.names {
            reg.deleting.remove(n);
        }
    }
}

pub struct Supervisor {
    ctx: Arc<Ctx>,
    registry: Mutex<Registry>,
    /// The last tree usage sample of every app (see `process::usage`).
    /// Log bytes of deleted apps, so the agent's total never goes down.
    deleted_log_bytes: std::sync::atomic::AtomicU64,
    tasks: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held by a reload or a scale: they change which owners an app has, one at a time.
    reshaping: tokio::sync::Mutex<()>,
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
    /// Where apps' sd_notify sockets are made (`notify/` in the home).
    pub notify_dir: PathBuf,
    /// Where `events.jsonl` lives; `None` keeps events in memory only.
    pub events_dir: Option<PathBuf>,
    pub events_kept: usize,
    /// ... and at most this many bytes of them (approximately).
    pub events_kept_bytes: usize,
    /// How often every app's tree is sampled for CPU and memory.
    pub sample_interval: std::time::Duration,
    /// The keeper's socket pair and what it handed over, when the agent runs under one.
    pub keeper: Option<(crate::keeper::link::Pending, crate::keeper::link::Handover)>,
}

/// Commands queued per app before senders wait.
const QUEUE: usize = 64;
/// How long a new agent waits for an app's owner to sort out its recovery before starting the
/// apps in dependency order (it takes a scan of what survived: milliseconds).
const RECOVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Supervisor {
    /// Loads `state_path`, starts the reaper and the state writer, and brings back every app:
    /// adopted if its main process survived the previous agent, otherwise started afresh (after
    /// ending any leftovers) when it should run. Returns a warning when the state was corrupt.
    pub async fn open(config: Config) -> io::Result<(Arc<Supervisor>, Option<String>)> {
        let Config {
            state_path,
            logs_dir,
            notify_dir,
            events_dir,
            events_kept,
            events_kept_bytes,
            sample_interval,
            keeper,
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
        let hub = Arc::new(Hub::new(events_kept, log).keep_bytes(events_kept_bytes));
        let tasks = CancellationToken::new();
        let reaper = Reaper::start(tasks.clone())?;
        let store = Store::new(state_path.to_path_buf(), &loaded.state);
        let writer = tokio::spawn(store.clone().run_writer(tasks.clone()));
        let agent_id: Arc<str> = Arc::from(loaded.state.agent_id.as_str());
        let exits = Arc::new(handover::ExitBoard::default());
        let (link, mut handed) = match keeper {
            Some((pending, h)) => {
                let board = exits.clone();
                let link = pending.start(Box::new(move |e| board.put(e)))?;
                tracing::info!(
                    keeper = link.keeper_pid(),
                    descriptors = h.held.len(),
                    exits = h.exits.len(),
                    "running under a keeper"
                );
                (Some(Arc::new(link)), handover::by_app(h))
            }
            None => (None, Default::default()),
        };
        let ctx = Arc::new(Ctx {
            keeper: link.clone(),
            exits,
            spawner: launch::Spawner::start(reaper.clone(), 2)?,
            notify_dir,
            reaper,
            samples: watch::Sender::new(Arc::default()),
            scanner: Arc::default(),
            hub,
            store,
            agent_id: agent_id.clone(),
            logs_dir,
            log_pool: Arc::new(logs::WriterPool::start(2)?),
            sockets: sockets::Sockets::new(link.clone()),
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
            deleted_log_bytes: Default::default(),
            tasks,
            writer: Mutex::new(Some(writer)),
            reshaping: tokio::sync::Mutex::new(()),
        });
        let wanted: Vec<AppId> = loaded
            .state
            .apps
            .iter()
            .filter(|r| r.desired == Desired::Online)
            .map(|r| r.id)
            .collect();
        // The held sockets a previous agent handed to the keeper: the instances that still run
        // listen on them.
        for rec in loaded.state.apps.iter().filter(|r| r.instance == 0) {
            if let Some(h) = handed.remove(&(rec.id, sockets::APP_SLOT)) {
                sup.ctx.sockets.adopt(rec.id, &rec.spec.sockets, h.listen);
            }
        }
        for rec in loaded.state.apps {
            // Each instance owner gets what the keeper held for its own slot.
            let mut h = handed.remove(&(rec.id, rec.slot)).unwrap_or_default();
            let notify = h.notify.take();
            let init = Init::Recovered {
                recorded: rec.pid.zip(rec.pid_starttime),
                survivors: survivors.remove(&(rec.id, rec.slot)).unwrap_or_default(),
                handed: h,
            };
            let key = (rec.id, rec.instance);
            let handle = sup.start_owner(rec, init, notify);
            sup.lock().apps.insert(key, handle);
        }
        // Held for apps (or instance slots) that no longer exist: the keeper may let them go.
        if let Some(k) = &sup.ctx.keeper {
            for ((app, slot), h) in handed {
                for i in h.instances {
                    k.release(app, slot, i.pid);
                }
                if h.notify.is_some() || !h.listen.is_empty() {
                    k.release(app, slot, 0);
                }
            }
        }
        sup.start_sampling(sample_interval);
        // Processes of apps (or instances) that no longer exist: end them.
        for ((app_id, slot), procs) in survivors {
            tracing::warn!(
                app_id,
                slot,
                count = procs.len(),
                "ending processes of a deleted app"
            );
            let key = tree::TreeKey {
                agent_id: agent_id.to_string(),
                app_id,
                slot,
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
        sup.resume(wanted);
        Ok((sup, loaded.warning))
    }

    /// Starts again the apps a previous agent ran (each is `starting` until its turn), in
    /// dependency order, as a background task: adopted ones are left as they are.
    fn resume(self: &Arc<Self>, ids: Vec<AppId>) {
        if ids.is_empty() {
            return;
        }
        let sup = self.clone();
        tokio::spawn(async move {
            let handles: Vec<Handle> = {
                let reg = sup.lock();
                reg.apps
                    .iter()
                    .filter(|((id, _), _)| ids.contains(id))
                    .map(|(_, h)| h.clone())
                    .collect()
            };
            // Each owner first sorts out what the previous agent left (adopted, queued, or
            // ending leftovers): an app that should run is never `stopped` after that.
            for h in &handles {
                let mut view = h.view.clone();
                let recovered = view.wait_for(|v| v.status != crate::model::Status::Stopped);
                let _ = tokio::time::timeout(RECOVERY_GRACE, recovered).await;
            }
            // Its turn: started if it still waits for it; a command given meanwhile (a
            // stop, say) stands.
            let members = named_members(Self::names(&handles), Act::Resume);
            let started = match sup.table() {
                Ok(table) => {
                    sup.start_in_order(table, members, Cause::Recovery, true)
                        .await
                }
                Err(e) => Err(e),
            };
            let errors = match started {
                Ok(_) => Vec::new(),
                Err(Error::Several(all)) => all,
                Err(e) => vec![e],
            };
            for e in errors {
                tracing::warn!(error = %e, "not brought back");
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the owner task of `rec` (`notify`: its socket, handed over by the keeper); the
    /// caller registers the handle.
    fn start_owner(
        &self,
        rec: AppRecord,
        init: Init,
        notify: Option<std::os::fd::OwnedFd>,
    ) -> Handle {
        let logs = Arc::new(logs::AppLogs::new(
            &self.ctx.logs_dir,
            rec.id,
            &rec.spec.name,
            rec.instance,
            rec.spec.logs,
        ));
        self.owner_with_logs(rec, init, logs, notify)
    }

    /// Starts an owner writing to `logs` (a reload's replacement writes on its instance's).
    fn owner_with_logs(
        &self,
        rec: AppRecord,
        init: Init,
        logs: Arc<logs::AppLogs>,
        notify: Option<std::os::fd::OwnedFd>,
    ) -> Handle {
        let (actor, view) = Actor::new(self.ctx.clone(), rec, logs.clone(), notify);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(actor.run(rx, init));
        Handle { tx, view, logs }
    }

    /// Creates apps from specs, in order (ids follow it), each with `base_env` as its captured
    /// environment, and starts them in dependency order (with what they depend on). All or
    /// nothing up to the start: an invalid spec, a taken name, a dependency on no app or a
    /// cycle creates none. A start failure leaves that app in place, errored (or stopped, when
    /// a dependency failed), and is returned after the others have started.
    pub async fn create(
        &self,
        specs: Vec<AppSpec>,
        base_env: Env,
        cause: Cause,
        wait: bool,
    ) -> Result<Vec<Acted>, Error> {
        crate::model::validate_env(&base_env).map_err(|problem| Error::InvalidEnv {
            what: "base environment",
            problem,
        })?;
        let names = admit(&specs)?;
        // Held sockets are bound before anything is created: one that cannot be bound fails
        // the request with the OS error and changes nothing.
        let wanted: Vec<Vec<crate::model::SocketSpec>> =
            specs.iter().map(|s| s.sockets.clone()).collect();
        let bound: Vec<Option<sockets::HeldSet>> = tokio::task::spawn_blocking(move || {
            wanted
                .iter()
                .map(|w| (!w.is_empty()).then(|| sockets::bind_all(w)).transpose())
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?
        .map_err(Error::Bind)?;
        let base_env = Arc::new(base_env);
        let new: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let table = {
            let mut reg = self.lock();
            if reg.closed {
                return Err(Error::ShuttingDown);
            }
            if let Some(((id, _), h)) = reg
                .apps
                .iter()
                .find(|(_, h)| names.contains(h.view.borrow().name()))
            {
                return Err(Error::AlreadyExists {
                    name: h.view.borrow().name().to_string(),
                    id: *id,
                });
            }
            // Names may refer to existing apps or to apps of this request.
            let graph = deps::Graph::new(
                reg.apps
                    .values()
                    .map(|h| {
                        let v = h.view.borrow();
                        (v.name().to_string(), v.spec.depends_on.clone())
                    })
                    .chain(specs.iter().map(|s| (s.name.clone(), s.depends_on.clone()))),
            );
            let new: Vec<&str> = new.iter().map(String::as_str).collect();
            graph.check(&new)?;
            reg.refuse_deleting(&specs)?;
            self.register(&mut reg, specs, bound, &base_env, &cause);
            Table::of(reg.apps.values())
        };
        let members = named_members(new, Act::Start);
        self.start_in_order(table, members, cause, wait).await
    }

    /// Creates the records and owners of new apps (ids in order), one owner per instance,
    /// under the registry's lock, so a concurrent create of the same name sees them; each app
    /// gets a `created` event. `bound`: each spec's held sockets, bound already (in order).
    fn register(
        &self,
        reg: &mut Registry,
        specs: Vec<AppSpec>,
        bound: Vec<Option<sockets::HeldSet>>,
        base_env: &Arc<Env>,
        cause: &Cause,
    ) {
        let mut bound = bound.into_iter();
        for spec in specs {
            let id = reg.next_id;
            reg.next_id += 1;
            if let Some(held) = bound.next().flatten() {
                self.ctx.sockets.insert(id, held);
            }
            self.ctx.hub.publish(Event::new(
                EventKind::Created,
                id,
                &spec.name,
                cause.clone(),
            ));
            let created_at_unix_ms = now_unix_ms();
            for instance in 0..spec.instances {
                let rec = AppRecord {
                    id,
                    instance,
                    slot: 2 * instance,
                    spec: spec.clone(),
                    base_env: base_env.clone(),
                    desired: Desired::Stopped,
                    created_at_unix_ms,
                    restarts: 0,
                    pid: None,
                    pid_starttime: None,
                    last_exit: None,
                };
                let handle = self.start_owner(rec, Init::New, None);
                reg.apps.insert((id, instance), handle);
            }
        }
        self.ctx.store.set_next_id(reg.next_id);
    }

    /// Forgets the owners that ended (deleted apps), counting their log bytes, and closes the
    /// held sockets of apps that have no instance left.
    fn forget_deleted(&self) {
        let mut gone = 0;
        let mut reg = self.lock();
        let mut ended = std::collections::BTreeSet::new();
        reg.apps.retain(|(id, _), h| {
            let closed = h.tx.is_closed();
            if closed {
                gone += log_bytes(&h.logs).iter().sum::<u64>();
                ended.insert(*id);
            }
            !closed
        });
        for id in ended {
            if !reg.apps.keys().any(|(i, _)| *i == id) {
                self.ctx.sockets.release(id);
            }
        }
        drop(reg);
        self.deleted_log_bytes
            .fetch_add(gone, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts stopped or errored apps, after what they depend on (started too, when it does
    /// not run); online ones are left as they are. With `wait`, answers once each is ready.
    /// The answer lists the dependencies this start started first (`NeededBy`), then the apps.
    pub async fn start(
        &self,
        target: &Target,
        cause: Cause,
        wait: bool,
    ) -> Result<Vec<Acted>, Error> {
        let named = Self::names(&self.handles(target)?);
        let members = named_members(named, Act::Start);
        self.start_in_order(self.table_for(target)?, members, cause, wait)
            .await
    }

    /// Stops apps, and first (deepest first) the apps that depend on them and run
    /// (`DependsOn`); the answer is in stop order.
    pub async fn stop(&self, target: &Target, cause: Cause) -> Result<Vec<Acted>, Error> {
        let named = Self::names(&self.handles(target)?);
        let table = self.table_for(target)?;
        let members = Self::with_dependents(&table, target, &named);
        self.in_reverse(&table, members, |reply| Cmd::Stop {
            cause: cause.clone(),
            reply,
        })
        .await
    }

    /// Stop + start of the apps and of the apps that depend on them and run: those are stopped
    /// first, deepest first; then all are started in dependency order (each app that depends
    /// on none of the others is restarted at once). With `base_env`, each named app's captured
    /// environment is replaced first. The answer is in start order.
    pub async fn restart(
        &self,
        target: &Target,
        base_env: Option<Env>,
        cause: Cause,
        wait: bool,
    ) -> Result<Vec<Acted>, Error> {
        if let Some(env) = &base_env {
            crate::model::validate_env(env).map_err(|problem| Error::InvalidEnv {
                what: "environment",
                problem,
            })?;
        }
        let named = Self::names(&self.handles(target)?);
        let table = self.table_for(target)?;
        let members = Self::with_dependents(&table, target, &named);
        let set: std::collections::BTreeSet<String> = members.keys().cloned().collect();
        let first: std::collections::BTreeMap<String, Reason> = members
            .iter()
            .filter(|(n, _)| table.graph.depends_on_any(n, &set))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        if !first.is_empty() {
            self.in_reverse(&table, first, |reply| Cmd::StopForRestart {
                cause: cause.clone(),
                reply,
            })
            .await?;
        }
        let members = members
            .into_iter()
            .map(|(n, reason)| {
                let base_env = (reason == Reason::Named)
                    .then(|| base_env.clone())
                    .flatten();
                let act = Act::Restart {
                    base_env,
                    spec: None,
                };
                (n, Member { act, reason })
            })
            .collect();
        self.start_in_order(self.table_for(target)?, members, cause, wait)
            .await
    }

    /// The named apps and the running apps that depend on them; one instance (`api:1`) is
    /// acted on alone: its app as a whole stays up for its dependents.
    fn with_dependents(
        table: &order::Table,
        target: &Target,
        named: &[String],
    ) -> BTreeMap<String, Reason> {
        match target {
            Target::Instance(..) => named.iter().map(|n| (n.clone(), Reason::Named)).collect(),
            _ => table.with_dependents(named),
        }
    }

    /// Stops apps and forgets them; their log files stay unless `purge_logs`.
    pub async fn delete(
        &self,
        target: &Target,
        purge_logs: bool,
        cause: Cause,
    ) -> Result<Vec<AppView>, Error> {
        if let Target::Instance(app, _) = target {
            return Err(Error::DeleteInstance {
                target: target.to_string(),
                app: app.to_string(),
            });
        }
        let named = Self::names(&self.handles(target)?);
        let doomed: BTreeSet<String> = named.iter().cloned().collect();
        // Checked and marked at once: no app depending on these can be created meanwhile.
        let (table, _deleting) = {
            let mut reg = self.lock();
            if reg.closed {
                return Err(Error::ShuttingDown);
            }
            let table = Table::of(reg.apps.values());
            let refused: Vec<Error> = table
                .graph
                .still_needed(&doomed)
                .into_iter()
                .map(|(app, by)| Error::DependedOn { app, by })
                .collect();
            order::verdict((), refused)?;
            let fresh: BTreeSet<String> = doomed.difference(&reg.deleting).cloned().collect();
            reg.deleting.extend(fresh.iter().cloned());
            let guard = Deleting {
                sup: self,
                names: fresh,
            };
            (table, guard)
        };
        let members = named.into_iter().map(|n| (n, Reason::Named)).collect();
        let views = self
            .in_reverse(&table, members, |reply| Cmd::Delete {
                purge_logs,
                cause: cause.clone(),
                reply,
            })
            .await
            .map(|acted| acted.into_iter().map(|a| a.view).collect());
        // Deleted owners have ended; forget them (also after a partial failure), and close
        // the held sockets of apps that have no instance left.
        self.forget_deleted();
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
    /// returns the events as published, with their sequence numbers. Fails when the agent
    /// cannot number events (see `Hub::publish`): nothing is published then.
    pub fn notify(
        &self,
        target: &Target,
        action: &str,
        message: &str,
        data: std::collections::BTreeMap<String, String>,
        cause: Cause,
    ) -> Result<Vec<Arc<Event>>, Error> {
        let mut views = self.describe(target)?;
        // One notification per app, not per instance.
        views.dedup_by_key(|v| v.id);
        views
            .iter()
            .map(|v| {
                self.ctx
                    .hub
                    .publish(Hub::notify_event(
                        v.id,
                        v.name(),
                        action,
                        message,
                        data.clone(),
                        cause.clone(),
                    ))
                    .ok_or(Error::EventsHeld)
            })
            .collect()
    }

    /// Subscribes to events: replay as `from` says, then live ones when `follow`. An app in
    /// the filter must exist, or be named by a kept event (a deleted app's history stays
    /// reachable); any other name is refused as an unknown target is (`NotFound`).
    pub fn subscribe(
        &self,
        from: Replay,
        filter: Filter,
        follow: bool,
    ) -> Result<(Vec<Arc<Event>>, Option<Subscription>), Error> {
        self.check_known(&filter.apps)?;
        self.ctx
            .hub
            .subscribe(from, filter, follow)
            .map_err(|e| match e {
                events::Refused::TooMany(max) => Error::TooManySubscribers(max),
                events::Refused::Ahead { from, last } => Error::ResumeAhead { from, last },
            })
    }

    /// Resolves when many event subscriptions have ended (see `Hub::shrunk`).
    pub async fn subscribers_shrunk(&self) {
        self.ctx.hub.shrunk().await
    }

    /// The last sample of every app's tree usage (taken every `sample_interval`; an app started
    /// since has none yet).
    pub fn samples(&self) -> Arc<Samples> {
        self.ctx.samples.borrow().clone()
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
                    samples.get(view.tree_id())
                } else {
                    Usage {
                        cpu_seconds_total: samples.get(view.tree_id()).cpu_seconds_total,
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
            for h in reg.apps.values() {
                let v = h.view.borrow();
                known.push(v.tree_id());
                if let Some(pid) = v.status.pid() {
                    running.push(tree::TreeKey {
                        agent_id: sup.ctx.agent_id.to_string(),
                        app_id: v.id,
                        slot: v.slot,
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
            self.ctx.samples.clone(),
            self.tasks.clone(),
        ));
    }

    /// Ends every app's tree (keeping desired states), flushes state.json, and stops the
    /// supervisor's tasks. New requests get `ShuttingDown`.
    pub async fn shutdown(&self) {
        let table = {
            let mut reg = self.lock();
            reg.closed = true;
            Table::of(reg.apps.values())
        };
        // Dependents first, each depth at once.
        let all = table.apps.keys().cloned().collect();
        let spares = std::mem::take(&mut self.lock().spares);
        for level in table.levels(&all).into_iter().rev() {
            let mut waits = Vec::new();
            for name in level {
                for h in table.apps.get(&name).into_iter().flatten() {
                    let (reply, rx) = oneshot::channel();
                    if h.tx.send(Cmd::Shutdown { reply }).await.is_ok() {
                        waits.push(rx);
                    }
                }
            }
            for rx in waits {
                let _ = rx.await;
            }
        }
        for h in spares {
            let (reply, rx) = oneshot::channel();
            if h.tx.send(Cmd::Shutdown { reply }).await.is_ok() {
                let _ = rx.await;
            }
        }
        self.ctx.hub.close();
        self.tasks.cancel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }

    /// The first (by name) of `names` that is neither an app nor named by a kept event.
    fn check_known(&self, names: &HashSet<String>) -> Result<(), Error> {
        if names.is_empty() {
            return Ok(());
        }
        let current: HashSet<String> = self
            .lock()
            .apps
            .values()
            .map(|h| h.view.borrow().name().to_string())
            .collect();
        let mut unknown: Vec<&String> = names
            .iter()
            .filter(|n| !current.contains(*n) && !self.ctx.hub.has_events_about(n))
            .collect();
        unknown.sort_unstable();
        match unknown.first() {
            Some(name) => Err(Error::NotFound((*name).clone())),
            None => Ok(()),
        }
    }

    /// Tells the keeper (if any) that this agent serves.
    pub fn keeper_ready(&self) {
        if let Some(k) = &self.ctx.keeper {
            k.ready();
        }
    }

    /// The pid of the keeper this agent runs under, while it answers.
    pub fn keeper_pid(&self) -> Option<u32> {
        self.ctx
            .keeper
            .as_ref()
            .filter(|k| k.alive())
            .map(|k| k.keeper_pid())
    }

    /// Prepares this agent's exit for an upgrade, leaving every app running: no more requests
    /// or events; exits of children from now on are left to the keeper (which reaps them once
    /// we are gone); the event log records the exact next number and state.json is written.
    /// Then tells the keeper to re-exec itself once this agent has exited.
    pub async fn hand_over(&self) -> Result<(), Error> {
        let Some(keeper) = self.ctx.keeper.clone().filter(|k| k.alive()) else {
            return Err(Error::NoKeeper);
        };
        {
            let mut reg = self.lock();
            if reg.closed {
                return Err(Error::ShuttingDown);
            }
            reg.closed = true;
        }
        self.ctx.reaper.freeze();
        let hub = self.ctx.hub.clone();
        let _ = tokio::task::spawn_blocking(move || hub.seal()).await;
        self.tasks.cancel();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
        tokio::task::spawn_blocking(move || keeper.upgrade())
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| {
                tracing::error!(error = %e, "cannot ask the keeper for the upgrade");
                Error::NoKeeper
            })
    }

    fn handles(&self, target: &Target) -> Result<Vec<Handle>, Error> {
        let reg = self.lock();
        if reg.closed {
            return Err(Error::ShuttingDown);
        }
        let of = |t: &Target| -> Vec<Handle> {
            match t {
                Target::All => reg.apps.values().cloned().collect(),
                Target::Id(id) => reg
                    .apps
                    .range((*id, 0)..=(*id, u32::MAX))
                    .map(|(_, h)| h.clone())
                    .collect(),
                Target::Name(name) => reg
                    .apps
                    .values()
                    .filter(|h| h.view.borrow().name() == name)
                    .cloned()
                    .collect(),
                Target::Instance(..) => Vec::new(),
            }
        };
        let found = match target {
            Target::Instance(app, k) => {
                let all = of(app);
                if all.is_empty() {
                    return Err(Error::NotFound(app.to_string()));
                }
                let one: Vec<Handle> = all
                    .iter()
                    .filter(|h| h.view.borrow().instance == *k)
                    .cloned()
                    .collect();
                if one.is_empty() {
                    return Err(Error::NoInstance {
                        target: target.to_string(),
                        instances: all.len() as u32,
                    });
                }
                one
            }
            t => of(t),
        };
        if found.is_empty() && *target != Target::All {
            return Err(Error::NotFound(target.to_string()));
        }
        Ok(found)
    }
}

/// Checks specs before anything is created or changed: the model's rules, watched paths that
/// must exist, who the apps run as, and names given twice. Returns the names.
fn admit(specs: &[AppSpec]) -> Result<std::collections::HashSet<String>, Error> {
    let mut names = std::collections::HashSet::new();
    for spec in specs {
        spec.check()?;
        // A stat per watched path: refused now rather than watched in vain.
        if let Some(missing) = lifecycle::must_exist(spec)
            .into_iter()
            .find(|p| !p.exists())
        {
            return Err(Error::InvalidSpec(crate::model::InvalidSpec {
                app: spec.name.clone(),
                field: crate::model::Field::Watch,
                problem: format!("watch: {} does not exist", missing.display()),
            }));
        }
        process::run_as::check(spec).map_err(|problem| {
            Error::InvalidSpec(crate::model::InvalidSpec {
                app: spec.name.clone(),
                field: crate::model::Field::RunAs,
                problem,
            })
        })?;
        if !names.insert(spec.name.clone()) {
            return Err(Error::GivenTwice(spec.name.clone()));
        }
    }
    Ok(names)
}

/// The apps a request names, each to be acted on with `act`.
fn named_members<M: FromIterator<(String, Member)>>(names: Vec<String>, act: Act) -> M {
    names
        .into_iter()
        .map(|n| {
            let m = Member {
                act: act.clone(),
                reason: Reason::Named,
            };
            (n, m)
        })
        .collect()
}
