//! Processes that left an app's tree beyond the reach of `stop`.
//!
//! The tree is found by process group, by descent and by the `GRPM_*` variables (see
//! [`super::tree`]). A process that clears its environment and leaves the session
//! (`env -i setsid sh -c 'sleep 1000 &'`), and whose parent then exits, matches none of them:
//! it is reparented away and carries no mark. What it usually still carries is the app's
//! output: the write ends of the stdout and stderr pipes it inherited. So, where no cgroup
//! holds the tree, a pipe that stays open after the tree has ended names the escapees: every
//! process outside the tree with a descriptor linked to that pipe (`/proc/PID/fd/N` ->
//! `pipe:[INODE]`).

use std::{
    collections::HashSet,
    fmt, fs, io,
    os::{fd::AsFd, unix::fs::FileTypeExt},
};

use super::procfs;

/// One of an app's output pipes, named by its inode (what `/proc/PID/fd/N` links to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeId(pub u64);

impl PipeId {
    /// The pipe `fd` is an end of (the agent's read end names the same pipe as the app's
    /// write end).
    pub fn of(fd: &impl AsFd) -> io::Result<PipeId> {
        let file = fs::File::from(fd.as_fd().try_clone_to_owned()?);
        let meta = file.metadata()?;
        if !meta.file_type().is_fifo() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a pipe"));
        }
        Ok(PipeId(std::os::unix::fs::MetadataExt::ino(&meta)))
    }

    /// The pipe a `/proc/PID/fd/N` link names, if it names one.
    fn parse_link(link: &std::ffi::OsStr) -> Option<PipeId> {
        let s = link.to_str()?;
        let inode = s.strip_prefix("pipe:[")?.strip_suffix(']')?;
        inode.parse().ok().map(PipeId)
    }
}

/// A process outside an app's tree that holds one of its output pipes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// With the pid, names the process for good (a reused pid has another start time).
    pub starttime: u64,
    /// Its command name (`/proc/PID/comm`), for people.
    pub name: String,
}

/// Processes that left an app's tree beyond reach and still hold its output open, by pid.
/// Empty when there are none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Escaped(pub Vec<Holder>);

impl Escaped {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.0.iter().map(|h| h.pid).collect()
    }
}

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .0
            .iter()
            .map(|h| format!("pid {} ({})", h.pid, h.name))
            .collect();
        write!(
            f,
            "{} left the app's process tree beyond reach (a new session without the app's \
             environment) and still hold its output open; they were not stopped",
            list.join(", ")
        )
    }
}

/// Every process but this one, and but those in `tree`, that holds one of `pipes` open.
/// Blocking: reads every process's descriptor table (call it when a pipe outlived the tree,
/// not on every stop). Processes that vanish meanwhile, or whose table cannot be read, are
/// skipped.
pub fn pipe_holders(pipes: &[PipeId], tree: &[u32]) -> Escaped {
    let wanted: HashSet<PipeId> = pipes.iter().copied().collect();
    let me = std::process::id();
    let mut out = Vec::new();
    if wanted.is_empty() {
        return Escaped(out);
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        return Escaped(out);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || tree.contains(&pid) {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|l| PipeId::parse_link(l.as_os_str()))
                .is_some_and(|p| wanted.contains(&p))
        });
        if !holds {
            continue;
        }
        let Ok(stat) = procfs::read_stat(pid) else {
            continue;
        };
        if stat.is_dead() {
            continue;
        }
        let name = fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default();
        out.push(Holder {
            pid,
            starttime: stat.starttime,
            name,
        });
    }
    out.sort_by_key(|h| h.pid);
    Escaped(out)
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read,
        process::{Command, Stdio},
    };

    use super::*;

    #[test]
    fn links_name_pipes() {
        assert_eq!(
            PipeId::parse_link("pipe:[4242]".as_ref()),
            Some(PipeId(4242))
        );
        assert_eq!(PipeId::parse_link("socket:[4242]".as_ref()), None);
        assert_eq!(PipeId::parse_link("/dev/null".as_ref()), None);
    }

    #[test]
    fn a_process_that_cleared_its_environment_and_left_the_session_is_found_by_its_pipe() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let pipe = PipeId::of(&read).unwrap();
        assert!(PipeId::of(&std::fs::File::open("/dev/null").unwrap()).is_err());
        // Nobody else holds it yet.
        assert!(pipe_holders(&[pipe], &[]).is_empty());
        // As in the issue: the app's shell starts a daemon with no environment in a session of
        // its own, then exits; the daemon keeps the app's stderr.
        let mut sh = Command::new("sh")
            .args(["-c", "env -i setsid sleep 1000 >/dev/null & echo $!"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(write))
            .spawn()
            .unwrap();
        let mut pid = String::new();
        sh.stdout.take().unwrap().read_to_string(&mut pid).unwrap();
        assert!(sh.wait().unwrap().success());
        let daemon: u32 = pid.trim().parse().unwrap();
        // `env` execs `setsid`, which execs `sleep`: poll until it is sleep in its session.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            let found = pipe_holders(&[pipe, PipeId(u64::MAX)], &[]);
            let settled = procfs::read_stat(daemon).is_ok_and(|s| s.session == daemon)
                && found.0.first().is_some_and(|h| h.name == "sleep");
            if settled || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // SAFETY: kill on a pid this test started (and that still holds the test's pipe).
        let end = || unsafe { libc::kill(daemon as i32, libc::SIGKILL) };
        if found.pids() != [daemon] {
            end();
            panic!("found {found:?}, expected pid {daemon}");
        }
        assert_eq!(found.0[0].name, "sleep");
        assert!(found
            .to_string()
            .starts_with(&format!("pid {daemon} (sleep) left")));
        // A process the tree still reaches is not an escapee.
        assert!(pipe_holders(&[pipe], &[daemon]).is_empty());
        end();
        drop(read);
    }
}
