//! Restarts an app asks for by its spec: on a cron schedule (`restart_schedule`), and when files
//! it watches change (`watch`). Declarations and their rules only; the supervisor fires them.

use std::time::Duration;

use chrono::{DateTime, TimeZone};
use croner::{
    parser::{CronParser, Seconds, Year},
    Cron,
};

/// Files changed within this long of each other restart the app once.
pub const DEFAULT_WATCH_DEBOUNCE: Duration = Duration::from_millis(500);
/// Ignored under every watched path, beside the app's own log files.
pub const DEFAULT_WATCH_IGNORE: [&str; 5] =
    [".git", "node_modules", "__pycache__", "target", "*.log"];

/// Parses a cron expression: five fields (minute hour day-of-month month day-of-week), or six
/// with seconds first. The error is the parser's, after the expression.
pub fn parse_schedule(expr: &str) -> Result<Cron, String> {
    if expr.len() > 256 {
        return Err("the expression is longer than 256 bytes".into());
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?}: {e}"))
}

/// The next firing of `cron` strictly after `after`, if there is one.
pub fn next_firing<Tz: TimeZone>(cron: &Cron, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    cron.find_next_occurrence(after, false).ok()
}

/// Checks the watch settings (paths and patterns are matched at run time).
pub fn check_watch(watch: &[String], ignore: &[String], debounce: Duration) -> Result<(), String> {
    if watch.len() > 64 || ignore.len() > 64 {
        return Err("at most 64 watched paths and 64 ignore patterns".into());
    }
    for p in watch.iter().chain(ignore) {
        if p.is_empty() || p.contains('\0') || p.len() > 4096 {
            return Err(format!("{p:?} is not a path or pattern"));
        }
    }
    if watch.iter().any(|w| w.split('/').any(|c| c == "..")) {
        return Err("a watched path may not go up with '..'".into());
    }
    if debounce < Duration::from_millis(10) || debounce > Duration::from_secs(3600) {
        return Err(format!(
            "watch_debounce {} is out of range: between 10ms and 1h",
            super::format_exact(debounce)
        ));
    }
    Ok(())
}

/// `*` (any run of characters but '/'), `?` (one), everything else literally.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' && t[ti] != '/' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) if t[st] != '/' => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                _ => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `rel` (a path relative to the app's cwd) is ignored: a pattern without '/' matches
/// any component of it; one with '/' matches the path from its start (and what lies below).
pub fn ignored(rel: &str, patterns: &[String]) -> bool {
    let components: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    patterns
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_WATCH_IGNORE)
        .any(|p| {
            if p.contains('/') {
                let p = p.trim_end_matches('/');
                (1..=components.len()).any(|n| wildcard(p, &components[..n].join("/")))
            } else {
                components.iter().any(|c| wildcard(p, c))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert!(parse_schedule("0 3 * * *").is_ok());
        assert!(parse_schedule("*/2 * * * * *").is_ok());
        let e = parse_schedule("61 3 * * *").unwrap_err();
        assert!(e.starts_with("\"61 3 * * *\": "), "{e}");
        assert!(parse_schedule("every day").is_err());
        assert!(parse_schedule("0 0 1 1 * 2030").is_err(), "no year field");
        let cron = parse_schedule("30 4 * * *").unwrap();
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
            .unwrap();
        let next = next_firing(&cron, &at).unwrap();
        assert_eq!(
            next,
            chrono::Utc.with_ymd_and_hms(2026, 12, 1, 4, 30, 0).unwrap()
        );
    }

    #[test]
    fn patterns() {
        assert!(wildcard("*.toml", "app.toml"));
        assert!(!wildcard("*.toml", "a/app.toml"));
        assert!(wildcard("config/*.toml", "config/app.toml"));
        assert!(wildcard("a?c", "abc") && !wildcard("a?c", "a/c"));
        let none: Vec<String> = vec![];
        assert!(ignored("src/.git/HEAD", &none));
        assert!(ignored("logs/out.log", &none));
        assert!(!ignored("src/main.py", &none));
        let mine = vec!["build/*".to_string(), "*.tmp".to_string()];
        assert!(ignored("build/x/y", &mine));
        assert!(ignored("src/a.tmp", &mine));
        assert!(!ignored("src/build.py", &mine));
    }

    #[test]
    fn watch_rules() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_watch(&w(&["src", "config/*.toml"]), &[], DEFAULT_WATCH_DEBOUNCE).is_ok());
        assert!(check_watch(&w(&["../etc"]), &[], DEFAULT_WATCH_DEBOUNCE).is_err());
        assert!(check_watch(&w(&["src"]), &[], Duration::ZERO).is_err());
    }
}
