//! The SPIFFE Workload Endpoint: the Unix socket and every service on it.
//!
//! [`listener`] binds the socket; [`accept`] admits connections under the per-uid limits of
//! [`crate::limits`]; [`peer`] captures who connected (and applies the HTTP/2 `:authority` fix of
//! [`h2_authority`], whose HPACK input `hpack_check` validates first); [`workload_api`] is the
//! SpiffeWorkloadAPI service, whose streams [`stream`] drives and [`streaming`] serves; [`status`] is the one place errors
//! become gRPC codes.
pub mod accept;
pub mod context;
pub mod convert;
pub mod h2_authority;
mod hpack_check;
pub mod listener;
pub mod peer;
pub mod status;
pub mod stream;
pub mod streaming;
pub mod workload_api;
