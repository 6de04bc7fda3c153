//! Readiness and liveness checks and dependencies, from `grpm start` flags and from an app
//! file's `[app.ready]`, `[app.alive]` and `depends_on`, into the model's types. Only syntax is
//! checked here; the bounds are the model's (`AppSpec::check`), as for every other setting.

use std::time::Duration;

use serde::Deserialize;

use super::args::CheckArgs;
use crate::model::{
    parse_duration, AliveCheck, Condition, Dependency, HttpUrl, Liveness, Readiness, ReadyCheck,
};

/// A command: one string split like a shell would, or an argv array.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum CmdValue {
    Line(String),
    Argv(Vec<String>),
}

/// A duration: "500ms", "3s", or whole milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum DurValue {
    Millis(i64),
    Text(String),
}

/// `[app.ready]`: exactly one check, and its timing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyTable {
    http: Option<String>,
    tcp: Option<String>,
    exec: Option<CmdValue>,
    log: Option<String>,
    notify: Option<bool>,
    initial_delay: Option<DurValue>,
    period: Option<DurValue>,
    timeout: Option<DurValue>,
    start_timeout: Option<DurValue>,
}

/// `[app.alive]`: exactly one check, and its timing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliveTable {
    http: Option<String>,
    tcp: Option<String>,
    exec: Option<CmdValue>,
    watchdog: Option<DurValue>,
    period: Option<DurValue>,
    timeout: Option<DurValue>,
    failure_threshold: Option<i64>,
}

/// One entry of `depends_on`: a name, or `{ app = "NAME", condition = "completed" }`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum DepValue {
    Name(String),
    Full {
        app: String,
        condition: Option<String>,
    },
}

fn dur(key: &str, d: &DurValue) -> Result<Duration, String> {
    match d {
        DurValue::Millis(n) => u64::try_from(*n)
            .map(Duration::from_millis)
            .map_err(|_| format!("{key}: {n} is not a number of milliseconds")),
        DurValue::Text(s) => parse_duration(s).map_err(|e| format!("{key}: {e}")),
    }
}

fn argv(key: &str, c: &CmdValue) -> Result<Vec<String>, String> {
    match c {
        CmdValue::Argv(v) => Ok(v.clone()),
        CmdValue::Line(s) => shlex::split(s).ok_or_else(|| format!("{key}: unbalanced quotes")),
    }
}

fn url(key: &str, s: &str) -> Result<HttpUrl, String> {
    HttpUrl::parse(s).map_err(|e| format!("{key}: {e}"))
}

/// Exactly one of the checks named in `set` (by key) may be given.
fn one<T>(what: &str, keys: &str, set: Vec<(&str, Option<T>)>) -> Result<T, String> {
    let given: Vec<(&str, T)> = set
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    match given.len() {
        1 => Ok(given.into_iter().next().map(|(_, v)| v).expect("one")),
        0 => Err(format!("{what}: give one of {keys}")),
        _ => Err(format!(
            "{what}: give only one of {}",
            given.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )),
    }
}

impl ReadyTable {
    pub fn into_model(self) -> Result<Readiness, String> {
        let k = |key: &str| format!("ready.{key}");
        let check = one(
            "ready",
            "http, tcp, exec, log, notify = true",
            vec![
                (
                    "http",
                    self.http
                        .as_deref()
                        .map(|u| url(&k("http"), u).map(ReadyCheck::Http)),
                ),
                ("tcp", self.tcp.map(|t| Ok(ReadyCheck::Tcp(t)))),
                (
                    "exec",
                    self.exec
                        .as_ref()
                        .map(|c| argv(&k("exec"), c).map(ReadyCheck::Exec)),
                ),
                ("log", self.log.map(|r| Ok(ReadyCheck::Log(r)))),
                (
                    "notify",
                    self.notify.map(|n| {
                        n.then_some(ReadyCheck::Notify).ok_or_else(|| {
                            "ready.notify: only `notify = true` means anything".into()
                        })
                    }),
                ),
            ],
        )??;
        let mut r = Readiness::new(check);
        if let Some(d) = &self.initial_delay {
            r.initial_delay = dur(&k("initial_delay"), d)?;
        }
        if let Some(d) = &self.period {
            r.period = dur(&k("period"), d)?;
        }
        if let Some(d) = &self.timeout {
            r.timeout = dur(&k("timeout"), d)?;
        }
        if let Some(d) = &self.start_timeout {
            r.start_timeout = dur(&k("start_timeout"), d)?;
        }
        Ok(r)
    }
}

impl AliveTable {
    pub fn into_model(self) -> Result<Liveness, String> {
        let k = |key: &str| format!("alive.{key}");
        let check = one(
            "alive",
            "http, tcp, exec, watchdog",
            vec![
                (
                    "http",
                    self.http
                        .as_deref()
                        .map(|u| url(&k("http"), u).map(AliveCheck::Http)),
                ),
                ("tcp", self.tcp.map(|t| Ok(AliveCheck::Tcp(t)))),
                (
                    "exec",
                    self.exec
                        .as_ref()
                        .map(|c| argv(&k("exec"), c).map(AliveCheck::Exec)),
                ),
                (
                    "watchdog",
                    self.watchdog
                        .as_ref()
                        .map(|d| dur(&k("watchdog"), d).map(AliveCheck::Watchdog)),
                ),
            ],
        )??;
        let mut l = Liveness::new(check);
        if let Some(d) = &self.period {
            l.period = dur(&k("period"), d)?;
        }
        if let Some(d) = &self.timeout {
            l.timeout = dur(&k("timeout"), d)?;
        }
        if let Some(n) = self.failure_threshold {
            l.failure_threshold = u32::try_from(n)
                .map_err(|_| format!("alive.failure_threshold: {n} is out of range"))?;
        }
        Ok(l)
    }
}

