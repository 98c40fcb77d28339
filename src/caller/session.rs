//! Attestation reuse on one connection. SDKs and agents keep their connection open and call back
//! to back (a Workload API fetch, a token exchange); attesting in full for every call (~100
//! syscalls, a hop to a blocking thread) was most of a warm call's cost. The first call on a
//! connection is attested in full; later calls on the same connection reuse that result for at
//! most [`MAX_REUSE`], and only after per-call checks on the pidfd-pinned process: alive, the
//! connect-time credentials (real, effective, saved, fs uid and gid), the same executable
//! (device, inode), the same command line (an interpreter exec'ing another script keeps its
//! executable), and every file the attestation read (script, config files) unchanged since
//! (device, inode, size, mtime, ctime). A new policy (reload, revocation, federation update)
//! forces a full attestation. Only successes are kept: a refused caller is attested in full each
//! time. What the checks do not see within the window (an environment rewritten in place, a
//! cgroup move) is the staleness an open stream already has between its re-attestations; the
//! window counts from the start of the full attestation.
//!
//! Nothing is kept when a check could not be cheap and exact: the per-call checks run on the
//! async threads, so every file they stat (and the executable) must be on a local file system
//! (never NFS, SMB or FUSE, whose server could stall them); the process must see files as the
//! daemon does (same mount namespace and root); a file changed within the digest cache's racy
//! window is not trusted to show its next change in `stat`; the command line is small.

use super::Caller;
use crate::clock::Clock;
use crate::peer::PeerInfo;
use crate::registry::Policy;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use tessera_attestors::{DIGEST_CACHE_RACY_WINDOW, FileKey, ProcessHandle, local_fs};

/// Longest time a full attestation is reused on its connection.
pub(crate) const MAX_REUSE: Duration = Duration::from_secs(1);
/// Age from which a reused attestation is renewed in the background, so that a connection
/// calling steadily never waits for a full attestation (it would otherwise pay one per
/// [`MAX_REUSE`], the slowest of its calls by far).
pub(crate) const RENEW_AFTER: Duration = Duration::from_millis(500);
/// Connections remembered at once. Each holds two fds (a /proc directory and a pidfd) until it
/// is swept, at most about 2 × [`MAX_REUSE`] after its attestation; the accept loop's fd reserve
/// covers them (`ConnectionLimits::fitted_to_fd_limit`). Connections beyond it are attested in full.
pub(crate) const MAX_SESSIONS: usize = 128;
/// Of which one uid may hold (the rest fall back to full attestation, as before).
const MAX_SESSIONS_PER_UID: usize = 16;
/// Command lines kept for the comparison: larger ones (up to MiBs) get no session.
const MAX_CMDLINE: usize = 4096;

fn stamps(paths: &[PathBuf]) -> Option<Vec<FileKey>> {
    paths.iter().map(|p| std::fs::metadata(p).ok().map(|m| FileKey::of(&m))).collect()
}

/// What the per-call checks compare against, gathered by the full attestation on its own
/// (blocking) thread, so that keeping a session costs the call nothing more.
#[derive(Debug)]
pub(crate) struct Baseline {
    cmdline: Vec<u8>,
    files: Vec<FileKey>,
}

impl Baseline {
    /// The baseline for a session of this attested process, or `None` if no session may be
    /// kept for it (see the module docs). `cmdline` must have been read before the
    /// attestation's final `verify_alive`, so that it belongs to the attested process;
    /// `files` are the attestation's watched files, `started` when it started. Blocking
    /// (statfs and stat of the files).
    pub(crate) fn gather(
        process: &ProcessHandle,
        cmdline: Vec<u8>,
        files: &[PathBuf],
        started: SystemTime,
    ) -> Option<Self> {
        if cmdline.len() > MAX_CMDLINE || !process.shares_daemon_view() || !process.exe_on_local_fs() {
            return None;
        }
        if !files.iter().all(|p| local_fs::path_is_local(p)) {
            return None;
        }
        // Stamped after the attestation read the files: a write in between is the same race as
        // a write just after a full attestation, which open streams catch by their file watch.
        // A file changed so recently that a next write could leave the same stamp is not kept.
        let files = stamps(files)?;
        if files.iter().any(|s| s.ctime().is_none_or(|c| c + DIGEST_CACHE_RACY_WINDOW >= started)) {
            return None;
        }
        Some(Self { cmdline, files })
    }
}

/// One connection's last full attestation.
struct Session {
    /// The connection's pidfd: while this upgrades to the same allocation, it is the same
    /// connection (holding the `Weak` keeps the allocation, and so the key, from being reused).
    conn: Weak<OwnedFd>,
    process: Arc<ProcessHandle>,
    cmdline: Arc<[u8]>,
    files: Arc<[FileKey]>,
    caller: Arc<Caller>,
    /// When the full attestation started.
    at: Instant,
    /// A background renewal of this session is running.
    renewing: bool,
    /// Which keep this is: a renewal replaces only the session it renews (not a newer one, and
    /// not one removed meanwhile), and its failure removes only that one.
    generation: u64,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        self.conn.strong_count() > 0 && now.saturating_duration_since(self.at) < MAX_REUSE
    }
}

