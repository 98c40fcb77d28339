//! Attestation reuse on one token-socket connection. An agent keeps its HTTP/1.1 connection open
//! and exchanges tokens back to back; attesting it in full for every request (~100 /proc reads)
//! was most of an exchange's cost. The first request on a connection is attested in full; later
//! requests on the same connection reuse that result for at most [`MAX_REUSE`], and only after
//! per-request checks on the pidfd-pinned process: alive, the connect-time credentials (real,
//! effective, saved, fs uid and gid), the same executable (device, inode) and the same command
//! line (an interpreter exec'ing another script keeps its executable). A new policy (reload,
//! revocation, federation update) forces a full attestation. Only successes are kept: a refused
//! caller is attested in full each time. Open streams hold their attestation far longer (until
//! the `reattest_interval`); this is a tighter bound for the path that mints delegated tokens.

use crate::caller::Caller;
use crate::peer::PeerInfo;
use crate::registry::Policy;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tessera_attestors::ProcessHandle;

/// Longest time a full attestation is reused on its connection.
pub const MAX_REUSE: Duration = Duration::from_secs(1);
/// Connections remembered at once (above the token socket's connection cap, so that live
/// connections are not evicted by each other; dead ones are swept first).
const MAX_SESSIONS: usize = 256;

/// One connection's last full attestation.
struct Session {
    /// The connection's pidfd: while this upgrades to the same allocation, it is the same
    /// connection (holding the `Weak` keeps the allocation, and so the key, from being reused).
    conn: Weak<OwnedFd>,
    process: Arc<ProcessHandle>,
    cmdline: Arc<[u8]>,
    caller: Arc<Caller>,
    at: Instant,
}

#[derive(Default)]
pub struct Sessions {
    by_conn: Mutex<HashMap<usize, Session>>,
}

fn key(peer: &PeerInfo) -> Option<(usize, &Arc<OwnedFd>)> {
    peer.pidfd.as_ref().map(|fd| (Arc::as_ptr(fd) as usize, fd))
}

impl Sessions {
    /// The caller attested on this connection within [`MAX_REUSE`], if every per-request check
    /// still holds against the policy in force.
    pub fn reuse(&self, peer: &PeerInfo, policy: &Arc<Policy>) -> Option<Arc<Caller>> {
        let (k, fd) = key(peer)?;
        let (process, cmdline, caller) = {
            let mut map = self.by_conn.lock().unwrap_or_else(|p| p.into_inner());
            let s = map.get(&k)?;
            let fresh = std::ptr::eq(s.conn.as_ptr(), Arc::as_ptr(fd))
                && s.at.elapsed() < MAX_REUSE
                && Arc::ptr_eq(&s.caller.policy, policy)
                && s.caller.uid == peer.uid;
            if !fresh {
                map.remove(&k);
                return None;
            }
            (s.process.clone(), s.cmdline.clone(), s.caller.clone())
        };
        // A few small /proc reads through the held dirfd, on this thread (cheaper than a hop to
        // the blocking pool; they never wait on a disk) and outside the lock. The command line is
        // read before `verify_alive`, so it describes the pinned process.
        let same = process.cmdline_raw().is_ok_and(|c| *c == *cmdline) && process.verify_alive().is_ok();
        if same {
            Some(caller)
        } else {
            self.by_conn.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
            None
        }
    }

    /// Remember a fully attested caller of this connection.
    pub fn keep(&self, peer: &PeerInfo, process: ProcessHandle, caller: Arc<Caller>) {
        let Some((k, fd)) = key(peer) else { return };
        let Ok(cmdline) = process.cmdline_raw() else { return };
        // The command line must belong to the process that was attested.
        if process.verify_alive().is_err() {
            return;
        }
        let mut map = self.by_conn.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.conn.strong_count() > 0 && s.at.elapsed() < MAX_REUSE);
            if map.len() >= MAX_SESSIONS {
                return;
            }
        }
        let session = Session {
            conn: Arc::downgrade(fd),
            process: Arc::new(process),
            cmdline: cmdline.into(),
            caller,
            at: Instant::now(),
        };
        map.insert(k, session);
    }
}
