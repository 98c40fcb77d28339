//! Federated trust bundles read from files: a SPIFFE bundle (JWK Set with `x509-svid` and
//! `jwt-svid` keys) or plain PEM certificates (X.509 only).

use super::{FederatedBundle, JwtBundle, X509Bundle};
use base64::Engine;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BundleError {
    #[error("cannot read bundle {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("bundle {path} is neither a SPIFFE bundle (JSON) nor PEM certificates: {reason}")]
    Format { path: String, reason: String },
    #[error("bundle {path} holds no usable key or certificate")]
    Empty { path: String },
}

pub(crate) fn load(path: &Path) -> Result<FederatedBundle, BundleError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| BundleError::Read { path: p.clone(), source })?;
    let bundle = if bytes.trim_ascii_start().starts_with(b"{") {
        parse_spiffe_bundle(&bytes).map_err(|reason| BundleError::Format { path: p.clone(), reason })?
    } else {
        parse_pem(&bytes).map_err(|reason| BundleError::Format { path: p.clone(), reason })?
    };
    if bundle.x509.is_empty() && bundle.jwt.is_empty() {
        return Err(BundleError::Empty { path: p });
    }
    Ok(bundle)
}

fn parse_pem(bytes: &[u8]) -> Result<FederatedBundle, String> {
    let blocks = pem::parse_many(bytes).map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    for b in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        x509_parser::parse_x509_certificate(b.contents()).map_err(|e| format!("bad certificate: {e}"))?;
        certs.push(b.contents().to_vec());
    }
    Ok(FederatedBundle { x509: X509Bundle::new(certs), jwt: JwtBundle::default(), delegation: JwtBundle::default() })
}

fn parse_spiffe_bundle(bytes: &[u8]) -> Result<FederatedBundle, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
    let mut certs = Vec::new();
    let mut jwt_keys = Vec::new();
    let mut delegation_keys = Vec::new();
    for k in keys {
        // Keys with a missing or unknown `use` are ignored, as the bundle format requires.
        match k.get("use").and_then(Value::as_str) {
            Some("x509-svid") => {
                let Some(first) =
                    k.get("x5c").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str)
                else {
                    continue;
                };
                let cert = base64::engine::general_purpose::STANDARD.decode(first).map_err(|e| format!("x5c: {e}"))?;
                x509_parser::parse_x509_certificate(&cert).map_err(|e| format!("x5c certificate: {e}"))?;
                certs.push(cert);
            }
            Some("jwt-svid") if k.get("kid").and_then(Value::as_str).is_some() => {
                jwt_keys.extend(super::jwks::Jwk::parse(k));
            }
            Some(super::jwks::BUNDLE_KEY_USE) => {
                delegation_keys.extend(super::jwks::Jwk::parse(k).as_ref().and_then(super::jwks::signing_jwk));
            }
            _ => {}
        }
    }
    Ok(FederatedBundle {
        x509: X509Bundle::new(certs),
        jwt: JwtBundle::new(jwt_keys),
        delegation: JwtBundle::new(delegation_keys),
    })
}

/// A document from a partner's bundle endpoint: the bundle, its `spiffe_refresh_hint` and
/// `spiffe_sequence`. Stricter than a file: every X.509 authority must be a CA certificate, and
/// the document must hold at least one key.
pub(crate) fn parse_endpoint_document(
    bytes: &[u8],
) -> Result<(FederatedBundle, Option<std::time::Duration>, Option<u64>), String> {
    let bundle = parse_spiffe_bundle(bytes)?;
    if bundle.x509.is_empty() && bundle.jwt.is_empty() {
        return Err("holds no usable key or certificate".into());
    }
    for der in bundle.x509.certs() {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("x5c certificate: {e}"))?;
        let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(format!("x509-svid authority {:?} is not a CA certificate", cert.subject().to_string()));
        }
    }
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let hint = doc.get("spiffe_refresh_hint").and_then(Value::as_u64).map(std::time::Duration::from_secs);
    let sequence = doc.get("spiffe_sequence").and_then(Value::as_u64);
    Ok((bundle, hint, sequence))
}

/// Our own trust domain's bundle in the SPIFFE bundle format, for partners to federate with us.
pub(crate) fn spiffe_bundle_json(auth: &crate::ca::Authorities, sequence: u64) -> Value {
    let mut keys: Vec<super::jwks::Jwk> = auth
        .bundle_certs()
        .iter()
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let spki = cert.public_key();
            let point = spki.subject_public_key.data.as_ref();
            if point.len() != 65 {
                return None;
            }
            let mut k = super::jwks::Jwk::p256(&point[1..33], &point[33..], None, "x509-svid");
            k.x5c = Some(vec![base64::engine::general_purpose::STANDARD.encode(der)]);
            Some(k)
        })
        .collect();
    keys.extend(auth.jwt.iter().map(|k| super::jwks::jwk(k)));
    // Only the two uses every SPIFFE implementation knows: spire-server 1.13.3 refuses a whole
    // federated bundle with any other `use` ("unrecognized use"), so neither WIT keys nor our
    // delegation keys (`tessera-delegation`, still accepted when a partner's bundle holds them)
    // are published here; partners verify delegated tokens through the OIDC JWKS.
    json!({ "keys": keys, "spiffe_sequence": sequence, "spiffe_refresh_hint": 300 })
}
