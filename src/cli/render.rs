//! Output: tables for people, JSON for scripts.

use serde::Serialize;

use crate::{
    model::{format_duration, rfc3339_ms},
    rpc::{
        convert::{kind_word, status_word},
        pb,
    },
};

/// One app as `--json` prints it.
#[derive(Serialize)]
pub struct AppRow {
    pub id: u64,
    pub name: String,
    pub status: &'static str,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub uptime_ms: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

impl From<&pb::AppInfo> for AppRow {
    fn from(a: &pb::AppInfo) -> AppRow {
        AppRow {
            id: a.id,
            name: a.name.clone(),
            status: status_word(a.status()),
            pid: (a.pid != 0).then_some(a.pid),
            restarts: a.restarts,
            uptime_ms: a.uptime_ms,
            cpu_percent: (a.cpu_percent * 10.0).round() / 10.0,
            memory_bytes: a.memory_bytes,
        }
    }
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

pub fn rows(apps: &[pb::AppInfo]) -> Vec<AppRow> {
    apps.iter().map(AppRow::from).collect()
}

/// The `list` table.
pub fn table(apps: &[pb::AppInfo]) -> String {
    let rows: Vec<(Option<&str>, &pb::AppInfo)> = apps.iter().map(|a| (None, a)).collect();
    grid(&rows, false)
}

/// The table of several hosts' apps, with a HOST column first.
pub fn host_table(rows: &[(&str, &pb::AppInfo)]) -> String {
    let rows: Vec<(Option<&str>, &pb::AppInfo)> =
        rows.iter().map(|(h, a)| (Some(*h), *a)).collect();
    grid(&rows, true)
}

/// `rows` for JSON, each with its `host`.
pub fn host_rows(rows: &[(&str, &pb::AppInfo)]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|(h, a)| {
            let mut v = serde_json::to_value(AppRow::from(*a)).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("host".into(), (*h).into());
            }
            v
        })
        .collect()
}

