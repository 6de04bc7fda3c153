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
    os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt},
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
        let r = lines.release(eof, &mut |b| self.write_out(&mut inner, b));
        inner.lines = lines;
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
            let n = match rotate::cut(inner.len, self.policy().max_size, inner.mid_line, data) {
                Cut::All => data.len(),
                Cut::At(n) => n,
            };
            if n > 0 {
                let file = match &mut inner.file {
                    Some(f) => f,
                    None => inner.file.insert(self.open_current()?),
                };
                file.write_all(&data[..n])?;
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
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
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
