//! Criterion micro-benchmarks of tessera's hot path, each printed beside this machine's raw limit
//! measured in the same run (`openssl speed`), as a percentage of it.
//!
//! `cargo bench --bench hot_path` (or `bench/micro`). Rows:
//! - attest/cold: `Attestor::new` + `ProcessHandle::open(own pid)` + `attest`: hashes this bench's
//!   own executable (digest cache empty); shown as MB/s against `openssl speed -evp sha256`.
//! - attest/warm: the same with the digest cache already holding the executable's digest.
//! - x509/mint: `svid::x509::mint` (fresh P-256 key + ECDSA signature); against P-256 signs/s.
//! - jwt/mint: `svid::jwt::mint` (one ES256 signature); against P-256 signs/s.
//! - jwt/validate: `svid::jwt::validate` with the local JWKS; against P-256 verifies/s.

use criterion::{Criterion, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use tessera::testing::Ca;
use tessera::testing::Entry;
use tessera::testing::{SpiffeId, TrustDomain};
use tessera::testing::{jwt, x509};
use tessera_attestors::{AttestConfig, Attestor, ProcessHandle};

fn criterion_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("criterion"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion"),
    }
}

fn benches(c: &mut Criterion, exe_size: u64) {
    tessera::install_crypto_provider();
    let pid = std::process::id() as i32;
    let cfg = AttestConfig { max_hash_size: None, ..Default::default() };

    let mut g = c.benchmark_group("attest");
    g.throughput(Throughput::Bytes(exe_size));
    g.bench_function("cold", |b| {
        b.iter(|| {
            let attestor = Attestor::new(cfg.clone());
            let handle = ProcessHandle::open(pid).expect("open own pid");
            black_box(attestor.attest(&handle).expect("attest"))
        })
    });
    g.throughput(Throughput::Elements(1));
    let warm = Attestor::new(cfg.clone());
    warm.attest(&ProcessHandle::open(pid).unwrap()).unwrap();
    g.bench_function("warm", |b| {
        b.iter(|| {
            let handle = ProcessHandle::open(pid).expect("open own pid");
            black_box(warm.attest(&handle).expect("attest"))
        })
    });
    g.finish();
    let stats = warm.digest_stats();
    assert!(stats.hits > 0, "warm attestation never hit the digest cache: {stats:?}");

    let dir = tempfile::tempdir().unwrap();
    let td: TrustDomain = "bench.test".parse().unwrap();
    let ca = Ca::open(dir.path(), &td, Duration::from_secs(86400), None, SystemTime::now()).expect("CA");
    let now = SystemTime::now();
    let auth = ca.authorities();
    let signer = auth.x509_signer(now).expect("x509 signer").clone();
    let id: SpiffeId = "spiffe://bench.test/w/bench".parse().unwrap();
    let entry = Entry {
        spiffe_id: id.clone(),
        selectors: ["unix:uid:0".parse().unwrap()].into_iter().collect(),
        x509_svid_ttl: Duration::from_secs(600),
        jwt_svid_ttl: Duration::from_secs(300),
        dns_names: vec![],
        hint: None,
        federates_with: vec![],
        owner: None,
        metadata: Default::default(),
        retired: false,
        delegation: None,
    };
    let mut g = c.benchmark_group("x509");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mint", |b| b.iter(|| black_box(x509::mint(&entry, &signer, now).expect("mint"))));
    g.finish();

    let key = auth.signer(tessera::testing::KeyKind::Jwt, now).expect("jwt signer").clone();
    let aud = vec!["bench".to_string()];
    let mut g = c.benchmark_group("jwt");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mint", |b| {
        b.iter(|| black_box(jwt::mint(&id, &aud, Duration::from_secs(300), None, &key, now).expect("jwt")))
    });
    let token = jwt::mint(&id, &aud, Duration::from_secs(300), None, &key, SystemTime::now()).unwrap().token;
    let jwks = std::sync::Arc::new(tessera::testing::JwtBundle::local(&auth));
    g.bench_function("validate", |b| {
        b.iter(|| {
            black_box(
                jwt::validate(&token, "bench", |t| (t == &td).then(|| jwks.clone()), now)
                    .map(|v| v.spiffe_id)
                    .expect("valid"),
            )
        })
    });
    g.finish();
}

