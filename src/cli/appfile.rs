//! App files: TOML with `[[app]]` tables. Errors name the file, the line and the key.
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

use crate::{
    model::{parse_duration, parse_size, validate_name, LogPolicy, Signal},
    rpc::pb,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    app: Vec<Spanned<Entry>>,
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

/// Reads the apps of `path` as specs ready to send. For the local agent, `cwd`s are made
/// absolute against the file's directory; for remote agents (`remote`) this machine's paths
/// mean nothing, so a `cwd` must be absolute, and without one an app runs in the agent's home.
pub fn load(path: &Path, remote: bool) -> Result<Vec<pb::AppSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    parse(
        &text,
        &path.display().to_string(),
        (!remote).then_some(dir.as_path()),
    )
}

/// Parses app-file text; `file` names it in errors, `dir` anchors relative cwds (`None`: the
/// apps go to a remote agent, see [`load`]).
pub fn parse(text: &str, file: &str, dir: Option<&Path>) -> Result<Vec<pb::AppSpec>, String> {
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
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(doc.app.len());
    for entry in doc.app {
        let e = entry.into_inner();
        let err = |span: Range<usize>, key: &str, msg: String| {
            format!("{file}:{}: {key}: {msg}", line_of(text, span.start))
        };
        let name = e.name.get_ref().clone();
        validate_name(&name).map_err(|m| err(e.name.span(), "name", m))?;
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
        if cmd.first().is_none_or(String::is_empty) {
            return Err(err(e.cmd.span(), "cmd", "the command is empty".into()));
        }
        let cwd = match &e.cwd {
            Some(c) => {
                let p = Path::new(c.get_ref());
                if c.get_ref().is_empty() {
                    return Err(err(c.span(), "cwd", "is empty".into()));
                }
                match dir {
                    Some(dir) => dir.join(p).to_string_lossy().into_owned(),
                    None if p.is_absolute() => c.get_ref().clone(),
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
            None => dir.map_or_else(String::new, |d| d.to_string_lossy().into_owned()),
        };
        let mut env = std::collections::HashMap::new();
        for (k, v) in &e.env {
            let value = match v.get_ref() {
                Scalar::Text(s) => s.clone(),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(f) => f.to_string(),
                Scalar::Bool(b) => b.to_string(),
            };
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(err(
                    v.span(),
                    &format!("env.{k}"),
                    "invalid variable name".into(),
                ));
            }
            env.insert(k.clone(), value);
        }
        let ms = |d: &Option<Spanned<Dur>>, key: &str| -> Result<u64, String> {
            let Some(d) = d else { return Ok(0) };
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
            Ok(dur.as_millis().max(1) as u64)
        };
        let stop_signal = match &e.stop_signal {
            Some(s) => Signal::parse(s.get_ref())
                .map_err(|m| err(s.span(), "stop_signal", m))?
                .to_string(),
            None => String::new(),
        };
        let max_restarts = match &e.max_restarts {
            Some(n) if (1..=100_000).contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                return Err(err(
                    n.span(),
                    "max_restarts",
                    "must be between 1 and 100000".into(),
                ))
            }
            None => 0,
        };
        let log_max_size = match &e.log_max_size {
            Some(s) => {
                let n = match s.get_ref() {
                    Size::Bytes(n) => u64::try_from(*n)
                        .map_err(|_| err(s.span(), "log_max_size", format!("{n} is not a size")))?,
                    Size::Text(t) => parse_size(t).map_err(|m| err(s.span(), "log_max_size", m))?,
                };
                if !(LogPolicy::MIN_MAX_SIZE..=LogPolicy::MAX_MAX_SIZE).contains(&n) {
                    return Err(err(
                        s.span(),
                        "log_max_size",
                        "must be between 1K and 1T".into(),
                    ));
                }
                n
            }
            None => 0,
        };
        let log_keep = match &e.log_keep {
            Some(n) if (1..=i64::from(LogPolicy::MAX_KEEP)).contains(n.get_ref()) => {
                *n.get_ref() as u32
            }
            Some(n) => {
                return Err(err(
                    n.span(),
                    "log_keep",
                    format!("must be between 1 and {}", LogPolicy::MAX_KEEP),
                ))
            }
            None => 0,
        };
        out.push(pb::AppSpec {
            name,
            cmd,
            cwd,
            env,
            kill_timeout_ms: ms(&e.kill_timeout, "kill_timeout")?,
            stop_signal,
            autorestart: e.autorestart,
            restart_delay_ms: ms(&e.restart_delay, "restart_delay")?,
            restart_delay_max_ms: ms(&e.restart_delay_max, "restart_delay_max")?,
            max_restarts,
            restart_window_ms: ms(&e.restart_window, "restart_window")?,
            log_time: e.log_time.unwrap_or(false),
            log_max_size,
            log_keep,
        });
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<pb::AppSpec>, String> {
        parse(text, "apps.toml", Some(Path::new("/srv")))
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
        assert_eq!(apps[0].cwd, "/srv/www");
        assert_eq!(apps[0].env["PORT"], "8080");
        assert_eq!(apps[0].kill_timeout_ms, 3000);
        assert_eq!(apps[0].stop_signal, "SIGINT");
        assert_eq!(apps[1].cwd, "/srv");
        assert_eq!(apps[1].autorestart, Some(false));
        assert_eq!(apps[1].kill_timeout_ms, 250);
        assert_eq!(apps[0].log_max_size, 0);
        assert!(apps[1].log_time);
        assert_eq!((apps[1].log_max_size, apps[1].log_keep), (512 << 10, 3));
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
            ("name = 1", "apps.toml", "unknown field"),
            ("", "apps.toml", "no [[app]]"),
            ("[[app]\n", "apps.toml:1", ""),
        ];
        for (text, at, what) in cases {
            let e = p(text).expect_err(text);
            assert!(e.starts_with(at) && e.contains(what), "{text:?} gave {e:?}");
        }
    }
}
