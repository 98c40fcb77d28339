//! The Workload API endpoint: the Unix socket, the connection wrapper that captures the peer,
//! and the gRPC service.
pub mod accept;
pub mod authority;
pub mod endpoint;
pub mod limits;
pub mod peer;
pub mod service;
