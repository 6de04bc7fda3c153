//! Remote agents by name: `$GRPM_HOME/hosts.toml` (like an ssh config) and the `--host` syntax
//! (`NAME`, `HOST:PORT`, comma lists, `@group`).
//!
//! ```toml
//! [defaults]                      # optional; every host inherits what it does not set
//! ca = "tls/ca.pem"               # relative paths are taken from this file's directory
//! cert = "tls/client.pem"
//! key = "tls/client-key.pem"
//!
//! [hosts.box1]
//! address = "box1.example.com:7470"
//! token_file = "box1.token"       # a bearer token, alone (loopback) or on top of TLS
//! server_name = "box1"            # the name the agent's certificate must carry
//!
//! [groups]
//! web = ["box1", "box2:7470"]
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// The port used when an address names none.
pub const DEFAULT_PORT: u16 = 7470;

/// One agent to talk to, with everything needed to reach and authenticate to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Host {
    /// How the user named it (`box1`, `10.0.0.5:7470`): the label on every output line.
    pub label: String,
    /// `host:port`.
    pub address: String,
    /// The name the agent's certificate must be valid for (default: the address's host).
    pub server_name: Option<String>,
    /// CA certificate to verify the agent with; without it the connection is plaintext.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for agents that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("label", &self.label)
            .field("address", &self.address)
            .field("tls", &self.ca.is_some())
            .finish()
    }
}

impl Host {
    /// The host part of the address (brackets of an IPv6 literal removed).
    pub fn host_part(&self) -> &str {
        split_host_port(&self.address).0
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Entry,
    #[serde(default)]
    hosts: BTreeMap<String, Entry>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    address: Option<String>,
    server_name: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

/// The parsed hosts file (empty when there is none).
#[derive(Debug, Default)]
pub struct Hosts {
    file: File,
    /// Where relative paths are anchored: the file's directory.
    dir: PathBuf,
    /// The file's path, for messages.
    path: PathBuf,
}

impl Hosts {
    /// Reads `path`; a missing file is an empty configuration, a malformed one an error that
    /// names the file and the line.
    pub fn load(path: &Path) -> Result<Hosts, String> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        match std::fs::read_to_string(path) {
            Ok(text) => Hosts::parse(&text, path, dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Hosts {
                dir,
                path: path.to_path_buf(),
                ..Default::default()
            }),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn parse(text: &str, path: &Path, dir: PathBuf) -> Result<Hosts, String> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(":{}", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            format!("{}{line}: {}", path.display(), e.message())
        })?;
        for (name, e) in &file.hosts {
            if e.address.is_none() {
                return Err(format!(
                    "{}: [hosts.{name}] has no address (e.g. address = \"{name}:{DEFAULT_PORT}\")",
                    path.display()
                ));
            }
        }
        Ok(Hosts {
            file,
            dir,
            path: path.to_path_buf(),
        })
    }

    /// Resolves a `--host` value into the hosts to talk to, in the order given, without
    /// duplicates.
    pub fn resolve(&self, spec: &str) -> Result<Vec<Host>, String> {
        let mut out: Vec<Host> = Vec::new();
        for item in spec.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!("--host {spec:?}: an empty name in the list"));
            }
            let names: Vec<&str> = match item.strip_prefix('@') {
                Some(group) => {
                    let members = self.file.groups.get(group).ok_or_else(|| {
                        format!(
                            "--host: no group {group:?} in {} (groups: {})",
                            self.path.display(),
                            self.list(self.file.groups.keys())
                        )
                    })?;
                    if members.is_empty() {
                        return Err(format!("--host: group {group:?} is empty"));
                    }
                    members.iter().map(String::as_str).collect()
                }
                None => vec![item],
            };
            for name in names {
                let host = self.host(name)?;
                if !out.iter().any(|h| h.label == host.label) {
                    out.push(host);
                }
            }
        }
        Ok(out)
    }

    fn list<'a>(&self, names: impl Iterator<Item = &'a String>) -> String {
        let v: Vec<&str> = names.map(String::as_str).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }

    /// A named host, or an address used as is (with the defaults' credentials).
    fn host(&self, name: &str) -> Result<Host, String> {
        let (entry, address) = match self.file.hosts.get(name) {
            Some(e) => (e.clone(), e.address.clone().unwrap_or_default()),
            None => {
                check_address(name)?;
                (Entry::default(), with_port(name))
            }
        };
        let d = &self.file.defaults;
        let path = |own: &Option<PathBuf>, default: &Option<PathBuf>| {
            own.as_ref().or(default.as_ref()).map(|p| self.dir.join(p))
        };
        let host = Host {
            label: name.to_string(),
            address: with_port(&address),
            server_name: entry.server_name.clone().or_else(|| d.server_name.clone()),
            ca: path(&entry.ca, &d.ca),
            cert: path(&entry.cert, &d.cert),
            key: path(&entry.key, &d.key),
            token_file: path(&entry.token_file, &d.token_file),
        };
        if host.cert.is_some() != host.key.is_some() {
            return Err(format!(
                "{}: host {name:?}: cert and key go together",
                self.path.display()
            ));
        }
        if host.cert.is_some() && host.ca.is_none() {
            return Err(format!(
                "{}: host {name:?}: a client certificate needs TLS: add ca = \"...\"",
                self.path.display()
            ));
        }
        Ok(host)
    }
}

