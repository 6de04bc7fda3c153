//! The agent's unix socket: created unreachable to others, checked, and guarded per connection
//! by the peer's uid (SO_PEERCRED).

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::{wrappers::UnixListenerStream, Stream, StreamExt};

use super::authority::FixAuthority;
use crate::home::Home;

/// Binds `$GRPM_HOME/agent.sock` with mode 0600.
///
/// The socket is bound under a temporary name inside the home (mode 0700, so nobody else can
/// reach it), set to 0600, checked, and only then renamed into place: at no moment does a socket
/// with a looser mode sit at the public path. A stale socket left by a dead agent is replaced;
/// the caller holds the agent lock, so no live agent owns it.
pub fn bind(home: &Home) -> io::Result<UnixListener> {
    let path = home.socket();
    if path.as_os_str().len() >= 100 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "socket path {} is too long for a unix socket (at most 107 bytes); use a shorter GRPM_HOME",
                path.display()
            ),
        ));
    }
    let tmp = home
        .root
        .join(format!(".agent.sock.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let std_listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    let meta = fs::symlink_metadata(&tmp)?;
    let uid = nix::unistd::getuid().as_raw();
    if !meta.file_type().is_socket() || meta.mode() & 0o777 != 0o600 || meta.uid() != uid {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} came out with mode {:o} and owner {}; expected a socket, 0600, uid {uid}",
                tmp.display(),
                meta.mode() & 0o777,
                meta.uid()
            ),
        ));
    }
    fs::rename(&tmp, &path)?;
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

/// Accepted connections whose peer runs as our own uid; others are closed at once and logged.
/// Each is read through [`FixAuthority`], so the `:authority` stock gRPC clients send over a
/// unix socket (the socket path) does not get their requests refused.
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = io::Result<FixAuthority<UnixStream>>> {
    let uid = nix::unistd::getuid().as_raw();
    UnixListenerStream::new(listener).filter_map(move |conn| match conn {
        Ok(stream) => match stream.peer_cred() {
            Ok(cred) if cred.uid() == uid => Some(Ok(FixAuthority::new(stream))),
            Ok(cred) => {
                tracing::warn!(peer_uid = cred.uid(), peer_pid = ?cred.pid(), "refused a connection from another user");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a connection without peer credentials");
                None
            }
        },
        Err(e) => {
            // Accept errors (EMFILE, say) are transient; keep serving.
            tracing::warn!(error = %e, "accept failed");
            None
        }
    })
}
