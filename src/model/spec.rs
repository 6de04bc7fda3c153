//! The app spec: what to run and how to supervise it, validated at the edge.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    instances::{check_sockets, SocketSpec, MAX_INSTANCES},
    probe::{check_dependencies, AliveCheck, Dependency, Liveness, Readiness, ReadyCheck},
    validate_name, LogPolicy, Signal,
};

/// An environment: names to values, in a stable order.
pub type Env = BTreeMap<String, String>;

/// Bounds on what one request may carry. Linux refuses an exec whose argv and environment
/// together pass 2 MiB, or one string past 128 KiB, so we refuse earlier with a clear message.
pub struct Limits {
    pub argv_count: usize,
    pub argv_bytes: usize,
    pub env_count: usize,
    pub env_bytes: usize,
    pub string_bytes: usize,
}

pub const LIMITS: Limits = Limits {
    argv_count: 4096,
    argv_bytes: 256 * 1024,
    env_count: 4096,
    env_bytes: 1024 * 1024,
    string_bytes: 128 * 1024,
};

/// When and how fast an app is restarted after an unexpected exit.
///
/// The delay starts at `delay`, doubles after each autorestart and is capped at `delay_max`; it
/// starts over once the app has stayed up for [`RestartPolicy::STABLE_AFTER`]. More than
/// `max_restarts` autorestarts within `window` mark the app errored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    #[serde(with = "millis")]
    pub delay: Duration,
    #[serde(with = "millis")]
    pub delay_max: Duration,
    pub max_restarts: u32,
    #[serde(with = "millis")]
    pub window: Duration,
}

impl RestartPolicy {
    /// An app that stayed up this long is healthy again: the backoff starts over.
    pub const STABLE_AFTER: Duration = Duration::from_secs(30);
    /// The largest `max_restarts`.
    pub const MAX_RESTARTS: u32 = 100_000;
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            delay: Duration::from_millis(100),
            delay_max: Duration::from_secs(3),
            max_restarts: 15,
            window: Duration::from_secs(60),
        }
    }
}

/// What to run and how to supervise it. Defaults are filled in; the base environment the app was
/// created with is kept apart (see the supervisor's record), so that this stays what the user
/// declared.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    /// Program and arguments.
    pub cmd: Vec<String>,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Declared variables; they win over the base environment.
    #[serde(default)]
    pub env: Env,
    #[serde(with = "millis")]
    pub kill_timeout: Duration,
    pub stop_signal: Signal,
    pub autorestart: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Timestamps and rotation of the app's output.
    #[serde(default)]
    pub logs: LogPolicy,
    /// When the app counts as ready; `None`: online as soon as it is spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Readiness>,
    /// How to tell that a ready app is still healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<Liveness>,
    /// Apps started before this one (and stopped after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// Restart on this cron schedule (local time), when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_schedule: Option<String>,
    /// Restart when these paths (relative to `cwd`; `*` patterns allowed in the last
    /// component) change, once per burst of `watch_debounce`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
    /// Changes to paths matching these are not restarts (beside the defaults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_ignore: Vec<String>,
    #[serde(default = "default_debounce", with = "millis")]
    pub watch_debounce: Duration,
    /// Run as this user (and its groups), when the agent runs as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run with this group instead of the user's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,
    /// Resource limits (soft and hard), by name: nofile, nproc, core, memlock, stack...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, u64>,
    /// Restart when the tree's memory stays above this many bytes for `memory_grace` samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
    #[serde(default = "default_grace")]
    pub memory_grace: u32,
    /// The env profile it was created or applied with: its variables win over `env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<super::EnvProfile>,
    /// The app file it belongs to (canonical, absolute), when it was created from one: `grpm
    /// apply` of that file changes it, and `--prune` may delete it. Not a setting: specs that
    /// differ only here are equal for a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Processes of this app, each supervised on its own (`GRPM_INSTANCE` = 0..N-1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub instances: u32,
    /// Listening sockets the agent binds once and passes to every instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketSpec>,
    /// A reload waits this long for a replacement without a readiness check.
    #[serde(default = "default_reload_grace", with = "millis")]
    pub reload_grace: Duration,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn default_reload_grace() -> Duration {
    super::instances::DEFAULT_RELOAD_GRACE
}

/// Consecutive samples over `max_memory` before a restart.
pub const DEFAULT_MEMORY_GRACE: u32 = 2;

fn default_grace() -> u32 {
    DEFAULT_MEMORY_GRACE
}

