//! The owner's side of the restarts an app's spec asks for: its cron schedule (the next firing,
//! in local time) and its watched files (inotify through `notify`, bursts folded by its
//! debouncer). Both are armed while the app should run and dropped when it is stopped; what
//! they fire comes back as `Trigger` inputs, which the machine turns into restarts.

use std::path::{Path, PathBuf};

use chrono::Local;
use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode, DebounceEventResult, Debouncer};
use tokio::{sync::mpsc, time::Instant};

use crate::model::{ignored, next_firing, parse_schedule, wildcard, AppSpec, Cause};

/// What the triggers last did, for `describe`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerReport {
    /// The next scheduled restart (ms since the epoch).
    pub next_restart_unix_ms: Option<u64>,
    /// Why watching does not work (a missing path, the inotify limit...).
    pub watch_error: Option<String>,
}

/// What the watcher's thread sends: a change worth a restart, or a failure.
enum Watched {
    Changed,
    Failed(String),
}

pub struct Triggers {
    schedule: Option<croner::Cron>,
    /// The next firing: when (for the timer) and when by the wall clock (for `describe`).
    next: Option<(Instant, u64)>,
    watcher: Option<Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>>,
    /// What the watcher's thread sends; only for an app that watches files.
    watched: Option<(mpsc::Sender<Watched>, mpsc::Receiver<Watched>)>,
    /// A burst ends once no change came for this long (the debouncer's batches of a long
    /// burst are folded here into one restart).
    debounce: std::time::Duration,
    report: TriggerReport,
}

impl Triggers {
    pub fn new(spec: &AppSpec) -> Triggers {
        let watched = (!spec.watch.is_empty()).then(|| mpsc::channel(4));
        Triggers {
            // Checked at the edge; a hand-edited state file is not, so a bad one arms nothing.
            schedule: spec
                .restart_schedule
                .as_deref()
                .and_then(|e| parse_schedule(e).ok()),
            next: None,
            watcher: None,
            watched,
            debounce: spec.watch_debounce,
            report: TriggerReport::default(),
        }
    }

    pub fn report(&self) -> TriggerReport {
        self.report.clone()
    }

    /// Arms the schedule and the watcher while the app should run (`wanted`); drops them
    /// otherwise. `own_logs`: the app's log files, never a reason to restart.
    pub fn set(&mut self, wanted: bool, spec: &AppSpec, own_logs: &[PathBuf]) {
        if !wanted {
            self.next = None;
            self.watcher = None;
            self.report.next_restart_unix_ms = None;
            return;
        }
        if self.next.is_none() {
            self.arm_schedule();
        }
        if self.watcher.is_none() && !spec.watch.is_empty() {
            match self.watch(spec, own_logs) {
                Ok(w) => {
                    self.watcher = Some(w);
                    self.report.watch_error = None;
                }
                Err(e) => {
                    tracing::error!(app = %spec.name, error = %e, "cannot watch");
                    self.report.watch_error = Some(e);
                }
            }
        }
    }

    fn arm_schedule(&mut self) {
        let Some(cron) = &self.schedule else { return };
        let now = Local::now();
        self.next = next_firing(cron, &now).map(|at| {
            let wait = (at - now).to_std().unwrap_or_default();
            (Instant::now() + wait, at.timestamp_millis().max(0) as u64)
        });
        self.report.next_restart_unix_ms = self.next.map(|(_, ms)| ms);
    }

