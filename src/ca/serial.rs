//! Random certificate serials and key IDs, shared by the CA and SVID minting (kept here so that
//! `svid` depends on `ca`, never the other way round).

use rand::Rng;
use rcgen::SerialNumber;

/// A positive, non-zero 128-bit serial (RFC 5280 allows up to 20 octets; MSB cleared keeps it positive).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // non-zero and a fixed length
    SerialNumber::from_slice(&bytes)
}

/// A random 128-bit key ID, hex.
pub(crate) fn random_kid() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex(&bytes)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
