//! Proto ⇄ model, with validation: every field from the wire is checked here or in
//! `AppSpec::check`, and a bad one becomes `INVALID_ARGUMENT` saying what is wrong. The agent
//! uses the model → proto half for its answers and the proto → model half for requests; the
//! client the other way round (its `*_from_pb` refuse an answer it cannot read, with a message).

use std::{path::Path, time::Duration};

use tonic::Status;

use super::pb;
use crate::{
    model::{
        self, AliveCheck, AppDraft, AppSpec, Condition, Dependency, Env, Liveness, LogStream,
        Readiness, ReadyCheck, Signal, Target,
    },
    supervisor::{AppView, Piece, Usage},
};

pub fn target(s: &str) -> Result<Target, Status> {
    Target::parse(s).map_err(Status::invalid_argument)
}

/// Builds a validated spec: zero values take the documented defaults, then the one
/// `validate` of the model runs (the same the CLI runs on its flags and app files).
pub fn spec_from_pb(p: pb::AppSpec, default_cwd: &Path) -> Result<AppSpec, Status> {
    draft_from_pb(p)?
        .resolve(default_cwd)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A wire spec as a draft: zero values (and an empty cwd or signal) are left unset.
pub fn draft_from_pb(p: pb::AppSpec) -> Result<AppDraft, Status> {
    let ms = |v: u64| (v != 0).then(|| Duration::from_millis(v));
    let stop_signal = if p.stop_signal.is_empty() {
        None
    } else {
        Some(
            Signal::parse(&p.stop_signal)
                .map_err(|e| Status::invalid_argument(format!("stop_signal: {e}")))?,
        )
    };
    if p.env_profile.is_empty() && !p.profile_env.is_empty() {
        return Err(Status::invalid_argument(
            "profile_env: variables of a profile need its name in env_profile",
        ));
    }
    let profile = (!p.env_profile.is_empty()).then(|| model::EnvProfile {
        name: p.env_profile,
        env: p.profile_env.into_iter().collect(),
    });
    Ok(AppDraft {
        profile,
        file: (!p.file.is_empty()).then(|| p.file.into()),
        name: p.name,
        cmd: p.cmd,
        cwd: (!p.cwd.is_empty()).then(|| p.cwd.into()),
        env: p.env.into_iter().collect(),
        kill_timeout: ms(p.kill_timeout_ms),
        stop_signal,
        autorestart: p.autorestart,
        restart_delay: ms(p.restart_delay_ms),
        restart_delay_max: ms(p.restart_delay_max_ms),
        max_restarts: (p.max_restarts != 0).then_some(p.max_restarts),
        restart_window: ms(p.restart_window_ms),
        log_time: p.log_time,
        log_max_size: (p.log_max_size != 0).then_some(p.log_max_size),
        log_keep: (p.log_keep != 0).then_some(p.log_keep),
        ready: p.ready.map(ready_from_pb).transpose()?,
        alive: p.alive.map(alive_from_pb).transpose()?,
        depends_on: p
            .depends_on
            .into_iter()
            .map(dependency_from_pb)
            .collect::<Result<_, _>>()?,
        restart_schedule: (!p.restart_schedule.is_empty()).then_some(p.restart_schedule),
        watch: p.watch,
        watch_ignore: p.watch_ignore,
        watch_debounce: ms(p.watch_debounce_ms),
        user: (!p.user.is_empty()).then_some(p.user),
        group: (!p.group.is_empty()).then_some(p.group),
        umask: p.umask,
        limits: p.limits.into_iter().collect(),
        max_memory: (p.max_memory != 0).then_some(p.max_memory),
        memory_grace: (p.memory_grace != 0).then_some(p.memory_grace),
        instances: (p.instances != 0).then_some(p.instances),
        sockets: p
            .sockets
            .into_iter()
            .map(socket_from_pb)
            .collect::<Result<_, _>>()?,
        reload_grace: ms(p.reload_grace_ms),
    })
}

/// A held socket from the wire: its address parsed; backlog 0 takes the default.
pub fn socket_from_pb(p: pb::SocketSpec) -> Result<model::SocketSpec, Status> {
    let listen = model::Listen::parse(&p.listen)
        .map_err(|e| Status::invalid_argument(format!("sockets: {e}")))?;
    Ok(model::SocketSpec {
        name: p.name,
        listen,
        backlog: if p.backlog == 0 {
            model::DEFAULT_BACKLOG
        } else {
            p.backlog
        },
    })
}

pub fn socket_to_pb(s: &model::SocketSpec) -> pb::SocketSpec {
    pb::SocketSpec {
        name: s.name.clone(),
        listen: s.listen.to_string(),
        backlog: s.backlog,
    }
}

fn url(field: &str, s: &str) -> Result<model::HttpUrl, Status> {
    model::HttpUrl::parse(s).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// A readiness check from the wire: exactly one check; zero timings take the defaults.
pub fn ready_from_pb(p: pb::ReadyCheck) -> Result<Readiness, Status> {
    use pb::ready_check::Check;
    let check = match p.check {
        Some(Check::Http(u)) => ReadyCheck::Http(url("ready.http", &u)?),
        Some(Check::Tcp(t)) => ReadyCheck::Tcp(t),
        Some(Check::Exec(a)) => ReadyCheck::Exec(a.args),
        Some(Check::Log(re)) => ReadyCheck::Log(re),
        Some(Check::Notify(true)) => ReadyCheck::Notify,
        Some(Check::Notify(false)) => {
            return Err(Status::invalid_argument(
                "ready.notify: must be true when set",
            ))
        }
        None => {
            return Err(Status::invalid_argument(
                "ready: set one of http, tcp, exec, log, notify",
            ))
        }
    };
    let ms = |v: u64, d: Duration| if v == 0 { d } else { Duration::from_millis(v) };
    Ok(Readiness {
        check,
        initial_delay: Duration::from_millis(p.initial_delay_ms),
        period: ms(p.period_ms, Readiness::DEFAULT_PERIOD),
        timeout: ms(p.timeout_ms, Readiness::DEFAULT_TIMEOUT),
        start_timeout: ms(p.start_timeout_ms, Readiness::DEFAULT_START_TIMEOUT),
    })
}

pub fn ready_to_pb(r: &Readiness) -> pb::ReadyCheck {
    use pb::ready_check::Check;
    pb::ReadyCheck {
        check: Some(match &r.check {
            ReadyCheck::Http(u) => Check::Http(u.to_string()),
            ReadyCheck::Tcp(t) => Check::Tcp(t.clone()),
            ReadyCheck::Exec(a) => Check::Exec(pb::Argv { args: a.clone() }),
            ReadyCheck::Log(re) => Check::Log(re.clone()),
            ReadyCheck::Notify => Check::Notify(true),
        }),
        initial_delay_ms: r.initial_delay.as_millis() as u64,
        period_ms: r.period.as_millis() as u64,
        timeout_ms: r.timeout.as_millis() as u64,
        start_timeout_ms: r.start_timeout.as_millis() as u64,
    }
}

/// A liveness check from the wire: exactly one check; zero values take the defaults.
pub fn alive_from_pb(p: pb::AliveCheck) -> Result<Liveness, Status> {
    use pb::alive_check::Check;
    let check = match p.check {
        Some(Check::Http(u)) => AliveCheck::Http(url("alive.http", &u)?),
        Some(Check::Tcp(t)) => AliveCheck::Tcp(t),
        Some(Check::Exec(a)) => AliveCheck::Exec(a.args),
        Some(Check::WatchdogMs(ms)) => AliveCheck::Watchdog(Duration::from_millis(ms)),
        None => {
            return Err(Status::invalid_argument(
                "alive: set one of http, tcp, exec, watchdog_ms",
            ))
        }
    };
    let ms = |v: u64, d: Duration| if v == 0 { d } else { Duration::from_millis(v) };
    Ok(Liveness {
        check,
        period: ms(p.period_ms, Liveness::DEFAULT_PERIOD),
        timeout: ms(p.timeout_ms, Liveness::DEFAULT_TIMEOUT),
        failure_threshold: if p.failure_threshold == 0 {
            Liveness::DEFAULT_FAILURE_THRESHOLD
        } else {
            p.failure_threshold
        },
    })
}

pub fn alive_to_pb(l: &Liveness) -> pb::AliveCheck {
    use pb::alive_check::Check;
    pb::AliveCheck {
        check: Some(match &l.check {
            AliveCheck::Http(u) => Check::Http(u.to_string()),
            AliveCheck::Tcp(t) => Check::Tcp(t.clone()),
            AliveCheck::Exec(a) => Check::Exec(pb::Argv { args: a.clone() }),
            AliveCheck::Watchdog(d) => Check::WatchdogMs(d.as_millis() as u64),
        }),
        period_ms: l.period.as_millis() as u64,
        timeout_ms: l.timeout.as_millis() as u64,
        failure_threshold: l.failure_threshold,
    }
}

pub fn dependency_from_pb(d: pb::Dependency) -> Result<Dependency, Status> {
    let condition = match pb::Condition::try_from(d.condition) {
        Ok(pb::Condition::Unspecified | pb::Condition::Ready) => Condition::Ready,
        Ok(pb::Condition::Started) => Condition::Started,
        Ok(pb::Condition::Completed) => Condition::Completed,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "depends_on: unknown condition {}",
                d.condition
            )))
        }
    };
    Ok(Dependency {
        app: d.app,
        condition,
    })
}

