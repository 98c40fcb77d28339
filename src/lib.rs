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
pub mod bundle;
pub mod ca;
pub mod caller;
pub mod endpoint;
pub mod issuer;
pub mod peer;
pub mod publish;
pub mod registry;
pub mod svid;
// Beside the flow.
pub mod admin;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delegation;
pub mod events;
pub mod federation;
pub mod inventory;
pub mod net;
// Values and helpers.
pub mod clock;
pub mod duration;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod secret;
pub mod spiffe_id;
pub mod spire;
pub mod storage;
pub mod telemetry;
pub mod watch;

/// Generated Workload API types (the proto has no package, hence `_`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("_");

    pub mod codec;

    /// The encoded file descriptor set of `proto/workload.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/workload_descriptor.bin"));
}

/// Pin the one crypto backend (aws-lc-rs) for rustls; rcgen and jsonwebtoken use it directly.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
