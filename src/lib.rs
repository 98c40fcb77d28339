//! tessera: a node-local SPIFFE Workload API daemon.
//!
//! The data flows one way, and the modules follow it:
//! peer ([`workload::peer`]) → attestation (`tessera-attestors`) → selectors → matching
//! [`entry`]s → SVIDs ([`svid`], signed by the [`ca`]) → the stream ([`workload::service`]).
#![forbid(unsafe_code)]

pub mod audit;
pub mod bundle;
pub mod ca;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod devmode;
pub mod duration;
pub mod entry;
pub mod federation;
pub mod spiffe_id;
pub mod storage;
pub mod svid;
pub mod watch;
pub mod workload;

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
