//! Whether anyone still reads our stdout. A stream that follows (`logs -f`, `events`) writes
//! only when something happens, so a closed pipe (`grpm events | head -2`) would otherwise go
//! unnoticed until the next write, maybe never: a thread waits in `poll(2)` for the pipe's
//! error or hang-up, and the stream ends at once.

use std::{future::Future, os::fd::AsFd};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::stat::{fstat, SFlag},
};

use super::failure::Failure;

/// Runs `work` until it ends or stdout's reader goes away (then [`Failure::Closed`]: exit 0).
pub async fn until_gone(work: impl Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    tokio::select! {
        r = work => r,
        () = gone() => Err(Failure::Closed),
    }
}

/// Resolves once stdout is a pipe or socket with no reader left; never for a terminal or a
/// file, which cannot lose their reader.
pub async fn gone() {
    if !stdout_can_hang_up() {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("stdout-reader".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            // No events asked for: poll returns only for an error, a hang-up or a bad fd,
            // which it always reports.
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            loop {
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) if fds[0].revents().is_some_and(|r| !r.is_empty()) => {
                        let _ = tx.send(());
                        return;
                    }
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => return,
                }
            }
        });
    // Without the thread (or if it gave up), the next write still notices.
    if spawned.is_err() || rx.await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn stdout_can_hang_up() -> bool {
    fstat(std::io::stdout().as_fd()).is_ok_and(|st| {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK
    })
}
