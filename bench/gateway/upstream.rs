//! The HTTPS upstream of `bench/gateway/run` (not a test): one tokio thread, HTTP/1.1 or HTTP/2 by
//! ALPN, a throwaway CA and a `localhost` / 127.0.0.1 leaf made with rcgen.
//!
//!   gateway_bench_upstream DIR ADDR SECRET_FILE [plain]
//!
//! Writes DIR/ca.pem, listens on ADDR (e.g. 127.0.0.1:8443), then prints `ready`. Every request must
//! carry `Authorization: Bearer <contents of SECRET_FILE, trimmed>` (401 otherwise), so a proxy
//! that does not inject the credential cannot look fast. SECRET_FILE `-`: no credential checked
//! (`bench/guard/run`: a guard removes the caller's token). `plain`: HTTP/1.1 without TLS (no
//! ca.pem), as a service behind a guard on loopback:
//!
//!   GET /small    200, a ~100-byte JSON body
//!   GET /stream   200 text/event-stream: 20 events 10 ms apart, the first at once
//!   GET /_stats   (no credential needed) connections accepted, of them h2, requests served: how
//!                 well a proxy reuses its upstream connections
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark tool: any failure aborts the run")]

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

type Body = BoxBody<Bytes, Infallible>;

static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static H2_CONNECTIONS: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);

const SMALL: &str =
    r#"{"id":"bench-0001","object":"small","model":"none","choices":[{"index":0,"text":"ok"}],"usage":{}}"#;

fn tls_config(dir: &std::path::Path) -> tokio_rustls::rustls::ServerConfig {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(rcgen::DnType::CommonName, "gateway bench CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    let chain = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

fn plain(status: StatusCode, body: &'static str, ctype: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .unwrap()
}

async fn handle(req: Request<Incoming>, expected: Arc<Option<Vec<u8>>>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/_stats" {
        let (c, h2, r) = (CONNECTIONS.load(Relaxed), H2_CONNECTIONS.load(Relaxed), REQUESTS.load(Relaxed));
        let body = format!("{{\"connections\":{c},\"h2_connections\":{h2},\"requests\":{r}}}\n");
        return Ok(Response::new(Full::new(Bytes::from(body)).boxed()));
    }
    REQUESTS.fetch_add(1, Relaxed);
    let authorized = match expected.as_ref() {
        None => true,
        Some(e) => req.headers().get(hyper::header::AUTHORIZATION).is_some_and(|v| v.as_bytes() == e.as_slice()),
    };
    if !authorized {
        return Ok(plain(StatusCode::UNAUTHORIZED, "{\"error\":\"unauthorized\"}\n", "application/json"));
    }
    Ok(match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/small") => plain(StatusCode::OK, SMALL, "application/json"),
        (&hyper::Method::GET, "/stream") => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..20 {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let ev = format!("id: {i}\nevent: delta\ndata: {{\"i\":{i},\"text\":\"token\"}}\n\n");
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, "text/event-stream")
                .header(hyper::header::CACHE_CONTROL, "no-cache")
                .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
                .unwrap()
        }
        _ => plain(StatusCode::NOT_FOUND, "{\"error\":\"not found\"}\n", "application/json"),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: gateway_bench_upstream DIR ADDR SECRET_FILE|- [plain]";
    assert!(args.len() == 4 || (args.len() == 5 && args[4] == "plain"), "{usage}");
    let dir = std::path::PathBuf::from(&args[1]);
    let expected = Arc::new((args[3] != "-").then(|| {
        let secret = std::fs::read_to_string(&args[3]).unwrap();
        format!("Bearer {}", secret.trim()).into_bytes()
    }));
    let acceptor = (args.len() == 4).then(|| TlsAcceptor::from(Arc::new(tls_config(&dir))));
    let listener = tokio::net::TcpListener::bind(&args[2]).await.unwrap();
    println!("ready");
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                CONNECTIONS.fetch_add(1, Relaxed);
                let svc = hyper::service::service_fn(move |req| handle(req, expected.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            CONNECTIONS.fetch_add(1, Relaxed);
            H2_CONNECTIONS.fetch_add(u64::from(h2), Relaxed);
            let svc = hyper::service::service_fn(move |req| handle(req, expected.clone()));
            let io = TokioIo::new(tls);
            if h2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(io, svc)
                    .await;
            } else {
                let _ =
                    hyper::server::conn::http1::Builder::new().timer(TokioTimer::new()).serve_connection(io, svc).await;
            }
        });
    }
}
