//! SPIRE mode: tessera as the node agent of an unmodified SPIRE Server. The server holds the
//! entries and signs every SVID; tessera attests the node, syncs entries and bundles, prefetches
//! SVIDs and serves them on the Workload API with its own attestors producing the selectors.

pub mod agent;
pub mod convert;
pub mod error;
pub mod issuer;
pub mod keys;
pub mod last_sync;
pub mod node_attestation;
pub mod pb;
pub mod persist;
pub mod state;
pub mod status;
pub mod svids;
pub mod sync;
pub mod tls;
pub mod x509pop;
