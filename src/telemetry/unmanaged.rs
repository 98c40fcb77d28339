//! `tessera_unmanaged_agents`: agent-like processes without an identity found by the daemon's
//! last discovery scan (`[discovery] interval`); absent until a scan ran.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::{AtomicI64, Ordering};

/// The last count (-1: no scan yet). One per process: one daemon per node.
static LAST: AtomicI64 = AtomicI64::new(-1);

/// Record a scan's count.
pub(crate) fn set(n: usize) {
    LAST.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

#[derive(Debug)]
pub(super) struct AtScrape;

impl Collector for AtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let n = LAST.load(Ordering::Relaxed);
        if n < 0 {
            return Ok(());
        }
        #[allow(clippy::cast_precision_loss, reason = "a process count")]
        let g = ConstGauge::new(n as f64);
        let help = "Agent-like processes without a tessera identity at the last discovery scan";
        g.encode(encoder.encode_descriptor("tessera_unmanaged_agents", help, None, g.metric_type())?)
    }
}
