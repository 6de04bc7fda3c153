//! Reading `/proc`: process stats, start times, and the grpm variables in an environment.

use std::{collections::HashMap, fs, io};

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
    stat_at_start(pid, &f)
}

/// Every process visible now. Processes that vanish while we read are skipped. Each stat file
/// is opened relative to one descriptor of `/proc` (`openat`), which spares the kernel a
/// lookup of `/proc` itself per process. For repeated scans, keep a [`StatFiles`].
pub fn scan() -> Vec<ProcStat> {
    StatFiles::with_limit(0).scan()
}

/// What repeated scans of `/proc` keep between them: `/proc` itself, open, and each process's
/// stat file, open, so that a scan costs one `pread` per process that was there before (rather
/// than `openat`, two reads and `close`) plus the directory listing. An open stat file names
/// its process for good: once that process is gone (even if its pid is reused) reading it fails,
/// and the pid is opened anew.
pub struct StatFiles {
    /// `/proc`, to list it...
    proc_dir: Option<nix::dir::Dir>,
    /// ...and to open files under it.
    proc_fd: Option<fs::File>,
    open: HashMap<u32, fs::File>,
    /// The previous scan's files, kept to reuse the map's allocation.
    spare: HashMap<u32, fs::File>,
    /// At most this many files stay open; past it, processes are opened and closed each scan.
    limit: usize,
}

impl StatFiles {
    /// Keeps at most `limit` stat files open between scans.
    pub fn with_limit(limit: usize) -> StatFiles {
        let proc_dir = nix::dir::Dir::open(
            "/proc",
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        StatFiles {
            proc_dir,
            proc_fd: fs::File::open("/proc").ok(),
            open: HashMap::new(),
            spare: HashMap::new(),
            limit,
        }
    }

    /// A limit from the open files limit: a quarter of it (the descriptors are the apps' too),
    /// at most 4,096: each open stat file also keeps a page of kernel memory (its seq_file
    /// buffer), so 4,096 files cost 16 MiB at most; processes past that are read as before.
    pub fn sized_to_open_files() -> StatFiles {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(soft, _)| soft);
        StatFiles::with_limit((soft / 4).min(4_096) as usize)
    }

    /// Every process visible now (zombies included), in the order `/proc` lists them.
    pub fn scan(&mut self) -> Vec<ProcStat> {
        self.scan_skipping(&Listing::new(), None)
    }

    /// Like `scan`, but leaves out the processes in `skip` whose `/proc` entry is still the
    /// one recorded there: the entry's inode number names one process (a pid that is reused
    /// gets a new entry, with a new number), so they are the same processes, and are not
    /// read (their kept files stay open). `listed`, if given, gets every entry's pid and inode
    /// number, read or not.
    pub fn scan_skipping(
        &mut self,
        skip: &Listing,
        mut listed: Option<&mut Listing>,
    ) -> Vec<ProcStat> {
        let (Some(dir), Some(proc_fd)) = (self.proc_dir.as_mut(), self.proc_fd.as_ref()) else {
            return Vec::new();
        };
        let mut before = std::mem::take(&mut self.open);
        let mut kept = std::mem::take(&mut self.spare);
        kept.clear();
        let mut out = Vec::with_capacity(before.len() + 16);
        for entry in dir.iter() {
            let Ok(entry) = entry else { continue };
            let Some(pid) = parse_pid(entry.file_name().to_bytes()) else {
                continue;
            };
            if let Some(listed) = listed.as_deref_mut() {
                listed.insert(pid, entry.ino());
            }
            if skip.get(&pid) == Some(&entry.ino()) {
                if let Some(file) = before.remove(&pid) {
                    kept.insert(pid, file);
                }
                continue;
            }
            let cached = before.remove(&pid).and_then(|f| {
                let p = stat_at_start(pid, &f).ok()?;
                Some((p, f))
            });
            let (p, file) = match cached {
                Some(hit) => hit,
                None => {
                    let Some(file) = open_stat(proc_fd, pid) else {
                        continue;
                    };
                    let Ok(p) = stat_at_start(pid, &file) else {
                        continue;
                    };
                    (p, file)
                }
            };
            out.push(p);
            if kept.len() < self.limit {
                kept.insert(pid, file);
            }
        }
        // The files of processes gone since the last scan close here.
        before.clear();
        self.open = kept;
        self.spare = before;
        out
    }
}

/// Processes by pid, with the inode number of their `/proc` entry.
pub type Listing = HashMap<u32, u64>;

