//! The daemon in-process, on a fake clock: the whole wiring (CA, rotation task, issuer, streams)
//! driven in fake time, so that what takes half a CA lifetime in production takes milliseconds.

use super::*;
use crate::clock::FakeClock;
use crate::pb::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use std::path::{Path, PathBuf};

/// A daemon running in this process on `clock`, stopped (cleanly) on drop of `stop`.
struct InProcess {
    socket: PathBuf,
    audit_log: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), DaemonError>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(clock: Arc<FakeClock>, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let uid = nix::unistd::geteuid().as_raw();
        let text = format!(
            "trust_domain = \"in.process\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n{extra}\n\
             [[entries]]\nspiffe_id = \"spiffe://in.process/me\"\nselectors = [\"unix:uid:{uid}\"]\n",
            socket.display(),
            dir.path().join("data").display(),
        );
        // The config file in a directory of its own: the reloader watches it, and the sockets
        // and data the daemon creates must not look like config changes.
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let config_path = etc.join("tessera.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::parse(&text, &config_path).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stop = async move {
            let _ = rx.await;
            "test"
        };
        let done = tokio::spawn(run_with(config, clock, || {}, stop));
        // Ready when the socket accepts (the Workload API socket is bound last).
        for _ in 0..500 {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let audit_log = dir.path().join("data/audit.log");
        Self { socket, audit_log, stop: Some(tx), done, _dir: dir }
    }

    async fn client(&self) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
        SpiffeWorkloadApiClient::new(uds_channel(&self.socket).await)
    }

    /// Audit lines of `event` for `rpc` so far.
    fn audit_count(&self, event: &str, rpc: &str) -> usize {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == event && v["rpc"] == rpc)
            .count()
    }

    /// Wait (bounded) until there are `n` such lines; the count then.
    async fn audit_reaches(&self, event: &str, rpc: &str, n: usize) -> usize {
        for _ in 0..500 {
            if self.audit_count(event, rpc) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.audit_count(event, rpc)
    }

    async fn stop(mut self) -> Result<(), DaemonError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.done).await.unwrap()
    }
}

async fn uds_channel(socket: &Path) -> tonic::transport::Channel {
    let socket = socket.to_owned();
    tonic::transport::Endpoint::try_from("http://localhost")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: ::http::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
        .unwrap()
}

fn with_header<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    request
}

/// Authorities in a bundle message (concatenated DER certificates).
fn certs_in(der: &[u8]) -> usize {
    let mut rest = der;
    let mut n = 0;
    while let Ok((more, _)) = x509_parser::parse_x509_certificate(rest) {
        n += 1;
        rest = more;
    }
    n
}

/// CA rotation in fake time: at half the CA's life a successor is made and published on open
/// streams at once, before it signs; a tenth of the TTL later it signs the SVIDs. The real time
/// this takes is the rotation task's polling interval, not half a CA lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_reaches_an_open_stream_in_fake_time() {
    let clock = Arc::new(FakeClock::at(std::time::SystemTime::now()));
    let d = InProcess::start(clock.clone(), "[ca]\nttl = \"20s\"").await;
    let mut client = d.client().await;
    let mut stream = client.fetch_x509svid(with_header(crate::pb::X509svidRequest {})).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(certs_in(&first.svids[0].bundle), 1);
    let first_issuer = x509_parser::parse_x509_certificate(&first.svids[0].x509_svid).unwrap().1.issuer().to_string();

    // Half the CA's life: the successor is published to the open stream.
    clock.advance(Duration::from_secs(11));
    // (A policy update at start may resend the first bundle once: wait for the successor.)
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if certs_in(&m.svids[0].bundle) == 2 {
                return m;
            }
        }
    })
    .await
    .expect("the successor is in the bundle before it signs");
    assert_eq!(certs_in(&next.svids[0].bundle), 2);

    // A tenth of the TTL later it signs: a fetch now gets an SVID from the new authority.
    clock.advance(Duration::from_secs(3));
    let svid = client.fetch_x509svid(with_header(crate::pb::X509svidRequest {})).await.unwrap();
    let fresh = svid.into_inner().message().await.unwrap().unwrap();
    let cert = x509_parser::parse_x509_certificate(&fresh.svids[0].x509_svid).unwrap().1;
    assert_eq!(cert.issuer().to_string(), first_issuer, "same subject name, other key");
    let key_id = |der: &[u8]| {
        let c = x509_parser::parse_x509_certificate(der).unwrap().1;
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .unwrap()
    };
    assert_ne!(key_id(&fresh.svids[0].x509_svid), key_id(&first.svids[0].x509_svid), "signed by the successor");
    drop(stream);
    d.stop().await.unwrap();
}

/// SVID renewal in fake time: an open stream gets a new X.509-SVID once the old one is past half
/// its life (10 minutes here), within the stream's next check, not after five real minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_is_renewed_on_an_open_stream_in_fake_time() {
    let clock = Arc::new(FakeClock::at(std::time::SystemTime::now()));
    let d = InProcess::start(clock.clone(), "").await;
    let mut client = d.client().await;
    let mut stream = client.fetch_x509svid(with_header(crate::pb::X509svidRequest {})).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let serial = |der: &[u8]| x509_parser::parse_x509_certificate(der).unwrap().1.raw_serial().to_vec();
    clock.advance(Duration::from_secs(6 * 60));
    // (A policy update at start may resend the first SVID once: wait for the new one.)
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = stream.message().await.unwrap().unwrap();
            if serial(&m.svids[0].x509_svid) != serial(&first.svids[0].x509_svid) {
                return m;
            }
        }
    })
    .await
    .expect("a new SVID within the stream's next check");
    assert_ne!(serial(&next.svids[0].x509_svid), serial(&first.svids[0].x509_svid));
    drop(stream);
    d.stop().await.unwrap();
}

/// The session window in fake time: calls on one connection within a second reuse its full
/// attestation (one `attested` line); a call after the window is attested in full again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reuse_a_connections_attestation_only_within_its_window() {
    let clock = Arc::new(FakeClock::at(std::time::SystemTime::now()));
    let d = InProcess::start(clock.clone(), "").await;
    let mut client = d.client().await;
    let ask = || with_header(crate::pb::JwtsvidRequest { audience: vec!["aud".into()], spiffe_id: String::new() });
    for _ in 0..3 {
        client.fetch_jwtsvid(ask()).await.unwrap();
    }
    assert_eq!(d.audit_reaches("issued", "FetchJWTSVID", 3).await, 3);
    assert_eq!(d.audit_count("attested", "FetchJWTSVID"), 1, "three calls, one full attestation");
    clock.advance(crate::caller::session::MAX_REUSE + Duration::from_millis(500));
    client.fetch_jwtsvid(ask()).await.unwrap();
    assert_eq!(d.audit_reaches("attested", "FetchJWTSVID", 2).await, 2, "past the window: attested in full");
    d.stop().await.unwrap();
}
