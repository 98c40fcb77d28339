//! Where "now" comes from: the one place that reads the system clock.
//!
//! The rule:
//! - Every decision that depends on the time (expiry, not-before, TTLs, windows, rotation and
//!   renewal, "is this token still valid") reads it from an injected [`Clock`]: the daemon makes
//!   one [`SystemClock`] and hands it down as `Arc<dyn Clock>` (the caller pipeline carries it
//!   for everything that serves a caller: issuance, validation, streams, token exchange,
//!   sessions), so a test can run the same code in fake time ([`FakeClock`]). Where it can,
//!   the decision itself is a pure function of a `now` passed in.
//! - A read that decides nothing (a timestamp written to a log or an audit line, a record's
//!   "at") may call the free function [`now`] instead of threading a clock through an API for
//!   it.
//! - Nothing else calls `SystemTime::now()`.
//!
//! [`Clock::monotonic`] is for windows measured on this host only (a session's reuse, an
//! approval's life, a poll gap): a step of the wall clock must neither stretch nor cut them.
//! Pure measurements (how long an attestation took, rate-limit buckets) keep reading
//! `Instant::now()` directly.

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub(crate) trait Clock: Send + Sync {
    /// The wall clock: what certificates and tokens carry.
    fn now(&self) -> SystemTime;
    /// A monotonic instant, for windows measured on this host only.
    fn monotonic(&self) -> Instant;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// The system clock's "now", for reads that decide nothing (see the module docs): decisions
/// take a [`Clock`].
pub fn now() -> SystemTime {
    SystemClock.now()
}

#[cfg(test)]
/// A clock that moves only when told to, for tests; share it as `Arc<FakeClock>` (it coerces to
/// `Arc<dyn Clock>`) and keep a handle to move it. [`Self::advance`] moves the wall clock and
/// the monotonic clock together; [`Self::set`] steps the wall clock alone (as an NTP step
/// would). Wall times are held as nanoseconds since the epoch (up to the year 2554).
#[derive(Debug)]
pub(crate) struct FakeClock {
    /// Nanoseconds since the epoch.
    wall: AtomicU64,
    /// The monotonic clock's origin, and nanoseconds it advanced since.
    origin: Instant,
    elapsed: AtomicU64,
}

#[cfg(test)]
impl FakeClock {
    /// A clock standing at `t`.
    pub(crate) fn at(t: SystemTime) -> Self {
        Self { wall: AtomicU64::new(nanos(t)), origin: Instant::now(), elapsed: AtomicU64::new(0) }
    }

    /// A clock standing at `secs` seconds after the epoch.
    pub(crate) fn at_unix(secs: u64) -> Self {
        Self::at(from_unix_secs(secs))
    }

    /// Move both clocks forward by `d`.
    pub(crate) fn advance(&self, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let add = |v: u64| Some(v.saturating_add(d));
        let _ = self.wall.fetch_update(Ordering::SeqCst, Ordering::SeqCst, add);
        let _ = self.elapsed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, add);
    }

    /// Step the wall clock to `t` (either way); the monotonic clock does not move.
    pub(crate) fn set(&self, t: SystemTime) {
        self.wall.store(nanos(t), Ordering::SeqCst);
    }
}

#[cfg(test)]
/// Nanoseconds since the epoch, saturating (0 before it).
fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.wall.load(Ordering::SeqCst))
    }

    fn monotonic(&self) -> Instant {
        self.origin + Duration::from_nanos(self.elapsed.load(Ordering::SeqCst))
    }
}

/// Whole seconds since the epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The instant `s` seconds after the epoch; saturates at the far future instead of overflowing
/// (times come from files and certificates, which a peer or a corrupt disk may make absurd).
pub(crate) fn from_unix_secs(s: u64) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_secs(s)).unwrap_or(UNIX_EPOCH + Duration::from_secs(u64::MAX / 4))
}

/// `t + d`, saturating at the far future (durations are bounded by `check`; this keeps any
/// that slip through from panicking a handler).
pub(crate) fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or_else(|| from_unix_secs(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_told() {
        let c = FakeClock::at_unix(1_700_000_000);
        let (t0, m0) = (c.now(), c.monotonic());
        assert_eq!(unix_secs(t0), 1_700_000_000);
        assert_eq!((c.now(), c.monotonic()), (t0, m0));
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now().duration_since(t0).unwrap(), Duration::from_millis(1500));
        assert_eq!(c.monotonic() - m0, Duration::from_millis(1500));
        // A wall-clock step back leaves the monotonic clock where it was.
        c.set(from_unix_secs(1_600_000_000));
        assert_eq!(unix_secs(c.now()), 1_600_000_000);
        assert_eq!(c.monotonic() - m0, Duration::from_millis(1500));
        // Shared as the daemon shares its clock.
        let shared: std::sync::Arc<dyn Clock> = std::sync::Arc::new(FakeClock::at(t0));
        assert_eq!(shared.now(), t0);
    }
}
