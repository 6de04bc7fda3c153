//! `GRPM_HOME` (default `~/.grpm`) and the files in it.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$GRPM_HOME`, else `$HOME/.grpm`; made absolute against the current directory.
    pub fn from_env() -> Result<Home, String> {
        let root = match std::env::var_os("GRPM_HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .ok_or("neither GRPM_HOME nor HOME is set")?;
                PathBuf::from(home).join(".grpm")
            }
        };
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot resolve GRPM_HOME {}: {e}", root.display()))?
                .join(root)
        };
        Ok(Home { root })
    }

    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("agent.pid")
    }
    /// Remote agents by name, and groups of them (`--host`).
    pub fn hosts_file(&self) -> PathBuf {
        self.root.join("hosts.toml")
    }
    /// The bound address of the agent's TCP listener, while it has one.
    pub fn addr_file(&self) -> PathBuf {
        self.root.join("agent.addr")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("agent.log")
    }
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("agent.lock")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Creates the home (mode 0700) if needed, as `mkdir` without `-p` would: only its last
    /// component, so that a mistyped GRPM_HOME is an error rather than a new tree. True if it
    /// was created. Refuses one owned by another user, and tightens an existing one to 0700,
    /// since the socket inside grants code execution.
    pub fn ensure(&self) -> io::Result<bool> {
        let created = match fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = self.root.parent().unwrap_or(Path::new("/"));
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "its parent directory {} does not exist (grpm creates only the last \
                         component of GRPM_HOME)",
                        parent.display()
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let meta = fs::metadata(&self.root)?;
        if !meta.is_dir() {
            return Err(io::Error::other("it is not a directory"));
        }
        let uid = nix::unistd::getuid().as_raw();
        if meta.uid() != uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to us (uid {uid})",
                    self.root.display(),
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o777 != 0o700 {
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))?;
        }
        Ok(created)
    }
}

/// True if `p` exists (without following a final symlink).
pub fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Writes `bytes` to `path` atomically and durably. On failure `path` is untouched and no
/// temporary file is left behind (a full disk would otherwise keep a 0-byte `*.tmp`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(name);
    let written = fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_component_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("a/b"));
        let e = home.ensure().unwrap_err().to_string();
        assert!(
            e.contains(&dir.path().join("a").display().to_string()),
            "{e}"
        );
        assert!(!dir.path().join("a").exists());
        let home = Home::new(dir.path().join("a"));
        assert!(home.ensure().unwrap());
        assert!(!home.ensure().unwrap());
        let meta = fs::metadata(&home.root).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
    }

    #[test]
    fn a_failed_atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        // The rename fails (a directory cannot be replaced by a file): the old content stays
        // and the temporary file is gone.
        let blocked = dir.path().join("d");
        fs::create_dir_all(blocked.join("sub")).unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert!(!dir.path().join("d.tmp").exists());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
