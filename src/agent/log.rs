//! The agent's own log: a writer that never blocks and never panics, and `agent.log` rotated
//! by size.
//!
//! A log call formats its line and hands it to a bounded queue (`try_send`): when the queue is
//! full, or when the line cannot be written (a full disk), the line is dropped and counted, and
//! the first line that can be written again is preceded by one saying how many were dropped and
//! why. One thread writes. (`tracing-appender`'s non-blocking writer does the first half; it
//! neither says what it dropped once writing works again nor rotates by size, so this small one
//! does both, with no new dependency.)
//!
//! When the agent's stderr is `$GRPM_HOME/agent.log` (an agent spawned by the CLI), the file is
//! rotated past [`MAX_BYTES`] (renamed to `agent.log.1`, the previous one replaced) and reopened
//! on SIGHUP; the new file is put on the agent's stdout and stderr too, so a panic message lands
//! in the current file. Any other stderr (a terminal, a service manager's pipe) is written as
//! is, and SIGHUP only says it has nothing to reopen.

use std::{
    fs,
    io::{self, Write},
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
};

/// `agent.log` is rotated once it holds this many bytes; one previous file is kept.
pub const MAX_BYTES: u64 = 10 << 20;
/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 1024;

enum Msg {
    Line(Vec<u8>),
    /// SIGHUP: reopen the file.
    Reopen,
}

/// Where lines go.
struct Target {
    file: fs::File,
    /// The file's path when it is the home's log (rotated, reopened); `None`: written as is.
    path: Option<PathBuf>,
    /// Put each newly opened file on fds 1 and 2 (the agent's own stderr).
    redirect_std: bool,
    max_bytes: u64,
    size: u64,
}

/// The sending half, shared by every log call.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::SyncSender<Msg>,
    /// Lines the queue had no room for.
    dropped: Arc<AtomicU64>,
    reopen_pending: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sink")
    }
}

impl Sink {
    /// Asks the writer to reopen the file (SIGHUP). Never blocks.
    pub fn reopen(&self) {
        if self.tx.try_send(Msg::Reopen).is_err() {
            self.reopen_pending.store(true, Ordering::Relaxed);
        }
    }
}

