//! App files: TOML with `[[app]]` tables, read into the same drafts as `grpm start`'s flags
//! and checked by the same rules (the model's). Errors name the file, the line and the key.
//!
//! ```toml
//! [[app]]
//! name = "web"
//! cmd = ["python3", "-m", "http.server", "8080"]   # or one string, split like a shell would
//! cwd = "www"                                       # relative to the file's directory
//! env = { PORT = "8080" }
//! kill_timeout = "3s"                               # or an integer number of milliseconds
//! stop_signal = "SIGINT"
//! autorestart = true
//! log_time = true                                   # timestamp each line of output
//! log_max_size = "10M"                              # or an integer number of bytes
//! log_keep = 5                                      # rotated files kept per stream
//! ```

use std::{
    collections::{BTreeMap, HashSet},
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::checks::{self, AliveTable, DepValue, ReadyTable};
use crate::model::{
    parse_duration, parse_limit, parse_size, parse_umask, AppDraft, Env, Field, Signal,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    app: Vec<Spanned<Entry>>,
    /// Profiles for every app of the file: `[env_profiles.production]`.
    #[serde(default)]
    env_profiles: BTreeMap<Spanned<String>, BTreeMap<String, Spanned<Scalar>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Spanned<String>,
    cmd: Spanned<Cmd>,
    cwd: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<Scalar>>,
    kill_timeout: Option<Spanned<Dur>>,
    stop_signal: Option<Spanned<String>>,
    autorestart: Option<bool>,
    restart_delay: Option<Spanned<Dur>>,
    restart_delay_max: Option<Spanned<Dur>>,
    max_restarts: Option<Spanned<i64>>,
    restart_window: Option<Spanned<Dur>>,
    log_time: Option<bool>,
    log_max_size: Option<Spanned<Size>>,
    log_keep: Option<Spanned<i64>>,
    ready: Option<Spanned<ReadyTable>>,
    alive: Option<Spanned<AliveTable>>,
    #[serde(default)]
    depends_on: Option<Spanned<Vec<DepValue>>>,
    restart_schedule: Option<Spanned<String>>,
    #[serde(default)]
    watch: Option<Spanned<Paths>>,
    #[serde(default)]
    watch_ignore: Option<Spanned<Paths>>,
    watch_debounce: Option<Spanned<Dur>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    umask: Option<Spanned<Scalar>>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<Scalar>>,
    max_memory: Option<Spanned<Size>>,
    memory_grace: Option<Spanned<i64>>,
    /// This app's profiles: `[app.env_profiles.production]`, over the file's.
    #[serde(default)]
    env_profiles: BTreeMap<Spanned<String>, BTreeMap<String, Spanned<Scalar>>>,
    instances: Option<Spanned<i64>>,
    #[serde(default)]
    sockets: Option<Spanned<Vec<SocketEntry>>>,
    reload_grace: Option<Spanned<Dur>>,
}

/// `{ name = "http", listen = "127.0.0.1:8080", backlog = 1024 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SocketEntry {
    name: String,
    listen: String,
    backlog: Option<i64>,
}

impl SocketEntry {
    fn into_model(self) -> Result<crate::model::SocketSpec, String> {
        let backlog = match self.backlog {
            None => crate::model::DEFAULT_BACKLOG,
            Some(b) => u32::try_from(b)
                .map_err(|_| format!("socket {}: backlog {b} is out of range", self.name))?,
        };
        Ok(crate::model::SocketSpec {
            listen: crate::model::Listen::parse(&self.listen)
                .map_err(|e| format!("socket {}: {e}", self.name))?,
            name: self.name,
            backlog,
        })
    }
}

