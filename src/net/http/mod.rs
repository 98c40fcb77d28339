//! Small HTTP/1.1 servers beside the Workload API (admin socket, token socket, telemetry, OIDC
//! discovery, bundle endpoint). One accept loop with the limits every one of them needs: per-uid
//! (Unix) or per-source (TCP) and global connection caps, a deadline for the request head, a body
//! cap, a request timeout.

pub(crate) mod client;
pub(crate) mod hop;
mod routes;
mod status;

use crate::limits::{Source, SourceCounter, Throttled, UidCounter};
use crate::peer::PeerInfo;
use ::http::{HeaderValue, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;

pub(crate) use ::http::Method;
pub(crate) use routes::Routes;
pub(crate) use status::Answer;

pub(crate) type Body = Full<Bytes>;
pub(crate) type Response = http::Response<Body>;

/// Who sent a request: the kernel's peer credentials on a Unix socket; on TCP, anyone (the TCP
/// listeners serve public documents; their limits count by source address at accept).
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    Unix(PeerInfo),
    Tcp,
}

impl Caller {
    /// The uid, for Unix callers.
    pub(crate) fn uid(&self) -> Option<u32> {
        match self {
            Caller::Unix(p) => Some(p.uid),
            Caller::Tcp => None,
        }
    }
}

