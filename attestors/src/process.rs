//! Pinning a process so that a recycled pid can never lend its identity to another process.
//!
//! A [`ProcessHandle`] holds three things taken when the connection arrives:
//! - a **pidfd** (from `SO_PEERPIDFD`, or `pidfd_open` at once on older kernels). It turns
//!   readable as soon as the process exits, before its pid can be reused;
//! - a **dirfd of `/proc/PID`**. Every read goes through it; once the process is gone, reads
//!   through it fail even if the pid number was reused;
//! - the **start time** (field 22 of `/proc/PID/stat`), compared again at the end (SPIRE's check).
//!
//! On every path (`SO_PEERPIDFD` or the `pidfd_open` fallback), `verify_alive` also demands
//! that the process's real, effective, saved and filesystem uids and gids all still equal the
//! credentials the kernel reported at `connect()`. A process that connects and then execs a
//! setuid program would otherwise be attested with the elevated ids while a child it forked
//! holds the socket and asks for the identity. (SPIRE's peertracker compares the `/proc/PID`
//! owner; we read the ids from `status`, so non-dumpable processes, whose `/proc` dir is
//! root-owned, still work.) With the `pidfd_open` fallback the same comparison also narrows
//! the window between `connect()` and `pidfd_open` in which the pid could be recycled.
//!
//! It also demands that the process still runs the **executable it ran when the daemon
//! accepted the connection** ([`ExeIdentity`]: device and inode of `/proc/PID/exe`, plus where
//! the kernel placed its code and stack, which a new exec re-randomizes). Otherwise a process
//! of the same uid could connect, hand the socket to a child and exec the legitimate binary,
//! and the child would be served that binary's identity. The remaining window: the identity is
//! taken at `accept()`, not at `connect()` (the kernel records no executable with the socket),
//! so an exec between the two goes unseen; the daemon accepts at once, so this window is the
//! accept queue's latency. Re-exec of the *same* binary keeps (device, inode); only the layout
//! fields tell it apart, and a process that disabled its own ASLR (`setarch -R`) can reproduce
//! them; selectors that depend on argv (`script:`) are weak for this reason among others.
//!
//! The handle's methods live in one submodule per concern: `pin` (taking the pidfd, dirfd and
//! start time, and the checks above), `proc_read` (the `/proc/PID` files the attestors read),
//! `paths` (the executable, root and cwd, and where the daemon finds a file the process sees)
//! and `namespaces` (whether the process shares the daemon's mount and user namespaces).

use procfs::process::Process;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

mod exe_identity;
mod namespaces;
mod paths;
mod pin;
mod proc_read;
pub use exe_identity::{ExeIdentity, current_exe_path, verify_exe_identity};

/// Credentials the kernel reported for a socket peer (SO_PEERCRED / SO_PEERPIDFD).
#[derive(Debug)]
pub struct PeerCredentials {
    /// Pid from SO_PEERCRED (`None` if the peer is in a pid namespace we cannot see).
    pub pid: Option<i32>,
    /// Effective uid at `connect()`.
    pub uid: u32,
    /// Effective gid at `connect()`.
    pub gid: u32,
    /// A pidfd for the peer: from SO_PEERPIDFD (Linux ≥ 6.5), exactly the process that
    /// connected; else possibly from `pidfd_open` by number at accept.
    pub pidfd: Option<OwnedFd>,
    /// `pidfd` came from SO_PEERPIDFD. A pidfd opened by number is checked against `pid` and
    /// the credentials at once, as one opened at pinning is.
    pub pidfd_from_kernel: bool,
    /// The executable the peer ran when the daemon accepted the connection
    /// ([`ExeIdentity::of_peer`]). `None`: taken when the handle is pinned instead (later, so
    /// an exec in between goes unseen).
    pub exe: Option<ExeIdentity>,
}

/// A process pinned for attestation.
pub struct ProcessHandle {
    pid: i32,
    pidfd: OwnedFd,
    pidfd_from_peer: bool,
    proc_dir: Process,
    starttime: u64,
    /// Effective (uid, gid) the kernel reported at `connect()`; `None` for `tessera attest PID`.
    peer_ids: Option<(u32, u32)>,
    /// The executable image it must still run; `None` for `tessera attest PID`.
    exe: Option<ExeIdentity>,
    /// Whether it shares the daemon's mount namespace, read once per attestation (several
    /// attestors ask).
    same_mnt: std::sync::OnceLock<bool>,
    /// `readlink /proc/PID/exe`, read once per attestation (two attestors ask). An exec after
    /// it is caught by the final [`Self::verify_alive`].
    exe_link: std::sync::OnceLock<Result<PathBuf, String>>,
}

impl fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessHandle")
            .field("pid", &self.pid)
            .field("pidfd_from_peer", &self.pidfd_from_peer)
            .field("starttime", &self.starttime)
            .finish_non_exhaustive()
    }
}

impl ProcessHandle {
    /// Pid as seen from the daemon's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the pidfd came from `SO_PEERPIDFD` (exact) rather than a later `pidfd_open`
    /// (which could, in a tiny window, already name a recycled pid).
    pub fn pidfd_from_peer(&self) -> bool {
        self.pidfd_from_peer
    }

    /// Start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
    pub fn starttime(&self) -> u64 {
        self.starttime
    }

    /// The effective uid the kernel reported at `connect()` (`None` for `tessera attest PID`):
    /// whom hashing is charged to.
    pub(crate) fn peer_uid(&self) -> Option<u32> {
        self.peer_ids.map(|(uid, _)| uid)
    }

    /// The executable identity this handle holds the process to (`None` for `tessera attest`).
    pub fn exe_identity(&self) -> Option<ExeIdentity> {
        self.exe
    }
}

#[cfg(test)]
mod tests;
