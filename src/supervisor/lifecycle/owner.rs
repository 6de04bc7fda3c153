//! The owner of one app: a task that feeds the app's inputs (its commands, in order; the exit of
//! its main process; its autorestart timer) to the lifecycle machine and carries out the effects
//! the machine returns. Nothing else touches the app's processes, so two commands on one app can
//! never interleave, and two instances can never run at once. All decisions are the machine's;
//! this file only acts.

use std::{
    collections::VecDeque,
    os::fd::{AsFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{sleep_until, timeout, Instant},
};

use super::{
    machine::{Effect, Gone, Input, Life, Note, Refusal, Rules, State, Survivor},
    probing::Probing,
    triggers::Triggers,
};
use crate::keeper::wire::Kind;
use crate::model::{now_unix_ms, AppId, AppSpec, Cause, Desired, Env, Event, Exit};
use crate::supervisor::{
    error::StoreError,
    logs::{AppLogs, Capture},
    process::{
        escaped::{self, Escaped, PipeId},
        handover::{Handed, Instance},
        launch::{Launch, SpawnError, Spawned},
        pidfd::PidFd,
        procfs::{self, ProcStat},
        tree::{self, TreeKey},
    },
    sockets::HeldSet,
    store::AppRecord,
    view::{effective_env, AppView},
    Ctx, Error, Samples,
};

pub type Reply = oneshot::Sender<Result<AppView, Error>>;

/// What the supervisor asks of an app's owner.
pub enum Cmd {
    /// With `wait`, answered once the app is ready.
    Start {
        cause: Cause,
        wait: bool,
        reply: Reply,
    },
    Stop {
        cause: Cause,
        reply: Reply,
    },
    /// The first half of a restart that takes the app along: stopped, its desired state kept.
    StopForRestart {
        cause: Cause,
        reply: Reply,
    },
    /// Stop then start; with `base_env`, the captured environment is replaced first; with
    /// `spec`, the new instance runs with that spec (applied once the old tree is gone, so the
    /// old instance is stopped as its own spec says).
    Restart {
        base_env: Option<Env>,
        spec: Option<Box<AppSpec>>,
        cause: Cause,
        wait: bool,
        reply: Reply,
    },
    /// Stop and forget; with `purge_logs`, remove the log files too.
    Delete {
        purge_logs: bool,
        cause: Cause,
        reply: Reply,
    },
    /// A new agent's turn to start the app, if it is still queued; answered once it is ready.
    Resume {
        reply: Reply,
    },
    /// This instance goes away, its app stays (a reload replaced it, or a scale down).
    Retire {
        cause: Cause,
        reply: Reply,
    },
    /// The app now has this many instances (its spec says so; saved).
    Rescale {
        instances: u32,
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
    /// Loaded from state.json: the main process last recorded (pid, start time), the
    /// processes of the app that survived the previous agent, and what the keeper handed over
    /// (output pipes of its instances, exit statuses).
    Recovered {
        recorded: Option<(u32, u64)>,
        survivors: Vec<ProcStat>,
        handed: Handed,
    },
}

/// Who waits for the command being carried out.
enum Pending {
    App(Reply),
    Shutdown(oneshot::Sender<()>),
}

/// A command taken apart: the machine's input, who waits, a new base environment and a new
/// spec.
struct Request {
    input: Input,
    pending: Pending,
    base_env: Option<Env>,
    spec: Option<Box<AppSpec>>,
}

impl From<Cmd> for Request {
    fn from(cmd: Cmd) -> Request {
        let mut spec = None;
        let (input, pending, base_env) = match cmd {
            Cmd::Start { cause, wait, reply } => {
                (Input::Start { cause, wait }, Pending::App(reply), None)
            }
            Cmd::Stop { cause, reply } => (Input::Stop(cause), Pending::App(reply), None),
            Cmd::StopForRestart { cause, reply } => {
                (Input::StopForRestart(cause), Pending::App(reply), None)
            }
            Cmd::Restart {
                base_env,
                spec: new,
                cause,
                wait,
                reply,
            } => {
                spec = new;
                (
                    Input::Restart { cause, wait },
                    Pending::App(reply),
                    base_env,
                )
            }
            Cmd::Delete {
                purge_logs,
                cause,
                reply,
            } => (
                Input::Delete { purge_logs, cause },
                Pending::App(reply),
                None,
            ),
            Cmd::Resume { reply } => (Input::Resume, Pending::App(reply), None),
            Cmd::Retire { cause, reply } => (Input::Retire(cause), Pending::App(reply), None),
            // Taken by the owner before it reaches the machine (see `Actor::run`).
            Cmd::Rescale { reply, .. } => (Input::Resume, Pending::App(reply), None),
            Cmd::Shutdown { reply } => (Input::Shutdown, Pending::Shutdown(reply), None),
        };
        Request {
            input,
            pending,
            base_env,
            spec,
        }
    }
}

/// How we learn that the main process ended.
enum ExitWatch {
    /// Our child: the reaper sends its exit status.
    Child(oneshot::Receiver<Exit>),
    /// Adopted from a previous agent: the fact of its exit comes from the pidfd, and its
    /// status from the keeper (whose child it is) when a keeper runs.
    Adopted(PidFd),
}

/// The main process, until its exit is seen.
struct Main {
    pid: u32,
    starttime: Option<u64>,
    exit: ExitWatch,
}

impl Main {
    async fn wait(&mut self, ctx: &Ctx) -> Exit {
        match &mut self.exit {
            ExitWatch::Child(rx) => rx.await.unwrap_or_else(|_| unknown_exit()),
            ExitWatch::Adopted(fd) => {
                fd.exited().await;
                match &ctx.keeper {
                    Some(k) if k.alive() => ctx
                        .exits
                        .wait(self.pid, KEEPER_EXIT_GRACE)
                        .await
                        .unwrap_or_else(unknown_exit),
                    _ => unknown_exit(),
                }
            }
        }
    }
}

/// How long an adopted process's exit status may take to come from the keeper.
const KEEPER_EXIT_GRACE: Duration = Duration::from_millis(500);

fn unknown_exit() -> Exit {
    Exit {
        code: None,
        signal: None,
        at_unix_ms: now_unix_ms(),
    }
}

enum Wake {
    Cmd(Cmd),
    Input(Input),
    /// A new sample of the apps' trees (only for an app with a memory limit).
    Sampled,
}

/// How long the output pipes may stay open after the tree has ended before we stop reading.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long the reaper may take to hand over the exit status of a main process that is dead.
const EXIT_GRACE: Duration = Duration::from_secs(2);

pub struct Actor {
    ctx: Arc<Ctx>,
    id: AppId,
    /// Which instance of the app, and its process slot (see `process::tree::TreeId`).
    instance: u32,
    slot: u32,
    spec: Arc<AppSpec>,
    base_env: Arc<Env>,
    created_at_unix_ms: u64,
    life: Life,
    main: Option<Main>,
    /// Reading the main process's output; none for an adopted process (its pipes died with the
    /// old agent).
    capture: Option<Capture>,
    /// A process found alive at recovery, until the machine adopts it or not.
    survivor: Option<Main>,
    backoff: Option<Instant>,
    pending: Option<Pending>,
    /// Commands waiting for the app's readiness, each with the state-file failure it met.
    held: Vec<(Pending, Option<StoreError>)>,
    /// The app's checks: its notify socket and the probe of the current instance.
    probing: Probing,
    /// Its schedule and watched files.
    triggers: Triggers,
    /// With a memory limit: the samples of every app's tree, and how many in a row were over.
    memory: Option<(watch::Receiver<Arc<Samples>>, u32)>,
    /// Commands that arrived while an operation was under way.
    deferred: VecDeque<Request>,
    /// A failed wait for the state file, reported to the pending command.
    unsaved: Option<StoreError>,
    /// The spec the next spawn of the pending command runs with (an apply's restart).
    next_spec: Option<Box<AppSpec>>,
    /// The running instance's output pipes, to find who holds them after its tree ended.
    pipes: Vec<PipeId>,
    /// The main process whose pipes the keeper holds, released once they are drained.
    held_pid: Option<u32>,
    /// Processes that left the last instance's tree beyond reach (found by its output pipes
    /// after the tree ended): reported to the pending command, shown by `describe` until the
    /// next start.
    escaped: Option<Escaped>,
    /// `escaped` is news for the pending command.
    escaped_news: bool,
    ended: bool,
    view: watch::Sender<AppView>,
    logs: Arc<AppLogs>,
}

impl Actor {
    /// Builds the owner and the receiver of its published view.
    /// `notify`: the app's notify socket as the keeper handed it over.
    pub fn new(
        ctx: Arc<Ctx>,
        rec: AppRecord,
        logs: Arc<AppLogs>,
        notify: Option<OwnedFd>,
    ) -> (Actor, watch::Receiver<AppView>) {
        let mut life = Life::new(rec.desired, rec.restarts);
        life.last_exit = rec.last_exit;
        let spec = Arc::new(rec.spec);
        let handed = notify.is_some();
        let probing = Probing::new(
            &spec,
            &ctx.notify_dir,
            &notify_name(rec.id, rec.slot),
            notify,
        );
        if let (false, Some(k), Some(fd)) = (handed, &ctx.keeper, probing.notify_fd()) {
            k.hold(rec.id, rec.slot, Kind::Notify, 0, 0, fd);
        }
        let triggers = Triggers::new(&spec);
        let memory = spec.max_memory.map(|_| {
            let mut rx = ctx.samples.subscribe();
            rx.mark_unchanged();
            (rx, 0)
        });
        let (view, rx) = watch::channel(AppView {
            id: rec.id,
            instance: rec.instance,
            slot: rec.slot,
            sockets: Vec::new(),
            spec: spec.clone(),
            base_env: rec.base_env.clone(),
            agent_id: ctx.agent_id.clone(),
            status: life.status(),
            desired: life.desired,
            restarts: life.restarts,
            last_exit: life.last_exit,
            error: None,
            created_at_unix_ms: rec.created_at_unix_ms,
            stdout_path: logs.out.path().to_path_buf(),
            stderr_path: logs.err.path().to_path_buf(),
            probe: None,
            triggers: Default::default(),
            last_restart: None,
        });
        let actor = Actor {
            id: rec.id,
            instance: rec.instance,
            slot: rec.slot,
            spec,
            base_env: rec.base_env,
            created_at_unix_ms: rec.created_at_unix_ms,
            life,
            main: None,
            capture: None,
            survivor: None,
            backoff: None,
            pending: None,
            held: Vec::new(),
            probing,
            triggers,
            memory,
            deferred: VecDeque::new(),
            unsaved: None,
            next_spec: None,
            pipes: Vec::new(),
            held_pid: None,
            escaped: None,
            escaped_news: false,
            ended: false,
            view,
            ctx,
            logs,
        };
        (actor, rx)
    }

    /// The task body: recover, then feed commands, exits and timers to the machine until the app
    /// is deleted or the agent shuts down.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, init: Init) {
        if let Init::Recovered {
            recorded,
            survivors,
            handed,
        } = init
        {
            let input = self.recovered(recorded, &survivors, handed).await;
            Box::pin(self.feed(input, &mut rx)).await;
        }
        while !self.ended {
            if !self.life.busy() {
                if let Some(req) = self.deferred.pop_front() {
                    Box::pin(self.request(req, &mut rx)).await;
                    continue;
                }
            }
            let backoff = match self.life.state {
                State::Backoff { .. } => self.backoff,
                _ => None,
            };
            let wake = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => Wake::Cmd(cmd),
                    None => break,
                },
                exit = wait_exit(&mut self.main, &self.ctx) => Wake::Input(Input::Exited(exit)),
                () = wait_until(backoff) => Wake::Input(Input::BackoffElapsed),
                verdict = self.probing.verdict() => Wake::Input(verdict),
                cause = self.triggers.next() => Wake::Input(Input::Trigger(cause)),
                () = sampled(&mut self.memory) => Wake::Sampled,
            };
            // Boxed: what a command or a fact sets in motion (a spawn, a tree's end) lives on
            // the heap while it runs, so a resting owner (a thousand of them) stays small.
            match wake {
                Wake::Sampled => {
                    if self.over_memory() {
                        Box::pin(self.feed(Input::Trigger(Cause::Memory), &mut rx)).await;
                    }
                }
                Wake::Cmd(Cmd::Rescale { instances, reply }) => {
                    Arc::make_mut(&mut self.spec).instances = instances;
                    let gen = self.ctx.store.put(self.record());
                    self.unsaved = None;
                    self.wait_saved(gen).await;
                    self.publish();
                    let unsaved = self.unsaved.take();
                    let r = self.result(unsaved, None, Ok(()));
                    let _ = reply.send(r);
                }
                Wake::Cmd(cmd) => Box::pin(self.request(cmd.into(), &mut rx)).await,
                Wake::Input(input) => {
                    if let Input::Exited(exit) = &input {
                        let pid = self.main.take().map_or(0, |m| m.pid);
                        tracing::info!(app = %self.spec.name, pid, exit = %exit.text(), "main process exited");
                    }
                    self.backoff = None;
                    Box::pin(self.feed(input, &mut rx)).await;
                }
            }
        }
    }

    /// With the latest sample: whether the tree has stayed over `max_memory` for
    /// `memory_grace` samples in a row (the count starts over then, and whenever it is under).
    fn over_memory(&mut self) -> bool {
        let (Some(max), Some((rx, over))) = (self.spec.max_memory, self.memory.as_mut()) else {
            return false;
        };
        let used = rx
            .borrow_and_update()
            .get((self.id, self.slot))
            .memory_bytes;
        let running = matches!(
            self.life.state,
            State::Online { .. } | State::Unready { .. }
        );
        if running && used > max {
            *over += 1;
            tracing::info!(app = %self.spec.name, used, max, over = *over, "tree over its memory limit");
        } else {
            *over = 0;
        }
        if *over >= self.spec.memory_grace {
            *over = 0;
            return true;
        }
        false
    }

    /// A command: carried out to its answer, or kept for later when the machine defers it.
    async fn request(&mut self, req: Request, rx: &mut mpsc::Receiver<Cmd>) {
        let Request {
            input,
            pending,
            base_env,
            spec,
        } = req;
        let effects = self.life.step(input.clone(), &self.rules(), now_unix_ms());
        if let [Effect::Defer] = effects.as_slice() {
            self.deferred.push_back(Request {
                input,
                pending,
                base_env,
                spec,
            });
            return;
        }
        if let Some(env) = base_env {
            self.base_env = Arc::new(env);
        }
        self.next_spec = spec;
        self.pending = Some(pending);
        self.unsaved = None;
        self.carry_out_all(effects, rx).await;
    }

    fn rules(&self) -> Rules {
        Rules {
            restart: self.spec.restart,
            autorestart: self.spec.autorestart,
            ready_check: self.spec.ready.is_some(),
            alive_check: self.spec.alive.is_some(),
        }
    }

    /// Feeds one fact to the machine and carries out what follows.
    async fn feed(&mut self, input: Input, rx: &mut mpsc::Receiver<Cmd>) {
        let effects = self.life.step(input, &self.rules(), now_unix_ms());
        self.carry_out_all(effects, rx).await;
    }

    /// Publishes the new state, then carries out `effects` in order, feeding back every input
    /// they produce (a spawn's outcome, a tree's end), until the machine rests.
    async fn carry_out_all(&mut self, effects: Vec<Effect>, rx: &mut mpsc::Receiver<Cmd>) {
        let mut queue = VecDeque::new();
        let mut effects = effects;
        loop {
            self.publish();
            let own = [
                self.logs.out.path().to_path_buf(),
                self.logs.err.path().to_path_buf(),
            ];
            self.triggers
                .set(self.life.desired == Desired::Online, &self.spec, &own);
            for effect in effects {
                self.carry_out(effect, &mut queue, rx).await;
            }
            let Some(input) = queue.pop_front() else {
                return;
            };
            effects = self.life.step(input, &self.rules(), now_unix_ms());
        }
    }

    async fn carry_out(
        &mut self,
        effect: Effect,
        queue: &mut VecDeque<Input>,
        rx: &mut mpsc::Receiver<Cmd>,
    ) {
        match effect {
            Effect::Emit(note) => self.emit(note),
            Effect::Spawn => {
                if let Some(spec) = self.next_spec.take() {
                    self.replace_spec(*spec);
                }
                queue.push_back(self.spawn().await)
            }
            Effect::Adopt => self.main = self.survivor.take(),
            Effect::Probe(which) => {
                let env = self.env();
                self.probing.start(
                    which,
                    &self.spec,
                    env,
                    self.logs.clone(),
                    self.ctx.reaper.clone(),
                );
            }
            Effect::EndTree => {
                self.probing.stop();
                let (exit, ended) = self.end_tree().await;
                queue.extend(exit.map(Input::Exited));
                queue.push_back(ended);
            }
            Effect::Drain => {
                if let Some(c) = self.capture.take() {
                    if c.finish(DRAIN_GRACE).await {
                        self.find_escaped().await;
                    }
                }
                if let (Some(k), Some(pid)) = (&self.ctx.keeper, self.held_pid.take()) {
                    k.release(self.id, self.slot, pid);
                }
                queue.push_back(Input::Drained);
            }
            Effect::ArmBackoff(delay) => self.backoff = Some(Instant::now() + delay),
            Effect::PurgeLogs => {
                let logs = self.logs.clone();
                let purged = tokio::task::spawn_blocking(move || logs.purge())
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                if let Err(e) = purged {
                    tracing::warn!(app = %self.spec.name, error = %e, "cannot remove every log file");
                }
            }
            Effect::CloseLogs => self.logs.close(),
            Effect::Persist { wait } => {
                let gen = self.ctx.store.put(self.record());
                if wait {
                    self.wait_saved(gen).await;
                }
            }
            Effect::Forget => {
                if let Some(k) = &self.ctx.keeper {
                    k.release(self.id, self.slot, 0);
                }
                let gen = self.ctx.store.remove((self.id, self.slot));
                self.wait_saved(gen).await;
            }
            Effect::Reply(result) => self.reply(result),
            Effect::Hold => {
                self.next_spec = None;
                if let Some(p) = self.pending.take() {
                    self.held.push((p, self.unsaved.take()));
                }
            }
            Effect::Release(result) => {
                for (pending, unsaved) in std::mem::take(&mut self.held) {
                    let r = self.result(unsaved, None, result.clone());
                    answer(pending, r);
                }
            }
            // Only ever the sole effect of a command, which `request` keeps for later.
            Effect::Defer => {}
            Effect::End => {
                // Closed before the reply: when the caller hears "deleted", the registry
                // already sees this app gone (and commands queued behind it are answered "not
                // found" as their senders drop).
                rx.close();
                self.ended = true;
            }
        }
    }

    /// A pipe outlived the tree: names the processes outside it that hold the app's output
    /// (they escaped `stop`: a new session, a cleared environment), for the log, the pending
    /// command's reply and `describe`.
    async fn find_escaped(&mut self) {
        let pipes = std::mem::take(&mut self.pipes);
        // The keeper holds the pipes' read ends: it is not a process that escaped.
        let keeper: Vec<u32> = self.ctx.keeper.iter().map(|k| k.keeper_pid()).collect();
        let found = tokio::task::spawn_blocking(move || escaped::pipe_holders(&pipes, &keeper))
            .await
            .unwrap_or_default();
        if found.is_empty() {
            return;
        }
        tracing::warn!(app = %self.spec.name, pids = ?found.pids(), "{found}");
        self.escaped = Some(found);
        self.escaped_news = self.pending.is_some();
    }

    async fn wait_saved(&mut self, gen: u64) {
        if let Err(e) = self.ctx.store.flushed(gen).await {
            self.unsaved = Some(e);
        }
    }

    fn reply(&mut self, result: Result<(), Refusal>) {
        // A restart that never spawned (its stop failed) leaves the spec as it was.
        self.next_spec = None;
        let unsaved = self.unsaved.take();
        // Processes that escaped the tree are news to the command that ended it.
        let escaped = std::mem::take(&mut self.escaped_news)
            .then(|| self.escaped.clone())
            .flatten();
        let result = self.result(unsaved, escaped, result);
        if let Some(p) = self.pending.take() {
            answer(p, result);
        }
    }

    /// A command's answer: a state-file failure first, then processes that escaped the tree,
    /// then the machine's verdict.
    fn result(
        &self,
        unsaved: Option<StoreError>,
        escaped: Option<Escaped>,
        result: Result<(), Refusal>,
    ) -> Result<AppView, Error> {
        let app = self.label();
        match (unsaved, result) {
            (Some(cause), _) => Err(Error::Persist { app, cause }),
            (None, Ok(())) => match escaped {
                Some(cause) => Err(Error::Escaped { app, cause }),
                None => Ok(self.snapshot()),
            },
            (None, Err(Refusal::Start(cause))) => Err(Error::StartFailed { app, cause }),
            (None, Err(Refusal::Stop(cause))) => Err(Error::StopFailed { app, cause }),
            (None, Err(Refusal::NotReady(cause))) => Err(Error::NotReady { app, cause }),
        }
    }

    /// Takes a new spec (an apply's restart, between the old tree's end and the new spawn):
    /// its checks, triggers, memory limit and log rotation follow it. The name stays.
    fn replace_spec(&mut self, spec: AppSpec) {
        let spec = Arc::new(spec);
        if spec.ready != self.spec.ready
            || spec.alive != self.spec.alive
            || spec.uses_notify() != self.spec.uses_notify()
        {
            // The old notify socket goes first: the new one binds the same path. The keeper
            // lets go of the old one and holds the new one.
            self.probing = Probing::idle();
            if let Some(k) = &self.ctx.keeper {
                k.release(self.id, self.slot, 0);
            }
            self.probing = Probing::new(
                &spec,
                &self.ctx.notify_dir,
                &notify_name(self.id, self.slot),
                None,
            );
            if let (Some(k), Some(fd)) = (&self.ctx.keeper, self.probing.notify_fd()) {
                k.hold(self.id, self.slot, Kind::Notify, 0, 0, fd);
            }
        }
        if spec.restart_schedule != self.spec.restart_schedule
            || spec.watch != self.spec.watch
            || spec.watch_ignore != self.spec.watch_ignore
            || spec.watch_debounce != self.spec.watch_debounce
            || spec.cwd != self.spec.cwd
        {
            self.triggers = Triggers::new(&spec);
        }
        self.memory = spec.max_memory.map(|_| {
            let mut rx = self.ctx.samples.subscribe();
            rx.mark_unchanged();
            (rx, 0)
        });
        if spec.logs != self.spec.logs {
            self.logs.set_policy(spec.logs);
        }
        tracing::info!(app = %self.label(), "spec replaced");
        self.spec = spec;
    }

    /// The name errors and logs give: `api:1` for an app of several instances.
    fn label(&self) -> String {
        if self.spec.instances > 1 || self.instance > 0 {
            format!("{}:{}", self.spec.name, self.instance)
        } else {
            self.spec.name.clone()
        }
    }

    /// The environment the app's processes (and its exec checks) get.
    fn env(&self) -> Env {
        effective_env(
            &self.base_env,
            &self.spec,
            &self.ctx.agent_id,
            self.id,
            self.instance,
            self.slot,
        )
    }

    /// The app's held sockets, bound now if they are not yet (a new agent binds them anew).
    async fn sockets(&self) -> Result<Option<Arc<HeldSet>>, SpawnError> {
        if self.spec.sockets.is_empty() {
            return Ok(None);
        }
        if let Some(set) = self.ctx.sockets.get(self.id) {
            return Ok(Some(set));
        }
        let (ctx, id, specs) = (self.ctx.clone(), self.id, self.spec.sockets.clone());
        tokio::task::spawn_blocking(move || ctx.sockets.bind(id, &specs))
            .await
            .map_err(|_| SpawnError::SpawnerGone)?
            .map(Some)
            .map_err(|e| SpawnError::Sockets(e.to_string()))
    }

    /// Spawns the main process with the stored spec and environment.
    async fn spawn(&mut self) -> Input {
        let mut env = self.env();
        self.probing.before_spawn(&self.spec, &self.logs, &mut env);
        let sockets = match self.sockets().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(app = %self.label(), cause = %e, "start failed");
                return Input::SpawnFailed(e);
            }
        };
        let launch = Launch {
            spec: self.spec.clone(),
            env,
            sockets,
        };
        match self.ctx.spawner.spawn(launch).await {
            Ok(Spawned {
                pid,
                starttime,
                exit,
                stdout,
                stderr,
            }) => {
                self.pipes = [&stdout, &stderr]
                    .iter()
                    .filter_map(|fd| PipeId::of(*fd).ok())
                    .collect();
                self.escaped = None;
                // The keeper holds duplicates of the read ends, so that the app's output
                // outlives this agent. Queued: the start does not wait for the keeper.
                if let Some(k) = &self.ctx.keeper {
                    let start = starttime.unwrap_or(0);
                    k.hold(self.id, self.slot, Kind::Out, pid, start, stdout.as_fd());
                    k.hold(self.id, self.slot, Kind::Err, pid, start, stderr.as_fd());
                    self.held_pid = Some(pid);
                }
                self.capture = Some(Capture::start(
                    vec![
                        (stdout, self.logs.out.clone()),
                        (stderr, self.logs.err.clone()),
                    ],
                    self.ctx.log_pool.clone(),
                ));
                self.main = Some(Main {
                    pid,
                    starttime,
                    exit: ExitWatch::Child(exit),
                });
                tracing::info!(app = %self.spec.name, pid, "started");
                Input::Spawned { pid }
            }
            Err(e) => {
                tracing::warn!(app = %self.spec.name, cause = %e, "start failed");
                Input::SpawnFailed(e)
            }
        }
    }

    /// Ends the whole tree (main process, group, escaped descendants). Returns how the main
    /// process ended (when it was running) and whether anything survived SIGKILL.
    async fn end_tree(&mut self) -> (Option<Exit>, Input) {
        let key = TreeKey {
            agent_id: self.ctx.agent_id.to_string(),
            app_id: self.id,
            slot: self.slot,
            root: self.main.as_ref().map(|m| m.pid),
        };
        let result = tree::stop(
            &self.ctx.scanner,
            &key,
            self.spec.stop_signal,
            self.spec.kill_timeout,
        )
        .await;
        let exit = match self.main.take() {
            // The main process is dead; the reaper hands over its status as soon as it reaps it.
            Some(mut m) => Some(
                timeout(EXIT_GRACE, m.wait(&self.ctx))
                    .await
                    .unwrap_or_else(|_| unknown_exit()),
            ),
            None => None,
        };
        let ended = match result {
            Ok(()) => Input::TreeGone,
            Err(u) => {
                tracing::error!(app = %self.spec.name, error = %u, "processes of the app survive");
                Input::TreeSurvived(u)
            }
        };
        (exit, ended)
    }

    /// A previous agent's app: its main process, if it still runs and can be watched (the
    /// newest instance the keeper holds pipes of, else the one state.json recorded), or how it
    /// ended meanwhile (the keeper reaped it); and whether any of its processes survive. The
    /// handed-over pipes of that instance are read from where the previous agent stopped;
    /// those of older instances are read to their end first.
    async fn recovered(
        &mut self,
        recorded: Option<(u32, u64)>,
        survivors: &[ProcStat],
        mut handed: Handed,
    ) -> Input {
        let alive = |pid: u32, start: u64| {
            survivors
                .iter()
                .any(|p| p.pid == pid && p.starttime == start)
        };
        let current = handed
            .instances
            .iter()
            .rev()
            .find(|x| x.exit.is_none() && alive(x.pid, x.start))
            .map(|x| (x.pid, x.start))
            .or(recorded);
        let survivor = current.and_then(|(pid, starttime)| {
            alive(pid, starttime)
                .then(|| adoptable(pid, starttime))
                .flatten()
                .map(|fd| (pid, starttime, fd))
        });
        if !survivors.is_empty() {
            tracing::info!(app = %self.spec.name, count = survivors.len(), "processes left by a previous agent");
        }
        let gone = match survivor {
            Some(_) => None,
            None => handed
                .instances
                .iter()
                .rev()
                .find_map(|x| x.exit.map(|e| (x.pid, x.start, e))),
        };
        let mine = survivor
            .as_ref()
            .map(|(pid, start, _)| (*pid, *start))
            .or(gone.map(|(pid, start, _)| (pid, start)))
            .and_then(|(pid, start)| handed.take(pid, start));
        for old in std::mem::take(&mut handed.instances) {
            self.drain_old(old).await;
        }
        if let Some(inst) = mine {
            self.capture_handed(inst);
        }
        let survivor = survivor.map(|(pid, starttime, fd)| {
            self.survivor = Some(Main {
                pid,
                starttime: Some(starttime),
                exit: ExitWatch::Adopted(fd),
            });
            Survivor {
                pid,
                since_ms: procfs::start_unix_ms(starttime).unwrap_or_else(now_unix_ms),
            }
        });
        let gone = gone.map(|(pid, start, exit)| {
            tracing::info!(app = %self.spec.name, pid, exit = %exit.text(), "main process exited while no agent ran");
            Gone {
                pid,
                since_ms: procfs::start_unix_ms(start).unwrap_or(exit.at_unix_ms),
                exit,
            }
        });
        Input::Recovered {
            survivor,
            leftovers: !survivors.is_empty(),
            gone,
        }
    }

    /// Reads the handed-over pipes of the instance being recovered: what waited in them comes
    /// first, in order, then what the app writes from now on.
    fn capture_handed(&mut self, inst: Instance) {
        let pipes: Vec<(OwnedFd, Arc<crate::supervisor::logs::StreamLog>)> = [
            inst.out.map(|fd| (fd, self.logs.out.clone())),
            inst.err.map(|fd| (fd, self.logs.err.clone())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if pipes.is_empty() {
            return;
        }
        self.pipes = pipes
            .iter()
            .filter_map(|(fd, _)| PipeId::of(fd).ok())
            .collect();
        self.capture = Some(Capture::start(pipes, self.ctx.log_pool.clone()));
        self.held_pid = Some(inst.pid);
    }

    /// An older instance's handed-over pipes: read to their end (bounded by the drain grace),
    /// then released.
    async fn drain_old(&mut self, inst: Instance) {
        let pid = inst.pid;
        self.capture_handed(inst);
        if let Some(c) = self.capture.take() {
            c.finish(DRAIN_GRACE).await;
        }
        self.pipes.clear();
        if let (Some(k), Some(pid)) = (&self.ctx.keeper, self.held_pid.take().or(Some(pid))) {
            k.release(self.id, self.slot, pid);
        }
    }

    /// Publishes an event about this app.
    fn emit(&self, note: Note) {
        let mut e = Event::new(note.kind, self.id, &self.spec.name, note.cause);
        e.instance = self.instance;
        e.pid = note.pid;
        e.exit = note.exit;
        e.delay_ms = note.delay.map(|d| d.as_millis() as u64);
        e.error = note.error;
        if let Some(m) = note.message {
            e.message = m.into();
        }
        self.ctx.hub.publish(e);
    }

    fn record(&self) -> AppRecord {
        AppRecord {
            id: self.id,
            instance: self.instance,
            slot: self.slot,
            spec: (*self.spec).clone(),
            base_env: self.base_env.clone(),
            desired: self.life.desired,
            created_at_unix_ms: self.created_at_unix_ms,
            restarts: self.life.restarts,
            pid: self.main.as_ref().map(|m| m.pid),
            pid_starttime: self.main.as_ref().and_then(|m| m.starttime),
            last_exit: self.life.last_exit,
        }
    }

    fn publish(&self) {
        self.view.send_replace(self.snapshot());
    }

    fn snapshot(&self) -> AppView {
        AppView {
            id: self.id,
            instance: self.instance,
            slot: self.slot,
            sockets: if self.spec.sockets.is_empty() {
                Vec::new()
            } else {
                self.ctx
                    .sockets
                    .get(self.id)
                    .map(|s| s.report())
                    .unwrap_or_default()
            },
            spec: self.spec.clone(),
            base_env: self.base_env.clone(),
            agent_id: self.ctx.agent_id.clone(),
            status: self.life.status(),
            desired: self.life.desired,
            restarts: self.life.restarts,
            last_exit: self.life.last_exit,
            error: self
                .life
                .last_failure
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| self.escaped.as_ref().map(ToString::to_string)),
            created_at_unix_ms: self.created_at_unix_ms,
            stdout_path: self.logs.out.path().to_path_buf(),
            stderr_path: self.logs.err.path().to_path_buf(),
            probe: (self.spec.ready.is_some() || self.spec.alive.is_some())
                .then(|| self.probing.live()),
            triggers: self.triggers.report(),
            last_restart: self.life.last_restart.clone(),
        }
    }
}