pub fn dependency_to_pb(d: &Dependency) -> pb::Dependency {
    let condition = match d.condition {
        Condition::Started => pb::Condition::Started,
        Condition::Ready => pb::Condition::Ready,
        Condition::Completed => pb::Condition::Completed,
    };
    pb::Dependency {
        app: d.app.clone(),
        condition: condition as i32,
    }
}

/// A draft as the wire carries it: unset settings are sent as zero (the default); a set
/// duration is whole milliseconds, at least one.
pub fn draft_to_pb(d: &AppDraft) -> pb::AppSpec {
    let ms = |v: Option<Duration>| v.map_or(0, |d| model::whole_millis(d).as_millis() as u64);
    pb::AppSpec {
        name: d.name.clone(),
        cmd: d.cmd.clone(),
        cwd: d
            .cwd
            .as_ref()
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default(),
        env: d.env.clone().into_iter().collect(),
        kill_timeout_ms: ms(d.kill_timeout),
        stop_signal: d.stop_signal.map(|s| s.to_string()).unwrap_or_default(),
        autorestart: d.autorestart,
        restart_delay_ms: ms(d.restart_delay),
        restart_delay_max_ms: ms(d.restart_delay_max),
        max_restarts: d.max_restarts.unwrap_or(0),
        restart_window_ms: ms(d.restart_window),
        log_time: d.log_time,
        log_max_size: d.log_max_size.unwrap_or(0),
        log_keep: d.log_keep.unwrap_or(0),
        ready: d.ready.as_ref().map(ready_to_pb),
        alive: d.alive.as_ref().map(alive_to_pb),
        depends_on: d.depends_on.iter().map(dependency_to_pb).collect(),
        restart_schedule: d.restart_schedule.clone().unwrap_or_default(),
        watch: d.watch.clone(),
        watch_ignore: d.watch_ignore.clone(),
        watch_debounce_ms: ms(d.watch_debounce),
        user: d.user.clone().unwrap_or_default(),
        group: d.group.clone().unwrap_or_default(),
        umask: d.umask,
        limits: d.limits.clone().into_iter().collect(),
        max_memory: d.max_memory.unwrap_or(0),
        memory_grace: d.memory_grace.unwrap_or(0),
        env_profile: d
            .profile
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        profile_env: d
            .profile
            .as_ref()
            .map(|p| p.env.clone().into_iter().collect())
            .unwrap_or_default(),
        file: d
            .file
            .as_ref()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        instances: d.instances.unwrap_or(0),
        sockets: d.sockets.iter().map(socket_to_pb).collect(),
        reload_grace_ms: ms(d.reload_grace),
    }
}

