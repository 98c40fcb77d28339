//! A guard's listeners and connections: the accept loops of `net::http` with the guard's limits
//! (per uid on a Unix socket, per source on TCP, in all), hyper's HTTP/1.1 server with a head
//! deadline and a head size cap, an idle keep-alive connection closed after `idle_timeout`, and
//! the whole request bounded by `request_timeout`. Every answer carries its [`Hold`], which writes
//! the action's audit line when the answer's body ends, however it ends.

use super::action;
use super::auth::Verifier;
use crate::caller::Pipeline;
use crate::config::guard::{Guard, GuardLimits};
use crate::events::guard::GuardAction;
use crate::events::{Event, Events};
use crate::gateway::body::{self, GwBody};
use crate::limits::{SourceCounter, UidCounter};
use crate::net::http::Answer;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub(super) type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector>, GwBody>;
/// The upstream client and the CA file and TLS config it was built with.
type Cached = (Option<PathBuf>, Arc<rustls::ClientConfig>, Upstream);

/// What every connection of one guard shares.
pub(crate) struct Shared {
    /// The guard's settings in force (audience, upstream and `mcp` change on reload).
    pub config: watch::Receiver<Arc<Guard>>,
    /// The limits it was started with (a change needs a restart).
    pub limits: GuardLimits,
    pub pipeline: Arc<Pipeline>,
    pub verifier: Verifier,
    pub events: Events,
    client: Mutex<Option<Cached>>,
}

impl Shared {
    pub(super) fn new(
        config: watch::Receiver<Arc<Guard>>,
        limits: GuardLimits,
        pipeline: Arc<Pipeline>,
        verifier: Verifier,
        events: Events,
    ) -> Self {
        Self { config, limits, pipeline, verifier, events, client: Mutex::new(None) }
    }

    /// The pooled upstream client (http or https; `ca_file` or the system roots for https).
    pub(super) fn client(&self, ca_file: Option<&Path>) -> Result<Upstream, String> {
        let tls = crate::gateway::tls::client_config(ca_file, false)?;
        let mut cached = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((path, cfg, client)) = cached.as_ref()
            && path.as_deref() == ca_file
            && Arc::ptr_eq(cfg, &tls)
        {
            return Ok(client.clone());
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.limits.connect_timeout));
        http.set_nodelay(true);
        let mut cfg = (*tls).clone();
        // The connector sets ALPN itself (and refuses a config that has it).
        cfg.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client: Upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .timer(TokioTimer::new())
            .build(https);
        *cached = Some((ca_file.map(Path::to_path_buf), tls, client.clone()));
        Ok(client)
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    /// A TCP peer's address (without the port: its refusal budget).
    pub source: Option<String>,
    /// An mTLS guard's client: the SPIFFE ID of its verified X.509-SVID.
    pub client: Option<crate::spiffe_id::SpiffeId>,
}

/// A connection's requests in flight and when its last answer ended (idle detection).
pub(super) struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0)
            .then(|| self.last.lock().unwrap_or_else(|p| p.into_inner()).elapsed())
    }
}

/// Serve a guard's Unix socket.
pub(crate) async fn serve_unix(listener: UnixListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let counter = UidCounter::new(shared.limits.max_connections, shared.limits.max_connections_per_peer);
    let stop = shutdown.clone();
    crate::net::http::accept_unix(listener, counter, "a guard socket", stop, move |stream, peer, held| {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _held = held;
            let peer = Peer { uid: Some(peer.uid), pid: peer.pid, source: None, client: None };
            serve_connection(stream, peer, shared, shutdown).await;
        });
    })
    .await;
}

/// Serve a guard's TCP listener: plain HTTP, or with `tls` (an mTLS guard) TLS 1.3 whose
/// handshake must end within `header_timeout`.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let l = shared.limits;
    let counter = SourceCounter::with_reserve(l.max_connections, l.max_connections_per_peer, l.max_connections / 8);
    let first_byte = l.header_timeout.min(Duration::from_secs(2));
    let stop = shutdown.clone();
    crate::net::http::accept_tcp(
        listener,
        counter,
        tls.is_none(),
        first_byte,
        "a guard listener",
        stop,
        move |stream, addr| {
            let (shared, shutdown, tls) = (shared.clone(), shutdown.clone(), tls.clone());
            async move {
                let mut peer = Peer { uid: None, pid: None, source: Some(addr.ip().to_string()), client: None };
                let Some(acceptor) = tls else {
                    return serve_connection(stream, peer, shared, shutdown).await;
                };
                match tokio::time::timeout(shared.limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        peer.client = super::mtls::client_id(stream.get_ref().1);
                        if peer.client.is_some() {
                            serve_connection(stream, peer, shared, shutdown).await;
                        }
                    }
                    Ok(Err(e)) => match super::mtls::refused_certificate(&e) {
                        Some(why) => audit_refused(&shared, &peer, format!("TLS handshake refused: {why}")),
                        None => tracing::debug!(error = %e, peer = %addr, "guard TLS handshake failed"),
                    },
                    Err(_) => tracing::debug!(peer = %addr, "guard TLS handshake took longer than header_timeout"),
                }
            }
        },
    )
    .await;
}

