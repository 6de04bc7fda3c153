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
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use super::error::StoreError;
use crate::home::write_atomic;
use crate::model::{now_unix_ms, AppId, AppSpec, Desired, Env};

const VERSION: u32 = 1;

/// One app as remembered across agent restarts.
#[derive(Clone)]
pub struct AppRecord {
    pub id: AppId,
    pub spec: AppSpec,
    /// The environment captured when the app was created (or at the last `--update-env`).
    pub base_env: Arc<Env>,
    pub desired: Desired,
    pub created_at_unix_ms: u64,
    pub restarts: u32,
    /// The main process last started, with its start time, so a new agent can adopt it.
    pub pid: Option<u32>,
    pub pid_starttime: Option<u64>,
}

/// What loading gives: the file's content, environments resolved.
pub struct StateFile {
    /// Random id of this home's agent, stamped on every app's environment as `GRPM_AGENT_ID`.
    pub agent_id: String,
    pub next_id: AppId,
    pub apps: Vec<AppRecord>,
}

/// One app as written: its environment is an index into `DiskState::envs`.
#[derive(Serialize, Deserialize)]
struct DiskApp {
    id: AppId,
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
}

#[derive(Serialize, Deserialize)]
struct DiskState {
    version: u32,
    agent_id: String,
    next_id: AppId,
    /// Each distinct captured environment, once.
    envs: Vec<Env>,
    apps: Vec<DiskApp>,
}

impl DiskState {
    fn from_records(agent_id: &str, next_id: AppId, apps: &[AppRecord]) -> DiskState {
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
                    spec: r.spec.clone(),
                    base_env: i,
                    desired: r.desired,
                    created_at_unix_ms: r.created_at_unix_ms,
                    restarts: r.restarts,
                    pid: r.pid,
                    pid_starttime: r.pid_starttime,
                }
            })
            .collect();
        DiskState {
            version: VERSION,
            agent_id: agent_id.to_string(),
            next_id,
            envs,
            apps,
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
                    spec: a.spec,
                    base_env: env,
                    desired: a.desired,
                    created_at_unix_ms: a.created_at_unix_ms,
                    restarts: a.restarts,
                    pid: a.pid,
                    pid_starttime: a.pid_starttime,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(StateFile {
            agent_id: self.agent_id,
            next_id: self.next_id,
            apps,
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
pub fn load(path: &Path) -> io::Result<Loaded> {
    let text = match fs::read_to_string(path) {
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
    let parsed = match serde_json::from_str::<Version>(&text) {
        Ok(v) if v.version != VERSION => Ok(Err(v.version)),
        _ => serde_json::from_str::<DiskState>(&text)
            .map_err(|e| e.to_string())
            .and_then(DiskState::into_state)
            .map(Ok),
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
    next_id: AppId,
    apps: BTreeMap<AppId, AppRecord>,
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
    pub fn new(path: PathBuf, state: &StateFile) -> Arc<Store> {
        Arc::new(Store {
            path,
            inner: Mutex::new(Inner {
                agent_id: state.agent_id.clone(),
                next_id: state.next_id,
                apps: state.apps.iter().map(|a| (a.id, a.clone())).collect(),
                generation: 0,
                loaded: state.apps.len(),
                deletes: 0,
            }),
            dirty: Notify::new(),
            flushed: watch::Sender::new(Flushed::default()),
            writes: Default::default(),
        })
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
            i.apps.insert(rec.id, rec);
        })
    }

    pub fn remove(&self, id: AppId) -> u64 {
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
        let (gen, agent_id, next_id, apps) = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let gen = inner.generation;
            if inner.apps.is_empty() && inner.loaded > 0 && inner.deletes == 0 {
                return Err((gen, StoreError::WouldEmpty));
            }
            let apps: Vec<AppRecord> = inner.apps.values().cloned().collect();
            (gen, inner.agent_id.clone(), inner.next_id, apps)
        };
        let disk = DiskState::from_records(&agent_id, next_id, &apps);
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

    fn publish(&self, result: Result<u64, (u64, StoreError)>) {
        if result.is_ok() {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.flushed.send_modify(|f| match result {
            Ok(gen) => f.written = f.written.max(gen),
            Err((gen, msg)) => {
                tracing::error!(error = %msg, "state.json not written");
                f.failed = Some((gen, msg));
            }
        });
    }

    fn pending(&self) -> bool {
        let gen = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation;
        let f = self.flushed.borrow();
        gen > f.written && f.failed.as_ref().is_none_or(|(g, _)| *g < gen)
    }

    /// The writer task: one write per burst of changes, until `shutdown`, then a last flush.
    pub async fn run_writer(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            while self.pending() {
                let me = self.clone();
                let result = tokio::task::spawn_blocking(move || me.write_once())
                    .await
                    .unwrap_or(Err((0, StoreError::WriterStopped)));
                self.publish(result);
            }
        }
        if self.pending() {
            let result = self.write_once();
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
            spec: AppSpec {
                name: format!("app{id}"),
                cmd: vec!["sleep".into(), "1".into()],
                cwd: "/".into(),
                env: Env::new(),
                kill_timeout: AppSpec::DEFAULT_KILL_TIMEOUT,
                stop_signal: Signal::TERM,
                autorestart: true,
                restart: RestartPolicy::default(),
                logs: Default::default(),
            },
            base_env: Arc::new(Env::new()),
            desired: Desired::Online,
            created_at_unix_ms: 0,
            restarts: 0,
            pid: None,
            pid_starttime: None,
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
        store.remove(1);
        store.remove(2);
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
}