fn default_debounce() -> Duration {
    super::triggers::DEFAULT_WATCH_DEBOUNCE
}

impl AppSpec {
    pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(5);

    /// Checks every field: the one set of rules and bounds for a spec, wherever it comes from
    /// (see [`AppDraft`](super::AppDraft)). The error names the app and the field, so that an
    /// app file can point at its line and the CLI at its flag.
    pub fn check(&self) -> Result<(), InvalidSpec> {
        let bad = |field: Field, problem: String| InvalidSpec {
            app: self.name.clone(),
            field,
            problem,
        };
        validate_name(&self.name).map_err(|m| bad(Field::Name, m))?;
        if self.cmd.is_empty() || self.cmd[0].is_empty() {
            return Err(bad(Field::Cmd, "the command is empty".into()));
        }
        if self.cmd.len() > LIMITS.argv_count {
            return Err(bad(
                Field::Cmd,
                format!(
                    "the command has {} arguments; at most {} are allowed",
                    self.cmd.len(),
                    LIMITS.argv_count
                ),
            ));
        }
        let mut total = 0;
        for (i, arg) in self.cmd.iter().enumerate() {
            check_string(&format!("argument {i}"), arg).map_err(|e| bad(Field::Cmd, e))?;
            total += arg.len() + 1;
        }
        if total > LIMITS.argv_bytes {
            return Err(bad(
                Field::Cmd,
                format!(
                    "the command is {total} bytes long; at most {} are allowed",
                    LIMITS.argv_bytes
                ),
            ));
        }
        let cwd = self.cwd.to_string_lossy();
        check_string("cwd", &cwd).map_err(|e| bad(Field::Cwd, e))?;
        if !self.cwd.is_absolute() {
            return Err(bad(
                Field::Cwd,
                format!("cwd {cwd:?} is not an absolute path"),
            ));
        }
        validate_env(&self.env).map_err(|e| bad(Field::Env, e))?;
        let hour = Duration::from_secs(3600);
        if self.kill_timeout > hour {
            return Err(bad(
                Field::KillTimeout,
                "kill timeout is longer than an hour".into(),
            ));
        }
        let r = &self.restart;
        if r.delay > r.delay_max {
            return Err(bad(
                Field::RestartDelay,
                format!(
                    "restart delay ({:?}) is longer than its maximum ({:?})",
                    r.delay, r.delay_max
                ),
            ));
        }
        let delays = "restart delays must be between 1ms and 1h, the window at most 24h";
        if r.delay.is_zero() {
            return Err(bad(Field::RestartDelay, delays.into()));
        }
        if r.delay_max > hour {
            return Err(bad(Field::RestartDelayMax, delays.into()));
        }
        if r.window > 24 * hour {
            return Err(bad(Field::RestartWindow, delays.into()));
        }
        if !(1..=RestartPolicy::MAX_RESTARTS).contains(&r.max_restarts) {
            return Err(bad(
                Field::MaxRestarts,
                format!(
                    "max_restarts {} is out of range: between 1 and {}",
                    r.max_restarts,
                    RestartPolicy::MAX_RESTARTS
                ),
            ));
        }
        // Size first, with the default keep, so that each message goes with its own field.
        let size_only = LogPolicy {
            keep: LogPolicy::DEFAULT_KEEP,
            ..self.logs
        };
        size_only
            .validate()
            .map_err(|e| bad(Field::LogMaxSize, e))?;
        self.logs.validate().map_err(|e| bad(Field::LogKeep, e))?;
        if let Some(r) = &self.ready {
            r.check().map_err(|e| bad(Field::Ready, e))?;
        }
        if let Some(l) = &self.alive {
            l.check().map_err(|e| bad(Field::Alive, e))?;
        }
        check_dependencies(&self.name, &self.depends_on).map_err(|e| bad(Field::DependsOn, e))?;
        if let Some(expr) = &self.restart_schedule {
            super::triggers::parse_schedule(expr).map_err(|e| bad(Field::RestartSchedule, e))?;
        }
        super::triggers::check_watch(&self.watch, &self.watch_ignore, self.watch_debounce)
            .map_err(|e| bad(Field::Watch, e))?;
        super::run_as::check_run_as(
            self.user.as_deref(),
            self.group.as_deref(),
            self.umask,
            &self.limits,
        )
        .map_err(|e| bad(Field::RunAs, e))?;
        if self.max_memory.is_some_and(|m| m < 1 << 20) {
            return Err(bad(
                Field::MaxMemory,
                "max_memory is below 1M; a tree that small is no app".into(),
            ));
        }
        if !(1..=100).contains(&self.memory_grace) {
            return Err(bad(
                Field::MaxMemory,
                format!(
                    "memory_grace {} is out of range: between 1 and 100",
                    self.memory_grace
                ),
            ));
        }
        if let Some(p) = &self.profile {
            p.check().map_err(|e| bad(Field::EnvProfile, e))?;
            let mut all = self.env.clone();
            all.extend(p.env.clone());
            validate_env(&all).map_err(|e| bad(Field::EnvProfile, e))?;
        }
        if let Some(f) = &self.file {
            let text = f.to_string_lossy();
            check_string("file", &text).map_err(|e| bad(Field::File, e))?;
            if !f.is_absolute() {
                return Err(bad(
                    Field::File,
                    format!("file {text:?} is not an absolute path"),
                ));
            }
        }
        if !(1..=MAX_INSTANCES).contains(&self.instances) {
            return Err(bad(
                Field::Instances,
                format!(
                    "instances {} is out of range: between 1 and {MAX_INSTANCES}",
                    self.instances
                ),
            ));
        }
        check_sockets(&self.sockets, self.ready.as_ref()).map_err(|e| bad(Field::Sockets, e))?;
        if self.reload_grace > hour {
            return Err(bad(
                Field::ReloadGrace,
                "reload_grace is longer than an hour".into(),
            ));
        }
        Ok(())
    }

