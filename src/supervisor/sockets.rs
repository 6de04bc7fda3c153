//! Held sockets: the listening sockets the agent binds once per app and passes to each of its
//! instances (see `process::activation`). They stay open across restarts, reloads and instance
//! changes, and are closed when the app is deleted. They all live in one registry, which hands
//! a duplicate of each to the keeper when the agent runs under one (tag: the app, slot
//! [`APP_SLOT`], kind `listen-N` for the Nth socket of the spec): an agent that dies or is
//! upgraded leaves them open, and the next one adopts them (the instances that still run listen
//! on them, so binding anew would fail). Without a keeper, a new agent binds them anew.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use crate::keeper::{link::Link, wire::Kind};
use crate::model::{AppId, HeldSocket, Listen, SocketSpec};

/// One bound, listening socket.
#[derive(Debug)]
pub struct Held {
    pub name: String,
    pub fd: OwnedFd,
    /// As bound (a TCP port 0 resolved).
    pub address: String,
    /// The unix socket file we made, removed when the socket is closed.
    unix: Option<PathBuf>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = &self.unix {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An app's held sockets, in the order of its spec: the first is fd 3 in every instance.
#[derive(Debug, Default)]
pub struct HeldSet {
    pub sockets: Vec<Held>,
}

impl HeldSet {
    /// The first descriptor number an instance gets its sockets on.
    pub const FIRST_FD: u32 = 3;

    /// As `describe` shows them.
    pub fn report(&self) -> Vec<HeldSocket> {
        self.sockets
            .iter()
            .enumerate()
            .map(|(i, h)| HeldSocket {
                name: h.name.clone(),
                address: h.address.clone(),
                fd: HeldSet::FIRST_FD + i as u32,
            })
            .collect()
    }
}

/// Why a socket could not be bound: which, where, and the OS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket {name}: cannot listen on {listen}: {err}")]
pub struct BindError {
    pub name: String,
    pub listen: String,
    pub err: super::error::OsError,
}

/// The keeper slot of what belongs to an app as a whole rather than to one instance slot (its
/// held sockets): no instance has it.
pub const APP_SLOT: u32 = u32::MAX;

/// The keeper's kind for the `i`th held socket of an app.
pub fn keeper_kind(i: usize) -> Kind {
    Kind::Other(format!("listen-{i}"))
}

/// Which held socket a keeper kind names (`listen-N`).
pub fn keeper_index(kind: &Kind) -> Option<usize> {
    match kind {
        Kind::Other(s) => s.strip_prefix("listen-")?.parse().ok(),
        _ => None,
    }
}

/// Every app's held sockets.
#[derive(Default)]
pub struct Sockets {
    apps: Mutex<HashMap<AppId, Arc<HeldSet>>>,
    /// The keeper, which holds a duplicate of each.
    keeper: Option<Arc<Link>>,
}

impl Sockets {
    pub fn new(keeper: Option<Arc<Link>>) -> Sockets {
        Sockets {
            apps: Mutex::default(),
            keeper,
        }
    }

    /// The keeper holds a duplicate of each of the app's sockets.
    fn hand_to_keeper(&self, id: AppId, set: &HeldSet) {
        if let Some(k) = &self.keeper {
            for (i, h) in set.sockets.iter().enumerate() {
                k.hold(id, APP_SLOT, keeper_kind(i), 0, 0, h.fd.as_fd());
            }
        }
    }

    /// Takes over the sockets a previous agent held for the app, as the keeper handed them
    /// (`fds`: by their index in `specs`). All or none: with one missing or not what the spec
    /// says, none is kept (they are bound anew when needed) and the keeper lets go of them.
    pub fn adopt(&self, id: AppId, specs: &[SocketSpec], mut fds: Vec<(usize, OwnedFd)>) {
        fds.sort_by_key(|(i, _)| *i);
        let matches = fds.len() == specs.len() && fds.iter().enumerate().all(|(n, (i, _))| n == *i);
        let set = matches
            .then(|| {
                specs
                    .iter()
                    .zip(fds)
                    .map(|(s, (_, fd))| adopt_one(s, fd))
                    .collect::<Option<Vec<Held>>>()
            })
            .flatten();
        match set {
            Some(sockets) => {
                self.lock().insert(id, Arc::new(HeldSet { sockets }));
            }
            None => {
                tracing::warn!(
                    app_id = id,
                    "held sockets handed over do not match the spec"
                );
                if let Some(k) = &self.keeper {
                    k.release(id, APP_SLOT, 0);
                }
            }
        }
    }

    pub fn get(&self, id: AppId) -> Option<Arc<HeldSet>> {
        self.lock().get(&id).cloned()
    }

    /// The app's sockets, bound now (and kept) when they are not held yet. Blocking.
    pub fn bind(&self, id: AppId, specs: &[SocketSpec]) -> Result<Arc<HeldSet>, BindError> {
        if let Some(set) = self.get(id) {
            return Ok(set);
        }
        let set = bind_all(specs)?;
        let mut apps = self.lock();
        // Another instance may have bound them meanwhile: its set wins, this one closes.
        if let Some(set) = apps.get(&id) {
            return Ok(set.clone());
        }
        self.hand_to_keeper(id, &set);
        let set = Arc::new(set);
        apps.insert(id, set.clone());
        Ok(set)
    }

    pub fn insert(&self, id: AppId, set: HeldSet) -> Arc<HeldSet> {
        self.hand_to_keeper(id, &set);
        let set = Arc::new(set);
        self.lock().insert(id, set.clone());
        set
    }

    /// Closes the app's sockets once no instance holds them any more (its unix socket files
    /// are removed then), and the keeper's duplicates.
    pub fn release(&self, id: AppId) {
        if self.lock().remove(&id).is_some() {
            if let Some(k) = &self.keeper {
                k.release(id, APP_SLOT, 0);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AppId, Arc<HeldSet>>> {
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds every socket of `specs`, or none: the first failure closes the ones bound so far.
/// Blocking (a unix socket may be probed).
pub fn bind_all(specs: &[SocketSpec]) -> Result<HeldSet, BindError> {
    let mut set = HeldSet::default();
    for s in specs {
        let held = bind_one(s).map_err(|e| BindError {
            name: s.name.clone(),
            listen: s.listen.to_string(),
            err: e.into(),
        })?;
        set.sockets.push(held);
    }
    Ok(set)
}

fn bind_one(s: &SocketSpec) -> io::Result<Held> {
    // std binds (SO_REUSEADDR for TCP, close-on-exec) and listens; listening again sets the
    // backlog asked for.
    let backlog = s.backlog.min(i32::MAX as u32) as i32;
    let relisten = |fd: &OwnedFd| {
        // SAFETY: listen on a descriptor we own.
        if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    match &s.listen {
        Listen::Tcp(addr) => {
            let l = std::net::TcpListener::bind(addr)?;
            let address = l.local_addr()?.to_string();
            let fd = OwnedFd::from(l);
            relisten(&fd)?;
            Ok(Held {
                name: s.name.clone(),
                fd,
                address,
                unix: None,
            })
        }
        Listen::Unix(path) => {
            let l = match std::os::unix::net::UnixListener::bind(path) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && stale(path) => {
                    std::fs::remove_file(path)?;
                    std::os::unix::net::UnixListener::bind(path)?
                }
                other => other?,
            };
            let fd = OwnedFd::from(l);
            relisten(&fd)?;
            Ok(Held {
                name: s.name.clone(),
                fd,
                address: format!("unix:{}", path.display()),
                unix: Some(path.clone()),
            })
        }
    }
}

/// A socket handed over by the keeper, checked against its spec: a listening socket of the
/// address family the spec says (a TCP port 0 is whatever the kernel chose then).
fn adopt_one(s: &SocketSpec, fd: OwnedFd) -> Option<Held> {
    match &s.listen {
        Listen::Tcp(addr) => {
            let l = std::net::TcpListener::from(fd);
            let bound = l.local_addr().ok()?;
            if bound.ip() != addr.ip() || (addr.port() != 0 && bound.port() != addr.port()) {
                return None;
            }
            Some(Held {
                name: s.name.clone(),
                fd: OwnedFd::from(l),
                address: bound.to_string(),
                unix: None,
            })
        }
        Listen::Unix(path) => {
            let l = std::os::unix::net::UnixListener::from(fd);
            if l.local_addr().ok()?.as_pathname() != Some(path.as_path()) {
                return None;
            }
            Some(Held {
                name: s.name.clone(),
                fd: OwnedFd::from(l),
                address: format!("unix:{}", path.display()),
                unix: Some(path.clone()),
            })
        }
    }
}

/// A unix socket file nothing listens on (a connect is refused): left by a process that died.
fn stale(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    is_socket
        && matches!(
            std::os::unix::net::UnixStream::connect(path),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, listen: &str) -> SocketSpec {
        SocketSpec {
            name: name.into(),
            listen: Listen::parse(listen).unwrap(),
            backlog: 16,
        }
    }

    #[test]
    fn binds_tcp_and_unix_and_fails_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let unix = format!("unix:{}", path.display());
        let set = bind_all(&[spec("http", "127.0.0.1:0"), spec("admin", &unix)]).unwrap();
        assert!(set.sockets[0].address.starts_with("127.0.0.1:"));
        assert!(!set.sockets[0].address.ends_with(":0"));
        let taken = set.sockets[0].address.clone();
        // The same port again: refused with the OS error, nothing left bound.
        let other = dir.path().join("b.sock");
        let err = bind_all(&[
            spec("b", &format!("unix:{}", other.display())),
            spec("http", &taken),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(!other.exists());
        // A live unix socket is not taken over.
        assert!(bind_all(&[spec("admin", &unix)]).is_err());
        assert_eq!(set.report()[1].fd, 4);
        drop(set);
        assert!(!path.exists(), "a closed held socket's file is removed");
        // A file left by a listener that died (std does not unlink it): stale, taken over.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(bind_all(&[spec("admin", &unix)]).is_ok());
    }
}
