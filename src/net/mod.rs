//! The transport: Unix-socket listeners ([`listener`]: bind, take over a stale socket, refuse
//! beside a live one), the Workload API's accept loop under per-uid limits ([`accept`]), each
//! connection's peer captured at accept ([`peer`], with the HTTP/2 `:authority` fix of
//! [`h2_authority`] whose HPACK input `hpack_check` validates first), and the small HTTP/1.1
//! servers with their limits, route registration and one status table ([`http`]). Services sit
//! above it and never bind or accept themselves.

pub(crate) mod accept;
pub(crate) mod h2_authority;
mod hpack_check;
pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod peer;
pub(crate) mod tcp_peer;