    /// Whether the app gets a `NOTIFY_SOCKET`: it reports readiness or a watchdog over it.
    pub fn uses_notify(&self) -> bool {
        matches!(
            self.ready.as_ref().map(|r| &r.check),
            Some(ReadyCheck::Notify)
        ) || matches!(
            self.alive.as_ref().map(|l| &l.check),
            Some(AliveCheck::Watchdog(_))
        )
    }
}

/// The settings of a spec, as errors name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Cmd,
    Cwd,
    Env,
    KillTimeout,
    StopSignal,
    RestartDelay,
    RestartDelayMax,
    MaxRestarts,
    RestartWindow,
    LogMaxSize,
    LogKeep,
    Ready,
    Alive,
    DependsOn,
    RestartSchedule,
    Watch,
    RunAs,
    MaxMemory,
    EnvProfile,
    File,
    Instances,
    Sockets,
    ReloadGrace,
}

impl Field {
    /// The key in app files (and the field in the API).
    pub fn key(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Cmd => "cmd",
            Field::Cwd => "cwd",
            Field::Env => "env",
            Field::KillTimeout => "kill_timeout",
            Field::StopSignal => "stop_signal",
            Field::RestartDelay => "restart_delay",
            Field::RestartDelayMax => "restart_delay_max",
            Field::MaxRestarts => "max_restarts",
            Field::RestartWindow => "restart_window",
            Field::LogMaxSize => "log_max_size",
            Field::LogKeep => "log_keep",
            Field::Ready => "ready",
            Field::Alive => "alive",
            Field::DependsOn => "depends_on",
            Field::RestartSchedule => "restart_schedule",
            Field::Watch => "watch",
            Field::RunAs => "user",
            Field::MaxMemory => "max_memory",
            Field::EnvProfile => "env_profiles",
            Field::File => "file",
            Field::Instances => "instances",
            Field::Sockets => "sockets",
            Field::ReloadGrace => "reload_grace",
        }
    }
}

/// A spec that breaks a rule: which app, which field, and what is wrong. Shown as
/// "app web: max_restarts 0 is out of range: between 1 and 100000" (a bad name is shown alone,
/// since the name is what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct InvalidSpec {
    pub app: String,
    pub field: Field,
    /// What is wrong, without the app.
    pub problem: String,
}

impl InvalidSpec {
    fn message(&self) -> String {
        match self.field {
            Field::Name => self.problem.clone(),
            _ => format!("app {}: {}", self.app, self.problem),
        }
    }
}