/// The sessions, their windows measured on the clock's monotonic time.
#[derive(Clone)]
pub(crate) struct Sessions {
    by_conn: Arc<Mutex<Map>>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Map {
    sessions: HashMap<usize, Session>,
    /// A sweeper task is running: it drops expired sessions (and their fds) every
    /// [`MAX_REUSE`] while any are left, so an idle daemon holds none.
    sweeping: bool,
    generations: u64,
}

impl Map {
    fn sweep(&mut self, now: Instant) {
        self.sessions.retain(|_, s| s.live(now));
    }
}

fn spawn_sweeper(map: Weak<Mutex<Map>>, clock: Arc<dyn Clock>) -> bool {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return false };
    rt.spawn(async move {
        loop {
            tokio::time::sleep(MAX_REUSE).await;
            let Some(map) = map.upgrade() else { return };
            let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
            m.sweep(clock.monotonic());
            if m.sessions.is_empty() {
                m.sweeping = false;
                return;
            }
        }
    });
    true
}

fn key(peer: &PeerInfo) -> Option<(usize, &Arc<OwnedFd>)> {
    peer.pidfd.as_ref().map(|fd| (Arc::as_ptr(fd) as usize, fd))
}

impl Sessions {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self { by_conn: Arc::default(), clock }
    }

    /// The caller attested on this connection within [`MAX_REUSE`], if every per-call check
    /// still holds against the policy in force; and, when the caller of `reuse` should now renew
    /// the session in the background (it is older than [`RENEW_AFTER`] and no renewal runs), the
    /// session's generation: renew with a full attestation, then [`Self::keep`] with it, and
    /// [`Self::forget`] it if either fails.
    pub(crate) fn reuse(&self, peer: &PeerInfo, policy: &Arc<Policy>) -> Option<(Arc<Caller>, Option<u64>)> {
        let (k, fd) = key(peer)?;
        let (process, cmdline, files, caller, renew) = {
            let mut map = self.by_conn.lock().unwrap_or_else(|p| p.into_inner());
            let s = map.sessions.get_mut(&k)?;
            let age = self.clock.monotonic().saturating_duration_since(s.at);
            let fresh = std::ptr::eq(s.conn.as_ptr(), Arc::as_ptr(fd))
                && age < MAX_REUSE
                && Arc::ptr_eq(&s.caller.policy, policy)
                && s.caller.uid == peer.uid;
            if !fresh {
                map.sessions.remove(&k);
                return None;
            }
            let renew = (age >= RENEW_AFTER && !s.renewing).then_some(s.generation);
            s.renewing |= renew.is_some();
            (s.process.clone(), s.cmdline.clone(), s.files.clone(), s.caller.clone(), renew)
        };
        // A few small /proc reads through the held dirfd and a stat per file read (all on local
        // file systems, see `Baseline::gather`), on this thread (cheaper than a hop to the blocking pool) and
        // outside the lock. The command line is read before `verify_alive`, so it describes the pinned
        // process.
        let same = process.cmdline_raw().is_ok_and(|c| *c == *cmdline)
            && process.verify_alive().is_ok()
            && stamps(&caller.attestation.watched_files).is_some_and(|now| *now == *files);
        if same {
            Some((caller, renew))
        } else {
            self.by_conn.lock().unwrap_or_else(|p| p.into_inner()).sessions.remove(&k);
            None
        }
    }

    /// Drop this connection's session of `generation` (its renewal found the caller changed or
    /// refused, or could not be kept): its next call is attested in full.
    pub(crate) fn forget(&self, peer: &PeerInfo, generation: u64) {
        if let Some((k, _)) = key(peer) {
            let mut map = self.by_conn.lock().unwrap_or_else(|p| p.into_inner());
            if map.sessions.get(&k).is_some_and(|s| s.generation == generation) {
                map.sessions.remove(&k);
            }
        }
    }

    /// Remember a fully attested caller of this connection with the [`Baseline`] its
    /// attestation gathered; `started` is when that attestation started; `renewing`: the
    /// generation of the session this attestation renews, which it replaces only if that one is
    /// still the connection's session. Whether it was kept. Does not block.
    pub(crate) fn keep(
        &self,
        peer: &PeerInfo,
        process: ProcessHandle,
        baseline: Baseline,
        caller: Arc<Caller>,
        started: Instant,
        renewing: Option<u64>,
    ) -> bool {
        let Some((k, fd)) = key(peer) else { return false };
        let mut map = self.by_conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = renewing
            && map.sessions.get(&k).is_none_or(|s| s.generation != g)
        {
            // The renewed session was replaced or removed meanwhile: this result is stale.
            return false;
        }
        // This connection's own session (if any) is replaced, not added.
        let full = |m: &Map| {
            let others = m.sessions.iter().filter(|(key, _)| **key != k);
            m.sessions.len() - usize::from(m.sessions.contains_key(&k)) >= MAX_SESSIONS
                || others.filter(|(_, s)| s.caller.uid == peer.uid).count() >= MAX_SESSIONS_PER_UID
        };
        if full(&map) {
            map.sweep(self.clock.monotonic());
            if full(&map) {
                return false;
            }
        }
        if !map.sweeping {
            // Without a sweeper nothing would close the session's fds: keep nothing then.
            if !spawn_sweeper(Arc::downgrade(&self.by_conn), self.clock.clone()) {
                return false;
            }
            map.sweeping = true;
        }
        map.generations += 1;
        let generation = map.generations;
        let session = Session {
            conn: Arc::downgrade(fd),
            process: Arc::new(process),
            cmdline: baseline.cmdline.into(),
            files: baseline.files.into(),
            caller,
            at: started,
            renewing: false,
            generation,
        };
        map.sessions.insert(k, session);
        true
    }
}
