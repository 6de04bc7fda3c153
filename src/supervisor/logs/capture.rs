//! Reading an app's stdout and stderr pipes. Without timestamps (the default), the bytes are
//! moved from the pipe to the log file by splice(2), never held in the agent's memory, so a
//! `kill -9` of the agent at any instant loses none of them (see `StreamLog::take_from`).
//! With `--log-time`, lines are read, prefixed and written: a kill between the read and the
//! write loses that batch. One task per pipe on the async runtime (no thread
//! per app): it waits until the pipe is readable, then a log writer thread reads everything
//! there is (up to 256 KiB) and writes it; the pipe is watched again only when that batch is
//! on disk. That is the backpressure: while the disk is slow, the pipe fills and the
//! app blocks on its next write; nothing is dropped, and memory stays at one batch buffer per
//! pipe while it is busy, none while it is quiet.
//! A pipe that is found full is enlarged to 1 MiB, so a fast writer rarely waits. An app that
//! writes continuously in small pieces (a `printf` loop, `head`'s 8 KiB writes) would cost a
//! wakeup, a hand-off and a write per piece: after a small batch the task lingers a
//! millisecond before reading again, so that pieces are written together.

use std::{
    fs::File,
    io::{self, Read as _},
    os::fd::{AsRawFd, OwnedFd},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use tokio::{net::unix::pipe, sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::writer::{StreamLog, Took};
use crate::model::now_unix_ms;

/// Most bytes read before they are written.
const BATCH: usize = 256 * 1024;
/// Most bytes spliced from a pipe into its log at a time (a full enlarged pipe).
const MOVE: usize = 1024 * 1024;
/// A batch this big means a fast writer: its buffer is kept (and the pipe enlarged).
const SMALL: usize = 64 * 1024;
/// The buffer a batch starts with; it grows to [`BATCH`] when a read fills it.
const FIRST: usize = 16 * 1024;
/// Pipe size asked for when a pipe is found full.
const BIG_PIPE: libc::c_int = 1024 * 1024;
/// A partial line is written as it is after the app has been quiet this long.
const HOLD_TIMEOUT: Duration = Duration::from_millis(200);
/// How long to let output accumulate when it comes in small pieces back to back.
const LINGER: Duration = Duration::from_millis(1);
/// A batch smaller than this is followed by a linger.
const LINGER_BELOW: usize = BATCH / 4;

type Job = Box<dyn FnOnce() + Send>;

/// The threads that write log files: a few, shared by every app, so that 1,000 apps do not
/// mean 2,000 threads and file I/O never runs on an async worker.
pub struct WriterPool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl WriterPool {
    pub fn start(threads: usize) -> io::Result<WriterPool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("grpm-logs-{i}"))
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = job else { return };
                    job();
                })?;
        }
        Ok(WriterPool {
            jobs: Mutex::new(tx),
        })
    }

    /// Runs `f` on a writer thread; `None` if the pool is gone.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .ok()?;
        rx.await.ok()
    }
}

/// The reading tasks of one running instance of an app.
pub struct Capture {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Capture {
    /// Starts reading `fd` (a pipe's read end) into `log`, for each given pair. Must run inside
    /// the runtime.
    pub fn start(pipes: Vec<(OwnedFd, Arc<StreamLog>)>, pool: Arc<WriterPool>) -> Capture {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for (fd, log) in pipes {
            match pipe::Receiver::from_owned_fd(fd) {
                Ok(rx) => tasks.push(tokio::spawn(pump(rx, log, pool.clone(), stop.clone()))),
                Err(e) => {
                    tracing::error!(path = %log.path().display(), error = %e, "cannot read an app's output pipe")
                }
            }
        }
        Capture { tasks, stop }
    }

    /// Waits until every byte the instance wrote is in its log files: the pipes end once the
    /// whole tree is gone. After `grace`, whatever still holds a pipe open is not waited for:
    /// what is in the pipe now is written and reading stops. Returns true in that case: a
    /// process outside the tree holds the app's output (see `process::escaped`).
    pub async fn finish(mut self, grace: Duration) -> bool {
        let all = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "an app's output pipe is still open after its tree ended; no longer reading it"
            );
            self.stop.cancel();
            for t in self.tasks {
                let _ = t.await;
            }
            return true;
        }
        false
    }
}

enum Read {
    Data,
    Eof,
    Empty,
}

