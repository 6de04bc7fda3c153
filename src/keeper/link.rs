//! The agent's side of the socket pair with its keeper: what the keeper handed over at start,
//! and from then on, registering and releasing held descriptors (queued to a sender thread, so
//! a spawn never waits for the keeper) and receiving the exit statuses of adopted apps the
//! keeper reaps (on a receiver thread, passed to a callback).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use super::wire::{self, Ended, Kind, Line, Tag};

/// What the keeper handed the agent when it started it.
#[derive(Debug, Default)]
pub struct Handover {
    pub keeper_pid: u32,
    /// Every descriptor the keeper holds, with whose it is.
    pub held: Vec<(Tag, OwnedFd)>,
    /// Main processes of apps that ended while no agent watched them.
    pub exits: Vec<Exited>,
}

/// An app's main process that the keeper reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    pub app: u64,
    pub pid: u32,
    pub start: u64,
    pub ended: Ended,
}

/// The socket pair, before the link's threads start.
pub struct Pending {
    sock: OwnedFd,
    keeper_pid: u32,
}

/// How long a starting agent waits for the keeper's hand-over.
const HANDOVER_DEADLINE: Duration = Duration::from_secs(10);

/// When this agent runs under a keeper (its socket pair end is named in the environment):
/// takes the descriptor (the variable is removed, so apps never see it) and reads the
/// hand-over. Blocking; call it before the runtime starts.
pub fn from_env() -> Option<Result<(Pending, Handover), String>> {
    let raw = std::env::var(super::FD_ENV).ok()?;
    // SAFETY: called before any other thread reads the environment.
    unsafe { std::env::remove_var(super::FD_ENV) };
    Some(take(&raw).map_err(|e| format!("cannot take the hand-over from the keeper: {e}")))
}

fn take(raw: &str) -> io::Result<(Pending, Handover)> {
    let fd: RawFd = raw
        .parse()
        .map_err(|_| io::Error::other(format!("{} is not a descriptor", super::FD_ENV)))?;
    // SAFETY: the keeper left this descriptor open for us and named it once; we own it now.
    // Making it close-on-exec keeps it from the apps.
    let sock = unsafe {
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    set_timeout(sock.as_fd(), Some(HANDOVER_DEADLINE))?;
    let mut buf = vec![0; wire::MAX_MESSAGE];
    let mut h = Handover::default();
    'outer: loop {
        let Some(msg) = wire::recv(sock.as_fd(), &mut buf)? else {
            return Err(io::Error::other("the keeper closed the socket"));
        };
        for (line, fd) in msg {
            match (line, fd) {
                (Line::Keeper { pid }, _) => h.keeper_pid = pid,
                (Line::Fd(tag), Some(fd)) => h.held.push((tag, fd)),
                (
                    Line::Exit {
                        app,
                        pid,
                        start,
                        ended,
                    },
                    _,
                ) => h.exits.push(Exited {
                    app,
                    pid,
                    start,
                    ended,
                }),
                (Line::End, _) => break 'outer,
                _ => {}
            }
        }
    }
    set_timeout(sock.as_fd(), None)?;
    Ok((
        Pending {
            sock,
            keeper_pid: h.keeper_pid,
        },
        h,
    ))
}

fn set_timeout(sock: BorrowedFd<'_>, t: Option<Duration>) -> io::Result<()> {
    let t = t.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt with a timeval we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum Out {
    Line(Line, Option<OwnedFd>),
    /// Answered once everything queued before it is sent.
    Flush(mpsc::SyncSender<io::Result<()>>),
}

/// The running link.
pub struct Link {
    tx: mpsc::Sender<Out>,
    keeper_pid: u32,
    alive: Arc<AtomicBool>,
}

impl Pending {
    /// Starts the sender and receiver threads; `on_exit` gets every exit status the keeper
    /// passes on (apps it reaped while this agent runs).
    pub fn start(self, on_exit: Box<dyn Fn(Exited) + Send>) -> io::Result<Link> {
        let alive = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel::<Out>();
        let reader = self.sock.try_clone()?;
        let sock = self.sock;
        let a = alive.clone();
        std::thread::Builder::new()
            .name("grpm-keeper-tx".into())
            .spawn(move || {
                for out in rx {
                    match out {
                        Out::Line(line, fd) => {
                            let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
                            if wire::send(sock.as_fd(), &[line], &fds).is_err()
                                && a.swap(false, Ordering::SeqCst)
                            {
                                tracing::warn!("the keeper is gone: apps will be adopted without their pipes by a later agent");
                            }
                        }
                        Out::Flush(done) => {
                            let r = if a.load(Ordering::SeqCst) {
                                Ok(())
                            } else {
                                Err(io::Error::other("the keeper is gone"))
                            };
                            let _ = done.send(r);
                        }
                    }
                }
            })?;
        let a = alive.clone();
        std::thread::Builder::new()
            .name("grpm-keeper-rx".into())
            .spawn(move || {
                let mut buf = vec![0; wire::MAX_MESSAGE];
                while let Ok(Some(msg)) = wire::recv(reader.as_fd(), &mut buf) {
                    for (line, _) in msg {
                        if let Line::Exit {
                            app,
                            pid,
                            start,
                            ended,
                        } = line
                        {
                            on_exit(Exited {
                                app,
                                pid,
                                start,
                                ended,
                            });
                        }
                    }
                }
                if a.swap(false, Ordering::SeqCst) {
                    tracing::warn!("the keeper is gone: apps will be adopted without their pipes by a later agent");
                }
            })?;
        Ok(Link {
            tx,
            keeper_pid: self.keeper_pid,
            alive,
        })
    }
}

impl Link {
    pub fn keeper_pid(&self) -> u32 {
        self.keeper_pid
    }

    /// The keeper still answers.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Asks the keeper to hold a duplicate of `fd` for instance slot `slot` of `app`. Never
    /// waits for the keeper.
    pub fn hold(&self, app: u64, slot: u32, kind: Kind, pid: u32, start: u64, fd: BorrowedFd<'_>) {
        if !self.alive() {
            return;
        }
        match fd.try_clone_to_owned() {
            Ok(dup) => {
                let tag = Tag {
                    app,
                    kind,
                    pid,
                    start,
                    slot,
                };
                let _ = self.tx.send(Out::Line(Line::Hold(tag), Some(dup)));
            }
            Err(e) => {
                tracing::warn!(app, error = %e, "cannot duplicate a descriptor for the keeper")
            }
        }
    }

    /// The keeper may close what it holds of instance slot `slot` of `app` for main process
    /// `pid` (0: the slot's own, its notify socket), and forget that process's exit.
    pub fn release(&self, app: u64, slot: u32, pid: u32) {
        if self.alive() {
            let _ = self
                .tx
                .send(Out::Line(Line::Release { app, pid, slot }, None));
        }
    }

    /// The agent serves: from now on, its death is a crash to recover from.
    pub fn ready(&self) {
        let _ = self.tx.send(Out::Line(
            Line::Ready {
                pid: std::process::id(),
            },
            None,
        ));
    }

    /// Tells the keeper that this agent is exiting for an upgrade; returns once that is sent
    /// (an error when the keeper is gone).
    pub fn upgrade(&self) -> io::Result<()> {
        let _ = self.tx.send(Out::Line(Line::Upgrade, None));
        self.flush()
    }

    /// Waits until everything queued so far is sent.
    pub fn flush(&self) -> io::Result<()> {
        let (done, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Out::Flush(done))
            .map_err(|_| io::Error::other("the keeper link is closed"))?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("the keeper does not take what is sent"))?
    }
}
