//! `tessera proxy connect|accept` end to end: real daemons, the real binary as the proxies (each
//! attested under its own identity, by executable path), plain-TCP "agents" in the test.

use crate::common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

// === identities ===

/// Hard links of the tessera binary at distinct paths (`unix:path:` differs per link), in the
/// target dir so linking works (same file system); falls back to a copy.
struct Binaries {
    _dir: tempfile::TempDir,
    client: PathBuf,
    server: PathBuf,
    intruder: PathBuf,
}

impl Binaries {
    fn new() -> Self {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let link = |name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            let p = d.join("tessera");
            if std::fs::hard_link(bin(), &p).is_err() {
                std::fs::copy(bin(), &p).unwrap();
            }
            p
        };
        Self { client: link("client"), server: link("server"), intruder: link("intruder"), _dir: dir }
    }
}

fn entry(td: &str, path: &str, exe: &Path, extra: &str) -> String {
    format!(
        "[[entries]]\nspiffe_id = \"spiffe://{td}/{path}\"\nselectors = [\"unix:uid:{}\", \"unix:path:{}\"]\n{extra}\n",
        uid(),
        exe.display()
    )
}

/// The test process itself (for in-test TLS peers that present a real SVID).
fn runner_exe() -> PathBuf {
    std::fs::read_link("/proc/self/exe").unwrap()
}

