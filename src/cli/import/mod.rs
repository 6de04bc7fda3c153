//! `grpm import pm2|supervisord FILE`: another tool's configuration, written to stdout as a grpm
//! app file. `pm2` reads ecosystem files (`.json`, `.yaml`, or `.js` through node), `supervisord`
//! reads `[program:x]` sections and follows `[include]` (`ini` is its small INI reader). Both
//! translate into [`toml_out::OutApp`]s with pure functions; every key that is not translated,
//! or is translated with a difference, is reported on stderr (`Notes`), never dropped silently.

mod ini;
mod pm2;
mod supervisord;
mod toml_out;

use std::{io::Write, path::Path};

use super::Failure;
use toml_out::OutApp;

/// Which tool's file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Pm2,
    Supervisord,
}

/// Whether a report is about a key that was left out, or one translated with a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotTranslated,
    Note,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: Kind,
    /// The app (its grpm name) the key belongs to; `None` for the file itself.
    pub app: Option<String>,
    pub key: String,
    pub text: String,
}

/// What an import reports beside the file it writes.
#[derive(Debug, Default)]
pub struct Notes(Vec<Note>);

impl Notes {
    /// A key translated, with a difference worth knowing.
    pub fn note(&mut self, app: Option<&str>, key: &str, text: impl Into<String>) {
        self.push(Kind::Note, app, key, text.into());
    }

    /// A key (or section) left out, and why.
    pub fn skip(&mut self, app: Option<&str>, key: &str, reason: impl Into<String>) {
        self.push(Kind::NotTranslated, app, key, reason.into());
    }

    fn push(&mut self, kind: Kind, app: Option<&str>, key: &str, text: String) {
        self.0.push(Note {
            kind,
            app: app.map(str::to_string),
            key: key.to_string(),
            text,
        });
    }

    pub fn items(&self) -> &[Note] {
        &self.0
    }

    /// One line per report: `not translated: APP: KEY: why` or `note: APP: KEY: what`.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| {
                let kind = match n.kind {
                    Kind::NotTranslated => "not translated",
                    Kind::Note => "note",
                };
                match &n.app {
                    Some(app) => format!("{kind}: {app}: {}: {}", n.key, n.text),
                    None => format!("{kind}: {}: {}", n.key, n.text),
                }
            })
            .collect()
    }
}

/// What a translation produced: the apps (not yet checked against the model), and the reports.
#[derive(Debug, Default)]
pub struct Translation {
    pub apps: Vec<OutApp>,
    pub notes: Notes,
}

/// Reads `file`, prints the grpm app file on stdout and the reports on stderr.
pub fn run(source: Source, file: &Path) -> Result<(), Failure> {
    let (tool, t) = match source {
        Source::Pm2 => ("pm2", pm2::import(file)?),
        Source::Supervisord => ("supervisord", supervisord::import(file)?),
    };
    let dir = toml_out::dir_of(file);
    let Translation { apps, mut notes } = t;
    let apps = finish(apps, &dir, &mut notes);
    let report = notes.lines();
    for line in &report {
        eprintln!("grpm import: {line}");
    }
    if apps.is_empty() {
        return Err(Failure::Failed(format!(
            "{}: no app to import",
            file.display()
        )));
    }
    let skipped = notes
        .items()
        .iter()
        .filter(|n| n.kind == Kind::NotTranslated)
        .count();
    let header = format!(
        "grpm app file imported from {} by `grpm import {tool}`.\n\
         {skipped} key(s) not translated, {} note(s): see what the import printed on stderr.\n\
         Relative paths (cwd, watch) are taken from this file's directory.",
        file.display(),
        report.len() - skipped,
    );
    let text = toml_out::render(&header, &apps).map_err(Failure::Failed)?;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Closed),
        Err(e) => Err(Failure::Failed(format!("cannot write: {e}"))),
    }
}

/// Checks every app against the model (leaving out what it refuses), then drops dependencies
/// on apps that were left out.
pub(super) fn finish(apps: Vec<OutApp>, dir: &Path, notes: &mut Notes) -> Vec<OutApp> {
    let mut apps: Vec<OutApp> = apps
        .into_iter()
        .filter_map(|a| a.checked(dir, notes))
        .collect();
    let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
    for a in &mut apps {
        let name = a.name.clone();
        a.depends_on.retain(|d| {
            let keep = names.contains(&d.app);
            if !keep {
                notes.skip(
                    Some(&name),
                    "depends_on",
                    format!("{} was left out, so this app does not wait for it", d.app),
                );
            }
            keep
        });
    }
    apps
}

/// A value as the source wrote it, for reports.
fn shown(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}
