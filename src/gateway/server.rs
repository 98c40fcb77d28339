//! The gateway's listeners and the life of one call: accept (a Unix peer from the kernel, a
//! loopback TCP peer attributed by socket diagnostics) → route → attest → the route serves this
//! agent → method and path allowed → credential injected (or a delegated token checked) →
//! forwarded over TLS → the response streamed back → one audit line.
//!
//! Every refusal is a JSON error with a reason and an audit line (counted against the caller's
//! refusal budget). A revocation reaches open connections: each one re-judges its agents when
//! the policy changes and is closed (streams in flight included) when one is cut off.

use super::body::{self, CallGuard, GwBody, Metered};
use super::credentials::Broker;
use super::route::{self, Resolved, Unrouted};
use crate::caller::{Caller, Pipeline, any_entry};
use crate::config::gateway::GatewayLimits;
use crate::events::gateway::{GatewayCall, Mode};
use crate::events::{Call, Event, Events, Rpc};
use crate::issuer::KeySource;
use crate::limits::{Throttled, UidCounter};
use crate::net::http::hop::strip_hop_by_hop;
use crate::peer::PeerInfo;
use crate::registry::authz::{Ask, Ctx, Resource, What};
use crate::spiffe_id::SpiffeId;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::watch;

pub(crate) const RPC: Rpc = Rpc::of(Call::Gateway);
/// The `Via` pseudonym (RFC 9110 §7.6.3).
const VIA: &str = "1.1 tessera";
/// How often a connection handed to a tunnel looks whether the tunnel ended.
const TUNNEL_POLL: Duration = Duration::from_millis(250);
/// Time for a new connection's first request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A route's CA file (None: the system roots) and whether its hosts are guarded.
type ClientKey = (Option<PathBuf>, bool);
type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector<Resolve>>, GwBody>;

/// Everything a call needs, shared by every connection.
pub(crate) struct Shared {
    pub routes: watch::Receiver<Arc<super::Table>>,
    pub pipeline: Arc<Pipeline>,
    pub broker: Arc<Broker>,
    /// The delegation keys (local CA mode), for delegated tokens presented on routes without a
    /// credential.
    pub keys: Option<Arc<dyn KeySource>>,
    pub events: Events,
    pub limits: GatewayLimits,
    /// The daemon's own TCP listeners: never an upstream of a `*.suffix` route.
    pub own_listeners: Arc<Vec<SocketAddr>>,
    pub connections: Arc<UidCounter>,
    /// The /proc scans of TCP attribution: their cost is the caller's to choose (every fd of
    /// every thread of its uid's processes), so a few at once and per uid in turn.
    scans: crate::limits::FairSlots,
    clients: Mutex<HashMap<ClientKey, (Arc<rustls::ClientConfig>, Upstream)>>,
}

impl Shared {
    pub(crate) fn new(
        routes: watch::Receiver<Arc<super::Table>>,
        pipeline: Arc<Pipeline>,
        broker: Arc<Broker>,
        keys: Option<Arc<dyn KeySource>>,
        events: Events,
        limits: GatewayLimits,
        own_listeners: Vec<SocketAddr>,
    ) -> Self {
        let connections = UidCounter::new(limits.max_connections, limits.max_connections_per_uid);
        Self {
            routes,
            pipeline,
            broker,
            keys,
            events,
            limits,
            own_listeners: Arc::new(own_listeners),
            connections,
            scans: crate::limits::FairSlots::new(ATTRIBUTIONS_AT_ONCE, ATTRIBUTIONS_PER_UID),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The pooled upstream client for a CA (None: the system roots); `guarded` for `*.suffix`
    /// routes, whose hosts are the agent's choice: those never reach loopback, link-local or
    /// the daemon's own listeners.
    fn client(&self, ca_file: Option<&PathBuf>, guarded: bool) -> Result<Upstream, String> {
        let tls = super::tls::client_config(ca_file.map(PathBuf::as_path), true)?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let key = (ca_file.cloned(), guarded);
        if let Some((cfg, client)) = clients.get(&key)
            && Arc::ptr_eq(cfg, &tls)
        {
            return Ok(client.clone());
        }
        let mut http = HttpConnector::new_with_resolver(Resolve { guarded, own: self.own_listeners.clone() });
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.limits.connect_timeout));
        http.set_nodelay(true);
        let mut cfg = (*tls).clone();
        cfg.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client: Upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(https);
        clients.insert(key, (tls, client.clone()));
        Ok(client)
    }
}

/// Name resolution for upstream connections. Guarded: addresses on loopback, link-local,
/// unspecified or multicast networks, and the daemon's own listeners, are dropped (a name that
/// resolves only to those fails): an agent choosing a host under `*.suffix` must not reach the
/// node's own services through DNS it controls.
#[derive(Clone)]
struct Resolve {
    guarded: bool,
    own: Arc<Vec<SocketAddr>>,
}

