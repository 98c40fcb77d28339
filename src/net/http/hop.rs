//! Hop-by-hop headers (RFC 9110 §7.6.1): they belong to one connection and are never forwarded
//! by the gateway or a guard, nor taken as a credential's header.

use http::header;

/// Headers that belong to one connection, whatever `Connection` names.
pub(crate) fn is_hop_by_hop(h: &http::HeaderName) -> bool {
    use http::header::*;
    h == CONNECTION
        || h == TRANSFER_ENCODING
        || h == TE
        || h == TRAILER
        || h == UPGRADE
        || h == PROXY_AUTHORIZATION
        || h == PROXY_AUTHENTICATE
        || h.as_str() == "keep-alive"
        || h.as_str() == "proxy-connection"
}

/// Remove hop-by-hop headers: those `Connection` names, then the fixed set.
pub(crate) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<http::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| http::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    let fixed: Vec<http::HeaderName> = headers.keys().filter(|h| is_hop_by_hop(h)).cloned().collect();
    for n in fixed {
        headers.remove(n);
    }
}
