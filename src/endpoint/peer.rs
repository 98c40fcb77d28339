//! The connection a workload opened, with the credentials the kernel gave for it at accept time.

use super::h2_authority::AuthorityFix;
pub use crate::peer::PeerInfo;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

impl PeerInfo {
    /// Capture the peer of an accepted connection.
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
        Ok(Self { pid: cred.pid(), uid: cred.uid(), gid: cred.gid(), pidfd, pidfd_from_kernel })
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
