use thiserror::Error;

/// Why a process could not be attested at all. Any of these means: no identity.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The kernel gave no pid for the peer (e.g. it lives in another pid namespace).
    #[error("the kernel reported no pid for the peer")]
    NoPid,
    /// The process exited, or its pid now belongs to another process.
    #[error("process {pid} is gone or was replaced during attestation")]
    ProcessGone {
        /// The pid that was pinned.
        pid: i32,
    },
    /// The pidfd handed in (SO_PEERPIDFD) names another process than the pid (SO_PEERCRED).
    /// Usually a pid-namespace mismatch between daemon and `/proc`.
    #[error("the peer's pidfd refers to pid {pidfd_pid}, not to pid {pid}")]
    PidfdMismatch {
        /// Pid from the peer credentials.
        pid: i32,
        /// Pid the pidfd refers to, as `/proc/self/fdinfo` shows it.
        pidfd_pid: i32,
    },
    /// The process's current real, effective, saved or filesystem uid/gid differ from the
    /// credentials the kernel reported when it connected: it changed identity after
    /// `connect()` (typically by exec'ing a setuid or setgid program). Its socket may now be
    /// held by another process, so no identity of either credential set is safe to issue.
    #[error(
        "process {pid} changed credentials since it connected (uid {now_uids:?} gid {now_gids:?}, \
         connected as uid {peer_uid} gid {peer_gid}); a setuid/setgid exec after connect gets no identity"
    )]
    CredentialsChanged {
        /// The pid.
        pid: i32,
        /// Effective uid the kernel reported at `connect()`.
        peer_uid: u32,
        /// Effective gid the kernel reported at `connect()`.
        peer_gid: u32,
        /// Real, effective, saved and filesystem uid now.
        now_uids: [u32; 4],
        /// Real, effective, saved and filesystem gid now.
        now_gids: [u32; 4],
    },
    /// The process runs another executable image than when its connection was accepted: it
    /// exec'd after connecting, and its socket may be held by a process that ran something else.
    #[error(
        "process {pid} exec'd since its connection was accepted (executable dev {} ino {} then, dev {} ino {} now); \
         no identity for a connection that outlived an exec",
        accepted.dev, accepted.ino, now.dev, now.ino
    )]
    ExecutableChanged {
        /// The pid.
        pid: i32,
        /// The executable identity taken at accept.
        accepted: crate::ExeIdentity,
        /// The executable identity now.
        now: crate::ExeIdentity,
    },
    /// The process left the daemon's mount namespace during attestation (e.g. `unshare -Urm`):
    /// files read through its root may have been its own mounts, though they were taken for the
    /// daemon's view.
    #[error("process {pid} left the daemon's mount namespace during attestation")]
    MountNamespaceChanged {
        /// The pid.
        pid: i32,
    },
    /// /proc could not be read for the process.
    #[error("cannot read /proc/{pid}: {source}")]
    Proc {
        /// The pid.
        pid: i32,
        /// The underlying error (permission denied, hidepid mount, ...).
        #[source]
        source: std::io::Error,
    },
}
