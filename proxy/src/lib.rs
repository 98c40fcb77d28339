//! `tessera proxy`: mTLS for agents that speak plain TCP, authorized by SPIFFE ID.
//!
//! The proxy is an ordinary Workload API client: it is attested like any workload, holds the
//! SVID and key it is issued (the agent next to it never does), and follows rotations through
//! an [`spiffe::X509Source`]. rustls configs come from `spiffe-rustls`, which verifies a peer's
//! chain against the bundle of the peer's own trust domain (ours or a federated one), requires
//! exactly one URI SAN and the X509-SVID leaf constraints, and replaces hostname verification
//! with our [`authorize::AllowList`]. Configs read the source's current material on every
//! handshake, so new connections use the newest SVID and bundle; open connections are left
//! alone.
//!
//! - [`connect`]: local plain TCP in, mTLS out (`tessera proxy connect`).
//! - [`accept`]: mTLS in, local plain TCP out (`tessera proxy accept`), telling the agent who
//!   the peer is as described in [`peer_id`].

#![forbid(unsafe_code)]

pub mod accept;
pub mod authorize;
pub mod connect;
pub mod peer_id;

pub use spiffe::SpiffeId as PeerSpiffeId;

use spiffe::{SpiffeId, TrustDomain, X509Source};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Errors that stop a proxy (per-connection failures are logged, never fatal).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No SVID could be fetched: the daemon is not running at that socket, or no entry matches
    /// this proxy process (run `tessera attest <pid>` to see its selectors).
    #[error("cannot get an X.509-SVID from the Workload API at {endpoint}: {source}")]
    Source {
        endpoint: String,
        #[source]
        source: spiffe::X509SourceError,
    },
    #[error("timed out after {0:?} waiting for an X.509-SVID from the Workload API at {1}")]
    SourceTimeout(Duration, String),
    #[error("building the TLS configuration: {0}")]
    Tls(#[from] spiffe_rustls::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Connection counters, logged as a summary periodically and at shutdown.
#[derive(Debug, Default)]
pub struct Stats {
    /// mTLS handshakes that completed with an allowed peer.
    pub admitted: AtomicU64,
    /// Peers refused by our verification or authorization.
    pub refused: AtomicU64,
    /// Other failures: handshake errors not caused by our verifier (e.g. the peer refused us),
    /// timeouts, the local agent or the target unreachable.
    pub failed: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.admitted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn log(&self, mode: &str, why: &str) {
        let (admitted, refused, failed) = self.snapshot();
        tracing::info!(mode, admitted, refused, failed, "proxy stats ({why})");
    }

    /// Log a summary every `every` when something changed; never returns.
    async fn report_every(self: Arc<Self>, mode: &'static str, every: Duration) {
        let mut last = self.snapshot();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.snapshot();
            if now != last {
                self.log(mode, "periodic");
                last = now;
            }
        }
    }
}

/// Why a peer was refused (or why the handshake failed otherwise).
#[derive(Debug)]
pub enum HandshakeFailure {
    /// Our verifier refused the peer: counted as a refusal. `peer` is set when the peer's
    /// certificate verified but its ID is not in `--allow`.
    Refused { peer: Option<SpiffeId>, reason: String },
    /// Anything else (the peer refused us, I/O, protocol errors).
    Failed(String),
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { reason, .. } | Self::Failed(reason) => f.write_str(reason),
        }
    }
}

/// Classify a tokio-rustls handshake error (an `io::Error` wrapping a `rustls::Error`, which
/// wraps spiffe-rustls's error for SPIFFE-specific refusals).
pub fn classify(err: &std::io::Error) -> HandshakeFailure {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return HandshakeFailure::Failed(err.to_string());
    };
    let refused = |peer, reason: String| HandshakeFailure::Refused { peer, reason };
    match tls {
        rustls::Error::Other(other) => {
            let inner: &(dyn std::error::Error + 'static) = other.0.as_ref();
            match inner.downcast_ref::<spiffe_rustls::Error>() {
                Some(spiffe_rustls::Error::UnauthorizedSpiffeId(id)) => {
                    refused(Some(id.clone()), "SPIFFE ID not allowed by --allow".into())
                }
                Some(spiffe_rustls::Error::TrustDomainNotAllowed(td)) => refused(
                    None,
                    format!(
                        "certificate claims trust domain {td}, which no --allow pattern names \
                         (ID not trusted, chain not checked)"
                    ),
                ),
                Some(spiffe_rustls::Error::NoBundle(td)) => refused(
                    None,
                    format!(
                        "no trust bundle for the claimed trust domain {td} (neither ours nor \
                         federated): chain cannot be verified"
                    ),
                ),
                Some(e @ spiffe_rustls::Error::MissingSpiffeId)
                | Some(e @ spiffe_rustls::Error::MultipleSpiffeIds)
                | Some(e @ spiffe_rustls::Error::InvalidLeaf(_))
                | Some(e @ spiffe_rustls::Error::CertParse(_)) => refused(None, format!("not an X509-SVID: {e}")),
                Some(e) => refused(None, e.to_string()),
                None => refused(None, inner.to_string()),
            }
        }
        rustls::Error::InvalidCertificate(ce) => refused(
            None,
            format!(
                "certificate does not verify against the bundle of its trust domain ({}); \
                 its SPIFFE ID cannot be trusted",
                cert_error(ce)
            ),
        ),
        rustls::Error::NoCertificatesPresented => refused(None, "peer presented no certificate".into()),
        rustls::Error::AlertReceived(alert) => {
            HandshakeFailure::Failed(format!("peer sent TLS alert {alert:?} (it likely refused our SVID)"))
        }
        other => HandshakeFailure::Failed(format!("TLS: {other}")),
    }
}

