//! Process file descriptors: a race-free handle on a process (pid reuse cannot fool it) that
//! becomes readable when the process exits, for children and non-children alike.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use tokio::io::{unix::AsyncFd, Interest};

pub struct PidFd(AsyncFd<OwnedFd>);

impl PidFd {
    /// Opens a pidfd for `pid`. Callers check the process's start time afterwards to be sure the
    /// pid still named the process they meant.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd; nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the fd and neither replaces nor closes it while registered.
        let registered = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE)? };
        Ok(PidFd(registered))
    }

    /// Sends `sig`. An exited (even unreaped) process yields `ESRCH`, which is not an error here.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.get_ref().as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Resolves when the process has exited (a zombie counts as exited).
    pub async fn exited(&self) {
        // Readability is the kernel's exit notification; any error also means "no longer
        // watchable", which the caller confirms with a fresh /proc scan.
        let _ = self.0.readable().await;
    }
}
