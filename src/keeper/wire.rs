//! What the keeper and the agent say to each other over their socket pair (`SOCK_SEQPACKET`,
//! so a message arrives whole or not at all): lines of text, and with each line that names a
//! descriptor, that descriptor (SCM_RIGHTS, in the order of the lines). Plain text, so the
//! keeper needs no serializer and its log can quote what it got.
//!
//! Agent → keeper: `HOLD app kind pid start slot` (+ fd), `RELEASE app pid slot`, `READY pid`,
//! `UPGRADE`. Keeper → agent: `KEEPER pid`, `FD app kind pid start slot` (+ fd), `EXIT app pid start code signal
//! at_ms` (`-` for a missing code or signal), `END` (the hand-over is complete).

use std::{
    fmt, io,
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use nix::{
    errno::Errno,
    sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags},
};

/// Most descriptors in one message (the kernel allows 253).
pub const MAX_FDS: usize = 64;
/// Largest message: `MAX_FDS` lines of at most ~100 bytes.
pub const MAX_MESSAGE: usize = 8192;

/// What a held descriptor is for. The tag is generic so that other kinds (held listening
/// sockets) can be added without changing the keeper: it holds and hands back any kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The read end of the main process's stdout pipe.
    Out,
    /// The read end of its stderr pipe.
    Err,
    /// An instance's bound `NOTIFY_SOCKET` (pid 0: it belongs to the instance's slot, not to
    /// one of its main processes; the tag's `slot` says whose).
    Notify,
    /// Any other tag (`[a-z0-9-]{1,16}`), kept and handed back as it is.
    Other(String),
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "out" => Kind::Out,
            "err" => Kind::Err,
            "notify" => Kind::Notify,
            s if !s.is_empty()
                && s.len() <= 16
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Kind::Other(s.to_string())
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Out => "out",
            Kind::Err => "err",
            Kind::Notify => "notify",
            Kind::Other(s) => s,
        })
    }
}

/// Whose a held descriptor is: the app, what it is, the main process it belongs to (with its
/// start time in clock ticks after boot, which tells it from a later process with the same
/// pid), and the instance slot of the app it belongs to (an app of several instances has one
/// owner per slot; a reload's replacement runs in its instance's other slot). A descriptor of
/// the slot itself (its notify socket) has pid 0. On the wire the slot comes last and may be
/// left out (0), as an agent without instances wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub app: u64,
    pub kind: Kind,
    pub pid: u32,
    pub start: u64,
    pub slot: u32,
}

/// How a process ended, as the keeper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at_ms: u64,
}

/// One line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Hold(Tag),
    Release {
        app: u64,
        pid: u32,
        slot: u32,
    },
    Ready {
        pid: u32,
    },
    Upgrade,
    Keeper {
        pid: u32,
    },
    Fd(Tag),
    Exit {
        app: u64,
        pid: u32,
        start: u64,
        ended: Ended,
    },
    End,
}

impl Line {
    /// This line comes with a descriptor.
    pub fn has_fd(&self) -> bool {
        matches!(self, Line::Hold(_) | Line::Fd(_))
    }

    pub fn parse(s: &str) -> Option<Line> {
        let mut w = s.split(' ');
        let word = w.next()?;
        let mut num = || w.next().and_then(|x| x.parse::<u64>().ok());
        let line = match word {
            "HOLD" | "FD" => {
                let app = num()?;
                let kind = Kind::parse(w.next()?)?;
                let pid = u32::try_from(w.next()?.parse::<u64>().ok()?).ok()?;
                let start = w.next()?.parse().ok()?;
                let slot = match w.next() {
                    Some(x) => x.parse().ok()?,
                    None => 0,
                };
                let tag = Tag {
                    app,
                    kind,
                    pid,
                    start,
                    slot,
                };
                if word == "HOLD" {
                    Line::Hold(tag)
                } else {
                    Line::Fd(tag)
                }
            }
            "RELEASE" => {
                let app = num()?;
                let pid = u32::try_from(num()?).ok()?;
                let slot = match w.next() {
                    Some(x) => x.parse().ok()?,
                    None => 0,
                };
                Line::Release { app, pid, slot }
            }
            "READY" => Line::Ready {
                pid: u32::try_from(num()?).ok()?,
            },
            "KEEPER" => Line::Keeper {
                pid: u32::try_from(num()?).ok()?,
            },
            "UPGRADE" => Line::Upgrade,
            "END" => Line::End,
            "EXIT" => {
                let app = num()?;
                let pid = u32::try_from(num()?).ok()?;
                let start = num()?;
                let opt = |x: Option<&str>| -> Option<Option<i32>> {
                    match x? {
                        "-" => Some(None),
                        v => v.parse().ok().map(Some),
                    }
                };
                let code = opt(w.next())?;
                let signal = opt(w.next())?;
                let at_ms = w.next()?.parse().ok()?;
                Line::Exit {
                    app,
                    pid,
                    start,
                    ended: Ended {
                        code,
                        signal,
                        at_ms,
                    },
                }
            }
            _ => return None,
        };
        w.next().is_none().then_some(line)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<i32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        match self {
            Line::Hold(t) => write!(
                f,
                "HOLD {} {} {} {} {}",
                t.app, t.kind, t.pid, t.start, t.slot
            ),
            Line::Fd(t) => write!(
                f,
                "FD {} {} {} {} {}",
                t.app, t.kind, t.pid, t.start, t.slot
            ),
            Line::Release { app, pid, slot } => write!(f, "RELEASE {app} {pid} {slot}"),
            Line::Ready { pid } => write!(f, "READY {pid}"),
            Line::Keeper { pid } => write!(f, "KEEPER {pid}"),
            Line::Upgrade => write!(f, "UPGRADE"),
            Line::End => write!(f, "END"),
            Line::Exit {
                app,
                pid,
                start,
                ended,
            } => write!(
                f,
                "EXIT {app} {pid} {start} {} {} {}",
                opt(ended.code),
                opt(ended.signal),
                ended.at_ms
            ),
        }
    }
}

