//! OIDC discovery (`/.well-known/openid-configuration`) and the JWKS it names, for verifiers that
//! know only OIDC (cloud workload-identity federation, OAuth servers, go-oidc, PyJWT).

use crate::ca::{Authorities, JwtKey};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::SystemTime;

pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/keys";

/// More keys to publish beside the JWT-SVID keys (the delegated-token keys): called on every
/// JWKS request, returns JWKs (each with `kid`; `use: sig` is set here).
pub type ExtraKeys = Arc<dyn Fn() -> Vec<Value> + Send + Sync>;

/// No extra keys.
pub fn no_extra_keys() -> ExtraKeys {
    Arc::new(Vec::new)
}

/// The discovery document. `issuer` is `jwt_issuer`; the JWKS is served beside it.
pub fn discovery(issuer: &str) -> Value {
    let base = issuer.trim_end_matches('/');
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}{JWKS_PATH}"),
        // Required by OIDC discovery, but there is no login here: empty, as SPIRE's provider has it.
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti"],
    })
}

/// One of our JWT keys as a generic OIDC verifier wants it: `use: sig` and `alg`.
fn sig_jwk(key: &JwtKey) -> Value {
    let mut jwk = crate::bundle::jwks::jwk(key);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!("ES256");
    jwk
}

/// The JWK Set: every JWT-SVID key in the ring (successors from the moment they are made, before
/// they sign; predecessors until they expire, which no token they signed outlives), then `extra`.
pub fn jwks(auth: &Authorities, extra: &ExtraKeys) -> Value {
    let mut keys: Vec<Value> = auth.jwt.iter().map(|k| sig_jwk(k)).collect();
    for mut k in extra() {
        if k.is_object() {
            k["use"] = json!("sig");
            keys.push(k);
        }
    }
    json!({ "keys": keys })
}

/// When the key set changes next by a new key: the newest JWT key's half-life (the rotation rule
/// makes its successor then; it signs a tenth of the CA TTL later). A static copy of the JWKS
/// must be republished between the two.
pub fn next_publication(auth: &Authorities) -> Option<SystemTime> {
    let newest = auth.jwt.last()?;
    let life = newest.not_after.duration_since(newest.not_before).unwrap_or_default();
    Some(newest.not_before + life / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jwks_holds_every_key_with_use_sig_and_extras() {
        let now = SystemTime::now();
        let old = Arc::new(JwtKey::for_test("old", now - Duration::from_secs(600), now + Duration::from_secs(60)));
        let new = Arc::new(JwtKey::for_test("new", now + Duration::from_secs(30), now + Duration::from_secs(1000)));
        let auth = Authorities { x509: vec![], jwt: vec![old, new], wit: vec![], delegation: vec![], roots: vec![] };
        let extra: ExtraKeys = Arc::new(|| vec![json!({"kty": "EC", "kid": "deleg", "use": "jwt-svid"}), json!(3)]);
        let doc = jwks(&auth, &extra);
        let kids: Vec<_> = doc["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["old", "new", "deleg"]);
        assert!(doc["keys"].as_array().unwrap().iter().all(|k| k["use"] == "sig"));
        assert_eq!(doc["keys"][0]["alg"], "ES256");
        let d = discovery("https://issuer.example/");
        assert_eq!(d["jwks_uri"], "https://issuer.example/keys");
        assert_eq!(d["issuer"], "https://issuer.example/");
        assert_eq!(next_publication(&auth), Some(now + Duration::from_secs(30) + Duration::from_secs(485)));
    }
}
