//! Per-uid and global limits on what local callers can hold: connections (refused past the
//! cap) and attestations in flight (queued fairly per uid). Any local user can connect, so every
//! bound is per uid as well as global, and the per-uid bound leaves headroom for other uids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts held per uid and in total; `try_acquire` refuses past either bound.
#[derive(Debug)]
pub struct UidCounter {
    max_total: usize,
    max_per_uid: usize,
    held: Mutex<(usize, HashMap<u32, usize>)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverLimit {
    #[error("the uid holds {0} connections already (per-uid limit)")]
    PerUid(usize),
    #[error("{0} connections are open (global limit)")]
    Total(usize),
}

/// One unit held against a [`UidCounter`]; released on drop.
#[derive(Debug)]
pub struct Held {
    counter: Arc<UidCounter>,
    uid: u32,
}

impl UidCounter {
    pub fn new(max_total: usize, max_per_uid: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_uid: max_per_uid.min(max_total), held: Mutex::new((0, HashMap::new())) })
    }

    pub fn try_acquire(self: &Arc<Self>, uid: u32) -> Result<Held, OverLimit> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_uid) = &mut *held;
        if *total >= self.max_total {
            return Err(OverLimit::Total(*total));
        }
        let mine = per_uid.entry(uid).or_insert(0);
        if *mine >= self.max_per_uid {
            return Err(OverLimit::PerUid(*mine));
        }
        *mine += 1;
        *total += 1;
        Ok(Held { counter: self.clone(), uid })
    }

    /// Units held in total and by `uid`.
    pub fn held(&self, uid: u32) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        (held.0, held.1.get(&uid).copied().unwrap_or(0))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.counter.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_uid) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_uid.remove(&self.uid);
            }
        }
    }
}

/// Attestation slots: a global bound, and a per-uid bound below it so that one uid's slow
/// callers (naming huge files as their script) queue behind each other, not in front of others.
#[derive(Debug)]
pub struct FairSlots {
    global: Arc<Semaphore>,
    per_uid: usize,
    queues: Mutex<HashMap<u32, Arc<Semaphore>>>,
}

/// A held attestation slot (per-uid and global).
#[derive(Debug)]
pub struct Slot {
    _uid: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl FairSlots {
    pub fn new(global: usize, per_uid: usize) -> Self {
        Self { global: Arc::new(Semaphore::new(global)), per_uid: per_uid.clamp(1, global), queues: Mutex::default() }
    }

    /// Waits for a slot of `uid`, then for a global one. Err once closed (shutdown).
    pub async fn acquire(&self, uid: u32) -> Result<Slot, tokio::sync::AcquireError> {
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

    pub fn close(&self) {
        self.global.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_cap_leaves_room_for_other_uids_and_releases_on_drop() {
        let c = UidCounter::new(5, 3);
        let a: Vec<_> = (0..3).map(|_| c.try_acquire(1000).unwrap()).collect();
        assert_eq!(c.try_acquire(1000).unwrap_err(), OverLimit::PerUid(3));
        let b: Vec<_> = (0..2).map(|_| c.try_acquire(0).unwrap()).collect();
        assert_eq!(c.try_acquire(7).unwrap_err(), OverLimit::Total(5));
        drop(a);
        assert_eq!(c.held(1000), (2, 0));
        assert!(c.try_acquire(1000).is_ok());
        drop(b);
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
