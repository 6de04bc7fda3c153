//! Output: tables for people, JSON for scripts, from model types (the words for statuses,
//! event kinds and causes are the model's).

use serde::Serialize;

use crate::model::{
    format_duration, rfc3339_ms, AppDetail, AppInfo, Cause, Desired, EnvOrigin, Event, EventKind,
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
    /// Of the whole tree, like `memory_bytes` and `processes`.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// In a start's or restart's answer: started first for this app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_by: Option<String>,
    /// In a stop's or restart's answer: stopped first because it depends on this app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependent_of: Option<String>,
    pub processes: u32,
    /// Which instance of the app this row is (0 for an app of one instance).
    pub instance: u32,
}

impl From<&AppInfo> for AppRow {
    fn from(a: &AppInfo) -> AppRow {
        AppRow {
            id: a.id,
            name: a.name.clone(),
            status: a.status.word(),
            pid: a.pid,
            restarts: a.restarts,
            uptime_ms: a.uptime_ms,
            cpu_percent: (a.cpu_percent * 10.0).round() / 10.0,
            memory_bytes: a.memory_bytes,
            needed_by: a.needed_by.clone(),
            dependent_of: a.dependent_of.clone(),
            processes: a.processes,
            instance: a.instance,
        }
    }
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

pub fn rows(apps: &[AppInfo]) -> Vec<AppRow> {
    apps.iter().map(AppRow::from).collect()
}

/// How a table is drawn: for a terminal (status words coloured, names fitted to its width) or
/// plain (a pipe, a file: every name whole, no escape sequences).
#[derive(Debug, Clone, Copy, Default)]
pub struct Look {
    /// Colour the status word: `online` green, `errored` red, `starting`/`stopping` yellow.
    pub colour: bool,
    /// The terminal's width: longer names are cut, with an ellipsis, to fit it.
    pub width: Option<usize>,
}

impl Look {
    /// For stdout: plain unless it is a terminal; colour there unless `NO_COLOR` is set (to
    /// anything but the empty string, as no-color.org says) or `TERM` is `dumb`.
    pub fn stdout() -> Look {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            return Look::default();
        }
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        let width = ratatui::crossterm::terminal::size()
            .ok()
            .map(|(w, _)| usize::from(w))
            .filter(|&w| w > 0);
        Look { colour, width }
    }
}

/// The `list` table.
pub fn table(apps: &[AppInfo], look: Look) -> String {
    let rows: Vec<(Option<&str>, &AppInfo)> = apps.iter().map(|a| (None, a)).collect();
    grid(&rows, false, look)
}

/// The table of several hosts' apps, with a HOST column first.
pub fn host_table(rows: &[(&str, &AppInfo)], look: Look) -> String {
    let rows: Vec<(Option<&str>, &AppInfo)> = rows.iter().map(|(h, a)| (Some(*h), *a)).collect();
    grid(&rows, true, look)
}

/// The terminal colour of a status word, if it has one.
fn status_colour(word: &str) -> Option<&'static str> {
    match word {
        "online" => Some("\x1b[32m"),
        "errored" => Some("\x1b[31m"),
        "starting" | "stopping" => Some("\x1b[33m"),
        _ => None,
    }
}

/// Narrowest a fitted NAME column gets (the table may then still be wider than the terminal).
const NAME_MIN: usize = 8;

