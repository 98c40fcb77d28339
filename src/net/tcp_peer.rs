//! Which local process opened a loopback TCP connection. TCP has no SO_PEERCRED, so the peer is
//! found in two steps: the kernel's socket table is asked for the *client's* socket of the
//! connection (an exact NETLINK_SOCK_DIAG lookup, O(1), no dump), which gives its owner uid and
//! inode; then the `/proc/PID/fd` tables of that uid's processes are searched for the inode. Only
//! a single holder is attributed: anything else (gone, inherited by a fork, passed on, the daemon
//! itself, not loopback) fails closed. Everything here blocks (syscalls, /proc reads): callers run
//! it off the async threads.
//!
//! What this cannot see (the kernel records none of it): a socket passed on by SCM_RIGHTS whose
//! creator closed its copy is attributed to the receiver; a holder whose `/proc/PID` owner differs
//! from the socket's uid (it changed uid after `socket()`, or is not dumpable) is not visited, so
//! it is neither found nor counted as a second holder. And while a client spawns a subprocess, the
//! child holds copies of all its fds until its exec closes the close-on-exec ones: an attribution
//! in that window is `Ambiguous` (fail closed; a retry a moment later succeeds).

use crate::peer::PeerInfo;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recvfrom, sendto, setsockopt, socket,
    sockopt,
};
use nix::sys::time::TimeVal;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