/// A request with its whole body read (bodies are small: forms, JSON commands).
#[derive(Debug)]
pub(crate) struct Request {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The body was over `max_body`: `body` holds its first `max_body` bytes, the rest (up to
    /// `max_drained_body`) was read and dropped. Only on listeners that set `max_drained_body`.
    pub truncated: bool,
    pub caller: Caller,
}

impl Request {
    pub(crate) fn path(&self) -> &str {
        self.uri.path()
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What answers requests on one listener.
pub(crate) trait Handler: Send + Sync + 'static {
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
pub(crate) struct Limits {
    pub max_connections: usize,
    /// Unix sockets: connections one uid may hold.
    pub max_connections_per_uid: usize,
    /// TCP: connections one source ([`Source`]: an IPv4 address, all of loopback, an IPv6 /64)
    /// may hold.
    pub max_connections_per_source: usize,
    /// TCP: the top of `max_connections` that only a source holding none may take, so a few
    /// busy sources never lock out a new one.
    pub reserved_for_new_sources: usize,
    /// TCP: a connection that sends nothing at all by then is closed, before any HTTP or TLS
    /// work. Shorter than `header_timeout`: holding a slot with an idle connection must cost
    /// an attacker a new connection every few seconds.
    pub first_byte_timeout: Duration,
    /// Largest request body; more is answered 413 (but see `max_drained_body`).
    pub max_body: usize,
    /// Above `max_body`: a body up to this size is read to its end, its first `max_body` bytes
    /// kept, and handed over `truncated` (the handler answers in its own terms, e.g. an OAuth
    /// error); larger ones are 413. 0: off.
    pub max_drained_body: usize,
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
            max_connections_per_source: 256,
            reserved_for_new_sources: 128,
            first_byte_timeout: Duration::from_secs(2),
            max_body: 64 * 1024,
            max_drained_body: 0,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Serve HTTP/1.1 on a Unix socket until `shutdown` turns true. Each request carries the peer
/// credentials the kernel gave at accept time (and a pidfd on the process, for attestation).
pub(crate) async fn serve_unix(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let counter = UidCounter::new(limits.max_connections, limits.max_connections_per_uid);
    accept_unix(listener, counter, "an HTTP socket", shutdown, move |stream, peer, held| {
        let handler = handler.clone();
        tokio::spawn(async move {
            let _held = held;
            serve_connection(stream, Caller::Unix(peer), handler, limits).await;
        });
    })
    .await;
}

/// Accept on a Unix socket until `shutdown` turns true, each connection admitted under `counter`
/// (per uid and global) with its peer captured, and handed to `serve` with its place under the
/// limits. A failed accept (EMFILE and friends) backs off instead of spinning; refusals are
/// logged at most once per 5 s with a count.
pub(crate) async fn accept_unix(
    listener: UnixListener,
    counter: Arc<UidCounter>,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    serve: impl Fn(tokio::net::UnixStream, PeerInfo, crate::limits::Held),
) {
    let mut refusals = Throttled::new(Duration::from_secs(5));
    loop {
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match stream {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(cred) = stream.peer_cred() else { continue };
        let held = match counter.try_acquire(cred.uid()) {
            Ok(held) => held,
            Err(why) => {
                if let Some(n) = refusals.tick() {
                    tracing::warn!(
                        uid = cred.uid(),
                        refused_since_last_report = n,
                        "connection to {what} refused: {why}"
                    );
                }
                continue;
            }
        };
        let Ok(peer) = PeerInfo::of_unix(&stream, cred) else { continue };
        serve(stream, peer, held);
    }
}

/// Serve HTTP/1.1 (or HTTPS with `tls`) on TCP until `shutdown` turns true.
///
/// TCP callers have no uid: connections are counted per source ([`Source`]) under
/// `max_connections_per_source`, with `reserved_for_new_sources` of the global cap kept for
/// sources holding none, so one host cannot take every slot. A plain-HTTP peer over a limit is
/// answered 503 (one non-blocking write, then closed: the accept loop never waits on a refused
/// peer and spawns nothing for it); a TLS peer over a limit is closed without a handshake, which
/// would cost more than the answer is worth. Refusals are logged at most once per 5 s.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<dyn Handler>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) {
    let counter = SourceCounter::with_reserve(
        limits.max_connections,
        limits.max_connections_per_source,
        limits.reserved_for_new_sources,
    );
    let busy = tls.is_none();
    accept_tcp(
        listener,
        counter,
        busy,
        limits.first_byte_timeout,
        "an HTTP listener",
        shutdown,
        move |stream, addr| {
            let handler = handler.clone();
            let tls = tls.clone();
            async move {
                match tls {
                    None => serve_connection(stream, Caller::Tcp, handler, limits).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls_stream)) => serve_connection(tls_stream, Caller::Tcp, handler, limits).await,
                            Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(peer = %addr, "TLS handshake timed out"),
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// Accept on TCP until `shutdown` turns true, each connection admitted under `counter` (per
/// source, with its reserve for new sources, and in all); a peer over a limit is answered 503
/// when `busy` (plain HTTP), else closed. Each admitted connection runs `serve` on its own task,
/// holding its place, once it sent a first byte within `first_byte_timeout`. A failed accept
/// backs off; refusals are logged at most once per 5 s.
pub(crate) async fn accept_tcp<F, Fut>(
    listener: TcpListener,
    counter: Arc<SourceCounter>,
    busy: bool,
    first_byte_timeout: Duration,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, std::net::SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let mut refusals = Throttled::new(Duration::from_secs(5));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on {what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let held = match counter.try_acquire(Source::of(addr.ip())) {
            Ok(held) => held,
            Err(why) => {
                if busy {
                    answer_busy(stream);
                }
                if let Some(n) = refusals.tick() {
                    tracing::warn!(peer = %addr, listener = what, refused_since_last_report = n, "connection refused: {why}");
                }
                continue;
            }
        };
        let serve = serve.clone();
        tokio::spawn(async move {
            let _held = held;
            // A first byte (or the peer's close) within its own short deadline; hyper's
            // `header_timeout` then bounds the rest of the head, the TLS handshake's its own.
            // `peek`, not `readable`: readiness may be reported with nothing to read.
            let first_byte = tokio::time::timeout(first_byte_timeout, stream.peek(&mut [0u8; 1])).await;
            if !matches!(first_byte, Ok(Ok(_))) {
                tracing::debug!(peer = %addr, "connection sent nothing in time; closed");
                return;
            }
            serve(stream, addr).await;
        });
    }
}

/// What a plain-HTTP peer over its limit is told.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 30\r\n\
    Retry-After: 1\r\n\
    Connection: close\r\n\r\n\
    too many connections from you\n";

/// Answer 503 on a fresh connection and close it, without ever waiting: best effort, a peer
/// that is not reading loses the answer, never the accept loop's time.
fn answer_busy(stream: TcpStream) {
    use std::io::{Read, Write};
    // Out of the reactor: tokio's try_write acts only on readiness the reactor has reported,
    // which a fresh registration may not have yet. The socket stays non-blocking.
    let Ok(mut stream) = stream.into_std() else { return };
    // Read what has arrived already (the request, usually): closing with unread data sends a
    // reset, and a reset can make the peer drop the answer.
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    // A fresh socket's send buffer is empty: the whole answer fits.
    let _ = stream.write(BUSY);
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
                let read = if limits.max_drained_body > limits.max_body {
                    read_draining(body, limits.max_body, limits.max_drained_body).await
                } else {
                    Limited::new(body, limits.max_body).collect().await.map(|b| (b.to_bytes(), false)).map_err(|_| ())
                };
                let Ok((body, truncated)) = read else {
                    return text(Answer::PayloadTooLarge, "request body too large or broken\n");
                };
                let request =
                    Request { method: parts.method, uri: parts.uri, headers: parts.headers, body, truncated, caller };
                handler.handle(request).await
            })
            .await
            .unwrap_or_else(|_| text(Answer::RequestTimeout, "request timed out\n"));
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

/// Read a body of at most `drain` bytes, keeping its first `keep` (and whether more came).
async fn read_draining(mut body: hyper::body::Incoming, keep: usize, drain: usize) -> Result<(Bytes, bool), ()> {
    let mut kept = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(drop)?.into_data() else { continue };
        total = total.saturating_add(data.len());
        if total > drain {
            return Err(());
        }
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..data.len().min(room)]);
    }
    Ok((kept.freeze(), total > keep))
}

/// A response with a body and content type.
pub(crate) fn with_body(answer: Answer, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut response = http::Response::new(Full::new(body.into()));
    *response.status_mut() = answer.status();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// A plain-text response.
pub(crate) fn text(answer: Answer, body: impl Into<Bytes>) -> Response {
    with_body(answer, "text/plain; charset=utf-8", body)
}

/// A JSON response (`Cache-Control: no-store`: answers carry live state or tokens).
pub(crate) fn json(answer: Answer, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = with_body(answer, "application/json", body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn not_found() -> Response {
    text(Answer::NotFound, "not found\n")
}

pub(crate) fn method_not_allowed() -> Response {
    text(Answer::MethodNotAllowed, "method not allowed\n")
}
