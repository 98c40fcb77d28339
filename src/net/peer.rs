//! The connection a workload opened, with the credentials the kernel gave for it at accept time.

use super::h2_authority::AuthorityFix;
use crate::limits::{Held, OverLimit, UidCounter};
pub(crate) use crate::peer::PeerInfo;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

impl PeerInfo {
    /// Capture the peer of an accepted connection.
    pub(crate) fn of_unix(stream: &UnixStream, cred: tokio::net::unix::UCred) -> io::Result<Self> {
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
}

/// Why an accepted connection was closed at once.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("cannot read peer credentials: {0}")]
    Credentials(#[from] io::Error),
    #[error("uid {uid}: {why}")]
    OverLimit { uid: u32, why: OverLimit },
}

/// An accepted workload connection.
pub(crate) struct PeerStream {
    inner: AuthorityFix<UnixStream>,
    info: PeerInfo,
    /// Closes the connection if no request (a complete header block) arrives in time: idle or
    /// slowloris connections must not hold the per-uid connection slots and fds forever.
    first_request: Option<Pin<Box<tokio::time::Sleep>>>,
    /// This connection's place under the per-uid and global connection limits.
    _held: Held,
}

impl PeerStream {
    /// Admit a connection under the limits, capturing its peer. The uid is checked against the
    /// limits before the pidfd is opened, so a refused connection costs no further fd.
    pub(crate) fn accept(
        stream: UnixStream,
        limits: &Arc<UidCounter>,
        first_request_within: std::time::Duration,
    ) -> Result<Self, Refused> {
        let cred = stream.peer_cred()?;
        let held = limits.try_acquire(cred.uid()).map_err(|why| Refused::OverLimit { uid: cred.uid(), why })?;
        let info = PeerInfo::of_unix(&stream, cred)?;
        Ok(Self {
            inner: AuthorityFix::new(stream),
            info,
            first_request: Some(Box::pin(tokio::time::sleep(first_request_within))),
            _held: held,
        })
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
        if self.inner.header_blocks() > 0 {
            self.first_request = None;
        } else if let Some(deadline) = self.first_request.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request on the connection in time")));
        }
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