/// Why a TCP connection was not attributed to a process.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unattributable {
    #[error("peer {peer} is not a loopback address: only a local process can be attributed")]
    NotLoopback { peer: SocketAddr },
    #[error("no single live process holds the client socket {client} → {server}: {why}")]
    NotFound { client: SocketAddr, server: SocketAddr, why: &'static str },
    #[error("the client socket {client} is held by several processes {pids:?} (inherited by a fork or passed on)")]
    Ambiguous { client: SocketAddr, pids: Vec<i32> },
    #[error("the client socket {client} is the daemon's own")]
    SelfConnection { client: SocketAddr },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A process attributed as the client of a TCP connection, with what re-checks it later.
#[derive(Debug, Clone)]
pub(crate) struct TcpPeer {
    /// pid, socket uid, effective gid, the pidfd opened at attribution and the executable then.
    pub info: PeerInfo,
    /// The inode of the client's socket.
    pub inode: u64,
    /// The holder's start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// The fd number the holder had the socket under, tried first by [`Self::still_holds`].
    fd_hint: Option<u32>,
}

impl TcpPeer {
    /// Whether the attributed process still lives and still holds the client socket (after an
    /// attestation, before its answer is used). The reads come first and the pidfd is checked
    /// after them, so a later owner of the pid can't be the one that answered.
    pub(crate) fn still_holds(&self) -> bool {
        let (Some(pid), Some(pidfd)) = (self.info.pid, self.info.pidfd.as_deref()) else {
            return false;
        };
        let link = socket_link(self.inode);
        let holds = self.fd_hint.is_some_and(|fd| fd_is(pid, fd, &link)) || find_fd(pid, &link).is_some();
        holds && start_ticks(pid) == Some(self.start_ticks) && pidfd_alive(pidfd)
    }

    /// [`Self::still_holds`], and no other process of the socket's uid holds it now (a copy
    /// handed on since accept, by fork or fd passing): the whole scan again, as at accept.
    pub(crate) fn still_sole_holder(&self) -> bool {
        let Some(pid) = self.info.pid else { return false };
        let own = std::process::id() as i32;
        let only_us =
            matches!(holders(self.info.uid, &socket_link(self.inode), own).as_deref(), Ok([(p, _)]) if *p == pid);
        only_us && self.still_holds()
    }
}

/// Attribute an accepted loopback connection to the process holding its client socket (the
/// gateway looks the socket up first, then attributes it: [`socket_of`], [`attribute_socket`]).
#[cfg(test)]
pub(crate) fn attribute(stream: &tokio::net::TcpStream) -> Result<TcpPeer, Unattributable> {
    let client = stream.peer_addr().map_err(|source| Unattributable::Io { what: "peer address", source })?;
    let server = stream.local_addr().map_err(|source| Unattributable::Io { what: "local address", source })?;
    attribute_addrs(client, server)
}

/// [`attribute`] by the connection's addresses: `client` the accepted socket's peer, `server` its
/// local address.
#[cfg(test)]
pub(crate) fn attribute_addrs(client: SocketAddr, server: SocketAddr) -> Result<TcpPeer, Unattributable> {
    let socket = socket_of(client, server)?;
    attribute_socket(client, server, socket)
}

/// The client socket's owner uid and inode (one netlink round trip, no /proc scan): what the
/// caller needs to queue the scan under the right uid.
pub(crate) fn socket_of(client: SocketAddr, server: SocketAddr) -> Result<SocketEntry, Unattributable> {
    let (client, server) = (unmapped(client), unmapped(server));
    if !client.ip().is_loopback() {
        return Err(Unattributable::NotLoopback { peer: client });
    }
    lookup(client, server)
        .map_err(|source| Unattributable::Io { what: "sock_diag lookup", source })?
        .ok_or(Unattributable::NotFound { client, server, why: "the kernel has no such open socket" })
}

/// The one process holding `socket` (found by [`socket_of`]), pinned.
pub(crate) fn attribute_socket(
    client: SocketAddr,
    server: SocketAddr,
    socket: SocketEntry,
) -> Result<TcpPeer, Unattributable> {
    let (client, server) = (unmapped(client), unmapped(server));
    let not_found = |why| Unattributable::NotFound { client, server, why };
    let link = socket_link(socket.inode);
    let own = std::process::id() as i32;
    let holders = holders(socket.uid, &link, own)?;
    let (pid, fd) = match holders.as_slice() {
        [] if find_fd(own, &link).is_some() => return Err(Unattributable::SelfConnection { client }),
        [] => return Err(not_found("no process holds it")),
        [one] => *one,
        many => return Err(Unattributable::Ambiguous { client, pids: many.iter().map(|(pid, _)| *pid).collect() }),
    };
    let gone = || not_found("its holder exited during attribution");
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .ok_or_else(gone)?;
    // With the pidfd held, the pid can't be reused any more: read it all again now, and confirm
    // the process is alive afterwards, so that a process that took over the pid between the scan
    // and pidfd_open (and does not hold the socket) is caught.
    let fd = if fd_is(pid, fd, &link) { fd } else { find_fd(pid, &link).ok_or_else(gone)? };
    let start_ticks = start_ticks(pid).ok_or_else(gone)?;
    let gid = effective_gid(pid).ok_or_else(gone)?;
    let exe = tessera_attestors::ExeIdentity::of_peer(pid, Some(&pidfd));
    if !pidfd_alive(&pidfd) {
        return Err(gone());
    }
    let info =
        PeerInfo { pid: Some(pid), uid: socket.uid, gid, pidfd: Some(Arc::new(pidfd)), pidfd_from_kernel: false, exe };
    Ok(TcpPeer { info, inode: socket.inode, start_ticks, fd_hint: Some(fd) })
}

/// A v4-mapped IPv6 address (a dual-stack listener's IPv4 client) as the IPv4 address it is: the
/// socket lives in the IPv4 table and is looked up there.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The owner and inode of an open socket, from the kernel's socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketEntry {
    pub uid: u32,
    inode: u64,
}

const NETLINK_HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ENOENT: i32 = 2;
/// `inet_diag_msg`: family, state, timer, retrans, then the 48-byte `inet_diag_sockid`, then
/// expires, rqueue, wqueue, uid, inode (u32 each).
const DIAG_MSG_LEN: usize = 72;
/// The part of `inet_diag_sockid` that names the connection: ports and addresses (not the
/// interface nor the cookie).
const SOCKID_TUPLE: std::ops::Range<usize> = 0..36;

