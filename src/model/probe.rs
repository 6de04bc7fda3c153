//! Checks that say when an app is ready (readiness) and whether it is still healthy (liveness),
//! and what an app depends on. Declarations only: the supervisor runs them.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::{spec::millis, validate_name, LIMITS};

/// How to tell that an app is ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadyCheck {
    /// A GET to this URL answers 2xx or 3xx.
    Http(HttpUrl),
    /// A TCP connect to HOST:PORT succeeds.
    Tcp(String),
    /// This command (run with the app's environment and cwd) exits 0.
    Exec(Vec<String>),
    /// A line of the app's stdout or stderr matches this regular expression.
    Log(String),
    /// The app sends `READY=1` on `NOTIFY_SOCKET` (systemd's `Type=notify`).
    Notify,
}

/// How to tell that a ready app is still healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AliveCheck {
    Http(HttpUrl),
    Tcp(String),
    Exec(Vec<String>),
    /// The app sends `WATCHDOG=1` on `NOTIFY_SOCKET` at least this often (`WATCHDOG_USEC`).
    Watchdog(#[serde(with = "millis")] Duration),
}

/// A readiness check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub check: ReadyCheck,
    /// Before the first attempt.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
    /// Between attempts.
    #[serde(with = "millis")]
    pub period: Duration,
    /// One attempt's limit.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// How long the app may take to become ready; past it, the start has failed.
    #[serde(with = "millis")]
    pub start_timeout: Duration,
}

impl Readiness {
    pub const DEFAULT_PERIOD: Duration = Duration::from_millis(500);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);

    /// `check` with the default timing.
    pub fn new(check: ReadyCheck) -> Readiness {
        Readiness {
            check,
            initial_delay: Duration::ZERO,
            period: Self::DEFAULT_PERIOD,
            timeout: Self::DEFAULT_TIMEOUT,
            start_timeout: Self::DEFAULT_START_TIMEOUT,
        }
    }
}

/// A liveness check and its timing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub check: AliveCheck,
    #[serde(with = "millis")]
    pub period: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Consecutive failures that make the app unhealthy.
    pub failure_threshold: u32,
}

impl Liveness {
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;

    pub fn new(check: AliveCheck) -> Liveness {
        Liveness {
            check,
            period: Self::DEFAULT_PERIOD,
            timeout: Self::DEFAULT_TIMEOUT,
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
        }
    }
}

/// What a dependency must reach before its dependent starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// Spawned.
    Started,
    /// Its readiness check passed (spawned, if it has none).
    Ready,
    /// Exited 0: a one-shot job such as a migration.
    Completed,
}

impl Condition {
    pub fn word(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Result<Condition, String> {
        match s {
            "started" => Ok(Condition::Started),
            "ready" => Ok(Condition::Ready),
            "completed" => Ok(Condition::Completed),
            other => Err(format!(
                "unknown condition {other:?}: started, ready or completed"
            )),
        }
    }
}

/// One app this app depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    pub app: String,
    pub condition: Condition,
}

/// An `http://HOST[:PORT][/PATH]` URL, split. Plain HTTP only: a health endpoint is reached on
/// the app's own host, where TLS would prove nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Starts with '/'.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!(
                "{url:?}: the path has spaces or control characters"
            ));
        }
        let (host, port) =
            split_host_port(authority, Some(80)).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(HttpUrl {
            host,
            port,
            path: path.to_string(),
        })
    }

    /// HOST:PORT, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(s: String) -> Result<HttpUrl, String> {
        HttpUrl::parse(&s)
    }
}

impl From<HttpUrl> for String {
    fn from(u: HttpUrl) -> String {
        u.to_string()
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits `HOST:PORT` (`[V6]:PORT`); without a port, `default` or an error.
pub fn split_host_port(s: &str, default: Option<u16>) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "an IPv6 address without its closing ']'".to_string())?;
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty()
        || host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{p:?} is not a port (1 to 65535)"))?,
        None => default.ok_or_else(|| "a port is needed (HOST:PORT)".to_string())?,
    };
    Ok((host.to_string(), port))
}

/// Checks a `tcp` target: `HOST:PORT`.
fn check_tcp(target: &str) -> Result<(), String> {
    split_host_port(target, None).map(|_| ())
}

fn check_argv(argv: &[String]) -> Result<(), String> {
    if argv.first().is_none_or(String::is_empty) {
        return Err("the command is empty".into());
    }
    if argv.len() > 256 || argv.iter().map(String::len).sum::<usize>() > LIMITS.string_bytes {
        return Err("the command is too long (256 arguments, 128 KiB)".into());
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("the command contains a NUL byte".into());
    }
    Ok(())
}

