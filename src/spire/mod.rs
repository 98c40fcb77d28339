//! SPIRE mode: tessera as the node agent of an unmodified SPIRE Server. The server holds the
//! entries and signs every SVID; tessera attests the node, syncs entries and bundles, prefetches
//! SVIDs and serves them on the Workload API with its own attestors producing the selectors.

pub(crate) mod agent;
pub(crate) mod convert;
pub(crate) mod error;
pub(crate) mod issuer;
pub(crate) mod keys;
pub(crate) mod last_sync;
pub(crate) mod node_attestation;
pub mod pb;
pub(crate) mod persist;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod svids;
pub(crate) mod sync;
pub(crate) mod tls;
pub(crate) mod x509pop;
