//! The Workload API against an independent client (the `spiffe` crate): X.509 and JWT SVIDs,
//! bundles, validation, status codes, entries in config order, restart.

use crate::common::*;
use spiffe::{JwtSvid, TrustDomain};
use std::time::Duration;
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn uid_entry(path: &str, extra: &str) -> String {
    format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/{path}\"\nselectors = [\"unix:uid:{}\"]\n{extra}\n", uid())
}

#[tokio::test]
async fn x509_svid_is_spec_conformant_and_verifies_against_the_bundle() {
    let d = Daemon::start(&uid_entry("agents/support", "x509_svid_ttl = \"2m\"\ndns_names = [\"support.internal\"]"));
    let client = d.client().await;
    let svid = client.fetch_x509_svid().await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/agents/support"));

    let leaf = svid.leaf().as_bytes().to_vec();
    with_cert(&leaf, |cert| {
        // Exactly one URI SAN, the SPIFFE ID; the DNS name beside it.
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let uris: Vec<_> = san
            .value
            .general_names
            .iter()
            .filter_map(|g| if let GeneralName::URI(u) = g { Some(*u) } else { None })
            .collect();
        assert_eq!(uris, [format!("spiffe://{TD}/agents/support").as_str()]);
        assert!(san.value.general_names.contains(&GeneralName::DNSName("support.internal")));
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign() && !ku.value.crl_sign());
        assert!(!cert.is_ca());
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth);
        let has = |f: fn(&ParsedExtension<'_>) -> bool| cert.extensions().iter().any(|e| f(e.parsed_extension()));
        assert!(has(|e| matches!(e, ParsedExtension::SubjectKeyIdentifier(_))));
        assert!(has(|e| matches!(e, ParsedExtension::AuthorityKeyIdentifier(_))));
        // TTL: 2 minutes (+10 s backdating).
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 130);
    });

    // The chain verifies against the bundle and the key matches: a real mTLS handshake between two
    // rustls endpoints driven by the crate's X509Source does both checks.
    let source = spiffe::X509Source::builder().endpoint(d.endpoint()).build().await.unwrap();
    let td = TrustDomain::new(TD).unwrap();
    let server = spiffe_rustls::mtls_server(source.clone())
        .trust_domain_policy(spiffe_rustls::LocalOnly(td.clone()))
        .authorize(spiffe_rustls::authorizer::exact([format!("spiffe://{TD}/agents/support").as_str()]).unwrap())
        .build()
        .unwrap();
    let client_cfg =
        spiffe_rustls::mtls_client(source.clone()).trust_domain_policy(spiffe_rustls::LocalOnly(td)).build().unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (srv, cli) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    let srv = srv.expect("server side of mTLS");
    cli.expect("client side of mTLS");
    assert!(srv.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()));

    // One process keeps the SVID it was given until renewal (a fetch then a stream see one
    // identity, as from SPIRE's cache); another process gets its own key and serial.
    let again = d.client().await.fetch_x509_svid().await.unwrap();
    assert_eq!(again.leaf().as_bytes(), svid.leaf().as_bytes());
    let out = std::process::Command::new(bin())
        .args(["api", "fetch", "x509", "--write"])
        .arg(d.dir.path().join("other"))
        .args(["--silent", "--socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let other_pem = std::fs::read(d.dir.path().join("other/svid.0.pem")).unwrap();
    let other_leaf = pem::parse_many(&other_pem).unwrap()[0].contents().to_vec();
    assert_ne!(other_leaf, svid.leaf().as_bytes());
}

#[tokio::test]
async fn jwt_svid_verifies_with_the_crates_own_verifier() {
    let d = Daemon::start(&format!("jwt_issuer = \"https://issuer.test\"\n{}", uid_entry("agents/jwt", "")));
    let client = d.client().await;
    let token = client.fetch_jwt_token(["billing-api"], None).await.unwrap();
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let svid = JwtSvid::parse_and_validate(&token, &bundles, &["billing-api"]).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), format!("spiffe://{TD}/agents/jwt"));
    assert_eq!(svid.audience(), ["billing-api"]);
    // Wrong audience: refused by the crate's verifier.
    assert!(JwtSvid::parse_and_validate(&token, &bundles, &["other"]).is_err());

    // Header exactly alg, kid, typ; claims include iss and iat; default TTL 5 minutes.
    use base64::Engine;
    let dec = |s: &str| -> serde_json::Value {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
    };
    let parts: Vec<&str> = token.split('.').collect();
    let header = dec(parts[0]);
    let mut keys: Vec<&String> = header.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["alg", "kid", "typ"]);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let claims = dec(parts[1]);
    assert_eq!(claims["iss"], "https://issuer.test");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
    // One audience: a plain string (the OAuth SPIFFE client-auth draft); the crate above parsed it.
    assert_eq!(claims["aud"], serde_json::json!("billing-api"));
    // A random jti per token (RFC 7523 replay protection, MCP workload identity).
    let again = client.fetch_jwt_token(["billing-api"], None).await.unwrap();
    let jti_again = dec(again.split('.').nth(1).unwrap())["jti"].clone();
    assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
    assert_ne!(claims["jti"], jti_again);
}

