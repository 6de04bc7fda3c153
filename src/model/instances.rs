//! Instances and held sockets: how many processes an app runs, and the listening sockets the
//! agent binds once and passes to each of them (systemd's socket activation).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{HttpUrl, Readiness, ReadyCheck};

/// The most instances one app may have.
pub const MAX_INSTANCES: u32 = 256;
/// The most sockets one app may hold (systemd's `LISTEN_FDS` has no limit; this keeps the
/// descriptor table and `LISTEN_FDNAMES` small).
pub const MAX_SOCKETS: usize = 16;
/// The listen backlog when none is given.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// How long a reload waits for a replacement without a readiness check before it stops the
/// instance it replaces.
pub const DEFAULT_RELOAD_GRACE: Duration = Duration::from_secs(1);

/// A held socket as bound, as `describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSocket {
    pub name: String,
    /// As bound: a TCP port 0 shows the port the kernel chose.
    pub address: String,
    /// The descriptor number each instance gets it on.
    pub fd: u32,
}

/// Where a held socket listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listen {
    /// A TCP address, IPv4 or IPv6 (port 0: the kernel picks one when the agent binds it).
    Tcp(SocketAddr),
    /// A unix stream socket at this absolute path.
    Unix(PathBuf),
}

impl Listen {
    /// `HOST:PORT` with a literal IP (`[::1]:8080` for IPv6), or `unix:/absolute/path`.
    pub fn parse(s: &str) -> Result<Listen, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("{s:?}: a unix socket path must be absolute"));
            }
            // sockaddr_un holds 108 bytes, the last one NUL.
            if path.as_os_str().len() > 107 {
                return Err(format!(
                    "{s:?}: a unix socket path is at most 107 bytes long"
                ));
            }
            if s.contains('\0') {
                return Err(format!("{s:?} contains a NUL byte"));
            }
            return Ok(Listen::Unix(path));
        }
        s.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!("{s:?} is not an address to listen on: IP:PORT, [IPv6]:PORT or unix:/path")
        })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Serialize for Listen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Listen, D::Error> {
        let s = String::deserialize(d)?;
        Listen::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A listening socket the agent holds for an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketSpec {
    /// Its name in `LISTEN_FDNAMES`.
    pub name: String,
    pub listen: Listen,
    pub backlog: u32,
}

impl SocketSpec {
    /// `NAME=ADDR` (`NAME=unix:/path`), as `--socket` takes it.
    pub fn parse_flag(s: &str) -> Result<SocketSpec, String> {
        let (name, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=ADDR (or NAME=unix:/path)"))?;
        Ok(SocketSpec {
            name: name.to_string(),
            listen: Listen::parse(addr)?,
            backlog: DEFAULT_BACKLOG,
        })
    }
}

/// Checks a socket name: what `LISTEN_FDNAMES` can carry (systemd: up to 255 printable
/// characters, no ':'); we keep to the names apps have.
fn check_socket_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "socket name {name:?}: 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// Checks the sockets of a spec, and that its readiness check can tell a new instance from an
/// old one (see [`aims_at_socket`]).
pub fn check_sockets(sockets: &[SocketSpec], ready: Option<&Readiness>) -> Result<(), String> {
    if sockets.len() > MAX_SOCKETS {
        return Err(format!(
            "{} sockets; at most {MAX_SOCKETS} are allowed",
            sockets.len()
        ));
    }
    for (i, s) in sockets.iter().enumerate() {
        check_socket_name(&s.name)?;
        if !(1..=65535).contains(&s.backlog) {
            return Err(format!(
                "socket {}: backlog {} is out of range: between 1 and 65535",
                s.name, s.backlog
            ));
        }
        if let Some(other) = sockets[..i].iter().find(|o| o.name == s.name) {
            return Err(format!("socket name {} is given twice", other.name));
        }
        let same_port = |o: &SocketSpec| match (&o.listen, &s.listen) {
            (Listen::Tcp(a), Listen::Tcp(b)) => a == b && a.port() != 0,
            (a, b) => a == b,
        };
        if let Some(other) = sockets[..i].iter().find(|o| same_port(o)) {
            return Err(format!(
                "sockets {} and {} listen on the same address {}",
                other.name, s.name, s.listen
            ));
        }
    }
    if let Some(s) = sockets.iter().find(|s| aims_at_socket(s, ready)) {
        return Err(format!(
            "the readiness check aims at socket {}'s own address ({}): during a reload the \
             old instance answers there, so it cannot tell the new one is ready; use a \
             per-instance check (notify, log, exec, or http on a port of each instance's own, \
             e.g. from GRPM_INSTANCE)",
            s.name, s.listen
        ));
    }
    Ok(())
}

/// Whether `ready` is an http or tcp check of the address `socket` listens on: any instance
/// (the old one included) answers there.
pub fn aims_at_socket(socket: &SocketSpec, ready: Option<&Readiness>) -> bool {
    let Listen::Tcp(addr) = &socket.listen else {
        return false;
    };
    if addr.port() == 0 {
        return false;
    }
    let target = match ready.map(|r| &r.check) {
        Some(ReadyCheck::Http(HttpUrl { host, port, .. })) => (host.clone(), *port),
        Some(ReadyCheck::Tcp(t)) => match super::split_host_port(t, None) {
            Ok(hp) => hp,
            Err(_) => return false,
        },
        _ => return false,
    };
    if target.1 != addr.port() {
        return false;
    }
    let host = target.0.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip == addr.ip() || addr.ip().is_unspecified(),
        // A name (localhost, the host's own): taken as reaching the socket.
        Err(_) => addr.ip().is_unspecified() || addr.ip().is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(name: &str, listen: &str) -> SocketSpec {
        SocketSpec {
            name: name.into(),
            listen: Listen::parse(listen).unwrap(),
            backlog: DEFAULT_BACKLOG,
        }
    }

    #[test]
    fn listen_addresses() {
        assert!(matches!(
            Listen::parse("127.0.0.1:8080"),
            Ok(Listen::Tcp(_))
        ));
        assert!(matches!(Listen::parse("[::1]:0"), Ok(Listen::Tcp(_))));
        assert_eq!(
            Listen::parse("unix:/run/a.sock"),
            Ok(Listen::Unix("/run/a.sock".into()))
        );
        assert!(Listen::parse("unix:rel.sock").is_err());
        assert!(Listen::parse("localhost:80").is_err());
        assert!(Listen::parse(&format!("unix:/{}", "x".repeat(107))).is_err());
        assert_eq!(
            Listen::parse("[::1]:80").unwrap().to_string(),
            "[::1]:80".to_string()
        );
        let flag = SocketSpec::parse_flag("http=unix:/tmp/x.sock").unwrap();
        assert_eq!(flag.name, "http");
        assert!(SocketSpec::parse_flag("http").is_err());
    }

    #[test]
    fn socket_rules() {
        assert!(check_sockets(&[sock("http", "127.0.0.1:80")], None).is_ok());
        assert!(check_sockets(&[sock("a:b", "127.0.0.1:80")], None).is_err());
        let twice = [sock("a", "127.0.0.1:80"), sock("a", "127.0.0.1:81")];
        assert!(check_sockets(&twice, None)
            .unwrap_err()
            .contains("given twice"));
        let same = [sock("a", "127.0.0.1:80"), sock("b", "127.0.0.1:80")];
        assert!(check_sockets(&same, None).is_err());
        let zeros = [sock("a", "127.0.0.1:0"), sock("b", "127.0.0.1:0")];
        assert!(check_sockets(&zeros, None).is_ok());
    }

    #[test]
    fn a_check_of_the_shared_address_is_refused() {
        let http = |u: &str| Readiness::new(ReadyCheck::Http(HttpUrl::parse(u).unwrap()));
        let tcp = |t: &str| Readiness::new(ReadyCheck::Tcp(t.into()));
        let s = [sock("http", "127.0.0.1:8080")];
        let err = check_sockets(&s, Some(&http("http://127.0.0.1:8080/health"))).unwrap_err();
        assert!(err.contains("per-instance"), "{err}");
        assert!(check_sockets(&s, Some(&http("http://localhost:8080/"))).is_err());
        assert!(check_sockets(&s, Some(&tcp("127.0.0.1:8080"))).is_err());
        assert!(check_sockets(&s, Some(&tcp("127.0.0.1:9000"))).is_ok());
        let any = [sock("http", "0.0.0.0:8080")];
        assert!(check_sockets(&any, Some(&tcp("10.0.0.1:8080"))).is_err());
        assert!(check_sockets(&s, Some(&Readiness::new(ReadyCheck::Notify))).is_ok());
    }
}