fn cert_error(ce: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match ce {
        C::Expired | C::ExpiredContext { .. } => format!("expired: {ce:?}"),
        C::UnknownIssuer => "unknown issuer: not signed by a CA of the bundle".into(),
        C::BadSignature => "bad signature".into(),
        other => format!("{other:?}"),
    }
}

/// Picks the SVID with a given SPIFFE ID when the proxy is entitled to several.
struct IdPicker(SpiffeId);

impl spiffe::x509_source::SvidPicker for IdPicker {
    fn pick_svid(&self, svids: &[Arc<spiffe::X509Svid>]) -> Option<usize> {
        svids.iter().position(|s| s.spiffe_id() == &self.0)
    }
}

/// Connect to the Workload API and wait (bounded) for the first SVID.
pub async fn source(endpoint: &str, pick: Option<SpiffeId>, timeout: Duration) -> Result<X509Source, Error> {
    let mut builder = X509Source::builder().endpoint(endpoint);
    if let Some(id) = pick {
        builder = builder.picker(IdPicker(id));
    }
    match tokio::time::timeout(timeout, builder.build()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(Error::Source { endpoint: endpoint.to_owned(), source }),
        Err(_) => Err(Error::SourceTimeout(timeout, endpoint.to_owned())),
    }
}

/// Log the proxy's own SVID now and after every rotation.
pub fn log_rotations(source: X509Source) {
    fn describe(source: &X509Source) -> String {
        match source.svid() {
            Ok(svid) => {
                let leaf = svid.leaf().as_bytes();
                match x509_parser::parse_x509_certificate(leaf) {
                    Ok((_, c)) => format!(
                        "id={} serial={} not_after={}",
                        svid.spiffe_id(),
                        c.raw_serial_as_string().replace(':', ""),
                        c.validity().not_after
                    ),
                    Err(_) => format!("id={}", svid.spiffe_id()),
                }
            }
            Err(e) => format!("none ({e})"),
        }
    }
    tracing::info!("own SVID: {}", describe(&source));
    let mut updates = source.updated();
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            tracing::info!("SVID/bundle update; new connections use {}", describe(&source));
        }
    });
}

/// The trust domains of `--allow` as a spiffe-rustls policy.
pub fn policy(allow: &authorize::AllowList) -> spiffe_rustls::TrustDomainPolicy {
    let tds: std::collections::BTreeSet<TrustDomain> = allow.trust_domains();
    spiffe_rustls::TrustDomainPolicy::AllowList(tds)
}

/// Serial number (hex) and SPIFFE ID of a verified peer's leaf.
pub fn peer_identity(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<(SpiffeId, String)> {
    let leaf = certs?.first()?;
    let id = spiffe::cert::spiffe_id_from_der(leaf.as_ref()).ok()?;
    let serial = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
        .unwrap_or_default();
    Some((id, serial))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Common settings of both directions.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Workload API endpoint, `unix:/path`.
    pub endpoint: String,
    pub listen: String,
    pub to: String,
    pub allow: authorize::AllowList,
    /// Use this SVID when the proxy is entitled to several.
    pub spiffe_id: Option<SpiffeId>,
    /// Bound on the first SVID, each TCP connect and each TLS handshake.
    pub timeout: Duration,
    pub stats_interval: Duration,
}

/// Bind the listener and log the ready line (with the real port when `:0` was asked for).
async fn bind(settings: &Settings, mode: &str) -> Result<tokio::net::TcpListener, Error> {
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| Error::Listen { addr: settings.listen.clone(), source })?;
    let addr = listener.local_addr()?;
    tracing::info!(
        mode,
        listen = %addr,
        to = %settings.to,
        allow = %settings.allow,
        "proxy ready"
    );
    Ok(listener)
}

/// Run the accept loop until SIGINT/SIGTERM, spawning `handle` per connection; log the stats.
async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    mode: &'static str,
    stats: Arc<Stats>,
    stats_interval: Duration,
    mut handle: F,
) -> Result<(), Error>
where
    F: FnMut(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let reporter = tokio::spawn(stats.clone().report_every(mode, stats_interval));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(handle(stream, remote));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    reporter.abort();
    stats.log(mode, "shutdown");
    Ok(())
}
