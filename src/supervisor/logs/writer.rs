//! One stream of one app's log: the files on disk, written only here, and the logical offset
//! that readers follow. Every method blocks (file I/O): call them from the log writer threads or
//! `spawn_blocking`, never on an async worker.
//!
//! The logical log counts every byte written since the app's first output; it never goes back.
//! `X.log` holds the bytes from `start` to `start + len`; `X.log.1`, `X.log.2`... hold the ones
//! before, newest first. `start` is kept in `X.offset` (rewritten at each rotation and flush),
//! so offsets survive agent restarts.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use tokio::sync::watch;

use super::{
    lines::Lines,
    rotate::{self, Cut},
};
use crate::model::LogPolicy;

/// What followers watch: where the log ends, and whether it will grow again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogState {
    pub end: u64,
    /// The app was deleted or the agent is stopping: no more output will come.
    pub closed: bool,
}

/// An open file of the log with the logical offset of its first byte.
pub struct Segment {
    pub file: File,
    pub start: u64,
    pub len: u64,
}

pub struct StreamLog {
    path: PathBuf,
    offset_path: PathBuf,
    /// Rotation and timestamps; replaced when an apply changes them (between instances).
    policy: Mutex<LogPolicy>,
    inner: Mutex<Inner>,
    state: watch::Sender<LogState>,
}

#[derive(Default)]
struct Inner {
    /// `start`, `len` and `mid_line` have been read from disk.
    loaded: bool,
    /// The current file, open for appending (after the first write).
    file: Option<File>,
    start: u64,
    len: u64,
    /// The current file does not end with a newline.
    mid_line: bool,
    /// Bytes were spliced in since `mid_line` was last known: read the file's last byte.
    mid_line_stale: bool,
    lines: Lines,
    /// The last write error, reported once until writes succeed again.
    failing: bool,
}

impl StreamLog {
    /// A log whose current file is `path` (nothing is touched on disk until it is used).
    pub fn new(path: PathBuf, offset_path: PathBuf, policy: LogPolicy) -> StreamLog {
        StreamLog {
            path,
            offset_path,
            policy: Mutex::new(policy),
            inner: Mutex::new(Inner {
                lines: Lines::new(policy.time),
                ..Inner::default()
            }),
            state: watch::channel(LogState::default()).0,
        }
    }