/// Hand-written so that env values (which often hold secrets) never reach a log.
impl fmt::Debug for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSpec")
            .field("name", &self.name)
            .field("cmd", &self.cmd)
            .field("cwd", &self.cwd)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("kill_timeout", &self.kill_timeout)
            .field("stop_signal", &self.stop_signal)
            .field("autorestart", &self.autorestart)
            .field("restart", &self.restart)
            .field("logs", &self.logs)
            .field("ready", &self.ready)
            .field("alive", &self.alive)
            .field("depends_on", &self.depends_on)
            .field("restart_schedule", &self.restart_schedule)
            .field("watch", &self.watch)
            .field("watch_ignore", &self.watch_ignore)
            .field("watch_debounce", &self.watch_debounce)
            .field("user", &self.user)
            .field("group", &self.group)
            .field("umask", &self.umask)
            .field("limits", &self.limits)
            .field("max_memory", &self.max_memory)
            .field("memory_grace", &self.memory_grace)
            .field("profile", &self.profile)
            .field("file", &self.file)
            .field("instances", &self.instances)
            .field("sockets", &self.sockets)
            .field("reload_grace", &self.reload_grace)
            .finish()
    }
}

fn check_string(what: &str, s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    if s.len() > LIMITS.string_bytes {
        return Err(format!(
            "{what} is {} bytes long; at most {} are allowed",
            s.len(),
            LIMITS.string_bytes
        ));
    }
    Ok(())
}

/// Checks an environment: names non-empty, without '=' or NUL; values without NUL; bounded.
pub fn validate_env(env: &Env) -> Result<(), String> {
    if env.len() > LIMITS.env_count {
        return Err(format!(
            "the environment has {} variables; at most {} are allowed",
            env.len(),
            LIMITS.env_count
        ));
    }
    let mut total = 0;
    for (k, v) in env {
        if k.is_empty() {
            return Err("an environment variable has an empty name".into());
        }
        if k.contains('=') {
            return Err(format!("environment variable name {k:?} contains '='"));
        }
        check_string(&format!("environment variable name {k:?}"), k)?;
        check_string(&format!("the value of environment variable {k}"), v)?;
        total += k.len() + v.len() + 2;
    }
    if total > LIMITS.env_bytes {
        return Err(format!(
            "the environment is {total} bytes; at most {} are allowed",
            LIMITS.env_bytes
        ));
    }
    Ok(())
}

pub(super) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        AppSpec {
            name: "web".into(),
            cmd: vec!["sleep".into(), "1".into()],
            cwd: "/tmp".into(),
            env: Env::new(),
            kill_timeout: AppSpec::DEFAULT_KILL_TIMEOUT,
            stop_signal: Signal::TERM,
            autorestart: true,
            restart: RestartPolicy::default(),
            logs: LogPolicy::default(),
            ready: None,
            alive: None,
            depends_on: Vec::new(),
            restart_schedule: None,
            watch: Vec::new(),
            watch_ignore: Vec::new(),
            watch_debounce: default_debounce(),
            user: None,
            group: None,
            umask: None,
            limits: BTreeMap::new(),
            max_memory: None,
            memory_grace: DEFAULT_MEMORY_GRACE,
            profile: None,
            file: None,
            instances: 1,
            sockets: Vec::new(),
            reload_grace: crate::model::DEFAULT_RELOAD_GRACE,
        }
    }

    #[test]
    fn accepts_a_plain_spec() {
        assert_eq!(spec().check(), Ok(()));
    }

    #[test]
    fn refuses_bad_fields() {
        type Mutation = Box<dyn Fn(&mut AppSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.cmd.clear()), "command is empty"),
            (Box::new(|s| s.cmd[1] = "a\0b".into()), "NUL"),
            (Box::new(|s| s.cmd = vec!["x".into(); 5000]), "arguments"),
            (Box::new(|s| s.cmd[1] = "x".repeat(200_000)), "bytes long"),
            (Box::new(|s| s.cwd = "rel/dir".into()), "absolute"),
            (
                Box::new(|s| {
                    s.env.insert("A=B".into(), "1".into());
                }),
                "contains '='",
            ),
            (
                Box::new(|s| {
                    s.env.insert("".into(), "1".into());
                }),
                "empty name",
            ),
            (
                Box::new(|s| {
                    s.env.insert("K".into(), "\0".into());
                }),
                "NUL",
            ),
            (Box::new(|s| s.name = "../x".into()), "must start"),
            (
                Box::new(|s| s.restart.delay = Duration::from_secs(10)),
                "longer than its maximum",
            ),
        ];
        for (mutate, want) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.check().expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} does not mention {want:?}");
        }
    }

    #[test]
    fn debug_hides_env_values() {
        let mut s = spec();
        s.env.insert("TOKEN".into(), "hunter2".into());
        let shown = format!("{s:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
