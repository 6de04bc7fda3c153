//! The owner's side of an app's checks: its notify socket (made once, kept for the app's life),
//! the probe task of the current instance, and the verdicts it sends back as machine inputs.
//! A verdict from a probe that was replaced or stopped meanwhile is dropped (each probe has a
//! generation).

use std::{path::Path, sync::Arc};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::machine::{Input, Probe};
use crate::model::{AppSpec, Env, LogStream, ProbeReport};

use crate::supervisor::{
    logs::AppLogs,
    probes::{self, notify::NotifySocket, notify::NotifyState, Live, Target, Verdict},
    process::reaper::Reaper,
};

/// Verdicts, each with the generation of the probe that gave it.
type Channel = (mpsc::Sender<(u64, Verdict)>, mpsc::Receiver<(u64, Verdict)>);

pub struct Probing {
    notify: Option<NotifySocket>,
    task: Option<JoinHandle<()>>,
    generation: u64,
    /// Where verdicts come back; only for an app with checks (a channel costs ~1 KiB, and a
    /// thousand apps without checks need none).
    verdicts: Option<Channel>,
    report: watch::Sender<ProbeReport>,
    /// Where this instance's output starts, and what the app had notified before it.
    log_from: [u64; 2],
    notified: NotifyState,
}

impl Probing {
    /// For an app with this spec: binds its notify socket (`file` in `notify_dir`, one per
    /// instance slot) when it uses one, or takes the one `handed` over by the keeper (still
    /// bound: what the instance sent while no agent ran waits in it). A socket that cannot be
    /// made is logged; a notify check then fails with that cause.
    pub fn new(
        spec: &AppSpec,
        notify_dir: &Path,
        file: &str,
        handed: Option<std::os::fd::OwnedFd>,
    ) -> Probing {
        let path = notify_dir.join(file);
        let notify = spec.uses_notify().then(|| {
            match handed {
                Some(fd) => NotifySocket::adopt(&path, fd),
                None => NotifySocket::bind(&path),
            }
            .inspect_err(|e| {
                tracing::error!(app = %spec.name, error = %e, "cannot make the notify socket");
            })
            .ok()
        });
        let verdicts = (spec.ready.is_some() || spec.alive.is_some()).then(|| mpsc::channel(4));
        Probing {
            notify: notify.flatten(),
            task: None,
            generation: 0,
            verdicts,
            report: watch::Sender::new(ProbeReport::default()),
            log_from: [0, 0],
            notified: NotifyState::default(),
        }
    }

    /// No socket, no probe: a placeholder while a new spec's probing is made.
    pub fn idle() -> Probing {
        Probing {
            notify: None,
            task: None,
            generation: 0,
            verdicts: None,
            report: watch::Sender::new(ProbeReport::default()),
            log_from: [0, 0],
            notified: NotifyState::default(),
        }
    }

    /// The bound notify socket, for the keeper to hold.
    pub fn notify_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.notify.as_ref().map(NotifySocket::fd)
    }

    /// Before a spawn: where the instance's output will start, what was notified so far, and
    /// the variables that tell the app where to notify.
    pub fn before_spawn(&mut self, spec: &AppSpec, logs: &AppLogs, env: &mut Env) {
        self.log_from = [
            logs.get(LogStream::Out).end(),
            logs.get(LogStream::Err).end(),
        ];
        if let Some(n) = &self.notify {
            self.notified = n.state().borrow().clone();
            env.insert(
                "NOTIFY_SOCKET".into(),
                n.path().to_string_lossy().into_owned(),
            );
        }
        if let Some(crate::model::AliveCheck::Watchdog(d)) = spec.alive.as_ref().map(|l| &l.check) {
            env.insert("WATCHDOG_USEC".into(), d.as_micros().to_string());
        }
    }

    /// Starts `which` check of the current instance; any other probe stops.
    pub fn start(
        &mut self,
        which: Probe,
        spec: &AppSpec,
        env: Env,
        logs: Arc<AppLogs>,
        reaper: Arc<Reaper>,
    ) {
        self.stop();
        let target = Target {
            env,
            cwd: spec.cwd.clone(),
            reaper,
            logs,
            log_from: self.log_from,
            log_time: spec.logs.time,
            notify: self
                .notify
                .as_ref()
                .map(|n| (n.state(), self.notified.clone())),
            report: self.report.clone(),
        };
        let verdict: std::pin::Pin<Box<dyn std::future::Future<Output = Verdict> + Send>> =
            match (which, &spec.ready, &spec.alive) {
                (Probe::Ready, Some(r), _) => Box::pin(probes::ready(r.clone(), target)),
                (Probe::Alive, _, Some(l)) => Box::pin(probes::alive(l.clone(), target)),
                // The machine asks only for checks the spec has.
                _ => return,
            };
        let Some((tx, _)) = &self.verdicts else {
            return;
        };
        let (generation, tx) = (self.generation, tx.clone());
        self.task = Some(tokio::spawn(async move {
            let v = verdict.await;
            let _ = tx.send((generation, v)).await;
        }));
    }

    /// Stops the current probe; its verdict, if already sent, is dropped.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.generation += 1;
    }

    /// The next verdict of the current probe, as a machine input.
    pub async fn verdict(&mut self) -> Input {
        loop {
            let Some((_, rx)) = self.verdicts.as_mut() else {
                return std::future::pending().await;
            };
            match rx.recv().await {
                Some((g, v)) if g == self.generation => {
                    self.task = None;
                    return match v {
                        Verdict::Ready => Input::Ready,
                        Verdict::NotReady(why) => Input::NotReady(why),
                        Verdict::Unhealthy(why) => Input::Unhealthy(why),
                    };
                }
                Some(_) => continue,
                // We hold a sender: never.
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// What the checks last found, for `describe`.
    pub fn live(&self) -> Live {
        Live {
            report: self.report.subscribe(),
            notify: self.notify.as_ref().map(NotifySocket::state),
        }
    }
}

impl Drop for Probing {
    fn drop(&mut self) {
        self.stop();
    }
}