impl tower::Service<Name> for Resolve {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (guarded, own) = (self.guarded, self.own.clone());
        Box::pin(async move { resolve(name.as_str(), 0, guarded, &own).await.map(Vec::into_iter) })
    }
}

/// The addresses of `host` (with `port`); `guarded`: without loopback, link-local, metadata,
/// unspecified or multicast addresses, the daemon's own listeners or any address of this node
/// (one of its interfaces reaches every listener bound to a wildcard address); a name that
/// resolves only to those is an error.
async fn resolve(host: &str, port: u16, guarded: bool, own: &[SocketAddr]) -> std::io::Result<Vec<SocketAddr>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if !guarded {
        return Ok(found);
    }
    let kept: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| public(a.ip()) && !own.iter().any(|o| o.ip() == a.ip()) && !local_address(a.ip()))
        .collect();
    if kept.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{host} resolves only to loopback, link-local, metadata or this node's own addresses"),
        ));
    }
    Ok(kept)
}

/// Whether `ip` belongs to this node (binding a socket to it works only then).
fn local_address(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The IPv6 address of the cloud metadata service (AWS), reachable from an instance.
const METADATA_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Not loopback, link-local, unspecified or multicast (v4, v6 and v4-mapped v6), nor the
/// metadata service's IPv6 address.
pub(crate) fn public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
                    || v6 == METADATA_V6)
            }
        },
    }
}

/// One accepted connection's state.
struct Conn {
    peer: PeerInfo,
    transport: &'static str,
    /// TCP: the attribution, re-checked after each attestation.
    tcp: Option<crate::net::tcp_peer::TcpPeer>,
    /// The SPIFFE IDs this connection's calls acted as (re-judged on a policy change).
    agents: Mutex<BTreeSet<SpiffeId>>,
    /// The connection's caller, reused by its calls for at most [`REUSE`] (see [`caller_of`]);
    /// a policy change re-judges its attestation without attesting again (unless the attestor
    /// settings changed).
    cached: Mutex<Option<Cached>>,
    /// When the TCP socket was last found held by its process alone (accept, then re-scans).
    last_scan: Mutex<Instant>,
    /// A re-scan found another holder: nothing more is served on this connection.
    tainted: AtomicBool,
    /// Shared with the connection's IO (idle, slow heads, framing).
    watch: Arc<super::conn_io::Watch>,
    /// Closes tunnels when the connection is cut off.
    cut: watch::Sender<bool>,
    /// The policy inputs of the tunnel this connection opened (it outlives its decision): decided
    /// again on a policy change, the connection cut when the new set denies it.
    tunnel: Mutex<Option<Decided>>,
}

/// What a call was decided on, kept to decide it again under a new policy set.
#[derive(Debug, Clone)]
struct Decided {
    agent: SpiffeId,
    selectors: Vec<String>,
    host: String,
    method: String,
    path: String,
    route: Option<String>,
    user: Option<String>,
    scopes: Option<Vec<String>>,
}

impl Decided {
    fn ask<'a>(&'a self, entry: Option<&'a crate::registry::Entry>) -> Ask<'a> {
        Ask {
            what: What::Call,
            principal: &self.agent,
            entry,
            selectors: Some(&self.selectors),
            resource: Resource::Host(&self.host),
            ctx: Ctx {
                method: Some(&self.method),
                path: Some(&self.path),
                route: self.route.as_deref(),
                user: self.user.as_deref(),
                scopes: self.scopes.as_deref(),
                ..Ctx::default()
            },
        }
    }
}

/// Serve the Unix socket.
pub(crate) async fn serve_unix(listener: UnixListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let counter = shared.connections.clone();
    let stop = shutdown.clone();
    crate::net::http::accept_unix(listener, counter, "the gateway socket", stop, move |stream, peer, held| {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _held = held;
            serve_connection(stream, peer, "unix", None, shared, shutdown).await;
        });
    })
    .await;
}

