//! Readiness and liveness checks, run beside an app by its owner: each returns one verdict
//! (`Ready`, `NotReady`, `Unhealthy`) that the owner feeds to the lifecycle machine, and keeps
//! a report for `describe`. A probe never blocks the owner (it is its own task, aborted when
//! the app's tree is ended), and every attempt is bounded (see `attempt`).

mod attempt;
pub mod notify;

use std::{path::PathBuf, sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio::{
    sync::watch,
    time::{sleep, sleep_until, timeout_at, Instant},
};

use crate::model::{
    format_exact, now_unix_ms, AliveCheck, Env, Liveness, LogStream, ProbeReport, Readiness,
    ReadyCheck,
};
use crate::supervisor::{
    logs::{AppLogs, ReadFrom},
    process::reaper::Reaper,
};
use notify::NotifyState;

/// What an app's checks last found, read when asked (`describe`), not when the app last
/// changed state.
#[derive(Clone)]
pub struct Live {
    pub report: watch::Receiver<ProbeReport>,
    pub notify: Option<watch::Receiver<NotifyState>>,
}

impl Live {
    pub fn now(&self) -> Option<ProbeReport> {
        let mut r = self.report.borrow().clone();
        if let Some(n) = &self.notify {
            let status = n.borrow().status.clone();
            r.notify_status = (!status.is_empty()).then_some(status);
        }
        (!r.check.is_empty()).then_some(r)
    }
}

/// A probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    NotReady(String),
    Unhealthy(String),
}

/// What a probe needs to know of the app's current instance.
pub struct Target {
    /// The app's environment and working directory (for `exec` checks).
    pub env: Env,
    pub cwd: PathBuf,
    pub reaper: Arc<Reaper>,
    /// The app's logs, and where this instance's output starts in each stream.
    pub logs: Arc<AppLogs>,
    pub log_from: [u64; 2],
    /// Lines carry a timestamp prefix (`log_time`), which a `log` check skips.
    pub log_time: bool,
    /// The app's notify state, and what it was before this instance was spawned.
    pub notify: Option<(watch::Receiver<NotifyState>, NotifyState)>,
    /// Where the probe keeps its report.
    pub report: watch::Sender<ProbeReport>,
}

impl Target {
    /// Keeps an attempt's result. Readers look when asked (`describe`); none waits for a
    /// change, so a passing attempt after a passing one only moves the time, with no wake-up.
    fn record(&self, result: &Result<(), String>) {
        let at = now_unix_ms();
        self.report.send_if_modified(|r| {
            r.at_unix_ms = at;
            match result {
                Ok(()) => {
                    let changed = !r.ok || r.error.is_some() || r.failures != 0;
                    r.ok = true;
                    r.error = None;
                    r.failures = 0;
                    changed
                }
                Err(e) => {
                    r.ok = false;
                    r.error = Some(e.clone());
                    r.failures = r.failures.saturating_add(1);
                    true
                }
            }
        });
    }
}

/// One attempt of a polled check.
async fn attempt_once(t: &Target, check: Polled<'_>, limit: Duration) -> Result<(), String> {
    match check {
        Polled::Http(u) => attempt::bounded(u, limit, attempt::http(u)).await,
        Polled::Tcp(a, target) => attempt::bounded(a, limit, attempt::tcp(target)).await,
        Polled::Exec(argv) => attempt::exec(&t.reaper, argv, &t.env, &t.cwd, limit).await,
    }
}

