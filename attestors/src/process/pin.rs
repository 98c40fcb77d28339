//! Pinning a socket peer or a pid into a [`ProcessHandle`], and checking that the pinned
//! process is still the one that runs (see the parent module's docs for what is compared).

use super::exe_identity::{self, ExeIdentity, verify_exe_identity};
use super::namespaces::Namespace;
use super::proc_read::read_proc;
use super::{PeerCredentials, ProcessHandle};
use crate::AttestError;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use procfs::ProcError;
use procfs::process::Process;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

impl ProcessHandle {
    /// Pin a socket peer: keeps its pidfd (or opens one at once) and records its start time.
    pub fn from_peer(peer: PeerCredentials) -> Result<Self, AttestError> {
        let pid = peer.pid.ok_or(AttestError::NoPid)?;
        let (pidfd, from_kernel) = match peer.pidfd {
            Some(fd) => (fd, peer.pidfd_from_kernel),
            None => (open_pidfd(pid)?, false),
        };
        // Without the executable identity from accept, /proc/PID is read now to take it: only
        // once the pidfd is known to name that pid (a /proc of another pid namespace than the
        // daemon's would show another process under the number).
        let exact = from_kernel && peer.exe.is_some();
        let mut handle = Self::pin(pid, pidfd, from_kernel, !exact, Some((peer.uid, peer.gid)))?;
        handle.exe = match peer.exe {
            Some(exe) => Some(exe),
            // Fail closed: a peer whose executable cannot be identified gets no identity.
            None => Some(ExeIdentity::read(&handle.proc_path()).ok_or(AttestError::ProcessGone { pid })?),
        };
        if exact {
            // Not verified in full here: every use of a peer's handle ends in `verify_alive`
            // (an attestation after all its reads, a session's per-call checks), and a full
            // check now as well cost a tenth of a full attestation. Only whether it still lives, so a
            // dead peer's recycled pid is not read at all.
            if !exe_identity::pidfd_alive(&handle.pidfd) {
                return Err(AttestError::ProcessGone { pid });
            }
        } else {
            // A pidfd opened by number, or an identity taken only now: checked at once (a
            // recycled pid fails the credentials soonest).
            handle.verify_alive()?;
        }
        Ok(handle)
    }

    /// Pin a process by pid (for `tessera attest PID`).
    pub fn open(pid: i32) -> Result<Self, AttestError> {
        let pidfd = open_pidfd(pid)?;
        let handle = Self::pin(pid, pidfd, false, true, None)?;
        // Fail early for a process that is already gone, rather than attesting a zombie.
        handle.verify_alive()?;
        Ok(handle)
    }

    /// `check_pid`: confirm that the pidfd names `pid` as /proc shows it. SO_PEERPIDFD and
    /// SO_PEERCRED's pid name the same kernel pid (the socket's peer), and the executable
    /// identity taken at accept already confirmed /proc's view of it.
    fn pin(
        pid: i32,
        pidfd: OwnedFd,
        pidfd_from_peer: bool,
        check_pid: bool,
        peer_ids: Option<(u32, u32)>,
    ) -> Result<Self, AttestError> {
        if check_pid {
            match pidfd_pid(&pidfd) {
                Some(-1) => return Err(AttestError::ProcessGone { pid }),
                Some(p) if p != pid => {
                    return Err(AttestError::PidfdMismatch { pid, pidfd_pid: p });
                }
                _ => {}
            }
        }
        let proc_dir = Process::new(pid).map_err(|e| proc_error(pid, e))?;
        let mut handle = Self {
            pid,
            pidfd,
            pidfd_from_peer,
            proc_dir,
            starttime: 0,
            peer_ids,
            exe: None,
            same_mnt: Default::default(),
            exe_link: Default::default(),
        };
        let stat = handle.read_raw("stat").map_err(|_| AttestError::ProcessGone { pid })?;
        handle.starttime = exe_identity::stat_fields(&stat).ok_or(AttestError::ProcessGone { pid })?.0;
        Ok(handle)
    }

