//! Secrets the daemon holds: private key material (SVID keys, CA keys on their way to a signer)
//! and bearer tokens (a user's subject token, a token it mints). Wiped on drop, never printed by
//! `Debug`, never copied by accident (no `Clone`).

use zeroize::Zeroizing;

/// PKCS#8 DER (or PEM text, for stored CA keys) of one private key.
pub struct PrivateKey(Zeroizing<Vec<u8>>);

impl PrivateKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes, for the one place they must leave: a Workload API response or a signer.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// Stored keys are PEM text (`ca.json`): serialized as a string; the `String` read back is moved
/// in, not copied, and wiped on drop like any other key.
impl serde::Serialize for PrivateKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = std::str::from_utf8(&self.0).map_err(|_| serde::ser::Error::custom("key is not PEM text"))?;
        serializer.serialize_str(text)
    }
}

impl<'de> serde::Deserialize<'de> for PrivateKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Self::new(text.into_bytes()))
    }
}

impl PrivateKey {
    /// The key as PEM text, if it is one.
    pub fn expose_pem(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({} bytes, redacted)", self.0.len())
    }
}

/// A bearer token (a JWS in compact form): whoever holds it acts as its subject, so it is never
/// printed (`Debug` shows its length) and is wiped on drop.
pub(crate) struct BearerToken(Zeroizing<String>);

impl BearerToken {
    pub(crate) fn new(token: String) -> Self {
        Self(Zeroizing::new(token))
    }

    /// The token, for the places it must be read: verification, a fingerprint, a response.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerToken({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_never_printed() {
        let t = BearerToken::new("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln".into());
        let shown = format!("{t:?} {t:#?}");
        assert_eq!(format!("{t:?}"), "BearerToken(46 bytes, redacted)");
        assert!(!shown.contains("eyJ") && !shown.contains("c2ln"), "{shown}");
        assert_eq!(t.expose().len(), 46);
    }

    #[test]
    fn debug_shows_length_not_bytes() {
        let key = PrivateKey::new(vec![0xde, 0xad, 0xbe, 0xef]);
        let shown = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), "PrivateKey(4 bytes, redacted)");
        for needle in ["de", "ad", "be", "ef", "222", "173", "190", "239"] {
            assert!(!shown.contains(needle), "{shown:?} leaks {needle}");
        }
        assert_eq!(key.expose(), &[0xde, 0xad, 0xbe, 0xef]);
    }
}
