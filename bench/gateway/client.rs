//! The load client of `bench/gateway/run` (not a test): plain HTTP/1.1 keep-alive to a base URL
//! (one connection per concurrent worker, requests back to back), or HTTPS straight to the upstream
//! for the direct baseline. Prints one JSON line.
//!
//!   gateway_bench_client --url URL --concurrency N (--duration S | --requests N)
//!       requests/s and latency (request sent -> whole body read) p50/p99/max in µs, errors
//!   gateway_bench_client --url URL/stream --ttfb K
//!       K streamed responses one after another on one connection: time from the request sent to
//!       the first body byte (p50/p99/max), and to the end of the stream
//!   gateway_bench_client --url URL --idle N
//!       open N keep-alive connections, one request on each, print `ready` and hold them idle
//!       until killed
//!
//! `--direct-tls-ca CA_PEM --secret-file FILE` talk HTTPS (HTTP/1.1 by ALPN) to an `https://` URL
//! and send `Authorization: Bearer <secret>` themselves; `--agent-token TOKEN` sends an
//! `Authorization: Bearer TOKEN` the proxy must replace. Any status but 200 counts as an error (and a connection
//! error reconnects).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark tool: any failure aborts the run")]

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

#[derive(Parser, Clone)]
struct Args {
    /// The URL to GET: `http://127.0.0.1:4180/up/small` (proxy) or `https://localhost:8443/small`.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds of measured load (after the warm-up).
    #[arg(long)]
    duration: Option<f64>,
    /// Total measured requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds of unmeasured warm-up load before the measured run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The CA of an `https://` URL (the direct baseline).
    #[arg(long)]
    direct_tls_ca: Option<std::path::PathBuf>,
    /// The secret the client itself sends as `Authorization: Bearer <secret>` (direct baseline).
    #[arg(long)]
    secret_file: Option<std::path::PathBuf>,
    /// Send `Authorization: Bearer <TOKEN>` through a proxy (which must replace it).
    #[arg(long)]
    agent_token: Option<String>,
    /// Time to first byte of K streamed responses.
    #[arg(long)]
    ttfb: Option<usize>,
    /// Open N idle keep-alive connections and hold them.
    #[arg(long)]
    idle: Option<usize>,
    /// Client runtime threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

struct Target {
    addr: String,
    host: String,
    path_and_query: String,
    tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    auth: Option<hyper::header::HeaderValue>,
}

impl Target {
    fn new(a: &Args) -> Self {
        let uri: hyper::Uri = a.url.parse().expect("--url");
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().expect("URL host").to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = https.then(|| {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(a.direct_tls_ca.as_ref().expect("--direct-tls-ca for an https URL")).unwrap();
            for c in rustls_pemfile_certs(&pem) {
                roots.add(c).unwrap();
            }
            let mut cfg =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
            (tokio_rustls::TlsConnector::from(Arc::new(cfg)), name)
        });
        let auth = match (&a.secret_file, &a.agent_token) {
            (Some(f), _) => {
                let s = std::fs::read_to_string(f).unwrap();
                Some(format!("Bearer {}", s.trim()).parse().unwrap())
            }
            (None, Some(v)) => Some(format!("Bearer {v}").parse().unwrap()),
            (None, None) => None,
        };
        let authority = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Target {
            addr: format!("{host}:{port}"),
            host: authority,
            path_and_query: uri.path_and_query().map_or("/".into(), |p| p.as_str().to_string()),
            tls,
            auth,
        }
    }

    async fn connect(&self) -> std::io::Result<SendRequest<Empty<Bytes>>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let (s, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                s
            }
            None => {
                let (s, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                s
            }
        };
        Ok(sender)
    }

    fn request(&self) -> hyper::Request<Empty<Bytes>> {
        let mut b = hyper::Request::get(self.path_and_query.as_str()).header(hyper::header::HOST, self.host.as_str());
        if let Some(v) = &self.auth {
            b = b.header(hyper::header::AUTHORIZATION, v.clone());
        }
        b.body(Empty::new()).unwrap()
    }
}

/// The certificates of a PEM file (no extra dependency: the `pem` crate is already one).
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    pem::parse_many(pem)
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| rustls::pki_types::CertificateDer::from(p.into_contents()))
        .collect()
}