#[tokio::test]
async fn validate_jwt_svid_good_and_bad() {
    let d = Daemon::start(&uid_entry("agents/v", ""));
    let client = d.client().await;
    let token = client.fetch_jwt_token(["aud-1"], None).await.unwrap();
    let ok = client.validate_jwt_token("aud-1", &token).await.unwrap();
    assert_eq!(ok.spiffe_id().to_string(), format!("spiffe://{TD}/agents/v"));

    let mut raw = raw_client(&d.socket).await;
    let call = |aud: &str, svid: &str| {
        let mut req =
            tonic::Request::new(tessera::pb::ValidateJwtsvidRequest { audience: aud.into(), svid: svid.into() });
        req.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
        req
    };
    let good = raw.validate_jwtsvid(call("aud-1", &token)).await.unwrap().into_inner();
    let claims = good.claims.unwrap();
    assert!(claims.fields.contains_key("sub") && claims.fields.contains_key("exp"));

    // Wrong audience, tampered signature, garbage, empty fields: InvalidArgument with a reason.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for (aud, svid) in [
        ("aud-2", token.as_str()),
        ("aud-1", tampered.as_str()),
        ("aud-1", "not.a.jwt"),
        ("", token.as_str()),
        ("aud-1", ""),
    ] {
        let err = raw.validate_jwtsvid(call(aud, svid)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{aud} / {svid}: {err:?}");
        assert!(!err.message().is_empty());
    }
}

#[tokio::test]
async fn missing_security_header_is_invalid_argument() {
    let d = Daemon::start(&uid_entry("agents/h", ""));
    let mut raw = raw_client(&d.socket).await;
    let err = raw
        .fetch_jwtsvid(tessera::pb::JwtsvidRequest { audience: vec!["a".into()], spiffe_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = raw.fetch_x509svid(tessera::pb::X509svidRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Wrong value is as bad as none.
    let mut req = tonic::Request::new(tessera::pb::X509BundlesRequest {});
    req.metadata_mut().insert("workload.spiffe.io", "TRUE".parse().unwrap());
    assert_eq!(raw.fetch_x509_bundles(req).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn no_matching_entry_is_permission_denied_and_audited() {
    let d = Daemon::start(&format!(
        "[[entries]]\nspiffe_id = \"spiffe://{TD}/someone-else\"\nselectors = [\"unix:uid:{}\"]\n",
        uid() + 4242
    ));
    let client = d.client().await;
    let err = client.fetch_x509_svid().await.unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied), "{err:?}");
    let err = client.fetch_jwt_token(["a"], None).await.unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied), "{err:?}");
    eventually("refusal in the audit log", Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().contains("no registration entry matches")
    });
}

#[tokio::test]
async fn two_entries_give_two_svids_in_config_order() {
    let not_me =
        format!("[[entries]]\nspiffe_id = \"spiffe://{TD}/not-me\"\nselectors = [\"unix:uid:{}\"]\n", uid() + 1);
    let d = Daemon::start(&format!(
        "{}{not_me}{}",
        uid_entry("first", "hint = \"primary\""),
        uid_entry("second", "hint = \"secondary\"")
    ));
    let client = d.client().await;
    let svids = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = svids.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert_eq!(ids, [format!("spiffe://{TD}/first"), format!("spiffe://{TD}/second")]);
    assert_eq!(svids[0].hint(), Some("primary"));
    // The default identity (first) is what fetch_x509_svid returns.
    assert_eq!(client.fetch_x509_svid().await.unwrap().spiffe_id().to_string(), format!("spiffe://{TD}/first"));
    // Asking for one ID by name restricts the JWT response to it.
    let second = spiffe::SpiffeId::new(format!("spiffe://{TD}/second")).unwrap();
    let jwt = client.fetch_jwt_svid(["x"], Some(&second)).await.unwrap();
    assert_eq!(jwt.spiffe_id(), &second);
    let not_mine = spiffe::SpiffeId::new(format!("spiffe://{TD}/not-me")).unwrap();
    let err = client.fetch_jwt_svid(["x"], Some(&not_mine)).await.unwrap_err();
    assert_eq!(status_code(&err), Some(tonic::Code::PermissionDenied), "{err:?}");
}

