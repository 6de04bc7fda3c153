//! The metric families, declared once, refreshed from the supervisor's [`Stats`] on each scrape
//! and encoded by `prometheus-client` (OpenMetrics text). Label values are data (app names,
//! ids, kinds), never parts of metric names.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{
    model::{LogStream, Status, StatusKind},
    supervisor::Stats,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub app: String,
    pub id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub app: String,
    pub id: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub app: String,
    pub id: String,
    pub stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Families {
    registry: Registry,
    up: Family<AppLabels, Gauge>,
    status: Family<StatusLabels, Gauge>,
    restarts: Family<AppLabels, Counter>,
    cpu: Family<AppLabels, FloatCounter>,
    memory: Family<AppLabels, Gauge>,
    processes: Family<AppLabels, Gauge>,
    exit_code: Family<AppLabels, Gauge>,
    uptime: Family<AppLabels, FloatGauge>,
    app_log_bytes: Family<StreamLabels, Counter>,
    events: Family<KindLabels, Counter>,
    subscribers: Gauge,
    log_bytes: Counter,
    state_writes: Counter,
    agent_cpu: FloatCounter,
    agent_memory: Gauge,
}

impl Default for Families {
    fn default() -> Self {
        Families::new()
    }
}

impl Families {
    pub fn new() -> Families {
        let mut registry = Registry::with_prefix("grpm");
        let f = Families {
            up: Family::default(),
            status: Family::default(),
            restarts: Family::default(),
            cpu: Family::default(),
            memory: Family::default(),
            processes: Family::default(),
            exit_code: Family::default(),
            uptime: Family::default(),
            app_log_bytes: Family::default(),
            events: Family::default(),
            subscribers: Gauge::default(),
            log_bytes: Counter::default(),
            state_writes: Counter::default(),
            agent_cpu: FloatCounter::default(),
            agent_memory: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "app_up",
            "1 when the app is online (its main process runs and is ready), else 0",
            f.up.clone(),
        );
        r.register(
            "app_status",
            "The app's current status: one series per app, labelled with the status word, valued 1",
            f.status.clone(),
        );
        r.register(
            "app_restarts",
            "Times the app was started again (manual restarts and autorestarts)",
            f.restarts.clone(),
        );
        r.register(
            "app_cpu_seconds",
            "CPU time used by the app's whole process tree while sampled by this agent",
            f.cpu.clone(),
        );
        r.register(
            "app_memory_bytes",
            "Memory of the app's whole tree at the last sample: PSS where readable, else RSS",
            f.memory.clone(),
        );
        r.register(
            "app_processes",
            "Live processes in the app's tree at the last sample",
            f.processes.clone(),
        );
        r.register(
            "app_last_exit_code",
            "Exit code of the app's last main process that exited with one",
            f.exit_code.clone(),
        );
        r.register(
            "app_uptime_seconds",
            "Seconds since the app's main process started (apps that run one)",
            f.uptime.clone(),
        );
        r.register(
            "app_log_bytes",
            "Bytes of output the app wrote to its logs over its life, by stream",
            f.app_log_bytes.clone(),
        );
        r.register(
            "events",
            "Events published by this agent, by kind",
            f.events.clone(),
        );
        r.register(
            "subscribers",
            "Clients subscribed to the event stream now",
            f.subscribers.clone(),
        );
        r.register(
            "log_bytes",
            "Bytes of output in every app's logs, deleted apps' included",
            f.log_bytes.clone(),
        );
        r.register(
            "state_writes",
            "Writes of state.json by this agent",
            f.state_writes.clone(),
        );
        r.register(
            "agent_cpu_seconds",
            "CPU time used by the agent process",
            f.agent_cpu.clone(),
        );
        r.register(
            "agent_memory_bytes",
            "Resident memory of the agent process",
            f.agent_memory.clone(),
        );
        Families { registry, ..f }
    }

    /// Sets every family from `stats` (apps gone since the last scrape disappear) and the
    /// agent's own `(cpu seconds, resident bytes)`, then encodes them.
    pub fn render(&self, stats: &Stats, agent: (f64, u64)) -> String {
        let now = crate::model::now_unix_ms();
        for a in &stats.apps {
            let v = &a.view;
            // An instance of an app of several is its own series: `app="api:1"`.
            let labels = AppLabels {
                app: v.label(),
                id: v.id.to_string(),
            };
            let kind = StatusKind::from(&v.status);
            self.up
                .get_or_create(&labels)
                .set(i64::from(kind == StatusKind::Online));
            self.status
                .get_or_create(&StatusLabels {
                    app: labels.app.clone(),
                    id: labels.id.clone(),
                    status: kind.word(),
                })
                .set(1);
            set_counter(&self.restarts.get_or_create(&labels), u64::from(v.restarts));
            set_float_counter(&self.cpu.get_or_create(&labels), a.usage.cpu_seconds_total);
            self.memory
                .get_or_create(&labels)
                .set(a.usage.memory_bytes as i64);
            self.processes
                .get_or_create(&labels)
                .set(i64::from(a.usage.processes));
            if let Some(code) = v.last_exit.and_then(|e| e.code) {
                self.exit_code.get_or_create(&labels).set(i64::from(code));
            }
            if let Status::Online {
                started_at_unix_ms, ..
            } = v.status
            {
                self.uptime
                    .get_or_create(&labels)
                    .set(now.saturating_sub(started_at_unix_ms) as f64 / 1000.0);
            }
            for (stream, bytes) in [LogStream::Out, LogStream::Err]
                .into_iter()
                .zip(a.log_bytes)
            {
                set_counter(
                    &self.app_log_bytes.get_or_create(&StreamLabels {
                        app: labels.app.clone(),
                        id: labels.id.clone(),
                        stream: stream.word(),
                    }),
                    bytes,
                );
            }
        }
        for (kind, n) in &stats.events {
            set_counter(
                &self.events.get_or_create(&KindLabels { kind: kind.word() }),
                *n,
            );
        }
        self.subscribers.set(stats.subscribers as i64);
        set_counter(&self.log_bytes, stats.log_bytes);
        set_counter(&self.state_writes, stats.state_writes);
        set_float_counter(&self.agent_cpu, agent.0);
        self.agent_memory.set(agent.1 as i64);
        let mut out = String::with_capacity(4096 + stats.apps.len() * 768);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // The series live for one scrape: between scrapes they would only hold memory (and
        // a deleted app's series must not outlive it).
        for f in [&self.up, &self.memory, &self.processes, &self.exit_code] {
            f.clear();
        }
        self.status.clear();
        self.restarts.clear();
        self.cpu.clear();
        self.uptime.clear();
        self.app_log_bytes.clear();
        out
    }
}

/// Counters here mirror totals kept elsewhere: they are set, not incremented.
fn set_counter(c: &Counter, v: u64) {
    c.inner().store(v, Ordering::Relaxed);
}

fn set_float_counter(c: &FloatCounter, v: f64) {
    c.inner().store(v.to_bits(), Ordering::Relaxed);
}
