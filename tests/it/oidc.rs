//! `[oidc]` and `[bundle_endpoint]` against the real daemon: the discovery document and JWKS
//! verify a JWT-SVID the `spiffe` crate fetched; the bundle endpoint presents an SVID that the
//! `spiffe-rustls` verifier accepts for `spiffe://<td>/tessera/bundle-endpoint` and serves the
//! SPIFFE bundle; `tessera export oidc` writes the same documents.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a panic is the test failing")]

use crate::common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One GET; (status line, body).
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, path: &str) -> (String, Vec<u8>) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await.unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    (head.lines().next().unwrap().to_owned(), all[split + 4..].to_vec())
}

async fn get_json(port: u16, path: &str) -> serde_json::Value {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (status, body) = get(tcp, path).await;
    assert!(status.contains("200"), "{path}: {status}");
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_jwks_and_bundle_endpoint() {
    tessera::install_crypto_provider();
    let (oidc, be) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{oidc}");
    let d = Daemon::start(&format!(
        "jwt_issuer = \"{issuer}\"\n[oidc]\nlisten = \"127.0.0.1:{oidc}\"\n[bundle_endpoint]\nlisten = \"127.0.0.1:{be}\"\n\
         [[entries]]\nspiffe_id = \"spiffe://{TD}/agent\"\nselectors = [\"unix:uid:{}\"]\n",
        uid()
    ));
    let discovery = get_json(oidc, "/.well-known/openid-configuration").await;
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap();
    let jwks = get_json(oidc, jwks_uri.strip_prefix(&issuer).unwrap()).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert!(!keys.is_empty() && keys.iter().all(|k| k["use"] == "sig" && k["alg"] == "ES256"));

    // A JWT-SVID fetched with the spiffe crate verifies with the published key (jsonwebtoken).
    let client = d.client().await;
    let token = client.fetch_jwt_token(["https://as.example/token"], None).await.unwrap();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = keys.iter().find(|k| k["kid"] == kid.as_str()).expect("signing key in the JWKS");
    let key =
        jsonwebtoken::DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["https://as.example/token"]);
    v.set_issuer(&[issuer.as_str()]);
    v.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap().claims;
    assert_eq!(claims["sub"], format!("spiffe://{TD}/agent"));
    assert!(claims["jti"].is_string());

    // The bundle endpoint: TLS with an SVID the spiffe-rustls verifier accepts for the
    // endpoint's ID, chained to the bundle our workloads get.
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let source = spiffe::X509Source::builder().endpoint(d.endpoint()).build().await.unwrap();
    let tls = spiffe_rustls::mtls_client(source)
        .trust_domain_policy(spiffe_rustls::LocalOnly(td.clone()))
        .authorize(
            spiffe_rustls::authorizer::exact([format!("spiffe://{TD}/tessera/bundle-endpoint").as_str()]).unwrap(),
        )
        .build()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", be)).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (status, body) = get(stream, "/").await;
    assert!(status.contains("200"), "{status}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let uses: Vec<&str> = doc["keys"].as_array().unwrap().iter().map(|k| k["use"].as_str().unwrap()).collect();
    assert!(uses.contains(&"x509-svid") && uses.contains(&"jwt-svid"), "{uses:?}");
    assert!(!uses.contains(&"wit-svid"), "no WIT keys on the bundle endpoint (spire-server 1.13 refuses them)");
    assert!(doc["spiffe_sequence"].as_u64().is_some());
    assert!(doc["spiffe_refresh_hint"].as_u64().is_some_and(|h| h > 0));

    // tessera export oidc writes the same documents and says when to re-run.
    let out = d.dir.path().join("static");
    let o = std::process::Command::new(bin())
        .args(["export", "oidc"])
        .arg(&out)
        .arg("--admin-socket")
        .arg(d.dir.path().join("admin.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("the next key is published at"));
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(".well-known/openid-configuration")).unwrap()).unwrap();
    assert_eq!(exported, discovery);
    let exported_keys: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("keys")).unwrap()).unwrap();
    assert_eq!(exported_keys, jwks);
}

#[test]
fn check_warns_when_keys_are_published_without_an_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "trust_domain = \"example.org\"\n[oidc]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let o = std::process::Command::new(bin()).args(["check", "-c"]).arg(&cfg).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("jwt_issuer is unset"));
}
