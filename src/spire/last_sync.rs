//! When the last good sync with the SPIRE Server ended. The sync loop writes it; telemetry reads
//! it and computes the age at scrape time, so the figure keeps growing while the server is away
//! (a value taken from the last sync event would freeze exactly when it matters).

use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug)]
pub(crate) struct LastSync {
    at: Mutex<Option<SystemTime>>,
    /// The daemon's start: the age reported before any good sync ever.
    started: SystemTime,
}

impl LastSync {
    pub(crate) fn new(started: SystemTime) -> Self {
        Self { at: Mutex::new(None), started }
    }

    pub(crate) fn set(&self, at: SystemTime) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// Forget it (the agent was banned or evicted: its last sync no longer vouches for anything).
    pub(crate) fn clear(&self) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The last good sync, `None` if there was none (in this run or persisted from an earlier one).
    pub(crate) fn get(&self) -> Option<SystemTime> {
        *self.at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds from the last good sync to `now`; `None` when there never was one.
    pub(crate) fn seconds_since(&self, now: SystemTime) -> Option<f64> {
        self.get().map(|t| now.duration_since(t).map_or(0.0, |d| d.as_secs_f64()))
    }

    /// For a gauge that must always have a value: before any good sync, the daemon's age (a
    /// node that never synced is at least that stale).
    pub(crate) fn seconds_since_or_start(&self, now: SystemTime) -> f64 {
        self.seconds_since(now).unwrap_or_else(|| now.duration_since(self.started).map_or(0.0, |d| d.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn age_is_computed_when_asked() {
        let t0 = crate::clock::now();
        let s = LastSync::new(t0);
        assert_eq!(s.seconds_since(t0), None);
        assert_eq!(s.seconds_since_or_start(t0 + Duration::from_secs(7)), 7.0);
        s.set(t0 + Duration::from_secs(2));
        assert_eq!(s.seconds_since(t0 + Duration::from_secs(12)), Some(10.0));
        assert_eq!(s.seconds_since(t0 + Duration::from_secs(20)), Some(18.0));
        // A clock that went back reads 0, not a negative age.
        assert_eq!(s.seconds_since(t0), Some(0.0));
        s.clear();
        assert_eq!(s.get(), None);
    }
}
