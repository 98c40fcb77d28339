//! `tessera proxy connect`: a local agent speaks plain TCP to `--listen`; the proxy opens mTLS
//! to `--to` and admits the server only if its SPIFFE ID matches `--allow`.

use super::{Error, HandshakeFailure, Settings, Stats, classify, peer_identity};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The TLS server name to send (SNI): the host part of `--to`. It plays no part in
/// verification: the server is authenticated by its SPIFFE ID.
fn server_name(to: &str) -> ServerName<'static> {
    let host = match to.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => to,
    };
    // Not a DNS name or IP literal (e.g. a unix-ish name): no SNI at all, which cannot fail.
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST).into()))
}

pub async fn run(settings: Settings) -> Result<(), Error> {
    let source = super::source(&settings.endpoint, settings.spiffe_id.clone(), settings.timeout).await?;
    super::log_rotations(source.clone());
    let config = spiffe_rustls::mtls_client(source.clone())
        .trust_domain_policy(super::policy(&settings.allow))
        .authorize(settings.allow.clone())
        .build()?;
    let connector = TlsConnector::from(Arc::new(config));
    let listener = super::bind(&settings, "connect").await?;
    let stats = Arc::new(Stats::default());
    let name = server_name(&settings.to);
    let to = Arc::new(settings.to.clone());
    let timeout = settings.timeout;
    let result = super::serve(listener, "connect", stats.clone(), settings.stats_interval, move |local, remote| {
        let (connector, stats, to, name) = (connector.clone(), stats.clone(), to.clone(), name.clone());
        async move {
            one(local, remote, &connector, &stats, &to, name, timeout).await;
        }
    })
    .await;
    source.shutdown().await;
    result
}

async fn one(
    mut local: TcpStream,
    local_peer: SocketAddr,
    connector: &TlsConnector,
    stats: &Stats,
    to: &str,
    name: ServerName<'static>,
    timeout: Duration,
) {
    // A rotation makes spiffe-rustls refuse new handshakes for the moment it takes to convert the
    // new SVID ("source revision … is pending") — on our side, or on the server's, which then
    // resets. Nothing has been forwarded yet, so such a handshake is retried a few times.
    let mut attempt = 0;
    let handshake = loop {
        attempt += 1;
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(local = %local_peer, to, "cannot reach target: {e}");
                return;
            }
            Err(_) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(local = %local_peer, to, "timed out connecting to target");
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let remote = tcp.peer_addr().ok();
        let result = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp)).await;
        let transient = matches!(&result, Ok(Err(e)) if is_transient(e));
        if transient && attempt < HANDSHAKE_ATTEMPTS {
            tracing::debug!(to, attempt, "handshake hit a rotation in progress; retrying");
            tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
            continue;
        }
        break (result, remote);
    };
    let (result, remote) = handshake;
    let mut tls = match result {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            match classify(&e) {
                HandshakeFailure::Refused { peer, reason } => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    let total = stats.refused.load(Ordering::Relaxed);
                    match peer {
                        Some(id) => tracing::warn!(
                            to, peer_id = %id, refused_total = total,
                            "refused server: {reason}"
                        ),
                        None => tracing::warn!(
                            to,
                            peer_id = "(none verified)",
                            refused_total = total,
                            "refused server: {reason}"
                        ),
                    }
                }
                HandshakeFailure::Failed(reason) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(to, "handshake failed: {reason}");
                }
            }
            return;
        }
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(to, "TLS handshake timed out");
            return;
        }
    };
    stats.admitted.fetch_add(1, Ordering::Relaxed);
    let (peer, serial) = peer_identity(tls.get_ref().1.peer_certificates())
        .map(|(id, serial)| (id.to_string(), serial))
        .unwrap_or_default();
    tracing::info!(
        local = %local_peer,
        to,
        remote = ?remote,
        peer_id = %peer,
        peer_serial = %serial,
        "connected"
    );
    match tokio::io::copy_bidirectional(&mut local, &mut tls).await {
        Ok((up, down)) => {
            tracing::debug!(peer_id = %peer, bytes_up = up, bytes_down = down, "closed")
        }
        Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            // TLS 1.3: the server judges our certificate after our side of the handshake is
            // done, so its refusal shows up as an alert on the first read.
            Some(rustls::Error::AlertReceived(alert)) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    to, peer_id = %peer,
                    "server closed the connection with TLS alert {alert:?}: it likely does not allow our SPIFFE ID"
                );
            }
            _ => tracing::debug!(peer_id = %peer, "connection ended: {e}"),
        },
    }
}

/// Handshakes retried when they meet a rotation in progress.
const HANDSHAKE_ATTEMPTS: u32 = 4;

/// A failure that a moment later would not happen: our TLS material being converted after a
/// rotation, or the server resetting for the same reason on its side.
fn is_transient(e: &std::io::Error) -> bool {
    e.to_string().contains("is pending")
        || matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert_eq!(
            format!("{:?}", server_name("127.0.0.1:8443")),
            format!("{:?}", ServerName::try_from("127.0.0.1").unwrap())
        );
        assert_eq!(format!("{:?}", server_name("[::1]:8443")), format!("{:?}", ServerName::try_from("::1").unwrap()));
        assert_eq!(
            format!("{:?}", server_name("billing.internal:1")),
            format!("{:?}", ServerName::try_from("billing.internal").unwrap())
        );
    }
}