/// One path or pattern, or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Paths {
    fn list(&self) -> Vec<String> {
        match self {
            Paths::One(p) => vec![p.clone()],
            Paths::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Cmd {
    Line(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Dur {
    Millis(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Reads the apps of `path` as checked drafts, ready to send, each marked with the file's
/// canonical path (the apps `grpm apply` of this file may change). For the local agent, `cwd`s
/// are made absolute against the file's directory; for remote agents (`remote`) this machine's
/// paths mean nothing, so a `cwd` must be absolute, and without one an app runs in the agent's
/// home. `profile`: the env profile to apply (`--env-profile`); one the file does not declare
/// is an error.
pub fn load(path: &Path, remote: bool, profile: Option<&str>) -> Result<Vec<AppDraft>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut drafts = parse(
        &text,
        &path.display().to_string(),
        (!remote).then_some(dir.as_path()),
        profile,
    )?;
    for d in &mut drafts {
        d.file = Some(canonical.clone());
    }
    Ok(drafts)
}

/// A scalar as an environment value: text as is, numbers and booleans written out.
fn scalar_text(v: &Scalar) -> String {
    match v {
        Scalar::Text(s) => s.clone(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Bool(b) => b.to_string(),
    }
}

/// Parses app-file text; `file` names it in errors, `dir` anchors relative cwds (`None`: the
/// apps go to a remote agent, see [`load`]); `profile` picks an env profile.
pub fn parse(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    profile: Option<&str>,
) -> Result<Vec<AppDraft>, String> {
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(":{}", line_of(text, s.start)))
            .unwrap_or_default();
        format!("{file}{at}: {}", e.message())
    })?;
    if doc.app.is_empty() {
        return Err(format!("{file}: no [[app]] tables; nothing to start"));
    }
    // Every profile name the file declares is a word, and the one asked for is declared.
    let mut declared: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for name in doc
        .env_profiles
        .keys()
        .chain(doc.app.iter().flat_map(|a| a.get_ref().env_profiles.keys()))
    {
        crate::model::check_profile_name(name.get_ref()).map_err(|m| {
            format!(
                "{file}:{}: env_profiles: {m}",
                line_of(text, name.span().start)
            )
        })?;
        declared.insert(name.get_ref().clone());
    }
    if let Some(p) = profile {
        crate::model::check_profile_name(p).map_err(|m| format!("--env-profile: {m}"))?;
        if !declared.contains(p) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            return Err(format!(
                "{file}: env profile {p:?} is not declared ({}); declare [env_profiles.{p}] or \
                 [app.env_profiles.{p}]",
                if known.is_empty() {
                    "the file declares no profiles".to_string()
                } else {
                    format!("declared: {}", known.join(", "))
                }
            ));
        }
    }
    let profile_vars = |tables: &BTreeMap<Spanned<String>, BTreeMap<String, Spanned<Scalar>>>| {
        let p = profile?;
        tables
            .iter()
            .find(|(k, _)| k.get_ref() == p)
            .map(|(_, vars)| -> Env {
                vars.iter()
                    .map(|(k, v)| (k.clone(), scalar_text(v.get_ref())))
                    .collect()
            })
    };
    let file_profile = profile_vars(&doc.env_profiles);
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(doc.app.len());
    for entry in doc.app {
        let entry_span = entry.span();
        let e = entry.into_inner();
        let err = |span: Range<usize>, key: &str, msg: String| {
            format!("{file}:{}: {key}: {msg}", line_of(text, span.start))
        };
        // The message already starts with its key ("ready.period: ...").
        let bad_key = |span: Range<usize>, msg: String| {
            format!("{file}:{}: {msg}", line_of(text, span.start))
        };
        let name = e.name.get_ref().clone();
        if !names.insert(name.clone()) {
            return Err(err(
                e.name.span(),
                "name",
                format!("app {name:?} appears twice"),
            ));
        }
        let cmd = match e.cmd.get_ref() {
            Cmd::Argv(v) => v.clone(),
            Cmd::Line(s) => shlex::split(s)
                .ok_or_else(|| err(e.cmd.span(), "cmd", "unbalanced quotes".into()))?,
        };
        let cwd = match &e.cwd {
            Some(c) => {
                let p = Path::new(c.get_ref());
                if c.get_ref().is_empty() {
                    return Err(err(c.span(), "cwd", "is empty".into()));
                }
                match dir {
                    Some(dir) => Some(dir.join(p)),
                    None if p.is_absolute() => Some(p.to_path_buf()),
                    None => {
                        return Err(err(
                            c.span(),
                            "cwd",
                            "must be absolute for a remote agent (this machine's directories \
                             mean nothing there)"
                                .into(),
                        ))
                    }
                }
            }
            None => dir.map(Path::to_path_buf),
        };
        let env: Env = e
            .env
            .iter()
            .map(|(k, v)| (k.clone(), scalar_text(v.get_ref())))
            .collect();
        // The file's profile, then the app's own on top.
        let app_profile = profile.map(|name| {
            let mut env = file_profile.clone().unwrap_or_default();
            env.extend(profile_vars(&e.env_profiles).unwrap_or_default());
            crate::model::EnvProfile {
                name: name.to_string(),
                env,
            }
        });
        let ms = |d: &Option<Spanned<Dur>>, key: &str| -> Result<Option<Duration>, String> {
            let Some(d) = d else { return Ok(None) };
            let dur = match d.get_ref() {
                Dur::Millis(n) if *n > 0 => Duration::from_millis(*n as u64),
                Dur::Millis(n) => {
                    return Err(err(
                        d.span(),
                        key,
                        format!("{n} is not a positive number of milliseconds"),
                    ))
                }
                Dur::Text(s) => parse_duration(s).map_err(|m| err(d.span(), key, m))?,
            };
            if dur.is_zero() {
                return Err(err(d.span(), key, "must be longer than zero".into()));
            }
            Ok(Some(dur))
        };
        let stop_signal = match &e.stop_signal {
            Some(s) => {
                Some(Signal::parse(s.get_ref()).map_err(|m| err(s.span(), "stop_signal", m))?)
            }
            None => None,
        };
        // Whole numbers the model bounds: a negative or huge one cannot be what was meant.
        let count = |n: &Option<Spanned<i64>>, key: &str| -> Result<Option<u32>, String> {
            let Some(n) = n else { return Ok(None) };
            u32::try_from(*n.get_ref())
                .map(Some)
                .map_err(|_| err(n.span(), key, format!("{} is out of range", n.get_ref())))
        };
        let log_max_size = match &e.log_max_size {
            Some(s) => Some(match s.get_ref() {
                Size::Bytes(n) => u64::try_from(*n)
                    .map_err(|_| err(s.span(), "log_max_size", format!("{n} is not a size")))?,
                Size::Text(t) => parse_size(t).map_err(|m| err(s.span(), "log_max_size", m))?,
            }),
            None => None,
        };
        let ready = match e.ready {
            Some(r) => {
                let span = r.span();
                Some(r.into_inner().into_model().map_err(|m| bad_key(span, m))?)
            }
            None => None,
        };
        let alive = match e.alive {
            Some(a) => {
                let span = a.span();
                Some(a.into_inner().into_model().map_err(|m| bad_key(span, m))?)
            }
            None => None,
        };
        let deps_span = e.depends_on.as_ref().map(Spanned::span);
        let depends_on = match e.depends_on {
            Some(d) => {
                let span = d.span();
                checks::dependencies(d.into_inner()).map_err(|m| bad_key(span, m))?
            }
            None => Vec::new(),
        };
        let draft = AppDraft {
            name,
            cmd,
            cwd,
            env,
            kill_timeout: ms(&e.kill_timeout, "kill_timeout")?,
            stop_signal,
            autorestart: e.autorestart,
            restart_delay: ms(&e.restart_delay, "restart_delay")?,
            restart_delay_max: ms(&e.restart_delay_max, "restart_delay_max")?,
            max_restarts: count(&e.max_restarts, "max_restarts")?,
            restart_window: ms(&e.restart_window, "restart_window")?,
            log_time: e.log_time.unwrap_or(false),
            log_max_size,
            log_keep: count(&e.log_keep, "log_keep")?,
            ready,
            alive,
            depends_on,
            restart_schedule: e.restart_schedule.as_ref().map(|s| s.get_ref().clone()),
            watch: e
                .watch
                .as_ref()
                .map_or_else(Vec::new, |w| w.get_ref().list()),
            watch_ignore: e
                .watch_ignore
                .as_ref()
                .map_or_else(Vec::new, |w| w.get_ref().list()),
            watch_debounce: ms(&e.watch_debounce, "watch_debounce")?,
            user: e.user.as_ref().map(|u| u.get_ref().clone()),
            group: e.group.as_ref().map(|g| g.get_ref().clone()),
            umask: match &e.umask {
                Some(u) => Some(
                    match u.get_ref() {
                        Scalar::Text(t) => parse_umask(t),
                        Scalar::Int(i) => parse_umask(&i.to_string()),
                        _ => Err("umask: an octal mode such as \"022\"".to_string()),
                    }
                    .map_err(|m| err(u.span(), "umask", m))?,
                ),
                None => None,
            },
            limits: e
                .limits
                .iter()
                .map(|(k, v)| {
                    let text = match v.get_ref() {
                        Scalar::Text(t) => t.clone(),
                        Scalar::Int(i) => i.to_string(),
                        Scalar::Float(f) => f.to_string(),
                        Scalar::Bool(b) => b.to_string(),
                    };
                    parse_limit(k, &text)
                        .map(|n| (k.clone(), n))
                        .map_err(|m| err(v.span(), "limits", m))
                })
                .collect::<Result<_, _>>()?,
            max_memory: match &e.max_memory {
                Some(s) => Some(match s.get_ref() {
                    Size::Bytes(n) => u64::try_from(*n)
                        .map_err(|_| err(s.span(), "max_memory", format!("{n} is not a size")))?,
                    Size::Text(t) => parse_size(t).map_err(|m| err(s.span(), "max_memory", m))?,
                }),
                None => None,
            },
            memory_grace: count(&e.memory_grace, "memory_grace")?,
            profile: app_profile,
            file: None,
            instances: count(&e.instances, "instances")?,
            sockets: match &e.sockets {
                Some(s) => {
                    let span = s.span();
                    let list: Vec<SocketEntry> = s
                        .get_ref()
                        .iter()
                        .map(|x| SocketEntry {
                            name: x.name.clone(),
                            listen: x.listen.clone(),
                            backlog: x.backlog,
                        })
                        .collect();
                    list.into_iter()
                        .map(SocketEntry::into_model)
                        .collect::<Result<_, _>>()
                        .map_err(|m| err(span, "sockets", m))?
                }
                None => Vec::new(),
            },
            reload_grace: ms(&e.reload_grace, "reload_grace")?,
        };
        // The model's rules, pointed at the key that breaks one (or the entry, for a key
        // left out).
        if let Err(bad) = draft.validate() {
            let span = |s: Option<Range<usize>>| s.unwrap_or_else(|| entry_span.clone());
            let at = match bad.field {
                Field::Name => Some(e.name.span()),
                Field::Cmd => Some(e.cmd.span()),
                Field::Cwd => e.cwd.as_ref().map(Spanned::span),
                Field::Env => e.env.values().next().map(Spanned::span),
                Field::KillTimeout => e.kill_timeout.as_ref().map(Spanned::span),
                Field::StopSignal => e.stop_signal.as_ref().map(Spanned::span),
                Field::RestartDelay => e.restart_delay.as_ref().map(Spanned::span),
                Field::RestartDelayMax => e.restart_delay_max.as_ref().map(Spanned::span),
                Field::MaxRestarts => e.max_restarts.as_ref().map(Spanned::span),
                Field::RestartWindow => e.restart_window.as_ref().map(Spanned::span),
                Field::LogMaxSize => e.log_max_size.as_ref().map(Spanned::span),
                Field::LogKeep => e.log_keep.as_ref().map(Spanned::span),
                Field::Ready | Field::Alive => None,
                Field::DependsOn => deps_span,
                Field::RestartSchedule => e.restart_schedule.as_ref().map(Spanned::span),
                Field::Watch => e.watch.as_ref().map(Spanned::span),
                Field::RunAs => e.user.as_ref().map(Spanned::span),
                Field::MaxMemory => e.max_memory.as_ref().map(Spanned::span),
                Field::EnvProfile => e
                    .env_profiles
                    .keys()
                    .find(|k| Some(k.get_ref().as_str()) == profile)
                    .map(Spanned::span),
                Field::File => None,
                Field::Instances => e.instances.as_ref().map(Spanned::span),
                Field::Sockets => e.sockets.as_ref().map(Spanned::span),
                Field::ReloadGrace => e.reload_grace.as_ref().map(Spanned::span),
            };
            return Err(err(span(at), bad.field.key(), bad.problem));
        }
        out.push(draft);
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<AppDraft>, String> {
        parse(text, "apps.toml", Some(Path::new("/srv")), None)
    }

    #[test]
    fn reads_instances_sockets_and_reload_grace() {
        let apps = p(r#"
[[app]]
name = "api"
cmd = "python3 server.py"
instances = 4
sockets = [{ name = "http", listen = "127.0.0.1:8080", backlog = 128 },
           { name = "admin", listen = "unix:/run/api.sock" }]
reload_grace = "2s"
"#)
        .unwrap();
        let a = &apps[0];
        assert_eq!(a.instances, Some(4));
        assert_eq!(a.sockets.len(), 2);
        assert_eq!(a.sockets[0].backlog, 128);
        assert_eq!(a.sockets[1].backlog, crate::model::DEFAULT_BACKLOG);
        assert_eq!(a.sockets[1].listen.to_string(), "unix:/run/api.sock");
        assert_eq!(a.reload_grace, Some(Duration::from_secs(2)));
        let err = p(
            "[[app]]\nname = \"a\"\ncmd = \"x\"\nsockets = [{ name = \"h\", listen = \"nope\" }]\n",
        )
        .unwrap_err();
        assert!(err.starts_with("apps.toml:4: sockets: socket h:"), "{err}");
        let err = p("[[app]]\nname = \"a\"\ncmd = \"x\"\ninstances = 0\n").unwrap_err();
        assert!(err.starts_with("apps.toml:4: instances:"), "{err}");
    }

    #[test]
    fn reads_apps() {
        let apps = p(r#"
[[app]]
name = "web"
cmd = "python3 -m http.server '80 80'"
cwd = "www"
env = { PORT = 8080, DEBUG = true }
kill_timeout = "3s"
stop_signal = "INT"

[[app]]
name = "worker"
cmd = ["sleep", "100"]
autorestart = false
kill_timeout = 250
log_time = true
log_max_size = "512K"
log_keep = 3
"#)
        .unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].cmd, ["python3", "-m", "http.server", "80 80"]);
        assert_eq!(apps[0].cwd, Some("/srv/www".into()));
        assert_eq!(apps[0].env["PORT"], "8080");
        assert_eq!(apps[0].kill_timeout, Some(Duration::from_secs(3)));
        assert_eq!(
            apps[0].stop_signal.map(|s| s.to_string()),
            Some("SIGINT".into())
        );
        assert_eq!(apps[1].cwd, Some("/srv".into()));
        assert_eq!(apps[1].autorestart, Some(false));
        assert_eq!(apps[1].kill_timeout, Some(Duration::from_millis(250)));
        assert_eq!(apps[0].log_max_size, None);
        assert!(apps[1].log_time);
        assert_eq!(
            (apps[1].log_max_size, apps[1].log_keep),
            (Some(512 << 10), Some(3))
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "[[app]]\nname = \"web\"\ncmd = [\"x\"]\nkill_timout = \"3s\"\n",
                "apps.toml:4:",
                "kill_timout",
            ),
            (
                "[[app]]\nname = \"a b\"\ncmd = \"x\"\n",
                "apps.toml:2: name:",
                "contains ' '",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nkill_timeout = \"3 parsecs\"\n",
                "apps.toml:4: kill_timeout:",
                "unit",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nstop_signal = \"SIGFOO\"\n",
                "apps.toml:4: stop_signal:",
                "unknown signal",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = []\n",
                "apps.toml:3: cmd:",
                "empty",
            ),
            ("[[app]]\nname = \"w\"\n", "apps.toml", "cmd"),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\n[[app]]\nname = \"w\"\ncmd = \"y\"\n",
                "apps.toml:5: name:",
                "twice",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nlog_max_size = \"10X\"\n",
                "apps.toml:4: log_max_size:",
                "invalid size",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nlog_max_size = 10\n",
                "apps.toml:4: log_max_size:",
                "between 1K and 1T",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nlog_keep = 0\n",
                "apps.toml:4: log_keep:",
                "between 1 and 100",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nmax_restarts = 0\n",
                "apps.toml:4: max_restarts:",
                "between 1 and 100000",
            ),
            (
                "[[app]]\nname = \"w\"\ncmd = \"x\"\nenv = { \"A=B\" = 1 }\n",
                "apps.toml:4: env:",
                "contains '='",
            ),
            ("name = 1", "apps.toml", "unknown field"),
            ("", "apps.toml", "no [[app]]"),
            ("[[app]\n", "apps.toml:1", ""),
        ];
        for (text, at, what) in cases {
            let e = p(text).expect_err(text);
            assert!(e.starts_with(at) && e.contains(what), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn profiles_merge_the_files_and_the_apps_own() {
        let text = r#"
[env_profiles.production]
LEVEL = "warn"
REGION = "eu"
[[app]]
name = "web"
cmd = "x"
[app.env_profiles.production]
REGION = "us"
[[app]]
name = "job"
cmd = "y"
"#;
        let apps = parse(
            text,
            "apps.toml",
            Some(Path::new("/srv")),
            Some("production"),
        )
        .unwrap();
        let web = apps[0].profile.as_ref().unwrap();
        assert_eq!(web.name, "production");
        assert_eq!(
            (web.env["LEVEL"].as_str(), web.env["REGION"].as_str()),
            ("warn", "us")
        );
        assert_eq!(apps[1].profile.as_ref().unwrap().env["REGION"], "eu");
        // No profile asked: none applies.
        assert!(p(text).unwrap()[0].profile.is_none());
        let e = parse(text, "apps.toml", None, Some("staging")).unwrap_err();
        assert!(
            e.contains("\"staging\" is not declared (declared: production)"),
            "{e}"
        );
        let e = parse(
            "[env_profiles.\"a b\"]\nX = 1\n[[app]]\nname = \"w\"\ncmd = \"x\"\n",
            "apps.toml",
            None,
            None,
        )
        .unwrap_err();
        assert!(e.starts_with("apps.toml:1: env_profiles:"), "{e}");
    }
}