pub fn spec_to_pb(s: &AppSpec) -> pb::AppSpec {
    pb::AppSpec {
        name: s.name.clone(),
        cmd: s.cmd.clone(),
        cwd: s.cwd.to_string_lossy().into_owned(),
        env: s.env.clone().into_iter().collect(),
        kill_timeout_ms: s.kill_timeout.as_millis() as u64,
        stop_signal: s.stop_signal.to_string(),
        autorestart: Some(s.autorestart),
        restart_delay_ms: s.restart.delay.as_millis() as u64,
        restart_delay_max_ms: s.restart.delay_max.as_millis() as u64,
        max_restarts: s.restart.max_restarts,
        restart_window_ms: s.restart.window.as_millis() as u64,
        log_time: s.logs.time,
        log_max_size: s.logs.max_size,
        log_keep: s.logs.keep,
        ready: s.ready.as_ref().map(ready_to_pb),
        alive: s.alive.as_ref().map(alive_to_pb),
        depends_on: s.depends_on.iter().map(dependency_to_pb).collect(),
        restart_schedule: s.restart_schedule.clone().unwrap_or_default(),
        watch: s.watch.clone(),
        watch_ignore: s.watch_ignore.clone(),
        watch_debounce_ms: s.watch_debounce.as_millis() as u64,
        user: s.user.clone().unwrap_or_default(),
        group: s.group.clone().unwrap_or_default(),
        umask: s.umask,
        limits: s.limits.clone().into_iter().collect(),
        max_memory: s.max_memory.unwrap_or(0),
        memory_grace: s.memory_grace,
        env_profile: s
            .profile
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        profile_env: s
            .profile
            .as_ref()
            .map(|p| p.env.clone().into_iter().collect())
            .unwrap_or_default(),
        file: s
            .file
            .as_ref()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        instances: s.instances,
        sockets: s.sockets.iter().map(socket_to_pb).collect(),
        reload_grace_ms: s.reload_grace.as_millis() as u64,
    }
}

/// The streams a request selects: UNSPECIFIED means both.
pub fn log_streams(v: i32) -> Result<Vec<LogStream>, Status> {
    Ok(
        match pb::LogStream::try_from(v)
            .map_err(|_| Status::invalid_argument(format!("stream: unknown log stream {v}")))?
        {
            pb::LogStream::Unspecified => vec![LogStream::Out, LogStream::Err],
            pb::LogStream::Stdout => vec![LogStream::Out],
            pb::LogStream::Stderr => vec![LogStream::Err],
        },
    )
}

