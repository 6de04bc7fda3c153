//! Drawing monit's state into a ratatui frame: the apps table, the selected app's output, and
//! a footer line (keys, the filter being typed, a question, or the last outcome).

use ratatui::{
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row as TableRow, Table, TableState},
    Frame,
};

use super::state::Monit;
use crate::{
    cli::render::bytes,
    model::{format_duration, StatusKind},
};

pub fn draw(frame: &mut Frame, m: &Monit) {
    let visible = m.visible();
    let area = frame.area();
    // The table takes what its rows need, up to 60 % of the screen; the output the rest.
    let table_height = (visible.len() as u16 + 3).min(area.height * 6 / 10).max(4);
    let [table_area, logs_area, footer_area] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);

    let mut header = vec![
        "ID", "NAME", "STATUS", "PID", "CPU", "MEM", "PROCS", "RESTARTS", "UPTIME",
    ];
    let mut widths = vec![
        Constraint::Length(4),
        Constraint::Min(8),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    if m.hosts {
        header.insert(0, "HOST");
        widths.insert(0, Constraint::Min(6));
    }
    let rows = visible.iter().map(|r| {
        let a = &r.info;
        // A running app always has a process: none means no sample yet.
        let running = a.pid.is_some() && a.processes > 0;
        let dash = || "-".to_string();
        let mut cells = vec![
            a.id.to_string(),
            a.label(),
            a.status.word().to_string(),
            a.pid.map_or_else(dash, |p| p.to_string()),
            if running {
                format!("{:.1}%", a.cpu_percent)
            } else {
                dash()
            },
            if running {
                bytes(a.memory_bytes)
            } else {
                dash()
            },
            if running {
                a.processes.to_string()
            } else {
                dash()
            },
            a.restarts.to_string(),
            if a.pid.is_some() {
                format_duration(std::time::Duration::from_millis(a.uptime_ms))
            } else {
                dash()
            },
        ];
        if m.hosts {
            cells.insert(0, r.host.clone().unwrap_or_default());
        }
        let style = match a.status {
            StatusKind::Errored => Style::new().add_modifier(Modifier::BOLD),
            StatusKind::Stopped => Style::new().add_modifier(Modifier::DIM),
            _ => Style::new(),
        };
        TableRow::new(cells).style(style)
    });
    let title = if m.filter.is_empty() {
        format!(" grpm monit: {} apps ", visible.len())
    } else {
        format!(
            " grpm monit: {} apps matching /{} ",
            visible.len(),
            m.filter
        )
    };
    let table = Table::new(rows, widths)
        .header(TableRow::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::new().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::new().with_selected(m.selected_index());
    frame.render_stateful_widget(table, table_area, &mut state);

    let logs_title = match m.selected() {
        Some(r) => match &r.host {
            Some(h) => format!(" output of {} on {h} ", r.info.name),
            None => format!(" output of {} ", r.info.name),
        },
        None => " output ".to_string(),
    };
    let inner_height = logs_area.height.saturating_sub(2) as usize;
    let skip = m.logs.len().saturating_sub(inner_height);
    let lines: Vec<Line> = m
        .logs
        .iter()
        .skip(skip)
        .map(|l| Line::raw(l.as_str()))
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(logs_title)),
        logs_area,
    );

    let footer = if let Some((verb, _, name)) = &m.confirm {
        format!("{} {name}? y/n", verb.word())
    } else if m.filtering {
        format!("filter: /{}_  (Enter keeps it, Esc clears it)", m.filter)
    } else if !m.message.is_empty() {
        format!(
            "{}   |  q quit  ↑↓ select  / filter  r restart  s stop  t start",
            m.message
        )
    } else {
        "q quit  ↑↓ select  / filter  r restart  s stop  t start".to_string()
    };
    frame.render_widget(Paragraph::new(footer), footer_area);
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::*;
    use crate::{
        cli::monit::state::{Input, Monit},
        model::{AppInfo, StatusKind},
    };

    fn info(id: u64, name: &str, status: StatusKind, restarts: u32) -> AppInfo {
        AppInfo {
            id,
            name: name.into(),
            status,
            pid: (status == StatusKind::Online).then_some(4000 + id as u32),
            restarts,
            uptime_ms: 65_000,
            cpu_percent: 12.5,
            memory_bytes: 3 << 20,
            processes: 9,
            needed_by: None,
            dependent_of: None,
            instance: 0,
            instances: 1,
        }
    }

    fn screen(m: &Monit, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, m)).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shows_the_table_the_output_and_the_keys() {
        let mut m = Monit::new(false);
        m.set_apps(
            None,
            vec![
                info(1, "gunicorn", StatusKind::Online, 2),
                info(2, "cron", StatusKind::Stopped, 0),
            ],
        );
        m.push_log("out | booted".into());
        let s = screen(&m, 90, 16);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].contains("grpm monit: 2 apps"), "{s}");
        assert!(lines[1].contains("ID") && lines[1].contains("PROCS"), "{s}");
        let row = lines.iter().find(|l| l.contains("gunicorn")).unwrap();
        assert!(row.contains("> 1"), "the selection is marked: {s}");
        for cell in ["online", "4001", "12.5%", "3.0 MiB", "9", "2", "1m"] {
            assert!(row.contains(cell), "{cell} missing: {row}");
        }
        let cron = lines.iter().find(|l| l.contains("cron")).unwrap();
        assert!(cron.contains("stopped") && cron.contains('-'), "{cron}");
        assert!(s.contains("output of gunicorn"), "{s}");
        assert!(s.contains("out | booted"), "{s}");
        assert!(lines[15].starts_with("q quit"), "{s}");
    }

    #[test]
    fn asks_before_acting_and_shows_the_filter_and_hosts() {
        let mut m = Monit::new(true);
        m.set_apps(Some("box1"), vec![info(1, "web", StatusKind::Online, 0)]);
        m.set_apps(Some("box2"), vec![info(1, "db", StatusKind::Errored, 15)]);
        m.key(Input::Char('r'));
        let s = screen(&m, 100, 12);
        assert!(
            s.lines().last().unwrap().starts_with("restart web? y/n"),
            "{s}"
        );
        assert!(s.lines().nth(1).unwrap().contains("HOST"), "{s}");
        assert!(s.contains("box2") && s.contains("errored"), "{s}");
        m.key(Input::Char('n'));
        m.key(Input::Char('/'));
        m.key(Input::Char('d'));
        let s = screen(&m, 100, 12);
        assert!(s.contains("1 apps matching /d"), "{s}");
        assert!(!s.contains("web"), "{s}");
        assert!(s.lines().last().unwrap().starts_with("filter: /d_"), "{s}");
    }
}