/// A daemon for another trust domain (the harness's `Daemon::start` is fixed to `TD`).
fn start_daemon_in(td: &str, extra_toml: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let config = dir.path().join("tessera.toml");
    let text = format!(
        "trust_domain = \"{td}\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n{extra_toml}",
        socket.display(),
        dir.path().join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon { dir, socket, config, child: None };
    d.spawn();
    d
}

// === proxies ===

struct Proxy {
    child: Option<Child>,
    log: PathBuf,
    addr: SocketAddr,
}

impl Proxy {
    /// Start `exe proxy MODE` and wait for its "proxy ready" line (the bound address).
    fn start(exe: &Path, d: &Daemon, mode: &str, to: &str, allow: &[&str], extra: &[&str]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let log = d.dir.path().join(format!("proxy-{mode}-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let mut cmd = Command::new(exe);
        cmd.args(["proxy", mode, "--listen", "127.0.0.1:0", "--to", to, "--socket"])
            .arg(&d.socket)
            .args(["--stats-interval", "1s"]);
        for a in allow {
            cmd.args(["--allow", a]);
        }
        cmd.args(extra)
            .env("TESSERA_LOG", "info")
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find(|l| l.contains("proxy ready"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")))
            {
                break addr.parse().unwrap();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("proxy {mode} exited with {status}:\n{text}");
            }
            assert!(Instant::now() < deadline, "proxy {mode} not ready:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        };
        Self { child: Some(child), log, addr }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until a log line contains all of `needles`; return it.
    fn wait_line(&self, needles: &[&str]) -> String {
        let mut found = String::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self.log().lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                found.push_str(l);
                return found;
            }
            assert!(Instant::now() < deadline, "no log line with {needles:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait for a clean exit, return the log.
    fn stop(&mut self) -> String {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "proxy did not exit on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "proxy exit {status}:\n{}", self.log());
        self.log()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// === the plain-TCP agents ===

#[derive(Clone, Copy, PartialEq)]
enum Header {
    None,
    Line,
    ProxyV2,
}

/// A local agent: reads the peer-id header the proxy sends (per `header`), answers
/// `id=<spiffe id or ->\n`, then echoes. Counts connections.
async fn agent(header: Header) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Read the header through the same buffer the echo then drains: the proxy may
                // send the header and the first stream bytes in one segment.
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let id = match header {
                    Header::None => "-".to_owned(),
                    Header::Line => {
                        let mut line = String::new();
                        r.read_line(&mut line).await.unwrap();
                        let v = line.strip_suffix("\r\n").unwrap().strip_prefix("X-Spiffe-Id: ").unwrap();
                        v.to_owned()
                    }
                    Header::ProxyV2 => parse_proxy_v2(&mut r).await,
                };
                w.write_all(format!("id={id}\n").as_bytes()).await.unwrap();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, count)
}

/// An independent PROXY v2 reader: check the fixed part, return TLV 0xE0 (and require the
/// PP2_TYPE_SSL TLV saying "client cert verified").
async fn parse_proxy_v2(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut fixed = [0u8; 16];
    s.read_exact(&mut fixed).await.unwrap();
    assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(fixed[12], 0x21, "v2 PROXY");
    assert_eq!(fixed[13], 0x11, "TCP over IPv4");
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    // src 127.0.0.1, dst 127.0.0.1 (the proxy's listener)
    assert_eq!(&body[0..4], &[127, 0, 0, 1]);
    let mut tlvs = &body[12..];
    let (mut id, mut ssl) = (None, None);
    while !tlvs.is_empty() {
        let (t, l) = (tlvs[0], u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize);
        let v = &tlvs[3..3 + l];
        match t {
            0xE0 => id = Some(String::from_utf8(v.to_vec()).unwrap()),
            0x20 => ssl = Some(v.to_vec()),
            _ => {}
        }
        tlvs = &tlvs[3 + l..];
    }
    let ssl = ssl.expect("PP2_TYPE_SSL");
    assert_eq!(ssl[0] & 0x03, 0x03, "PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN");
    assert_eq!(&ssl[1..5], &[0, 0, 0, 0], "verify = 0");
    id.expect("TLV 0xE0")
}

/// Through a connect proxy: send `ping`, expect the agent's `id=` line and the echo.
/// Err(what we got) when the connection was closed instead.
async fn roundtrip_on(s: &mut BufReader<TcpStream>, msg: &str) -> Result<String, String> {
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        s.get_mut().write_all(format!("{msg}\n").as_bytes()).await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        s.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if line.is_empty() { Err("closed".to_owned()) } else { Ok(line) }
    })
    .await;
    r.unwrap_or_else(|_| Err("timed out".into()))
}

/// A fresh connection: returns the `id=` line after checking the echo.
async fn exchange(addr: &str) -> Result<String, String> {
    let mut s = BufReader::new(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
    let id = roundtrip_on(&mut s, "ping").await?;
    let echo = roundtrip_on(&mut s, "pong").await?;
    // The agent answers the id line when the first bytes arrive; the echo of "ping" follows.
    assert_eq!(echo, "ping\n");
    Ok(id.trim_end().to_owned())
}

// === in-test TLS peers ===

/// Accepts any server certificate: these in-test peers exist to be judged by the proxy.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Present `chain`/`key` to an accept proxy over mTLS, send a line, and report whether data
/// came back (it must not when the proxy refuses us).
async fn present_client_cert(addr: SocketAddr, chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<String, String> {
    tessera::install_crypto_provider();
    let certs = chain.into_iter().map(rustls::pki_types::CertificateDer::from).collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pkcs8.into());
    let cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(certs, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tls = connector.connect(name, tcp).await.map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(b"ping\n").await.map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; 256];
        match tls.read(&mut buf).await {
            Ok(0) => Err("closed".to_owned()),
            Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => Err(format!("read: {e}")),
        }
    })
    .await;
    r.unwrap_or_else(|_| Err("timed out".into()))
}

/// A self-signed leaf that looks like an X509-SVID (one URI SAN, CA:false, digitalSignature).
fn self_signed_svid(id: &str) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.self_signed(&key).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

/// A TLS server presenting `chain`/`key` (no client auth), for connect proxies to judge.
async fn tls_server(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    tessera::install_crypto_provider();
    let certs = chain.into_iter().map(rustls::pki_types::CertificateDer::from).collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_pkcs8.into());
    let cfg = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let s2 = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, served) = (acceptor.clone(), s2.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 64];
                    if let Ok(n) = tls.read(&mut buf).await
                        && n > 0
                    {
                        served.fetch_add(1, Ordering::SeqCst);
                        let _ = tls.write_all(b"id=impostor\n").await;
                    }
                }
            });
        }
    });
    (addr, served)
}

fn refused_count(log: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("proxy stats (shutdown)"))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("refused=")).and_then(|v| v.parse().ok())
}

const CLIENT: &str = "spiffe://test.example/agents/client";
const SERVER: &str = "spiffe://test.example/agents/server";
const INTRUDER: &str = "spiffe://test.example/agents/intruder";

