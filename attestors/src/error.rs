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
