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
}

impl PeerInfo {
    fn of(stream: &UnixStream) -> io::Result<Self> {
        let cred = stream.peer_cred()?;
        let pidfd =
            nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerPidfd).ok().map(Arc::new);
        Ok(Self { pid: cred.pid(), uid: cred.uid(), gid: cred.gid(), pidfd })
    }

    /// Credentials for the attestors, with our own duplicate of the pidfd.
    pub fn credentials(&self) -> tessera_attestors::PeerCredentials {
        tessera_attestors::PeerCredentials {
            pid: self.pid,
            uid: self.uid,
            gid: self.gid,
            pidfd: self.pidfd.as_ref().and_then(|fd| fd.try_clone().ok()),
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
