//! Pure restart decisions: what to do when a main process exits on its own. No clocks, no
//! processes; time comes in as arguments so every rule is unit-tested.

use std::{collections::VecDeque, time::Duration};

use crate::model::{Exit, RestartPolicy};

/// What the supervisor remembers between exits of one app.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Times (ms) of the autorestarts within the current window.
    restarts: VecDeque<u64>,
    /// Autorestarts since the app last stayed up for `STABLE_AFTER`; drives the backoff.
    consecutive: u32,
}

impl History {
    /// A manual start or restart: the app gets a clean slate.
    pub fn reset(&mut self) {
        *self = History::default();
    }
}

/// What to do after an unexpected exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after `delay`.
    Restart { delay: Duration },
    /// Too many restarts: mark it errored with this cause.
    GiveUp { cause: String },
    /// Autorestart is off: leave it down (stopped after `exit 0`, errored otherwise).
    LeaveDown { errored: bool },
}

/// Decides the fate of an app whose main process exited (or failed to spawn) unasked.
///
/// `uptime` is how long the process ran; `now_ms` is the current time in milliseconds.
pub fn on_exit(
    policy: &RestartPolicy,
    autorestart: bool,
    history: &mut History,
    exit: Option<&Exit>,
    uptime: Duration,
    now_ms: u64,
) -> Decision {
    if !autorestart {
        return Decision::LeaveDown {
            errored: !exit.is_some_and(Exit::success),
        };
    }
    if uptime >= RestartPolicy::STABLE_AFTER {
        history.consecutive = 0;
    }
    let window = policy.window.as_millis() as u64;
    while history
        .restarts
        .front()
        .is_some_and(|&t| now_ms.saturating_sub(t) >= window)
    {
        history.restarts.pop_front();
    }
    if history.restarts.len() >= policy.max_restarts as usize {
        let last = exit.map_or_else(|| "it could not be spawned".to_string(), Exit::text);
        return Decision::GiveUp {
            cause: format!(
                "restarted {} times within {}s; last exit: {last}",
                history.restarts.len(),
                policy.window.as_secs()
            ),
        };
    }
    history.restarts.push_back(now_ms);
    let delay = backoff(policy, history.consecutive);
    history.consecutive = history.consecutive.saturating_add(1);
    Decision::Restart { delay }
}

/// The delay before the `n`th consecutive autorestart (0-based): `delay * 2^n`, capped.
pub fn backoff(policy: &RestartPolicy, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    policy
        .delay
        .checked_mul(factor)
        .map_or(policy.delay_max, |d| d.min(policy.delay_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RestartPolicy = RestartPolicy {
        delay: Duration::from_millis(100),
        delay_max: Duration::from_secs(3),
        max_restarts: 15,
        window: Duration::from_secs(60),
    };

    fn exit(code: i32) -> Exit {
        Exit {
            code: Some(code),
            signal: None,
            at_unix_ms: 0,
        }
    }

    fn delay_of(d: Decision) -> Duration {
        match d {
            Decision::Restart { delay } => delay,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u128> = (0..8).map(|n| backoff(&P, n).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3000, 3000, 3000]);
        assert_eq!(backoff(&P, 200), P.delay_max);
    }

    #[test]
    fn crash_loop_gives_up_after_max_restarts_in_window() {
        let mut h = History::default();
        let mut now = 1_000_000;
        for i in 0..15 {
            let d = on_exit(&P, true, &mut h, Some(&exit(1)), Duration::ZERO, now);
            now += delay_of(d).as_millis() as u64;
            assert!(
                now - 1_000_000 < 60_000,
                "restart {i} fell outside the window"
            );
        }
        match on_exit(&P, true, &mut h, Some(&exit(1)), Duration::ZERO, now) {
            Decision::GiveUp { cause } => {
                assert!(
                    cause.contains("15 times") && cause.contains("exit code 1"),
                    "{cause}"
                )
            }
            other => panic!("expected give-up, got {other:?}"),
        }
    }

    #[test]
    fn restarts_spread_beyond_the_window_never_give_up() {
        let mut h = History::default();
        for i in 0..100u64 {
            let d = on_exit(
                &P,
                true,
                &mut h,
                Some(&exit(1)),
                Duration::from_secs(5),
                i * 10_000,
            );
            delay_of(d);
        }
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut h = History::default();
        for n in 0..4 {
            let d = on_exit(
                &P,
                true,
                &mut h,
                Some(&exit(1)),
                Duration::ZERO,
                n * 100_000,
            );
            assert_eq!(delay_of(d), backoff(&P, n as u32));
        }
        let d = on_exit(
            &P,
            true,
            &mut h,
            Some(&exit(1)),
            Duration::from_secs(31),
            500_000,
        );
        assert_eq!(delay_of(d), P.delay);
    }

    #[test]
    fn reset_clears_everything() {
        let mut h = History::default();
        for _ in 0..15 {
            on_exit(&P, true, &mut h, Some(&exit(1)), Duration::ZERO, 0);
        }
        h.reset();
        assert_eq!(
            delay_of(on_exit(&P, true, &mut h, Some(&exit(1)), Duration::ZERO, 0)),
            P.delay
        );
    }

    #[test]
    fn autorestart_off_leaves_it_down() {
        let mut h = History::default();
        assert_eq!(
            on_exit(&P, false, &mut h, Some(&exit(0)), Duration::ZERO, 0),
            Decision::LeaveDown { errored: false }
        );
        assert_eq!(
            on_exit(&P, false, &mut h, Some(&exit(3)), Duration::ZERO, 0),
            Decision::LeaveDown { errored: true }
        );
        assert_eq!(
            on_exit(&P, false, &mut h, None, Duration::ZERO, 0),
            Decision::LeaveDown { errored: true }
        );
    }

    #[test]
    fn spawn_failures_count_too() {
        let mut h = History::default();
        for _ in 0..15 {
            delay_of(on_exit(&P, true, &mut h, None, Duration::ZERO, 0));
        }
        match on_exit(&P, true, &mut h, None, Duration::ZERO, 0) {
            Decision::GiveUp { cause } => assert!(cause.contains("could not be spawned")),
            other => panic!("{other:?}"),
        }
    }
}
