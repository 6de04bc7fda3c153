//! The owner of one app: a task that applies the app's commands in order, watches its main
//! process, and restarts it after unexpected exits. Nothing else touches the app's processes, so
//! two commands on one app can never interleave, and two instances can never run at once.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{sleep_until, timeout, Instant},
};

use super::policy::{self, Decision, History};
use crate::model::{
    now_unix_ms, AppId, AppSpec, Cause, Desired, Env, Event, EventKind, Exit, Status,
};
use crate::supervisor::{
    logs::{AppLogs, Capture},
    process::{
        launch::{Launch, Spawned},
        pidfd::PidFd,
        procfs::{self, ProcStat},
        tree::{self, TreeKey},
    },
    store::AppRecord,
    view::{effective_env, AppView},
    Ctx, Error,
};

pub type Reply = oneshot::Sender<Result<AppView, Error>>;

/// What the supervisor asks of an app's owner.
pub enum Cmd {
    Start {
        cause: Cause,
        reply: Reply,
    },
    Stop {
        cause: Cause,
        reply: Reply,
    },
    /// Stop then start; with `base_env`, the captured environment is replaced first.
    Restart {
        base_env: Option<Env>,
        cause: Cause,
        reply: Reply,
    },
    /// Stop and forget; with `purge_logs`, remove the log files too.
    Delete {
        purge_logs: bool,
        cause: Cause,
        reply: Reply,
    },
    /// The agent is exiting: end the tree, keep the desired state, end the task.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// How the owner begins.
pub enum Init {
    /// Just created: wait for the first command.
    New,
    /// Loaded from state.json: the main process last recorded (pid, start time), and the
    /// processes of the app that survived the previous agent.
    Recovered {
        recorded: Option<(u32, u64)>,
        survivors: Vec<ProcStat>,
    },
}

/// How we learn that the main process ended.
enum ExitWatch {
    /// Our child: the reaper sends its exit status.
    Child(oneshot::Receiver<Exit>),
    /// Adopted from a previous agent: only the fact of its exit is known.
    Adopted(PidFd),
}

struct Running {
    pid: u32,
    starttime: Option<u64>,
    started: Instant,
    exit: ExitWatch,
    /// Reading its output; none for an adopted process (its pipes died with the old agent).
    capture: Option<Capture>,
}

/// How long the output pipes may stay open after the tree has ended before we stop reading.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

async fn drain(capture: Option<Capture>) {
    if let Some(c) = capture {
        c.finish(DRAIN_GRACE).await;
    }
}

impl Running {
    async fn wait(&mut self) -> Exit {
        match &mut self.exit {
            ExitWatch::Child(rx) => match rx.await {
                Ok(exit) => exit,
                Err(_) => unknown_exit(),
            },
            ExitWatch::Adopted(fd) => {
                fd.exited().await;
                unknown_exit()
            }
        }
    }
}

fn unknown_exit() -> Exit {
    Exit {
        code: None,
        signal: None,
        at_unix_ms: now_unix_ms(),
    }
}

pub struct Actor {
    ctx: Arc<Ctx>,
    id: AppId,
    spec: Arc<AppSpec>,
    base_env: Arc<Env>,
    desired: Desired,
    restarts: u32,
    created_at_unix_ms: u64,
    status: Status,
    last_exit: Option<Exit>,
    error: Option<String>,
    running: Option<Running>,
    backoff: Option<Instant>,
    history: History,
    view: watch::Sender<AppView>,
    logs: Arc<AppLogs>,
}

enum Wake {
    Cmd(Cmd),
    Closed,
    Exited(Exit),
    BackoffOver,
}

impl Actor {
    /// Builds the owner and the receiver of its published view.
    pub fn new(
        ctx: Arc<Ctx>,
        rec: AppRecord,
        logs: Arc<AppLogs>,
    ) -> (Actor, watch::Receiver<AppView>) {
        let (view, rx) = watch::channel(AppView {
            id: rec.id,
            spec: Arc::new(rec.spec.clone()),
            base_env: rec.base_env.clone(),
            agent_id: ctx.agent_id.clone(),
            status: Status::Stopped,
            desired: rec.desired,
            restarts: rec.restarts,
            last_exit: None,
            error: None,
            created_at_unix_ms: rec.created_at_unix_ms,
            stdout_path: Default::default(),
            stderr_path: Default::default(),
        });
        let mut actor = Actor {
            ctx,
            id: rec.id,
            spec: Arc::new(rec.spec),
            base_env: rec.base_env,
            desired: rec.desired,
            restarts: rec.restarts,
            created_at_unix_ms: rec.created_at_unix_ms,
            status: Status::Stopped,
            last_exit: None,
            error: None,
            running: None,
            backoff: None,
            history: History::default(),
            view,
            logs,
        };
        actor.publish();
        (actor, rx)
    }

