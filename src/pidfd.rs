//! Process file descriptors (`pidfd`, Linux >= 5.3): a handle on one process that a recycled
//! pid can never redirect.
//!
//! A signal sent through a pidfd reaches the process the descriptor was opened for, or nobody
//! (`ESRCH` once it has been reaped), never a later process that happens to get the same pid.
//! The guard holds one for each neard it spawns (to kill it at its deadline and to learn when it
//! exits: the descriptor becomes readable then), and kuutamod holds one for the same neard, so
//! that its SIGKILL does not depend on the guard running at that moment (see [`crate::guard`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;

/// A pidfd for one process.
#[derive(Debug)]
pub struct Pidfd {
    pid: u32,
    fd: OwnedFd,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. The caller must know that `pid` still names the process it
    /// means: its parent has not reaped it (a zombie is fine; the descriptor then only reports
    /// that it has exited).
    pub fn open(pid: u32) -> std::io::Result<Pidfd> {
        let raw = libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::other(format!("pid {pid} is out of range")))?;
        #[allow(unsafe_code)]
        // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor (with
        // O_CLOEXEC) or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = i32::try_from(fd)
            .map_err(|_| std::io::Error::other(format!("pidfd_open returned {fd}")))?;
        #[allow(unsafe_code)]
        // SAFETY: the kernel just returned this descriptor to us, so we own it exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Pidfd { pid, fd })
    }

    /// The pid it was opened for (a label for logs; signals go through the descriptor).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`. `ESRCH` (as an error) means the process has exited and been reaped.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: pidfd_send_signal reads only its arguments; a null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// SIGKILL: `Ok` when it was delivered or the process is gone already (either way it runs
    /// no more code of its own).
    pub fn kill(&self) -> std::io::Result<()> {
        match self.signal(Signal::SIGKILL) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