#[derive(Clone, Copy)]
enum Polled<'a> {
    Http(&'a crate::model::HttpUrl),
    Tcp(&'a str, attempt::TcpTarget<'a>),
    Exec(&'a [String]),
}

/// Runs a readiness check until it passes (`Ready`) or the start timeout passes (`NotReady`,
/// with the last failure).
pub async fn ready(r: Readiness, t: Target) -> Verdict {
    let started = Instant::now();
    t.report.send_replace(ProbeReport {
        check: "ready".into(),
        ..ProbeReport::default()
    });
    let deadline = started + r.start_timeout;
    let last = match &r.check {
        ReadyCheck::Http(u) => poll_ready(&r, &t, Polled::Http(u), deadline).await,
        ReadyCheck::Tcp(a) => {
            let check = Polled::Tcp(a, attempt::TcpTarget::new(a));
            poll_ready(&r, &t, check, deadline).await
        }
        ReadyCheck::Exec(argv) => poll_ready(&r, &t, Polled::Exec(argv), deadline).await,
        ReadyCheck::Log(re) => log_ready(re, &t, deadline).await,
        ReadyCheck::Notify => notify_ready(&t, deadline).await,
    };
    match last {
        Ok(()) => {
            let after = started.elapsed().as_millis() as u64;
            t.report.send_modify(|rep| {
                rep.ok = true;
                rep.error = None;
                rep.at_unix_ms = now_unix_ms();
                rep.ready_after_ms = Some(after);
            });
            Verdict::Ready
        }
        Err(e) => Verdict::NotReady(format!(
            "not ready after {}: {e}",
            format_exact(r.start_timeout)
        )),
    }
}

async fn poll_ready(
    r: &Readiness,
    t: &Target,
    check: Polled<'_>,
    deadline: Instant,
) -> Result<(), String> {
    let mut last = Err("no attempt yet".to_string());
    if timeout_at(deadline, sleep(r.initial_delay)).await.is_err() {
        return last;
    }
    loop {
        let next = Instant::now() + r.period;
        let limit = r
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        last = attempt_once(t, check, limit.max(Duration::from_millis(1))).await;
        t.record(&last);
        if last.is_ok() || Instant::now() >= deadline {
            return last;
        }
        if next >= deadline {
            sleep_until(deadline).await;
            return last;
        }
        sleep_until(next).await;
    }
}

/// Ready once a line of this instance's output matches `re`.
async fn log_ready(re: &str, t: &Target, deadline: Instant) -> Result<(), String> {
    let Ok(re) = regex::Regex::new(re) else {
        return Err(format!("bad regular expression {re:?}"));
    };
    let out = t
        .logs
        .pieces(LogStream::Out, ReadFrom::Offset(t.log_from[0]), true);
    let err = t
        .logs
        .pieces(LogStream::Err, ReadFrom::Offset(t.log_from[1]), true);
    let mut both = std::pin::pin!(futures_util::stream::select(
        out.map(|p| (0, p)),
        err.map(|p| (1, p))
    ));
    let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let waited = timeout_at(deadline, async {
        while let Some((i, piece)) = both.next().await {
            let Ok(piece) = piece else { continue };
            let buf = &mut partial[i];
            buf.extend_from_slice(&piece.data);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                let text = match (t.log_time, text.split_once(' ')) {
                    (true, Some((_, rest))) => rest,
                    _ => &text,
                };
                if re.is_match(text) {
                    return true;
                }
            }
            // A line longer than the hold bound is matched by what we have of it.
            if buf.len() > 64 * 1024 {
                let matched = re.is_match(&String::from_utf8_lossy(buf));
                buf.clear();
                if matched {
                    return true;
                }
            }
        }
        false
    })
    .await;
    match waited {
        Ok(true) => Ok(()),
        Ok(false) => Err("the output ended without a matching line".into()),
        Err(_) => Err(format!("no line of output matched {:?}", re.as_str())),
    }
}

/// Ready once the app sends `READY=1` (the start timeout grows by `EXTEND_TIMEOUT_USEC`).
async fn notify_ready(t: &Target, deadline: Instant) -> Result<(), String> {
    let Some((rx, before)) = &t.notify else {
        return Err("no notify socket".into());
    };
    let mut rx = rx.clone();
    loop {
        let until = deadline + rx.borrow().extended.saturating_sub(before.extended);
        let state = rx.borrow_and_update().clone();
        if state.ready > before.ready {
            return Ok(());
        }
        match timeout_at(until, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) => return Err("the notify socket closed".into()),
            Err(_) if rx.borrow().extended > state.extended => continue,
            Err(_) => {
                let status = &rx.borrow().status;
                return Err(if status.is_empty() {
                    "no READY=1 on NOTIFY_SOCKET".into()
                } else {
                    format!("no READY=1 on NOTIFY_SOCKET (last STATUS={status})")
                });
            }
        }
    }
}

