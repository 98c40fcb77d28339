//! The per-uid hashing budget: how many bytes of cache misses one uid may have hashed per window.

use super::{DigestCache, DigestError};
use std::time::{Duration, Instant};

/// How many bytes one uid may make the daemon hash (cache misses only) per window. Over it, the
/// file gets no digest selector (fail closed) until the window ends: one user naming huge files
/// cannot keep the hashing threads, and so every other workload's attestation, busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashBudget {
    /// Bytes per window.
    pub bytes: u64,
    /// Window length.
    pub window: Duration,
}

impl Default for HashBudget {
    /// 4 GiB per minute per uid: ~40 cold starts of a 100 MiB binary a minute, yet about 2 s of
    /// hashing per second at most for one uid.
    fn default() -> Self {
        Self { bytes: 4 << 30, window: Duration::from_secs(60) }
    }
}

/// Most uids whose budget use is remembered; past it, expired windows are forgotten first.
const BUDGET_UIDS: usize = 4096;

impl DigestCache {
    /// Reserves `size` bytes of `uid`'s budget in the current window, or refuses.
    pub(super) fn charge(&self, uid: u32, budget: HashBudget, size: u64) -> Result<(), DigestError> {
        let now = Instant::now();
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if budgets.len() >= BUDGET_UIDS && !budgets.contains_key(&uid) {
            budgets.retain(|_, (start, _)| now.duration_since(*start) < budget.window);
            if budgets.len() >= BUDGET_UIDS {
                // Every remembered uid is mid-window: refuse rather than forget one's use.
                return Err(DigestError::OverBudget { uid, bytes: budget.bytes, secs: budget.window.as_secs() });
            }
        }
        let (start, used) = budgets.entry(uid).or_insert((now, 0));
        if now.duration_since(*start) >= budget.window {
            *start = now;
            *used = 0;
        }
        match used.checked_add(size) {
            Some(total) if total <= budget.bytes => {
                *used = total;
                Ok(())
            }
            _ => Err(DigestError::OverBudget { uid, bytes: budget.bytes, secs: budget.window.as_secs() }),
        }
    }
}
