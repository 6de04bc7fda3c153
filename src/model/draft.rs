//! An app spec as a user writes it: an app-file entry, `grpm start` flags, or a wire message.
//! Every setting but the name and the command may be left out and then takes its documented
//! default. [`AppDraft::resolve`] fills the defaults in and runs the one set of rules
//! ([`AppSpec::check`]), so the CLI, app files and the agent's edge refuse the same values with
//! the same messages.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    AppSpec, Dependency, Env, InvalidSpec, Liveness, LogPolicy, Readiness, RestartPolicy, Signal,
};

/// What a user declared about a new app; `None` means "the default".
#[derive(Clone, Default, PartialEq)]
pub struct AppDraft {
    pub name: String,
    /// Program and arguments.
    pub cmd: Vec<String>,
    /// Absolute working directory; `None`: the agent's default (its home directory).
    pub cwd: Option<PathBuf>,
    /// Declared variables.
    pub env: Env,
    pub kill_timeout: Option<Duration>,
    pub stop_signal: Option<Signal>,
    pub autorestart: Option<bool>,
    pub restart_delay: Option<Duration>,
    pub restart_delay_max: Option<Duration>,
    pub max_restarts: Option<u32>,
    pub restart_window: Option<Duration>,
    pub log_time: bool,
    pub log_max_size: Option<u64>,
    pub log_keep: Option<u32>,
    /// Checks and dependencies are declared whole (their own timings default inside them).
    pub ready: Option<Readiness>,
    pub alive: Option<Liveness>,
    pub depends_on: Vec<Dependency>,
    pub restart_schedule: Option<String>,
    pub watch: Vec<String>,
    pub watch_ignore: Vec<String>,
    pub watch_debounce: Option<Duration>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub limits: std::collections::BTreeMap<String, u64>,
    pub max_memory: Option<u64>,
    pub memory_grace: Option<u32>,
    /// The env profile chosen (`--env-profile`), with its variables for this app.
    pub profile: Option<super::EnvProfile>,
    /// The app file it comes from (canonical, absolute).
    pub file: Option<PathBuf>,
    /// How many instances (default 1).
    pub instances: Option<u32>,
    pub sockets: Vec<super::SocketSpec>,
    pub reload_grace: Option<Duration>,
}

/// A duration as the API carries it: whole milliseconds, at least one (zero means "default").
pub fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().clamp(1, u128::from(u64::MAX)) as u64)
}

/// `path` without `.` components, repeated or trailing separators (`/x/examples/.` is
/// `/x/examples`), lexically: `..` stays, and no symlink is resolved (so the spec says what was
/// asked for, and a symlinked release directory keeps working across deploys).
fn lexical(path: &Path) -> PathBuf {
    let clean: PathBuf = path.components().collect();
    if clean.as_os_str().is_empty() {
        path.to_path_buf()
    } else {
        clean
    }
}

impl AppDraft {
    /// The spec this draft declares, with defaults filled in and `default_cwd` where no cwd is
    /// given; not checked (see [`AppDraft::resolve`]).
    pub fn fill(&self, default_cwd: &std::path::Path) -> AppSpec {
        let defaults = RestartPolicy::default();
        let ms = |d: Option<Duration>, default: Duration| d.map_or(default, whole_millis);
        AppSpec {
            name: self.name.clone(),
            cmd: self.cmd.clone(),
            cwd: lexical(self.cwd.as_deref().unwrap_or(default_cwd)),
            env: self.env.clone(),
            kill_timeout: ms(self.kill_timeout, AppSpec::DEFAULT_KILL_TIMEOUT),
            stop_signal: self.stop_signal.unwrap_or(Signal::TERM),
            autorestart: self.autorestart.unwrap_or(true),
            restart: RestartPolicy {
                delay: ms(self.restart_delay, defaults.delay),
                delay_max: ms(self.restart_delay_max, defaults.delay_max),
                max_restarts: self.max_restarts.unwrap_or(defaults.max_restarts),
                window: ms(self.restart_window, defaults.window),
            },
            logs: LogPolicy {
                time: self.log_time,
                max_size: self.log_max_size.unwrap_or(LogPolicy::DEFAULT_MAX_SIZE),
                keep: self.log_keep.unwrap_or(LogPolicy::DEFAULT_KEEP),
            },
            ready: self.ready.clone(),
            alive: self.alive.clone(),
            depends_on: self.depends_on.clone(),
            restart_schedule: self.restart_schedule.clone(),
            watch: self.watch.clone(),
            watch_ignore: self.watch_ignore.clone(),
            watch_debounce: ms(self.watch_debounce, super::DEFAULT_WATCH_DEBOUNCE),
            user: self.user.clone(),
            group: self.group.clone(),
            umask: self.umask,
            limits: self.limits.clone(),
            max_memory: self.max_memory,
            memory_grace: self.memory_grace.unwrap_or(super::DEFAULT_MEMORY_GRACE),
            profile: self.profile.clone(),
            file: self.file.clone(),
            instances: self.instances.unwrap_or(1),
            sockets: self.sockets.clone(),
            reload_grace: ms(self.reload_grace, super::DEFAULT_RELOAD_GRACE),
        }
    }

