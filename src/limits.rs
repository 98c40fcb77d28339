//! Per-caller and global limits on what callers can hold: connections (refused past the cap) and
//! attestations in flight (queued fairly per uid). Any local user can connect, so every bound is
//! per caller as well as global, and the per-caller bound leaves headroom for other callers. A
//! caller is a uid on a Unix socket and a source address ([`Source`]) on TCP.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts held per key (a uid, a [`Source`]) and in total; `try_acquire` refuses past the
/// per-key bound, past the global one, and into the reserve.
#[derive(Debug)]
pub(crate) struct Counter<K> {
    max_total: usize,
    max_per_key: usize,
    /// Slots at the top of `max_total` that only a key holding none may take: when a few keys
    /// have filled the rest, a newcomer still gets in.
    reserve: usize,
    held: Mutex<(usize, HashMap<K, usize>)>,
}

/// Connections per uid (Unix sockets).
pub(crate) type UidCounter = Counter<u32>;
/// Connections per source address (TCP listeners).
pub(crate) type SourceCounter = Counter<Source>;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OverLimit {
    #[error("this caller holds {0} connections already (per-caller limit)")]
    PerKey(usize),
    #[error("{0} connections are open (global limit)")]
    Total(usize),
    #[error("{0} connections are open; the rest are kept for callers holding none")]
    Reserved(usize),
}

/// One unit held against a [`Counter`]; released on drop.
#[derive(Debug)]
pub(crate) struct Held<K: Hash + Eq + Copy = u32> {
    counter: Arc<Counter<K>>,
    key: K,
}

impl<K: Hash + Eq + Copy> Counter<K> {
    pub(crate) fn new(max_total: usize, max_per_key: usize) -> Arc<Self> {
        Self::with_reserve(max_total, max_per_key, 0)
    }

    /// `reserve`: once `max_total - reserve` units are held, only a key holding none gets one.
    pub(crate) fn with_reserve(max_total: usize, max_per_key: usize, reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_key: max_per_key.min(max_total),
            reserve: reserve.min(max_total.saturating_sub(1)),
            held: Mutex::new((0, HashMap::new())),
        })
    }

    pub(crate) fn try_acquire(self: &Arc<Self>, key: K) -> Result<Held<K>, OverLimit> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_key) = &mut *held;
        if *total >= self.max_total {
            return Err(OverLimit::Total(*total));
        }
        let mine = per_key.get(&key).copied().unwrap_or(0);
        if mine >= self.max_per_key {
            return Err(OverLimit::PerKey(mine));
        }
        if mine > 0 && *total >= self.max_total - self.reserve {
            return Err(OverLimit::Reserved(*total));
        }
        *per_key.entry(key).or_insert(0) += 1;
        *total += 1;
        Ok(Held { counter: self.clone(), key })
    }

    #[cfg(test)]
    /// Units held in total and by `key`.
    pub(crate) fn held(&self, key: K) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        (held.0, held.1.get(&key).copied().unwrap_or(0))
    }
}

impl<K: Hash + Eq + Copy> Drop for Held<K> {
    fn drop(&mut self) {
        let mut held = self.counter.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_key) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = per_key.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

/// Where a TCP connection comes from, as far as per-source limits go: the addresses one host can
/// use at will count as one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// 127.0.0.0/8 and ::1, in any form: every local user can bind any 127.x.y.z.
    Loopback,
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address: a host is usually handed a whole /64 and may use any
    /// address in it (privacy addresses do). Link-local peers all share fe80::/64, so they are
    /// one source together; few scrape over link-local.
    V6(u64),
}

impl Source {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) if v4.is_loopback() => Source::Loopback,
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) if v6.is_loopback() => Source::Loopback,
            // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::of(IpAddr::V4(v4)),
                None => Source::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// At most one log line per `every`, carrying how many events it stands for: a flood of
/// refusals or failing accepts costs neither a core nor the disk in logging.
#[derive(Debug)]
pub(crate) struct Throttled {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    pub(crate) fn new(every: Duration) -> Self {
        Self { every, last: None, suppressed: 0 }
    }

    /// `Some(n)`: log now, standing for `n` events; `None`: counted, stay quiet.
    pub(crate) fn tick(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed) + 1)
    }
}

/// Attestation slots: a global bound, and a per-uid bound below it so that one uid's slow
/// callers (naming huge files as their script) queue behind each other, not in front of others.
#[derive(Debug)]
pub(crate) struct FairSlots {
    global: Arc<Semaphore>,
    per_uid: usize,
    queues: Mutex<HashMap<u32, Arc<Semaphore>>>,
}