/// `cell` cut to `width` characters, its last one an ellipsis.
fn cut(cell: &str, width: usize) -> String {
    if cell.chars().count() <= width {
        return cell.to_string();
    }
    let mut s: String = cell.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// `rows` for JSON, each with its `host`.
pub fn host_rows(rows: &[(&str, &AppInfo)]) -> Vec<serde_json::Value> {
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

fn grid(apps: &[(Option<&str>, &AppInfo)], with_host: bool, look: Look) -> String {
    let mut header = vec![
        "ID", "NAME", "STATUS", "PID", "RESTARTS", "UPTIME", "CPU", "MEM", "PROCS",
    ];
    if with_host {
        header.insert(0, "HOST");
    }
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (host, a) in apps {
        let online = a.pid.is_some();
        // A running app always has a process: none means no sample yet.
        let sampled = online && a.processes > 0;
        let mut row = Vec::with_capacity(header.len());
        if with_host {
            row.push(host.unwrap_or("").to_string());
        }
        row.extend([
            a.id.to_string(),
            a.label(),
            a.status.word().to_string(),
            a.pid.map_or_else(|| "-".into(), |p| p.to_string()),
            a.restarts.to_string(),
            if online {
                format_duration(std::time::Duration::from_millis(a.uptime_ms))
            } else {
                "-".into()
            },
            if sampled {
                format!("{:.1}%", a.cpu_percent)
            } else {
                "-".into()
            },
            if sampled {
                bytes(a.memory_bytes)
            } else {
                "-".into()
            },
            if sampled {
                a.processes.to_string()
            } else {
                "-".into()
            },
        ]);
        cells.push(row);
    }
    let mut widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let name_col = usize::from(with_host) + 1;
    let status_col = name_col + 1;
    // Too wide for the terminal: the NAME column gives up what is needed (names stay whole
    // in --json and describe).
    if let Some(term) = look.width {
        let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        if total > term {
            let w = &mut widths[name_col];
            *w = w.saturating_sub(total - term).max(NAME_MIN).min(*w);
            for row in &mut cells {
                row[name_col] = cut(&row[name_col], widths[name_col]);
            }
        }
    }
    let mut out = String::new();
    for (r, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| match status_colour(cell) {
                // Padding outside the colour, so the columns line up.
                Some(code) if look.colour && r > 0 && c == status_col => {
                    let pad = w.saturating_sub(cell.chars().count());
                    format!("{code}{cell}\x1b[0m{:pad$}", "")
                }
                _ => format!("{cell:<w$}"),
            })
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
pub fn detail(d: &AppDetail) -> String {
    let info = &d.info;
    let spec = &d.spec;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
    line("name", info.label());
    line("id", info.id.to_string());
    line("status", info.status.word().to_string());
    line(
        "pid",
        info.pid.map_or_else(|| "-".into(), |p| p.to_string()),
    );
    line("desired", desired_word(d.desired).into());
    line("restarts", info.restarts.to_string());
    if info.pid.is_some() {
        line(
            "uptime",
            format_duration(std::time::Duration::from_millis(info.uptime_ms)),
        );
        if info.processes > 0 {
            line("cpu", format!("{:.1}%", info.cpu_percent));
            line("memory", bytes(info.memory_bytes));
            line("processes", info.processes.to_string());
        } else {
            line("cpu", "- (not sampled yet)".into());
        }
    }
    if info.instances > 1 {
        line(
            "instance",
            format!("{} of {}", info.instance, info.instances),
        );
    }
    for s in &d.sockets {
        line("socket", format!("{} {} (fd {})", s.name, s.address, s.fd));
    }
    if d.restart_in_ms > 0 {
        line("restart in", format!("{}ms", d.restart_in_ms));
    }
    if let Some(e) = &d.last_exit {
        line("last exit", e.text());
    }
    if let Some(e) = &d.error {
        line("error", e.clone());
    }
    line(
        "command",
        shlex::try_join(spec.cmd.iter().map(String::as_str)).unwrap_or_else(|_| spec.cmd.join(" ")),
    );
    line("cwd", spec.cwd.to_string_lossy().into_owned());
    line("stop signal", spec.stop_signal.to_string());
    line(
        "kill timeout",
        format!("{}ms", spec.kill_timeout.as_millis()),
    );
    line("autorestart", spec.autorestart.to_string());
    let r = &spec.restart;
    line(
        "restart delay",
        format!(
            "{}ms doubling up to {}ms; errored after {} restarts in {}s",
            r.delay.as_millis(),
            r.delay_max.as_millis(),
            r.max_restarts,
            r.window.as_millis() / 1000
        ),
    );
    line(
        "logs",
        format!(
            "rotated at {}, {} kept{}",
            bytes(spec.logs.max_size),
            spec.logs.keep,
            if spec.logs.time { ", timestamped" } else { "" }
        ),
    );
    for (k, v) in super::checks_view::describe_lines(d) {
        line(k, v);
    }
    line("stdout", d.stdout_path.to_string_lossy().into_owned());
    line("stderr", d.stderr_path.to_string_lossy().into_owned());
    if let Some(f) = &spec.file {
        line("file", f.to_string_lossy().into_owned());
    }
    if let Some(p) = &spec.profile {
        line("env profile", p.name.clone());
    }
    // How many variables come from where; then every variable but the captured ones, with
    // its source.
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for o in d.env_sources.values() {
        *counts.entry(o.text()).or_default() += 1;
    }
    let by_source: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {o}")).collect();
    line(
        "env",
        format!("{} variables ({})", d.env.len(), by_source.join(", ")),
    );
    for (k, v) in &d.env {
        match d.env_sources.get(k) {
            Some(EnvOrigin::Captured) | None => {}
            Some(o) => out.push_str(&format!("  {k}={v}  ({})\n", o.text())),
        }
    }
    out
}

fn desired_word(d: Desired) -> &'static str {
    match d {
        Desired::Online => "online",
        Desired::Stopped => "stopped",
    }
}

/// `describe --json`: the listing row and everything else, `host` added on a fleet.
pub fn detail_json(d: &AppDetail, host: Option<&str>) -> serde_json::Value {
    let spec = &d.spec;
    let mut row = serde_json::to_value(AppRow::from(&d.info)).unwrap_or_default();
    if let Some(obj) = row.as_object_mut() {
        obj.insert("desired".into(), desired_word(d.desired).into());
        obj.insert("cmd".into(), spec.cmd.clone().into());
        obj.insert("cwd".into(), spec.cwd.to_string_lossy().into());
        obj.insert(
            "declared_env".into(),
            serde_json::to_value(&spec.env).unwrap_or_default(),
        );
        obj.insert(
            "env".into(),
            serde_json::to_value(&d.env).unwrap_or_default(),
        );
        // Where each variable comes from: {"origin": "captured" | "declared" | "profile" |
        // "grpm"}, with "profile": NAME for a profile's.
        let sources: serde_json::Map<String, serde_json::Value> = d
            .env_sources
            .iter()
            .map(|(k, o)| {
                let mut v = serde_json::json!({ "origin": o.word() });
                if let EnvOrigin::Profile(p) = o {
                    v["profile"] = p.clone().into();
                }
                (k.clone(), v)
            })
            .collect();
        obj.insert("env_sources".into(), sources.into());
        obj.insert(
            "env_profile".into(),
            spec.profile
                .as_ref()
                .map_or(serde_json::Value::Null, |p| p.name.clone().into()),
        );
        obj.insert(
            "profile_env".into(),
            spec.profile.as_ref().map_or(serde_json::Value::Null, |p| {
                serde_json::to_value(&p.env).unwrap_or_default()
            }),
        );
        obj.insert(
            "file".into(),
            spec.file
                .as_ref()
                .map_or(serde_json::Value::Null, |f| f.to_string_lossy().into()),
        );
        obj.insert(
            "kill_timeout_ms".into(),
            (spec.kill_timeout.as_millis() as u64).into(),
        );
        obj.insert("stop_signal".into(), spec.stop_signal.to_string().into());
        obj.insert("autorestart".into(), spec.autorestart.into());
        obj.insert("instances".into(), d.info.instances.into());
        obj.insert(
            "sockets".into(),
            d.sockets
                .iter()
                .map(|s| serde_json::json!({ "name": s.name, "address": s.address, "fd": s.fd }))
                .collect::<Vec<_>>()
                .into(),
        );
        obj.insert(
            "last_exit".into(),
            d.last_exit
                .as_ref()
                .map(
                    |e| serde_json::json!({ "code": e.code, "signal": e.signal, "text": e.text() }),
                )
                .unwrap_or(serde_json::Value::Null),
        );
        obj.insert(
            "error".into(),
            d.error
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::from),
        );
        obj.insert("log_time".into(), spec.logs.time.into());
        obj.insert("log_max_size".into(), spec.logs.max_size.into());
        obj.insert("log_keep".into(), spec.logs.keep.into());
        obj.insert("stdout_path".into(), d.stdout_path.to_string_lossy().into());
        obj.insert("stderr_path".into(), d.stderr_path.to_string_lossy().into());
        obj.insert("restart_in_ms".into(), d.restart_in_ms.into());
        obj.extend(super::checks_view::describe_json(d));
        if let Some(h) = host {
            obj.insert("host".into(), h.into());
        }
    }
    row
}

/// One event as a JSON line.
pub fn event_json(e: &Event, host: Option<&str>) -> serde_json::Value {
    let (method, uid, pid, peer) = match &e.cause {
        Cause::Request {
            method,
            uid,
            pid,
            peer,
        } => (Some(method.as_str()), *uid, *pid, Some(peer)),
        Cause::Apply { uid, pid, peer } => (Some("Apply"), *uid, *pid, Some(peer)),
        _ => (None, None, None, None),
    };
    let mut v = serde_json::json!({
        "seq": e.seq,
        "time": rfc3339_ms(e.at_unix_ms),
        "at_unix_ms": e.at_unix_ms,
        "app": e.app,
        "app_id": e.app_id,
        "instance": e.instance,
        "kind": e.kind.word(),
        "manual": e.manual(),
        "pid": e.pid,
        "exit_code": e.exit.as_ref().and_then(|x| x.code),
        "signal": e.exit.as_ref().and_then(|x| x.signal),
        "cause": {
            "kind": e.cause.word(),
            "method": method.filter(|m| !m.is_empty()),
            "uid": uid,
            "pid": pid,
            "peer": peer.filter(|p| !p.is_empty()),
        },
        "delay_ms": e.delay_ms,
        "error": e.error,
        "action": (!e.action.is_empty()).then_some(&e.action),
        "message": (!e.message.is_empty()).then_some(&e.message),
        // Like `action` and `message`: null when there is none (every event but a notify
        // with --data), as the README says of the fields that do not apply.
        "data": (!e.data.is_empty()).then_some(&e.data),
        "lost": (e.kind == EventKind::Gap).then_some(e.lost),
    });
    if let (Some(h), Some(obj)) = (host, v.as_object_mut()) {
        obj.insert("host".into(), h.into());
    }
    v
}

/// `text` with every control character but tab shown as an escape (`\n`, `\r`, `\x1b`,
/// `\u{9b}`), so that what an app or a notification wrote cannot drive the terminal it is
/// printed on (move the cursor, clear the screen, set the title, overwrite a line). JSON output
/// needs none of this: JSON escapes control characters itself.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    use std::fmt::Write;
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut s = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        let _ = match c {
            '\t' => s.write_char(c),
            '\n' => s.write_str("\\n"),
            '\r' => s.write_str("\\r"),
            c if c.is_ascii_control() => write!(s, "\\x{:02x}", u32::from(c)),
            c if c.is_control() => write!(s, "\\u{{{:x}}}", u32::from(c)),
            c => s.write_char(c),
        };
    }
    std::borrow::Cow::Owned(s)
}

