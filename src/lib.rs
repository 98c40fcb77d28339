//! tessera: a node-local SPIFFE Workload API daemon.
//!
//! The data flows one way, and the modules follow it:
//! a peer connects ([`endpoint`]) → the [`caller`] pipeline attests it (`tessera-attestors`) into
//! selectors and matches [`registry`] entries → an [`issuer`] signs SVIDs ([`svid`], keys in the
//! [`ca`]) and hands out [`bundle`]s → the [`endpoint`] answers or streams. Every fact on the way
//! is an [`events`] event (the audit log subscribes). [`daemon`] wires it together; see
//! `docs/architecture.md`.
#![forbid(unsafe_code)]

// The flow (order: endpoint → caller → registry → issuer → ca/svid/bundle).
pub(crate) mod bundle;
pub(crate) mod ca;
pub(crate) mod caller;
pub(crate) mod endpoint;
pub(crate) mod issuer;
pub(crate) mod peer;
pub(crate) mod publish;
pub(crate) mod registry;
pub(crate) mod svid;
// Beside the flow.
pub(crate) mod admin;
pub mod cli;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod delegation;
pub(crate) mod discovery;
pub(crate) mod events;
pub(crate) mod federation;
pub(crate) mod gateway;
pub(crate) mod guard;
pub(crate) mod inventory;
pub(crate) mod net;
// Values and helpers.
pub(crate) mod clock;
pub(crate) mod duration;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod limits;
pub(crate) mod secret;
pub(crate) mod spiffe_id;
pub(crate) mod spire;
pub(crate) mod storage;
pub(crate) mod telemetry;
pub(crate) mod watch;

/// Generated Workload API types (the proto has no package, hence `_`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("_");

    pub mod codec;

    /// The encoded file descriptor set of `proto/workload.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/workload_descriptor.bin"));
}

/// What the integration tests, benches and fuzz targets reach inside the crate (not an API).
#[doc(hidden)]
pub mod testing {
    pub use crate::bundle::JwtBundle;
    pub use crate::bundle::verifier::uri_sans;
    pub use crate::ca::{Ca, KeyKind};
    pub use crate::cli::api::split_certs;
    pub use crate::clock::now;
    pub use crate::registry::Entry;
    pub use crate::registry::authz::bench::PolicyBench;
    pub use crate::spiffe_id::{SpiffeId, TrustDomain};
    pub use crate::spire::pb as spire_pb;
    pub use crate::spire::status::denied;
    pub use crate::svid::{jwt, x509};
}

/// Pin the one crypto backend (aws-lc-rs) for rustls; rcgen and jsonwebtoken use it directly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
