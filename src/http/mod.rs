//! Small HTTP/1.1 servers beside the Workload API (admin socket, token socket, telemetry, OIDC
//! discovery, bundle endpoint). One accept loop with the limits every one of them needs: per-uid
//! and global connection caps, a deadline for the request head, a body cap, a request timeout.

pub mod client;

use crate::limits::UidCounter;
use crate::peer::PeerInfo;
use ::http::{HeaderValue, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub use ::http::{Method, StatusCode};

pub type Body = Full<Bytes>;
pub type Response = http::Response<Body>;

/// Who sent a request: the kernel's peer credentials on a Unix socket, the address on TCP.
#[derive(Clone, Debug)]
pub enum Caller {
    Unix(PeerInfo),
    Tcp(SocketAddr),
}

impl Caller {
    /// The uid, for Unix callers.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Caller::Unix(p) => Some(p.uid),
            Caller::Tcp(_) => None,
        }
    }
}

/// A request with its whole body read (bodies are small: forms, JSON commands).
#[derive(Debug)]
pub struct Request {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub caller: Caller,
}

impl Request {
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What answers requests on one listener.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> BoxFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn handle(&self, request: Request) -> BoxFuture {
        Box::pin(self(request))
    }
}

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    /// Largest request body; more is answered 413.
    pub max_body: usize,
    /// Time to send the request head; a slow client is dropped.
    pub header_timeout: Duration,
    /// Time for the whole request, body and handler included.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_uid: 64,
            max_body: 64 * 1024,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve HTTP/1.1 on a Unix socket until `shutdown` turns true. Each request carries the peer
/// credentials the kernel gave at accept time (and a pidfd on the process, for attestation).
pub async fn serve_unix(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let counter = UidCounter::new(limits.max_connections, limits.max_connections_per_uid);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match stream {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed on an HTTP socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else { continue };
        let Ok(held) = counter.try_acquire(cred.uid()) else { continue };
        let Ok(peer) = PeerInfo::of_unix(&stream, cred) else { continue };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _held = held;
            serve_connection(stream, Caller::Unix(peer), handler, limits).await;
        });
    }
}

/// Serve HTTP/1.1 (or HTTPS with `tls`) on TCP until `shutdown` turns true.
pub async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<dyn Handler>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    // One bucket for every remote address: TCP callers have no uid.
    let counter = UidCounter::new(limits.max_connections, limits.max_connections);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on an HTTP listener");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(held) = counter.try_acquire(u32::MAX) else { continue };
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _held = held;
            match tls {
                None => serve_connection(stream, Caller::Tcp(addr), handler, limits).await,
                Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => serve_connection(tls_stream, Caller::Tcp(addr), handler, limits).await,
                    Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<S>(stream: S, caller: Caller, handler: Arc<dyn Handler>, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let caller = caller.clone();
        async move {
            let answer = tokio::time::timeout(limits.request_timeout, async move {
                let (parts, body) = req.into_parts();
                let body = match Limited::new(body, limits.max_body).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or broken\n");
                    }
                };
                let request = Request { method: parts.method, uri: parts.uri, headers: parts.headers, body, caller };
                handler.handle(request).await
            })
            .await
            .unwrap_or_else(|_| text(StatusCode::REQUEST_TIMEOUT, "request timed out\n"));
            Ok::<_, std::convert::Infallible>(answer)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// A response with a body and content type.
pub fn with_body(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    with_body(status, "text/plain; charset=utf-8", body)
}

/// A JSON response (`Cache-Control: no-store`: answers carry live state or tokens).
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = with_body(status, "application/json", body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

pub fn method_not_allowed() -> Response {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}
