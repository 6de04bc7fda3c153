//! `grpm agent --metrics-listen ADDR`: Prometheus metrics on `/metrics`, and nothing else on
//! that port. The same rule as the API's TCP listener: plain HTTP only on a loopback address;
//! any other needs TLS (the agent's `--tls-cert`/`--tls-key`) and a client certificate
//! (`--tls-client-ca`) or a bearer token (`--metrics-token-file`), or both (then both are
//! required). Checked before anything is bound.

mod families;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Mutex, Semaphore},
};
use tokio_rustls::{
    rustls::{self, pki_types::pem::PemObject},
    TlsAcceptor,
};
use tokio_util::sync::CancellationToken;

pub use families::Families;

use super::{auth::Token, listen};
use crate::supervisor::Supervisor;

/// Scrapers connected at once; more are closed as they are accepted.
const MAX_CONNECTIONS: usize = 64;
/// A connection that does not send its request head (or finish its TLS handshake) in this
/// time is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the flags ask for.
#[derive(Debug, Clone, Default)]
pub struct MetricsSpec {
    pub addr: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// Loaded and checked: ready to bind.
pub struct Metrics {
    pub addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    token: Option<Token>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl MetricsSpec {
    /// Refuses, saying what to add, a non-loopback address without TLS and client
    /// authentication; loads the files.
    pub fn load(&self) -> Result<Option<Metrics>, String> {
        let Some(addr) = self.addr else {
            return Ok(None);
        };
        let tls_files = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        };
        let client_auth = self.tls_client_ca.is_some() || self.token_file.is_some();
        let secure = tls_files.is_some() && client_auth;
        if !(addr.ip().is_loopback() || secure) {
            return Err(format!(
                "refusing to serve metrics on {addr} without TLS and client authentication: add \
                 --tls-cert FILE --tls-key FILE, and --tls-client-ca FILE and/or \
                 --metrics-token-file FILE (or use a loopback address)"
            ));
        }
        let token = match &self.token_file {
            Some(p) => Some(
                listen::read_token(p)
                    .map_err(|e| e.replacen("--token-file", "--metrics-token-file", 1))?,
            ),
            None => None,
        };
        let tls = match tls_files {
            Some((cert, key)) => Some(self.acceptor(cert, key)?),
            None => None,
        };
        Ok(Some(Metrics { addr, tls, token }))
    }

    fn acceptor(&self, cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&listen::read_pem(
            cert,
            "--tls-cert",
            false,
        )?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        let key_der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&listen::read_pem(
            key,
            "--tls-key",
            true,
        )?)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls::pki_types::CertificateDer::pem_slice_iter(&listen::read_pem(
                    ca,
                    "--tls-client-ca",
                    false,
                )?) {
                    let c = c.map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key_der)
            .map_err(|e| format!("cannot use the TLS certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Binds the metrics listener; the bound address (port 0 picks one) is returned.
pub async fn bind(m: &Metrics) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(m.addr)
        .await
        .map_err(|e| format!("cannot serve metrics on {}: {e}", m.addr))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot serve metrics on {}: {e}", m.addr))?;
    Ok((listener, bound))
}

/// Serves `/metrics` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    m: Metrics,
    sup: Arc<Supervisor>,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        sup,
        families: Mutex::new(Families::new()),
        token: m.token,
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        let tls = m.tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.answer(req).await) }
            });
            let http = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .clone();
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

struct Shared {
    sup: Arc<Supervisor>,
    /// One scrape at a time refreshes and encodes the families.
    families: Mutex<Families>,
    token: Option<Token>,
}

impl Shared {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != "/metrics" {
            return plain(StatusCode::NOT_FOUND, "only /metrics is served here\n");
        }
        if !matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD) {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        }
        if let Some(token) = &self.token {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
            if !presented.is_some_and(|p| token.matches(p)) {
                let mut r = plain(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
        }
        let openmetrics = req.headers().get_all(header::ACCEPT).iter().any(|v| {
            const WANTED: &[u8] = b"application/openmetrics-text";
            v.as_bytes().windows(WANTED.len()).any(|w| w == WANTED)
        });
        let text = {
            let families = self.families.lock().await;
            let sup = self.sup.clone();
            let taken = tokio::task::spawn_blocking(move || {
                (sup.stats(), crate::supervisor::agent_usage())
            })
            .await;
            let Ok((stats, agent)) = taken else {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "no stats\n");
            };
            families.render(&stats, agent)
        };
        let (body, content_type) = if openmetrics {
            (
                text,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        } else {
            let converted = prometheus_text(&text);
            drop(text);
            (converted, "text/plain; version=0.0.4; charset=utf-8")
        };
        release_freed_memory();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        r
    }
}

/// The OpenMetrics text as Prometheus's own text format (0.0.4): the same samples, without the
/// `# EOF` line and `# UNIT` comments that format does not have, and with each counter's
/// HELP and TYPE naming its `_total` samples, as that format expects.
fn prometheus_text(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut counters = std::collections::HashSet::new();
    for line in open.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name.to_string());
        }
    }
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((tag, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{tag}{name}_total {tail}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A scrape of many apps allocates a few MiB for a moment; give what was freed back to the
/// system, or glibc keeps it (its mmap threshold grows with each large block freed).
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let open = "# HELP grpm_events Events.\n# TYPE grpm_events counter\n\
                    grpm_events_total{kind=\"online\"} 3\n# HELP grpm_subscribers Now.\n\
                    # TYPE grpm_subscribers gauge\ngrpm_subscribers 1\n# EOF\n";
        assert_eq!(
            prometheus_text(open),
            "# HELP grpm_events_total Events.\n# TYPE grpm_events_total counter\n\
             grpm_events_total{kind=\"online\"} 3\n# HELP grpm_subscribers Now.\n\
             # TYPE grpm_subscribers gauge\ngrpm_subscribers 1\n"
        );
    }

    #[test]
    fn refuses_an_open_address_without_tls_and_authentication() {
        let spec = MetricsSpec {
            addr: Some("0.0.0.0:9470".parse().unwrap()),
            ..MetricsSpec::default()
        };
        let err = spec.load().unwrap_err();
        assert!(
            err.contains("refusing") && err.contains("--tls-cert"),
            "{err}"
        );
        let loopback = MetricsSpec {
            addr: Some("127.0.0.1:0".parse().unwrap()),
            ..MetricsSpec::default()
        };
        assert!(loopback.load().unwrap().is_some());
    }
}