fn grid(apps: &[(Option<&str>, &pb::AppInfo)], with_host: bool) -> String {
    let mut header = vec![
        "ID", "NAME", "STATUS", "PID", "RESTARTS", "UPTIME", "CPU", "MEM",
    ];
    if with_host {
        header.insert(0, "HOST");
    }
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (host, a) in apps {
        let online = a.pid != 0;
        let mut row = Vec::with_capacity(header.len());
        if with_host {
            row.push(host.unwrap_or("").to_string());
        }
        row.extend([
            a.id.to_string(),
            a.name.clone(),
            status_word(a.status()).to_string(),
            if online {
                a.pid.to_string()
            } else {
                "-".into()
            },
            a.restarts.to_string(),
            if online {
                format_duration(std::time::Duration::from_millis(a.uptime_ms))
            } else {
                "-".into()
            },
            if online {
                format!("{:.1}%", a.cpu_percent)
            } else {
                "-".into()
            },
            if online {
                bytes(a.memory_bytes)
            } else {
                "-".into()
            },
        ]);
        cells.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if apps.is_empty() {
        out.push_str(
            "(no apps; add one with `grpm start --name NAME -- CMD` or `grpm start FILE.toml`)\n",
        );
    }
    out
}

/// `12.3 MiB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `describe` output for people.
pub fn detail(d: &pb::AppDetail) -> String {
    let info = d.info.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line("name", info.name.clone());
    line("id", info.id.to_string());
    line("status", status_word(info.status()).to_string());
    line(
        "pid",
        if info.pid == 0 {
            "-".into()
        } else {
            info.pid.to_string()
        },
    );
    line(
        "desired",
        if d.desired_online {
            "online".into()
        } else {
            "stopped".into()
        },
    );
    line("restarts", info.restarts.to_string());
    if info.pid != 0 {
        line(
            "uptime",
            format_duration(std::time::Duration::from_millis(info.uptime_ms)),
        );
        line("cpu", format!("{:.1}%", info.cpu_percent));
        line("memory", bytes(info.memory_bytes));
    }
    if d.restart_in_ms > 0 {
        line("restart in", format!("{}ms", d.restart_in_ms));
    }
    if let Some(e) = &d.last_exit {
        line("last exit", e.text.clone());
    }
    if !d.error.is_empty() {
        line("error", d.error.clone());
    }
    line(
        "command",
        shlex::try_join(spec.cmd.iter().map(String::as_str)).unwrap_or_else(|_| spec.cmd.join(" ")),
    );
    line("cwd", spec.cwd.clone());
    line("stop signal", spec.stop_signal.clone());
    line("kill timeout", format!("{}ms", spec.kill_timeout_ms));
    line("autorestart", spec.autorestart.unwrap_or(true).to_string());
    line(
        "restart delay",
        format!(
            "{}ms doubling up to {}ms; errored after {} restarts in {}s",
            spec.restart_delay_ms,
            spec.restart_delay_max_ms,
            spec.max_restarts,
            spec.restart_window_ms / 1000
        ),
    );
    line(
        "logs",
        format!(
            "rotated at {}, {} kept{}",
            bytes(spec.log_max_size),
            spec.log_keep,
            if spec.log_time { ", timestamped" } else { "" }
        ),
    );
    line("stdout", d.stdout_path.clone());
    line("stderr", d.stderr_path.clone());
    let mut declared: Vec<_> = spec.env.iter().collect();
    declared.sort();
    line(
        "env",
        format!("{} variables ({} declared)", d.env.len(), declared.len()),
    );
    for (k, v) in declared {
        out.push_str(&format!("  {k}={v}\n"));
    }
    out
}

/// One event as a JSON line.
pub fn event_json(e: &pb::Event, host: Option<&str>) -> serde_json::Value {
    let cause = e.cause.clone().unwrap_or_default();
    let mut v = serde_json::json!({
        "seq": e.seq,
        "time": rfc3339_ms(e.at_unix_ms),
        "at_unix_ms": e.at_unix_ms,
        "app": e.app,
        "app_id": e.app_id,
        "kind": kind_word(e.kind()),
        "manual": e.manual,
        "pid": (e.pid != 0).then_some(e.pid),
        "exit_code": e.exit.as_ref().and_then(|x| x.code),
        "signal": e.exit.as_ref().and_then(|x| x.signal),
        "cause": {
            "kind": cause_word(cause.kind()),
            "method": (!cause.method.is_empty()).then_some(&cause.method),
            "uid": cause.uid,
            "pid": cause.peer_pid,
            "peer": (!cause.peer.is_empty()).then_some(&cause.peer),
        },
        "delay_ms": (e.delay_ms != 0).then_some(e.delay_ms),
        "error": (!e.error.is_empty()).then_some(&e.error),
        "action": (!e.action.is_empty()).then_some(&e.action),
        "message": (!e.message.is_empty()).then_some(&e.message),
        "data": e.data,
        "lost": (e.kind() == pb::EventKind::Gap).then_some(e.lost),
    });
    if let (Some(h), Some(obj)) = (host, v.as_object_mut()) {
        obj.insert("host".into(), h.into());
    }
    v
}

fn cause_word(k: pb::CauseKind) -> &'static str {
    match k {
        pb::CauseKind::Unspecified => "unknown",
        pb::CauseKind::Request => "request",
        pb::CauseKind::Crash => "crash",
        pb::CauseKind::Backoff => "backoff",
        pb::CauseKind::Recovery => "recovery",
        pb::CauseKind::Shutdown => "shutdown",
    }
}

/// One event as a line for people.
pub fn event_line(e: &pb::Event) -> String {
    let kind = kind_word(e.kind());
    let mut line = format!("{}  #{:<6} ", rfc3339_ms(e.at_unix_ms), e.seq);
    if e.kind() == pb::EventKind::Gap {
        line.push_str(&format!("gap: {} event(s) lost", e.lost));
        if !e.message.is_empty() {
            line.push_str(&format!(" ({})", e.message));
        }
        return line;
    }
    line.push_str(&format!("{}[{}] {kind}", e.app, e.app_id));
    if e.pid != 0 {
        line.push_str(&format!(" pid {}", e.pid));
    }
    if let Some(x) = &e.exit {
        line.push_str(&format!(": {}", x.text));
    }
    if e.delay_ms != 0 {
        line.push_str(&format!(" in {}ms", e.delay_ms));
    }
    if !e.error.is_empty() {
        line.push_str(&format!(": {}", e.error));
    }
    if !e.action.is_empty() {
        line.push_str(&format!(" {}", e.action));
    }
    if !e.message.is_empty() {
        line.push_str(&format!(": {}", e.message));
    }
    let mut data: Vec<_> = e.data.iter().collect();
    data.sort();
    for (k, v) in data {
        line.push_str(&format!(" {k}={v}"));
    }
    let cause = e.cause.clone().unwrap_or_default();
    let why = match cause.kind() {
        pb::CauseKind::Request => {
            let mut w = format!("{} via {}", cause.method, cause.peer);
            if let Some(u) = cause.uid {
                w.push_str(&format!(" uid {u}"));
            }
            w
        }
        other => cause_word(other).to_string(),
    };
    line.push_str(&format!(
        "  ({}{why})",
        if e.manual { "manual: " } else { "" }
    ));
    line
}