    /// The task body: recover, then apply commands and react to exits until deleted or shut down.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, init: Init) {
        if let Init::Recovered {
            recorded,
            survivors,
        } = init
        {
            self.recover(recorded, survivors).await;
        }
        loop {
            let wake = tokio::select! {
                cmd = rx.recv() => cmd.map_or(Wake::Closed, Wake::Cmd),
                exit = wait_exit(&mut self.running) => Wake::Exited(exit),
                () = wait_backoff(self.backoff) => Wake::BackoffOver,
            };
            match wake {
                Wake::Closed => break,
                Wake::Cmd(Cmd::Start { cause, reply }) => {
                    let r = self.start(&cause).await;
                    let _ = reply.send(r);
                }
                Wake::Cmd(Cmd::Stop { cause, reply }) => {
                    let r = self.stop(&cause).await;
                    let _ = reply.send(r);
                }
                Wake::Cmd(Cmd::Restart {
                    base_env,
                    cause,
                    reply,
                }) => {
                    let r = self.restart(base_env, &cause).await;
                    let _ = reply.send(r);
                }
                Wake::Cmd(Cmd::Delete {
                    purge_logs,
                    cause,
                    reply,
                }) => {
                    let r = self.delete(purge_logs, &cause).await;
                    let done = r.is_ok();
                    if done {
                        // Closed before the reply: when the caller hears "deleted", the
                        // registry already sees this app gone (and commands queued behind the
                        // delete are answered "not found" as their senders drop).
                        rx.close();
                    }
                    let _ = reply.send(r);
                    if done {
                        break;
                    }
                }
                Wake::Cmd(Cmd::Shutdown { reply }) => {
                    self.backoff = None;
                    if let Err(e) = self.end_tree(&Cause::Shutdown).await {
                        tracing::error!(app = %self.spec.name, error = %e, "tree not stopped at shutdown");
                    }
                    // Followers end once they have read everything.
                    self.logs.close();
                    self.save();
                    let _ = reply.send(());
                    break;
                }
                Wake::Exited(exit) => self.on_exit(exit).await,
                Wake::BackoffOver => self.autorestart().await,
            }
        }
    }

    async fn start(&mut self, cause: &Cause) -> Result<AppView, Error> {
        if self.running.is_some() {
            return Ok(self.snapshot());
        }
        self.history.reset();
        self.backoff = None;
        self.desired = Desired::Online;
        let spawned = self.spawn_main(cause).await;
        self.save_and_wait().await?;
        spawned?;
        Ok(self.snapshot())
    }

    async fn stop(&mut self, cause: &Cause) -> Result<AppView, Error> {
        self.desired = Desired::Stopped;
        self.backoff = None;
        let ended = self.end_tree(cause).await;
        self.save_and_wait().await?;
        ended?;
        Ok(self.snapshot())
    }

    async fn restart(&mut self, base_env: Option<Env>, cause: &Cause) -> Result<AppView, Error> {
        if let Some(env) = base_env {
            self.base_env = Arc::new(env);
        }
        self.desired = Desired::Online;
        self.backoff = None;
        self.emit(EventKind::Restarting, cause, |_| {});
        if let Err(e) = self.end_tree(cause).await {
            self.save_and_wait().await?;
            return Err(e);
        }
        self.history.reset();
        self.restarts = self.restarts.saturating_add(1);
        let spawned = self.spawn_main(cause).await;
        self.save_and_wait().await?;
        spawned?;
        Ok(self.snapshot())
    }

