//! Liveness and readiness. Live: the process answers. Ready: the CA has keys that sign now and the
//! Workload API socket is serving (from `Event::Started` until shutdown begins). In SPIRE mode the
//! body also says how old the last good sync with the server is (information, not a readiness
//! condition: the node keeps serving what it holds while the server is away).

use crate::ca::Ca;
use crate::events::{Event, Subscriber};
use crate::spire::last_sync::LastSync;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;
use tokio::sync::watch;

pub struct Health {
    ca: Option<Arc<Ca>>,
    spire: Option<Arc<LastSync>>,
    serving: AtomicBool,
    shutdown: watch::Receiver<bool>,
}

/// What readiness was decided from (the `/ready` body).
#[derive(Debug, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// The CA has an X.509 authority and a JWT key that sign now.
    pub ca_loaded: bool,
    /// The Workload API socket serves (and shutdown has not begun).
    pub serving: bool,
    /// SPIRE mode only (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spire: Option<SpireSync>,
}

/// The SPIRE Server sync, as of this request.
#[derive(Debug, serde::Serialize)]
pub struct SpireSync {
    /// Whole seconds since the last good sync ended (this run or, persisted, an earlier one);
    /// `null` when there never was one.
    pub seconds_since_last_sync: Option<u64>,
}

impl Health {
    pub fn new(ca: Option<Arc<Ca>>, spire: Option<Arc<LastSync>>, shutdown: watch::Receiver<bool>) -> Self {
        Self { ca, spire, serving: AtomicBool::new(false), shutdown }
    }

    pub fn readiness(&self) -> Readiness {
        let now = SystemTime::now();
        // SPIRE mode has no local CA: the server signs, and serving is what counts.
        let ca_loaded = self.ca.as_ref().is_none_or(|ca| {
            let auth = ca.authorities();
            auth.x509_signer(now).is_some_and(|a| a.not_after > now)
                && auth.jwt_signer(now).is_some_and(|k| k.not_after > now)
        });
        let serving = self.serving.load(Ordering::Acquire) && !*self.shutdown.borrow();
        let spire = self.spire.as_ref().map(|s| SpireSync {
            // Truncated to whole seconds, as the logs give it.
            seconds_since_last_sync: s.seconds_since(now).map(|secs| secs as u64),
        });
        Readiness { ready: ca_loaded && serving, ca_loaded, serving, spire }
    }
}

impl Subscriber for Health {
    fn on_event(&self, event: &Event) {
        if let Event::Started { .. } = event {
            self.serving.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ready_only_between_started_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let ca =
            Ca::open(dir.path(), &"t.example".parse().unwrap(), Duration::from_secs(3600), None, SystemTime::now())
                .unwrap();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let health = Health::new(Some(Arc::new(ca)), None, shutdown_rx);
        let r = health.readiness();
        assert!(r.ca_loaded && !r.serving && !r.ready, "{r:?}");
        assert!(!serde_json::to_string(&r).unwrap().contains("spire"), "standalone: no SPIRE field");
        health.on_event(&Event::Started { trust_domain: "t.example".into(), socket: "/s".into() });
        assert!(health.readiness().ready);
        shutdown_tx.send(true).unwrap();
        let r = health.readiness();
        assert!(r.ca_loaded && !r.serving && !r.ready, "{r:?}");
    }

    #[test]
    fn spire_mode_reports_the_sync_age() {
        let (_tx, shutdown_rx) = watch::channel(false);
        let last = Arc::new(LastSync::new(SystemTime::now()));
        let health = Health::new(None, Some(last.clone()), shutdown_rx);
        let json = |h: &Health| serde_json::to_value(h.readiness()).unwrap();
        assert_eq!(json(&health)["spire"]["seconds_since_last_sync"], serde_json::Value::Null, "never synced");
        last.set(SystemTime::now() - Duration::from_secs(42));
        assert_eq!(json(&health)["spire"]["seconds_since_last_sync"], 42);
    }
}
