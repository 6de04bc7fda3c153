//! The TCP listener beside the unix socket: what `--listen` asks for, the refusal of insecure
//! setups (checked before anything is bound), the TLS material, and an accept loop that bounds
//! how many connections are open at once.

use std::{
    fmt, fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::Stream;
use tonic::transport::{
    server::{Connected, TcpConnectInfo},
    Certificate, Identity, Server, ServerTlsConfig,
};

use super::auth::{Policy, Token};

/// The port `--listen ADDR` uses when it names none.
pub const DEFAULT_PORT: u16 = 7470;
/// Open TCP connections at most; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake that takes longer than this is dropped (a client that vanished mid-way).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest token accepted: anything shorter can be guessed.
const MIN_TOKEN_LEN: usize = 16;

/// What `grpm agent --listen ... --tls-* --token-file` asked for.
#[derive(Debug, Clone, Default)]
pub struct ListenSpec {
    pub addr: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// The listener's security, loaded and checked: ready to bind.
pub struct Listen {
    pub addr: SocketAddr,
    pub tls: Option<ServerTlsConfig>,
    pub policy: Policy,
}

impl fmt::Debug for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listen")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Parses `--listen`: `IP:PORT`, `IP` (port 7470), `[V6]:PORT`, or `localhost[:PORT]`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{s:?}: {p:?} is not a port number"))?,
        ),
        None => (s, DEFAULT_PORT),
    };
    if host == "localhost" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "{s:?} is not an address to listen on: give IP:PORT (e.g. 0.0.0.0:{DEFAULT_PORT}, \
         127.0.0.1:0, [::1]:{DEFAULT_PORT}) or localhost:PORT"
    ))
}

impl ListenSpec {
    /// Checks the combination and loads the files. Refuses, with what to add, a non-loopback
    /// listener without TLS and client authentication, and a loopback one without any client
    /// authentication. Nothing is bound here.
    pub fn load(&self) -> Result<Option<Listen>, String> {
        let Some(addr) = self.addr else {
            if self.tls_cert.is_some()
                || self.tls_key.is_some()
                || self.tls_client_ca.is_some()
                || self.token_file.is_some()
            {
                return Err(
                    "--tls-cert, --tls-key, --tls-client-ca and --token-file secure a TCP \
                     listener: add --listen ADDR:PORT"
                        .into(),
                );
            }
            return Ok(None);
        };
        let tls_files = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together: give both".into()),
        };
        if self.tls_client_ca.is_some() && tls_files.is_none() {
            return Err(
                "--tls-client-ca checks client certificates during the TLS handshake: add \
                 --tls-cert FILE --tls-key FILE"
                    .into(),
            );
        }
        let client_auth = self.tls_client_ca.is_some() || self.token_file.is_some();
        let secure = tls_files.is_some() && client_auth;
        if !addr.ip().is_loopback() && !secure {
            return Err(format!(
                "refusing to listen on {addr} without TLS and client authentication (anyone who \
                 reaches it could run commands as this user): add --tls-cert FILE --tls-key FILE, \
                 and --tls-client-ca FILE and/or --token-file FILE (`grpm tls init` makes the \
                 certificates)"
            ));
        }
        if !client_auth {
            return Err(format!(
                "refusing to listen on {addr} without client authentication (any local user \
                 could run commands as this user): add --token-file FILE, or --tls-cert FILE \
                 --tls-key FILE --tls-client-ca FILE"
            ));
        }
        let token = match &self.token_file {
            Some(p) => Some(read_token(p)?),
            None => None,
        };
        let tls = match tls_files {
            Some((cert, key)) => {
                let mut cfg = ServerTlsConfig::new()
                    .identity(Identity::from_pem(
                        read_pem(cert, "--tls-cert", false)?,
                        read_pem(key, "--tls-key", true)?,
                    ))
                    .timeout(HANDSHAKE_TIMEOUT);
                if let Some(ca) = &self.tls_client_ca {
                    // Optional at the TLS level so that a client without a certificate gets a
                    // clear UNAUTHENTICATED from the auth layer; a certificate that is presented
                    // must still chain to this CA, or the handshake fails.
                    cfg = cfg
                        .client_ca_root(Certificate::from_pem(read_pem(
                            ca,
                            "--tls-client-ca",
                            false,
                        )?))
                        .client_auth_optional(true);
                }
                // Build it once now, so that a bad certificate or key is reported before
                // anything is bound.
                Server::builder()
                    .tls_config(cfg.clone())
                    .map_err(|e| format!("cannot use the TLS certificate and key: {e}"))?;
                Some(cfg)
            }
            None => None,
        };
        Ok(Some(Listen {
            addr,
            tls,
            policy: Policy {
                token,
                require_cert: self.tls_client_ca.is_some(),
            },
        }))
    }
}

