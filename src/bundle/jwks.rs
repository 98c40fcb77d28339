//! JWKs (RFC 7517): encoding our JWT signing keys, whose JWKs carry `kid` and `use: jwt-svid`, and
//! finding a verification key in a JWT bundle.

use crate::ca::JwtKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The JWK of one of our ES256 signing keys.
pub(crate) fn jwk(key: &JwtKey) -> Value {
    // public_point is 0x04 || X (32) || Y (32).
    let (x, y) =
        key.public_point.get(1..).unwrap_or_default().split_at(32.min(key.public_point.len().saturating_sub(1)));
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": key.kid,
        "use": "jwt-svid",
    })
}

/// A verification key found in a JWKS, with the JWS algorithms it may verify.
pub struct VerifyKey {
    pub key: jsonwebtoken::DecodingKey,
    pub algs: &'static [jsonwebtoken::Algorithm],
}

/// Find the key with `kid` among a bundle's JWKs. Keys with another `use` than `jwt-svid` (when
/// set) or an unknown `kty` are ignored, as the bundle spec says.
pub(crate) fn find_key(keys: &[Value], kid: &str) -> Option<VerifyKey> {
    use jsonwebtoken::Algorithm::*;
    keys.iter().find_map(|k| {
        if k.get("kid")?.as_str()? != kid {
            return None;
        }
        if let Some(u) = k.get("use")
            && u.as_str()? != "jwt-svid"
        {
            return None;
        }
        match k.get("kty")?.as_str()? {
            "EC" => {
                let algs: &'static [_] = match k.get("crv")?.as_str()? {
                    "P-256" => &[ES256],
                    "P-384" => &[ES384],
                    _ => return None,
                };
                let key =
                    jsonwebtoken::DecodingKey::from_ec_components(k.get("x")?.as_str()?, k.get("y")?.as_str()?).ok()?;
                Some(VerifyKey { key, algs })
            }
            "RSA" => {
                let key = jsonwebtoken::DecodingKey::from_rsa_components(k.get("n")?.as_str()?, k.get("e")?.as_str()?)
                    .ok()?;
                Some(VerifyKey { key, algs: &[RS256, RS384, RS512, PS256, PS384, PS512] })
            }
            _ => None,
        }
    })
}

/// The `use` of delegation keys in a SPIFFE bundle (unknown to SPIFFE validators, who skip it).
pub(crate) const BUNDLE_KEY_USE: &str = "tessera-delegation";

/// A JWK usable for signature checks (`use` absent or `sig`, a `kid`), normalized for
/// [`JwtBundle::find`], with its `alg` (if any) kept to pin the algorithm.
pub(crate) fn signing_jwk(k: &Value) -> Option<Value> {
    let mut k = k.as_object()?.clone();
    k.get("kid")?.as_str()?;
    match k.remove("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" || u == BUNDLE_KEY_USE => {}
        Some(_) => return None,
    }
    Some(Value::Object(k))
}

/// The public JWK of one of our keys as a generic JOSE/OIDC verifier wants it (`use: sig`,
/// `alg: ES256`): the JWT-SVID keys in the OIDC JWKS, the delegation keys at `GET /jwks` and in
/// the delegation issuer's JWKS.
pub(crate) fn published_jwk(key: &crate::ca::JwtKey) -> Value {
    let mut jwk = jwk(key);
    jwk["use"] = "sig".into();
    jwk["alg"] = "ES256".into();
    jwk
}
