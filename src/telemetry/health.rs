//! Liveness and readiness. Live: the process answers. Ready: the CA has keys that sign now and the
//! Workload API socket is serving (from `Event::Started` until shutdown begins). In SPIRE mode the
//! body also says how old the last good sync with the server is (information, not a readiness
//! condition: the node keeps serving what it holds while the server is away).

use crate::clock::Clock;
use crate::events::{Event, Subscriber};
use crate::issuer::KeySource;
use crate::spire::last_sync::LastSync;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

pub(crate) struct Health {
    ca: Option<Arc<dyn KeySource>>,
    spire: Option<Arc<LastSync>>,
    serving: AtomicBool,
    shutdown: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
}

/// What readiness was decided from (the `/ready` body).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Readiness {
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
pub(crate) struct SpireSync {
    /// Whole seconds since the last good sync ended (this run or, persisted, an earlier one);
    /// `null` when there never was one.
    pub seconds_since_last_sync: Option<u64>,
}

impl Health {
    pub(crate) fn new(
        ca: Option<Arc<dyn KeySource>>,
        spire: Option<Arc<LastSync>>,
        shutdown: watch::Receiver<bool>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { ca, spire, serving: AtomicBool::new(false), shutdown, clock }
    }

    pub(crate) fn readiness(&self) -> Readiness {
        let now = self.clock.now();
        // SPIRE mode has no local CA: the server signs, and serving is what counts.
        let ca_loaded = self.ca.as_ref().is_none_or(|ca| {
            let auth = ca.authorities();
            auth.x509_signer(now).is_some_and(|a| a.not_after > now)
                && auth.signer(crate::ca::KeyKind::Jwt, now).is_some_and(|k| k.not_after > now)
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
    use crate::clock::FakeClock;
    use std::time::Duration;

    #[test]
    fn ready_only_between_started_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::at_unix(1_700_000_000));
        let ca = crate::ca::Ca::open(
            dir.path(),
            &"t.example".parse().unwrap(),
            Duration::from_secs(3600),
            None,
            clock.now(),
        )
        .unwrap();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let health = Health::new(Some(Arc::new(ca)), None, shutdown_rx, clock.clone());
        let r = health.readiness();
        assert!(r.ca_loaded && !r.serving && !r.ready, "{r:?}");
        assert!(!serde_json::to_string(&r).unwrap().contains("spire"), "standalone: no SPIRE field");
        health.on_event(&Event::Started { trust_domain: "t.example".parse().unwrap(), socket: "/s".into() });
        assert!(health.readiness().ready);
        // A CA that never rotated is no longer loaded once its keys expired.
        clock.advance(Duration::from_secs(3600));
        assert!(!health.readiness().ca_loaded && !health.readiness().ready);
        clock.set(crate::clock::from_unix_secs(1_700_000_000));
        assert!(health.readiness().ready);
        shutdown_tx.send(true).unwrap();
        let r = health.readiness();
        assert!(r.ca_loaded && !r.serving && !r.ready, "{r:?}");
    }

    #[test]
    fn spire_mode_reports_the_sync_age() {
        let (_tx, shutdown_rx) = watch::channel(false);
        let clock = Arc::new(FakeClock::at_unix(1_700_000_000));
        let last = Arc::new(LastSync::new(clock.now()));
        let health = Health::new(None, Some(last.clone()), shutdown_rx, clock.clone());
        let json = |h: &Health| serde_json::to_value(h.readiness()).unwrap();
        assert_eq!(json(&health)["spire"]["seconds_since_last_sync"], serde_json::Value::Null, "never synced");
        last.set(clock.now() - Duration::from_secs(42));
        assert_eq!(json(&health)["spire"]["seconds_since_last_sync"], 42);
        clock.advance(Duration::from_secs(8));
        assert_eq!(json(&health)["spire"]["seconds_since_last_sync"], 50);
    }
}