/// The socket whose local address is `local` and whose remote is `remote`, by an exact
/// NETLINK_SOCK_DIAG lookup (O(1) in the kernel). `None` when there is no such socket, or it is
/// no longer open (TIME_WAIT and orphans have inode 0).
fn lookup(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<SocketEntry>> {
    let (family, id) = match sockid(local, remote) {
        Some(id) => id,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "addresses of two families")),
    };
    let fd = socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkSockDiag)?;
    // The kernel answers at once; the timeout only bounds a blocking thread if it never did.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))?;
    let seq: u32 = 1;
    let mut request = Vec::with_capacity(NETLINK_HEADER + 56);
    request.extend_from_slice(&((NETLINK_HEADER + 56) as u32).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    // No NLM_F_DUMP: the exact lookup, not a walk of the whole table.
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&seq.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // states: ignored by the exact lookup
    request.extend_from_slice(&id);
    sendto(fd.as_raw_fd(), &request, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;

    let mut reply = [0u8; 8192];
    let (len, from) = recvfrom::<NetlinkAddr>(fd.as_raw_fd(), &mut reply)?;
    // Only the kernel (port 0) answers for the kernel: a forged reply from another socket is refused.
    if from.map(|a| a.pid()) != Some(0) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "sock_diag reply not from the kernel"));
    }
    parse_reply(reply.get(..len).unwrap_or_default(), seq, &id)
}

/// The request's `inet_diag_sockid` (48 bytes: be16 sport, be16 dport, be32 src[4], be32 dst[4],
/// u32 interface, u32 cookie[2]) and its address family.
fn sockid(local: SocketAddr, remote: SocketAddr) -> Option<(u8, [u8; 48])> {
    let mut id = [0u8; 48];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    let family = match (local.ip(), remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            id[4..8].copy_from_slice(&l.octets());
            id[20..24].copy_from_slice(&r.octets());
            AF_INET
        }
        (IpAddr::V6(l), IpAddr::V6(r)) => {
            id[4..20].copy_from_slice(&l.octets());
            id[20..36].copy_from_slice(&r.octets());
            AF_INET6
        }
        _ => return None,
    };
    // Interface 0 (id[36..40]); cookie INET_DIAG_NOCOOKIE: any other value is compared with the
    // socket's cookie and fails the lookup.
    id[40..48].fill(0xff);
    Some((family, id))
}

fn parse_reply(reply: &[u8], seq: u32, id: &[u8; 48]) -> io::Result<Option<SocketEntry>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag reply: {why}"));
    let u32_at =
        |buf: &[u8], at: usize| -> Option<u32> { Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?)) };
    let header = reply.get(..NETLINK_HEADER).ok_or_else(|| bad("short header"))?;
    let len = u32_at(header, 0).ok_or_else(|| bad("short header"))? as usize;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    if u32_at(header, 8) != Some(seq) {
        return Err(bad("another request's sequence number"));
    }
    let body = reply.get(NETLINK_HEADER..len).ok_or_else(|| bad("truncated"))?;
    match kind {
        NLMSG_ERROR => match u32_at(body, 0).map(|e| e as i32) {
            Some(e) if e == -ENOENT => Ok(None),
            Some(e) if e < 0 => Err(io::Error::from_raw_os_error(-e)),
            _ => Err(bad("malformed error message")),
        },
        SOCK_DIAG_BY_FAMILY => {
            let msg = body.get(..DIAG_MSG_LEN).ok_or_else(|| bad("short inet_diag_msg"))?;
            // The kernel's lookup falls back to a listening socket on the asked local port when no
            // connection matches (`inet_lookup`): only the exact connection is an answer.
            if msg.get(4..52).and_then(|got| got.get(SOCKID_TUPLE)) != id.get(SOCKID_TUPLE) {
                return Ok(None);
            }
            let uid = u32_at(msg, 64).ok_or_else(|| bad("short inet_diag_msg"))?;
            let inode = u32_at(msg, 68).ok_or_else(|| bad("short inet_diag_msg"))?;
            // TIME_WAIT, SYN_RECV and orphaned sockets: no open file holds them.
            Ok((inode != 0).then_some(SocketEntry { uid, inode: u64::from(inode) }))
        }
        _ => Err(bad("unexpected message type")),
    }
}

/// What `readlink /proc/PID/fd/N` shows for a socket.
fn socket_link(inode: u64) -> String {
    format!("socket:[{inode}]")
}