    async fn delete(&mut self, purge_logs: bool, cause: &Cause) -> Result<AppView, Error> {
        self.backoff = None;
        self.end_tree(cause).await?;
        if purge_logs {
            let logs = self.logs.clone();
            let purged = tokio::task::spawn_blocking(move || logs.purge())
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            if let Err(e) = purged {
                tracing::warn!(app = %self.spec.name, error = %e, "cannot remove every log file");
            }
        }
        self.logs.close();
        let gen = self.ctx.store.remove(self.id);
        self.ctx
            .store
            .flushed(gen)
            .await
            .map_err(|cause| self.persist_error(cause))?;
        self.emit(EventKind::Deleted, cause, |_| {});
        Ok(self.snapshot())
    }

    /// The main process exited on its own: end what it left behind, then restart or give up.
    async fn on_exit(&mut self, exit: Exit) {
        let Some(mut r) = self.running.take() else {
            return;
        };
        let uptime = r.started.elapsed();
        tracing::info!(app = %self.spec.name, pid = r.pid, exit = %exit.text(), "main process exited");
        self.last_exit = Some(exit);
        self.emit(EventKind::Exited, &Cause::Crash, |e| {
            e.pid = Some(r.pid);
            e.exit = Some(exit);
        });
        self.status = Status::Stopping { pid: None };
        self.publish();
        let key = self.tree_key(Some(r.pid));
        if let Err(e) = tree::stop(
            &self.ctx.scanner,
            &key,
            self.spec.stop_signal,
            self.spec.kill_timeout,
        )
        .await
        {
            tracing::error!(app = %self.spec.name, error = %e, "leftovers of an exited app survive");
        }
        // Its last words are on disk before anything else happens (a new instance's output
        // never interleaves with them).
        drain(r.capture.take()).await;
        let decision = policy::on_exit(
            &self.spec.restart,
            self.spec.autorestart,
            &mut self.history,
            Some(&exit),
            uptime,
            now_unix_ms(),
        );
        self.apply(decision, &Cause::Crash);
        self.save();
    }

    async fn autorestart(&mut self) {
        self.backoff = None;
        self.restarts = self.restarts.saturating_add(1);
        if self.spawn_main(&Cause::Backoff).await.is_err() {
            let decision = policy::on_exit(
                &self.spec.restart,
                self.spec.autorestart,
                &mut self.history,
                None,
                Duration::ZERO,
                now_unix_ms(),
            );
            self.apply(decision, &Cause::Backoff);
        }
        self.save();
    }

    fn apply(&mut self, decision: Decision, why: &Cause) {
        match decision {
            Decision::Restart { delay } => {
                self.backoff = Some(Instant::now() + delay);
                self.status = Status::Backoff {
                    until_unix_ms: now_unix_ms() + delay.as_millis() as u64,
                };
                self.emit(EventKind::AutorestartScheduled, why, |e| {
                    e.delay_ms = Some(delay.as_millis() as u64);
                });
            }
            Decision::GiveUp { cause } => {
                tracing::warn!(app = %self.spec.name, %cause, "giving up");
                self.errored(cause, why);
            }
            Decision::LeaveDown { errored } => {
                self.desired = Desired::Stopped;
                if errored {
                    let how = self
                        .last_exit
                        .map_or_else(|| "could not start".to_string(), |e| e.text());
                    self.errored(format!("exited with {how} (autorestart is off)"), why);
                } else {
                    self.status = Status::Stopped;
                    self.emit(EventKind::Stopped, why, |_| {});
                }
            }
        }
    }