fn within(what: &str, d: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if d < min || d > max {
        return Err(format!(
            "{what} {} is out of range: between {} and {}",
            super::format_duration(d),
            super::format_duration(min),
            super::format_duration(max)
        ));
    }
    Ok(())
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Readiness {
    /// Every rule; the message says what is wrong (the caller names the app and field).
    pub fn check(&self) -> Result<(), String> {
        match &self.check {
            ReadyCheck::Http(_) | ReadyCheck::Notify => {}
            ReadyCheck::Tcp(t) => check_tcp(t)?,
            ReadyCheck::Exec(argv) => check_argv(argv)?,
            ReadyCheck::Log(re) => {
                if re.len() > 4096 {
                    return Err("the regular expression is longer than 4096 bytes".into());
                }
                regex::RegexBuilder::new(re)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("bad regular expression: {e}"))?;
            }
        }
        within("initial_delay", self.initial_delay, Duration::ZERO, HOUR)?;
        within("period", self.period, 10 * MS, HOUR)?;
        within("timeout", self.timeout, MS, HOUR)?;
        within("start_timeout", self.start_timeout, MS, DAY)
    }
}

impl Liveness {
    pub fn check(&self) -> Result<(), String> {
        match &self.check {
            AliveCheck::Http(_) => {}
            AliveCheck::Tcp(t) => check_tcp(t)?,
            AliveCheck::Exec(argv) => check_argv(argv)?,
            AliveCheck::Watchdog(d) => within("watchdog", *d, 10 * MS, HOUR)?,
        }
        within("period", self.period, 10 * MS, HOUR)?;
        within("timeout", self.timeout, MS, HOUR)?;
        if !(1..=1000).contains(&self.failure_threshold) {
            return Err(format!(
                "failure_threshold {} is out of range: between 1 and 1000",
                self.failure_threshold
            ));
        }
        Ok(())
    }
}

/// What the app's current check (readiness until it is ready, then liveness) last found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// "ready" or "alive".
    pub check: String,
    /// The latest attempt passed.
    pub ok: bool,
    /// The latest failure, when the latest attempt failed.
    pub error: Option<String>,
    /// When the latest attempt ended (ms since the epoch); 0: none yet.
    pub at_unix_ms: u64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// For the current instance: from spawn to ready, once ready.
    pub ready_after_ms: Option<u64>,
    /// The last `STATUS=` the app sent over sd_notify.
    pub notify_status: Option<String>,
}

/// Checks an app's own list of dependencies (names, no repeats, not itself); whether the names
/// exist and form no cycle is the supervisor's to check, against the other apps.
pub fn check_dependencies(app: &str, deps: &[Dependency]) -> Result<(), String> {
    if deps.len() > 256 {
        return Err(format!("{} dependencies; at most 256", deps.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for d in deps {
        validate_name(&d.app)?;
        if d.app == app {
            return Err(format!("{app} depends on itself"));
        }
        if !seen.insert(d.app.as_str()) {
            return Err(format!("{} is named twice", d.app));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses() {
        let u = HttpUrl::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/health?x=1")
        );
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/health?x=1");
        let u = HttpUrl::parse("http://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("::1", 80, "/"));
        assert_eq!(u.authority(), "[::1]:80");
        for bad in [
            "https://x/",
            "http://",
            "http://a b/",
            "http://h:0/",
            "http://h:99999/",
            "ftp://x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(check_tcp("localhost:5432").is_ok());
        assert!(check_tcp("localhost").unwrap_err().contains("port"));
        assert!(check_tcp("[::1]:80").is_ok());
    }

    #[test]
    fn readiness_rules() {
        assert!(Readiness::new(ReadyCheck::Notify).check().is_ok());
        let bad_re = Readiness::new(ReadyCheck::Log("(unclosed".into()));
        assert!(bad_re.check().unwrap_err().contains("regular expression"));
        let mut r = Readiness::new(ReadyCheck::Exec(vec![]));
        assert!(r.check().unwrap_err().contains("empty"));
        r.check = ReadyCheck::Exec(vec!["true".into()]);
        r.period = Duration::ZERO;
        assert!(r.check().unwrap_err().contains("period"));
        let mut l = Liveness::new(AliveCheck::Watchdog(Duration::from_secs(5)));
        assert!(l.check().is_ok());
        l.failure_threshold = 0;
        assert!(l.check().unwrap_err().contains("failure_threshold"));
    }

    #[test]
    fn dependency_rules() {
        let d = |app: &str| Dependency {
            app: app.into(),
            condition: Condition::Ready,
        };
        assert!(check_dependencies("web", &[d("db"), d("cache")]).is_ok());
        assert!(check_dependencies("web", &[d("web")])
            .unwrap_err()
            .contains("itself"));
        assert!(check_dependencies("web", &[d("db"), d("db")])
            .unwrap_err()
            .contains("twice"));
        assert!(check_dependencies("web", &[d("../x")]).is_err());
        assert_eq!(Condition::parse("completed"), Ok(Condition::Completed));
        assert!(Condition::parse("done").is_err());
    }
}