/// Serve the loopback TCP listener: each connection is attributed to the one process holding
/// its socket, or answered 403 and closed.
pub(crate) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let refusals = Arc::new(Mutex::new(Throttled::new(Duration::from_secs(5))));
    // The /proc scan that finds a socket's holder reads every fd of the socket owner's
    // processes, so its cost is the caller's to choose: scans run on blocking threads, a few at
    // once and one per uid at a time (`FairSlots`), and connections waiting for one are capped
    // per uid and in all (past a cap, closed at once). The socket's owner comes first, from one
    // netlink lookup, so one uid's flood queues behind itself, not in front of other uids.
    let waiting = UidCounter::new(MAX_WAITING_FOR_ATTRIBUTION, MAX_WAITING_PER_UID);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the gateway listener");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small answers (an SSE event, a short JSON) go out at once, not after a delayed ACK.
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else { continue };
        let socket = crate::net::tcp_peer::socket_of(addr, local);
        let socket_uid = socket.as_ref().ok().map(|s| s.uid);
        let queued = match socket_uid.map(|uid| waiting.try_acquire(uid)) {
            Some(Ok(held)) => Some(held),
            Some(Err(why)) => {
                if let Some(n) = refusals.lock().unwrap_or_else(|p| p.into_inner()).tick() {
                    tracing::warn!(uid = ?socket_uid, refused_since_last_report = n, "gateway connection refused: {why}");
                }
                continue;
            }
            None => None,
        };
        let (shared, shutdown, refusals) = (shared.clone(), shutdown.clone(), refusals.clone());
        tokio::spawn(async move {
            let attributed = match socket {
                Ok(socket) => attribute(addr, local, socket, &shared.scans).await,
                Err(e) => Err(e.to_string()),
            };
            drop(queued);
            match attributed {
                Ok(tcp) => {
                    let held = match shared.connections.try_acquire(tcp.info.uid) {
                        Ok(h) => h,
                        Err(why) => {
                            if let Some(n) = refusals.lock().unwrap_or_else(|p| p.into_inner()).tick() {
                                tracing::warn!(
                                    uid = tcp.info.uid,
                                    refused_since_last_report = n,
                                    "gateway connection refused: {why}"
                                );
                            }
                            return;
                        }
                    };
                    let _held = held;
                    let peer = tcp.info.clone();
                    serve_connection(stream, peer, "tcp", Some(tcp), shared, shutdown).await;
                }
                Err(why) => {
                    let reason = format!("the connection from {addr} could not be attributed to one process: {why}");
                    let rec = GatewayCall {
                        transport: "tcp",
                        // The socket's owner, when the kernel named one: its refusal budget.
                        uid: socket_uid,
                        method: "-".into(),
                        status: Some(403),
                        reason: reason.clone(),
                        ..GatewayCall::default()
                    };
                    tracing::debug!(peer = %addr, "gateway: {reason}");
                    shared.events.emit(Event::GatewayCall(Box::new(rec)));
                    answer_unattributed(stream, &reason).await;
                }
            }
        });
    }
}

/// Attributions (and re-scans) running at once, in all and per uid, and connections that may
/// wait for one. An SDK opening its pool opens dozens at once.
const ATTRIBUTIONS_AT_ONCE: usize = 4;
const ATTRIBUTIONS_PER_UID: usize = 1;
const MAX_WAITING_FOR_ATTRIBUTION: usize = 1024;
const MAX_WAITING_PER_UID: usize = 256;
/// A TCP connection's socket is scanned again for other holders at most this often (at the
/// full attestations of its calls).
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// The one process holding the client's socket. A socket briefly held twice because its
/// process is starting a child (between fork and exec the child holds copies of every fd) is
/// looked up once more a moment later; held twice then, it is refused.
async fn attribute(
    addr: SocketAddr,
    local: SocketAddr,
    socket: crate::net::tcp_peer::SocketEntry,
    scans: &crate::limits::FairSlots,
) -> Result<crate::net::tcp_peer::TcpPeer, String> {
    use crate::net::tcp_peer::{Unattributable, attribute_socket};
    for attempt in 0..2 {
        let slot = scans.acquire(socket.uid).await.map_err(|e| e.to_string())?;
        let r = tokio::task::spawn_blocking(move || attribute_socket(addr, local, socket))
            .await
            .map_err(|e| e.to_string())?;
        drop(slot);
        match r {
            // A socket briefly shared by a forking client, or a thread that went away mid-scan.
            Err(Unattributable::Ambiguous { .. } | Unattributable::Io { .. }) if attempt == 0 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other.map_err(|e| e.to_string()),
        }
    }
    Err("attribution gave no answer".into())
}

/// A 403 for a TCP peer no process could be found for: written at once (whatever it sent, or
/// nothing yet), then closed; such a connection holds nothing of the daemon's for long.
async fn answer_unattributed(mut stream: TcpStream, reason: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read what has arrived (the request, usually): closing with unread data sends a reset,
    // which can make the peer drop the answer.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut sink)).await;
    let answer = super::conn_io::raw_answer(403, "Forbidden", "unattributed", reason);
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&answer)).await;
}

