//! Desired state on disk: `state.json`, rewritten atomically (temp file, fsync, rename, fsync the
//! directory) by one writer task that coalesces bursts of changes into few writes.
//!
//! Each distinct captured environment is stored once (`envs`), and apps refer to it by index:
//! a thousand apps started from one file share one environment, so the file stays small and
//! cheap to rewrite. Records hold environments behind an `Arc`, and serialization happens
//! outside the lock, so owners recording a change never wait for a write.

use std::{
    collections::{BTreeMap, HashMap},
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::error::StoreError;
use crate::home::write_atomic;
use crate::model::{now_unix_ms, AppId, AppSpec, Desired, Env, Exit};

const VERSION: u32 = 1;

/// One instance of an app as remembered across agent restarts (an app of N instances has N
/// records, with the same id and spec).
#[derive(Clone)]
pub struct AppRecord {
    pub id: AppId,
    /// Which instance (0 to N-1).
    pub instance: u32,
    /// Its process slot (see `process::tree::TreeId`): `2 * instance`, or one more after an odd
    /// number of reloads.
    pub slot: u32,
    pub spec: AppSpec,
    /// The environment captured when the app was created (or at the last `--update-env`).
    pub base_env: Arc<Env>,
    pub desired: Desired,
    pub created_at_unix_ms: u64,
    pub restarts: u32,
    /// The main process last started, with its start time, so a new agent can adopt it.
    pub pid: Option<u32>,
    pub pid_starttime: Option<u64>,
    /// How the instance's last main process ended: a one-shot job that completed stays
    /// completed for a new agent (its dependents do not run it again).
    pub last_exit: Option<Exit>,
}

/// What loading gives: the file's content, environments resolved.
pub struct StateFile {
    /// Random id of this home's agent, stamped on every app's environment as `GRPM_AGENT_ID`.
    pub agent_id: String,
    pub next_id: AppId,
    pub apps: Vec<AppRecord>,
    /// The home directory this state (and its `agent_id`) belongs to.
    pub home: Option<HomeBinding>,
    /// Loading changed something (a repair, a new agent id): write the file at once.
    pub repaired: bool,
}

/// The directory a `state.json` lives in, by identity: a copied home (another directory with
/// the same file) is told from the original by its device and inode, and gets its own agent
/// id, so that the two agents never take each other's apps for their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeBinding {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl HomeBinding {
    fn of(state_path: &Path) -> Option<HomeBinding> {
        use std::os::unix::fs::MetadataExt;
        let dir = state_path.parent()?;
        let meta = fs::metadata(dir).ok()?;
        Some(HomeBinding {
            path: dir.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn same_directory(&self, other: &HomeBinding) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// The highest app id a state may hold: ids stay exact as JSON numbers (2^53), and counting
/// up from any of them can never overflow.
pub const MAX_APP_ID: AppId = 1 << 53;

/// One app as written: its environment is an index into `DiskState::envs`.
#[derive(Serialize, Deserialize)]
struct DiskApp {
    id: AppId,
    #[serde(default, skip_serializing_if = "is_zero")]
    instance: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    slot: u32,
    spec: AppSpec,
    base_env: usize,
    desired: Desired,
    created_at_unix_ms: u64,
    #[serde(default)]
    restarts: u32,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    pid_starttime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_exit: Option<Exit>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize)]
struct DiskState {
    version: u32,
    agent_id: String,
    next_id: AppId,
    /// Each distinct captured environment, once.
    envs: Vec<Env>,
    apps: Vec<DiskApp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    home: Option<HomeBinding>,
}

impl DiskState {
    fn from_records(
        agent_id: &str,
        next_id: AppId,
        apps: &[AppRecord],
        home: Option<HomeBinding>,
    ) -> DiskState {
        let mut envs: Vec<Env> = Vec::new();
        let mut index: HashMap<&Env, usize> = HashMap::new();
        let apps = apps
            .iter()
            .map(|r| {
                let i = *index.entry(&*r.base_env).or_insert_with(|| {
                    envs.push((*r.base_env).clone());
                    envs.len() - 1
                });
                DiskApp {
                    id: r.id,
                    instance: r.instance,
                    slot: r.slot,
                    spec: r.spec.clone(),
                    base_env: i,
                    desired: r.desired,
                    created_at_unix_ms: r.created_at_unix_ms,
                    restarts: r.restarts,
                    pid: r.pid,
                    pid_starttime: r.pid_starttime,
                    last_exit: r.last_exit,
                }
            })
            .collect();
        DiskState {
            version: VERSION,
            agent_id: agent_id.to_string(),
            next_id,
            envs,
            apps,
            home,
        }
    }

    fn into_state(self) -> Result<StateFile, String> {
        let envs: Vec<Arc<Env>> = self.envs.into_iter().map(Arc::new).collect();
        let apps = self
            .apps
            .into_iter()
            .map(|a| {
                let env = envs.get(a.base_env).cloned().ok_or_else(|| {
                    format!(
                        "app {} refers to environment {}, which does not exist",
                        a.id, a.base_env
                    )
                })?;
                Ok(AppRecord {
                    id: a.id,
                    instance: a.instance,
                    slot: a.slot,
                    spec: a.spec,
                    base_env: env,
                    desired: a.desired,
                    created_at_unix_ms: a.created_at_unix_ms,
                    restarts: a.restarts,
                    pid: a.pid,
                    pid_starttime: a.pid_starttime,
                    last_exit: a.last_exit,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(StateFile {
            agent_id: self.agent_id,
            next_id: self.next_id,
            apps,
            home: self.home,
            repaired: false,
        })
    }
}

/// What loading found.
pub struct Loaded {
    pub state: StateFile,
    /// Set when a corrupt file was moved aside: says where.
    pub warning: Option<String>,
}

/// Reads `path`. A missing file is a fresh state; an unreadable one is an error (we must not
/// start empty over apps we could not read); a corrupt one is renamed aside and reported.
///
/// Every field is then checked as the API checks a request (see [`check`]); what cannot be
/// used is repaired or refused, with a line in the agent log saying which, and the file as it
/// was is kept as `state.json.before-repair-<ms>`. A home that is a copy of another is given a
/// new agent id.
pub fn load(path: &Path) -> io::Result<Loaded> {
    let mut loaded = load_file(path)?;
    let here = HomeBinding::of(path);
    let notes = check(&mut loaded.state, here.as_ref());
    if !notes.is_empty() {
        loaded.state.repaired = true;
        let refused = notes.iter().any(|n| n.refused);
        let kept = path.with_extension(format!("json.before-repair-{}", now_unix_ms()));
        let kept = (refused && fs::copy(path, &kept).is_ok()).then_some(kept);
        for n in &notes {
            match &kept {
                Some(k) => tracing::warn!(
                    "{}: {} (the file as it was is kept as {})",
                    path.display(),
                    n.text,
                    k.display()
                ),
                None => tracing::warn!("{}: {}", path.display(), n.text),
            }
        }
    }
    if loaded.state.home != here {
        // First load of a file from before homes were bound, or a home moved in place: bind it
        // (the id stays), and say so on disk at once.
        loaded.state.repaired |= here.is_some() && crate::home::exists(path);
        loaded.state.home = here;
    }
    Ok(loaded)
}

/// One thing loading repaired (`refused`: an app was left out).
struct Note {
    text: String,
    refused: bool,
}

/// Checks a loaded state as the API checks requests, repairing what has a safe default and
/// leaving out what has none; `here` is the home the file was read from.
fn check(state: &mut StateFile, here: Option<&HomeBinding>) -> Vec<Note> {
    let mut notes = Vec::new();
    let mut note = |text: String, refused: bool| notes.push(Note { text, refused });
    let id_ok = |id: &str| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !id_ok(&state.agent_id) {
        let new = random_id();
        note(
            format!(
                "agent_id {:?} is not 1 to 64 letters, digits, '-' or '_': replaced by {new}",
                state.agent_id
            ),
            false,
        );
        state.agent_id = new;
    }
    if let (Some(was), Some(here)) = (&state.home, here) {
        if !was.same_directory(here) {
            let new = random_id();
            note(
                format!(
                    "this home is a copy of {} (another directory: device {} inode {}, here                      {} {}); agent id {} is that home's, so this one gets {new}: neither                      agent takes the other's apps for its own",
                    was.path.display(),
                    was.dev,
                    was.ino,
                    here.dev,
                    here.ino,
                    state.agent_id
                ),
                false,
            );
            state.agent_id = new;
        }
    }
    let mut kept: Vec<AppRecord> = Vec::with_capacity(state.apps.len());
    for mut rec in std::mem::take(&mut state.apps) {
        let who = format!("app {} ({:?})", rec.id, rec.spec.name);
        if rec.id == 0 || rec.id > MAX_APP_ID {
            note(
                format!("{who} refused: ids run from 1 to {MAX_APP_ID}"),
                true,
            );
            continue;
        }
        if let Some(other) = kept
            .iter()
            .find(|k| k.id == rec.id && k.spec.name != rec.spec.name)
        {
            note(
                format!(
                    "{who} refused: id {} is already {:?}",
                    rec.id, other.spec.name
                ),
                true,
            );
            continue;
        }
        if rec.slot / 2 != rec.instance || rec.instance >= crate::model::MAX_INSTANCES {
            note(
                format!(
                    "{who} refused: instance {} cannot be in slot {}",
                    rec.instance, rec.slot
                ),
                true,
            );
            continue;
        }
        if kept
            .iter()
            .any(|k| k.id == rec.id && k.instance == rec.instance)
        {
            // Both of a reload's overlap (the agent died meanwhile): the first is kept, the
            // other's processes are ended as a deleted app's.
            note(
                format!(
                    "{who} instance {} refused: it is recorded twice (a reload cut short)",
                    rec.instance
                ),
                true,
            );
            continue;
        }
        if let Err(problem) = crate::model::validate_env(&rec.base_env) {
            note(format!("{who} refused: its environment: {problem}"), true);
            continue;
        }
        if let Err(problem) =
            repair_spec(&mut rec.spec, &mut |t| note(format!("{who}: {t}"), false))
        {
            note(format!("{who} refused: {problem}"), true);
            continue;
        }
        if let Some(other) = kept
            .iter()
            .find(|k| k.spec.name == rec.spec.name && k.id != rec.id)
        {
            note(
                format!("{who} refused: the name is already app {}'s", other.id),
                true,
            );
            continue;
        }
        if rec.pid.is_some_and(|p| p == 0 || p > i32::MAX as u32) {
            note(
                format!("{who}: pid {:?} is not a pid: forgotten", rec.pid),
                false,
            );
            rec.pid = None;
            rec.pid_starttime = None;
        }
        kept.push(rec);
    }
    state.apps = kept;
    let above = state.apps.iter().map(|a| a.id).max().unwrap_or(0) + 1;
    if state.next_id < above || state.next_id > MAX_APP_ID {
        note(
            format!(
                "next_id {} is not above every app id and at most {MAX_APP_ID}: set to {above}",
                state.next_id
            ),
            false,
        );
        state.next_id = above;
    }
    notes
}

/// Brings a stored spec within what the API accepts: settings with a default go back to it
/// (each said through `said`); a name, command, cwd or environment the API would refuse has
/// no safe default, and is the error.
fn repair_spec(spec: &mut AppSpec, said: &mut dyn FnMut(String)) -> Result<(), String> {
    use crate::model::{Field, LogPolicy, RestartPolicy, Signal};
    // Each repair fixes one field for good, so this ends within as many rounds as there are.
    for _ in 0..8 {
        let Err(e) = spec.check() else {
            return Ok(());
        };
        match e.field {
            Field::KillTimeout => {
                spec.kill_timeout = AppSpec::DEFAULT_KILL_TIMEOUT;
                said(format!("{}: kill_timeout set to the default", e.problem));
            }
            Field::StopSignal => {
                spec.stop_signal = Signal::TERM;
                said(format!("{}: stop_signal set to SIGTERM", e.problem));
            }
            Field::RestartDelay
            | Field::RestartDelayMax
            | Field::RestartWindow
            | Field::MaxRestarts => {
                spec.restart = RestartPolicy::default();
                said(format!(
                    "{}: the restart policy set to the defaults",
                    e.problem
                ));
            }
            Field::LogMaxSize | Field::LogKeep => {
                spec.logs = LogPolicy {
                    time: spec.logs.time,
                    ..LogPolicy::default()
                };
                said(format!("{}: log rotation set to the defaults", e.problem));
            }
            Field::Ready => {
                spec.ready = None;
                said(format!("{}: the readiness check removed", e.problem));
            }
            Field::Alive => {
                spec.alive = None;
                said(format!("{}: the liveness check removed", e.problem));
            }
            Field::DependsOn => {
                spec.depends_on.clear();
                said(format!("{}: its dependencies removed", e.problem));
            }
            Field::RestartSchedule => {
                spec.restart_schedule = None;
                said(format!("{}: the restart schedule removed", e.problem));
            }
            Field::Watch => {
                spec.watch.clear();
                spec.watch_ignore.clear();
                spec.watch_debounce = crate::model::DEFAULT_WATCH_DEBOUNCE;
                said(format!("{}: watching removed", e.problem));
            }
            Field::MaxMemory => {
                spec.max_memory = None;
                spec.memory_grace = crate::model::DEFAULT_MEMORY_GRACE;
                said(format!("{}: the memory limit removed", e.problem));
            }
            Field::EnvProfile => {
                spec.profile = None;
                said(format!("{}: the env profile removed", e.problem));
            }
            Field::File => {
                spec.file = None;
                said(format!("{}: it belongs to no app file now", e.problem));
            }
            Field::Instances => {
                spec.instances = spec.instances.clamp(1, crate::model::MAX_INSTANCES);
                said(format!("{}: instances set within range", e.problem));
            }
            Field::ReloadGrace => {
                spec.reload_grace = crate::model::DEFAULT_RELOAD_GRACE;
                said(format!("{}: reload_grace set to the default", e.problem));
            }
            // Who it runs as, and the sockets it is given, have no safe default: the app is set
            // aside.
            Field::RunAs | Field::Sockets => return Err(e.problem),
            Field::Name | Field::Cmd | Field::Cwd | Field::Env => return Err(e.problem),
        }
    }
    spec.check().map_err(|e| e.problem)
}

/// Reads and parses the file; see [`load`].
fn load_file(path: &Path) -> io::Result<Loaded> {
    let bytes = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Loaded {
                state: fresh(),
                warning: None,
            })
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    // The version first: a file from another grpm version is refused, never set aside.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let parsed = match std::str::from_utf8(&bytes) {
        Err(e) => Err(format!("not UTF-8: {e}")),
        Ok(text) => match serde_json::from_str::<Version>(text) {
            Ok(v) if v.version != VERSION => Ok(Err(v.version)),
            _ => serde_json::from_str::<DiskState>(text)
                .map_err(|e| e.to_string())
                .and_then(DiskState::into_state)
                .map(Ok),
        },
    };
    match parsed {
        Ok(Ok(state)) => Ok(Loaded {
            state,
            warning: None,
        }),
        Ok(Err(version)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has version {version}; this grpm reads version {VERSION}",
                path.display()
            ),
        )),
        Err(e) => {
            let aside = path.with_extension(format!("json.corrupt-{}", now_unix_ms()));
            fs::rename(path, &aside)?;
            Ok(Loaded {
                state: fresh(),
                warning: Some(format!(
                    "{} is corrupt ({e}); kept it as {} and started with no apps",
                    path.display(),
                    aside.display()
                )),
            })
        }
    }
}

fn fresh() -> StateFile {
    StateFile {
        agent_id: random_id(),
        next_id: 1,
        apps: Vec::new(),
        home: None,
        repaired: false,
    }
}

fn random_id() -> String {
    let mut buf = [0u8; 8];
    let ok =
        fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut buf));
    if ok.is_err() {
        buf = (now_unix_ms() ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

struct Inner {
    agent_id: String,
    home: Option<HomeBinding>,
    next_id: AppId,
    apps: BTreeMap<(AppId, u32), AppRecord>,
    /// Bumped by every change.
    generation: u64,
    /// How many apps the loaded file held, and how many deletes happened since: an empty list
    /// is written over a non-empty file only when deletes explain it.
    loaded: usize,
    deletes: usize,
}

/// The writer's progress: the newest generation on disk, and the last failure.
#[derive(Clone, Debug, Default)]
struct Flushed {
    written: u64,
    failed: Option<(u64, StoreError)>,
}

pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
    dirty: Notify,
    flushed: watch::Sender<Flushed>,
    /// Successful writes of state.json (for metrics).
    writes: std::sync::atomic::AtomicU64,
}

impl Store {
    /// A store holding `state`; a state that loading repaired is written as soon as the
    /// writer runs.
    pub fn new(path: PathBuf, state: &StateFile) -> Arc<Store> {
        let store = Arc::new(Store {
            path,
            inner: Mutex::new(Inner {
                agent_id: state.agent_id.clone(),
                home: state.home.clone(),
                next_id: state.next_id,
                apps: state
                    .apps
                    .iter()
                    .map(|a| ((a.id, a.slot), a.clone()))
                    .collect(),
                generation: u64::from(state.repaired),
                loaded: state.apps.len(),
                deletes: 0,
            }),
            dirty: Notify::new(),
            flushed: watch::Sender::new(Flushed::default()),
            writes: Default::default(),
        });
        if state.repaired {
            store.dirty.notify_one();
        }
        store
    }

    fn change(&self, f: impl FnOnce(&mut Inner)) -> u64 {
        let gen = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut inner);
            inner.generation += 1;
            inner.generation
        };
        self.dirty.notify_one();
        gen
    }

    /// Records an app (new or changed); returns the generation to wait for.
    pub fn put(&self, rec: AppRecord) -> u64 {
        self.change(|i| {
            i.apps.insert((rec.id, rec.slot), rec);
        })
    }

    /// Forgets one instance's record (`(app id, slot)`).
    pub fn remove(&self, id: (AppId, u32)) -> u64 {
        self.change(|i| {
            if i.apps.remove(&id).is_some() {
                i.deletes += 1;
            }
        })
    }

    pub fn set_next_id(&self, next: AppId) -> u64 {
        self.change(|i| i.next_id = next)
    }

    /// Waits until generation `gen` is on disk.
    pub async fn flushed(&self, gen: u64) -> Result<(), StoreError> {
        let mut rx = self.flushed.subscribe();
        let state = rx
            .wait_for(|f| f.written >= gen || f.failed.as_ref().is_some_and(|(g, _)| *g >= gen))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        if state.written >= gen {
            Ok(())
        } else {
            Err(state
                .failed
                .as_ref()
                .map_or(StoreError::WriterStopped, |(_, e)| e.clone()))
        }
    }

    /// Serializes the current state: records are cloned under the lock (cheap: environments
    /// are shared), and turned into bytes after it is released.
    fn snapshot(&self) -> Result<(u64, Vec<u8>), (u64, StoreError)> {
        let (gen, agent_id, next_id, apps, home) = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let gen = inner.generation;
            if inner.apps.is_empty() && inner.loaded > 0 && inner.deletes == 0 {
                return Err((gen, StoreError::WouldEmpty));
            }
            let apps: Vec<AppRecord> = inner.apps.values().cloned().collect();
            (
                gen,
                inner.agent_id.clone(),
                inner.next_id,
                apps,
                inner.home.clone(),
            )
        };
        let disk = DiskState::from_records(&agent_id, next_id, &apps, home);
        serde_json::to_vec(&disk)
            .map(|bytes| (gen, bytes))
            .map_err(|e| (gen, StoreError::Encode(e.to_string())))
    }

    fn write_once(&self) -> Result<u64, (u64, StoreError)> {
        let (gen, bytes) = self.snapshot()?;
        write_atomic(&self.path, &bytes).map(|()| gen).map_err(|e| {
            (
                gen,
                StoreError::Write {
                    path: self.path.clone(),
                    err: e.into(),
                },
            )
        })
    }

    /// Successful writes of state.json since the agent started.
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records a write's outcome; returns whether it succeeded.
    fn publish(&self, result: Result<u64, (u64, StoreError)>) -> bool {
        if result.is_ok() {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut ok = false;
        self.flushed.send_modify(|f| match result {
            Ok(gen) => {
                f.written = f.written.max(gen);
                ok = true;
            }
            Err((gen, msg)) => f.failed = Some((gen, msg)),
        });
        ok
    }

    /// Whether changes are not on disk yet (failed writes included: they are retried).
    fn unwritten(&self) -> bool {
        let gen = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation;
        gen > self.flushed.borrow().written
    }

    /// The writer task: one write per burst of changes, until `shutdown`, then a last flush.
    ///
    /// A failed write (a full disk) fails the requests waiting for it: their change is made
    /// and stays made, and their error says the state is not written yet. The writer then
    /// tries again, after 100 ms doubling up to 5 s, or at once on the next change, until it
    /// succeeds; the log says when it failed first and when it wrote again.
    pub async fn run_writer(self: Arc<Self>, shutdown: CancellationToken) {
        const FIRST_RETRY: Duration = Duration::from_millis(100);
        const LAST_RETRY: Duration = Duration::from_secs(5);
        let mut retry: Option<Duration> = None;
        let mut failures = 0u64;
        loop {
            match retry {
                None => tokio::select! {
                    _ = self.dirty.notified() => {}
                    _ = shutdown.cancelled() => break,
                },
                Some(delay) => tokio::select! {
                    _ = self.dirty.notified() => {}
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => break,
                },
            }
            while self.unwritten() {
                let me = self.clone();
                let result = tokio::task::spawn_blocking(move || me.write_once())
                    .await
                    .unwrap_or(Err((0, StoreError::WriterStopped)));
                if let Err((_, e)) = &result {
                    if failures == 0 {
                        tracing::error!(
                            error = %e,
                            "state.json not written; changes are applied and kept in memory, \
                             and written as soon as the disk allows"
                        );
                    }
                }
                if self.publish(result) {
                    if failures > 0 {
                        tracing::info!(failures, "state.json written again");
                    }
                    failures = 0;
                    retry = None;
                } else {
                    failures += 1;
                    retry = Some(retry.map_or(FIRST_RETRY, |d| (d * 2).min(LAST_RETRY)));
                    break;
                }
            }
        }
        if self.unwritten() {
            let result = self.write_once();
            if let Err((_, e)) = &result {
                tracing::error!(error = %e, "state.json not written at shutdown");
            }
            self.publish(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RestartPolicy, Signal};

    fn record(id: AppId) -> AppRecord {
        AppRecord {
            id,
            instance: 0,
            slot: 0,
            spec: AppSpec {
                name: format!("app{id}"),
                cmd: vec!["sleep".into(), "1".into()],
                cwd: "/".into(),
                env: Env::new(),
                kill_timeout: AppSpec::DEFAULT_KILL_TIMEOUT,
                stop_signal: Signal::TERM,
                autorestart: true,
                restart: RestartPolicy::default(),
                ready: None,
                alive: None,
                depends_on: Vec::new(),
                restart_schedule: None,
                watch: Vec::new(),
                watch_ignore: Vec::new(),
                watch_debounce: crate::model::DEFAULT_WATCH_DEBOUNCE,
                user: None,
                group: None,
                umask: None,
                limits: Default::default(),
                max_memory: None,
                memory_grace: crate::model::DEFAULT_MEMORY_GRACE,
                profile: None,
                file: None,
                instances: 1,
                sockets: Vec::new(),
                reload_grace: crate::model::DEFAULT_RELOAD_GRACE,
                logs: Default::default(),
            },
            base_env: Arc::new(Env::new()),
            desired: Desired::Online,
            created_at_unix_ms: 0,
            restarts: 0,
            pid: None,
            pid_starttime: None,
            last_exit: None,
        }
    }

    #[test]
    fn shared_environments_are_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = Store::new(path.clone(), &fresh());
        let env: Env = [("K".to_string(), "v".to_string())].into();
        for id in 1..=3 {
            let mut r = record(id);
            r.base_env = Arc::new(env.clone()); // equal content, distinct allocations
            store.put(r);
        }
        let mut other = record(4);
        other.base_env = Arc::new(Env::new());
        store.put(other);
        store.write_once().unwrap();
        let raw: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(raw["envs"].as_array().unwrap().len(), 2);
        let back = load(&path).unwrap().state;
        assert_eq!(*back.apps[2].base_env, env);
        assert!(back.apps[3].base_env.is_empty());
        // A dangling reference is corruption, not a panic.
        fs::write(
            &path,
            fs::read_to_string(&path)
                .unwrap()
                .replace("\"base_env\":1", "\"base_env\":7"),
        )
        .unwrap();
        assert!(load(&path)
            .unwrap()
            .warning
            .unwrap()
            .contains("environment 7"));
    }

    #[test]
    fn round_trips_and_writes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let loaded = load(&path).unwrap();
        assert!(loaded.state.apps.is_empty() && loaded.warning.is_none());
        let store = Store::new(path.clone(), &loaded.state);
        store.put(record(1));
        store.set_next_id(2);
        assert_eq!(store.write_once().map_err(|e| e.1), Ok(2));
        assert!(!path.with_extension("json.tmp").exists());
        let again = load(&path).unwrap().state;
        assert_eq!((again.next_id, again.apps.len()), (2, 1));
        assert_eq!(again.agent_id, loaded.state.agent_id);
    }

    #[test]
    fn never_writes_an_empty_list_over_a_non_empty_file_unless_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = fresh();
        state.apps = vec![record(1), record(2)];
        let store = Store::new(path.clone(), &state);
        // Emptied without a delete (a bug somewhere): refused.
        store.inner.lock().unwrap().apps.clear();
        let err = store.write_once().unwrap_err().1;
        assert_eq!(err, StoreError::WouldEmpty);
        assert!(!path.exists());
        // Emptied by deletes: written.
        let store = Store::new(path.clone(), &state);
        store.remove((1, 0));
        store.remove((2, 0));
        assert!(store.write_once().is_ok());
        assert!(load(&path).unwrap().state.apps.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{\"version\": 1, \"apps\": [").unwrap();
        let loaded = load(&path).unwrap();
        let warning = loaded.warning.unwrap();
        assert!(
            warning.contains("corrupt") && warning.contains("state.json.corrupt-"),
            "{warning}"
        );
        assert!(!path.exists());
        fs::create_dir(&path).unwrap(); // reading a directory fails: not "corrupt", an error
        assert!(load(&path).is_err());
        fs::remove_dir(&path).unwrap();
        fs::write(
            &path,
            "{\"version\": 99, \"agent_id\": \"x\", \"next_id\": 1, \"apps\": []}",
        )
        .unwrap();
        let e = load(&path).err().unwrap().to_string();
        assert!(e.contains("version 99"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_then_retried_until_it_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // The temporary file cannot be created while a directory takes its name: as a full
        // disk, every write fails.
        let blocker = dir.path().join("state.json.tmp");
        fs::create_dir(&blocker).unwrap();
        let store = Store::new(path.clone(), &fresh());
        let stop = CancellationToken::new();
        let writer = tokio::spawn(store.clone().run_writer(stop.clone()));
        let gen = store.put(record(1));
        let err = store.flushed(gen).await.unwrap_err();
        assert!(matches!(err, StoreError::Write { .. }), "{err}");
        assert!(!path.exists());
        // Space returns: the writer gets it out with no further change.
        fs::remove_dir(&blocker).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.flushed.borrow().written < gen {
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(load(&path).unwrap().state.apps.len(), 1);
        assert!(store.flushed(gen).await.is_ok());
        stop.cancel();
        writer.await.unwrap();
    }

    fn write_state(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut state = fresh();
        state.next_id = 3;
        state.apps = vec![record(1), record(2)];
        let disk = DiskState::from_records(&state.agent_id, 3, &state.apps, HomeBinding::of(path));
        let mut v = serde_json::to_value(&disk).unwrap();
        edit(&mut v);
        fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    #[test]
    fn a_hand_edited_state_is_checked_as_the_api_checks_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Not UTF-8: corrupt, set aside, reported; not an error that stops the agent.
        fs::write(&path, b"{\"version\": 1, \"agent_id\": \"\xff\xfe\"}").unwrap();
        let w = load(&path).unwrap().warning.unwrap();
        assert!(w.contains("not UTF-8") && w.contains("corrupt-"), "{w}");
        // Duplicate ids and names, next_id at or below an id: the later app is refused,
        // next_id is repaired, and the file as it was is kept.
        write_state(&path, |v| {
            v["apps"][1]["id"] = 1.into();
            v["next_id"] = 1.into();
        });
        let s = load(&path).unwrap().state;
        assert_eq!((s.apps.len(), s.next_id, s.repaired), (1, 2, true));
        assert!(fs::read_dir(dir.path()).unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("state.json.before-repair-")));
        write_state(&path, |v| v["apps"][1]["spec"]["name"] = "app1".into());
        assert_eq!(load(&path).unwrap().state.apps.len(), 1);
        // Ids near the integer's end: refused, and counting never overflows.
        write_state(&path, |v| {
            v["apps"][1]["id"] = u64::MAX.into();
            v["next_id"] = u64::MAX.into();
        });
        let s = load(&path).unwrap().state;
        assert_eq!((s.apps.len(), s.next_id), (1, 2));
        // Settings the API would refuse have defaults: repaired, the app kept.
        write_state(&path, |v| {
            let spec = &mut v["apps"][0]["spec"];
            spec["logs"]["max_size"] = 0.into();
            spec["kill_timeout"] = (86_400_000u64 * 365 * 10).into();
            spec["restart"]["delay"] = 0.into();
        });
        let s = load(&path).unwrap().state;
        assert_eq!(s.apps.len(), 2);
        let spec = &s.apps[0].spec;
        assert!(spec.check().is_ok());
        assert_eq!(spec.kill_timeout, AppSpec::DEFAULT_KILL_TIMEOUT);
        // A command the API would refuse has none: the app is left out.
        write_state(&path, |v| {
            v["apps"][0]["spec"]["cmd"] = serde_json::json!([])
        });
        assert_eq!(load(&path).unwrap().state.apps[0].id, 2);
        // A clean file is not rewritten.
        write_state(&path, |_| {});
        assert!(!load(&path).unwrap().state.repaired);
        // Instances of one app share its id and name; an instance recorded twice (both of a
        // reload's overlap) keeps its first record; a slot that is not its instance's is refused.
        let same = |instance: u32, slot: u32| {
            move |v: &mut serde_json::Value| {
                v["apps"][1] = v["apps"][0].clone();
                v["apps"][1]["instance"] = instance.into();
                v["apps"][1]["slot"] = slot.into();
            }
        };
        write_state(&path, same(1, 3));
        let s = load(&path).unwrap().state;
        assert_eq!(
            (s.apps.len(), s.apps[1].instance, s.apps[1].slot),
            (2, 1, 3)
        );
        write_state(&path, same(0, 1));
        assert_eq!(load(&path).unwrap().state.apps.len(), 1);
        write_state(&path, same(1, 5));
        assert_eq!(load(&path).unwrap().state.apps.len(), 1);
    }

    #[test]
    fn a_copied_home_gets_its_own_agent_id() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir(&a).unwrap();
        write_state(&a.join("state.json"), |_| {});
        let original = load(&a.join("state.json")).unwrap().state;
        assert!(!original.repaired);
        // `cp -r a b`: the same file in another directory.
        fs::create_dir(&b).unwrap();
        fs::copy(a.join("state.json"), b.join("state.json")).unwrap();
        let copy = load(&b.join("state.json")).unwrap().state;
        assert_ne!(copy.agent_id, original.agent_id);
        assert!(copy.repaired);
        assert_eq!(copy.home, HomeBinding::of(&b.join("state.json")));
        // The original keeps its id; a renamed home (same directory) keeps it too.
        let moved = dir.path().join("moved");
        fs::rename(&a, &moved).unwrap();
        let again = load(&moved.join("state.json")).unwrap().state;
        assert_eq!(again.agent_id, original.agent_id);
    }
}
