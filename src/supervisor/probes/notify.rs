//! The sd_notify protocol, as systemd speaks it for `Type=notify`: each app that asks for it gets
//! a datagram socket of its own (`$GRPM_HOME/notify/<id>.sock`, mode 0600, in a 0700
//! directory), named by `NOTIFY_SOCKET`. A reader task parses what arrives
//! (`READY=1`, `STATUS=`, `WATCHDOG=1`, `MAINPID=`, `STOPPING=1`, `ERRNO=`,
//! `EXTEND_TIMEOUT_USEC=`) into a state that probes and `describe` watch.
//!
//! Any process that can reach the socket may write to it (only the agent's user can: the
//! directory is 0700). Counters, not flags, so that a probe started after a datagram arrived
//! still sees it: it compares against the counts taken before the instance was spawned.

use std::{
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{net::UnixDatagram, sync::watch, task::JoinHandle};

/// What the app has said so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// `READY=1` datagrams received.
    pub ready: u64,
    /// `WATCHDOG=1` datagrams received.
    pub watchdog: u64,
    /// The last `STATUS=` text.
    pub status: String,
    /// The last `MAINPID=` (reported only: the agent keeps watching the process it spawned).
    pub main_pid: Option<u32>,
    /// `STOPPING=1` datagrams received.
    pub stopping: u64,
    /// The last `ERRNO=`.
    pub errno: Option<i32>,
    /// The sum of the `EXTEND_TIMEOUT_USEC=` extensions asked for, as a duration.
    pub extended: Duration,
}

/// One app's notify socket and its reader.
pub struct NotifySocket {
    path: PathBuf,
    state: watch::Receiver<NotifyState>,
    reader: JoinHandle<()>,
    /// The socket's descriptor, owned by the reader task.
    fd: std::os::fd::RawFd,
}

/// The longest path a unix socket address holds (`sun_path`, less its NUL).
const MAX_PATH: usize = 107;
/// Bounds what one datagram may make us read.
const MAX_DATAGRAM: usize = 4096;

impl NotifySocket {
    /// Binds `path` (replacing a stale socket), mode 0600, its directory 0700.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        if path.as_os_str().len() > MAX_PATH {
            return Err(io::Error::other(format!(
                "{} is longer than a unix socket path may be ({MAX_PATH} bytes); use a shorter GRPM_HOME",
                path.display()
            )));
        }
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let sock = UnixDatagram::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Self::serve(path, sock)
    }

    /// Takes over a socket a previous agent bound at `path` (handed over by the keeper).
    pub fn adopt(path: &Path, fd: std::os::fd::OwnedFd) -> io::Result<NotifySocket> {
        let sock = std::os::unix::net::UnixDatagram::from(fd);
        sock.set_nonblocking(true)?;
        Self::serve(path, UnixDatagram::from_std(sock)?)
    }

    fn serve(path: &Path, sock: UnixDatagram) -> io::Result<NotifySocket> {
        use std::os::fd::AsRawFd;
        let fd = sock.as_raw_fd();
        let (tx, state) = watch::channel(NotifyState::default());
        let reader = tokio::spawn(read(sock, tx));
        Ok(NotifySocket {
            path: path.to_path_buf(),
            state,
            reader,
            fd,
        })
    }

    /// The socket's descriptor (valid while this lives).
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the reader task owns the socket until `self` is dropped (which aborts it).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state(&self) -> watch::Receiver<NotifyState> {
        self.state.clone()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.reader.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn read(sock: UnixDatagram, tx: watch::Sender<NotifyState>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "notify socket: cannot read; no more notifications");
                return;
            }
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        tx.send_modify(|s| apply(s, &text));
    }
}

/// Applies one datagram (newline-separated `KEY=VALUE` assignments) to the state.
pub fn apply(s: &mut NotifyState, datagram: &str) {
    for line in datagram.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "READY" if value == "1" => s.ready += 1,
            "WATCHDOG" if value == "1" => s.watchdog += 1,
            "STOPPING" if value == "1" => s.stopping += 1,
            "STATUS" => s.status = value.chars().take(1024).collect(),
            "MAINPID" => s.main_pid = value.parse().ok(),
            "ERRNO" => s.errno = value.parse().ok(),
            "EXTEND_TIMEOUT_USEC" => {
                if let Ok(us) = value.parse::<u64>() {
                    s.extended = s.extended.saturating_add(Duration::from_micros(us));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_systemd_parses() {
        let mut s = NotifyState::default();
        apply(&mut s, "READY=1\nSTATUS=serving 3 clients\nMAINPID=42");
        apply(&mut s, "WATCHDOG=1");
        apply(
            &mut s,
            "EXTEND_TIMEOUT_USEC=1500000\nERRNO=2\nSTOPPING=1\nREADY=0\nnonsense",
        );
        assert_eq!(
            s,
            NotifyState {
                ready: 1,
                watchdog: 1,
                status: "serving 3 clients".into(),
                main_pid: Some(42),
                stopping: 1,
                errno: Some(2),
                extended: Duration::from_millis(1500),
            }
        );
    }

    #[tokio::test]
    async fn a_datagram_reaches_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n").join("1.sock");
        let sock = NotifySocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut rx = sock.state();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nSTATUS=up", &path).unwrap();
        let s = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.ready == 1))
            .await
            .expect("the datagram arrives")
            .unwrap()
            .clone();
        assert_eq!(s.status, "up");
        drop(sock);
        assert!(!path.exists());
    }
}