async fn serve_connection<S>(stream: S, peer: Peer, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity { in_flight: AtomicUsize::new(0), last: Mutex::new(Instant::now()) });
    let service = {
        let (shared, peer, activity) = (shared.clone(), peer.clone(), activity.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (shared, peer, activity) = (shared.clone(), peer.clone(), activity.clone());
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            async move {
                let limit = shared.limits.request_timeout;
                let answer =
                    tokio::time::timeout(limit, action::handle(shared, peer, activity, req)).await.unwrap_or_else(
                        |_| refusal(Answer::GatewayTimeout, "timeout", "the request took longer than request_timeout"),
                    );
                Ok::<_, std::convert::Infallible>(answer)
            }
        })
    };
    let limits = shared.limits;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    malformed(&shared, &peer, &e);
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {
                if activity.idle_for().is_some_and(|d| d >= limits.idle_timeout) {
                    return;
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// A request hyper refused itself (a malformed or oversized head) is audited as a refusal.
fn malformed(shared: &Shared, peer: &Peer, e: &hyper::Error) {
    if !(e.is_parse() || e.is_parse_too_large() || e.is_parse_status()) {
        tracing::debug!(error = %e, "guard connection ended with an error");
        return;
    }
    let status = if e.is_parse_too_large() { 431 } else { 400 };
    audit_refused_with(shared, peer, Some(status), format!("malformed request: {e}"));
}

/// A connection refused before any request (an mTLS handshake): audited with `method: "-"`.
fn audit_refused(shared: &Shared, peer: &Peer, reason: String) {
    audit_refused_with(shared, peer, None, reason);
}

fn audit_refused_with(shared: &Shared, peer: &Peer, status: Option<u16>, reason: String) {
    let rec = GuardAction {
        guard: shared.config.borrow().name.clone(),
        uid: peer.uid,
        pid: peer.pid,
        source: peer.source.clone(),
        client_spiffe_id: peer.client.as_ref().map(ToString::to_string),
        method: "-".into(),
        status,
        reason,
        ..GuardAction::default()
    };
    shared.events.emit(Event::GuardAction(Box::new(rec)));
}

/// One action's audit line, written when dropped (the end of its answer's body). Until an answer
/// is chosen it records a timeout: a request dropped by `request_timeout` is audited as one.
pub(super) struct Hold {
    pub rec: GuardAction,
    events: Events,
    started: Instant,
    /// `tools/list` through a stream: the tools the filter took out.
    pub hidden: Option<Arc<Mutex<Vec<String>>>>,
    activity: Arc<Activity>,
}

impl Hold {
    pub(super) fn new(
        shared: &Shared,
        guard: &Guard,
        peer: &Peer,
        activity: Arc<Activity>,
        req: &Request<Incoming>,
    ) -> Self {
        let rec = GuardAction {
            guard: guard.name.clone(),
            uid: peer.uid,
            pid: peer.pid,
            source: peer.source.clone(),
            client_spiffe_id: peer.client.as_ref().map(ToString::to_string),
            method: req.method().to_string(),
            path: req.uri().path().chars().take(2048).collect(),
            status: None,
            reason: "no answer: request_timeout passed or the client went away".into(),
            ..GuardAction::default()
        };
        Self { rec, events: shared.events.clone(), started: Instant::now(), hidden: None, activity }
    }

    /// Answer with `response`, the line's status and outcome set, the line held by its body.
    pub(super) fn answer(mut self, response: Response<GwBody>, allowed: bool, reason: String) -> Response<GwBody> {
        self.rec.status = Some(response.status().as_u16());
        self.rec.allowed = allowed;
        self.rec.reason = reason;
        let (parts, body) = response.into_parts();
        let held = Mutex::new(Some(self));
        let body = body
            .map_frame(move |f| {
                let _ = &held;
                f
            })
            .boxed();
        Response::from_parts(parts, body)
    }

    /// Refuse: a JSON `{error, reason}` answer.
    pub(super) fn refuse(self, answer: Answer, error: &str, reason: String) -> Response<GwBody> {
        let r = refusal(answer, error, &reason);
        self.answer(r, false, reason)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        *self.activity.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut rec = std::mem::take(&mut self.rec);
        rec.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if let Some(h) = &self.hidden {
            rec.tools_hidden.extend(h.lock().unwrap_or_else(|p| p.into_inner()).drain(..));
        }
        self.events.emit(Event::GuardAction(Box::new(rec)));
    }
}

/// A JSON answer.
pub(super) fn json(answer: Answer, value: &serde_json::Value) -> Response<GwBody> {
    let mut r = Response::new(body::full(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = answer.status();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON error answer: `{"error": ..., "reason": ...}`.
pub(super) fn refusal(answer: Answer, error: &str, reason: &str) -> Response<GwBody> {
    json(answer, &serde_json::json!({ "error": error, "reason": reason }))
}
