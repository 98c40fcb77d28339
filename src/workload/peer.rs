//! The connection a workload opened, with the credentials the kernel gave for it at accept time.

use super::authority::AuthorityFix;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// Who is on the other end of a connection: SO_PEERCRED plus, on Linux ≥ 6.5, SO_PEERPIDFD — a
/// handle on the exact process that called connect(), which a recycled pid cannot impersonate.
#[derive(Clone, Debug)]
pub struct PeerInfo {
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
    fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        // SO_PEERPIDFD (Linux ≥ 6.5) names the very process that connected. Older kernels: open a
        // pidfd now, at accept, and keep it for the connection's life, so that later RPCs and
        // stream re-attestations all refer to this process and never to a later owner of the pid.
        let peer_pidfd = nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerPidfd).ok();
        let pidfd_from_kernel = peer_pidfd.is_some();
        let pidfd = peer_pidfd
            .or_else(|| {
                let pid = rustix::process::Pid::from_raw(cred.pid()?)?;
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            .map(Arc::new);
        let exe = cred.pid().and_then(|pid| tessera_attestors::ExeIdentity::of_peer(pid, pidfd.as_deref()));
        Ok(Self { pid: cred.pid(), uid: cred.uid(), gid: cred.gid(), pidfd, pidfd_from_kernel, exe })
    }

    /// Credentials for the attestors, with our own duplicate of the pidfd.
    pub fn credentials(&self) -> tessera_attestors::PeerCredentials {
        tessera_attestors::PeerCredentials {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            pidfd: self.pidfd.as_ref().and_then(|fd| fd.try_clone().ok()),
            exe: self.exe,
        }
    }
}

/// An accepted workload connection.
pub struct PeerStream {
    inner: AuthorityFix<UnixStream>,
    info: PeerInfo,
}

impl PeerStream {
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        let info = PeerInfo::of(&stream)?;
        Ok(Self { inner: AuthorityFix::new(stream), info })
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
