//! WIT-SVIDs (spiffe/spiffe standards/WIT-SVID.md) from the real daemon, read with the generated
//! gRPC client and checked with jsonwebtoken against the key FetchWITBundles gives.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a panic is the test failing")]

use crate::common::*;
use std::time::Duration;
use tessera::pb;

fn md<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wit_svid_shape_bundle_renewal_and_withdrawal() {
    let entry = |ttl: &str| {
        format!(
            "[[entries]]\nspiffe_id = \"spiffe://{TD}/agents/wit\"\nselectors = [\"unix:uid:{}\"]\nx509_svid_ttl = \"{ttl}\"\n",
            uid()
        )
    };
    let d = Daemon::start(&entry("4s"));
    let mut raw = raw_client(&d.socket).await;
    let mut stream = raw.fetch_witsvid(md(pb::WitsvidRequest { spiffe_id: String::new() })).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let svid = &first.svids[0];
    assert_eq!(svid.spiffe_id, format!("spiffe://{TD}/agents/wit"));

    let header = jsonwebtoken::decode_header(&svid.wit_svid).unwrap();
    assert_eq!(header.typ.as_deref(), Some("wit+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let kid = header.kid.clone().unwrap();

    // The WIT bundle: the signing key with use wit-svid; its kid is not a JWT-SVID kid.
    let mut b = raw.fetch_wit_bundles(md(pb::WitBundlesRequest {})).await.unwrap().into_inner();
    let bundles = b.message().await.unwrap().unwrap().bundles;
    let jwks: serde_json::Value = serde_json::from_str(&bundles[&format!("spiffe://{TD}")]).unwrap();
    let key =
        jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("kid in the WIT bundle");
    assert_eq!(key["use"], "wit-svid");
    let jwt_bundles = d.client().await.fetch_jwt_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    assert!(jwt_bundles.get(&td).unwrap().find_jwt_authority(&kid).is_none(), "WIT key not in the JWT bundle");

    let dec =
        jsonwebtoken::DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.validate_aud = false;
    let c = jsonwebtoken::decode::<serde_json::Value>(&svid.wit_svid, &dec, &v).unwrap().claims;
    assert_eq!(c["sub"], svid.spiffe_id.as_str());
    assert!(c.get("aud").is_none() && c.get("iss").is_none(), "{c}");
    assert!(c["iat"].is_u64() && c["jti"].is_string());
    // The private key is an RFC 7517 JWK whose public half is cnf.jwk.
    let private: serde_json::Value = serde_json::from_str(&svid.wit_svid_key).unwrap();
    assert_eq!((private["kty"].as_str(), private["crv"].as_str()), (Some("EC"), Some("P-256")));
    assert!(private["d"].is_string());
    assert_eq!(private["x"], c["cnf"]["jwk"]["x"]);
    assert_eq!(private["y"], c["cnf"]["jwk"]["y"]);
    assert_eq!(c["cnf"]["jwk"]["alg"], "ES256");

    // Renewed at half-life with a fresh key pair.
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    let renewed = &next.svids[0];
    assert_ne!(renewed.wit_svid, svid.wit_svid);
    assert_ne!(claims(&renewed.wit_svid)["cnf"]["jwk"]["x"], c["cnf"]["jwk"]["x"]);

    // An ID the caller is not entitled to: PermissionDenied at once.
    let err = raw
        .fetch_witsvid(md(pb::WitsvidRequest { spiffe_id: format!("spiffe://{TD}/someone-else") }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // The entry goes away (reload): the stream is withdrawn, as for X.509-SVIDs.
    let text = std::fs::read_to_string(&d.config).unwrap();
    let without = text.split("[[entries]]").next().unwrap().to_owned();
    replace_file(&d.config, &without);
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(end.unwrap_err().code(), tonic::Code::PermissionDenied);
    eventually("issuance audited", Duration::from_secs(5), || {
        std::fs::read_to_string(d.audit_log()).unwrap_or_default().contains("wit_svid")
    });
    assert!(!d.log().contains(private["d"].as_str().unwrap()), "the private key is never logged");
}