/// Reads a PEM file; `secret` files must not be readable by group or others.
pub(crate) fn read_pem(path: &Path, flag: &str, secret: bool) -> Result<Vec<u8>, String> {
    let data = read_private(path, flag, secret)?;
    if !data.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{flag} {}: not a PEM file", path.display()));
    }
    Ok(data)
}

pub(crate) fn read_token(path: &Path) -> Result<Token, String> {
    let data = read_private(path, "--token-file", true)?;
    let text = String::from_utf8(data)
        .map_err(|_| format!("--token-file {}: not UTF-8 text", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--token-file {}: the token must be one line of at least {MIN_TOKEN_LEN} \
             characters without spaces (e.g. `head -c 32 /dev/urandom | base64`)",
            path.display()
        ));
    }
    Ok(Token::new(token.as_bytes().to_vec()))
}

fn read_private(path: &Path, flag: &str, secret: bool) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if secret && meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{flag} {}: readable by others (mode {:o}); run chmod 600 on it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// A TCP connection holding one of the [`MAX_CONNECTIONS`] slots until it is dropped.
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts connections for the server. Beyond `max` open ones, a new connection is closed at
/// once (the client sees it reset) rather than left waiting in the backlog. Accept errors (out
/// of descriptors) pause the loop briefly instead of spinning.
pub fn incoming(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        let conn = Conn {
                            stream,
                            _slot: slot,
                        };
                        return Some((Ok(conn), (listener, slots)));
                    }
                    Err(_) => {
                        tracing::warn!(%peer, max, "too many connections; closing a new one");
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0").unwrap(),
            "0.0.0.0:7470".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert_eq!(
            parse_addr("localhost:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert!(parse_addr("box1:7470").unwrap_err().contains("IP:PORT"));
        assert!(parse_addr("127.0.0.1:x").unwrap_err().contains("port"));
    }

    fn spec(addr: &str) -> ListenSpec {
        ListenSpec {
            addr: Some(parse_addr(addr).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn insecure_listeners_are_refused_before_reading_anything() {
        let err = spec("0.0.0.0:1").load().unwrap_err();
        assert!(
            err.contains("--tls-cert") && err.contains("--tls-client-ca"),
            "{err}"
        );
        let mut s = spec("10.1.2.3:1");
        s.token_file = Some("/nonexistent".into());
        let err = s.load().unwrap_err();
        assert!(err.starts_with("refusing"), "{err}");
        let err = spec("127.0.0.1:0").load().unwrap_err();
        assert!(err.contains("--token-file"), "{err}");
        let mut s = spec("127.0.0.1:0");
        s.tls_cert = Some("/x".into());
        assert!(s.load().unwrap_err().contains("go together"));
        let s = ListenSpec {
            token_file: Some("/x".into()),
            ..Default::default()
        };
        assert!(s.load().unwrap_err().contains("--listen"));
        assert!(ListenSpec::default().load().unwrap().is_none());
    }

    #[test]
    fn tokens_must_be_private_and_long() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        fs::write(&p, "short\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let mut s = spec("127.0.0.1:0");
        s.token_file = Some(p.clone());
        assert!(s.load().unwrap_err().contains("at least 16"));
        fs::write(&p, "0123456789abcdef0123\n").unwrap();
        let l = s.load().unwrap().unwrap();
        assert!(l.policy.token.is_some() && !l.policy.require_cert);
        assert!(!format!("{l:?}").contains("0123456789"), "{l:?}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(s.load().unwrap_err().contains("chmod 600"));
    }
}
