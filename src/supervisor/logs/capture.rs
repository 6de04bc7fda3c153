//! Reading an app's stdout and stderr pipes. One task per pipe on the async runtime (no thread
//! per app): it waits until the pipe is readable, reads everything there is (up to 1 MiB) in a
//! few large reads, and hands the batch to a log writer thread; it reads again only when that
//! batch is on disk. That is the backpressure: while the disk is slow, the pipe fills and the
//! app blocks on its next write; nothing is dropped, and memory stays at one batch per pipe.
//! A pipe that is found full is enlarged to 1 MiB, so a fast writer rarely waits. An app that
//! writes continuously in small pieces (a `printf` loop, `head`'s 8 KiB writes) would cost a
//! wakeup, a hand-off and a write per piece; when such a piece comes right after the previous
//! batch, the task lingers a millisecond first, so that pieces are written together.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use tokio::{net::unix::pipe, sync::oneshot, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::writer::StreamLog;
use crate::model::now_unix_ms;

/// Most bytes read before they are written.
const BATCH: usize = 1024 * 1024;
/// What a quiet pipe's buffer shrinks back to.
const SMALL: usize = 64 * 1024;
/// Pipe size asked for when a pipe is found full.
const BIG_PIPE: libc::c_int = 1024 * 1024;
/// A partial line is written as it is after the app has been quiet this long.
const HOLD_TIMEOUT: Duration = Duration::from_millis(200);
/// How long to let output accumulate when it comes in small pieces back to back.
const LINGER: Duration = Duration::from_millis(1);
/// Batches smaller than this, less than `2 * LINGER` apart, mean "small pieces back to back".
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
    /// what is in the pipe now is written and reading stops.
    pub async fn finish(mut self, grace: Duration) {
        let all = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "an app's output pipe is still open after its tree ended; no longer reading it"
            );
            self.stop.cancel();
            for t in self.tasks {
                let _ = t.await;
            }
        }
    }
}

enum Read {
    Data,
    Eof,
    Empty,
}

/// Reads what the pipe holds now into `buf`, up to [`BATCH`]. Returns `Data` also when a
/// short read emptied the pipe without meeting `WouldBlock`.
fn fill(rx: &pipe::Receiver, buf: &mut Vec<u8>) -> io::Result<Read> {
    let before = buf.len();
    while buf.len() < BATCH {
        if buf.capacity() == buf.len() {
            buf.reserve(if buf.capacity() < SMALL {
                SMALL
            } else {
                BATCH - buf.len()
            });
        }
        let asked = buf.capacity() - buf.len();
        match rx.try_read_buf(buf) {
            Ok(0) => return Ok(Read::Eof),
            // The pipe is empty now: do not chase a writer that is adding to it piece by
            // piece (the readiness left set brings us back).
            Ok(n) if n < asked => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(if buf.len() > before {
        Read::Data
    } else {
        Read::Empty
    })
}

async fn pump(
    rx: pipe::Receiver,
    log: Arc<StreamLog>,
    pool: Arc<WriterPool>,
    stop: CancellationToken,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut pending = false;
    let mut grown = false;
    let mut stopping = false;
    let mut last: Option<(Instant, bool)> = None;
    loop {
        if !stopping {
            tokio::select! {
                r = rx.readable() => {
                    if let Err(e) = r {
                        tracing::error!(path = %log.path().display(), error = %e, "output pipe failed");
                        break;
                    }
                }
                () = stop.cancelled() => stopping = true,
                () = tokio::time::sleep(HOLD_TIMEOUT), if pending => {
                    let l = log.clone();
                    pool.run(move || l.release(false)).await;
                    pending = false;
                    continue;
                }
            }
        }
        if let Some((at, true)) = last {
            if !stopping && at.elapsed() < 2 * LINGER {
                tokio::time::sleep(LINGER).await;
            }
        }
        let read = fill(&rx, &mut buf);
        if !buf.is_empty() {
            if !grown && buf.len() >= SMALL {
                grown = true;
                // SAFETY: fcntl on a pipe descriptor we own; failure (limits) is harmless.
                unsafe { libc::fcntl(rx.as_raw_fd(), libc::F_SETPIPE_SZ, BIG_PIPE) };
            }
            let (l, batch, now) = (log.clone(), std::mem::take(&mut buf), now_unix_ms());
            let Some((held, mut batch)) = pool.run(move || (l.feed(&batch, now), batch)).await
            else {
                break;
            };
            pending = held;
            last = Some((Instant::now(), batch.len() < LINGER_BELOW));
            let big = batch.len() >= SMALL;
            batch.clear();
            if !big && batch.capacity() > SMALL {
                batch = Vec::new();
            }
            buf = batch;
        }
        match read {
            Ok(Read::Eof) => break,
            Ok(_) if stopping => break,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(path = %log.path().display(), error = %e, "cannot read an app's output");
                break;
            }
        }
    }
    let l = log.clone();
    pool.run(move || l.release(true)).await;
}