/// One stream, as a resume point names it (UNSPECIFIED is refused).
pub fn log_stream(v: i32) -> Result<LogStream, Status> {
    match log_streams(v)?.as_slice() {
        [one] => Ok(*one),
        _ => Err(Status::invalid_argument(
            "from: each position names LOG_STREAM_STDOUT or LOG_STREAM_STDERR",
        )),
    }
}

pub fn log_stream_to_pb(s: LogStream) -> pb::LogStream {
    match s {
        LogStream::Out => pb::LogStream::Stdout,
        LogStream::Err => pb::LogStream::Stderr,
    }
}

pub fn chunk_to_pb(
    app: &str,
    app_id: u64,
    instance: u32,
    stream: LogStream,
    p: Piece,
) -> pb::LogChunk {
    pb::LogChunk {
        app: app.to_string(),
        app_id,
        instance,
        stream: log_stream_to_pb(stream) as i32,
        data: p.data,
        offset: p.offset,
        skipped: p.skipped,
    }
}

/// A caller's environment, validated. `None` when the caller sent none.
pub fn env_from_pb(e: Option<pb::Environment>) -> Result<Option<Env>, Status> {
    let Some(e) = e else { return Ok(None) };
    let env: Env = e.vars.into_iter().collect();
    model::validate_env(&env).map_err(|m| Status::invalid_argument(format!("client_env: {m}")))?;
    Ok(Some(env))
}

pub fn status_to_pb(s: &model::Status) -> pb::Status {
    match s {
        model::Status::Starting { .. } | model::Status::Backoff { .. } => pb::Status::Starting,
        model::Status::Online { .. } => pb::Status::Online,
        model::Status::Stopping { .. } => pb::Status::Stopping,
        model::Status::Stopped => pb::Status::Stopped,
        model::Status::Errored { .. } => pb::Status::Errored,
    }
}

pub fn info(v: &AppView, usage: Usage) -> pb::AppInfo {
    let uptime_ms = match v.status {
        model::Status::Online {
            started_at_unix_ms, ..
        } => model::now_unix_ms().saturating_sub(started_at_unix_ms),
        _ => 0,
    };
    pb::AppInfo {
        id: v.id,
        name: v.name().to_string(),
        status: status_to_pb(&v.status) as i32,
        pid: v.status.pid().unwrap_or(0),
        restarts: v.restarts,
        uptime_ms,
        cpu_percent: usage.cpu_percent,
        memory_bytes: usage.memory_bytes,
        needed_by: String::new(),
        dependent_of: String::new(),
        processes: usage.processes,
        instance: v.instance,
        instances: v.spec.instances,
    }
}

pub fn exit_to_pb(e: &model::Exit) -> pb::ExitInfo {
    pb::ExitInfo {
        code: e.code,
        signal: e.signal,
        at_unix_ms: e.at_unix_ms,
        text: e.text(),
    }
}

pub fn detail(v: &AppView, usage: Usage) -> pb::AppDetail {
    let restart_in_ms = match v.status {
        model::Status::Backoff { until_unix_ms } => {
            until_unix_ms.saturating_sub(model::now_unix_ms())
        }
        _ => 0,
    };
    pb::AppDetail {
        info: Some(info(v, usage)),
        spec: Some(spec_to_pb(&v.spec)),
        env: v.effective_env().into_iter().collect(),
        env_sources: model::env_origins(&v.base_env, &v.spec, v.slot)
            .into_iter()
            .map(|(k, o)| (k, env_source_to_pb(&o)))
            .collect(),
        desired_online: v.desired == model::Desired::Online,
        last_exit: v.last_exit.as_ref().map(exit_to_pb),
        error: v.error.clone().unwrap_or_default(),
        created_at_unix_ms: v.created_at_unix_ms,
        stdout_path: v.stdout_path.to_string_lossy().into_owned(),
        stderr_path: v.stderr_path.to_string_lossy().into_owned(),
        restart_in_ms,
        next_restart_unix_ms: v.triggers.next_restart_unix_ms.unwrap_or(0),
        last_restart_cause: v.last_restart.as_ref().map(|(c, _)| cause_to_pb(c)),
        last_restart_unix_ms: v.last_restart.as_ref().map_or(0, |(_, at)| *at),
        watch_error: v.triggers.watch_error.clone().unwrap_or_default(),
        probe: v
            .probe
            .as_ref()
            .and_then(|l| l.now())
            .map(|r| pb::ProbeReport {
                check: r.check.clone(),
                ok: r.ok,
                error: r.error.clone().unwrap_or_default(),
                at_unix_ms: r.at_unix_ms,
                failures: r.failures,
                ready_after_ms: r.ready_after_ms.unwrap_or(0),
                notify_status: r.notify_status.clone().unwrap_or_default(),
            }),
        sockets: v
            .sockets
            .iter()
            .map(|s| pb::HeldSocket {
                name: s.name.clone(),
                address: s.address.clone(),
                fd: s.fd,
            })
            .collect(),
    }
}