/// One event as a line for people.
pub fn event_line(e: &Event) -> String {
    let mut line = format!("{}  #{:<6} ", rfc3339_ms(e.at_unix_ms), e.seq);
    if e.kind == EventKind::Gap {
        line.push_str(&format!("gap: {} event(s) lost", e.lost));
        if !e.message.is_empty() {
            line.push_str(&format!(" ({})", e.message));
        }
        return line;
    }
    if e.instance > 0 {
        line.push_str(&format!(
            "{}:{}[{}] {}",
            e.app,
            e.instance,
            e.app_id,
            e.kind.word()
        ));
    } else {
        line.push_str(&format!("{}[{}] {}", e.app, e.app_id, e.kind.word()));
    }
    if let Some(pid) = e.pid {
        line.push_str(&format!(" pid {pid}"));
    }
    if let Some(x) = &e.exit {
        line.push_str(&format!(": {}", x.text()));
    }
    if let Some(d) = e.delay_ms {
        line.push_str(&format!(" in {d}ms"));
    }
    if let Some(err) = &e.error {
        line.push_str(&format!(": {err}"));
    }
    if !e.action.is_empty() {
        line.push_str(&format!(" {}", e.action));
    }
    if !e.message.is_empty() {
        line.push_str(&format!(": {}", e.message));
    }
    for (k, v) in &e.data {
        line.push_str(&format!(" {k}={v}"));
    }
    let why = match &e.cause {
        Cause::Request {
            method, uid, peer, ..
        } => {
            let mut w = format!("{method} via {peer}");
            if let Some(u) = uid {
                w.push_str(&format!(" uid {u}"));
            }
            w
        }
        other => other.word().to_string(),
    };
    line.push_str(&format!(
        "  ({}{why})",
        if e.manual() { "manual: " } else { "" }
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusKind;

    fn app(id: u64, name: &str, status: StatusKind) -> AppInfo {
        AppInfo {
            id,
            name: name.into(),
            status,
            pid: None,
            restarts: 0,
            uptime_ms: 0,
            cpu_percent: 0.0,
            memory_bytes: 0,
            needed_by: None,
            dependent_of: None,
            processes: 0,
            instance: 0,
            instances: 1,
        }
    }

    #[test]
    fn a_terminal_table_colours_status_words_and_fits_names() {
        let long = "a-very-long-application-name-that-goes-on-and-on";
        let apps = [
            app(1, "web", StatusKind::Online),
            app(2, long, StatusKind::Errored),
            app(3, "db", StatusKind::Stopped),
        ];
        let plain = table(&apps, Look::default());
        assert!(!plain.contains('\x1b') && plain.contains(long), "{plain}");
        let fitted = table(
            &apps,
            Look {
                colour: true,
                width: Some(70),
            },
        );
        assert!(fitted.contains("\x1b[32monline\x1b[0m"), "{fitted}");
        assert!(fitted.contains("\x1b[31merrored\x1b[0m"), "{fitted}");
        assert!(fitted.contains("a-very-long-appl…  "), "{fitted}");
        for line in fitted.lines() {
            let visible = line
                .replace("\x1b[32m", "")
                .replace("\x1b[31m", "")
                .replace("\x1b[0m", "");
            assert!(visible.chars().count() <= 70, "{visible:?}");
        }
        // Columns line up whether or not the status is coloured.
        let bare: Vec<String> = fitted
            .lines()
            .map(|l| {
                l.replace("\x1b[32m", "")
                    .replace("\x1b[31m", "")
                    .replace("\x1b[0m", "")
            })
            .collect();
        let pid_at = bare[0].find("PID").unwrap();
        assert!(
            bare.iter()
                .skip(1)
                .all(|l| l.chars().nth(pid_at) == Some('-')),
            "{bare:?}"
        );
    }

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(visible("plain\ttext é"), "plain\ttext é");
        assert_eq!(
            visible("\u{1b}[2J\u{1b}]0;t\u{7}x\r\ny\u{7f}\u{9b}31m\0"),
            r"\x1b[2J\x1b]0;t\x07x\r\ny\x7f\u{9b}31m\x00"
        );
    }
}