impl io::Write for Sink {
    /// Queues one formatted line; never fails, never waits (a full queue drops and counts it).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tx.try_send(Msg::Line(buf.to_vec())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

/// Starts the writer on the process's stderr; `home_log` is `$GRPM_HOME/agent.log`, rotated and
/// reopened when stderr is that file. Returns the sink for the subscriber and SIGHUP.
pub fn start_on_stderr(home_log: PathBuf) -> io::Result<Sink> {
    // SAFETY: fd 2 is open for the life of the process; the duplicate is ours to own.
    let dup = unsafe { libc::dup(2) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nothing else owns.
    let file = unsafe { fs::File::from_raw_fd(dup) };
    let same = match (file.metadata(), fs::metadata(&home_log)) {
        (Ok(a), Ok(b)) => a.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    let size = file.metadata().map_or(0, |m| m.len());
    start(Target {
        file,
        path: same.then_some(home_log),
        redirect_std: true,
        max_bytes: MAX_BYTES,
        size,
    })
}

fn start(target: Target) -> io::Result<Sink> {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let sink = Sink {
        tx,
        dropped: Arc::default(),
        reopen_pending: Arc::default(),
    };
    let (dropped, reopen) = (sink.dropped.clone(), sink.reopen_pending.clone());
    std::thread::Builder::new()
        .name("grpm-agentlog".into())
        .spawn(move || Writer::new(target, dropped, reopen).run(rx))?;
    Ok(sink)
}

struct Writer {
    target: Target,
    queue_dropped: Arc<AtomicU64>,
    reopen_pending: Arc<AtomicBool>,
    /// Lines that could not be written, and the last error.
    failed: u64,
    last_error: Option<io::Error>,
}

impl Writer {
    fn new(target: Target, queue_dropped: Arc<AtomicU64>, reopen: Arc<AtomicBool>) -> Writer {
        Writer {
            target,
            queue_dropped,
            reopen_pending: reopen,
            failed: 0,
            last_error: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            if self.reopen_pending.swap(false, Ordering::Relaxed) {
                self.reopen("SIGHUP");
            }
            match msg {
                Msg::Line(line) => self.line(&line),
                Msg::Reopen => self.reopen("SIGHUP"),
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let behind = self.queue_dropped.swap(0, Ordering::Relaxed);
        self.failed += behind;
        if self.failed > 0 {
            let why = match &self.last_error {
                Some(e) => format!("the log could not be written: {e}"),
                None => "the log writer was behind".to_string(),
            };
            let notice = format!(
                "grpm: {} agent log lines were dropped ({why}); logging again\n",
                self.failed
            );
            if self.write(notice.as_bytes()).is_err() {
                self.failed += 1;
                return;
            }
            self.failed = 0;
            self.last_error = None;
        }
        if let Err(e) = self.write(line) {
            self.failed += 1;
            self.last_error = Some(e);
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.target.file.write_all(bytes) {
            // A partial line may be on disk; the size is read back on the next rotation check.
            self.target.size = self.target.file.metadata().map_or(0, |m| m.len());
            return Err(e);
        }
        self.target.size += bytes.len() as u64;
        if self.target.path.is_some() && self.target.size >= self.target.max_bytes {
            self.rotate();
        }
        Ok(())
    }

    /// Renames the full file to `agent.log.1` and continues in a new one.
    fn rotate(&mut self) {
        let Some(path) = self.target.path.clone() else {
            return;
        };
        let mut old = path.clone().into_os_string();
        old.push(".1");
        if let Err(e) = fs::rename(&path, &old) {
            self.last_error = Some(e);
            return;
        }
        self.reopen("rotation");
    }

    /// Opens the home's log afresh (it may have been moved away), and makes it the agent's
    /// stderr. Says what it did in the new file.
    fn reopen(&mut self, why: &str) {
        let Some(path) = self.target.path.clone() else {
            self.line(
                format!(
                    "grpm: {why}: ignored (the agent's log is not a file under GRPM_HOME, so \
                     there is nothing to reopen)\n"
                )
                .as_bytes(),
            );
            return;
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path);
        match file {
            Ok(f) => {
                if self.target.redirect_std {
                    // SAFETY: dup2 onto the standard descriptors, which stay open.
                    unsafe {
                        libc::dup2(f.as_raw_fd(), 1);
                        libc::dup2(f.as_raw_fd(), 2);
                    }
                }
                self.target.size = f.metadata().map_or(0, |m| m.len());
                self.target.file = f;
                let _ =
                    self.write(format!("grpm: {why}: reopened {}\n", path.display()).as_bytes());
            }
            Err(e) => self.last_error = Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn open(path: &std::path::Path) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    #[test]
    fn rotates_by_size_and_reopens_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut sink = start(Target {
            file: open(&path),
            path: Some(path.clone()),
            redirect_std: false,
            max_bytes: 1000,
            size: 0,
        })
        .unwrap();
        for i in 0..30 {
            sink.write_all(format!("line {i:02} {}\n", "x".repeat(90)).as_bytes())
                .unwrap();
        }
        let old = dir.path().join("agent.log.1");
        wait("line 29", || {
            fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("line 29")
        });
        let (now, before) = (
            fs::read_to_string(&path).unwrap(),
            fs::read_to_string(&old).unwrap(),
        );
        assert!(now.len() < 1000 + 200 && before.len() < 1000 + 200);
        assert!(now.starts_with("grpm: rotation: reopened"), "{now}");
        // Moved away by hand, then SIGHUP: a new file.
        fs::rename(&path, dir.path().join("moved")).unwrap();
        sink.reopen();
        sink.write_all(b"after\n").unwrap();
        wait("the reopened file", || {
            fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("after")
        });
    }

    #[test]
    fn a_log_that_cannot_be_written_drops_lines_and_says_so_later() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let Ok(full) = fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("skipped: no /dev/full here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut sink = start(Target {
            file: full,
            path: Some(path.clone()),
            redirect_std: false,
            max_bytes: 1 << 20,
            size: 0,
        })
        .unwrap();
        // Never blocks, never fails, even far past the queue.
        for i in 0..5000 {
            sink.write_all(format!("lost {i}\n").as_bytes()).unwrap();
        }
        // Space returns: SIGHUP reopens the (now writable) file.
        // The queue may still be full: a reopen or a line that finds no room is not lost
        // for good (the reopen waits for the next line), so send until one arrives.
        sink.reopen();
        wait("the notice and the line", || {
            sink.write_all(b"back\n").unwrap();
            fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("back")
        });
        // Every line is either written (queued before the reopen) or counted in the notice.
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("agent log lines were dropped ("), "{text}");
        let n: u64 = text
            .lines()
            .find(|l| l.contains("agent log lines were dropped"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {text:?}"));
        let written = text.lines().filter(|l| l.starts_with("lost")).count() as u64;
        assert!(n + written >= 5000, "{text}"); // (a retried "back" may be counted too)
    }
}
