//! x509pop node attestation: the node proves possession of a provisioned certificate's key. The
//! payload is `{"certificates": [DER…]}` (leaf first); the server's challenge is a 32-byte nonce,
//! and the answer signs sha256(challenge nonce ‖ own nonce): ECDSA over that digest, or RSA-PSS
//! with SHA-256 (signing `challenge ‖ own` with a SHA-256 scheme hashes to exactly that digest).

use super::error::SpireError;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::path::Path;

fn fail(m: impl std::fmt::Display) -> SpireError {
    SpireError::Attestation(format!("x509pop: {m}"))
}

fn pem_blocks(path: &Path) -> Result<Vec<pem::Pem>, SpireError> {
    let text = std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    pem::parse_many(text).map_err(|e| fail(format!("{}: {e}", path.display())))
}

/// The attestation payload: the certificate file's chain, then the intermediates file's.
pub(crate) fn payload(cert_path: &Path, intermediates: Option<&Path>) -> Result<Vec<u8>, SpireError> {
    let mut certs: Vec<Value> = Vec::new();
    for p in std::iter::once(cert_path).chain(intermediates) {
        for b in pem_blocks(p)?.into_iter().filter(|b| b.tag() == "CERTIFICATE") {
            certs.push(Value::String(STANDARD.encode(b.contents())));
        }
    }
    if certs.is_empty() {
        return Err(fail(format!("no CERTIFICATE in {}", cert_path.display())));
    }
    Ok(json!({ "certificates": certs }).to_string().into_bytes())
}

/// Go's big.Int.Bytes(): no leading zeros.
fn unpadded(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// The response to a server challenge, signed with the key in `key_path`.
pub(crate) fn respond(key_path: &Path, challenge: &[u8]) -> Result<Vec<u8>, SpireError> {
    let c: Value = serde_json::from_slice(challenge).map_err(|e| fail(format!("challenge is not JSON: {e}")))?;
    let rng = SystemRandom::new();
    let mut own = [0u8; 32];
    rng.fill(&mut own).map_err(|_| fail("no randomness"))?;
    let nonce_of = |kind: &str| -> Result<Vec<u8>, SpireError> {
        let n = c.get(kind).and_then(|v| v.get("nonce")).and_then(Value::as_str).ok_or_else(|| fail("no nonce"))?;
        let n = STANDARD.decode(n).map_err(|e| fail(format!("nonce: {e}")))?;
        if n.len() != 32 {
            return Err(fail("nonce is not 32 bytes"));
        }
        Ok(n)
    };
    let block = pem_blocks(key_path)?
        .into_iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| fail(format!("no private key in {}", key_path.display())))?;
    let der = zeroize::Zeroizing::new(block.contents().to_vec());
    if c.get("ecdsa_signature").is_some_and(|v| !v.is_null()) {
        let server = nonce_of("ecdsa_signature")?;
        let key = EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| fail("the key is not an ECDSA P-256 key"))?;
        let sig = key.sign(&rng, &[server.as_slice(), &own].concat()).map_err(|_| fail("signing failed"))?;
        let (r, s) = sig.as_ref().split_at(32);
        let resp = json!({"ecdsa_signature": {"nonce": STANDARD.encode(own), "r": STANDARD.encode(unpadded(r)),
                                              "s": STANDARD.encode(unpadded(s))}});
        Ok(resp.to_string().into_bytes())
    } else if c.get("rsa_signature").is_some_and(|v| !v.is_null()) {
        let server = nonce_of("rsa_signature")?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| RsaKeyPair::from_der(&der))
            .map_err(|_| fail("the key is not an RSA key"))?;
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(&signature::RSA_PSS_SHA256, &rng, &[server.as_slice(), &own].concat(), &mut sig)
            .map_err(|_| fail("signing failed"))?;
        let resp = json!({"rsa_signature": {"nonce": STANDARD.encode(own), "signature": STANDARD.encode(sig)}});
        Ok(resp.to_string().into_bytes())
    } else {
        Err(fail("unknown challenge type"))
    }
}