    /// Cheap check (two small /proc reads and a poll) that the pinned process still runs the
    /// executable it ran at accept: for polling open streams between full attestations.
    pub fn verify_exe(&self) -> Result<(), AttestError> {
        match self.exe {
            Some(expected) => verify_exe_identity(self.pid, &self.pidfd, expected),
            None => Ok(()),
        }
    }

    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}", self.pid))
    }

    /// Err unless the very process that was pinned is still alive.
    pub fn verify_alive(&self) -> Result<(), AttestError> {
        let gone = AttestError::ProcessGone { pid: self.pid };
        // A pidfd becomes readable when the process exits (already as a zombie), which is
        // before its pid can be reaped and reused.
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => {}
            Ok(_) => return Err(gone),
            Err(e) => {
                return Err(AttestError::Proc { pid: self.pid, source: e.into() });
            }
        }
        // Through the held dirfd: fails for a dead process even if the pid was reused. One
        // read gives the start time and the layout half of the executable identity.
        let stat = self.read_raw("stat").map_err(|_| AttestError::ProcessGone { pid: self.pid })?;
        let (starttime, code_start, stack_start) =
            exe_identity::stat_fields(&stat).ok_or(AttestError::ProcessGone { pid: self.pid })?;
        if starttime != self.starttime {
            return Err(AttestError::ProcessGone { pid: self.pid });
        }
        if let Some((peer_uid, peer_gid)) = self.peer_ids {
            let ids = self.ids().map_err(|_| AttestError::ProcessGone { pid: self.pid })?;
            let (now_uids, now_gids) = (ids.uids, ids.gids);
            if now_uids.iter().any(|&u| u != peer_uid) || now_gids.iter().any(|&g| g != peer_gid) {
                return Err(AttestError::CredentialsChanged { pid: self.pid, peer_uid, peer_gid, now_uids, now_gids });
            }
        }
        // Paths read through its root were taken for the daemon's view: it must not have left
        // the daemon's mount namespace meanwhile (it cannot come back without privilege).
        if self.same_mnt.get() == Some(&true) && !self.same_ns(Namespace::Mount) {
            return Err(AttestError::MountNamespaceChanged { pid: self.pid });
        }
        // The mapped file, also through the dirfd (so no later owner of the pid can answer).
        let Some(expected) = self.exe else { return Ok(()) };
        let exe = self.open_exe().and_then(|f| f.metadata().map_err(|e| e.to_string()));
        let exe = exe.map_err(|_| AttestError::ProcessGone { pid: self.pid })?;
        let now = ExeIdentity { dev: exe.dev(), ino: exe.ino(), code_start, stack_start };
        if now != expected {
            return Err(AttestError::ExecutableChanged { pid: self.pid, accepted: expected, now });
        }
        Ok(())
    }
}

fn open_pidfd(pid: i32) -> Result<OwnedFd, AttestError> {
    let rpid = rustix::process::Pid::from_raw(pid).ok_or(AttestError::NoPid)?;
    rustix::process::pidfd_open(rpid, rustix::process::PidfdFlags::empty()).map_err(|e| {
        if e == rustix::io::Errno::SRCH {
            AttestError::ProcessGone { pid }
        } else {
            AttestError::Proc { pid, source: e.into() }
        }
    })
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (`-1` once the process has exited).
pub(super) fn pidfd_pid(fd: &OwnedFd) -> Option<i32> {
    let info = read_proc(Path::new(&format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))).ok()?;
    let info = String::from_utf8(info).ok()?;
    info.lines().find_map(|l| l.strip_prefix("Pid:")).and_then(|v| v.trim().parse().ok())
}

fn proc_error(pid: i32, e: ProcError) -> AttestError {
    match e {
        ProcError::NotFound(_) => AttestError::ProcessGone { pid },
        ProcError::Io(source, _) if source.raw_os_error() == Some(libc_esrch()) => AttestError::ProcessGone { pid },
        ProcError::Io(source, _) => AttestError::Proc { pid, source },
        other => AttestError::Proc { pid, source: io::Error::other(other.to_string()) },
    }
}

fn libc_esrch() -> i32 {
    rustix::io::Errno::SRCH.raw_os_error()
}