/// Mean time per iteration (ns) that criterion recorded for `group/name` in this run.
fn mean_ns(dir: &Path, group: &str, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(group).join(name).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn openssl(args: &[&str]) -> Option<String> {
    let out = Command::new("openssl").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (signs/s, verifies/s) from `openssl speed -seconds 3 ecdsap256`.
fn p256_limits() -> Option<(f64, f64)> {
    let out = openssl(&["speed", "-seconds", "3", "ecdsap256"])?;
    let line = out.lines().find(|l| l.contains("nistp256"))?;
    let f: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let n = f.len();
    (n >= 2).then(|| (f[n - 2], f[n - 1]))
}

/// SHA-256 bytes/s from `openssl speed -evp sha256` over 1 MiB blocks.
fn sha256_limit() -> Option<f64> {
    let out = openssl(&["speed", "-seconds", "3", "-bytes", "1048576", "-evp", "sha256"])?;
    let line = out.lines().rev().find(|l| l.trim_start().starts_with("sha256"))?;
    let last = line.split_whitespace().last()?;
    let k: f64 = last.trim_end_matches('k').parse().ok()?;
    Some(k * 1000.0)
}

fn main() {
    let exe = std::env::current_exe().expect("own exe");
    let exe_size = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    benches(&mut c, exe_size);
    c.final_summary();

    // Under `cargo test --benches` criterion runs each bench once and records nothing: stop here.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    eprintln!("measuring this machine's raw limits (openssl speed, ~10 s)");
    let p256 = p256_limits();
    let sha = sha256_limit();
    let per_s = |group: &str, name: &str| mean_ns(&dir, group, name).map(|ns| 1e9 / ns);
    let pctf = |x: Option<f64>, lim: Option<f64>| match (x, lim) {
        (Some(x), Some(l)) if l > 0.0 => format!("{:.0} %", 100.0 * x / l),
        _ => "n/a".into(),
    };
    let num = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "n/a".into());
    let us = |group: &str, name: &str| {
        mean_ns(&dir, group, name).map(|ns| format!("{:.1} µs", ns / 1000.0)).unwrap_or_else(|| "n/a".into())
    };

    let cold_bps = mean_ns(&dir, "attest", "cold").map(|ns| exe_size as f64 / (ns / 1e9));
    let mb = |x: Option<f64>| x.map(|v| format!("{:.0} MB/s", v / 1e6)).unwrap_or_else(|| "n/a".into());
    let sign = p256.map(|p| p.0);
    let verify = p256.map(|p| p.1);

    println!();
    println!("## Micro-benchmarks (criterion, mean) beside this machine's raw limits");
    println!();
    println!("| Bench | Time per op | Rate | Raw limit (same run) | % of limit |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| attest, cold digest cache (hashes the {:.1} MB bench binary) | {} | {} | {} (openssl sha256, 1 MiB blocks) | {} |",
        exe_size as f64 / 1e6,
        us("attest", "cold"),
        mb(cold_bps),
        mb(sha),
        pctf(cold_bps, sha)
    );
    println!(
        "| attest, warm digest cache | {} | {}/s | – (no hashing; /proc reads + pidfd) | – |",
        us("attest", "warm"),
        num(per_s("attest", "warm"))
    );
    println!(
        "| X.509-SVID mint (P-256 keygen + sign) | {} | {}/s | {}/s (openssl P-256 sign) | {} |",
        us("x509", "mint"),
        num(per_s("x509", "mint")),
        num(sign),
        pctf(per_s("x509", "mint"), sign)
    );
    println!(
        "| JWT-SVID mint (ES256 sign) | {} | {}/s | {}/s (openssl P-256 sign) | {} |",
        us("jwt", "mint"),
        num(per_s("jwt", "mint")),
        num(sign),
        pctf(per_s("jwt", "mint"), sign)
    );
    println!(
        "| JWT-SVID validate (ES256 verify) | {} | {}/s | {}/s (openssl P-256 verify) | {} |",
        us("jwt", "validate"),
        num(per_s("jwt", "validate")),
        num(verify),
        pctf(per_s("jwt", "validate"), verify)
    );
    println!();
    println!("One core per bench (criterion is single-threaded); openssl speed also runs on one core.");
}