    /// The checked spec: defaults filled in (`default_cwd` where no cwd is given), then every
    /// rule and bound of [`AppSpec::check`].
    pub fn resolve(&self, default_cwd: &std::path::Path) -> Result<AppSpec, InvalidSpec> {
        let spec = self.fill(default_cwd);
        spec.check()?;
        Ok(spec)
    }

    /// Checks the draft before it is sent: the same rules the agent runs. A missing cwd is
    /// the agent's to choose, and always valid.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        self.resolve(std::path::Path::new("/")).map(|_| ())
    }
}

/// Hand-written so that env values (which often hold secrets) never reach a log.
impl fmt::Debug for AppDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppDraft")
            .field("name", &self.name)
            .field("cmd", &self.cmd)
            .field("cwd", &self.cwd)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("kill_timeout", &self.kill_timeout)
            .field("stop_signal", &self.stop_signal)
            .field("autorestart", &self.autorestart)
            .field("restart_delay", &self.restart_delay)
            .field("restart_delay_max", &self.restart_delay_max)
            .field("max_restarts", &self.max_restarts)
            .field("restart_window", &self.restart_window)
            .field("log_time", &self.log_time)
            .field("log_max_size", &self.log_max_size)
            .field("log_keep", &self.log_keep)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Field;

    fn draft() -> AppDraft {
        AppDraft {
            name: "web".into(),
            cmd: vec!["sleep".into(), "1".into()],
            ..AppDraft::default()
        }
    }

    #[test]
    fn cwds_are_normalised_lexically() {
        for (given, spec) in [
            ("/x/examples/.", "/x/examples"),
            ("/x/./examples/", "/x/examples"),
            ("/x//examples/./.", "/x/examples"),
            ("/x/link/../y", "/x/link/../y"),
            ("/.", "/"),
            ("/", "/"),
        ] {
            let mut d = draft();
            d.cwd = Some(given.into());
            assert_eq!(
                d.fill(Path::new("/srv")).cwd,
                PathBuf::from(spec),
                "{given}"
            );
        }
        assert_eq!(draft().fill(Path::new("/srv/.")).cwd, PathBuf::from("/srv"));
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let spec = draft().resolve(std::path::Path::new("/srv")).unwrap();
        assert_eq!(spec.cwd, PathBuf::from("/srv"));
        assert_eq!(spec.kill_timeout, AppSpec::DEFAULT_KILL_TIMEOUT);
        assert_eq!(spec.restart, RestartPolicy::default());
        assert_eq!(spec.logs, LogPolicy::default());
        assert!(spec.autorestart);
    }

    #[test]
    fn a_set_duration_is_at_least_a_millisecond() {
        let d = AppDraft {
            kill_timeout: Some(Duration::ZERO),
            restart_delay: Some(Duration::from_micros(10)),
            ..draft()
        };
        let spec = d.resolve(std::path::Path::new("/")).unwrap();
        assert_eq!(spec.kill_timeout, Duration::from_millis(1));
        assert_eq!(spec.restart.delay, Duration::from_millis(1));
    }

    #[test]
    fn bounds_name_their_field() {
        let cases: Vec<(AppDraft, Field, &str)> = vec![
            (
                AppDraft {
                    max_restarts: Some(0),
                    ..draft()
                },
                Field::MaxRestarts,
                "app web: max_restarts 0 is out of range: between 1 and 100000",
            ),
            (
                AppDraft {
                    max_restarts: Some(100_001),
                    ..draft()
                },
                Field::MaxRestarts,
                "app web: max_restarts 100001 is out of range: between 1 and 100000",
            ),
            (
                AppDraft {
                    log_keep: Some(101),
                    ..draft()
                },
                Field::LogKeep,
                "app web: log_keep 101 is out of range: between 1 and 100",
            ),
            (
                AppDraft {
                    log_max_size: Some(10),
                    log_keep: Some(0),
                    ..draft()
                },
                Field::LogMaxSize,
                "between 1K and 1T",
            ),
            (
                AppDraft {
                    cwd: Some("rel".into()),
                    ..draft()
                },
                Field::Cwd,
                "not an absolute path",
            ),
            (
                AppDraft {
                    name: "a b".into(),
                    ..draft()
                },
                Field::Name,
                "app name \"a b\" contains ' '",
            ),
            (
                AppDraft {
                    restart_delay_max: Some(Duration::from_secs(7200)),
                    ..draft()
                },
                Field::RestartDelayMax,
                "between 1ms and 1h",
            ),
        ];
        for (d, field, want) in cases {
            let e = d.validate().expect_err(want);
            assert_eq!(e.field, field, "{e}");
            assert!(
                e.to_string().starts_with(want) || e.to_string().contains(want),
                "{e}"
            );
        }
    }
}
