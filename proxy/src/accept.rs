//! `tessera proxy accept`: terminate mTLS on `--listen`, admit only clients whose SPIFFE ID
//! matches `--allow`, and forward the stream to the local agent at `--to`, telling it who the
//! peer is as chosen by `--peer-id-header` (see [`super::peer_id`]).

use super::peer_id::{self, Peer, PeerIdHeader};
use super::{Error, HandshakeFailure, Settings, Stats, classify, peer_identity};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

pub async fn run(settings: Settings, header: PeerIdHeader) -> Result<(), Error> {
    let source = super::source(&settings.endpoint, settings.spiffe_id.clone(), settings.timeout).await?;
    super::log_rotations(source.clone());
    let config = spiffe_rustls::mtls_server(source.clone())
        .trust_domain_policy(super::policy(&settings.allow))
        .authorize(settings.allow.clone())
        .build()?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = super::bind(&settings, "accept").await?;
    tracing::info!(peer_id_header = ?header, "accept: peer identity passed to the agent");
    let stats = Arc::new(Stats::default());
    let to = Arc::new(settings.to.clone());
    let timeout = settings.timeout;
    let result = super::serve(listener, "accept", stats.clone(), settings.stats_interval, move |tcp, remote| {
        let (acceptor, stats, to) = (acceptor.clone(), stats.clone(), to.clone());
        async move {
            one(tcp, remote, &acceptor, &stats, &to, header, timeout).await;
        }
    })
    .await;
    source.shutdown().await;
    result
}

async fn one(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: &TlsAcceptor,
    stats: &Stats,
    to: &str,
    header: PeerIdHeader,
    timeout: Duration,
) {
    let local_addr = match tcp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %remote, "socket gone: {e}");
            return;
        }
    };
    let mut tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            match classify(&e) {
                HandshakeFailure::Refused { peer, reason } => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    let total = stats.refused.load(Ordering::Relaxed);
                    match peer {
                        Some(id) => tracing::warn!(
                            remote = %remote, peer_id = %id, refused_total = total,
                            "refused client: {reason}"
                        ),
                        None => tracing::warn!(
                            remote = %remote, peer_id = "(none verified)", refused_total = total,
                            "refused client: {reason}"
                        ),
                    }
                }
                HandshakeFailure::Failed(reason) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(remote = %remote, "handshake failed: {reason}");
                }
            }
            return;
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(remote = %remote, "TLS handshake timed out");
            return;
        }
    };
    let conn = tls.get_ref().1;
    let Some((peer, serial)) = peer_identity(conn.peer_certificates()) else {
        // Cannot happen after spiffe-rustls verified the client; refuse rather than guess.
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(remote = %remote, "refused client: no SPIFFE ID after handshake");
        return;
    };
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    stats.admitted.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        remote = %remote,
        peer_id = %peer,
        peer_serial = %serial,
        to,
        "accepted"
    );
    let mut local = match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer_id = %peer, to, "cannot reach the local agent: {e}");
            let _ = tls.shutdown().await;
            return;
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer_id = %peer, to, "timed out connecting to the local agent");
            let _ = tls.shutdown().await;
            return;
        }
    };
    let _ = local.set_nodelay(true);
    let preamble = peer_id::encode(header, &Peer { id: &peer, src: remote, dst: local_addr, tls_version: version });
    if !preamble.is_empty()
        && let Err(e) = local.write_all(&preamble).await
    {
        tracing::warn!(peer_id = %peer, to, "writing the peer-id header: {e}");
        return;
    }
    match tokio::io::copy_bidirectional(&mut tls, &mut local).await {
        Ok((up, down)) => {
            tracing::debug!(peer_id = %peer, bytes_in = up, bytes_out = down, "closed")
        }
        Err(e) => tracing::debug!(peer_id = %peer, "connection ended: {e}"),
    }
}
