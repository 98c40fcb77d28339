//! `[[guard]]` validation.

use crate::config::Config;
use crate::config::guard::Bind;
use std::path::Path;

fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
    Config::parse(&format!("trust_domain = \"example.org\"\n{extra}"), Path::new("/etc/tessera/tessera.toml"))
}

const OK: &str = "[[guard]]\nname = \"flights\"\nlisten = \"127.0.0.1:8443\"\nupstream = \"http://127.0.0.1:9000/api/\"\naudience = \"https://api.flights.example\"\nmcp = true\n";

#[test]
fn a_guard_with_its_defaults() {
    let cfg = parse(OK).unwrap();
    let g = &cfg.guards[0];
    assert_eq!(g.name, "flights");
    assert_eq!(g.bind, Bind::Tcp("127.0.0.1:8443".parse().unwrap()));
    assert_eq!(g.upstream_url(), "http://127.0.0.1:9000/api");
    assert_eq!(g.audience, "https://api.flights.example");
    assert!(g.mcp);
    assert_eq!(g.limits.max_request_body, super::DEFAULT_MAX_MCP_BODY);
    assert!(parse("").unwrap().guards.is_empty());
}

#[test]
fn mtls_guards_have_their_own_spiffe_id() {
    let cfg = parse(&format!("{}tls = \"mtls\"\n", OK.replace("127.0.0.1", "0.0.0.0"))).unwrap();
    let g = &cfg.guards[0];
    assert_eq!(g.bind, Bind::Tcp("0.0.0.0:8443".parse().unwrap()), "any address with mTLS");
    assert_eq!(g.mtls.as_ref().unwrap().to_string(), "spiffe://example.org/tessera/guard/flights");
    let cfg = parse(&format!("{OK}tls = \"mtls\"\nspiffe_id = \"spiffe://example.org/gw/f\"\n")).unwrap();
    assert_eq!(cfg.guards[0].mtls.as_ref().unwrap().to_string(), "spiffe://example.org/gw/f");
    assert!(parse(OK).unwrap().guards[0].mtls.is_none());
    let (_, key, msg) = first(&format!("{OK}tls = \"mtls\"\nspiffe_id = \"spiffe://other.org/g\"\n"));
    assert_eq!(key, "guard[0].spiffe_id", "{msg}");
    let (_, key, _) = first(&format!("{OK}tls = \"mtls\"\nspiffe_id = \"spiffe://example.org\"\n"));
    assert_eq!(key, "guard[0].spiffe_id");
    let sock = OK.replace("listen = \"127.0.0.1:8443\"", "socket_path = \"/run/g.sock\"");
    let (_, key, msg) = first(&format!("{sock}tls = \"mtls\"\n"));
    assert_eq!(key, "guard[0].tls");
    assert!(msg.contains("TCP"), "{msg}");
}

/// (line, key, a word of the fix) of the first issue.
fn first(text: &str) -> (usize, String, String) {
    let e = parse(text).unwrap_err();
    let i = &e.issues[0];
    (i.line, i.key.clone(), format!("{} / {}", i.message, i.fix))
}

#[test]
fn bad_guards_are_located_errors_with_fixes() {
    let (line, key, msg) = first(&OK.replace("127.0.0.1:8443", "0.0.0.0:8443"));
    assert_eq!((line, key.as_str()), (4, "guard[0].listen"), "{msg}");
    assert!(msg.contains("loopback"), "{msg}");
    let both = OK.replace("mcp = true\n", "socket_path = \"/run/g.sock\"\n");
    let (_, key, msg) = first(&both);
    assert_eq!(key, "guard[0]", "{msg}");
    assert!(msg.contains("exactly one"), "{msg}");
    let (_, key, _) = first(&OK.replace("http://127.0.0.1:9000/api/", "ftp://x"));
    assert_eq!(key, "guard[0].upstream");
    let (_, key, msg) = first(&format!("{OK}tls = \"tls\"\n"));
    assert_eq!(key, "guard[0].tls");
    assert!(msg.contains("not a TLS mode"), "{msg}");
    let (_, key, _) = first(&format!("{OK}spiffe_id = \"spiffe://example.org/g\"\n"));
    assert_eq!(key, "guard[0].spiffe_id");
    let (_, key, _) = first(&format!("{OK}{}", OK.replace("8443", "8444")));
    assert_eq!(key, "guard[1].name");
    let (_, key, _) = first(&format!("{OK}{}", OK.replace("flights", "other")));
    assert_eq!(key, "guard[1]");
    let (_, key, _) = first(&OK.replace("https://api.flights.example", " "));
    assert_eq!(key, "guard[0].audience");
    let (_, key, _) = first(&format!("{OK}max_header_bytes = 10\n"));
    assert_eq!(key, "guard[0].max_header_bytes");
    let e = parse(&format!("{OK}upsteam = \"x\"\n")).unwrap_err();
    assert!(e.to_string().contains("upstream"), "{e}");
}