pub fn kind_to_pb(k: model::EventKind) -> pb::EventKind {
    use model::EventKind as K;
    match k {
        K::Created => pb::EventKind::Created,
        K::Starting => pb::EventKind::Starting,
        K::Online => pb::EventKind::Online,
        K::Exited => pb::EventKind::Exited,
        K::Stopping => pb::EventKind::Stopping,
        K::Stopped => pb::EventKind::Stopped,
        K::Restarting => pb::EventKind::Restarting,
        K::AutorestartScheduled => pb::EventKind::AutorestartScheduled,
        K::Errored => pb::EventKind::Errored,
        K::Deleted => pb::EventKind::Deleted,
        K::Notify => pb::EventKind::Notify,
        K::Gap => pb::EventKind::Gap,
        K::Ready => pb::EventKind::Ready,
        K::Unhealthy => pb::EventKind::Unhealthy,
        K::Reloading => pb::EventKind::Reloading,
        K::Reloaded => pb::EventKind::Reloaded,
        K::Scaled => pb::EventKind::Scaled,
    }
}

/// A wire kind from a request; unknown and unspecified values are refused.
pub fn kind_from_pb(v: i32) -> Result<model::EventKind, Status> {
    use model::EventKind as K;
    let k = pb::EventKind::try_from(v)
        .map_err(|_| Status::invalid_argument(format!("kinds: unknown event kind {v}")))?;
    Ok(match k {
        pb::EventKind::Unspecified => {
            return Err(Status::invalid_argument(
                "kinds: EVENT_KIND_UNSPECIFIED is not a kind",
            ))
        }
        pb::EventKind::Created => K::Created,
        pb::EventKind::Starting => K::Starting,
        pb::EventKind::Online => K::Online,
        pb::EventKind::Exited => K::Exited,
        pb::EventKind::Stopping => K::Stopping,
        pb::EventKind::Stopped => K::Stopped,
        pb::EventKind::Restarting => K::Restarting,
        pb::EventKind::AutorestartScheduled => K::AutorestartScheduled,
        pb::EventKind::Errored => K::Errored,
        pb::EventKind::Deleted => K::Deleted,
        pb::EventKind::Notify => K::Notify,
        pb::EventKind::Gap => K::Gap,
        pb::EventKind::Ready => K::Ready,
        pb::EventKind::Unhealthy => K::Unhealthy,
        pb::EventKind::Reloading => K::Reloading,
        pb::EventKind::Reloaded => K::Reloaded,
        pb::EventKind::Scaled => K::Scaled,
    })
}

pub fn cause_to_pb(c: &model::Cause) -> pb::Cause {
    use model::Cause as C;
    let simple = |kind: pb::CauseKind| pb::Cause {
        kind: kind as i32,
        ..Default::default()
    };
    match c {
        C::Request {
            method,
            uid,
            pid,
            peer,
        } => pb::Cause {
            kind: pb::CauseKind::Request as i32,
            method: method.clone(),
            uid: *uid,
            peer_pid: *pid,
            peer: peer.clone(),
        },
        C::Crash => simple(pb::CauseKind::Crash),
        C::Backoff => simple(pb::CauseKind::Backoff),
        C::Recovery => simple(pb::CauseKind::Recovery),
        C::Unhealthy => simple(pb::CauseKind::Unhealthy),
        C::Schedule => simple(pb::CauseKind::Schedule),
        C::Watch => simple(pb::CauseKind::Watch),
        C::Memory => simple(pb::CauseKind::Memory),
        C::Shutdown => simple(pb::CauseKind::Shutdown),
        C::Apply { uid, pid, peer } => pb::Cause {
            kind: pb::CauseKind::Apply as i32,
            method: "Apply".into(),
            uid: *uid,
            peer_pid: *pid,
            peer: peer.clone(),
        },
    }
}

pub fn env_source_to_pb(o: &model::EnvOrigin) -> pb::EnvSource {
    use model::EnvOrigin as O;
    let (origin, profile) = match o {
        O::Captured => (pb::EnvOrigin::Captured, String::new()),
        O::Declared => (pb::EnvOrigin::Declared, String::new()),
        O::Profile(p) => (pb::EnvOrigin::Profile, p.clone()),
        O::Grpm => (pb::EnvOrigin::Grpm, String::new()),
    };
    pb::EnvSource {
        origin: origin as i32,
        profile,
    }
}

pub fn env_source_from_pb(s: pb::EnvSource) -> Result<model::EnvOrigin, String> {
    use model::EnvOrigin as O;
    Ok(match pb::EnvOrigin::try_from(s.origin) {
        Ok(pb::EnvOrigin::Captured) => O::Captured,
        Ok(pb::EnvOrigin::Declared) => O::Declared,
        Ok(pb::EnvOrigin::Profile) => O::Profile(s.profile),
        Ok(pb::EnvOrigin::Grpm) => O::Grpm,
        Ok(pb::EnvOrigin::Unspecified) | Err(_) => {
            return Err(format!("an env source with an unknown origin {}", s.origin))
        }
    })
}