/// `depends_on` entries as the model has them.
pub fn dependencies(values: Vec<DepValue>) -> Result<Vec<Dependency>, String> {
    values
        .into_iter()
        .map(|v| match v {
            DepValue::Name(app) => Ok(Dependency {
                app,
                condition: Condition::Ready,
            }),
            DepValue::Full { app, condition } => Ok(Dependency {
                app,
                condition: match condition {
                    Some(c) => Condition::parse(&c).map_err(|e| format!("depends_on: {e}"))?,
                    None => Condition::Ready,
                },
            }),
        })
        .collect()
}

/// `--depends-on NAME[:CONDITION]`.
fn dependency_flag(s: &str) -> Result<Dependency, String> {
    let (app, condition) = match s.split_once(':') {
        Some((a, c)) => (a, Condition::parse(c)?),
        None => (s, Condition::Ready),
    };
    Ok(Dependency {
        app: app.to_string(),
        condition,
    })
}

/// What the check flags declare.
pub struct Declared {
    pub ready: Option<Readiness>,
    pub alive: Option<Liveness>,
    pub depends_on: Vec<Dependency>,
}

impl CheckArgs {
    pub fn has_any(&self) -> bool {
        self.ready_http.is_some()
            || self.ready_tcp.is_some()
            || self.ready_exec.is_some()
            || self.ready_log.is_some()
            || self.ready_notify
            || self.start_timeout.is_some()
            || self.alive_http.is_some()
            || self.alive_tcp.is_some()
            || self.alive_exec.is_some()
            || self.watchdog.is_some()
            || !self.depends_on.is_empty()
    }

    /// The checks and dependencies these flags declare. Errors name the flag.
    pub fn into_model(self) -> Result<Declared, String> {
        let line = |flag: &str, s: &str| {
            shlex::split(s)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag}: unbalanced quotes or an empty command"))
        };
        let ready = [
            self.ready_http
                .as_deref()
                .map(|u| url("--ready-http", u).map(ReadyCheck::Http)),
            self.ready_tcp.clone().map(|t| Ok(ReadyCheck::Tcp(t))),
            self.ready_exec
                .as_deref()
                .map(|c| line("--ready-exec", c).map(ReadyCheck::Exec)),
            self.ready_log.clone().map(|r| Ok(ReadyCheck::Log(r))),
            self.ready_notify.then_some(Ok(ReadyCheck::Notify)),
        ]
        .into_iter()
        .flatten()
        .next()
        .transpose()?;
        let ready = match (ready, self.start_timeout) {
            (Some(check), t) => Some(Readiness {
                start_timeout: t.unwrap_or(Readiness::DEFAULT_START_TIMEOUT),
                ..Readiness::new(check)
            }),
            (None, Some(_)) => {
                return Err("--start-timeout: give a readiness check (--ready-...) too".into())
            }
            (None, None) => None,
        };
        let alive = [
            self.alive_http
                .as_deref()
                .map(|u| url("--alive-http", u).map(AliveCheck::Http)),
            self.alive_tcp.clone().map(|t| Ok(AliveCheck::Tcp(t))),
            self.alive_exec
                .as_deref()
                .map(|c| line("--alive-exec", c).map(AliveCheck::Exec)),
            self.watchdog.map(|d| Ok(AliveCheck::Watchdog(d))),
        ]
        .into_iter()
        .flatten()
        .next()
        .transpose()?
        .map(Liveness::new);
        let deps = self
            .depends_on
            .iter()
            .map(|d| dependency_flag(d).map_err(|e| format!("--depends-on: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Declared {
            ready,
            alive,
            depends_on: deps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(toml_text: &str) -> Result<Readiness, String> {
        toml::from_str::<ReadyTable>(toml_text)
            .map_err(|e| e.to_string())?
            .into_model()
    }

    #[test]
    fn tables_read_into_checks() {
        let r = ready("http = \"http://127.0.0.1:8080/health\"\nperiod = \"250ms\"").unwrap();
        assert_eq!(r.period, Duration::from_millis(250));
        assert!(matches!(r.check, ReadyCheck::Http(ref u) if u.port == 8080));
        let r = ready("exec = \"test -e /tmp/x\"\nstart_timeout = 5000").unwrap();
        assert_eq!(r.start_timeout, Duration::from_secs(5));
        assert!(ready("").unwrap_err().contains("give one of"));
        assert!(ready("tcp = \"a:1\"\nlog = \"x\"")
            .unwrap_err()
            .contains("only one of tcp, log"));
        assert!(ready("notify = false").unwrap_err().contains("notify"));
        assert!(ready("http = \"https://x/\"")
            .unwrap_err()
            .contains("ready.http"));
        let l: AliveTable = toml::from_str("watchdog = \"5s\"\nfailure_threshold = 2").unwrap();
        let l = l.into_model().unwrap();
        assert_eq!(
            (l.check, l.failure_threshold),
            (AliveCheck::Watchdog(Duration::from_secs(5)), 2)
        );
        let deps: Vec<DepValue> = toml::from_str::<toml::Table>(
            "d = [\"db\", { app = \"migrate\", condition = \"completed\" }]",
        )
        .unwrap()["d"]
            .clone()
            .try_into()
            .unwrap();
        let deps = dependencies(deps).unwrap();
        assert_eq!(deps[1].condition, Condition::Completed);
        assert_eq!(deps[0].condition, Condition::Ready);
        assert_eq!(
            dependency_flag("job:completed").unwrap().condition,
            Condition::Completed
        );
        assert!(dependency_flag("job:done").is_err());
    }
}