    /// A previous agent's app: adopt its main process if it still runs as recorded, otherwise
    /// end whatever is left of it, then start it if it should run.
    async fn recover(&mut self, recorded: Option<(u32, u64)>, survivors: Vec<ProcStat>) {
        if self.desired == Desired::Online {
            if let Some((pid, starttime)) = recorded {
                if survivors
                    .iter()
                    .any(|p| p.pid == pid && p.starttime == starttime)
                {
                    if let Some(fd) = adoptable(pid, starttime) {
                        let started_at =
                            procfs::start_unix_ms(starttime).unwrap_or_else(now_unix_ms);
                        let age = Duration::from_millis(now_unix_ms().saturating_sub(started_at));
                        self.running = Some(Running {
                            pid,
                            starttime: Some(starttime),
                            started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                            exit: ExitWatch::Adopted(fd),
                            capture: None,
                        });
                        self.status = Status::Online {
                            pid,
                            started_at_unix_ms: started_at,
                            adopted: true,
                        };
                        tracing::info!(app = %self.spec.name, pid, "adopted a running app");
                        self.emit(EventKind::Online, &Cause::Recovery, |e| {
                            e.pid = Some(pid);
                            e.message = "adopted from the previous agent".into();
                        });
                        self.publish();
                        return;
                    }
                }
            }
        }
        if !survivors.is_empty() {
            tracing::info!(app = %self.spec.name, count = survivors.len(), "ending processes left by a previous agent");
            if let Err(e) = self.end_tree(&Cause::Recovery).await {
                tracing::error!(app = %self.spec.name, error = %e, "leftovers survive");
            }
        }
        if self.desired == Desired::Online {
            let _ = self.spawn_main(&Cause::Recovery).await;
            self.save();
        }
        self.publish();
    }

    /// Spawns the main process with the stored spec and environment.
    async fn spawn_main(&mut self, cause: &Cause) -> Result<(), Error> {
        self.status = Status::Starting;
        self.emit(EventKind::Starting, cause, |_| {});
        let launch = Launch {
            spec: self.spec.clone(),
            env: effective_env(&self.base_env, &self.spec, &self.ctx.agent_id, self.id),
        };
        match self.ctx.spawner.spawn(launch).await {
            Ok(Spawned {
                pid,
                starttime,
                exit,
                stdout,
                stderr,
            }) => {
                let capture = Capture::start(
                    vec![
                        (stdout, self.logs.out.clone()),
                        (stderr, self.logs.err.clone()),
                    ],
                    self.ctx.log_pool.clone(),
                );
                self.running = Some(Running {
                    pid,
                    starttime,
                    started: Instant::now(),
                    exit: ExitWatch::Child(exit),
                    capture: Some(capture),
                });
                self.status = Status::Online {
                    pid,
                    started_at_unix_ms: now_unix_ms(),
                    adopted: false,
                };
                self.error = None;
                tracing::info!(app = %self.spec.name, pid, "started");
                self.emit(EventKind::Online, cause, |e| e.pid = Some(pid));
                Ok(())
            }
            Err(failure) => {
                tracing::warn!(app = %self.spec.name, cause = %failure, "start failed");
                self.errored(failure.clone(), cause);
                Err(Error::StartFailed {
                    app: self.spec.name.to_string(),
                    cause: failure,
                })
            }
        }
    }

