//! What `grpm monit` shows and how keys change it: pure, no terminal, no agent. The task that
//! drives it feeds in listings, output lines and keys, and carries out the [`Effect`]s.

use std::collections::VecDeque;

use crate::model::{AppId, AppInfo};

/// Output lines kept for the selected app.
pub const LOG_LINES: usize = 500;

/// An app as the table shows it: where it runs and its listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `None` for the local agent.
    pub host: Option<String>,
    pub info: AppInfo,
}

/// Which app: its host and id.
pub type Key = (Option<String>, AppId);

/// What a confirmed key does to the selected app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Restart,
    Stop,
    Start,
}

impl Verb {
    pub fn word(self) -> &'static str {
        match self {
            Verb::Restart => "restart",
            Verb::Stop => "stop",
            Verb::Start => "start",
        }
    }
}

/// A key, as far as monit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Char(char),
    Up,
    Down,
    Enter,
    Esc,
    Backspace,
    /// Ctrl-C.
    Interrupt,
}

/// What the driver must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    Quit,
    /// Follow another app's output (or none).
    Follow(Option<Key>),
    /// Act on an app, confirmed by the user.
    Act {
        verb: Verb,
        key: Key,
        name: String,
    },
}

#[derive(Debug, Default)]
pub struct Monit {
    rows: Vec<Row>,
    /// The selected app, kept across refreshes by key.
    selected: Option<Key>,
    pub filter: String,
    /// Typing into the filter.
    pub filtering: bool,
    /// A verb waiting for y/n.
    pub confirm: Option<(Verb, Key, String)>,
    /// The selected app's output, last lines last.
    pub logs: VecDeque<String>,
    /// The last thing that happened (an action's outcome, a host's failure).
    pub message: String,
    /// Show the HOST column (with --host).
    pub hosts: bool,
}

impl Monit {
    pub fn new(hosts: bool) -> Monit {
        Monit {
            hosts,
            ..Monit::default()
        }
    }

    /// Replaces one host's apps (in id order); returns the app to follow when the selection
    /// changed (the first app, when nothing was selected yet).
    pub fn set_apps(&mut self, host: Option<&str>, apps: Vec<AppInfo>) -> Option<Effect> {
        self.rows.retain(|r| r.host.as_deref() != host);
        self.rows.extend(apps.into_iter().map(|info| Row {
            host: host.map(str::to_string),
            info,
        }));
        self.rows
            .sort_by(|a, b| (&a.host, a.info.id).cmp(&(&b.host, b.info.id)));
        self.keep_selection()
    }

    /// The rows the filter lets through.
    pub fn visible(&self) -> Vec<&Row> {
        let f = self.filter.to_lowercase();
        self.rows
            .iter()
            .filter(|r| {
                f.is_empty()
                    || r.info.name.to_lowercase().contains(&f)
                    || r.host
                        .as_ref()
                        .is_some_and(|h| h.to_lowercase().contains(&f))
            })
            .collect()
    }

    /// Where the selection is among the visible rows.
    pub fn selected_index(&self) -> Option<usize> {
        let key = self.selected.as_ref()?;
        self.visible().iter().position(|r| &key_of(r) == key)
    }

    pub fn selected(&self) -> Option<&Row> {
        let key = self.selected.as_ref()?;
        self.rows.iter().find(|r| &key_of(r) == key)
    }

    /// A line of the followed app's output.
    pub fn push_log(&mut self, line: String) {
        if self.logs.len() == LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }

    /// Applies a key.
    pub fn key(&mut self, input: Input) -> Effect {
        if input == Input::Interrupt {
            return Effect::Quit;
        }
        if let Some((verb, key, name)) = self.confirm.take() {
            return match input {
                Input::Char('y' | 'Y') => {
                    self.message = format!("{} {name}...", verb.word());
                    Effect::Act { verb, key, name }
                }
                _ => {
                    self.message = format!("{} {name}: cancelled", verb.word());
                    Effect::None
                }
            };
        }
        if self.filtering {
            match input {
                Input::Char(c) => self.filter.push(c),
                Input::Backspace => {
                    self.filter.pop();
                }
                Input::Esc => {
                    self.filter.clear();
                    self.filtering = false;
                }
                Input::Enter => self.filtering = false,
                Input::Up | Input::Down | Input::Interrupt => {}
            }
            return self.keep_selection().unwrap_or(Effect::None);
        }
        match input {
            Input::Char('q') => Effect::Quit,
            Input::Char('/') => {
                self.filtering = true;
                Effect::None
            }
            Input::Esc => {
                self.filter.clear();
                self.keep_selection().unwrap_or(Effect::None)
            }
            Input::Up | Input::Char('k') => self.move_by(-1),
            Input::Down | Input::Char('j') => self.move_by(1),
            Input::Char(c @ ('r' | 's' | 't')) => {
                let verb = match c {
                    'r' => Verb::Restart,
                    's' => Verb::Stop,
                    _ => Verb::Start,
                };
                if let Some(row) = self.selected() {
                    let name = row.info.name.clone();
                    let key = key_of(row);
                    self.message.clear();
                    self.confirm = Some((verb, key, name));
                }
                Effect::None
            }
            _ => Effect::None,
        }
    }

