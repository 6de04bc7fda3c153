//! systemd's socket-activation protocol, for the sockets an app's instances share: in the child,
//! the held descriptors are moved to 3, 4, ... (without close-on-exec), and the program is
//! exec'ed with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`, the last being the child's own
//! pid. The pid is only known after the fork, so this step execs the program itself (the last
//! `pre_exec` step): everything it needs is built before the fork, and between fork and exec
//! it only calls `getpid`, `fcntl`, `dup2` and `execve` (async-signal-safe) and writes digits
//! into a buffer made for them. Apps without sockets never come here.

use std::{
    ffi::CString,
    io,
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::Path,
    sync::Arc,
};

use crate::model::Env;
use crate::supervisor::sockets::HeldSet;

/// Room for a pid's digits (pid_max is at most 2^22; u32 fits in 10).
const PID_DIGITS: usize = 10;

/// Everything the child needs to exec with its sockets, prepared in the parent.
pub struct Activation {
    sockets: Arc<HeldSet>,
    program: CString,
    /// Owners of the strings `argv` and `envp` point into (heap buffers: they do not move).
    _args: Vec<CString>,
    envs: Vec<Vec<u8>>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Where in `envs` the digits of `LISTEN_PID` go: (entry, offset of the first digit).
    pid_slot: (usize, usize),
}

// SAFETY: the raw pointers point into buffers owned by the same value; it is moved into the
// `pre_exec` closure and only used in the forked child.
unsafe impl Send for Activation {}
unsafe impl Sync for Activation {}

impl Activation {
    /// Prepares the exec of `program` (argv `args`, argv[0] included) with `env` plus the
    /// activation variables. `None` when a string holds a NUL (specs are checked at the edge).
    pub fn prepare(
        sockets: Arc<HeldSet>,
        program: &Path,
        args: &[String],
        env: &Env,
    ) -> Option<Activation> {
        let program = CString::new(program.as_os_str().as_bytes()).ok()?;
        let args: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .ok()?;
        let names: Vec<&str> = sockets.sockets.iter().map(|h| h.name.as_str()).collect();
        let mut envs: Vec<Vec<u8>> = env
            .iter()
            .filter(|(k, _)| !k.starts_with("LISTEN_"))
            .map(|(k, v)| format!("{k}={v}\0").into_bytes())
            .collect();
        if envs.iter().any(|e| e[..e.len() - 1].contains(&0)) {
            return None;
        }
        envs.push(format!("LISTEN_FDS={}\0", names.len()).into_bytes());
        envs.push(format!("LISTEN_FDNAMES={}\0", names.join(":")).into_bytes());
        let prefix = b"LISTEN_PID=";
        let mut pid = prefix.to_vec();
        pid.extend([0u8; PID_DIGITS + 1]);
        envs.push(pid);
        let pid_slot = (envs.len() - 1, prefix.len());
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr().cast()).collect();
        envp.push(std::ptr::null());
        Some(Activation {
            sockets,
            program,
            _args: args,
            envs,
            argv,
            envp,
            pid_slot,
        })
    }

    /// In the child, after every other `pre_exec` step: descriptors to 3.., `LISTEN_PID`, and
    /// exec. Returns only on failure (the error reaches the parent as a failed spawn).
    ///
    /// # Safety
    /// Only between fork and exec, in the child.
    pub unsafe fn exec(&mut self) -> io::Error {
        let n = self.sockets.sockets.len() as i32;
        let first = super::super::sockets::HeldSet::FIRST_FD as i32;
        // First out of the way (at or above first + n), so that moving one into place never
        // overwrites another that is still to move; dup2 to a different number clears
        // close-on-exec on the copy.
        let mut high = [0i32; crate::model::MAX_SOCKETS];
        for (i, h) in self.sockets.sockets.iter().enumerate() {
            let fd = libc::fcntl(h.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, first + n);
            if fd < 0 {
                return io::Error::last_os_error();
            }
            high[i] = fd;
        }
        for (i, fd) in high.iter().take(n as usize).enumerate() {
            if libc::dup2(*fd, first + i as i32) < 0 {
                return io::Error::last_os_error();
            }
        }
        // The pid's digits, then NUL.
        let mut pid = libc::getpid() as u32;
        let mut digits = [0u8; PID_DIGITS];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (pid % 10) as u8;
            len += 1;
            pid /= 10;
            if pid == 0 || len == PID_DIGITS {
                break;
            }
        }
        let (entry, at) = self.pid_slot;
        let buf = &mut self.envs[entry];
        for i in 0..len {
            buf[at + i] = digits[len - 1 - i];
        }
        buf[at + len] = 0;
        libc::execve(
            self.program.as_ptr(),
            self.argv.as_ptr(),
            self.envp.as_ptr(),
        );
        io::Error::last_os_error()
    }
}