#[tokio::test]
async fn bundles_and_wit_rpcs() {
    let d = Daemon::start(&uid_entry("agents/b", ""));
    let client = d.client().await;
    let td = TrustDomain::new(TD).unwrap();
    let x = client.fetch_x509_bundles().await.unwrap();
    assert_eq!(x.get(&td).unwrap().authorities().len(), 1);
    let j = client.fetch_jwt_bundles().await.unwrap();
    assert_eq!(j.get(&td).unwrap().jwt_authorities().count(), 1);

    let mut raw = raw_client(&d.socket).await;
    let mut req = tonic::Request::new(tessera::pb::WitsvidRequest { spiffe_id: String::new() });
    req.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    // WIT-SVIDs are served now (tests/wit.rs checks them in depth).
    let first = raw.fetch_witsvid(req).await.unwrap().into_inner().message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
}

// Multi-threaded: `stop` blocks this thread while the client's connections must still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_ca_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::start(&uid_entry("agents/r", ""));
    let before = d.client().await.fetch_x509_bundles().await.unwrap();
    let jwt_before = d.client().await.fetch_jwt_bundles().await.unwrap();
    let status = d.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(!d.socket.exists(), "socket removed on shutdown");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.data_dir()), 0o700);
    assert_eq!(mode(&d.data_dir().join("ca.json")), 0o600);

    d.spawn();
    let td = TrustDomain::new(TD).unwrap();
    let after = d.client().await.fetch_x509_bundles().await.unwrap();
    assert_eq!(
        before.get(&td).unwrap().authorities()[0].as_bytes(),
        after.get(&td).unwrap().authorities()[0].as_bytes()
    );
    let jwt_after = d.client().await.fetch_jwt_bundles().await.unwrap();
    let kids = |s: &spiffe::JwtBundleSet| {
        s.get(&td).unwrap().jwt_authorities().map(|a| a.key_id().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(kids(&jwt_before), kids(&jwt_after));
    // Never a private key in the log.
    assert!(!d.log().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn a_live_daemon_is_not_displaced_and_a_stale_socket_is_replaced() {
    let d = Daemon::start(&uid_entry("agents/s", ""));
    let out = std::process::Command::new(bin()).args(["run", "--config"]).arg(&d.config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving") || err.contains("in use by another tessera"), "{err}");
    // The first daemon still serves.
    d.client().await.fetch_x509_svid().await.unwrap();

    // A stale socket file (no listener) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\nsocket_path = \"{}\"\ndata_dir = \"{}\"\n{}",
            sock.display(),
            dir.path().join("data").display(),
            uid_entry("agents/s", "")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_socket(&sock, &mut child, &dir.path().join("none"));
    spiffe::WorkloadApiClient::connect_to(format!("unix:{}", sock.display()))
        .await
        .unwrap()
        .fetch_x509_svid()
        .await
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn grpc_health_is_served_on_the_socket() {
    let d = Daemon::start(&uid_entry("agents/health", ""));
    let channel = uds_channel(&d.socket).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "SpiffeWorkloadAPI"] {
        let resp =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test]
async fn server_reflection_lists_the_workload_api() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let d = Daemon::start(&uid_entry("agents/reflect", ""));
    let mut client = ServerReflectionClient::new(uds_channel(&d.socket).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"SpiffeWorkloadAPI".to_owned()), "{names:?}");
}

/// One raw gRPC call over HTTP/2: the response head, the body's data bytes (read until
/// `messages` whole messages came, or to the end) and the trailers if the body ended.
#[allow(clippy::unwrap_used, reason = "test helper: a failed unwrap fails the test")]
async fn raw_grpc(
    socket: &std::path::Path,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    messages: usize,
) -> (http::response::Parts, Vec<Vec<u8>>, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(body)))).unwrap();
    let response = uds_channel(socket).await.oneshot(req).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let (mut data, mut got, mut trailers) = (Vec::new(), Vec::new(), None);
    while got.len() < messages {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.unwrap();
        if let Some(t) = frame.trailers_ref() {
            trailers = Some(t.clone());
        } else if let Ok(d) = frame.into_data() {
            data.extend_from_slice(&d);
        }
        // Whole length-prefixed messages, uncompressed.
        while data.len() >= 5 {
            assert_eq!(data[0], 0, "compressed flag");
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            if data.len() < 5 + len {
                break;
            }
            got.push(data[5..5 + len].to_vec());
            data.drain(..5 + len);
        }
    }
    (parts, got, trailers)
}

