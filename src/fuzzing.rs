//! Fuzz harnesses: one function per surface that takes untrusted input. The `cargo fuzz` targets
//! in `fuzz/` call these, and `tests/it/fuzz_regressions.rs` replays the committed corpus and every
//! crash ever found through the same functions on stable, so one piece of code guards both.
//!
//! Each harness returns normally for any input; it panics only when an invariant breaks (which
//! the fuzzer reports as a crash). Not part of the API.
#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a fuzz harness: a panic is its finding")]

use crate::config::Config;
use crate::net::h2_authority::AuthorityFix;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use crate::svid::jwt;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, Waker};
use tessera_attestors::Selector;
use tokio::io::{AsyncRead, ReadBuf};

/// A harness: any bytes in, a panic only when an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every harness, by target name (the `fuzz/fuzz_targets/<name>.rs` files and corpus folders).
pub const TARGETS: &[(&str, Harness)] = &[
    ("h2_authority", h2_authority),
    ("config_parse", config_parse),
    ("jwt_validate", jwt_validate),
    ("spiffe_id", spiffe_id),
    ("selector", selector),
    ("script_argv", script_argv),
];

// ---------------------------------------------------------------------------------------------
// HTTP/2 `:authority` filter

const MAX_FRAME: usize = 16_384;
const MAX_DECODED: usize = 64 * 1024;
/// Read sizes the chunked pass cycles through: frame headers, prefaces and header blocks all
/// get split at odd places.
const CHUNKS: &[usize] = &[1, 9, 2, 24, 7, 100, 3, 4096];

/// Client bytes through [`AuthorityFix`] (its real `poll_read`), in one read and in many small
/// ones. Both must agree, and what h2 is handed must be frames whose header blocks decode
/// without the client's HPACK state and carry only valid `:authority` values.
pub fn h2_authority(data: &[u8]) {
    let whole = filter(vec![data.to_vec()]);
    let mut parts = Vec::new();
    let mut rest = data;
    for &n in CHUNKS.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (a, b) = rest.split_at(n.min(rest.len()));
        parts.push(a.to_vec());
        rest = b;
    }
    let chunked = filter(parts);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert!(a == b, "output depends on how the input was split into reads"),
        (Err(_), Err(_)) => {}
        _ => panic!("one read: {:?}, many reads: {:?}", whole.as_ref().err(), chunked.as_ref().err()),
    }
    if let Ok(out) = whole {
        check_h2_output(data, &out);
    }
}

/// An in-memory client: each `poll_read` hands over (at most) the next chunk, then EOF.
struct Chunks(std::collections::VecDeque<Vec<u8>>);

impl AsyncRead for Chunks {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(mut chunk) = self.0.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.0.push_front(chunk.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn filter(chunks: Vec<Vec<u8>>) -> io::Result<Vec<u8>> {
    let mut fix = AuthorityFix::new(Chunks(chunks.into()));
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut fix).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return Ok(out),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => unreachable!("the in-memory reader is always ready"),
        }
    }
}

fn check_h2_output(input: &[u8], out: &[u8]) {
    let preface = input.len().min(24);
    assert_eq!(out.get(..preface), Some(&input[..preface]), "the preface must pass through untouched");
    let mut rest = out.get(24..).unwrap_or_default();
    let mut block: Option<Vec<u8>> = None;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (ty, flags) = (rest[3], rest[4]);
        if rest.len() < 9 + len {
            break; // the unparsed tail handed over at EOF
        }
        let payload = &rest[9..9 + len];
        rest = &rest[9 + len..];
        match ty {
            0x1 => {
                assert!(block.is_none(), "HEADERS inside a header block");
                assert!(len <= MAX_FRAME, "HEADERS frame of {len} bytes");
                assert_eq!(flags & 0x8, 0, "re-encoded HEADERS carry no padding");
                let skip = if flags & 0x20 != 0 { 5 } else { 0 };
                block = Some(payload[skip..].to_vec());
            }
            0x9 => {
                assert!(len <= MAX_FRAME, "CONTINUATION frame of {len} bytes");
                match block.as_mut() {
                    Some(b) => b.extend_from_slice(payload),
                    None => panic!("CONTINUATION without HEADERS"),
                }
            }
            _ => {
                assert!(block.is_none(), "frame interleaved in a header block");
                continue;
            }
        }
        if flags & 0x4 != 0
            && let Some(b) = block.take()
        {
            check_h2_block(&b);
        }
    }
}

