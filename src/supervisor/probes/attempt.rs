//! One attempt of a polled check: an HTTP GET, a TCP connect, or a command. Each is bounded: the
//! caller's timeout ends it, an HTTP answer is read up to its status line (at most a few KiB),
//! and a command that overruns is killed with its whole process group.

use std::{
    io,
    net::SocketAddr,
    os::fd::AsFd,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

use crate::model::{format_exact, split_host_port, Env, HttpUrl};
use crate::supervisor::process::{launch::resolve_program, reaper::Reaper};

/// Bounds the answer an HTTP check reads.
const MAX_HEAD: usize = 4096;

/// A short text for an I/O error of a check.
fn why(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::UnexpectedEof => "connection closed before an answer".into(),
        _ => e.to_string(),
    }
}

/// Runs `attempt` within `limit`; the error names `what` (formatted only on failure). An
/// attempt that is done at its first poll registers no timer.
pub async fn bounded<F>(
    what: impl std::fmt::Display,
    limit: Duration,
    attempt: F,
) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    match timeout(limit, attempt).await {
        Ok(r) => r.map_err(|e| format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {}", format_exact(limit))),
    }
}

/// Where a `tcp` check connects: an address as written needs no look-up (the common case),
/// parsed once per probe rather than per attempt.
#[derive(Clone, Copy)]
pub enum TcpTarget<'a> {
    Addr(SocketAddr),
    Name(&'a str),
}

impl<'a> TcpTarget<'a> {
    pub fn new(target: &'a str) -> Self {
        target
            .parse()
            .map_or(TcpTarget::Name(target), TcpTarget::Addr)
    }
}

/// A TCP connect to `target` (HOST:PORT). The connection is then reset, not closed: a check
/// that runs every second for hundreds of apps would otherwise leave a TIME_WAIT socket per
/// attempt for a minute, and fill the local port range (easeprobe resets too; Kubernetes sets
/// SO_LINGER on its probes for the same reason, kubernetes#115143). The reset is a disconnect
/// that keeps the socket for the next attempt (see [`idle`]).
pub async fn tcp(target: TcpTarget<'_>) -> Result<(), String> {
    match target {
        TcpTarget::Addr(addr) => {
            let fresh = match idle::take(addr) {
                Some(s) => s,
                None => new_socket(addr, true).map_err(|e| why(&e))?,
            };
            let socket = connect(addr, fresh).await.map_err(|e| why(&e))?;
            idle::put_back(socket);
        }
        TcpTarget::Name(name) => {
            let (host, port) = split_host_port(name, None)?;
            let socket = TcpStream::connect((host.as_str(), port))
                .await
                .and_then(TcpStream::into_std)
                .map(socket2::Socket::from)
                .map_err(|e| why(&e))?;
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
    }
    Ok(())
}

/// Sockets of finished `tcp` checks, kept for the next ones. A TCP socket that is disconnected
/// (`connect` with `AF_UNSPEC`, which resets an established connection) can connect again, so
/// each attempt saves the `socket` and `close` calls, and the kernel the creation and teardown
/// of a socket: at hundreds of checks a second, a fifth of what a check costs the agent.
/// Each runtime thread keeps its own (no lock; a thread's sockets close when it ends).
mod idle {
    use std::{cell::RefCell, net::SocketAddr};

    use socket2::{Domain, Socket};

    /// Enough for the checks that fall due together (they share a 50 ms grid).
    const KEEP: usize = 64;

    thread_local! {
        static POOL: RefCell<Vec<(Domain, Socket)>> = const { RefCell::new(Vec::new()) };
    }

    /// A kept socket of `addr`'s family, if this thread has one.
    pub fn take(addr: SocketAddr) -> Option<Socket> {
        let domain = Domain::for_address(addr);
        POOL.with_borrow_mut(|pool| {
            let at = pool.iter().rposition(|(d, _)| *d == domain)?;
            Some(pool.swap_remove(at).1)
        })
    }

    /// Disconnects `socket` (a reset: it was made with SO_LINGER 0 and the kernel resets an
    /// established connection on disconnect) and keeps it, or closes it when the pool is full
    /// or the disconnect fails.
    pub fn put_back(socket: Socket) {
        let Ok(domain) = socket.domain() else { return };
        let unspec = libc::sockaddr {
            sa_family: libc::AF_UNSPEC as libc::sa_family_t,
            sa_data: [0; 14],
        };
        // SAFETY: `unspec` is a valid sockaddr of the length given; the descriptor is open.
        let r = unsafe {
            libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                &unspec,
                std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return;
        }
        POOL.with_borrow_mut(|pool| {
            if pool.len() < KEEP {
                pool.push((domain, socket));
            }
        });
    }
}

/// A new non-blocking socket for `addr`; with `reset`, SO_LINGER 0, so that closing (or
/// disconnecting) it resets the connection.
fn new_socket(addr: SocketAddr, reset: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    if reset {
        s.set_linger(Some(Duration::ZERO))?;
    }
    Ok(s)
}

/// A non-blocking connect of `socket` (new, or disconnected) to `addr`. On loopback the kernel
/// usually completes the handshake within `connect` itself: then one `poll` with no wait tells,
/// and the socket never meets the reactor (two `epoll_ctl` calls and a wake-up saved per attempt). Otherwise it waits in the
/// reactor for the handshake.
async fn connect(addr: SocketAddr, socket: socket2::Socket) -> io::Result<socket2::Socket> {
    match socket.connect(&addr.into()) {
        Ok(()) => return Ok(socket),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // Writable without an error or hang-up: connected (no need to ask SO_ERROR).
    let (done, fds_clean) = {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
        let n = poll(&mut fds, PollTimeout::ZERO).map_err(io::Error::from)?;
        let r = fds[0].revents().unwrap_or(PollFlags::empty());
        (n == 1, r == PollFlags::POLLOUT)
    };
    if done {
        if fds_clean {
            return Ok(socket);
        }
        return match socket.take_error()? {
            Some(e) => Err(e),
            None => Ok(socket),
        };
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    Ok(socket2::Socket::from(stream.into_std()?))
}

/// A GET: 2xx and 3xx pass.
pub async fn http(url: &HttpUrl) -> Result<(), String> {
    let connected = match url.host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let addr = SocketAddr::new(ip, url.port);
            match new_socket(addr, false) {
                Ok(s) => connect(addr, s).await,
                Err(e) => Err(e),
            }
        }
        .and_then(|s| TcpStream::from_std(s.into())),
        Err(_) => TcpStream::connect((url.host.as_str(), url.port)).await,
    };
    let mut s = connected.map_err(|e| why(&e))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: grpm-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| why(&e))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < MAX_HEAD {
        let n = s.read(&mut buf).await.map_err(|e| why(&e))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head
        .split(|&b| b == b'\n')
        .next()
        .map(|l| String::from_utf8_lossy(l).trim().to_string())
        .unwrap_or_default();
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .filter(|_| line.starts_with("HTTP/"))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            if line.is_empty() {
                "no HTTP answer".to_string()
            } else {
                format!(
                    "not an HTTP answer: {:?}",
                    line.chars().take(80).collect::<String>()
                )
            }
        })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// Runs `argv` with `env` in `cwd`, in a process group of its own; exit 0 passes. Past `limit`
