//! Domain types: what an app is, what state it is in, how it ended. No gRPC, no syscalls.

mod app;
mod chunk;
mod draft;
mod duration;
mod event;
mod instances;
mod logs;
mod name;
mod plan;
mod probe;
mod profile;
mod run_as;
mod signal;
mod spec;
mod status;
mod time;
mod triggers;

pub use app::{AppDetail, AppInfo, StatusKind};
pub use chunk::{LogChunk, LogPosition};
pub use draft::{whole_millis, AppDraft};
pub use duration::{format_duration, format_exact, parse_duration};
pub use event::{Cause, Event, EventKind};
pub use instances::{
    aims_at_socket, check_sockets, HeldSocket, Listen, SocketSpec, DEFAULT_BACKLOG,
    DEFAULT_RELOAD_GRACE, MAX_INSTANCES, MAX_SOCKETS,
};
pub use logs::{parse_size, LogPolicy, LogStream};
pub use name::{validate_name, Target};
pub use plan::{diff_env, diff_specs, FieldChange, Plan, PlanAction, PlanEntry, MASKED};
pub use probe::{
    split_host_port, AliveCheck, Condition, Dependency, HttpUrl, Liveness, ProbeReport, Readiness,
    ReadyCheck,
};
pub use profile::{
    check_profile_name, effective_env, env_origins, EnvOrigin, EnvProfile, GRPM_VARS,
};
pub use run_as::{check_run_as, parse_limit, parse_umask, LIMITS_KNOWN, UNLIMITED};
pub use signal::Signal;
pub use spec::{
    validate_env, AppSpec, Env, Field, InvalidSpec, RestartPolicy, DEFAULT_MEMORY_GRACE, LIMITS,
};
pub use status::{Desired, Exit, Status};
pub use time::{civil_from_days, rfc3339_ms};
pub use triggers::{
    ignored, next_firing, parse_schedule, wildcard, DEFAULT_WATCH_DEBOUNCE, DEFAULT_WATCH_IGNORE,
};

/// Numeric app id: unique within one `GRPM_HOME`, never reused.
pub type AppId = u64;

/// Milliseconds since the Unix epoch, the clock used in records and events.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
