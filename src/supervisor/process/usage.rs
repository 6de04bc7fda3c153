//! CPU and memory of main processes, sampled when someone lists apps.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use super::procfs;

/// Resource use of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Percent of one core since the previous sample (or since the process started).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// Remembers the previous sample of each process, so CPU is a rate over the time between two
/// listings rather than a lifetime average.
#[derive(Default)]
pub struct Sampler {
    prev: Mutex<HashMap<(u32, u64), (Instant, u64)>>,
}

impl Sampler {
    /// Samples `pids` (blocking: reads /proc). Unknown or exited pids get zero use.
    pub fn sample(&self, pids: &[u32]) -> Vec<Usage> {
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size();
        let now = Instant::now();
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok());
        let mut prev = self.prev.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(pids.len());
        let out = pids
            .iter()
            .map(|&pid| {
                let Ok(st) = procfs::read_stat(pid) else {
                    return Usage::default();
                };
                let key = (pid, st.starttime);
                let cpu_percent = match prev.get(&key) {
                    Some((then, ticks_then)) => {
                        let secs = now.duration_since(*then).as_secs_f64();
                        let used = st.cpu_ticks.saturating_sub(*ticks_then) as f64 / ticks;
                        if secs > 0.0 {
                            100.0 * used / secs
                        } else {
                            0.0
                        }
                    }
                    None => match uptime {
                        Some(up) => {
                            let alive = up - st.starttime as f64 / ticks;
                            if alive > 0.0 {
                                100.0 * st.cpu_ticks as f64 / ticks / alive
                            } else {
                                0.0
                            }
                        }
                        None => 0.0,
                    },
                };
                next.insert(key, (now, st.cpu_ticks));
                Usage {
                    cpu_percent,
                    memory_bytes: st.rss_pages * page,
                }
            })
            .collect();
        *prev = next;
        out
    }
}