    /// Ends the whole tree (main process, group, escaped descendants) and records how the main
    /// process ended. Leaves the status `stopped`, or `errored` when something survived SIGKILL.
    async fn end_tree(&mut self, cause: &Cause) -> Result<(), Error> {
        let root = self.running.as_ref().map(|r| r.pid);
        // A stop of an app that is already down is no transition: no events, but leftovers are
        // still looked for.
        let transition = !matches!(self.status, Status::Stopped);
        self.status = Status::Stopping { pid: root };
        if transition {
            self.emit(EventKind::Stopping, cause, |e| e.pid = root);
        }
        self.publish();
        let key = self.tree_key(root);
        let result = tree::stop(
            &self.ctx.scanner,
            &key,
            self.spec.stop_signal,
            self.spec.kill_timeout,
        )
        .await;
        if let Some(mut r) = self.running.take() {
            // The main process is dead; the reaper hands over its status as soon as it reaps it.
            let exit = timeout(Duration::from_secs(2), r.wait())
                .await
                .unwrap_or_else(|_| unknown_exit());
            self.last_exit = Some(exit);
            self.emit(EventKind::Exited, cause, |e| {
                e.pid = Some(r.pid);
                e.exit = Some(exit);
            });
            drain(r.capture.take()).await;
        }
        match result {
            Ok(()) => {
                self.status = Status::Stopped;
                if transition {
                    self.emit(EventKind::Stopped, cause, |_| {});
                }
                self.publish();
                Ok(())
            }
            Err(unkillable) => {
                self.errored(format!("cannot stop: {unkillable}"), cause);
                self.publish();
                Err(Error::StopFailed {
                    app: self.spec.name.to_string(),
                    cause: unkillable.to_string(),
                })
            }
        }
    }

    /// Publishes an event about this app.
    fn emit(&self, kind: EventKind, cause: &Cause, fill: impl FnOnce(&mut Event)) {
        let mut e = Event::new(kind, self.id, &self.spec.name, cause.clone());
        fill(&mut e);
        self.ctx.hub.publish(e);
    }

    fn errored(&mut self, why: String, cause: &Cause) {
        self.emit(EventKind::Errored, cause, |e| {
            e.error = Some(why.clone());
            e.exit = self.last_exit;
        });
        self.error = Some(why.clone());
        self.status = Status::Errored { cause: why };
    }

    fn tree_key(&self, root: Option<u32>) -> TreeKey {
        TreeKey {
            agent_id: self.ctx.agent_id.to_string(),
            app_id: self.id,
            root,
        }
    }

    fn record(&self) -> AppRecord {
        AppRecord {
            id: self.id,
            spec: (*self.spec).clone(),
            base_env: self.base_env.clone(),
            desired: self.desired,
            created_at_unix_ms: self.created_at_unix_ms,
            restarts: self.restarts,
            pid: self.running.as_ref().map(|r| r.pid),
            pid_starttime: self.running.as_ref().and_then(|r| r.starttime),
        }
    }

    /// Publishes the view and queues the record for writing.
    fn save(&mut self) -> u64 {
        self.publish();
        self.ctx.store.put(self.record())
    }

    /// Like `save`, and waits until the record is on disk.
    async fn save_and_wait(&mut self) -> Result<(), Error> {
        let gen = self.save();
        self.ctx
            .store
            .flushed(gen)
            .await
            .map_err(|cause| self.persist_error(cause))
    }

    fn persist_error(&self, cause: String) -> Error {
        Error::Persist {
            app: self.spec.name.to_string(),
            cause,
        }
    }

    fn publish(&mut self) {
        let view = self.snapshot();
        self.view.send_replace(view);
    }

    fn snapshot(&self) -> AppView {
        AppView {
            id: self.id,
            spec: self.spec.clone(),
            base_env: self.base_env.clone(),
            agent_id: self.ctx.agent_id.clone(),
            status: self.status.clone(),
            desired: self.desired,
            restarts: self.restarts,
            last_exit: self.last_exit,
            error: self.error.clone(),
            created_at_unix_ms: self.created_at_unix_ms,
            stdout_path: self.logs.out.path().to_path_buf(),
            stderr_path: self.logs.err.path().to_path_buf(),
        }
    }
}

/// A pidfd on `pid` if it still is the process that started at `starttime` and is alive.
fn adoptable(pid: u32, starttime: u64) -> Option<PidFd> {
    let fd = PidFd::open(pid).ok()?;
    let st = procfs::read_stat(pid).ok()?;
    (st.starttime == starttime && !st.is_dead()).then_some(fd)
}

async fn wait_exit(running: &mut Option<Running>) -> Exit {
    match running {
        Some(r) => r.wait().await,
        None => std::future::pending().await,
    }
}

async fn wait_backoff(until: Option<Instant>) {
    match until {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}
