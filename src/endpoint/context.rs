//! What the Workload API's services and its stream engine share.

use crate::caller::Pipeline;
use crate::issuer::Issuer;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the services on the socket share. The time comes from `pipeline.clock`.
pub(crate) struct Context {
    pub pipeline: Arc<Pipeline>,
    pub issuer: Arc<dyn Issuer>,
    /// Wakes streams when a file their attestation read changes.
    pub files: Arc<crate::watch::FileWatcher>,
    /// Streams are re-attested at least this often (drift detection).
    pub reattest_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
    /// What open streams wake on besides their files and timers (the stream engine's `wakeups`).
    pub stream_wake: watch::Receiver<u64>,
}