fn three_identities(b: &Binaries, extra: &str) -> String {
    format!(
        "{}{}{}",
        entry(TD, "agents/client", &b.client, extra),
        entry(TD, "agents/server", &b.server, extra),
        entry(TD, "agents/intruder", &b.intruder, extra)
    )
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_attested_proxies_carry_the_client_id_to_the_server() {
    let b = Binaries::new();
    let d = Daemon::start(&three_identities(&b, ""));

    // Inbound, `line`: exact allow. Inbound, `proxy-v2`: prefix allow.
    let (line_agent, _) = agent(Header::Line).await;
    let (v2_agent, _) = agent(Header::ProxyV2).await;
    let (plain_agent, _) = agent(Header::None).await;
    let in_line =
        Proxy::start(&b.server, &d, "accept", &line_agent.to_string(), &[CLIENT], &["--peer-id-header", "line"]);
    let in_v2 = Proxy::start(
        &b.server,
        &d,
        "accept",
        &v2_agent.to_string(),
        &["spiffe://test.example/agents/*"],
        &["--peer-id-header", "proxy-v2"],
    );
    let in_plain = Proxy::start(&b.server, &d, "accept", &plain_agent.to_string(), &[CLIENT], &[]);
    // Outbound: exact, whole trust domain, prefix.
    let out_line = Proxy::start(&b.client, &d, "connect", &in_line.addr(), &[SERVER], &[]);
    let out_v2 = Proxy::start(&b.client, &d, "connect", &in_v2.addr(), &["spiffe://test.example"], &[]);
    let out_plain = Proxy::start(&b.client, &d, "connect", &in_plain.addr(), &["spiffe://test.example/agents/*"], &[]);

    assert_eq!(exchange(&out_line.addr()).await.unwrap(), format!("id={CLIENT}"));
    assert_eq!(exchange(&out_v2.addr()).await.unwrap(), format!("id={CLIENT}"));
    assert_eq!(exchange(&out_plain.addr()).await.unwrap(), "id=-");

    // Each side logged the other's verified identity.
    in_line.wait_line(&["accepted", &format!("peer_id={CLIENT}")]);
    out_line.wait_line(&["connected", &format!("peer_id={SERVER}")]);
    // Both are distinct attested workloads with their own SVIDs.
    in_line.wait_line(&["own SVID", &format!("id={SERVER}")]);
    out_line.wait_line(&["own SVID", &format!("id={CLIENT}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_not_allowed_are_refused_on_each_side() {
    let b = Binaries::new();
    let d = Daemon::start(&three_identities(&b, ""));
    let (agent_addr, agent_conns) = agent(Header::Line).await;
    let mut inbound =
        Proxy::start(&b.server, &d, "accept", &agent_addr.to_string(), &[CLIENT], &["--peer-id-header", "line"]);

    // Inbound: the intruder's proxy reaches the server proxy, which refuses its client ID.
    let intruder = Proxy::start(&b.intruder, &d, "connect", &inbound.addr(), &[SERVER], &[]);
    assert!(exchange(&intruder.addr()).await.is_err());
    let line = inbound.wait_line(&["refused client", &format!("peer_id={INTRUDER}")]);
    assert!(line.contains("not allowed by --allow"), "{line}");
    // Under TLS 1.3 the intruder's proxy learns of it from the alert on its first read.
    intruder.wait_line(&["TLS alert", "does not allow our SPIFFE ID"]);

    // Outbound: the client's proxy expects another server ID and refuses the one it meets.
    let mut outbound =
        Proxy::start(&b.client, &d, "connect", &inbound.addr(), &["spiffe://test.example/agents/billing"], &[]);
    assert!(exchange(&outbound.addr()).await.is_err());
    let line = outbound.wait_line(&["refused server", &format!("peer_id={SERVER}")]);
    assert!(line.contains("not allowed by --allow"), "{line}");

    // The agent never saw a connection; the refusals were counted.
    assert_eq!(agent_conns.load(Ordering::SeqCst), 0);
    assert_eq!(refused_count(&inbound.stop()), Some(1));
    assert_eq!(refused_count(&outbound.stop()), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_expired_and_self_signed_certificates_are_refused() {
    let b = Binaries::new();
    let runner = runner_exe();
    let d = Daemon::start(&format!(
        "{}{}{}",
        entry(TD, "agents/client", &b.client, ""),
        entry(TD, "agents/server", &b.server, ""),
        entry(TD, "agents/expiring", &runner, "x509_svid_ttl = \"1s\"")
    ));
    let other = start_daemon_in(
        "other.example",
        &format!(
            "{}{}",
            entry("other.example", "agents/client", &runner, ""),
            entry("other.example", "agents/server", &b.server, "")
        ),
    );
    let (agent_addr, agent_conns) = agent(Header::Line).await;
    // The other trust domain is named in --allow, so the refusal can only come from the chain.
    let inbound = Proxy::start(
        &b.server,
        &d,
        "accept",
        &agent_addr.to_string(),
        &["spiffe://test.example/agents/*", "spiffe://other.example/agents/client"],
        &["--peer-id-header", "line"],
    );

    // 1. A real SVID of another trust domain (not federated): no bundle to verify it.
    let foreign = other.client().await.fetch_x509_svid().await.unwrap();
    assert_eq!(foreign.spiffe_id().to_string(), "spiffe://other.example/agents/client");
    let chain = foreign.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
    let r = present_client_cert(inbound.addr, chain, foreign.private_key().as_bytes().to_vec()).await;
    assert!(r.is_err(), "{r:?}");
    inbound.wait_line(&["refused client", "no trust bundle", "other.example"]);

    // 2. An SVID of our own trust domain, once expired.
    let expiring = d.client().await.fetch_x509_svid().await.unwrap();
    let not_after = with_cert(expiring.leaf().as_bytes(), |c| c.validity().not_after.timestamp()) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() <= not_after {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chain = expiring.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
    let r = present_client_cert(inbound.addr, chain, expiring.private_key().as_bytes().to_vec()).await;
    assert!(r.is_err(), "{r:?}");
    inbound.wait_line(&["refused client", "expired"]);

    // 3. Self-signed, with an allowed-looking SPIFFE ID.
    let (cert, key) = self_signed_svid(CLIENT);
    let r = present_client_cert(inbound.addr, vec![cert], key).await;
    assert!(r.is_err(), "{r:?}");
    inbound.wait_line(&["refused client", "unknown issuer"]);
    assert_eq!(agent_conns.load(Ordering::SeqCst), 0);

    // Outbound: a server of the other trust domain (a real proxy with a real SVID there) ...
    let (foreign_agent, foreign_conns) = agent(Header::None).await;
    let foreign_server = Proxy::start(
        &b.server,
        &other,
        "accept",
        &foreign_agent.to_string(),
        &["spiffe://test.example", "spiffe://other.example"],
        &[],
    );
    let out = Proxy::start(
        &b.client,
        &d,
        "connect",
        &foreign_server.addr(),
        &["spiffe://test.example/agents/server", "spiffe://other.example/agents/server"],
        &[],
    );
    assert!(exchange(&out.addr()).await.is_err());
    out.wait_line(&["refused server", "no trust bundle", "other.example"]);
    assert_eq!(foreign_conns.load(Ordering::SeqCst), 0);

    // ... and a self-signed server claiming the allowed server ID.
    let (cert, key) = self_signed_svid(SERVER);
    let (impostor, served) = tls_server(vec![cert], key).await;
    let out = Proxy::start(&b.client, &d, "connect", &impostor.to_string(), &[SERVER], &[]);
    assert!(exchange(&out.addr()).await.is_err());
    out.wait_line(&["refused server", "unknown issuer"]);
    assert_eq!(served.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_keep_working_across_rotations_and_open_ones_survive() {
    let b = Binaries::new();
    // The daemon renews at half-life: several rotations within a few seconds.
    let d = Daemon::start(&three_identities(&b, "x509_svid_ttl = \"4s\""));
    let (agent_addr, _) = agent(Header::Line).await;
    let inbound =
        Proxy::start(&b.server, &d, "accept", &agent_addr.to_string(), &[CLIENT], &["--peer-id-header", "line"]);
    let outbound = Proxy::start(&b.client, &d, "connect", &inbound.addr(), &[SERVER], &[]);

    // A long-lived connection, opened before any rotation.
    let mut open = BufReader::new(TcpStream::connect(outbound.addr()).await.unwrap());
    assert_eq!(roundtrip_on(&mut open, "first").await.unwrap(), format!("id={CLIENT}\n"));

    // New connections keep succeeding; the server proxy sees the client's serial change, i.e.
    // each new connection presents the newest SVID.
    let serials = |log: &str| {
        let mut v: Vec<String> = log
            .lines()
            .filter(|l| l.contains("accepted"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("peer_serial=")).map(str::to_owned))
            .collect();
        v.dedup();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut n = 0;
    loop {
        assert_eq!(exchange(&outbound.addr()).await.unwrap(), format!("id={CLIENT}"), "connection {n}");
        n += 1;
        if serials(&inbound.log()).len() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "fewer than 3 rotations seen:\n{}", inbound.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rotations = outbound.log().matches("SVID/bundle update").count();
    assert!(rotations >= 3, "client proxy saw {rotations} updates");

    // The connection opened before the rotations still carries data.
    assert_eq!(roundtrip_on(&mut open, "still here").await.unwrap(), "first\n");
    assert_eq!(roundtrip_on(&mut open, "again").await.unwrap(), "still here\n");
}
