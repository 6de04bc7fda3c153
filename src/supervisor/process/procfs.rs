//! Reading `/proc`: process stats, start times, and the grpm variables in an environment.

use std::{fs, io};

/// The fields of `/proc/PID/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// R, S, D, Z, T, X...
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// User + system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks: with the pid, it names a process for good.
    pub starttime: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// A zombie (or a dying task) has exited: it only waits for its parent to reap it.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name may hold spaces and parentheses, so
/// fields are counted from the last ')'.
pub fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: num(4)? as u32,
        pgrp: num(5)? as u32,
        session: num(6)? as u32,
        cpu_ticks: num(14)? + num(15)?,
        starttime: num(22)?,
        rss_pages: num(24)?,
    })
}

pub fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let f = fs::File::open(format!("/proc/{pid}/stat"))?;
    stat_from(pid, f)
}

/// Reads and parses an open `/proc/PID/stat`: one read (a stat line is far below the buffer),
/// where `read_to_string` would also stat the file for a size /proc does not know.
fn stat_from(pid: u32, mut f: fs::File) -> io::Result<ProcStat> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..])?;
        len += n;
        if n == 0 || len == buf.len() {
            break;
        }
    }
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "/proc stat is not UTF-8"))?;
    parse_stat(pid, text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
}

/// Every process visible now. Processes that vanish while we read are skipped. Each stat file
/// is opened relative to one descriptor of `/proc` (`openat`), which spares the kernel a
/// lookup of `/proc` itself per process (a scan is thousands of opens).
pub fn scan() -> Vec<ProcStat> {
    use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let proc_fd = fs::File::open("/proc").ok();
    dir.filter_map(|e| {
        let name = e.ok()?.file_name();
        let pid: u32 = name.to_str()?.parse().ok()?;
        let Some(proc_fd) = &proc_fd else {
            return read_stat(pid).ok();
        };
        let fd = nix::fcntl::openat(
            proc_fd.as_fd(),
            format!("{pid}/stat").as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        // SAFETY: `fd` is a descriptor we own, just opened; the File takes it over.
        let file = unsafe { fs::File::from_raw_fd(fd.into_raw_fd()) };
        stat_from(pid, file).ok()
    })
    .collect()
}

/// The grpm identity in a process's environment: `(GRPM_AGENT_ID, GRPM_APP_ID)`.
pub fn grpm_identity(pid: u32) -> Option<(String, u64)> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    parse_identity(&env)
}

pub fn parse_identity(environ: &[u8]) -> Option<(String, u64)> {
    let mut agent = None;
    let mut app = None;
    for entry in environ.split(|&b| b == 0) {
        if let Some(v) = entry.strip_prefix(b"GRPM_AGENT_ID=") {
            agent = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = entry.strip_prefix(b"GRPM_APP_ID=") {
            app = std::str::from_utf8(v).ok()?.parse().ok();
        }
    }
    Some((agent?, app?))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for start times and CPU.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// The wall-clock time (ms since the epoch) at which a process with this `starttime` started.
pub fn start_unix_ms(starttime: u64) -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime * 1000 + starttime * 1000 / ticks_per_second())
}

/// Page size in bytes, for RSS.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_hostile_comm() {
        let text = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 \
                    5555 1000000 250 18446744073709551615";
        let s = parse_stat(1234, text).unwrap();
        assert_eq!((s.state, s.ppid, s.pgrp, s.session), ('S', 1, 1234, 1234));
        assert_eq!((s.cpu_ticks, s.starttime, s.rss_pages), (10, 5555, 250));
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn reads_own_stat() {
        let me = read_stat(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.is_dead());
    }

    #[test]
    fn identity_needs_both_variables() {
        assert_eq!(
            parse_identity(b"A=1\0GRPM_APP_ID=7\0GRPM_AGENT_ID=abc\0"),
            Some(("abc".into(), 7))
        );
        assert_eq!(parse_identity(b"GRPM_APP_ID=7\0"), None);
        assert_eq!(parse_identity(b"GRPM_AGENT_ID=x\0GRPM_APP_ID=nope\0"), None);
    }
}