async fn serve_connection<S>(
    stream: S,
    peer: PeerInfo,
    transport: &'static str,
    tcp: Option<crate::net::tcp_peer::TcpPeer>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (cut, _) = watch::channel(false);
    let io_watch = Arc::new(super::conn_io::Watch::default());
    let conn = Arc::new(Conn {
        peer,
        transport,
        tcp,
        agents: Mutex::new(BTreeSet::new()),
        cached: Mutex::new(None),
        tunnel: Mutex::new(None),
        last_scan: Mutex::new(Instant::now()),
        tainted: AtomicBool::new(false),
        watch: io_watch.clone(),
        cut,
    });
    let base = Instant::now();
    let io = super::conn_io::ConnIo::new(stream, io_watch.clone(), base, HEADER_TIMEOUT);
    let service = {
        let (shared, conn) = (shared.clone(), conn.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (shared, conn) = (shared.clone(), conn.clone());
            conn.watch.in_flight.fetch_add(1, Ordering::Relaxed);
            conn.watch.served.fetch_add(1, Ordering::Relaxed);
            async move {
                let timeout = shared.limits.request_timeout;
                let in_flight = conn.watch.in_flight.clone();
                let answer = tokio::time::timeout(timeout, handle(shared, conn, req)).await.unwrap_or_else(|_| {
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    refusal(StatusCode::GATEWAY_TIMEOUT, "timeout", "the request took longer than request_timeout")
                });
                Ok::<_, std::convert::Infallible>(answer)
            }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // A backstop: ConnIo answers a slow head (408) first.
        .header_read_timeout(2 * HEADER_TIMEOUT)
        .max_buf_size(shared.limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    let mut policy = shared.pipeline.policy.clone();
    let idle = shared.limits.idle_timeout;
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    // Cut off from within (a re-scan found another holder of its socket).
    let mut cut = conn.cut.subscribe();
    let cut_off = async move {
        let _ = cut.wait_for(|c| *c).await;
    };
    tokio::pin!(cut_off);
    // hyper is done with a connection once it hands it to a tunnel (CONNECT): the connection is
    // then watched (revocation, shutdown) until the tunnel ends, not cut at once.
    let mut tunnelled = false;
    loop {
        let since = Duration::from_millis(io_watch.last.load(Ordering::Relaxed));
        let idle_at = tokio::time::Instant::from_std(base + since + idle);
        tokio::select! {
            r = &mut served, if !tunnelled => {
                match r {
                    Ok(()) if io_watch.in_flight.load(Ordering::Relaxed) > 0 => tunnelled = true,
                    Ok(()) => break,
                    Err(e) => {
                        log_connection_error(&shared, &conn, &e);
                        break;
                    }
                }
            }
            _ = tokio::time::sleep(TUNNEL_POLL), if tunnelled => {
                if io_watch.in_flight.load(Ordering::Relaxed) == 0 {
                    break;
                }
            }
            changed = policy.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Err(why) = still_served(&shared, &conn).await {
                    tracing::info!(pid = ?conn.peer.pid, uid = conn.peer.uid, "gateway connection closed: {why}");
                    break;
                }
            }
            _ = tokio::time::sleep_until(idle_at) => {
                let quiet = base.elapsed().saturating_sub(Duration::from_millis(io_watch.last.load(Ordering::Relaxed)));
                // A head in progress is the head timeout's (408), not the idle timeout's.
                let idle_now = io_watch.in_flight.load(Ordering::Relaxed) == 0
                    && !io_watch.head_in_progress.load(Ordering::Relaxed);
                if idle_now && quiet >= idle {
                    break;
                }
                if quiet >= idle {
                    // Busy (a long stream whose bytes the body timeouts watch): look again later.
                    io_watch.last.store(base.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }
            _ = &mut stop => break,
            _ = &mut cut_off => break,
        }
    }
    let _ = conn.cut.send(true);
}

/// A malformed request (hyper answered it 400/431 itself) is audited as a refusal.
fn log_connection_error(shared: &Shared, conn: &Conn, e: &hyper::Error) {
    let refused = |status: u16, reason: String| {
        let rec = GatewayCall {
            pid: conn.peer.pid,
            uid: Some(conn.peer.uid),
            transport: conn.transport,
            method: "-".into(),
            status: Some(status),
            reason,
            ..GatewayCall::default()
        };
        shared.events.emit(Event::GatewayCall(Box::new(rec)));
    };
    if conn.watch.slow_head.load(Ordering::Relaxed) {
        refused(408, format!("the request head did not arrive within {HEADER_TIMEOUT:?} (slow client)"));
    } else if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
        refused(if e.is_parse_too_large() { 431 } else { 400 }, format!("malformed request: {e}"));
    } else if e.is_timeout() {
        tracing::debug!(pid = ?conn.peer.pid, "gateway connection: no request head in time");
    } else {
        tracing::debug!(error = %e, "gateway connection ended with an error");
    }
}

/// A connection's attested caller and when its attestation started.
struct Cached {
    caller: Arc<Caller>,
    at: Instant,
    renewing: bool,
}

/// Longest a connection's calls reuse one attestation, and the age from which it is renewed in
/// the background while calls keep coming (so a steady caller never waits for a full one).
const REUSE: Duration = Duration::from_secs(1);
const RENEW_AFTER: Duration = Duration::from_millis(500);

/// The caller of a call on this connection. SDKs keep a pool of connections and call back to
/// back: each connection's first call is attested in full, and its later calls reuse that for
/// at most [`REUSE`] under the same policy, each after checking that the pinned process is
/// alive and still runs the executable it connected with (an exec since is a new caller:
/// attested in full). Any policy change (reload, revocation) forces a full attestation.
async fn caller_of(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    route: &Arc<crate::config::gateway::Route>,
) -> Result<Arc<Caller>, String> {
    if conn.tainted.load(Ordering::Relaxed) {
        return Err("the connection's socket was found held by another process too".into());
    }
    let policy = shared.pipeline.policy();
    let reuse = {
        let mut cached = conn.cached.lock().unwrap_or_else(|p| p.into_inner());
        match cached.as_mut() {
            Some(c) if c.at.elapsed() < REUSE && Arc::ptr_eq(&c.caller.policy, &policy) => {
                let renew = c.at.elapsed() >= RENEW_AFTER && !c.renewing;
                c.renewing |= renew;
                Some((c.caller.clone(), renew))
            }
            _ => None,
        }
    };
    if let Some((caller, renew)) = reuse {
        let same_exe = conn.peer.pid.is_some_and(|pid| {
            let now = tessera_attestors::ExeIdentity::of_peer(pid, conn.peer.pidfd.as_deref());
            now.is_some() && now == conn.peer.exe
        });
        if same_exe {
            if renew {
                let (shared, conn, route) = (shared.clone(), conn.clone(), route.clone());
                tokio::spawn(async move {
                    let fresh = attest_fully(&shared, &conn, RPC.renewal(), &route).await;
                    if fresh.is_err() {
                        *conn.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    }
                });
            }
            return Ok(caller);
        }
        *conn.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    attest_fully(shared, conn, RPC, route).await
}

/// A full attestation of the connection's process, kept for its next calls.
async fn attest_fully(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    rpc: Rpc,
    route: &Arc<crate::config::gateway::Route>,
) -> Result<Arc<Caller>, String> {
    let started = Instant::now();
    // In full (not a session's reuse): this result is itself reused for up to REUSE.
    // A caller none of whose entries this route serves is a refused caller: its `attested` line
    // counts against its uid's refusal budget.
    let serves = |e: &crate::registry::Entry| route.serves(&e.spiffe_id);
    let caller = Arc::new(shared.pipeline.caller_full(&conn.peer, rpc, &serves).await.map_err(|e| e.to_string())?);
    // A TCP caller's socket is checked to have no other holder again, as at accept: a copy
    // handed on since (fork, fd passing) would let another process speak as this one.
    let due = conn.last_scan.lock().unwrap_or_else(|p| p.into_inner()).elapsed() >= RESCAN_EVERY;
    if let Some(tcp) = conn.tcp.clone().filter(|_| due) {
        let slot = shared.scans.acquire(tcp.info.uid).await.map_err(|e| e.to_string())?;
        let sole = tokio::task::spawn_blocking(move || tcp.still_sole_holder()).await.unwrap_or(false);
        drop(slot);
        if !sole {
            // For good: every later call on it is refused and the connection closed (after this
            // call's answer, or at once when a background renewal found it: streams and
            // tunnels in flight end too).
            conn.tainted.store(true, Ordering::Relaxed);
            *conn.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if rpc.renewal {
                let _ = conn.cut.send(true);
            }
            return Err("the connection's socket is no longer held by its process alone".into());
        }
        *conn.last_scan.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    *conn.cached.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(Cached { caller: caller.clone(), at: started, renewing: false });
    Ok(caller)
}

/// Err (why) when a policy change took away an identity this connection acted as.
async fn still_served(shared: &Arc<Shared>, conn: &Conn) -> Result<(), String> {
    let agents: Vec<SpiffeId> = conn.agents.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
    if agents.is_empty() {
        return Ok(());
    }
    let last = conn.cached.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| c.caller.clone());
    let now = shared.pipeline.policy();
    // The same attestor settings: the selectors the connection's last call was attested with
    // are judged by the new policy (no /proc work, so a revocation reaches thousands of open
    // connections at once). Otherwise (a new digest rule, say) the process is attested again.
    let entries: Vec<SpiffeId> = match last {
        Some(caller) if caller.policy.attestor.config() == now.attestor.config() => {
            match now.entitled(&caller.attestation.selectors) {
                Ok(entries) => entries.iter().map(|e| e.spiffe_id.clone()).collect(),
                Err(crate::registry::NotEntitled::Denied(rule)) => return Err(format!("revoked by rule {}", rule.id)),
                Err(crate::registry::NotEntitled::NoEntry) => return Err("no entry matches it any more".into()),
            }
        }
        _ => {
            let caller =
                shared.pipeline.caller_reused_for(&conn.peer, RPC, any_entry).await.map_err(|e| e.to_string())?;
            caller.entries.iter().map(|e| e.spiffe_id.clone()).collect()
        }
    };
    for a in &agents {
        if !entries.contains(a) {
            return Err(format!("{a} was revoked or no longer matches this process"));
        }
    }
    // An open tunnel is decided again under the policies in force now.
    let tunnel = conn.tunnel.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let (Some(d), Some(authz)) = (tunnel, &now.authz) {
        let entry = now.registry.entries().iter().find(|e| e.spiffe_id == d.agent && !e.retired);
        let v = authz.decide(&d.ask(entry.map(|e| &**e)));
        if !v.permits() {
            return Err(format!("the open tunnel to {}: {}", d.host, v.reason()));
        }
    }
    Ok(())
}

/// `[policy]` on this call (`Action::"call"`, resource `Host::"<host>"` without the port), once
/// the route, the agent and any delegated token are known; the verdict goes on the audit line.
fn decide(
    rec: &mut GatewayCall,
    agent: &Caller,
    entry: &crate::registry::Entry,
    resolved: &Resolved,
) -> Result<Option<Decided>, String> {
    let Some(authz) = &agent.policy.authz else { return Ok(None) };
    let d = Decided {
        agent: entry.spiffe_id.clone(),
        selectors: crate::caller::selector_strings(&agent.attestation.selectors),
        host: resolved.host.clone(),
        method: rec.method.clone(),
        path: route::decoded_path(&rec.path),
        route: rec.route.clone(),
        user: rec.user.clone(),
        scopes: rec.scope.as_ref().map(|s| s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()),
    };
    let v = authz.decide(&d.ask(Some(entry)));
    let (permits, reason) = (v.permits(), v.reason());
    rec.policy = Some(v);
    if permits { Ok(Some(d)) } else { Err(reason) }
}

/// A JSON error answer.
pub(crate) fn refusal(status: StatusCode, error: &str, reason: &str) -> Response<GwBody> {
    let body = serde_json::to_vec(&serde_json::json!({ "error": error, "reason": reason })).unwrap_or_default();
    let mut r = Response::new(body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One call. Refusals are answered and audited here; an allowed call's line is written when its
/// response body ends (the guard in the body).
async fn handle(shared: Arc<Shared>, conn: Arc<Conn>, req: Request<Incoming>) -> Response<GwBody> {
    let started = Instant::now();
    let mut rec = GatewayCall {
        pid: conn.peer.pid,
        uid: Some(conn.peer.uid),
        transport: conn.transport,
        method: req.method().to_string(),
        path: if req.method() == http::Method::CONNECT { String::new() } else { req.uri().path().to_owned() },
        ..GatewayCall::default()
    };
    let deny = |mut rec: GatewayCall, status: StatusCode, error: &str, reason: String| {
        rec.status = Some(status.as_u16());
        rec.reason = reason.clone();
        rec.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        shared.events.emit(Event::GatewayCall(Box::new(rec)));
        conn.watch.in_flight.fetch_sub(1, Ordering::Relaxed);
        refusal(status, error, &reason)
    };
    if conn.watch.conflicting_framing.swap(false, Ordering::Relaxed) {
        // hyper dropped the Content-Length and will close after this request; it is refused
        // outright instead (RFC 9112 §6.3: "ought to be handled as an error").
        return deny(
            rec,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request has both Content-Length and Transfer-Encoding (refused: request smuggling)".into(),
        );
    }
    let table = shared.routes.borrow().clone();
    let host_header = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let resolved = match route::resolve(&table.routes, req.method(), req.uri(), host_header) {
        Ok(r) => r,
        Err(e) => {
            rec.host = e.host();
            rec.mode = Some(Mode::Unrouted.as_str());
            let (status, code) = match e {
                Unrouted::BadTarget(_) => (StatusCode::BAD_REQUEST, "bad_request"),
                _ => (StatusCode::FORBIDDEN, "no_route"),
            };
            return deny(rec, status, code, e.reason());
        }
    };
    rec.route = Some(resolved.route.name.clone());
    rec.mode = Some(resolved.mode.as_str());
    rec.host = Some(resolved.authority());
    rec.path = resolved.path.clone();

    // Who is calling, judged by the policy in force now.
    let caller = match caller_of(&shared, &conn, &resolved.route).await {
        Ok(c) => c,
        Err(e) => {
            let mut answer =
                deny(rec, StatusCode::FORBIDDEN, "no_identity", format!("the calling process has no identity: {e}"));
            if conn.tainted.load(Ordering::Relaxed) {
                answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return answer;
        }
    };
    rec.pid = Some(caller.attestation.pid);
    rec.exe = Some(caller.attestation.exe.clone());
    if let Some(tcp) = &conn.tcp
        && !tcp.still_holds()
    {
        return deny(
            rec,
            StatusCode::FORBIDDEN,
            "unattributed",
            "the connection's socket is no longer held by the process it was attributed to".into(),
        );
    }
    let route = resolved.route.clone();
    if !route.transports.contains(&conn.transport) {
        let why = format!(
            "route {:?} is not served over {} (transports = {:?})",
            route.name, conn.transport, route.transports
        );
        return deny(rec, StatusCode::FORBIDDEN, "transport_not_allowed", why);
    }
    let Some(entry) = caller.entries.iter().find(|e| route.serves(&e.spiffe_id)).cloned() else {
        let ids: Vec<String> = caller.entries.iter().map(|e| e.spiffe_id.to_string()).collect();
        rec.agent = ids.first().cloned();
        return deny(
            rec,
            StatusCode::FORBIDDEN,
            "route_not_for_you",
            format!("route {:?} does not serve {}", route.name, ids.join(", ")),
        );
    };
    rec.agent = Some(entry.spiffe_id.to_string());
    conn.agents.lock().unwrap_or_else(|p| p.into_inner()).insert(entry.spiffe_id.clone());
    // A policy change between this caller's judgement and the insert above would have been
    // judged without this identity: judge it now under the policy in force.
    let now = shared.pipeline.policy();
    if !Arc::ptr_eq(&now, &caller.policy)
        && !now
            .entitled(&caller.attestation.selectors)
            .is_ok_and(|es| es.iter().any(|e| e.spiffe_id == entry.spiffe_id))
    {
        return deny(rec, StatusCode::FORBIDDEN, "revoked", format!("{} was revoked during the call", entry.spiffe_id));
    }
    let mut agent: Caller = (*caller).clone();
    agent.entries.retain(|e| e.spiffe_id == entry.spiffe_id);

    if resolved.mode == Mode::Tunnel {
        match decide(&mut rec, &agent, &entry, &resolved) {
            Ok(d) => *conn.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = d,
            Err(why) => return deny(rec, StatusCode::FORBIDDEN, "denied_by_policy", why),
        }
        return tunnel(shared.clone(), conn.clone(), req, resolved, rec, started);
    }
    if !route.allows_method(req.method()) {
        let m = req.method().to_string();
        return deny(
            rec,
            StatusCode::FORBIDDEN,
            "method_not_allowed",
            format!("route {:?} does not allow {m}", route.name),
        );
    }
    if !route.allows_path(&resolved.path) {
        let p = resolved.path.clone();
        return deny(
            rec,
            StatusCode::FORBIDDEN,
            "path_not_allowed",
            format!("route {:?} does not allow path {p:?}", route.name),
        );
    }
    let limit = route.max_request_body.unwrap_or(shared.limits.max_request_body);
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return deny(
            rec,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the route's limit of {limit} bytes"),
        );
    }

    let (mut parts, incoming) = req.into_parts();
    // What the agent sent as a credential never goes upstream; a delegated token is checked
    // first and then forwarded as the call's credential.
    let presented = bearer(&parts.headers);
    let credential_header = route
        .credential
        .as_ref()
        .and_then(|c| table.credentials.iter().find(|k| &k.name == c))
        .map(|k| k.header.clone());
    strip_request_headers(&mut parts.headers, credential_header.as_ref());
    match &route.credential {
        Some(name) => {
            rec.credential = Some(name.clone());
            match shared.broker.header(name, &agent).await {
                Ok(injected) => {
                    parts.headers.insert(injected.name.clone(), injected.value.clone());
                }
                Err(e) => return deny(rec, StatusCode::BAD_GATEWAY, "credential_unavailable", e.reason()),
            }
        }
        None => {
            if let Some(token) = presented {
                match super::delegated::check(
                    &shared,
                    &route,
                    &token,
                    &entry.spiffe_id,
                    shared.pipeline.clock.now(),
                    &caller.policy,
                ) {
                    Ok(d) => {
                        rec.user = Some(d.user);
                        rec.act = d.act;
                        rec.scope = Some(d.scope);
                        rec.jti = d.jti;
                        let mut v =
                            HeaderValue::from_str(&format!("Bearer {token}")).unwrap_or(HeaderValue::from_static(""));
                        v.set_sensitive(true);
                        parts.headers.insert(header::AUTHORIZATION, v);
                    }
                    Err(why) => return deny(rec, StatusCode::UNAUTHORIZED, "invalid_token", why),
                }
            }
        }
    }
    if let Err(why) = decide(&mut rec, &agent, &entry, &resolved) {
        return deny(rec, StatusCode::FORBIDDEN, "denied_by_policy", why);
    }
    let uri = match resolved.upstream_uri() {
        Ok(u) => u,
        Err(e) => {
            return deny(rec, StatusCode::BAD_REQUEST, "bad_request", format!("cannot form the upstream URI: {e}"));
        }
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    parts.headers.append(header::VIA, HeaderValue::from_static(VIA));
    let guarded = matches!(route.host, crate::config::gateway::HostPattern::Suffix(_));
    let client = match shared.client(route.ca_file.as_ref(), guarded) {
        Ok(c) => c,
        Err(e) => {
            return deny(
                rec,
                StatusCode::BAD_GATEWAY,
                "upstream_tls",
                format!("the route's TLS settings cannot be used: {e}"),
            );
        }
    };
    let request_bytes = Arc::new(AtomicU64::new(0));
    let over = Arc::new(AtomicBool::new(false));
    let up_body = Metered::new(incoming, request_bytes.clone(), shared.limits.idle_timeout)
        .limit(limit, over.clone())
        .without_trailers()
        .boxed();
    let upstream_req = Request::from_parts(parts, up_body);
    let sent = tokio::time::timeout(shared.limits.idle_timeout, client.request(upstream_req)).await;
    let response = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            rec.request_bytes = request_bytes.load(Ordering::Relaxed);
            if over.load(Ordering::Relaxed) {
                return deny(
                    rec,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is larger than the route's limit of {limit} bytes"),
                );
            }
            return deny(
                rec,
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                format!("upstream {}: {}", resolved.authority(), describe(&e)),
            );
        }
        Err(_) => {
            return deny(
                rec,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                format!(
                    "upstream {} sent no response head within {:?}",
                    resolved.authority(),
                    shared.limits.idle_timeout
                ),
            );
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.append(header::VIA, HeaderValue::from_static(VIA));
    parts.version = http::Version::HTTP_11;
    rec.status = Some(parts.status.as_u16());
    rec.allowed = true;
    rec.reason = match &rec.credential {
        Some(c) => format!("route {:?} serves {}; credential {c:?} injected", route.name, entry.spiffe_id),
        None if rec.jti.is_some() || rec.user.is_some() => {
            format!("route {:?} serves {}; delegated token verified", route.name, entry.spiffe_id)
        }
        None => format!("route {:?} serves {}; no credential", route.name, entry.spiffe_id),
    };
    let guard = CallGuard {
        record: Some(rec),
        events: shared.events.clone(),
        started,
        request_bytes,
        response_bytes: Arc::new(AtomicU64::new(0)),
        broken: Arc::new(AtomicBool::new(false)),
        in_flight: Some(conn.watch.in_flight.clone()),
    };
    let down = Metered::new(body, guard.response_bytes.clone(), shared.limits.idle_timeout)
        .deadline(started + shared.limits.request_timeout)
        .guard(guard)
        .boxed();
    Response::from_parts(parts, down)
}

/// The bearer token an agent presented, if any.
fn bearer(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned()).filter(|t| t.split('.').count() == 3)
}

/// What never goes upstream from the agent: hop-by-hop headers, its `Host` (set from the
/// upstream), and every credential it sent (`Authorization`, `x-api-key`, `Proxy-Authorization`,
/// the route's own credential header).
fn strip_request_headers(headers: &mut http::HeaderMap, credential_header: Option<&http::HeaderName>) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove("x-api-key");
    headers.remove("api-key");
    headers.remove(header::COOKIE);
    if let Some(h) = credential_header {
        headers.remove(h);
    }
}

/// The cause chain of an upstream error, short.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        if is_tls_error(s) {
            // rustls says e.g. "received corrupt message of type InvalidContentType".
            out.push_str("TLS: ");
        }
        out.push_str(&s.to_string());
        src = s.source();
    }
    out.chars().take(300).collect()
}

/// A rustls error, bare or inside the `io::Error`s the TLS connector wraps it in (hyper-rustls
/// wraps tokio-rustls's `io::Error`, whose `source()` skips both).
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = e;
    for _ in 0..4 {
        if e.is::<rustls::Error>() {
            return true;
        }
        match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => e = inner,
            None => return false,
        }
    }
    false
}

