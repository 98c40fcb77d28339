//! Token-exchange load client for `bench/token-exchange/run` (not a test).
//!
//!   token_exchange_bench idp DIR                      write DIR/idp.der (ES256 key) and DIR/idp-jwks.json
//!   token_exchange_bench run SOCKET DIR SECS CONC..   exchanges/s and latency percentiles per concurrency,
//!                                                     then the in-process ES256 sign+verify limit
//!
//! Each worker keeps one HTTP/1.1 connection to the token socket and sends exchanges back to back.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark tool: any failure aborts the run")]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn idp(dir: &Path) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("idp.der"), key.serialize_der()).unwrap();
    let raw = key.public_key_raw();
    let jwk = json!({ "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                      "y": URL_SAFE_NO_PAD.encode(&raw[33..65]), "kid": "bench", "use": "sig", "alg": "ES256" });
    std::fs::write(dir.join("idp-jwks.json"), json!({ "keys": [jwk] }).to_string()).unwrap();
}

fn user_token(dir: &Path) -> String {
    let der = std::fs::read(dir.join("idp.der")).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.kid = Some("bench".into());
    let n = now();
    let claims = json!({ "iss": "https://idp.bench", "sub": "alice", "aud": "tessera", "iat": n, "exp": n + 3600, "scope": "flight:search" });
    jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_ec_der(&der)).unwrap()
}

async fn worker(socket: std::path::PathBuf, body: Bytes, until: Instant) -> Vec<Duration> {
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut lat = Vec::new();
    while Instant::now() < until {
        let req = http::Request::post("/token")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(body.clone()))
            .unwrap();
        let t = Instant::now();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        lat.push(t.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    }
    lat
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// ES256 sign + verify pairs per second on `threads` threads (what one exchange costs in crypto).
fn crypto_limit(threads: usize, secs: f64) -> f64 {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let enc = jsonwebtoken::EncodingKey::from_ec_der(&key.serialize_der());
                let raw = key.public_key_raw();
                let dec = jsonwebtoken::DecodingKey::from_ec_components(
                    &URL_SAFE_NO_PAD.encode(&raw[1..33]),
                    &URL_SAFE_NO_PAD.encode(&raw[33..65]),
                )
                .unwrap();
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
                v.set_audience(&["a"]);
                let claims = json!({ "sub": "alice", "aud": "a", "exp": now() + 600 });
                let h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed().as_secs_f64() < secs {
                    let t = jsonwebtoken::encode(&h, &claims, &enc).unwrap();
                    jsonwebtoken::decode::<serde_json::Value>(&t, &dec, &v).unwrap();
                    n += 1;
                }
                n as f64 / start.elapsed().as_secs_f64()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

fn main() {
    tessera::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("idp") => idp(Path::new(&args[2])),
        Some("run") => {
            let socket = std::path::PathBuf::from(&args[2]);
            let dir = Path::new(&args[3]);
            let secs: f64 = args[4].parse().unwrap();
            let token = user_token(dir);
            let body = Bytes::from(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
                    .append_pair("subject_token", &token)
                    .append_pair("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
                    .append_pair("audience", "https://api.flights.example")
                    .append_pair("scope", "flight:search")
                    .finish(),
            );
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
            for conc in args[5..].iter().map(|c| c.parse::<usize>().unwrap()) {
                // Warm-up (attestation caches, connections).
                rt.block_on(worker(socket.clone(), body.clone(), Instant::now() + Duration::from_millis(300)));
                let until = Instant::now() + Duration::from_secs_f64(secs);
                let start = Instant::now();
                let mut lat: Vec<Duration> = rt.block_on(async {
                    let tasks: Vec<_> =
                        (0..conc).map(|_| tokio::spawn(worker(socket.clone(), body.clone(), until))).collect();
                    let mut all = Vec::new();
                    for t in tasks {
                        all.extend(t.await.unwrap());
                    }
                    all
                });
                let elapsed = start.elapsed().as_secs_f64();
                lat.sort();
                println!(
                    "exchange concurrency={conc} n={} rate={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
                    lat.len(),
                    lat.len() as f64 / elapsed,
                    pct(&lat, 0.50),
                    pct(&lat, 0.99),
                    pct(&lat, 1.0)
                );
            }
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            println!("es256_sign_verify threads=1 rate={:.0}", crypto_limit(1, secs.min(3.0)));
            println!("es256_sign_verify threads={cores} rate={:.0}", crypto_limit(cores, secs.min(3.0)));
        }
        _ => eprintln!("usage: token_exchange_bench idp DIR | run SOCKET DIR SECS CONC..."),
    }
}