/// Runs a liveness check until it fails `failure_threshold` times in a row (`Unhealthy`).
pub async fn alive(l: Liveness, t: Target) -> Verdict {
    t.report.send_modify(|r| {
        r.check = "alive".into();
        r.failures = 0;
    });
    match &l.check {
        AliveCheck::Http(u) => poll_alive(&l, &t, Polled::Http(u)).await,
        AliveCheck::Tcp(a) => poll_alive(&l, &t, Polled::Tcp(a, attempt::TcpTarget::new(a))).await,
        AliveCheck::Exec(argv) => poll_alive(&l, &t, Polled::Exec(argv)).await,
        AliveCheck::Watchdog(d) => watchdog(*d, &t).await,
    }
}

async fn poll_alive(l: &Liveness, t: &Target, check: Polled<'_>) -> Verdict {
    let mut failures = 0;
    // One timer for the probe's life, not one per attempt, on a grid shared by every probe
    // (see `on_grid`); a tick missed by a slow attempt is skipped, which keeps the grid.
    let mut ticks = tokio::time::interval_at(on_grid(Instant::now() + l.period), l.period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let r = attempt_once(t, check, l.timeout).await;
        t.record(&r);
        match r {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= l.failure_threshold {
                    return Verdict::Unhealthy(format!(
                        "{failures} failed checks in a row; last: {e}"
                    ));
                }
            }
        }
    }
}

/// Liveness attempts start on a grid of [`GRID`] shared by every probe of the agent: probes
/// with the same period then fall due in the same few slots, and the agent wakes for a batch of
/// them rather than for each (500 apps checked every second: 20 wake-ups a second instead of
/// hundreds; a wake-up of an idle agent costs about as much as a loopback connect). An attempt
/// starts at most one slot later than it would have.
const GRID: Duration = Duration::from_millis(50);

/// The first instant of the shared grid at or after `t`.
fn on_grid(t: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = t.saturating_duration_since(epoch);
    let grid = GRID.as_nanos();
    let slots = since.as_nanos().div_ceil(grid);
    epoch + Duration::from_nanos(u64::try_from(slots * grid).unwrap_or(u64::MAX))
}

/// Healthy while `WATCHDOG=1` comes at least every `interval`.
async fn watchdog(interval: Duration, t: &Target) -> Verdict {
    let Some((rx, _)) = &t.notify else {
        return Verdict::Unhealthy("no notify socket for the watchdog".into());
    };
    let mut rx = rx.clone();
    let mut seen = rx.borrow_and_update().watchdog;
    loop {
        let deadline = Instant::now() + interval;
        loop {
            match timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    let now = rx.borrow_and_update().watchdog;
                    if now > seen {
                        seen = now;
                        t.record(&Ok(()));
                        break;
                    }
                }
                Ok(Err(_)) => return Verdict::Unhealthy("the notify socket closed".into()),
                Err(_) => {
                    let e = format!("no WATCHDOG=1 within {}", format_exact(interval));
                    t.record(&Err(e.clone()));
                    return Verdict::Unhealthy(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_fall_due_on_a_shared_grid() {
        let t = Instant::now() + Duration::from_millis(7);
        let g = on_grid(t);
        assert!(g >= t && g < t + GRID, "{:?}", g - t);
        // Instants in one slot share its end; the next slot is one grid later.
        assert_eq!(on_grid(g - Duration::from_millis(1)), g);
        assert_eq!(on_grid(g), g);
        assert_eq!(on_grid(g + Duration::from_millis(1)), g + GRID);
    }
}