/// Every process (not thread: threads share the fd table) other than `own` that holds the socket
/// `link`, with the fd it holds it under. Only processes running as the socket's owner `uid` are
/// searched. A process whose fds can't be read fails the search: it could be a second holder.
fn holders(uid: u32, link: &str, own: i32) -> Result<Vec<(i32, u32)>, Unattributable> {
    let io = |what| move |source| Unattributable::Io { what, source };
    let mut found = Vec::new();
    let mut budget = SCAN_BUDGET;
    for entry in std::fs::read_dir("/proc").map_err(io("read /proc"))? {
        let entry = entry.map_err(io("read /proc"))?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == own {
            continue;
        }
        // The owner of /proc/PID is the process's effective uid.
        match entry.metadata() {
            Ok(meta) if meta.uid() == uid => {}
            _ => continue,
        }
        match scan_fds_within(pid, link, &mut budget) {
            Ok(Some(fd)) => found.push((pid, fd)),
            Ok(None) => {}
            // The process exited meanwhile.
            Err(e) if matches!(e.raw_os_error(), Some(2 | 3)) => {}
            Err(source) => {
                return Err(Unattributable::Io { what: "read /proc/PID/fd (needs CAP_SYS_PTRACE)", source });
            }
        }
    }
    Ok(found)
}

/// fd entries one holder search may read (every fd of every thread of the socket owner's
/// processes): past it the search fails (closed), so a caller cannot make a scan run for
/// minutes with thousands of threads over a huge fd table.
const SCAN_BUDGET: usize = 200_000;

/// The first fd of `pid` that is `link`, in any of its threads' fd tables. `/proc/PID/fd` is
/// the thread-group leader's table only: a thread that unshared its table (`unshare(CLONE_FILES)`)
/// or outlived an exited leader (whose table then reads empty) holds fds that only
/// `/proc/PID/task/TID/fd` shows. Missing one would let a process hide its copy of a socket and
/// have it attributed to another holder. A listed thread that is gone when its table is read
/// (a process that keeps replacing the thread holding a private table would stay unseen) makes
/// the whole process's answer unknown: an error, and the attribution fails closed.
fn scan_fds(pid: i32, link: &str) -> io::Result<Option<u32>> {
    let mut budget = SCAN_BUDGET;
    scan_fds_within(pid, link, &mut budget)
}

fn scan_fds_within(pid: i32, link: &str, budget: &mut usize) -> io::Result<Option<u32>> {
    if let Some(fd) = scan_dir(&format!("/proc/{pid}/fd"), link, budget)? {
        return Ok(Some(fd));
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    for task in tasks {
        let Ok(task) = task else { continue };
        let Some(tid) = task.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if tid == pid {
            continue;
        }
        match scan_dir(&format!("/proc/{pid}/task/{tid}/fd"), link, budget) {
            Ok(Some(fd)) => return Ok(Some(fd)),
            Ok(None) => {}
            Err(e) if matches!(e.raw_os_error(), Some(2 | 3)) => {
                return Err(io::Error::other(format!(
                    "thread {tid} of process {pid} went away while its fd table was read"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The first fd in one fd directory that is `link`.
fn scan_dir(dir: &str, link: &str, budget: &mut usize) -> io::Result<Option<u32>> {
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        *budget = budget.checked_sub(1).ok_or_else(|| {
            io::Error::other(format!("more than {SCAN_BUDGET} fds to read: the search gives up (fail closed)"))
        })?;
        match entry.path().read_link() {
            Ok(target) if target.as_os_str() == link => {
                return Ok(entry.file_name().to_str().and_then(|n| n.parse().ok()));
            }
            // Not the socket; or closed between readdir and readlink; or a link the kernel
            // will not show even to root (some sandboxes' own processes answer EACCES): not
            // seen as a holder. (An LSM that hides one process's fds from the daemon while
            // listing them is the one case this reads as "not a holder".)
            Ok(_) | Err(_) => {}
        }
    }
    Ok(None)
}

fn find_fd(pid: i32, link: &str) -> Option<u32> {
    scan_fds(pid, link).ok().flatten()
}

fn fd_is(pid: i32, fd: u32, link: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|target| target.as_os_str() == link)
}

/// Field 22 (starttime) of `/proc/PID/stat`; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(22 - 3)?.parse().ok()
}

/// The effective gid (second field of `Gid:` in `/proc/PID/status`).
fn effective_gid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Gid:"))?.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Whether the process behind a pidfd has not exited (the pidfd turns readable when it does).
fn pidfd_alive(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

#[cfg(test)]
mod tests;
