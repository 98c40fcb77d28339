//! How `tessera proxy accept` tells the local agent who the verified peer is
//! (`--peer-id-header`).
//!
//! - `none` (default): the stream is passed through untouched.
//! - `line`: before the first byte of the peer's stream, the agent reads one line
//!   `X-Spiffe-Id: spiffe://td/path\r\n`.
//! - `proxy-v2`: the stream starts with a PROXY protocol v2 header (HAProxy's
//!   `proxy-protocol.txt` §2.2), command PROXY, family TCP over IPv4 or IPv6, carrying the
//!   remote peer's address as source and the proxy's listening address as destination, and
//!   two TLVs:
//!   - `PP2_TYPE_SSL` (0x20): `client` = `PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN` (0x03),
//!     `verify` = 0 (the client certificate was verified), with a `PP2_SUBTYPE_SSL_VERSION`
//!     (0x21) sub-TLV naming the TLS version;
//!   - [`PP2_TYPE_SPIFFE_ID`] (0xE0, in the range the spec reserves for applications): the
//!     peer's verified SPIFFE ID, as UTF-8 URI bytes.
//!
//! The standard `PP2_SUBTYPE_SSL_CN` is deliberately not used: an X509-SVID's identity is its
//! URI SAN, not its subject CN, and a parser that trusts the CN field would be misled.

use spiffe::SpiffeId;
use std::net::{IpAddr, SocketAddr};

/// The PROXY v2 signature.
pub const PP2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// `PP2_TYPE_SSL`.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// `PP2_SUBTYPE_SSL_VERSION`.
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// tessera's custom TLV: the verified peer SPIFFE ID (UTF-8 URI).
pub const PP2_TYPE_SPIFFE_ID: u8 = 0xE0;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;

/// How the accept proxy tells the local agent who the peer is (`--peer-id-header`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerIdHeader {
    /// Pass the stream through untouched.
    #[default]
    None,
    /// Write `X-Spiffe-Id: <id>\r\n` before the stream.
    Line,
    /// Write a PROXY protocol v2 header with the ID in TLV 0xE0.
    ProxyV2,
}

/// Who connected, as known after a verified handshake.
#[derive(Debug, Clone)]
pub struct Peer<'a> {
    pub id: &'a SpiffeId,
    /// The remote end of the TLS connection.
    pub src: SocketAddr,
    /// The proxy's end of the TLS connection.
    pub dst: SocketAddr,
    /// e.g. "TLSv1.3".
    pub tls_version: &'a str,
}

/// The bytes to write to the local agent before the stream (empty for `none`).
pub fn encode(mode: PeerIdHeader, peer: &Peer<'_>) -> Vec<u8> {
    match mode {
        PeerIdHeader::None => Vec::new(),
        PeerIdHeader::Line => format!("X-Spiffe-Id: {}\r\n", peer.id).into_bytes(),
        PeerIdHeader::ProxyV2 => proxy_v2(peer),
    }
}

fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    // Values here are a SPIFFE ID (≤ 2048 bytes by spec) or small constants: they fit a u16.
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&value[..usize::from(len)]);
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

fn proxy_v2(peer: &Peer<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(96);
    let family = match (peer.src.ip(), peer.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11 // AF_INET, STREAM
        }
        (s, d) => {
            body.extend_from_slice(&v6(s));
            body.extend_from_slice(&v6(d));
            0x21 // AF_INET6, STREAM
        }
    };
    body.extend_from_slice(&peer.src.port().to_be_bytes());
    body.extend_from_slice(&peer.dst.port().to_be_bytes());

    let mut ssl = vec![PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN];
    ssl.extend_from_slice(&0u32.to_be_bytes()); // verify: 0 = client certificate verified
    tlv(&mut ssl, PP2_SUBTYPE_SSL_VERSION, peer.tls_version.as_bytes());
    tlv(&mut body, PP2_TYPE_SSL, &ssl);
    tlv(&mut body, PP2_TYPE_SPIFFE_ID, peer.id.to_string().as_bytes());

    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&PP2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_at(id: &SpiffeId, src: &str, dst: &str) -> Vec<u8> {
        encode(
            PeerIdHeader::ProxyV2,
            &Peer { id, src: src.parse().unwrap(), dst: dst.parse().unwrap(), tls_version: "TLSv1.3" },
        )
    }

    /// A tiny independent parser: find a TLV by type in the TLV area.
    fn find_tlv(mut tlvs: &[u8], kind: u8) -> Option<&[u8]> {
        while tlvs.len() >= 3 {
            let len = u16::from_be_bytes([tlvs[1], tlvs[2]]) as usize;
            let (value, rest) = tlvs[3..].split_at(len);
            if tlvs[0] == kind {
                return Some(value);
            }
            tlvs = rest;
        }
        None
    }

    #[test]
    fn proxy_v2_ipv4_layout() {
        let id = SpiffeId::new("spiffe://td/agents/a").unwrap();
        let h = peer_at(&id, "127.0.0.1:40000", "127.0.0.2:8443");
        assert_eq!(&h[..12], &PP2_SIGNATURE);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        let len = u16::from_be_bytes([h[14], h[15]]) as usize;
        assert_eq!(h.len(), 16 + len);
        assert_eq!(&h[16..20], &[127, 0, 0, 1]);
        assert_eq!(&h[20..24], &[127, 0, 0, 2]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 40000);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 8443);
        let tlvs = &h[28..];
        assert_eq!(find_tlv(tlvs, PP2_TYPE_SPIFFE_ID).unwrap(), b"spiffe://td/agents/a");
        let ssl = find_tlv(tlvs, PP2_TYPE_SSL).unwrap();
        assert_eq!(ssl[0], 0x03);
        assert_eq!(&ssl[1..5], &[0, 0, 0, 0]);
        assert_eq!(find_tlv(&ssl[5..], PP2_SUBTYPE_SSL_VERSION).unwrap(), b"TLSv1.3");
    }

    #[test]
    fn proxy_v2_ipv6_and_mixed() {
        let id = SpiffeId::new("spiffe://td/x").unwrap();
        let h = peer_at(&id, "[::1]:1", "127.0.0.1:2");
        assert_eq!(h[13], 0x21);
        assert_eq!(&h[16..32], &std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&h[32..48], &std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
    }

    #[test]
    fn line_and_none() {
        let id = SpiffeId::new("spiffe://td/x").unwrap();
        let p = Peer {
            id: &id,
            src: "127.0.0.1:1".parse().unwrap(),
            dst: "127.0.0.1:2".parse().unwrap(),
            tls_version: "TLSv1.3",
        };
        assert_eq!(encode(PeerIdHeader::Line, &p), b"X-Spiffe-Id: spiffe://td/x\r\n");
        assert!(encode(PeerIdHeader::None, &p).is_empty());
    }
}
