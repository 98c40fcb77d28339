//! Private key material: one type for every key the daemon holds (SVID keys, CA keys on their way
//! to a signer). Wiped on drop, never printed, never copied by accident (no `Clone`).

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

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