/// A held attestation slot (per-uid and global).
#[derive(Debug)]
pub(crate) struct Slot {
    _uid: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl FairSlots {
    pub(crate) fn new(global: usize, per_uid: usize) -> Self {
        Self { global: Arc::new(Semaphore::new(global)), per_uid: per_uid.clamp(1, global), queues: Mutex::default() }
    }

    /// Waits for a slot of `uid`, then for a global one. Err once closed (shutdown).
    pub(crate) async fn acquire(&self, uid: u32) -> Result<Slot, tokio::sync::AcquireError> {
        let queue = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            if queues.len() > 4096 {
                // Forget idle uids: nobody waits on or holds their semaphore.
                queues.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < self.per_uid);
            }
            queues.entry(uid).or_insert_with(|| Arc::new(Semaphore::new(self.per_uid))).clone()
        };
        let mine = queue.acquire_owned().await?;
        let global = self.global.clone().acquire_owned().await?;
        Ok(Slot { _uid: mine, _global: global })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_cap_leaves_room_for_other_uids_and_releases_on_drop() {
        let c = UidCounter::new(5, 3);
        let a: Vec<_> = (0..3).map(|_| c.try_acquire(1000).unwrap()).collect();
        assert_eq!(c.try_acquire(1000).unwrap_err(), OverLimit::PerKey(3));
        let b: Vec<_> = (0..2).map(|_| c.try_acquire(0).unwrap()).collect();
        assert_eq!(c.try_acquire(7).unwrap_err(), OverLimit::Total(5));
        drop(a);
        assert_eq!(c.held(1000), (2, 0));
        assert!(c.try_acquire(1000).is_ok());
        drop(b);
    }

    #[test]
    fn a_source_is_an_ipv4_address_all_of_loopback_or_an_ipv6_slash_64() {
        let of = |s: &str| Source::of(s.parse().unwrap());
        // All of 127/8 and ::1, in every spelling, is one source.
        for lo in ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "::ffff:127.0.0.1", "::ffff:127.9.9.9"] {
            assert_eq!(of(lo), Source::Loopback, "{lo}");
        }
        assert_eq!(of("192.0.2.7"), Source::V4(Ipv4Addr::new(192, 0, 2, 7)));
        assert_ne!(of("192.0.2.7"), of("192.0.2.8"));
        // An IPv4 peer of a dual-stack listener is its IPv4 address.
        assert_eq!(of("::ffff:192.0.2.7"), of("192.0.2.7"));
        // One /64 is one source; the next /64 is another.
        assert_eq!(of("2001:db8:1:2::1"), of("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_eq!(of("2001:db8:1:2::1"), Source::V6(0x2001_0db8_0001_0002));
        assert_ne!(of("2001:db8:1:2::1"), of("2001:db8:1:3::1"));
        assert_ne!(of("::2"), Source::Loopback);
    }

    #[test]
    fn per_source_cap_and_a_reserve_that_only_new_sources_may_take() {
        // 16 in all, 4 per source, the top 4 kept for sources holding none.
        let c = SourceCounter::with_reserve(16, 4, 4);
        let (a, b, lo) =
            (Source::V4(Ipv4Addr::new(192, 0, 2, 1)), Source::V4(Ipv4Addr::new(192, 0, 2, 2)), Source::Loopback);
        let mut held: Vec<_> = (0..4).map(|_| c.try_acquire(lo).unwrap()).collect();
        assert_eq!(c.try_acquire(lo).unwrap_err(), OverLimit::PerKey(4));
        held.extend((0..4).map(|_| c.try_acquire(a).unwrap()));
        held.extend((0..4).map(|_| c.try_acquire(b).unwrap()));
        assert_eq!(c.held(lo), (12, 4));
        // 12 = 16 - 4 held: a source that holds some gets no more, under its own cap or not...
        let c_src = Source::V4(Ipv4Addr::new(192, 0, 2, 3));
        let first = c.try_acquire(c_src).unwrap();
        assert_eq!(c.try_acquire(c_src).unwrap_err(), OverLimit::Reserved(13));
        // ...while each new source still gets one, until the global cap.
        let more: Vec<_> = (4..7).map(|i| c.try_acquire(Source::V4(Ipv4Addr::new(192, 0, 2, i))).unwrap()).collect();
        assert_eq!(c.try_acquire(Source::V6(1)).unwrap_err(), OverLimit::Total(16));
        // Releasing brings the shared part back.
        drop(more);
        drop(first);
        held.truncate(8);
        assert_eq!(c.held(b), (8, 0));
        assert!(c.try_acquire(b).is_ok());
    }

    #[test]
    fn throttled_logs_once_per_interval_with_the_count() {
        let mut t = Throttled::new(Duration::from_secs(3600));
        assert_eq!(t.tick(), Some(1));
        assert_eq!(t.tick(), None);
        assert_eq!(t.tick(), None);
        t.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(t.tick(), Some(3));
    }

    #[tokio::test]
    async fn one_uid_cannot_take_every_attestation_slot() {
        let slots = Arc::new(FairSlots::new(4, 2));
        let hog1 = slots.acquire(65534).await.unwrap();
        let _hog2 = slots.acquire(65534).await.unwrap();
        // The hog's third request waits on its own queue...
        let s = slots.clone();
        let waiting = tokio::spawn(async move { s.acquire(65534).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // ...while another uid still gets a slot at once.
        let other = tokio::time::timeout(std::time::Duration::from_secs(1), slots.acquire(1000)).await;
        assert!(other.is_ok());
        drop(hog1);
        assert!(tokio::time::timeout(std::time::Duration::from_secs(1), waiting).await.is_ok());
    }
}