    fn watch(
        &self,
        spec: &AppSpec,
        own_logs: &[PathBuf],
    ) -> Result<Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>, String> {
        let cwd = spec.cwd.clone();
        // Each entry: the directory or file to watch, and the pattern a changed path must
        // match (for "config/*.toml").
        let mut roots: Vec<(PathBuf, Option<String>)> = Vec::new();
        for w in &spec.watch {
            let full = cwd.join(w);
            let name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.contains(['*', '?']) {
                let dir = full.parent().map(Path::to_path_buf).unwrap_or(cwd.clone());
                roots.push((dir, Some(full.to_string_lossy().into_owned())));
            } else {
                roots.push((full, None));
            }
        }
        let ignore = spec.watch_ignore.clone();
        let own: Vec<PathBuf> = own_logs.to_vec();
        let patterns: Vec<String> = roots.iter().filter_map(|(_, p)| p.clone()).collect();
        let plain: Vec<PathBuf> = roots
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let Some((tx, _)) = &self.watched else {
            return Err("no watched paths".into());
        };
        let tx = tx.clone();
        let base = cwd.clone();
        let handler = move |res: DebounceEventResult| {
            // A watched directory that went away is watched no more: say so.
            if let Some(gone) = plain.iter().find(|r| !r.exists()) {
                let _ = tx.try_send(Watched::Failed(format!(
                    "{} was deleted; it is not watched any more",
                    gone.display()
                )));
            }
            let msg = match res {
                Ok(events) => {
                    let relevant = events.iter().any(|e| {
                        // The app's own log files (and their rotations) are never a reason.
                        let path = e.path.to_string_lossy();
                        if own.iter().any(|o| path.starts_with(&*o.to_string_lossy())) {
                            return false;
                        }
                        let rel = e.path.strip_prefix(&base).unwrap_or(&e.path);
                        if ignored(&rel.to_string_lossy(), &ignore) {
                            return false;
                        }
                        let full = e.path.to_string_lossy();
                        plain.iter().any(|r| e.path.starts_with(r))
                            || patterns.iter().any(|p| wildcard(p, &full))
                    });
                    if !relevant {
                        return;
                    }
                    Watched::Changed
                }
                Err(e) => Watched::Failed(describe_error(&e)),
            };
            // A restart already queued covers this one too.
            let _ = tx.try_send(msg);
        };
        let mut debouncer =
            new_debouncer(spec.watch_debounce, handler).map_err(|e| describe_error(&e))?;
        for (root, pattern) in &roots {
            let mode = if pattern.is_some() || root.is_file() {
                RecursiveMode::NonRecursive
            } else {
                RecursiveMode::Recursive
            };
            debouncer
                .watcher()
                .watch(root, mode)
                .map_err(|e| format!("{}: {}", root.display(), describe_error(&e)))?;
        }
        Ok(debouncer)
    }

    /// The next restart either trigger asks for.
    pub async fn next(&mut self) -> Cause {
        loop {
            let at = self.next.map(|(t, _)| t);
            tokio::select! {
                () = sleep_until(at) => {
                    self.next = None;
                    self.arm_schedule();
                    return Cause::Schedule;
                }
                msg = recv(&mut self.watched) => match msg {
                    Some(Watched::Changed) => {
                        self.quiet().await;
                        return Cause::Watch;
                    }
                    Some(Watched::Failed(e)) => {
                        tracing::warn!(error = %e, "watching failed");
                        self.report.watch_error = Some(e);
                    }
                    // We hold a sender: never.
                    None => std::future::pending::<()>().await,
                },
            }
        }
    }
}

impl Triggers {
    /// Waits until no change has come for the debounce time (failures are recorded).
    async fn quiet(&mut self) {
        while let Ok(Some(msg)) = tokio::time::timeout(self.debounce, recv(&mut self.watched)).await
        {
            if let Watched::Failed(e) = msg {
                self.report.watch_error = Some(e);
            }
        }
    }
}

/// The watcher's next message; never, for an app that watches nothing.
async fn recv(
    watched: &mut Option<(mpsc::Sender<Watched>, mpsc::Receiver<Watched>)>,
) -> Option<Watched> {
    match watched {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A watcher error as users can act on it.
fn describe_error(e: &notify_debouncer_mini::notify::Error) -> String {
    use notify_debouncer_mini::notify::ErrorKind;
    match &e.kind {
        ErrorKind::MaxFilesWatch => "the inotify watch limit is reached (raise \
             fs.inotify.max_user_watches, or watch fewer files)"
            .into(),
        ErrorKind::PathNotFound => "no such file or directory".into(),
        _ => e.to_string(),
    }
}

/// Where a watched entry must exist for the app to be created: the path itself, or, for a
/// pattern, its directory.
pub fn must_exist(spec: &AppSpec) -> Vec<PathBuf> {
    spec.watch
        .iter()
        .map(|w| {
            let full = spec.cwd.join(w);
            let is_pattern = full
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(['*', '?']));
            if is_pattern {
                full.parent().map(Path::to_path_buf).unwrap_or(full)
            } else {
                full
            }
        })
        .collect()
}
