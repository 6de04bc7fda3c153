//! Output: tables for people, JSON for scripts.

use serde::Serialize;

use crate::{
    model::format_duration,
    rpc::{convert::status_word, pb},
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
    let header = [
        "ID", "NAME", "STATUS", "PID", "RESTARTS", "UPTIME", "CPU", "MEM",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for a in apps {
        let online = a.pid != 0;
        cells.push(vec![
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
