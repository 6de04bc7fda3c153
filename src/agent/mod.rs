//! The agent daemon: owns the home directory, serves the API on the unix socket, and runs the
//! supervisor until asked to stop.

pub mod auth;
mod authority;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod sdnotify;
mod socket;

use std::{fs, io::Write, os::fd::AsRawFd, path::PathBuf, sync::Arc, time::Duration};

use listen::Listen;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::Server};

use crate::{
    home::Home,
    model::Env,
    rpc::{pb, pb::process_manager_server::ProcessManagerServer, service::Service},
    supervisor::{Config, Supervisor},
};

/// Agent settings from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events kept for subscribers to resume from.
    pub events_kept: usize,
    /// ... and at most this many bytes of them (approximately).
    pub events_kept_bytes: usize,
    /// The optional TCP listener and its security.
    pub listen: listen::ListenSpec,
    /// The agent's own log writer, reopened on SIGHUP (`None`: SIGHUP is ignored).
    pub log: Option<log::Sink>,
    /// How often every app's tree is sampled for CPU and memory.
    pub sample_interval: Duration,
    /// The optional Prometheus endpoint and its security.
    pub metrics: metrics::MetricsSpec,
    /// systemd's notify socket (`NOTIFY_SOCKET`), told `READY=1` and `STOPPING=1`.
    pub notify: Option<sdnotify::Target>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            events_kept: 10_000,
            events_kept_bytes: crate::supervisor::KEEP_BYTES,
            listen: listen::ListenSpec::default(),
            log: None,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            metrics: metrics::MetricsSpec::default(),
            notify: None,
        }
    }
}

/// How often app trees are sampled unless `--sample-interval` says otherwise.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Largest request the agent decodes (an app spec with its environment is far below this).
const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS: u32 = 256;
/// Longest a TCP call may take to answer (a `restart all` of slow-stopping apps included);
/// a client's own shorter `grpc-timeout` wins.
const REQUEST_DEADLINE: Duration = Duration::from_secs(600);

/// Runs the agent in the foreground until SIGTERM, SIGINT or a `Shutdown` request. Returns a
/// message for the user on failure (another agent already running, unusable home...).
pub fn main(home: &Home, options: &Options) -> Result<(), String> {
    // An insecure or unreadable TCP setup is refused before anything is touched or bound.
    let listen = options.listen.load()?;
    let metrics = options.metrics.load()?;
    if home
        .ensure()
        .map_err(|e| format!("cannot use {}: {e}", home.root.display()))?
    {
        tracing::info!(home = %home.root.display(), "created GRPM_HOME");
    }
    let _lock = lock(home)?;
    // Under a keeper: its socket pair and what it handed over (read before the runtime starts).
    let keeper = match crate::keeper::link::from_env() {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            tracing::error!("{e}; running without the keeper's hand-over");
            None
        }
    };
    // Orphaned descendants of apps become our children (and get reaped) instead of PID 1's.
    // SAFETY: prctl with an integer option has no memory-safety preconditions.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper");
    }
    limit_arenas();
    raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(async {
        // Signals are handled before anything tells the agent is there (its pid file, its
        // socket): a SIGHUP from a log rotation that comes right then must not end it.
        let shutdown = CancellationToken::new();
        spawn_signal_handlers(shutdown.clone(), options.log.clone())?;
        // The pid and address files are complete before the socket (the readiness signal) is
        // reachable.
        crate::home::write_atomic(
            &home.pid_file(),
            format!("{}\n", std::process::id()).as_bytes(),
        )
        .map_err(|e| format!("cannot write {}: {e}", home.pid_file().display()))?;
        let tcp = match listen {
            Some(l) => Some(bind_tcp(home, l).await?),
            None => None,
        };
        let metrics = match metrics {
            Some(m) => Some(bind_metrics(home, m).await?),
            None => None,
        };
        let listener = socket::bind(home)
            .map_err(|e| format!("cannot listen on {}: {e}", home.socket().display()))?;
        run(home, options, listener, tcp, metrics, shutdown, keeper).await
    });
    // After a hand-over, the apps' tasks are left as they are: the process exits now.
    runtime.shutdown_timeout(Duration::from_millis(100));
    let _ = fs::remove_file(home.socket());
    let _ = fs::remove_file(home.addr_file());
    let _ = fs::remove_file(metrics_addr_file(home));
    let _ = fs::remove_file(home.pid_file());
    result
}

