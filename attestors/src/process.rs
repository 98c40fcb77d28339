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

use crate::AttestError;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use procfs::ProcError;
use procfs::process::Process;
use rustix::fs::OFlags;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod exe_identity;
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

    /// The process's supplementary groups (`Groups:` of `/proc/PID/status`), read through the
    /// pinned process's dirfd and confirmed by [`Self::verify_alive`] after the read: never the
    /// groups of a later owner of its pid.
    pub fn groups(&self) -> Result<Vec<u32>, AttestError> {
        let ids = self.ids().map_err(|_| AttestError::ProcessGone { pid: self.pid })?;
        self.verify_alive()?;
        Ok(ids.groups)
    }

    // === reads for the attestors, all through the /proc/PID dirfd ===

    /// The process's ids from `/proc/PID/status`. Only these three lines are parsed: a full
    /// parse of the file was a fifth of the daemon's CPU per warm fetch (it is read twice per
    /// attestation).
    pub(crate) fn ids(&self) -> Result<Ids, String> {
        let raw = self.read_raw("status")?;
        parse_ids(&raw).ok_or_else(|| format!("/proc/{}/status has no valid Uid, Gid and Groups lines", self.pid))
    }

    pub(crate) fn cmdline(&self) -> Result<Vec<String>, String> {
        // Not procfs's cmdline(): it drops args that are not UTF-8; we only need them as paths.
        let raw = self.read_raw("cmdline")?;
        Ok(split_cmdline(&raw))
    }

    pub(crate) fn environ_raw(&self) -> Result<Vec<u8>, String> {
        self.read_raw("environ")
    }

    pub(crate) fn cgroup_text(&self) -> Result<String, String> {
        let raw = self.read_raw("cgroup")?;
        String::from_utf8(raw).map_err(|_| "cgroup file is not UTF-8".to_owned())
    }

    /// The raw `/proc/PID/cmdline` (which script an interpreter runs): with [`Self::verify_alive`]
    /// after it, a cheap "still the same program" check between full attestations.
    pub fn cmdline_raw(&self) -> Result<Vec<u8>, AttestError> {
        self.read_raw("cmdline").map_err(|_| AttestError::ProcessGone { pid: self.pid })
    }

    fn read_raw(&self, name: &str) -> Result<Vec<u8>, String> {
        let mut f = self.proc_dir.open_relative(name).map_err(|e| e.to_string())?;
        read_all(&mut f).map_err(|e| format!("reading /proc/{}/{name}: {e}", self.pid))
    }

    /// The executable the kernel mapped, opened through the `/proc/PID/exe` magic link (the
    /// inode itself: a replaced or deleted binary is still the one running).
    pub(crate) fn open_exe(&self) -> Result<File, String> {
        self.proc_dir.open_relative("exe").map_err(|e| e.to_string())
    }

    /// `readlink /proc/PID/exe`, as the daemon sees the path.
    pub(crate) fn exe_link(&self) -> Result<PathBuf, String> {
        self.exe_link.get_or_init(|| self.proc_dir.exe().map_err(|e| e.to_string())).clone()
    }

    /// An `O_PATH` dirfd of the process's root directory (`/proc/PID/root`).
    pub(crate) fn root_dir(&self) -> Result<OwnedFd, String> {
        self.proc_dir
            .open_relative_flags("root", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)
            .map(OwnedFd::from)
            .map_err(|e| e.to_string())
    }

    /// The process's cwd as a path inside its own root (for resolving relative script paths).
    pub(crate) fn cwd_in_root(&self) -> Result<PathBuf, String> {
        let cwd = self.proc_dir.cwd().map_err(|e| e.to_string())?;
        let root = self.proc_dir.root().map_err(|e| e.to_string())?;
        // Both links are rendered relative to the daemon's root; for a chrooted process the
        // cwd link starts with the root link. In another mount namespace both are rendered
        // from that namespace's root, so root is "/".
        let rel = cwd
            .strip_prefix(&root)
            .map_err(|_| format!("cwd {} is outside the process root {}", cwd.display(), root.display()))?;
        Ok(Path::new("/").join(rel))
    }

    /// A daemon-visible path for a file the process sees at `in_root` (for file watching):
    /// the same path when the process shares our mount namespace and root, the host path under
    /// its chroot, else `/proc/PID/root/...` (valid while the process lives).
    pub(crate) fn host_path(&self, in_root: &Path) -> PathBuf {
        let rel = in_root.strip_prefix("/").unwrap_or(in_root);
        if self.same_mount_ns()
            && let Ok(root) = self.proc_dir.root()
        {
            return root.join(rel);
        }
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// The exe path for file watching, same rules as [`Self::host_path`].
    pub(crate) fn exe_host_path(&self, link: &Path) -> PathBuf {
        if self.same_mount_ns() { link.to_path_buf() } else { self.host_path(link) }
    }

    /// Whether the executable the process runs lives on a local file system (see
    /// [`crate::local_fs`]).
    pub fn exe_on_local_fs(&self) -> bool {
        self.open_exe().ok().and_then(|f| rustix::fs::fstatfs(&f).ok()).is_some_and(|s| crate::local_fs::is_local(&s))
    }

    /// Whether the daemon resolves the process's paths as the process does: the same mount
    /// namespace and the same root directory (not chrooted).
    pub fn shares_daemon_view(&self) -> bool {
        self.same_mount_ns() && self.proc_dir.root().is_ok_and(|r| r == Path::new("/"))
    }

    fn same_mount_ns(&self) -> bool {
        *self.same_mnt.get_or_init(|| self.same_ns(Namespace::Mount))
    }

    fn same_ns(&self, kind: Namespace) -> bool {
        let theirs = self
            .proc_dir
            .open_relative(format!("ns/{}", kind.name()))
            .and_then(|f| f.metadata().map_err(ProcError::from));
        match (theirs, kind.ours()) {
            (Ok(a), Some(b)) => (a.dev(), a.ino()) == b,
            _ => false,
        }
    }

    /// Why paths seen through this process's root are not evidence, if they are not.
    ///
    /// A process in its own user namespace can have created its mount namespace without any
    /// privilege (`unshare -Urm`) and mounted anything anywhere in it: a tmpfs over
    /// `/usr/local/sbin` holding its own `legit-daemon`, a copy of a root-owned prompt file. Then
    /// `/proc/PID/exe`'s path and every file read through `/proc/PID/root` say what it chose.
    /// (In the daemon's user namespace, a separate mount namespace or chroot needs privilege:
    /// systemd sandboxing, root-run containers; those paths stay evidence.) Unreadable
    /// namespace links count as foreign: fail closed.
    pub(crate) fn untrusted_root(&self) -> Option<String> {
        if self.same_mount_ns() || self.same_ns(Namespace::User) {
            return None;
        }
        Some(format!(
            "process {} runs in a mount namespace of its own user namespace (e.g. `unshare -Urm`, \
             rootless containers), where it can mount any file at any path; paths and files seen \
             through its root are not evidence",
            self.pid
        ))
    }
}