/// Splits `host:port`, `[v6]:port`, `[v6]`, a bare IPv6 literal or a bare host name.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.split_once(':') {
        Some((h, p)) if !p.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

/// A name that is not in hosts.toml must at least look like a host or `host:port`.
fn check_address(s: &str) -> Result<(), String> {
    let (host, port) = split_host_port(s);
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("--host {s:?}: {p:?} is not a port number"))?;
    }
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--host {s:?}: not a host name, HOST:PORT or @group from $GRPM_HOME/hosts.toml"
        ))
    }
}

/// The address with the default port when it names none (IPv6 literals bracketed).
fn with_port(address: &str) -> String {
    match split_host_port(address) {
        (_, Some(_)) => address.to_string(),
        (h, None) if h.contains(':') => format!("[{h}]:{DEFAULT_PORT}"),
        (h, None) => format!("{h}:{DEFAULT_PORT}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[defaults]
ca = "tls/ca.pem"
cert = "tls/client.pem"
key = "tls/client-key.pem"

[hosts.box1]
address = "box1.example.com"
server_name = "box1"

[hosts.box2]
address = "10.0.0.2:7000"
token_file = "/etc/grpm/token"

[groups]
web = ["box1", "box2", "box1"]
empty = []
"#;

    fn hosts() -> Hosts {
        Hosts::parse(TEXT, Path::new("/h/hosts.toml"), PathBuf::from("/h")).unwrap()
    }

    #[test]
    fn names_groups_and_addresses() {
        let h = hosts();
        let web = h.resolve("@web").unwrap();
        assert_eq!(
            web.iter().map(|h| h.label.as_str()).collect::<Vec<_>>(),
            ["box1", "box2"]
        );
        assert_eq!(web[0].address, "box1.example.com:7470");
        assert_eq!(web[0].server_name.as_deref(), Some("box1"));
        assert_eq!(web[0].ca, Some(PathBuf::from("/h/tls/ca.pem")));
        assert_eq!(web[1].token_file, Some(PathBuf::from("/etc/grpm/token")));
        assert_eq!(web[1].host_part(), "10.0.0.2");
        let mixed = h.resolve("box2, 127.0.0.1:9,@web").unwrap();
        assert_eq!(mixed.len(), 3);
        assert_eq!(mixed[1].address, "127.0.0.1:9");
        assert_eq!(mixed[1].cert, Some(PathBuf::from("/h/tls/client.pem")));
        assert_eq!(h.resolve("::1").unwrap()[0].address, "[::1]:7470");
        assert_eq!(h.resolve("[::1]:80").unwrap()[0].host_part(), "::1");
    }

    #[test]
    fn mistakes_are_named() {
        let h = hosts();
        assert!(h
            .resolve("@nope")
            .unwrap_err()
            .contains("groups: empty, web"));
        assert!(h.resolve("@empty").unwrap_err().contains("empty"));
        assert!(h.resolve("a,,b").unwrap_err().contains("empty name"));
        assert!(h.resolve("box1:x").unwrap_err().contains("port"));
        assert!(h.resolve("a b").unwrap_err().contains("not a host"));
        let err = Hosts::parse(
            "[hosts.x]\nadress = \"y\"\n",
            Path::new("hosts.toml"),
            PathBuf::new(),
        )
        .unwrap_err();
        assert!(err.starts_with("hosts.toml:2:"), "{err}");
        let err = Hosts::parse("[hosts.x]\n", Path::new("hosts.toml"), PathBuf::new()).unwrap_err();
        assert!(err.contains("no address"), "{err}");
        let err = Hosts::parse(
            "[hosts.x]\naddress = \"a:1\"\ncert = \"c\"\nkey = \"k\"\n",
            Path::new("hosts.toml"),
            PathBuf::new(),
        )
        .unwrap()
        .resolve("x")
        .unwrap_err();
        assert!(err.contains("needs TLS"), "{err}");
    }

    #[test]
    fn no_file_means_addresses_only() {
        let h = Hosts::load(Path::new("/nonexistent/hosts.toml")).unwrap();
        assert_eq!(h.resolve("a:1").unwrap()[0].address, "a:1");
        assert!(h.resolve("@web").unwrap_err().contains("groups: none"));
    }
}
