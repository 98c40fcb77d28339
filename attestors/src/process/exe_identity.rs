//! Which executable image a process runs ([`ExeIdentity`]), taken at accept and compared while it is served.

use super::pin::pidfd_pid;
use super::proc_read::read_proc;
use crate::AttestError;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Which executable image a process runs: the mapped file's (device, inode) from `stat
/// /proc/PID/exe`, and the addresses of its code and stack (fields 26 and 28 of
/// `/proc/PID/stat`), which the kernel re-randomizes on every exec. None of these change while
/// one exec image lives, so comparing two snapshots has no false positives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExeIdentity {
    /// Device of the mapped executable.
    pub dev: u64,
    /// Inode of the mapped executable.
    pub ino: u64,
    /// Start of the code segment (0 when the reader lacks ptrace access, consistently so).
    pub code_start: u64,
    /// Start (bottom) of the stack.
    pub stack_start: u64,
}

impl ExeIdentity {
    /// The executable identity of socket peer `pid`, taken at `accept()` by the daemon. With a
    /// pidfd, the process is confirmed alive (and still `pid`) *after* the reads, so the identity
    /// cannot belong to a later owner of a recycled pid; `None` if it cannot be established.
    pub fn of_peer(pid: i32, pidfd: Option<&OwnedFd>) -> Option<Self> {
        let id = Self::read(Path::new(&format!("/proc/{pid}")))?;
        if let Some(fd) = pidfd
            && (!pidfd_alive(fd) || pidfd_pid(fd) != Some(pid))
        {
            return None;
        }
        Some(id)
    }

    /// Reads the identity under a `/proc/PID` directory path.
    pub(super) fn read(proc_pid: &Path) -> Option<Self> {
        let meta = std::fs::metadata(proc_pid.join("exe")).ok()?;
        let stat = read_proc(&proc_pid.join("stat")).ok()?;
        let (code_start, stack_start) = layout_of_stat(&stat)?;
        Some(Self { dev: meta.dev(), ino: meta.ino(), code_start, stack_start })
    }
}

/// Fields 26 (startcode) and 28 (startstack) of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub(super) fn layout_of_stat(stat: &[u8]) -> Option<(u64, u64)> {
    stat_fields(stat).map(|(_, code, stack)| (code, stack))
}

/// Fields 22 (starttime), 26 (startcode) and 28 (startstack) of a `/proc/PID/stat` line.
pub(super) fn stat_fields(stat: &[u8]) -> Option<(u64, u64, u64)> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((field(22)?, field(26)?, field(28)?))
}

/// Whether the process a pidfd refers to has not exited.
pub(super) fn pidfd_alive(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// The path of the executable the process behind `pidfd` runs now (`readlink /proc/PID/exe`),
/// for evidence after an exec; `None` when it is gone (alive after the read: the path is this
/// process's, not a successor's of its pid).
pub fn current_exe_path(pid: i32, pidfd: &OwnedFd) -> Option<std::path::PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    (pidfd_alive(pidfd) && pidfd_pid(pidfd) == Some(pid)).then_some(link)
}

/// Cheap re-check for a pinned peer (the stream engine polls it every second): `Ok` while the
/// process behind `pidfd` is alive, still `pid`, and runs the executable `expected`.
pub fn verify_exe_identity(pid: i32, pidfd: &OwnedFd, expected: ExeIdentity) -> Result<(), AttestError> {
    let now = ExeIdentity::read(Path::new(&format!("/proc/{pid}")));
    // Alive after the read: the read described this process, not a successor of its pid.
    if !pidfd_alive(pidfd) || pidfd_pid(pidfd) != Some(pid) {
        return Err(AttestError::ProcessGone { pid });
    }
    match now {
        Some(now) if now == expected => Ok(()),
        Some(now) => Err(AttestError::ExecutableChanged { pid, accepted: expected, now }),
        None => Err(AttestError::ProcessGone { pid }),
    }
}
