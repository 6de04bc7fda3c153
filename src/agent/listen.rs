//! The TCP listener beside the unix socket: what `--listen` asks for, the refusal of insecure
//! setups (checked before anything is bound), the TLS material, and an accept loop ([`Gate`])
//! that bounds how many connections are open at once, and how long and how many of them may
//! stay unauthenticated.

use std::{
    collections::{HashMap, VecDeque},
    fmt, fs,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicU8, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{
    server::{Connected, TcpConnectInfo},
    Certificate, Identity, Server, ServerTlsConfig,
};

use super::auth::{Policy, Token};

/// The port `--listen ADDR` uses when it names none.
pub const DEFAULT_PORT: u16 = 7470;
/// Open TCP connections at most (see [`Gate`] for how they are shared).
pub const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake that takes longer than this is dropped (a client that vanished mid-way, or
/// never meant to finish); the connection's [`PROOF_DEADLINE`] bounds it too.
const HANDSHAKE_TIMEOUT: Duration = PROOF_DEADLINE;
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

/// Bounds on the TCP listener's connections, and how long a connection may stay unproven
/// (without a request that passed authentication).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most, proven or not.
    pub max: usize,
    /// Unproven connections at most: the rest of `max` is kept for clients that authenticate.
    pub unproven: usize,
    /// Unproven connections at most from one peer address.
    pub unproven_per_peer: usize,
    /// A connection that has not made an authenticated request this long after it was accepted
    /// (TLS handshake, HTTP/2 preface and a request with the right credentials) is closed.
    pub deadline: Duration,
}

impl Limits {
    /// The agent's limits for `max` connections: half of them may be unproven, 16 per peer,
    /// each for [`PROOF_DEADLINE`].
    pub fn for_max(max: usize) -> Limits {
        Limits {
            max,
            unproven: (max / 2).max(1),
            unproven_per_peer: MAX_UNPROVEN_PER_PEER.min(max),
            deadline: PROOF_DEADLINE,
        }
    }
}

/// Unproven connections at most from one peer address.
pub const MAX_UNPROVEN_PER_PEER: usize = 16;
/// How long a new connection has to authenticate (TLS, HTTP/2 preface, first request).
pub const PROOF_DEADLINE: Duration = Duration::from_secs(5);
/// The listener's refusals are logged at most once per this period, as a summary.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

const UNPROVEN: u8 = 0;
const PROVEN: u8 = 1;
/// Closed to make room (its slot already given back).
const EVICTED: u8 = 2;

/// One connection's standing with the [`Gate`].
struct Proof {
    id: u64,
    peer: IpAddr,
    state: AtomicU8,
    /// Cancelled when the connection is evicted: its reads fail at once.
    evict: CancellationToken,
}

#[derive(Default)]
struct GateState {
    /// Connections counted against `max` (evicted ones no longer are).
    open: usize,
    /// Unproven connections, oldest first.
    unproven: VecDeque<Arc<Proof>>,
    unproven_by_peer: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// Admission of TCP connections: a connection is *unproven* until one of its requests passes
/// authentication. Unproven connections are bounded globally (below the total, so room stays
/// for clients that authenticate) and per peer address; when a bound is reached, the oldest
/// unproven connection (of that peer, or overall) is closed to admit the new one, so a flood of
/// idle or half-open connections cannot keep a real client out: it only has to authenticate
/// before it becomes the oldest. A connection that stays unproven past the deadline is closed.
pub struct Gate {
    limits: Limits,
    state: Mutex<GateState>,
    tally: Tally,
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is held by an authenticated connection.
    Full,
}

impl Gate {
    pub fn new(limits: Limits) -> Gate {
        Gate {
            limits,
            state: Mutex::new(GateState::default()),
            tally: Tally::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection from `peer`, evicting the oldest unproven connection when a
    /// bound is reached.
    fn admit(&self, peer: IpAddr) -> Result<Arc<Proof>, Refused> {
        let mut st = self.lock();
        let from_peer = st.unproven_by_peer.get(&peer).copied().unwrap_or(0);
        if from_peer >= self.limits.unproven_per_peer {
            let oldest = st.unproven.iter().position(|p| p.peer == peer);
            if let Some(i) = oldest {
                self.evict(&mut st, i);
            }
        }
        if st.unproven.len() >= self.limits.unproven || st.open >= self.limits.max {
            if st.unproven.is_empty() {
                return Err(Refused::Full);
            }
            self.evict(&mut st, 0);
        }
        st.next_id += 1;
        let proof = Arc::new(Proof {
            id: st.next_id,
            peer,
            state: AtomicU8::new(UNPROVEN),
            evict: CancellationToken::new(),
        });
        st.open += 1;
        st.unproven.push_back(proof.clone());
        *st.unproven_by_peer.entry(peer).or_insert(0) += 1;
        Ok(proof)
    }

    fn evict(&self, st: &mut GateState, i: usize) {
        if let Some(p) = st.unproven.remove(i) {
            p.state.store(EVICTED, Ordering::Release);
            Self::forget_peer(st, p.peer);
            st.open -= 1;
            p.evict.cancel();
            self.tally.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn forget_peer(st: &mut GateState, peer: IpAddr) {
        if let Some(n) = st.unproven_by_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                st.unproven_by_peer.remove(&peer);
            }
        }
    }

    /// The connection made an authenticated request: it no longer counts as unproven.
    fn prove(&self, proof: &Proof) {
        if proof.state.load(Ordering::Acquire) != UNPROVEN {
            return;
        }
        let mut st = self.lock();
        if proof.state.load(Ordering::Acquire) != UNPROVEN {
            return;
        }
        proof.state.store(PROVEN, Ordering::Release);
        if let Some(i) = st.unproven.iter().position(|p| p.id == proof.id) {
            st.unproven.remove(i);
        }
        Self::forget_peer(&mut st, proof.peer);
    }

    /// The connection is gone.
    fn release(&self, proof: &Proof) {
        let mut st = self.lock();
        match proof.state.load(Ordering::Acquire) {
            UNPROVEN => {
                if let Some(i) = st.unproven.iter().position(|p| p.id == proof.id) {
                    st.unproven.remove(i);
                }
                Self::forget_peer(&mut st, proof.peer);
                st.open -= 1;
            }
            PROVEN => st.open -= 1,
            _ => {}
        }
    }

    /// (open, unproven) connections now.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.open, st.unproven.len())
    }

    /// Counts an authentication failure for the rate-limited summary (the first one after a
    /// quiet period is logged at once, with its reason).
    pub fn auth_failed(&self, peer: Option<SocketAddr>, path: &str, why: &str) {
        if self.tally.first_in_period() {
            tracing::warn!(
                ?peer,
                path,
                why,
                "unauthenticated request refused (more are summarized every {}s)",
                SUMMARY_EVERY.as_secs()
            );
        } else {
            self.tally.auth_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the listener refused since the last summary; logged as one line per period.
#[derive(Default)]
struct Tally {
    auth_failures: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
    refused: AtomicU64,
    /// When something was last logged at once (`None`: not yet).
    last_detail: Mutex<Option<Instant>>,
}

impl Tally {
    /// True (and the period starts) when nothing was logged in detail for a whole period.
    fn first_in_period(&self) -> bool {
        let mut last = self.last_detail.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < SUMMARY_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Logs and resets the counts, if any.
    fn flush(&self, limits: &Limits) {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        let (auth, timed_out, evicted, refused) = (
            take(&self.auth_failures),
            take(&self.timed_out),
            take(&self.evicted),
            take(&self.refused),
        );
        if auth + timed_out + evicted + refused > 0 {
            tracing::warn!(
                unauthenticated_requests = auth,
                closed_unproven_after_deadline = timed_out,
                evicted_unproven = evicted,
                refused_full = refused,
                deadline_s = limits.deadline.as_secs(),
                "TCP listener refusals in the last {}s",
                SUMMARY_EVERY.as_secs()
            );
        }
    }
}

/// What the server learns about a TCP connection: its addresses, and a handle that the
/// authentication layer uses to mark it proven.
#[derive(Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    proof: Arc<Proof>,
    gate: Arc<Gate>,
}

impl ConnInfo {
    /// The connection made an authenticated request: it keeps its slot past the deadline.
    pub fn prove(&self) {
        self.gate.prove(&self.proof);
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// Closes an unproven connection at its deadline or when it is evicted.
struct Watch {
    deadline: Pin<Box<tokio::time::Sleep>>,
    evicted: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

/// A TCP connection holding a slot of the [`Gate`] until it is dropped.
pub struct Conn {
    stream: TcpStream,
    tcp: TcpConnectInfo,
    proof: Arc<Proof>,
    gate: Arc<Gate>,
    /// While the connection is unproven.
    watch: Option<Watch>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.gate.release(&self.proof);
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.tcp.clone(),
            proof: self.proof.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl Conn {
    /// Fails the connection's I/O once it is evicted, or past its deadline while unproven.
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let Some(w) = self.watch.as_mut() else {
            return Ok(());
        };
        match self.proof.state.load(Ordering::Acquire) {
            PROVEN => {
                self.watch = None;
                Ok(())
            }
            EVICTED => Err(std::io::ErrorKind::ConnectionAborted.into()),
            _ => {
                if w.evicted.as_mut().poll(cx).is_ready() {
                    return Err(std::io::ErrorKind::ConnectionAborted.into());
                }
                if w.deadline.as_mut().poll(cx).is_ready() {
                    self.gate.tally.timed_out.fetch_add(1, Ordering::Relaxed);
                    self.watch = None;
                    // Gives the slot back now; the connection is closing.
                    self.gate.evict_closed(&self.proof);
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                Ok(())
            }
        }
    }
}

impl Gate {
    /// An unproven connection closed at its deadline: its slot is given back at once.
    fn evict_closed(&self, proof: &Proof) {
        let mut st = self.lock();
        if proof.state.load(Ordering::Acquire) != UNPROVEN {
            return;
        }
        if let Some(i) = st.unproven.iter().position(|p| p.id == proof.id) {
            if let Some(p) = st.unproven.remove(i) {
                p.state.store(EVICTED, Ordering::Release);
                Self::forget_peer(&mut st, p.peer);
                st.open -= 1;
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.proof.state.load(Ordering::Acquire) == EVICTED {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.proof.state.load(Ordering::Acquire) == EVICTED {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
        }
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

/// Accepts connections for the server through a [`Gate`] with [`Limits::for_max`]`(max)`:
/// unproven connections are bounded (per peer and in all) and closed after the deadline, the
/// oldest unproven one makes room for a new one, and only when every slot is held by an
/// authenticated connection is a new one closed at once. Refusals are logged as a summary every
/// 10 s. Accept errors (out of descriptors) pause the loop briefly instead of spinning.
pub fn incoming(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
    incoming_with(listener, Limits::for_max(max))
}

/// [`incoming`] with explicit limits.
pub fn incoming_with(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
    let gate = Arc::new(Gate::new(limits));
    let weak = Arc::downgrade(&gate);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SUMMARY_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(gate) = weak.upgrade() else { break };
            gate.tally.flush(&gate.limits);
        }
    });
    futures_util::stream::unfold((listener, gate), move |(listener, gate)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => match gate.admit(peer.ip()) {
                    Ok(proof) => {
                        let _ = stream.set_nodelay(true);
                        let tcp = stream.connect_info();
                        let conn = Conn {
                            stream,
                            tcp,
                            watch: Some(Watch {
                                deadline: Box::pin(tokio::time::sleep(gate.limits.deadline)),
                                evicted: Box::pin(proof.evict.clone().cancelled_owned()),
                            }),
                            proof,
                            gate: gate.clone(),
                        };
                        return Some((Ok(conn), (listener, gate)));
                    }
                    Err(Refused::Full) => {
                        if gate.tally.first_in_period() {
                            tracing::warn!(%peer, max = gate.limits.max, "every connection slot is held by an authenticated client; closing a new one");
                        } else {
                            gate.tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn unproven_connections_are_bounded_per_peer_and_in_all_and_the_oldest_makes_room() {
        let gate = Gate::new(Limits {
            max: 8,
            unproven: 4,
            unproven_per_peer: 2,
            deadline: PROOF_DEADLINE,
        });
        // One peer: its third connection evicts its first.
        let a1 = gate.admit(ip(2)).unwrap();
        let a2 = gate.admit(ip(2)).unwrap();
        let a3 = gate.admit(ip(2)).unwrap();
        assert!(a1.evict.is_cancelled() && !a2.evict.is_cancelled());
        assert_eq!(gate.counts(), (2, 2));
        // Many peers: past 4 unproven in all, the oldest overall goes.
        let b = gate.admit(ip(3)).unwrap();
        let c = gate.admit(ip(4)).unwrap();
        assert_eq!(gate.counts(), (4, 4));
        let d = gate.admit(ip(5)).unwrap();
        assert!(a2.evict.is_cancelled() && !a3.evict.is_cancelled());
        assert_eq!(gate.counts(), (4, 4));
        // A proven connection keeps its slot and leaves the unproven pool.
        gate.prove(&a3);
        assert_eq!(gate.counts(), (4, 3));
        let e = gate.admit(ip(1)).unwrap();
        assert!(!a3.evict.is_cancelled() && !b.evict.is_cancelled());
        gate.release(&a1);
        gate.release(&a2);
        assert_eq!(gate.counts(), (5, 4));
        // Proven connections fill the rest; once every slot is proven, new ones are refused.
        for p in [&b, &c, &d, &e] {
            gate.prove(p);
        }
        let mut held = Vec::new();
        for n in 0..3 {
            let p = gate.admit(ip(10 + n)).unwrap();
            gate.prove(&p);
            held.push(p);
        }
        assert_eq!(gate.counts(), (8, 0));
        assert_eq!(gate.admit(ip(20)).err(), Some(Refused::Full));
        gate.release(&held[0]);
        assert!(gate.admit(ip(20)).is_ok());
    }
}
