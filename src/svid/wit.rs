//! WIT-SVIDs (spiffe/spiffe `standards/WIT-SVID.md`): a JWS signed by the CA's WIT key, header
//! `typ: wit+jwt`, `alg`, `kid`; claims `sub`, `exp`, `iat`, `jti` and `cnf.jwk`, the public half of
//! a key pair made for this one token, whose private half goes to the workload as an RFC 7517 JWK.
//! No `aud` (scoping belongs to the proof of possession) and no `iss` (so a WIT is never mistaken
//! for an OIDC ID token).

use crate::ca::JwtKey;
use crate::spiffe_id::SpiffeId;
use aws_lc_rs::encoding::AsBigEndian;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// A minted WIT-SVID with its private key; neither is ever logged.
pub(crate) struct WitSvid {
    pub spiffe_id: SpiffeId,
    pub token: String,
    /// The private key as a JWK (`kty`, `crv`, `x`, `y`, `d`, `alg`).
    private_jwk: Zeroizing<String>,
    pub expires_at: SystemTime,
    /// The CA key that signed it.
    pub kid: String,
}

impl WitSvid {
    /// The private JWK, for the one place it goes: the Workload API response.
    pub(crate) fn private_jwk(&self) -> &str {
        &self.private_jwk
    }
}

impl std::fmt::Debug for WitSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WitError {
    #[error("key generation failed")]
    KeyGen,
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Mint a WIT-SVID for `id` signed by `key`, valid for `ttl` (never past the key's end).
pub(crate) fn mint(id: &SpiffeId, ttl: Duration, key: &JwtKey, now: SystemTime) -> Result<WitSvid, WitError> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| WitError::KeyGen)?;
    let point = pair.public_key().as_ref();
    let (x, y) = match point {
        [0x04, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => return Err(WitError::KeyGen),
    };
    let d = pair.private_key().as_be_bytes().map_err(|_| WitError::KeyGen)?;
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    let private_jwk = Zeroizing::new(
        json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y, "d": URL_SAFE_NO_PAD.encode(d.as_ref()), "alg": "ES256" })
            .to_string(),
    );
    let expires_at = now.checked_add(ttl).unwrap_or(key.not_after).min(key.not_after);
    let claims = json!({
        "sub": id.to_string(),
        "exp": crate::clock::unix_secs(expires_at),
        "iat": crate::clock::unix_secs(now),
        "jti": crate::ca::serial::random_kid(),
        "cnf": { "jwk": { "kty": "EC", "crv": "P-256", "x": x, "y": y, "alg": "ES256" } },
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("wit+jwt".into());
    let token = key.sign(&header, &claims)?;
    Ok(WitSvid { spiffe_id: id.clone(), token, private_jwk, expires_at, kid: key.kid.clone() })
}

/// A WIT bundle JWK: `use: wit-svid` (WIT-SVID.md §6).
pub(crate) fn bundle_jwk(key: &JwtKey) -> crate::bundle::jwks::Jwk {
    crate::bundle::jwks::Jwk { use_: Some("wit-svid".into()), ..crate::bundle::jwks::jwk(key) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_proof_of_possession_key() {
        let now = crate::clock::from_unix_secs(1_700_000_000);
        let key = JwtKey::for_test("wk", now - Duration::from_secs(60), now + Duration::from_secs(3600));
        let id: SpiffeId = "spiffe://example.org/agent".parse().unwrap();
        let w = mint(&id, Duration::from_secs(600), &key, now).unwrap();
        let header = jsonwebtoken::decode_header(&w.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("wit+jwt"));
        assert_eq!(header.kid.as_deref(), Some("wk"));
        let claims = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(&w.token).unwrap();
        assert_eq!(claims["sub"], "spiffe://example.org/agent");
        assert!(claims.get("aud").is_none() && claims.get("iss").is_none());
        assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600);
        // The private JWK is the pair of cnf.jwk; a second WIT has a fresh key.
        let private: serde_json::Value = serde_json::from_str(w.private_jwk()).unwrap();
        assert_eq!(private["x"], claims["cnf"]["jwk"]["x"]);
        assert_eq!(private["alg"], "ES256");
        assert!(claims["cnf"]["jwk"].get("d").is_none());
        let w2 = mint(&id, Duration::from_secs(600), &key, now).unwrap();
        let private2: serde_json::Value = serde_json::from_str(w2.private_jwk()).unwrap();
        assert_ne!(private["x"], private2["x"]);
        // A signature made with the returned key verifies against cnf.jwk.
        let enc = jsonwebtoken::EncodingKey::from_ec_der(&jwk_to_pkcs8(&private));
        let proof =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &json!({"a": 1}), &enc)
                .unwrap();
        let dec = jsonwebtoken::DecodingKey::from_ec_components(
            claims["cnf"]["jwk"]["x"].as_str().unwrap(),
            claims["cnf"]["jwk"]["y"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        assert!(jsonwebtoken::decode::<serde_json::Value>(&proof, &dec, &v).is_ok());
        // Never past the signing key's end.
        let late = mint(&id, Duration::from_secs(86400), &key, now).unwrap();
        assert_eq!(late.expires_at, key.not_after);
    }

    /// The JWK's key pair as PKCS#8 DER (jsonwebtoken reads no private JWKs), via aws-lc-rs.
    fn jwk_to_pkcs8(jwk: &serde_json::Value) -> Vec<u8> {
        let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
        let mut point = vec![0x04];
        point.extend(b("x"));
        point.extend(b("y"));
        let pair =
            EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &b("d"), &point).unwrap();
        pair.to_pkcs8v1().unwrap().as_ref().to_vec()
    }
}