    fn policy(&self) -> LogPolicy {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New rotation and timestamp settings, for the next instance's output (no pipe is being
    /// read when this is called: an apply's restart, after the old instance's output drained).
    pub fn set_policy(&self, policy: LogPolicy) {
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = policy;
        self.lock().lines = Lines::new(policy.time);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives a change whenever the log grows, is flushed or closes.
    pub fn watch(&self) -> watch::Receiver<LogState> {
        self.state.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `start` (from `X.offset`), the current file's length and its last byte.
    fn load(&self, inner: &mut Inner) {
        if inner.loaded {
            return;
        }
        inner.loaded = true;
        inner.start = fs::read_to_string(&self.offset_path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if let Ok(f) = File::open(&self.path) {
            inner.len = f.metadata().map_or(0, |m| m.len());
            let mut last = [0u8; 1];
            inner.mid_line =
                inner.len > 0 && f.read_at(&mut last, inner.len - 1).is_ok() && last[0] != b'\n';
        }
        // A previous agent may have left a line unfinished: it continues without a prefix.
        inner.lines.continue_line(inner.mid_line);
        self.publish(inner);
    }

    fn publish(&self, inner: &Inner) {
        let end = inner.start + inner.len;
        self.state.send_if_modified(|s| {
            let changed = s.end != end;
            s.end = end;
            changed
        });
    }

    /// The logical end: the offset the next byte will get.
    pub fn end(&self) -> u64 {
        let mut inner = self.lock();
        self.load(&mut inner);
        inner.start + inner.len
    }

    /// Writes bytes read from the app at `now_ms`: its complete lines now, a partial last line
    /// later. Returns true when a partial line is held back.
    pub fn feed(&self, data: &[u8], now_ms: u64) -> bool {
        let mut inner = self.lock();
        self.load(&mut inner);
        let Inner { lines, .. } = &mut *inner;
        let mut lines = std::mem::take(lines);
        let r = lines.feed(data, now_ms, &mut |b| self.write_out(&mut inner, b));
        let pending = lines.has_pending();
        inner.lines = lines;
        self.report(&mut inner, r);
        self.publish(&inner);
        pending
    }

    /// Writes the held-back partial line; `eof`: the pipe ended, so the line is terminated.
    pub fn release(&self, eof: bool) {
        let mut inner = self.lock();
        self.load(&mut inner);
        let mut lines = std::mem::take(&mut inner.lines);
        let mut r = lines.release(eof, &mut |b| self.write_out(&mut inner, b));
        inner.lines = lines;
        // Spliced output that ends inside a line: the line ends with the output.
        if r.is_ok() && eof && self.splices() && self.fresh_mid_line(&mut inner) {
            r = self.write_out(&mut inner, b"\n");
        }
        self.report(&mut inner, r);
        self.publish(&inner);
    }

    fn report(&self, inner: &mut Inner, r: io::Result<()>) {
        match r {
            Ok(()) => inner.failing = false,
            Err(e) => {
                if !inner.failing {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write a log file; output is lost until it works again");
                }
                inner.failing = true;
            }
        }
    }

    /// Appends `data`, rotating where [`rotate::cut`] says.
    fn write_out(&self, inner: &mut Inner, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mid_line = self.fresh_mid_line(inner);
            let n = match rotate::cut(inner.len, self.policy().max_size, mid_line, data) {
                Cut::All => data.len(),
                Cut::At(n) => n,
            };
            if n > 0 {
                let file = match &mut inner.file {
                    Some(f) => f,
                    None => inner.file.insert(self.open_current()?),
                };
                file.write_all_at(&data[..n], inner.len)?;
                inner.len += n as u64;
                inner.mid_line = data[n - 1] != b'\n';
                data = &data[n..];
            }
            if !data.is_empty() {
                self.rotate(inner)?;
            }
        }
        Ok(())
    }

    fn open_current(&self) -> io::Result<File> {
        if let Some(dir) = self.path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        // Not O_APPEND: splice(2) refuses such a file. Only this log writes it, at `len`.
        OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.path)
    }

    /// Whether the current file ends inside a line (read from its last byte after splices).
    fn fresh_mid_line(&self, inner: &mut Inner) -> bool {
        if inner.mid_line_stale {
            inner.mid_line_stale = false;
            let mut last = [0u8; 1];
            inner.mid_line = inner.len > 0
                && inner
                    .file
                    .as_ref()
                    .is_some_and(|f| f.read_at(&mut last, inner.len - 1).is_ok())
                && last[0] != b'\n';
        }
        inner.mid_line
    }

    /// Whether output goes in with [`StreamLog::take_from`] (no timestamps to add).
    pub fn splices(&self) -> bool {
        !self.policy().time
    }

    /// Moves up to `max` bytes of what `pipe` holds now into the log with splice(2): they go
    /// from the pipe to the file inside the kernel and never sit in our memory, so an agent
    /// killed at any instant loses nothing (what it had not moved is still in the pipe, whose
    /// read end the keeper holds for the next agent). Near the size limit, what comes is
    /// looked at first (tee(2): copied, not taken) to rotate at a line boundary.
    pub fn take_from(&self, pipe: &File, max: usize) -> io::Result<Took> {
        let mut inner = self.lock();
        self.load(&mut inner);
        let avail = pipe_bytes(pipe)?;
        if avail == 0 {
            return Ok(if pipe_hung_up(pipe) {
                Took::Eof
            } else {
                Took::Empty
            });
        }
        let want = avail.min(max);
        let mut moved = 0;
        let mut result = Ok(());
        while moved < want {
            let room = self.policy().max_size.saturating_sub(inner.len);
            let left = want - moved;
            let step = if left as u64 <= room {
                self.splice_in(&mut inner, pipe, left).map(|n| (n, false))
            } else {
                self.cut_and_splice(&mut inner, pipe, left, room)
            };
            match step {
                Ok((0, false)) => break,
                Ok((n, _)) => moved += n,
                Err(e) => {
                    // The disk refuses (full, read-only): what the pipe holds is dropped, so
                    // the app never blocks on a log that cannot be written (said once).
                    moved += discard(pipe, left);
                    result = Err(e);
                }
            }
        }
        self.report(&mut inner, result);
        self.publish(&inner);
        Ok(Took::Bytes(moved))
    }

    /// Near the limit: moves up to the line boundary [`rotate::cut`] picks, then rotates.
    /// Returns the bytes moved, and whether it rotated (progress even when none moved).
    fn cut_and_splice(
        &self,
        inner: &mut Inner,
        pipe: &File,
        left: usize,
        room: u64,
    ) -> io::Result<(usize, bool)> {
        let look = usize::try_from(room)
            .unwrap_or(usize::MAX)
            .saturating_add(rotate::FINISH_SLACK as usize + 1)
            .min(left);
        let ahead = peek(pipe, look)?;
        if ahead.is_empty() {
            return Ok((0, false));
        }
        let mid_line = self.fresh_mid_line(inner);
        match rotate::cut(inner.len, self.policy().max_size, mid_line, &ahead) {
            Cut::All => Ok((self.splice_in(inner, pipe, ahead.len())?, false)),
            Cut::At(k) => {
                let got = if k > 0 {
                    self.splice_in(inner, pipe, k)?
                } else {
                    0
                };
                if got < k {
                    return Ok((got, false));
                }
                self.rotate(inner)?;
                Ok((got, true))
            }
        }
    }

    /// Splices up to `len` bytes from `pipe` to the end of the current file.
    fn splice_in(&self, inner: &mut Inner, pipe: &File, len: usize) -> io::Result<usize> {
        let file = match &mut inner.file {
            Some(f) => f,
            None => inner.file.insert(self.open_current()?),
        };
        let mut off = inner.len as libc::loff_t;
        // SAFETY: splice between two descriptors we hold, with an offset we own.
        let n = unsafe {
            libc::splice(
                pipe.as_raw_fd(),
                std::ptr::null_mut(),
                file.as_raw_fd(),
                &mut off,
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                // A file system that cannot splice: through memory, as before.
                _ if e.raw_os_error() == Some(libc::EINVAL) => self.copy_in(inner, pipe, len),
                _ => Err(e),
            };
        }
        inner.len += n as u64;
        inner.mid_line_stale = true;
        Ok(n as usize)
    }

    fn copy_in(&self, inner: &mut Inner, pipe: &File, len: usize) -> io::Result<usize> {
        use std::io::Read as _;
        let mut buf = vec![0; len.min(256 * 1024)];
        let n = match (&*pipe).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        self.write_out(inner, &buf[..n])?;
        Ok(n)
    }

    /// `X.log` becomes `X.log.1` (the older ones shift), and a new `X.log` starts empty.
    fn rotate(&self, inner: &mut Inner) -> io::Result<()> {
        inner.file = None;
        rotate::shift(&self.path, self.policy().keep)?;
        self.restart_at(inner, inner.start + inner.len)
    }

    /// The current file starts anew at logical offset `start`.
    fn restart_at(&self, inner: &mut Inner, start: u64) -> io::Result<()> {
        inner.start = start;
        inner.len = 0;
        inner.mid_line = false;
        inner.mid_line_stale = false;
        inner.file = Some(self.open_current()?);
        let tmp = rotate::rotated(&self.offset_path, 0);
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(format!("{start}\n").as_bytes())?;
        fs::rename(&tmp, &self.offset_path)
    }

    /// Empties the log: rotated files removed, a new empty current file. Offsets go on.
    pub fn flush(&self) -> io::Result<()> {
        let mut inner = self.lock();
        self.load(&mut inner);
        inner.file = None;
        for n in 1..=self.policy().keep {
            remove(&rotate::rotated(&self.path, n))?;
        }
        remove(&self.path)?;
        let end = inner.start + inner.len;
        let r = self.restart_at(&mut inner, end);
        // Followers re-read where they are: the bytes they had not read are gone.
        self.state.send_modify(|_| {});
        r
    }

    /// Removes every file of the log (`delete --purge-logs`); closes it.
    pub fn purge(&self) -> io::Result<()> {
        let mut inner = self.lock();
        inner.file = None;
        for n in 1..=self.policy().keep {
            remove(&rotate::rotated(&self.path, n))?;
        }
        remove(&self.path)?;
        remove(&self.offset_path)?;
        drop(inner);
        self.close();
        Ok(())
    }

    /// No more output will come: followers end once they have read everything.
    pub fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    /// Opens the files that hold the log now, newest first, with the logical end. Taken under
    /// the lock, so no rotation happens halfway; the open files stay valid after later
    /// rotations (a rename keeps the file).
    pub fn segments(&self) -> io::Result<(Vec<Segment>, u64)> {
        let mut inner = self.lock();
        self.load(&mut inner);
        let end = inner.start + inner.len;
        let mut segs = Vec::new();
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((segs, end)),
            Err(e) => return Err(e),
        };
        segs.push(Segment {
            file,
            start: inner.start,
            len: inner.len,
        });
        let mut start = inner.start;
        for n in 1..=self.policy().keep {
            let Ok(file) = File::open(rotate::rotated(&self.path, n)) else {
                break;
            };
            let len = file.metadata()?.len();
            let Some(s) = start.checked_sub(len) else {
                break;
            };
            start = s;
            segs.push(Segment { file, start, len });
        }
        Ok((segs, end))
    }
}

fn remove(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What [`StreamLog::take_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Took {
    Bytes(usize),
    /// The pipe is empty, but writers remain.
    Empty,
    /// The pipe is empty and no writer remains.
    Eof,
}

/// Bytes waiting in a pipe.
fn pipe_bytes(pipe: &File) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// An empty pipe whose writers are all gone.
fn pipe_hung_up(pipe: &File) -> bool {
    let mut p = libc::pollfd {
        fd: pipe.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own, no wait.
    unsafe { libc::poll(&mut p, 1, 0) };
    p.revents & libc::POLLIN == 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// Up to `len` bytes from the front of `pipe`, left in it (tee(2) into a scratch pipe).
fn peek(pipe: &File, len: usize) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, which we own from here.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl and tee on pipes we hold.
    let n = unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1024 * 1024);
        libc::tee(
            pipe.as_raw_fd(),
            w.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    let mut out = vec![0; n as usize];
    File::from(r).read_exact(&mut out)?;
    Ok(out)
}

/// Reads and drops up to `len` bytes of `pipe`; how many.
fn discard(pipe: &File, len: usize) -> usize {
    use std::io::Read as _;
    let mut buf = vec![0; len.min(256 * 1024)];
    (&*pipe).read(&mut buf).unwrap_or(0)
}