/// A pid from a `/proc` entry's name (other entries are not all digits).
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// Opens `PID/stat` under `/proc` (`openat`), naming it from a stack buffer.
fn open_stat(proc_fd: &fs::File, pid: u32) -> Option<fs::File> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let mut path = [0u8; 24];
    let len = {
        let mut w = &mut path[..];
        write!(w, "{pid}/stat").ok()?;
        24 - w.len()
    };
    nix::fcntl::openat(
        proc_fd.as_fd(),
        &path[..len],
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
    .map(fs::File::from)
}

/// Reads an open `/proc/PID/stat` from its start, with one `pread`: a stat line is far below
/// the buffer (and the fields used are in its first half), and a seq_file read at offset 0
/// produces the text anew.
fn stat_at_start(pid: u32, f: &fs::File) -> io::Result<ProcStat> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 1024];
    let len = f.read_at(&mut buf, 0)?;
    let text = std::str::from_utf8(&buf[..len])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "/proc stat is not UTF-8"))?;
    parse_stat(pid, text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
}

/// The grpm identity in a process's environment: `(GRPM_AGENT_ID, (GRPM_APP_ID, GRPM_SLOT))`;
/// no `GRPM_SLOT` is slot 0 (an app's first instance, and every app before instances).
pub fn grpm_identity(pid: u32) -> Option<(String, (u64, u32))> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    parse_identity(&env)
}

pub fn parse_identity(environ: &[u8]) -> Option<(String, (u64, u32))> {
    let mut agent = None;
    let mut app = None;
    let mut slot = 0;
    for entry in environ.split(|&b| b == 0) {
        if let Some(v) = entry.strip_prefix(b"GRPM_AGENT_ID=") {
            agent = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = entry.strip_prefix(b"GRPM_APP_ID=") {
            app = std::str::from_utf8(v).ok()?.parse().ok();
        } else if let Some(v) = entry.strip_prefix(b"GRPM_SLOT=") {
            slot = std::str::from_utf8(v).ok()?.parse().ok()?;
        }
    }
    Some((agent?, (app?, slot)))
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
    fn kept_stat_files_read_fresh_figures_and_let_go_of_ended_processes() {
        let mut files = StatFiles::with_limit(usize::MAX);
        // Busy, but bounded: a test binary killed mid-run (a timeout) would leave an endless
        // loop behind.
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 50000000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let pid = busy.id();
        let find = |files: &mut StatFiles| files.scan().into_iter().find(|p| p.pid == pid);
        let first = find(&mut files).expect("the child is listed");
        assert!(files.open.contains_key(&pid), "its stat file is kept");
        // The kept file, read again from its start, shows the CPU the child used since.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = find(&mut files).expect("still listed");
            assert_eq!(now.starttime, first.starttime);
            if now.cpu_ticks > first.cpu_ticks {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no CPU seen in 10 s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        busy.kill().unwrap();
        busy.wait().unwrap();
        assert!(find(&mut files).is_none(), "a reaped child is gone");
        assert!(!files.open.contains_key(&pid), "and its file closed");
        // Past the limit, processes are still listed, their files not kept.
        let mut none = StatFiles::with_limit(0);
        assert!(none.scan().iter().any(|p| p.pid == std::process::id()));
        assert!(none.open.is_empty());
    }

    #[test]
    fn a_skipped_process_is_listed_not_read_while_its_entry_is_the_same() {
        let mut files = StatFiles::with_limit(usize::MAX);
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut listed = Listing::new();
        assert!(files
            .scan_skipping(&Listing::new(), Some(&mut listed))
            .iter()
            .any(|p| p.pid == pid));
        let ino = listed[&pid];
        let skip: Listing = [(pid, ino)].into();
        let mut again = Listing::new();
        let read = files.scan_skipping(&skip, Some(&mut again));
        assert!(!read.iter().any(|p| p.pid == pid), "skipped");
        assert_eq!(again.get(&pid), Some(&ino), "but listed, as the same entry");
        assert!(files.open.contains_key(&pid), "its kept file stays open");
        // Another entry under that pid (as a reused pid would have) is read.
        let stale: Listing = [(pid, ino + 1)].into();
        assert!(files
            .scan_skipping(&stale, None)
            .iter()
            .any(|p| p.pid == pid));
        child.kill().unwrap();
        child.wait().unwrap();
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
            Some(("abc".into(), (7, 0)))
        );
        assert_eq!(
            parse_identity(b"GRPM_SLOT=3\0GRPM_APP_ID=7\0GRPM_AGENT_ID=abc\0"),
            Some(("abc".into(), (7, 3)))
        );
        assert_eq!(parse_identity(b"GRPM_APP_ID=7\0"), None);
        assert_eq!(parse_identity(b"GRPM_AGENT_ID=x\0GRPM_APP_ID=nope\0"), None);
    }
}