/// One request; Ok(status) after the whole body was read.
async fn one(t: &Target, s: &mut SendRequest<Empty<Bytes>>) -> Result<u16, hyper::Error> {
    s.ready().await?;
    let resp = s.send_request(t.request()).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

enum Stop {
    At(Instant),
    Count(Arc<std::sync::atomic::AtomicI64>),
}

impl Stop {
    fn go(&self) -> bool {
        match self {
            Stop::At(t) => Instant::now() < *t,
            Stop::Count(n) => n.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0,
        }
    }
}

async fn worker(t: Arc<Target>, stop: Arc<Stop>, warm_until: Instant) -> (Vec<u32>, u64) {
    let mut lat = Vec::with_capacity(1 << 16);
    let mut errors = 0u64;
    let mut s = t.connect().await.expect("connect");
    while Instant::now() < warm_until {
        if !matches!(one(&t, &mut s).await, Ok(200)) {
            errors += 1;
            s = t.connect().await.expect("connect");
        }
    }
    let warm_errors = errors;
    errors = 0;
    while stop.go() {
        let start = Instant::now();
        match one(&t, &mut s).await {
            Ok(200) => lat.push(u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Ok(_) => errors += 1,
            Err(_) => {
                errors += 1;
                s = t.connect().await.expect("connect");
            }
        }
    }
    if warm_errors > 0 {
        eprintln!("warm-up errors: {warm_errors}");
    }
    (lat, errors)
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

async fn load(a: &Args, t: Arc<Target>) -> serde_json::Value {
    let warm_until = Instant::now() + Duration::from_secs_f64(a.warmup);
    let stop = Arc::new(match (a.requests, a.duration) {
        (Some(n), _) => Stop::Count(Arc::new(std::sync::atomic::AtomicI64::new(i64::try_from(n).unwrap()))),
        (None, d) => Stop::At(warm_until + Duration::from_secs_f64(d.unwrap_or(10.0))),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency).map(|_| tokio::spawn(worker(t.clone(), stop.clone(), warm_until))).collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64() - a.warmup;
    lat.sort_unstable();
    serde_json::json!({
        "mode": "load", "url": a.url, "concurrency": a.concurrency, "seconds": secs,
        "requests": lat.len(), "errors": errors, "rps": lat.len() as f64 / secs,
        "p50_us": pct(&lat, 0.50), "p99_us": pct(&lat, 0.99), "max_us": lat.last().copied().unwrap_or(0),
    })
}

async fn ttfb(a: &Args, t: Arc<Target>, k: usize) -> serde_json::Value {
    let mut s = t.connect().await.expect("connect");
    let mut first = Vec::new();
    let mut whole = Vec::new();
    let mut errors = 0;
    for i in 0..=k {
        s.ready().await.expect("ready");
        let start = Instant::now();
        let resp = s.send_request(t.request()).await.expect("send");
        if resp.status() != 200 {
            errors += 1;
        }
        let mut body = resp.into_body();
        let mut got_first = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body");
            if got_first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                got_first = Some(start.elapsed());
            }
        }
        // The first one is a warm-up (it may open the proxy's upstream connection).
        if i > 0 {
            first.push(u32::try_from(got_first.unwrap_or_default().as_micros()).unwrap());
            whole.push(u32::try_from(start.elapsed().as_micros()).unwrap());
        }
    }
    first.sort_unstable();
    whole.sort_unstable();
    serde_json::json!({
        "mode": "ttfb", "url": a.url, "streams": k, "errors": errors,
        "ttfb_p50_us": pct(&first, 0.5), "ttfb_p99_us": pct(&first, 0.99), "ttfb_max_us": first.last().copied().unwrap_or(0),
        "stream_p50_us": pct(&whole, 0.5),
    })
}

async fn idle(a: &Args, t: Arc<Target>, n: usize) -> serde_json::Value {
    let mut held = Vec::with_capacity(n);
    let mut errors = 0;
    // In batches, so that the listen backlog does not overflow.
    for batch in (0..n).collect::<Vec<_>>().chunks(50) {
        let tasks: Vec<_> = batch
            .iter()
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    let mut s = t.connect().await.expect("connect");
                    let ok = matches!(one(&t, &mut s).await, Ok(200));
                    (s, ok)
                })
            })
            .collect();
        for task in tasks {
            let (s, ok) = task.await.unwrap();
            errors += u64::from(!ok);
            held.push(s);
        }
    }
    let out = serde_json::json!({ "mode": "idle", "url": a.url, "connections": held.len(), "errors": errors });
    println!("{out}");
    println!("ready");
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
    drop(held);
    out
}

fn main() {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(a.threads).enable_all().build().unwrap();
    let out = rt.block_on(async {
        let t = Arc::new(Target::new(&a));
        match (a.ttfb, a.idle) {
            (Some(k), _) => ttfb(&a, t, k).await,
            (None, Some(n)) => idle(&a, t, n).await,
            (None, None) => load(&a, t).await,
        }
    });
    println!("{out}");
}