/// The file name of an instance's notify socket: `<id>.sock` for slot 0 (as before
/// instances), `<id>-<slot>.sock` for the others.
fn notify_name(id: AppId, slot: u32) -> String {
    if slot == 0 {
        format!("{id}.sock")
    } else {
        format!("{id}-{slot}.sock")
    }
}

fn answer(pending: Pending, result: Result<AppView, Error>) {
    match pending {
        Pending::App(reply) => {
            let _ = reply.send(result);
        }
        Pending::Shutdown(reply) => {
            let _ = reply.send(());
        }
    }
}

/// A pidfd on `pid` if it still is the process that started at `starttime` and is alive.
fn adoptable(pid: u32, starttime: u64) -> Option<PidFd> {
    let fd = PidFd::open(pid).ok()?;
    let st = procfs::read_stat(pid).ok()?;
    (st.starttime == starttime && !st.is_dead()).then_some(fd)
}

async fn wait_exit(main: &mut Option<Main>, ctx: &Ctx) -> Exit {
    match main {
        Some(m) => m.wait(ctx).await,
        None => std::future::pending().await,
    }
}

/// The next sample of the apps' trees, for an app with a memory limit; never otherwise.
async fn sampled(memory: &mut Option<(watch::Receiver<Arc<Samples>>, u32)>) {
    match memory {
        Some((rx, _)) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn wait_until(until: Option<Instant>) {
    match until {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}