/// A namespace kind compared with the daemon's own.
#[derive(Clone, Copy)]
enum Namespace {
    Mount,
    User,
}

impl Namespace {
    fn name(self) -> &'static str {
        match self {
            Self::Mount => "mnt",
            Self::User => "user",
        }
    }

    /// The daemon's own (device, inode) of this namespace, kept once read: the daemon never
    /// changes its namespaces. `None` while unreadable (e.g. out of fds; then no process counts
    /// as sharing it: fail closed), and read again next time.
    fn ours(self) -> Option<(u64, u64)> {
        static OURS: [std::sync::OnceLock<(u64, u64)>; 2] = [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let cell = &OURS[self as usize];
        if let Some(ours) = cell.get() {
            return Some(*ours);
        }
        let m = std::fs::metadata(format!("/proc/self/ns/{}", self.name())).ok()?;
        Some(*cell.get_or_init(|| (m.dev(), m.ino())))
    }
}

/// argv from `/proc/PID/cmdline`: NUL-terminated strings. Empty arguments are kept as
/// positions (`python3 -W '' evil.py legit.py`: the empty string is `-W`'s value, and dropping
/// it would make `evil.py` look like that value and `legit.py` like the script).
pub(crate) fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// Real, effective, saved and filesystem uids and gids, and the supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) uids: [u32; 4],
    pub(crate) gids: [u32; 4],
    pub(crate) groups: Vec<u32>,
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status` file (the first of each; the
/// kernel escapes newlines in the process name, so a name cannot forge a line). Lines are
/// matched as bytes: a name that is not UTF-8 does not hide them. `None` unless all three parse.
pub(crate) fn parse_ids(status: &[u8]) -> Option<Ids> {
    let (mut uids, mut gids, mut groups) = (None, None, None);
    for line in status.split(|b| *b == b'\n') {
        let (target, rest) = if let Some(rest) = line.strip_prefix(b"Uid:") {
            (&mut uids, rest)
        } else if let Some(rest) = line.strip_prefix(b"Gid:") {
            (&mut gids, rest)
        } else if let Some(rest) = line.strip_prefix(b"Groups:") {
            if groups.is_none() {
                groups = Some(numbers(rest)?);
            }
            continue;
        } else {
            continue;
        };
        if target.is_none() {
            *target = Some(<[u32; 4]>::try_from(numbers(rest)?).ok()?);
        }
        if uids.is_some() && gids.is_some() && groups.is_some() {
            break;
        }
    }
    Some(Ids { uids: uids?, gids: gids?, groups: groups? })
}

/// Whitespace-separated decimal u32s.
fn numbers(field: &[u8]) -> Option<Vec<u32>> {
    std::str::from_utf8(field).ok()?.split_ascii_whitespace().map(|v| v.parse().ok()).collect()
}

/// Initial buffer for reading a /proc file (most fit; longer ones grow it).
const PROC_READ: usize = 4096;

/// A small /proc file, read in one go rather than by probing (they report size 0).
fn read_proc(path: &Path) -> io::Result<Vec<u8>> {
    read_all(&mut File::open(path)?)
}

/// A whole /proc file in few syscalls. /proc files report size 0, and `read_to_end` asks for
/// the size (statx, lseek) before it reads, then starts with small probes: reads into room for
/// a page instead, until a read returns nothing.
fn read_all(f: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; PROC_READ];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
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
fn pidfd_pid(fd: &OwnedFd) -> Option<i32> {
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

#[cfg(test)]
mod tests;