/// `grpc-message` is percent-encoded on the wire.
#[allow(clippy::unwrap_used, reason = "test helper: a failed unwrap fails the test")]
fn percent_decode(v: &[u8]) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&v[i + 1..i + 3]).unwrap(), 16).unwrap());
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The streaming RPCs are served with the daemon's own response body (less memory per
/// stream): on the wire they must look as tonic's did, refusals included.
#[tokio::test]
async fn streaming_rpcs_on_the_wire() {
    use prost::Message;
    let d = Daemon::start(&uid_entry("agents/wire", ""));
    let header = ("workload.spiffe.io", "true");
    let empty_message = vec![0u8; 5];

    // A stream: application/grpc, messages length-prefixed, the first one at once.
    let (head, msgs, trailers) =
        raw_grpc(&d.socket, "/SpiffeWorkloadAPI/FetchX509SVID", &[header], empty_message.clone(), 1).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert!(head.headers.get("grpc-status").is_none(), "not trailers-only: {head:?}");
    assert!(trailers.is_none(), "the stream stays open");
    let first = tessera::pb::X509svidResponse::decode(&msgs[0][..]).unwrap();
    assert_eq!(first.svids[0].spiffe_id, format!("spiffe://{TD}/agents/wire"));
    let (_, msgs, _) =
        raw_grpc(&d.socket, "/SpiffeWorkloadAPI/FetchJWTBundles", &[header], empty_message.clone(), 1).await;
    assert!(
        tessera::pb::JwtBundlesResponse::decode(&msgs[0][..]).unwrap().bundles.contains_key(&format!("spiffe://{TD}"))
    );

    // Refusals before the first message are trailers-only responses, as tonic's: the status in
    // the response headers and an empty body.
    let refused = |head: &http::response::Parts, code: tonic::Code, message: &str| {
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-type"], "application/grpc");
        assert_eq!(head.headers["grpc-status"], (code as i32).to_string(), "{head:?}");
        let got = head.headers.get("grpc-message").map(|v| percent_decode(v.as_bytes())).unwrap_or_default();
        assert!(got.contains(message), "{got:?} should contain {message:?}");
    };
    for path in ["FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles", "FetchWITSVID", "FetchWITBundles"] {
        let path = format!("/SpiffeWorkloadAPI/{path}");
        // No security header: InvalidArgument (the same interceptor as the unary RPCs).
        let (head, msgs, _) = raw_grpc(&d.socket, &path, &[], empty_message.clone(), 1).await;
        refused(&head, tonic::Code::InvalidArgument, "");
        assert!(msgs.is_empty());
        // A compressed request: no compression is enabled.
        let (head, _, _) =
            raw_grpc(&d.socket, &path, &[header, ("grpc-encoding", "gzip")], empty_message.clone(), 1).await;
        refused(&head, tonic::Code::Unimplemented, "Content is compressed with `gzip` which isn");
        assert_eq!(head.headers["grpc-accept-encoding"], "identity");
        // No request message at all.
        let (head, _, _) = raw_grpc(&d.socket, &path, &[header], Vec::new(), 1).await;
        refused(&head, tonic::Code::Internal, "Missing request message.");
        // A message flagged compressed without an encoding.
        let (head, _, _) = raw_grpc(&d.socket, &path, &[header], vec![1, 0, 0, 0, 0], 1).await;
        assert_ne!(head.headers["grpc-status"], "0", "{head:?}");
    }
    // A malformed request message (a WIT request whose field 1 is cut short).
    let (head, _, _) =
        raw_grpc(&d.socket, "/SpiffeWorkloadAPI/FetchWITSVID", &[header], vec![0, 0, 0, 0, 2, 0x0a, 5], 1).await;
    refused(&head, tonic::Code::Internal, "");
    // An invalid requested ID: the shared handler's own refusal.
    let mut bad_id = vec![0, 0, 0, 0, 6, 0x0a, 4];
    bad_id.extend_from_slice(b"nope");
    let (head, _, _) = raw_grpc(&d.socket, "/SpiffeWorkloadAPI/FetchWITSVID", &[header], bad_id, 1).await;
    refused(&head, tonic::Code::InvalidArgument, "invalid requested SPIFFE ID");
    // The unary RPCs still go through the generated server.
    let (head, _, _) = raw_grpc(&d.socket, "/SpiffeWorkloadAPI/FetchJWTSVID", &[], empty_message.clone(), 1).await;
    refused(&head, tonic::Code::InvalidArgument, "");
}
