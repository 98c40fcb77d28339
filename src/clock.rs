//! Where "now" comes from. Decisions (rotation, renewal) are pure functions of a `now` passed
//! in; only the edges read the clock, through this seam, so tests can pick their instants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Whole seconds since the epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The instant `s` seconds after the epoch; saturates at the far future instead of overflowing
/// (times come from files and certificates, which a peer or a corrupt disk may make absurd).
pub fn from_unix_secs(s: u64) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_secs(s)).unwrap_or(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4))
}

/// `t + d`, saturating at the far future (durations are bounded by `check`; this keeps any
/// that slip through from panicking a handler).
pub fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or_else(|| from_unix_secs(u64::MAX))
}
