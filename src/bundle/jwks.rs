//! JWKs (RFC 7517), typed: encoding our JWT signing keys, whose JWKs carry `kid` and
//! `use: jwt-svid`, reading keys from documents others publish, and finding a verification key in
//! a JWT bundle. Every JWK the daemon builds or keeps is a [`Jwk`].

use crate::ca::JwtKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// One public JSON Web Key. Members tessera does not use are kept as they came (`other`), so a
/// partner's keys are served on unchanged; a private member (`d`, …) never belongs here.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Jwk {
    /// A P-256 public key (`x`, `y` base64url) with `kid` and `use`.
    pub(crate) fn p256(x: &[u8], y: &[u8], kid: Option<String>, use_: &str) -> Self {
        Self {
            kty: "EC".into(),
            kid,
            use_: Some(use_.into()),
            alg: None,
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: Some(URL_SAFE_NO_PAD.encode(y)),
            n: None,
            e: None,
            x5c: None,
            other: Map::new(),
        }
    }

    /// A JWK read from a document someone else published; `None` when it is not a JWK object (no
    /// `kty`, or a member of the wrong type).
    pub(crate) fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// The JWK of one of our ES256 signing keys.
pub(crate) fn jwk(key: &JwtKey) -> Jwk {
    // public_point is 0x04 || X (32) || Y (32).
    let (x, y) =
        key.public_point.get(1..).unwrap_or_default().split_at(32.min(key.public_point.len().saturating_sub(1)));
    Jwk::p256(x, y, Some(key.kid.clone()), "jwt-svid")
}

/// A verification key found in a JWKS, with the JWS algorithms it may verify.
pub struct VerifyKey {
    pub key: jsonwebtoken::DecodingKey,
    pub algs: &'static [jsonwebtoken::Algorithm],
}

/// Find the key with `kid` among a bundle's JWKs. Keys with another `use` than `jwt-svid` (when
/// set) or an unknown `kty` are ignored, as the bundle spec says.
pub(crate) fn find_key(keys: &[Jwk], kid: &str) -> Option<VerifyKey> {
    use jsonwebtoken::Algorithm::*;
    keys.iter().find_map(|k| {
        if k.kid.as_deref()? != kid {
            return None;
        }
        if k.use_.as_deref().is_some_and(|u| u != "jwt-svid") {
            return None;
        }
        match k.kty.as_str() {
            "EC" => {
                let algs: &'static [_] = match k.crv.as_deref()? {
                    "P-256" => &[ES256],
                    "P-384" => &[ES384],
                    _ => return None,
                };
                let key = jsonwebtoken::DecodingKey::from_ec_components(k.x.as_deref()?, k.y.as_deref()?).ok()?;
                Some(VerifyKey { key, algs })
            }
            "RSA" => {
                let key = jsonwebtoken::DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
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
pub(crate) fn signing_jwk(k: &Jwk) -> Option<Jwk> {
    k.kid.as_ref()?;
    match k.use_.as_deref() {
        None | Some("sig") | Some(BUNDLE_KEY_USE) => Some(Jwk { use_: None, ..k.clone() }),
        Some(_) => None,
    }
}

/// The public JWK of one of our keys as a generic JOSE/OIDC verifier wants it (`use: sig`,
/// `alg: ES256`): the JWT-SVID keys in the OIDC JWKS, the delegation keys at `GET /jwks` and in
/// the delegation issuer's JWKS.
pub(crate) fn published_jwk(key: &crate::ca::JwtKey) -> Jwk {
    Jwk { use_: Some("sig".into()), alg: Some("ES256".into()), ..jwk(key) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partners_jwk_is_served_on_with_the_members_tessera_does_not_know() {
        let v = serde_json::json!({ "kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "k1",
                                    "use": "jwt-svid", "x5t#S256": "thumb", "ext": true });
        let k = Jwk::parse(&v).unwrap();
        assert_eq!(
            (k.kid.as_deref(), k.use_.as_deref(), k.crv.as_deref()),
            (Some("k1"), Some("jwt-svid"), Some("P-256"))
        );
        assert_eq!(serde_json::to_value(&k).unwrap(), v, "round trip, unknown members kept");
        // Not a JWK: no kty, or a member of the wrong type.
        assert!(Jwk::parse(&serde_json::json!({ "kid": "k" })).is_none());
        assert!(Jwk::parse(&serde_json::json!({ "kty": "EC", "kid": 5 })).is_none());
        assert!(Jwk::parse(&serde_json::json!(3)).is_none());
        // Signing keys: `use` sig or tessera-delegation (dropped), or none; a kid is required.
        let sig = Jwk { use_: Some("sig".into()), ..k.clone() };
        assert_eq!(signing_jwk(&sig).unwrap().use_, None);
        assert!(signing_jwk(&k).is_none(), "jwt-svid is not a signing-key use here");
        assert!(signing_jwk(&Jwk { kid: None, use_: None, ..k }).is_none());
    }
}