pub fn plan_to_pb(p: &model::Plan) -> Vec<pb::PlanEntry> {
    use model::PlanAction as A;
    p.entries
        .iter()
        .map(|e| pb::PlanEntry {
            name: e.name.clone(),
            id: e.id.unwrap_or(0),
            action: match e.action {
                A::Create => pb::PlanAction::Create,
                A::Change => pb::PlanAction::Change,
                A::Start => pb::PlanAction::Start,
                A::Unchanged => pb::PlanAction::Unchanged,
                A::Delete => pb::PlanAction::Delete,
            } as i32,
            changes: e
                .changes
                .iter()
                .map(|c| pb::FieldChange {
                    field: c.field.clone(),
                    from: c.from.clone(),
                    to: c.to.clone(),
                })
                .collect(),
        })
        .collect()
}

pub fn plan_from_pb(entries: Vec<pb::PlanEntry>) -> Result<model::Plan, String> {
    use model::PlanAction as A;
    let entries = entries
        .into_iter()
        .map(|e| {
            let action = match pb::PlanAction::try_from(e.action) {
                Ok(pb::PlanAction::Create) => A::Create,
                Ok(pb::PlanAction::Change) => A::Change,
                Ok(pb::PlanAction::Start) => A::Start,
                Ok(pb::PlanAction::Unchanged) => A::Unchanged,
                Ok(pb::PlanAction::Delete) => A::Delete,
                Ok(pb::PlanAction::Unspecified) | Err(_) => {
                    return Err(format!("a plan entry with an unknown action {}", e.action))
                }
            };
            Ok(model::PlanEntry {
                name: e.name,
                id: (e.id != 0).then_some(e.id),
                action,
                changes: e
                    .changes
                    .into_iter()
                    .map(|c| model::FieldChange {
                        field: c.field,
                        from: c.from,
                        to: c.to,
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(model::Plan { entries })
}

pub fn event_to_pb(e: &model::Event) -> pb::Event {
    pb::Event {
        seq: e.seq,
        at_unix_ms: e.at_unix_ms,
        app: e.app.clone(),
        app_id: e.app_id,
        instance: e.instance,
        pid: e.pid.unwrap_or(0),
        kind: kind_to_pb(e.kind) as i32,
        manual: e.manual(),
        cause: Some(cause_to_pb(&e.cause)),
        exit: e.exit.as_ref().map(exit_to_pb),
        delay_ms: e.delay_ms.unwrap_or(0),
        error: e.error.clone().unwrap_or_default(),
        action: e.action.clone(),
        message: e.message.clone(),
        data: e.data.clone().into_iter().collect(),
        lost: e.lost,
    }
}

// What a client reads from an agent's answers. A value the model has no word for is refused
// with a message saying which field, so that the client can report a malformed answer.

pub fn status_from_pb(v: i32) -> model::StatusKind {
    match pb::Status::try_from(v) {
        Ok(pb::Status::Starting) => model::StatusKind::Starting,
        Ok(pb::Status::Online) => model::StatusKind::Online,
        Ok(pb::Status::Stopping) => model::StatusKind::Stopping,
        Ok(pb::Status::Stopped) => model::StatusKind::Stopped,
        Ok(pb::Status::Errored) => model::StatusKind::Errored,
        Ok(pb::Status::Unspecified) | Err(_) => model::StatusKind::Unknown,
    }
}

pub fn info_from_pb(a: pb::AppInfo) -> model::AppInfo {
    model::AppInfo {
        id: a.id,
        status: status_from_pb(a.status),
        name: a.name,
        pid: (a.pid != 0).then_some(a.pid),
        restarts: a.restarts,
        uptime_ms: a.uptime_ms,
        cpu_percent: a.cpu_percent,
        memory_bytes: a.memory_bytes,
        needed_by: (!a.needed_by.is_empty()).then_some(a.needed_by),
        dependent_of: (!a.dependent_of.is_empty()).then_some(a.dependent_of),
        processes: a.processes,
        instance: a.instance,
        instances: a.instances.max(1),
    }
}

pub fn exit_from_pb(e: pb::ExitInfo) -> model::Exit {
    model::Exit {
        code: e.code,
        signal: e.signal,
        at_unix_ms: e.at_unix_ms,
    }
}

pub fn detail_from_pb(d: pb::AppDetail) -> Result<model::AppDetail, String> {
    let info = d.info.ok_or("an app detail without its info")?;
    let spec = draft_from_pb(d.spec.ok_or("an app detail without its spec")?)
        .map_err(|s| format!("an app detail with a bad spec: {}", s.message()))?
        .fill(Path::new(""));
    Ok(model::AppDetail {
        info: info_from_pb(info),
        spec,
        env: d.env.into_iter().collect(),
        env_sources: d
            .env_sources
            .into_iter()
            .map(|(k, s)| env_source_from_pb(s).map(|o| (k, o)))
            .collect::<Result<_, _>>()?,
        desired: if d.desired_online {
            model::Desired::Online
        } else {
            model::Desired::Stopped
        },
        last_exit: d.last_exit.map(exit_from_pb),
        error: (!d.error.is_empty()).then_some(d.error),
        created_at_unix_ms: d.created_at_unix_ms,
        stdout_path: d.stdout_path.into(),
        stderr_path: d.stderr_path.into(),
        restart_in_ms: d.restart_in_ms,
        next_restart_unix_ms: (d.next_restart_unix_ms > 0).then_some(d.next_restart_unix_ms),
        last_restart: match d.last_restart_cause {
            Some(c) if d.last_restart_unix_ms > 0 => {
                Some((cause_from_pb(c)?, d.last_restart_unix_ms))
            }
            _ => None,
        },
        watch_error: (!d.watch_error.is_empty()).then_some(d.watch_error),
        probe: d.probe.map(|r| model::ProbeReport {
            check: r.check,
            ok: r.ok,
            error: (!r.error.is_empty()).then_some(r.error),
            at_unix_ms: r.at_unix_ms,
            failures: r.failures,
            ready_after_ms: (r.ready_after_ms > 0).then_some(r.ready_after_ms),
            notify_status: (!r.notify_status.is_empty()).then_some(r.notify_status),
        }),
        sockets: d
            .sockets
            .into_iter()
            .map(|s| model::HeldSocket {
                name: s.name,
                address: s.address,
                fd: s.fd,
            })
            .collect(),
    })
}

pub fn cause_from_pb(c: pb::Cause) -> Result<model::Cause, String> {
    use model::Cause as C;
    Ok(match pb::CauseKind::try_from(c.kind) {
        Ok(pb::CauseKind::Request) => C::Request {
            method: c.method,
            uid: c.uid,
            pid: c.peer_pid,
            peer: c.peer,
        },
        Ok(pb::CauseKind::Crash) => C::Crash,
        Ok(pb::CauseKind::Backoff) => C::Backoff,
        Ok(pb::CauseKind::Recovery) => C::Recovery,
        Ok(pb::CauseKind::Shutdown) => C::Shutdown,
        Ok(pb::CauseKind::Unhealthy) => C::Unhealthy,
        Ok(pb::CauseKind::Schedule) => C::Schedule,
        Ok(pb::CauseKind::Watch) => C::Watch,
        Ok(pb::CauseKind::Memory) => C::Memory,
        Ok(pb::CauseKind::Apply) => C::Apply {
            uid: c.uid,
            pid: c.peer_pid,
            peer: c.peer,
        },
        Ok(pb::CauseKind::Unspecified) | Err(_) => {
            return Err(format!("an event with an unknown cause kind {}", c.kind))
        }
    })
}

pub fn event_from_pb(e: pb::Event) -> Result<model::Event, String> {
    let kind = kind_from_pb(e.kind).map_err(|s| format!("an event with {}", s.message()))?;
    Ok(model::Event {
        seq: e.seq,
        at_unix_ms: e.at_unix_ms,
        app: e.app,
        app_id: e.app_id,
        instance: e.instance,
        pid: (e.pid != 0).then_some(e.pid),
        kind,
        cause: cause_from_pb(e.cause.ok_or("an event without its cause")?)?,
        exit: e.exit.map(exit_from_pb),
        delay_ms: (e.delay_ms != 0).then_some(e.delay_ms),
        error: (!e.error.is_empty()).then_some(e.error),
        action: e.action,
        message: e.message,
        data: e.data.into_iter().collect(),
        lost: e.lost,
    })
}

pub fn chunk_from_pb(c: pb::LogChunk) -> Result<model::LogChunk, String> {
    let stream =
        log_stream(c.stream).map_err(|_| format!("a log chunk of unknown stream {}", c.stream))?;
    Ok(model::LogChunk {
        app: c.app,
        app_id: c.app_id,
        instance: c.instance,
        stream,
        data: c.data,
        offset: c.offset,
        skipped: c.skipped,
    })
}

/// The streams a logs request selects: both (`None`), or one.
pub fn log_streams_to_pb(s: Option<LogStream>) -> pb::LogStream {
    s.map_or(pb::LogStream::Unspecified, log_stream_to_pb)
}

pub fn position_to_pb(p: &model::LogPosition) -> pb::LogPosition {
    pb::LogPosition {
        app_id: p.app_id,
        instance: p.instance,
        stream: log_stream_to_pb(p.stream) as i32,
        offset: p.offset,
    }
}

pub fn env_to_pb(env: &Env) -> pb::Environment {
    pb::Environment {
        vars: env.clone().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drafts_cross_the_wire_unchanged_and_unset_means_zero() {
        let full = AppDraft {
            name: "web".into(),
            cmd: vec!["sleep".into(), "1".into()],
            cwd: Some("/srv".into()),
            env: [("K".to_string(), "v".to_string())].into(),
            kill_timeout: Some(Duration::from_millis(250)),
            stop_signal: Some(Signal::parse("INT").unwrap()),
            autorestart: Some(false),
            restart_delay: Some(Duration::from_millis(5)),
            restart_delay_max: Some(Duration::from_secs(2)),
            max_restarts: Some(3),
            restart_window: Some(Duration::from_secs(9)),
            log_time: true,
            log_max_size: Some(4096),
            log_keep: Some(2),
            ready: Some(Readiness {
                initial_delay: Duration::from_millis(7),
                ..Readiness::new(ReadyCheck::Http(
                    model::HttpUrl::parse("http://127.0.0.1:8080/health").unwrap(),
                ))
            }),
            alive: Some(Liveness::new(AliveCheck::Exec(vec!["true".into()]))),
            depends_on: vec![
                Dependency {
                    app: "db".into(),
                    condition: Condition::Ready,
                },
                Dependency {
                    app: "migrate".into(),
                    condition: Condition::Completed,
                },
            ],
            restart_schedule: Some("0 3 * * *".into()),
            watch: vec!["src".into()],
            watch_ignore: vec!["*.tmp".into()],
            watch_debounce: Some(Duration::from_millis(250)),
            user: Some("nobody".into()),
            group: Some("nogroup".into()),
            umask: Some(0o27),
            limits: [("nofile".to_string(), 4096u64)].into(),
            max_memory: Some(512 << 20),
            memory_grace: Some(3),
            profile: Some(model::EnvProfile {
                name: "production".into(),
                env: [("LEVEL".to_string(), "warn".to_string())].into(),
            }),
            file: Some("/srv/apps.toml".into()),
            instances: Some(4),
            sockets: vec![model::SocketSpec {
                name: "http".into(),
                listen: model::Listen::parse("[::1]:8080").unwrap(),
                backlog: 64,
            }],
            reload_grace: Some(Duration::from_millis(1500)),
        };
        assert_eq!(draft_from_pb(draft_to_pb(&full)).unwrap(), full);
        for check in [
            ReadyCheck::Tcp("localhost:1".into()),
            ReadyCheck::Log("^up$".into()),
            ReadyCheck::Notify,
        ] {
            let r = Readiness::new(check);
            assert_eq!(ready_from_pb(ready_to_pb(&r)).unwrap(), r);
        }
        let w = Liveness::new(AliveCheck::Watchdog(Duration::from_secs(3)));
        assert_eq!(alive_from_pb(alive_to_pb(&w)).unwrap(), w);
        assert!(ready_from_pb(pb::ReadyCheck::default()).is_err());
        assert!(alive_from_pb(pb::AliveCheck::default()).is_err());
        let bare = AppDraft {
            name: "web".into(),
            cmd: vec!["true".into()],
            ..AppDraft::default()
        };
        let wire = draft_to_pb(&bare);
        assert_eq!(
            (wire.max_restarts, wire.kill_timeout_ms, wire.log_keep),
            (0, 0, 0)
        );
        assert_eq!(draft_from_pb(wire).unwrap(), bare);
        // A set zero duration still means "set": the shortest, never the default.
        let zero = AppDraft {
            kill_timeout: Some(Duration::ZERO),
            ..bare
        };
        assert_eq!(draft_to_pb(&zero).kill_timeout_ms, 1);
    }

    #[test]
    fn the_edge_refuses_what_the_model_refuses_with_its_message() {
        let wire = pb::AppSpec {
            name: "web".into(),
            cmd: vec!["true".into()],
            max_restarts: 100_001,
            ..Default::default()
        };
        let s = spec_from_pb(wire, Path::new("/")).unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "app web: max_restarts 100001 is out of range: between 1 and 100000"
        );
    }

    #[test]
    fn events_read_back_as_they_were_sent() {
        let mut e = model::Event::new(
            model::EventKind::Exited,
            7,
            "web",
            model::Cause::Request {
                method: "Stop".into(),
                uid: Some(0),
                pid: None,
                peer: "unix".into(),
            },
        );
        e.seq = 42;
        e.pid = Some(99);
        e.exit = Some(model::Exit {
            code: None,
            signal: Some(15),
            at_unix_ms: 5,
        });
        e.data.insert("k".into(), "v".into());
        assert_eq!(event_from_pb(event_to_pb(&e)).unwrap(), e);
        let mut bad = event_to_pb(&e);
        bad.cause = None;
        assert!(event_from_pb(bad).unwrap_err().contains("cause"));
    }
}