/// glibc gives each thread that allocates its own arena, which keeps freed memory around; a
/// daemon with a handful of threads is better served by two (as MALLOC_ARENA_MAX=2). Called
/// first thing (before the agent's log thread starts), and again by [`main`]; idempotent.
pub fn limit_arenas() {
    // SAFETY: mallopt only tunes the allocator.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Binds the TCP listener and records the bound address (port 0 picks a free one) in
/// `$GRPM_HOME/agent.addr`.
async fn bind_tcp(home: &Home, l: Listen) -> Result<(TcpListener, Listen), String> {
    let listener = TcpListener::bind(l.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", l.addr))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {}: {e}", l.addr))?;
    crate::home::write_atomic(&home.addr_file(), format!("{bound}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", home.addr_file().display()))?;
    tracing::info!(%bound, tls = l.tls.is_some(), auth = %l.policy, "listening on TCP");
    Ok((listener, l))
}

/// Where the metrics listener's bound address is written (port 0 picks a free one).
pub fn metrics_addr_file(home: &Home) -> PathBuf {
    home.root.join("metrics.addr")
}

/// Binds the metrics listener and records its address in `$GRPM_HOME/metrics.addr`.
async fn bind_metrics(
    home: &Home,
    m: metrics::Metrics,
) -> Result<(TcpListener, metrics::Metrics), String> {
    let (listener, bound) = metrics::bind(&m).await?;
    crate::home::write_atomic(&metrics_addr_file(home), format!("{bound}\n").as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", metrics_addr_file(home).display()))?;
    tracing::info!(%bound, ?m, "serving metrics");
    Ok((listener, m))
}

/// Serves the API on `listener` until `shutdown` is cancelled, then ends every app's tree and
/// returns. Desired states stay as they are, so the next agent brings the apps back.
pub async fn run(
    home: &Home,
    options: &Options,
    listener: UnixListener,
    tcp: Option<(TcpListener, Listen)>,
    metrics: Option<(TcpListener, metrics::Metrics)>,
    shutdown: CancellationToken,
    keeper: Option<(crate::keeper::link::Pending, crate::keeper::link::Handover)>,
) -> Result<(), String> {
    let (sup, warning) = Supervisor::open(Config {
        keeper,
        state_path: home.state_file(),
        logs_dir: home.logs_dir(),
        notify_dir: home.root.join("notify"),
        events_dir: Some(home.root.clone()),
        events_kept: options.events_kept,
        events_kept_bytes: options.events_kept_bytes,
        sample_interval: options.sample_interval,
    })
    .await
    .map_err(|e| format!("cannot load state: {e}"))?;
    if let Some(w) = warning {
        tracing::error!("{w}");
    }
    let agent_env = own_env();
    let default_cwd = agent_env
        .get("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"));
    let handed_over = CancellationToken::new();
    let service = Service::new(sup.clone(), agent_env, default_cwd, shutdown.clone())
        .with_hand_over(handed_over.clone());
    let routes = routes(service).await?;
    let stop_serving = CancellationToken::new();
    let unix = Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .add_routes(routes.clone())
        .serve_with_incoming_shutdown(
            socket::incoming(listener),
            stop_serving.clone().cancelled_owned(),
        );
    let mut servers = vec![tokio::spawn(unix)];
    if let Some((listener, listen)) = tcp {
        servers.push(tokio::spawn(serve_tcp(
            listener,
            listen,
            routes,
            stop_serving.clone(),
        )?));
    }
    tokio::spawn(hand_back_memory(sup.clone(), shutdown.clone()));
    if let Some((listener, m)) = metrics {
        servers.push(tokio::spawn({
            let sup = sup.clone();
            let stop = stop_serving.clone();
            async move {
                metrics::serve(listener, m, sup, stop).await;
                Ok(())
            }
        }));
    }
    tracing::info!(home = %home.root.display(), pid = std::process::id(), "agent ready");
    // Under a keeper, the keeper is the service's main process (it outlives this agent).
    let pid = sup.keeper_pid().unwrap_or_else(std::process::id);
    sdnotify::notify(options.notify.as_ref(), &format!("READY=1\nMAINPID={pid}"));
    sup.keeper_ready();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = handed_over.cancelled() => {
            // An upgrade: the apps run on; the keeper starts the next agent once we are gone.
            tracing::info!("handed over to the keeper for an upgrade; exiting, apps keep running");
            stop_serving.cancel();
            let all = futures_util::future::join_all(servers);
            let _ = tokio::time::timeout(Duration::from_millis(20), all).await;
            return Ok(());
        }
    }
    sdnotify::notify(options.notify.as_ref(), "STOPPING=1");
    tracing::info!("stopping every app");
    sup.shutdown().await;
    stop_serving.cancel();
    // In-flight calls (the Shutdown reply among them) get a moment to finish.
    let all = futures_util::future::join_all(servers);
    match tokio::time::timeout(Duration::from_secs(3), all).await {
        Ok(results) => {
            for r in results {
                if let Ok(Err(e)) = r {
                    tracing::error!(error = %e, "server error");
                }
            }
        }
        Err(_) => tracing::warn!("connections still open after 3s; leaving"),
    }
    drop(sup);
    tracing::info!("agent stopped");
    Ok(())
}