    fn move_by(&mut self, delta: isize) -> Effect {
        let visible = self.visible();
        if visible.is_empty() {
            return Effect::None;
        }
        let at = self.selected_index().map_or(0, |i| {
            (i as isize + delta).clamp(0, visible.len() as isize - 1) as usize
        });
        let key = key_of(visible[at]);
        if self.selected.as_ref() == Some(&key) {
            return Effect::None;
        }
        self.selected = Some(key.clone());
        self.logs.clear();
        Effect::Follow(Some(key))
    }

    /// Keeps the selection on a visible app: the same one when it still is, else the first.
    fn keep_selection(&mut self) -> Option<Effect> {
        if self.selected_index().is_some() {
            return None;
        }
        let next = self.visible().first().map(|r| key_of(r));
        if next == self.selected {
            return None;
        }
        self.selected = next.clone();
        self.logs.clear();
        Some(Effect::Follow(next))
    }
}

fn key_of(r: &Row) -> Key {
    (r.host.clone(), r.info.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StatusKind;

    pub fn info(id: AppId, name: &str) -> AppInfo {
        AppInfo {
            id,
            name: name.into(),
            status: StatusKind::Online,
            pid: Some(100 + id as u32),
            restarts: 0,
            uptime_ms: 1000,
            cpu_percent: 0.0,
            memory_bytes: 1 << 20,
            processes: 1,
            needed_by: None,
            dependent_of: None,
            instance: 0,
            instances: 1,
        }
    }

    #[test]
    fn selects_the_first_app_and_keeps_it_across_refreshes() {
        let mut m = Monit::new(false);
        assert_eq!(
            m.set_apps(None, vec![info(1, "web"), info(2, "worker")]),
            Some(Effect::Follow(Some((None, 1))))
        );
        assert_eq!(m.key(Input::Down), Effect::Follow(Some((None, 2))));
        assert_eq!(
            m.set_apps(None, vec![info(2, "worker"), info(1, "web")]),
            None
        );
        assert_eq!(m.selected_index(), Some(1));
        // The selected app is deleted: the first one is selected.
        assert_eq!(
            m.set_apps(None, vec![info(1, "web")]),
            Some(Effect::Follow(Some((None, 1))))
        );
        assert_eq!(m.key(Input::Up), Effect::None);
    }

    #[test]
    fn actions_ask_first() {
        let mut m = Monit::new(false);
        m.set_apps(None, vec![info(1, "web")]);
        assert_eq!(m.key(Input::Char('r')), Effect::None);
        assert!(m.confirm.is_some());
        assert_eq!(
            m.key(Input::Char('y')),
            Effect::Act {
                verb: Verb::Restart,
                key: (None, 1),
                name: "web".into()
            }
        );
        m.key(Input::Char('s'));
        assert_eq!(m.key(Input::Char('n')), Effect::None);
        assert!(m.confirm.is_none());
        assert!(m.message.contains("cancelled"));
        assert_eq!(m.key(Input::Char('q')), Effect::Quit);
        assert_eq!(m.key(Input::Interrupt), Effect::Quit);
    }

    #[test]
    fn filter_narrows_and_moves_the_selection() {
        let mut m = Monit::new(true);
        m.set_apps(Some("box1"), vec![info(1, "web"), info(2, "worker")]);
        m.set_apps(Some("box2"), vec![info(1, "web")]);
        assert_eq!(m.visible().len(), 3);
        m.key(Input::Char('/'));
        assert!(m.filtering);
        // 'q' while typing is text, not quit.
        assert_eq!(m.key(Input::Char('w')), Effect::None);
        assert_eq!(
            m.key(Input::Char('o')),
            Effect::Follow(Some((Some("box1".into()), 2)))
        );
        assert_eq!(m.visible().len(), 1);
        assert_eq!(m.key(Input::Char('q')), Effect::Follow(None));
        m.key(Input::Backspace);
        m.key(Input::Enter);
        assert!(!m.filtering);
        m.key(Input::Esc);
        assert_eq!(m.visible().len(), 3);
    }

    #[test]
    fn keeps_the_last_lines() {
        let mut m = Monit::new(false);
        for i in 0..LOG_LINES + 10 {
            m.push_log(i.to_string());
        }
        assert_eq!(m.logs.len(), LOG_LINES);
        assert_eq!(m.logs.front().map(String::as_str), Some("10"));
    }
}