/// CONNECT on a route with `tunnel = true`: 200, then bytes both ways until either side closes
/// or the connection is cut off; one audit line with the byte counts when it ends.
fn tunnel(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
    resolved: Resolved,
    mut rec: GatewayCall,
    started: Instant,
) -> Response<GwBody> {
    rec.allowed = true;
    rec.status = Some(200);
    rec.reason = format!("route {:?} opens a tunnel (no credential injected)", resolved.route.name);
    let guarded = matches!(resolved.route.host, crate::config::gateway::HostPattern::Suffix(_));
    let connect_timeout = shared.limits.connect_timeout;
    let own = shared.own_listeners.clone();
    let mut cut = conn.cut.subscribe();
    let guard = CallGuard {
        record: Some(rec),
        events: shared.events.clone(),
        started,
        request_bytes: Arc::new(AtomicU64::new(0)),
        response_bytes: Arc::new(AtomicU64::new(0)),
        broken: Arc::new(AtomicBool::new(false)),
        in_flight: Some(conn.watch.in_flight.clone()),
    };
    tokio::spawn(async move {
        let guard = guard;
        let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
        let Ok(addrs) = resolve(&resolved.host, resolved.port, guarded, &own).await else {
            guard.broken.store(true, Ordering::Relaxed);
            return;
        };
        let Ok(Ok(mut upstream)) = tokio::time::timeout(connect_timeout, TcpStream::connect(&addrs[..])).await else {
            guard.broken.store(true, Ordering::Relaxed);
            return;
        };
        // Counted as they pass: a tunnel that ends in a reset (the usual end of a TLS session
        // through it) still reports what it carried.
        let mut client = Counted {
            inner: TokioIo::new(upgraded),
            read: guard.request_bytes.clone(),
            written: guard.response_bytes.clone(),
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = cut.wait_for(|c| *c) => guard.broken.store(true, Ordering::Relaxed),
        }
    });
    Response::new(body::empty())
}

/// An IO that counts the bytes read from it and written to it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