/// After many subscribers have left (a thousand streams, each with its connection), what they
/// used is free inside the allocator but still counted in the agent's RSS, round after round:
/// hand it back to the system, a moment later (once their connections are torn down too).
async fn hand_back_memory(sup: Arc<Supervisor>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = sup.subscribers_shrunk() => {}
            _ = shutdown.cancelled() => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free memory of glibc's heap to the system.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

/// Every service the agent serves, once, for both listeners.
async fn routes(service: Service) -> Result<Routes, String> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ProcessManagerServer<Service>>()
        .await;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;
    Ok(Routes::new(
        ProcessManagerServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(64 * 1024 * 1024),
    )
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha))
}

/// The TCP server: TLS when configured, every request authenticated (health and reflection
/// too), and bounds so that a flood or a vanished client cannot wedge or bloat the agent:
/// connections ([`listen::MAX_CONNECTIONS`]), streams per connection, header size, HTTP/2
/// keepalive (a peer that stops answering pings is dropped), and a deadline on every call
/// (streams are bounded by keepalive instead: the deadline covers the call until its first
/// response).
fn serve_tcp(
    listener: TcpListener,
    listen: Listen,
    routes: Routes,
    stop: CancellationToken,
) -> Result<impl std::future::Future<Output = Result<(), tonic::transport::Error>>, String> {
    let mut builder = Server::builder();
    if let Some(tls) = listen.tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| format!("cannot use the TLS certificate and key: {e}"))?;
    }
    Ok(builder
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_header_list_size(16 * 1024)
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .timeout(REQUEST_DEADLINE)
        .layer(auth::AuthLayer(Arc::new(listen.policy)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            listen::incoming(listener, listen::MAX_CONNECTIONS),
            stop.cancelled_owned(),
        ))
}

/// Each running app holds two pipes open in the agent (its stdout and stderr), so 1,000 apps
/// need 2,000 descriptors: raise the soft limit on open files to the hard one (as Go programs
/// do), at most 2^20. The apps inherit the raised soft limit.
fn raise_open_files() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = lim.rlim_max.min(1 << 20);
        if want > lim.rlim_cur {
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the open files limit");
            }
        }
    }
}

/// The agent's own environment (UTF-8 entries; grpm's per-app identity variables removed).
fn own_env() -> Env {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "GRPM_APP_ID" | "GRPM_AGENT_ID" | "GRPM_APP_NAME" | "GRPM_INSTANCE" | "GRPM_SLOT"
            )
        })
        .collect()
}

/// Takes the home's agent lock for the life of the process, so only one agent serves a home
/// even when several CLIs spawn one at the same moment.
fn lock(home: &Home) -> Result<fs::File, String> {
    let path = home.lock_file();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let other = fs::read_to_string(home.pid_file()).unwrap_or_default();
        return Err(format!(
            "another agent already serves {} (pid {})",
            home.root.display(),
            other.trim()
        ));
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

/// SIGTERM and SIGINT stop the agent; SIGHUP reopens its log (when it writes to
/// `$GRPM_HOME/agent.log`; otherwise it is ignored, and the log says so), and never ends it.
fn spawn_signal_handlers(
    shutdown: CancellationToken,
    log: Option<log::Sink>,
) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match &log {
                Some(sink) => sink.reopen(),
                None => tracing::info!("SIGHUP ignored: this agent's log is not reopened"),
            }
        }
    });
    let token = Arc::new(shutdown);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        token.cancel();
    });
    Ok(())
}