/// the whole group is killed.
pub async fn exec(
    reaper: &Reaper,
    argv: &[String],
    env: &Env,
    cwd: &Path,
    limit: Duration,
) -> Result<(), String> {
    let what = argv.first().cloned().unwrap_or_default();
    let program = resolve_program(&what, cwd, env.get("PATH").map(String::as_str))
        .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&program);
    cmd.arg0(&what)
        .args(&argv[1..])
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let (pid, exit) = reaper
        .spawn(&mut cmd)
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut exit = exit;
    match timeout(limit, &mut exit).await {
        Ok(Ok(e)) if e.success() => Ok(()),
        Ok(Ok(e)) => Err(format!("{what}: {}", e.text())),
        Ok(Err(_)) => Err(format!("{what}: its exit status was lost")),
        Err(_) => {
            // The group is ours: it was made for this command.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = timeout(Duration::from_secs(2), exit).await;
            Err(format!(
                "{what}: still running after {} (killed)",
                format_exact(limit)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_and_http_against_real_listeners() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable", "302 Found"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert_eq!(tcp(TcpTarget::Addr(addr)).await, Ok(()));
        let url = HttpUrl::parse(&format!("http://{addr}/health")).unwrap();
        // The tcp check used the first accept.
        assert_eq!(http(&url).await, Err("HTTP 503".into()));
        assert_eq!(http(&url).await, Ok(()));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        assert_eq!(
            tcp(TcpTarget::new(&gone.to_string())).await,
            Err("connection refused".into())
        );
        let e = bounded("x", Duration::from_millis(50), std::future::pending())
            .await
            .unwrap_err();
        assert!(e.contains("no answer within 50ms"), "{e}");
    }

    #[tokio::test]
    async fn a_kept_socket_connects_anew_and_resets_each_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Two other listeners: a kept socket goes wherever the next check points it.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        for target in [addr, addr, other.local_addr().unwrap(), addr] {
            assert_eq!(tcp(TcpTarget::Addr(target)).await, Ok(()));
        }
        // Each connection was reset, not closed (a close would read as an empty stream), so
        // nothing is left in TIME_WAIT.
        for _ in 0..3 {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 8];
            let read = std::io::Read::read(&mut c, &mut buf);
            assert_eq!(
                read.map_err(|e| e.kind()),
                Err(io::ErrorKind::ConnectionReset)
            );
        }
        // (A current-thread runtime: every check ran on this thread, with one kept socket.)
        let kept = idle::take(addr).expect("a socket is kept");
        assert!(kept.peer_addr().is_err(), "kept sockets are disconnected");
        idle::put_back(kept);
        // A kept socket tells a refused connection like a new one.
        drop(l);
        assert_eq!(
            tcp(TcpTarget::Addr(addr)).await,
            Err("connection refused".into())
        );
    }
}