/// Sends `lines` in as few messages as it takes, each line that names a descriptor with the
/// next of `fds`. Blocks while the peer's buffer is full; fails with `EPIPE` once it is gone.
pub fn send(sock: BorrowedFd<'_>, lines: &[Line], fds: &[RawFd]) -> io::Result<()> {
    let mut fds = fds.iter();
    let mut text = String::new();
    let mut batch: Vec<RawFd> = Vec::new();
    let mut count = 0;
    for line in lines {
        if line.has_fd() {
            let fd = fds
                .next()
                .ok_or_else(|| io::Error::other("a line without its descriptor"))?;
            batch.push(*fd);
        }
        text.push_str(&line.to_string());
        text.push('\n');
        count += 1;
        if count == MAX_FDS || text.len() > MAX_MESSAGE - 200 {
            send_one(sock, &text, &batch)?;
            text.clear();
            batch.clear();
            count = 0;
        }
    }
    if count > 0 {
        send_one(sock, &text, &batch)?;
    }
    Ok(())
}

fn send_one(sock: BorrowedFd<'_>, text: &str, fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(text.as_bytes())];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A received message: its lines, each with its descriptor when it names one.
pub type Message = Vec<(Line, Option<OwnedFd>)>;

/// Receives one message (blocking unless the socket is non-blocking: then `WouldBlock`).
/// `None`: the peer is gone. Lines that cannot be parsed are skipped (their descriptors are
/// closed), so a newer peer's lines never break an older one.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Message>> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, mut fds) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(got) = c {
                        // SAFETY: the kernel just installed these descriptors for us.
                        fds.extend(
                            got.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Err(io::Error::other("descriptors were cut off"));
                }
                break (msg.bytes, fds.into_iter());
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.is_empty()) {
        let parsed = Line::parse(l);
        let named = parsed.as_ref().is_some_and(Line::has_fd)
            || l.starts_with("HOLD ")
            || l.starts_with("FD ");
        let fd = if named { fds.next() } else { None };
        if let Some(line) = parsed {
            out.push((line, fd));
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written() {
        let tag = Tag {
            app: 7,
            kind: Kind::Err,
            pid: 4242,
            start: 123456,
            slot: 3,
        };
        for line in [
            Line::Hold(tag.clone()),
            Line::Fd(Tag {
                kind: Kind::Other("listen-0".into()),
                ..tag
            }),
            Line::Release {
                app: 7,
                pid: 0,
                slot: 2,
            },
            Line::Ready { pid: 9 },
            Line::Keeper { pid: 1 },
            Line::Upgrade,
            Line::End,
            Line::Exit {
                app: 3,
                pid: 10,
                start: 99,
                ended: Ended {
                    code: Some(7),
                    signal: None,
                    at_ms: 1000,
                },
            },
            Line::Exit {
                app: 3,
                pid: 10,
                start: 99,
                ended: Ended {
                    code: None,
                    signal: Some(9),
                    at_ms: 1000,
                },
            },
        ] {
            assert_eq!(Line::parse(&line.to_string()), Some(line.clone()), "{line}");
        }
        for bad in [
            "",
            "HOLD 1 out 2",
            "HOLD x out 2 3",
            "HOLD 1 OUT 2 3",
            "END x",
            "NOPE",
        ] {
            assert_eq!(Line::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn descriptors_travel_with_their_lines() {
        use std::os::fd::AsFd;
        let (a, b) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let lines: Vec<Line> = (0..70)
            .map(|i| {
                Line::Fd(Tag {
                    app: i,
                    kind: Kind::Out,
                    pid: 1,
                    start: 2,
                    slot: 0,
                })
            })
            .chain([Line::End])
            .collect();
        let fds = vec![r.as_raw_fd(); 70];
        send(a.as_fd(), &lines, &fds).unwrap();
        let mut buf = vec![0; MAX_MESSAGE];
        let mut got = Vec::new();
        while got.last().is_none_or(|(l, _)| *l != Line::End) {
            got.extend(recv(b.as_fd(), &mut buf).unwrap().unwrap());
        }
        assert_eq!(got.len(), 71);
        assert!(got[..70].iter().all(|(_, fd)| fd.is_some()));
        drop(a);
        assert!(recv(b.as_fd(), &mut buf).unwrap().is_none());
    }
}