/// Reads what the pipe holds now into `buf` (kept initialized: its length is its capacity),
/// up to [`BATCH`]; returns how many bytes. Stops at a short read: the pipe is empty then,
/// and chasing a writer that adds to it piece by piece costs more than it gains.
fn fill(pipe: &File, buf: &mut Vec<u8>) -> (usize, io::Result<Read>) {
    if buf.is_empty() {
        *buf = vec![0; FIRST];
    }
    let mut n = 0;
    loop {
        if n == buf.len() {
            if n >= BATCH {
                return (n, Ok(Read::Data));
            }
            // A fast writer: a bigger buffer, kept while it stays fast.
            buf.resize(BATCH, 0);
        }
        match (&*pipe).read(&mut buf[n..]) {
            Ok(0) => return (n, Ok(Read::Eof)),
            Ok(k) => {
                n += k;
                if n < buf.len() {
                    return (n, Ok(Read::Data));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return (n, Ok(if n > 0 { Read::Data } else { Read::Empty }))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Err(e)),
        }
    }
}

/// Reads one pipe into its log until the pipe ends (or `stop`). The task only waits for the
/// pipe to be readable; reading and writing happen together on a writer thread (the bytes are
/// copied out of the pipe and into the file by the same core, while they are in its cache),
/// with the pipe out of the reactor meanwhile: a pipe wakes its epoll waiters at every write
/// of the app, and we would be woken for nothing thousands of times a second.
async fn pump(
    rx: pipe::Receiver,
    log: Arc<StreamLog>,
    pool: Arc<WriterPool>,
    stop: CancellationToken,
) {
    let mut rx = rx;
    let mut buf: Vec<u8> = Vec::new();
    let mut pending = false;
    let mut grown = false;
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                // A stop wins over more output: a process outside the tree may keep writing.
                biased;
                () = stop.cancelled() => stopping = true,
                r = rx.readable() => {
                    if let Err(e) = r {
                        tracing::error!(path = %log.path().display(), error = %e, "output pipe failed");
                        break;
                    }
                }
                () = tokio::time::sleep(HOLD_TIMEOUT), if pending => {
                    let l = log.clone();
                    pool.run(move || l.release(false)).await;
                    pending = false;
                    continue;
                }
            }
        }
        let fd = match rx.into_nonblocking_fd() {
            Ok(fd) => File::from(fd),
            Err(e) => {
                tracing::error!(path = %log.path().display(), error = %e, "cannot take an app's output pipe out of the reactor");
                break;
            }
        };
        let (l, b, now) = (log.clone(), std::mem::take(&mut buf), now_unix_ms());
        let Some((fd, mut b, n, read, held)) = pool
            .run(move || {
                let mut b = b;
                if l.splices() {
                    // Straight from the pipe to the file: no byte is ever only in our memory.
                    let (n, read) = match l.take_from(&fd, MOVE) {
                        Ok(Took::Bytes(n)) => (n, Ok(Read::Data)),
                        Ok(Took::Empty) => (0, Ok(Read::Empty)),
                        Ok(Took::Eof) => (0, Ok(Read::Eof)),
                        Err(e) => (0, Err(e)),
                    };
                    return (fd, b, n, read, None);
                }
                let (n, read) = fill(&fd, &mut b);
                let held = (n > 0).then(|| l.feed(&b[..n], now));
                (fd, b, n, read, held)
            })
            .await
        else {
            // The writer threads are gone: the agent is exiting.
            return;
        };
        if let Some(h) = held {
            pending = h;
        }
        if !grown && n >= SMALL {
            grown = true;
            // SAFETY: fcntl on a pipe descriptor we own; failure (limits) is harmless.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, BIG_PIPE) };
        }
        // A fast writer keeps its buffer; any other gives it back at once, so that a thousand
        // apps that print now and then hold no buffers between their lines.
        if n < SMALL {
            b = Vec::new();
        }
        buf = b;
        match read {
            Ok(Read::Eof) => break,
            Ok(_) if stopping => break,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(path = %log.path().display(), error = %e, "cannot read an app's output");
                break;
            }
        }
        if n > 0 && n < LINGER_BELOW {
            tokio::time::sleep(LINGER).await;
        }
        rx = match pipe::Receiver::from_owned_fd_unchecked(fd.into()) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::error!(path = %log.path().display(), error = %e, "cannot watch an app's output pipe");
                break;
            }
        };
    }
    let l = log.clone();
    pool.run(move || l.release(true)).await;
}
