//! How `describe` shows an app's checks and dependencies, and what the checks last found.

use std::time::Duration;

use crate::model::{
    format_exact, rfc3339_ms, AliveCheck, AppDetail, Liveness, Readiness, ReadyCheck,
};

fn ready_text(r: &Readiness) -> String {
    let what = match &r.check {
        ReadyCheck::Http(u) => format!("http {u}"),
        ReadyCheck::Tcp(t) => format!("tcp {t}"),
        ReadyCheck::Exec(a) => format!("exec {}", join(a)),
        ReadyCheck::Log(re) => format!("log /{re}/"),
        ReadyCheck::Notify => "notify (READY=1)".into(),
    };
    format!(
        "{what}; every {}, {} each, within {}",
        format_exact(r.period),
        format_exact(r.timeout),
        format_exact(r.start_timeout)
    )
}

fn alive_text(l: &Liveness) -> String {
    match &l.check {
        AliveCheck::Watchdog(d) => {
            format!("watchdog: WATCHDOG=1 at least every {}", format_exact(*d))
        }
        other => {
            let what = match other {
                AliveCheck::Http(u) => format!("http {u}"),
                AliveCheck::Tcp(t) => format!("tcp {t}"),
                AliveCheck::Exec(a) => format!("exec {}", join(a)),
                AliveCheck::Watchdog(_) => String::new(),
            };
            format!(
                "{what}; every {}, {} each, unhealthy after {} failures",
                format_exact(l.period),
                format_exact(l.timeout),
                l.failure_threshold
            )
        }
    }
}

fn join(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
}

/// `describe`'s lines about checks and dependencies, and what the checks last found.
pub fn describe_lines(d: &AppDetail) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(r) = &d.spec.ready {
        out.push(("ready check", ready_text(r)));
    }
    if let Some(l) = &d.spec.alive {
        out.push(("alive check", alive_text(l)));
    }
    if !d.spec.depends_on.is_empty() {
        let deps: Vec<String> = d
            .spec
            .depends_on
            .iter()
            .map(|x| format!("{} ({})", x.app, x.condition.word()))
            .collect();
        out.push(("depends on", deps.join(", ")));
    }
    if let Some(expr) = &d.spec.restart_schedule {
        let next = d
            .next_restart_unix_ms
            .map_or_else(|| "none while stopped".into(), rfc3339_ms);
        out.push(("restart schedule", format!("{expr} (next: {next})")));
    }
    if !d.spec.watch.is_empty() {
        let mut w = format!(
            "{} (bursts of {})",
            d.spec.watch.join(", "),
            format_exact(d.spec.watch_debounce)
        );
        if !d.spec.watch_ignore.is_empty() {
            w.push_str(&format!("; ignoring {}", d.spec.watch_ignore.join(", ")));
        }
        out.push(("watch", w));
    }
    if let Some(e) = &d.watch_error {
        out.push(("watch error", e.clone()));
    }
    if let Some((cause, at)) = &d.last_restart {
        out.push((
            "last restart",
            format!("{} ({}) at {}", cause.word(), cause.text(), rfc3339_ms(*at)),
        ));
    }
    if d.spec.user.is_some() || d.spec.group.is_some() {
        let who = match (&d.spec.user, &d.spec.group) {
            (Some(u), Some(g)) => format!("{u}, group {g}"),
            (Some(u), None) => u.clone(),
            (None, Some(g)) => format!("the agent's user, group {g}"),
            (None, None) => String::new(),
        };
        out.push(("runs as", who));
    }
    if let Some(max) = d.spec.max_memory {
        out.push((
            "memory limit",
            format!(
                "{:.1} MiB of the tree's memory, restarted after {} samples over",
                max as f64 / (1u64 << 20) as f64,
                d.spec.memory_grace
            ),
        ));
    }
    if let Some(m) = d.spec.umask {
        out.push(("umask", format!("{m:03o}")));
    }
    if !d.spec.limits.is_empty() {
        let l: Vec<String> = d
            .spec
            .limits
            .iter()
            .map(|(k, &v)| {
                if v == crate::model::UNLIMITED {
                    format!("{k}=unlimited")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        out.push(("limits", l.join(", ")));
    }
    if let Some(p) = &d.probe {
        let last = match (&p.error, p.at_unix_ms) {
            (_, 0) => "no attempt yet".to_string(),
            (None, at) => format!("passed at {}", rfc3339_ms(at)),
            (Some(e), at) => format!(
                "failed at {} ({} in a row): {e}",
                rfc3339_ms(at),
                p.failures
            ),
        };
        out.push(("last check", format!("{}: {last}", p.check)));
        if let Some(s) = &p.notify_status {
            out.push(("notify status", s.clone()));
        }
        if let Some(ms) = p.ready_after_ms {
            out.push(("ready after", format_exact(Duration::from_millis(ms))));
        }
    }
    out
}

/// `describe --json`'s keys about checks: `ready`, `alive`, `depends_on` (null or empty when
/// unset) and `probe` (what the checks last found).
pub fn describe_json(d: &AppDetail) -> Vec<(String, serde_json::Value)> {
    use serde_json::{json, Value};
    let probe = d.probe.as_ref().map_or(Value::Null, |p| {
        json!({
            "check": p.check,
            "ok": p.ok,
            "error": p.error,
            "at_unix_ms": p.at_unix_ms,
            "failures": p.failures,
            "ready_after_ms": p.ready_after_ms,
            "notify_status": p.notify_status,
        })
    });
    vec![
        (
            "ready".into(),
            serde_json::to_value(&d.spec.ready).unwrap_or_default(),
        ),
        (
            "alive".into(),
            serde_json::to_value(&d.spec.alive).unwrap_or_default(),
        ),
        (
            "depends_on".into(),
            serde_json::to_value(&d.spec.depends_on).unwrap_or_default(),
        ),
        ("probe".into(), probe),
        (
            "restart_schedule".into(),
            serde_json::to_value(&d.spec.restart_schedule).unwrap_or_default(),
        ),
        (
            "next_restart_unix_ms".into(),
            serde_json::to_value(d.next_restart_unix_ms).unwrap_or_default(),
        ),
        (
            "watch".into(),
            serde_json::to_value(&d.spec.watch).unwrap_or_default(),
        ),
        (
            "watch_ignore".into(),
            serde_json::to_value(&d.spec.watch_ignore).unwrap_or_default(),
        ),
        (
            "watch_error".into(),
            serde_json::to_value(&d.watch_error).unwrap_or_default(),
        ),
        (
            "user".into(),
            serde_json::to_value(&d.spec.user).unwrap_or_default(),
        ),
        (
            "group".into(),
            serde_json::to_value(&d.spec.group).unwrap_or_default(),
        ),
        (
            "umask".into(),
            serde_json::to_value(d.spec.umask).unwrap_or_default(),
        ),
        (
            "limits".into(),
            serde_json::to_value(&d.spec.limits).unwrap_or_default(),
        ),
        (
            "max_memory".into(),
            serde_json::to_value(d.spec.max_memory).unwrap_or_default(),
        ),
        ("memory_grace".into(), d.spec.memory_grace.into()),
        (
            "last_restart".into(),
            d.last_restart.as_ref().map_or(
                serde_json::Value::Null,
                |(c, at)| serde_json::json!({ "cause": c.word(), "at_unix_ms": at }),
            ),
        ),
    ]
}
