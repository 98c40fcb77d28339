//! Who is on the other end of a connection, as the kernel said at accept time (captured by
//! `net::peer`; read by the caller pipeline, whatever the transport).

use std::os::fd::OwnedFd;
use std::sync::Arc;

/// SO_PEERCRED plus, on Linux ≥ 6.5, SO_PEERPIDFD — a handle on the exact process that called
/// connect(), which a recycled pid cannot impersonate.
#[derive(Clone, Debug)]
pub(crate) struct PeerInfo {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    pub pidfd: Option<Arc<OwnedFd>>,
    /// The pidfd came from SO_PEERPIDFD (else from pidfd_open at accept, a few µs after connect).
    pub pidfd_from_kernel: bool,
    /// The executable the peer runs at accept; attestation refuses a process that exec'd since
    /// (an exec between connect() and this accept goes unseen: the kernel records none).
    pub exe: Option<tessera_attestors::ExeIdentity>,
}

impl PeerInfo {
    /// Credentials for the attestors, with our own duplicate of the pidfd.
    pub(crate) fn credentials(&self) -> tessera_attestors::PeerCredentials {
        tessera_attestors::PeerCredentials {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            pidfd: self.pidfd.as_ref().and_then(|fd| fd.try_clone().ok()),
            pidfd_from_kernel: self.pidfd_from_kernel,
            exe: self.exe,
        }
    }
}

/// One process for the life of the machine's boot: its pid and its start time (clock ticks since
/// boot, `/proc/PID/stat` field 22), so that a later process reusing the pid is another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ProcessKey {
    pub pid: i32,
    pub start_ticks: u64,
}