/// A re-encoded block: plain literals only, so a fresh decoder reads it.
fn check_h2_block(block: &[u8]) {
    let headers = match fluke_hpack::Decoder::new().decode(block) {
        Ok(h) => h,
        Err(e) => panic!("re-encoded header block does not decode: {e:?}"),
    };
    let decoded: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(decoded <= MAX_DECODED, "a header block decoded to {decoded} bytes");
    for (name, value) in &headers {
        if name == b":authority" {
            assert!(
                http::uri::Authority::try_from(value.as_slice()).is_ok(),
                "invalid :authority {value:?} reached h2"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config

/// Config text through parse + validation: every refusal is located and says what to write;
/// every accepted config holds what the daemon relies on.
pub fn config_parse(data: &[u8]) {
    // `Config::load` reads with read_to_string: non-UTF-8 never gets further.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/fuzz/tessera.toml");
    let lines = text.lines().count() + 1;
    match Config::parse(text, path) {
        Err(e) => {
            assert!(!e.issues.is_empty(), "a refusal without an issue");
            for i in &e.issues {
                assert!(i.line <= lines, "issue on line {} of a {lines}-line file: {i:?}", i.line);
                assert!(!i.key.is_empty() && !i.message.is_empty() && !i.fix.is_empty(), "{i:?}");
            }
            assert!(e.to_string().contains("/fuzz/tessera.toml"));
        }
        Ok(cfg) => check_config(&cfg),
    }
}

fn check_config(cfg: &Config) {
    assert_eq!(cfg.trust_domain.as_str().parse::<TrustDomain>().as_ref(), Ok(&cfg.trust_domain));
    assert!(cfg.socket_mode <= 0o777);
    let one_second = std::time::Duration::from_secs(1);
    assert!(cfg.ca_ttl >= one_second && cfg.reattest_interval >= one_second);
    for f in &cfg.federation {
        assert_ne!(f.trust_domain, cfg.trust_domain, "federation with ourselves accepted");
    }
    let entries = cfg.registry.entries();
    for e in entries {
        assert_eq!(e.spiffe_id.trust_domain(), &cfg.trust_domain, "{} accepted", e.spiffe_id);
        assert!(!e.spiffe_id.path().is_empty(), "root ID accepted for an entry");
        assert!(!e.selectors.is_empty(), "an entry without selectors matches every process");
        assert!(e.x509_svid_ttl >= one_second && e.jwt_svid_ttl >= one_second);
        for s in &e.selectors {
            assert_eq!(s.to_string().parse::<Selector>().as_ref(), Ok(s));
        }
        for td in &e.federates_with {
            assert!(cfg.federation.iter().any(|f| &f.trust_domain == td), "federates_with {td} accepted");
        }
        // The selector index finds exactly what a scan of every entry finds.
        let found: Vec<&SpiffeId> = cfg.registry.matching(&e.selectors).iter().map(|m| &m.spiffe_id).collect();
        let mut seen = BTreeSet::new();
        let scanned: Vec<&SpiffeId> = entries
            .iter()
            .filter(|x| x.matches(&e.selectors))
            .map(|x| &x.spiffe_id)
            .filter(|id| seen.insert(*id))
            .collect();
        assert_eq!(found, scanned, "index and scan disagree for the selectors of {}", e.spiffe_id);
        assert!(found.contains(&&e.spiffe_id), "an entry does not match its own selectors");
    }
    assert!(cfg.registry.matching(&BTreeSet::new()).is_empty(), "an empty selector set matched");
}

// ---------------------------------------------------------------------------------------------
// JWT-SVID validation

/// Trust domain and JWT bundle (public keys only) of the daemon that minted the seed tokens in
/// `fuzz/corpus/jwt_validate/` (see fuzz/README.md); they expire in 2126.
pub const JWT_TRUST_DOMAIN: &str = "fuzz.test";
pub const JWT_JWKS: &str = include_str!("fuzzing_jwks.json");

/// The fixed bundle `jwt_validate` checks against.
pub fn jwt_bundle() -> std::sync::Arc<crate::bundle::JwtBundle> {
    let doc: serde_json::Value = serde_json::from_str(JWT_JWKS).expect("constant JWKS");
    let keys = doc.get("keys").and_then(|k| k.as_array()).cloned().unwrap_or_default();
    std::sync::Arc::new(crate::bundle::JwtBundle::new(
        keys.iter().filter_map(crate::bundle::jwks::Jwk::parse).collect(),
    ))
}

/// `audience\ntoken` (no newline: empty audience) through [`jwt::validate`] against a fixed
/// bundle. A token is only accepted for a subject of that trust domain, naming that audience.
/// No error message carries the whole token.
pub fn jwt_validate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (audience, token) = text.split_once('\n').unwrap_or(("", &text));
    let td: TrustDomain = JWT_TRUST_DOMAIN.parse().expect("constant trust domain");
    let bundle = jwt_bundle();
    let result = jwt::validate(token, audience, |t| (t == &td).then(|| bundle.clone()), crate::clock::now());
    match result {
        Err(e) => {
            // A token-shaped input (dots, longer than any fixed error text) must never be echoed;
            // short inputs may coincide with the fixed text ("invalid token: …").
            if token.len() >= 64 && token.contains('.') {
                assert!(!e.to_string().contains(token), "an error message carries the whole token");
            }
        }
        Ok(v) => {
            assert_eq!(v.spiffe_id.trust_domain(), &td);
            assert!(!v.spiffe_id.path().is_empty() || v.spiffe_id.to_string() == td.id_string());
            assert_eq!(v.claims.get("sub").and_then(|s| s.as_str()), Some(v.spiffe_id.to_string().as_str()));
            let aud_ok = match v.claims.get("aud") {
                Some(serde_json::Value::String(a)) => a == audience,
                Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
                _ => false,
            };
            assert!(aud_ok, "accepted for an audience the token does not name");
            assert!(v.claims.get("exp").is_some_and(|e| e.is_number()), "accepted without a numeric exp");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SPIFFE IDs and selectors

/// `SpiffeId` and `TrustDomain` parsing: what parses prints back as the same text and parses
/// again to the same value.
pub fn spiffe_id(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = s.parse::<SpiffeId>() {
        let printed = id.to_string();
        assert_eq!(printed, s);
        assert_eq!(printed.parse::<SpiffeId>().as_ref(), Ok(&id));
        assert_eq!(id.trust_domain().as_str().parse::<TrustDomain>().as_ref(), Ok(id.trust_domain()));
        assert_eq!(id.trust_domain().id_string().parse::<SpiffeId>().map(|r| r.path().is_empty()), Ok(true));
        assert_eq!(SpiffeId::parse_workload(s).is_ok(), !id.path().is_empty());
        // Every accepted ID is a valid URI, as X.509 SAN and JWT `sub` require.
        assert!(http::Uri::from_str(s).is_ok(), "{s:?} is not a URI");
    }
    if let Ok(td) = s.parse::<TrustDomain>() {
        assert_eq!(td.to_string(), s.strip_prefix("spiffe://").unwrap_or(s));
        assert_eq!(td.to_string().parse::<TrustDomain>().as_ref(), Ok(&td));
        assert_eq!(td.id_string().parse::<TrustDomain>().as_ref(), Ok(&td));
    }
}

/// `Selector` parsing: an accepted selector prints back as the same text and parses again.
pub fn selector(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match s.parse::<Selector>() {
        Ok(sel) => {
            assert_eq!(sel.to_string(), s);
            assert_eq!(sel.to_string().parse::<Selector>().as_ref(), Ok(&sel));
            assert!(!sel.kind().as_str().is_empty() && !sel.value().is_empty());
            let _ = (sel.strength(), tessera_attestors::config_path_of(&sel));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The argv → script parser (`tessera_attestors::script_of_argv`). Input: the executable's file
/// name, a newline, the argv elements separated by NUL (empty ones kept), a 0x01 byte, then the
/// raw environ block. Deterministic; a script it reports is one of the argv elements; it never
/// reports a script while a non-empty preload variable (`LD_PRELOAD`) could run other code first.
pub fn script_argv(data: &[u8]) {
    let (head, environ) = match data.iter().position(|b| *b == 1) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(head);
    let (exe, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let argv: Vec<String> = rest.split('\0').map(str::to_owned).collect();
    let first = tessera_attestors::script_of_argv(exe, &argv, environ);
    assert_eq!(first, tessera_attestors::script_of_argv(exe, &argv, environ), "deterministic");
    let Some((_, Ok(entry))) = first else { return };
    use tessera_attestors::ScriptEntry;
    match &entry {
        ScriptEntry::None => return,
        ScriptEntry::File { path, .. } => {
            assert!(!path.is_empty() && argv.iter().any(|a| a.contains(path.as_str())), "{path:?} not in {argv:?}")
        }
        ScriptEntry::Module(m) | ScriptEntry::Bin(m) => assert!(!m.is_empty()),
    }
    // An empty LD_PRELOAD preloads nothing; any other value could run code first.
    let preload = environ.split(|b| *b == 0).any(|var| var.starts_with(b"LD_PRELOAD=") && var.len() > 11);
    assert!(!preload, "a script entry {entry:?} was reported although LD_PRELOAD is set");
}

/// For the libFuzzer build of `h2_authority`, whose panic hook aborts on every panic, even a
/// caught one: let panics raised inside fluke-hpack unwind to the `catch_unwind` in
/// [`AuthorityFix`] (which turns them into a closed connection, as in the daemon) and abort on
/// any other. Install after libfuzzer-sys has installed its hook.
pub fn let_hpack_panics_unwind() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_hpack = info.location().is_some_and(|l| l.file().contains("fluke-hpack"));
        if !in_hpack {
            abort_hook(info);
        }
    }));
}
