//! systemd's readiness protocol (sd_notify): when the agent runs under a `Type=notify` unit,
//! systemd sets `NOTIFY_SOCKET`, and the agent sends `READY=1` once its socket is up and
//! `STOPPING=1` when it begins to stop. Written out rather than linked: it is one datagram.

use std::{io, os::unix::net::UnixDatagram, path::PathBuf};

/// Where systemd listens, from `NOTIFY_SOCKET`: a path, or `@name` for an abstract socket
/// (which systemd itself uses; the agent only sends to it, it never binds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

pub fn parse(value: &std::ffi::OsStr) -> Option<Target> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    match bytes.first()? {
        b'/' => Some(Target::Path(PathBuf::from(value))),
        b'@' => Some(Target::Abstract(bytes[1..].to_vec())),
        _ => None,
    }
}

/// Sends `state` (e.g. "READY=1\nMAINPID=42") to `target`.
pub fn send(target: &Target, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match target {
        Target::Path(p) => sock.send_to(state.as_bytes(), p)?,
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
    };
    Ok(())
}

/// Takes `NOTIFY_SOCKET` out of the environment (as `sd_notify(unset_environment=1)` does),
/// so apps created with the agent's environment do not inherit it. Call before any thread
/// exists.
pub fn take_from_env() -> Option<Target> {
    let target = parse(&std::env::var_os("NOTIFY_SOCKET")?);
    // SAFETY (in spirit; `remove_var` is safe in edition 2021): the agent calls this first
    // thing, while it has one thread.
    std::env::remove_var("NOTIFY_SOCKET");
    target
}

/// Tells systemd, when it listens; a failure is logged, never fatal to the agent.
pub fn notify(target: Option<&Target>, state: &str) {
    if let Some(target) = target {
        match send(target, state) {
            Ok(()) => tracing::info!(state, "told systemd"),
            Err(e) => tracing::warn!(error = %e, state, "cannot notify systemd"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn parses_paths_and_abstract_names_only() {
        assert_eq!(
            parse(OsStr::new("/run/systemd/notify")),
            Some(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse(OsStr::new("@sd-notify")),
            Some(Target::Abstract(b"sd-notify".to_vec()))
        );
        assert_eq!(parse(OsStr::new("relative")), None);
        assert_eq!(parse(OsStr::new("")), None);
    }

    #[test]
    fn sends_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(&Target::Path(path), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
