//! The one rotation rule, for every key kind (X.509 authority, JWT key, and later WIT key):
//! a pure function of (keys, now, ttl), so it is tested at chosen instants without a clock.
//!
//! - A successor is made once the newest key is at half its life (or there is none, or a switch
//!   of mode forces one).
//! - It becomes the signer a tenth of the TTL later, so every client has the new bundle (pushed at
//!   once on the bundle streams) before the first credential it signs is seen, unless nothing
//!   would sign meanwhile (first start, a restart late in the current key's life): then at once.
//! - Expired keys signed nothing still valid and leave the bundle; others stay until they expire.

use std::time::{Duration, SystemTime};

/// The kinds of signing key the CA keeps, each rotated by [`plan`]. Adding a kind: a variant
/// here and in [`KeyKind::ALL`], its key set in `keyring::Authorities`, its stored list in `store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyKind {
    /// An X.509 authority that signs X.509-SVIDs.
    X509,
    /// An ES256 key that signs JWT-SVIDs.
    Jwt,
    /// An ES256 key that signs WIT-SVIDs.
    Wit,
    /// An ES256 key that signs delegated access tokens (`at+jwt`).
    Delegation,
}

impl KeyKind {
    /// Every kind, in the order rotation makes their successors.
    pub const ALL: [KeyKind; 4] = [KeyKind::X509, KeyKind::Jwt, KeyKind::Wit, KeyKind::Delegation];
}

/// The life of one key: it may sign from `active_from` until `not_after` and is in the bundle
/// until `not_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLife {
    pub active_from: SystemTime,
    pub not_after: SystemTime,
}

/// What to do with one key kind's keys at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Make a successor that signs from this instant.
    pub successor_from: Option<SystemTime>,
    /// For each existing key (same order): keep it (false: expired, drop it).
    pub keep: Vec<bool>,
}

impl Plan {
    pub(crate) fn changes_anything(&self) -> bool {
        self.successor_from.is_some() || self.keep.iter().any(|k| !k)
    }
}

/// The key that signs at `now`: the newest whose activation time has come and that has not expired.
pub(crate) fn signer_at(keys: &[KeyLife], now: SystemTime) -> Option<usize> {
    keys.iter().rposition(|k| k.active_from <= now && now < k.not_after)
}

/// The rotation rule. `keys` are oldest first; `force` makes a successor that signs at once.
pub(crate) fn plan(keys: &[KeyLife], now: SystemTime, ttl: Duration, force: bool) -> Plan {
    let lead = ttl / 10;
    let due = force || keys.last().is_none_or(|last| half_life_passed(last, now));
    let successor_from = due.then(|| {
        let covered = !force && signer_at(keys, now).is_some_and(|i| keys[i].not_after > crate::clock::add(now, lead));
        if covered { crate::clock::add(now, lead) } else { now }
    });
    Plan { successor_from, keep: keys.iter().map(|k| k.not_after > now).collect() }
}

fn half_life_passed(key: &KeyLife, now: SystemTime) -> bool {
    let life = key.not_after.duration_since(key.active_from).unwrap_or_default();
    now >= key.active_from + life / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const TTL: Duration = Duration::from_secs(1000);

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn key(from: u64, until: u64) -> KeyLife {
        KeyLife { active_from: at(from), not_after: at(until) }
    }

    #[test]
    fn first_start_makes_a_key_that_signs_at_once() {
        let p = plan(&[], at(0), TTL, false);
        assert_eq!(p, Plan { successor_from: Some(at(0)), keep: vec![] });
    }

    #[test]
    fn before_half_life_nothing_changes() {
        let p = plan(&[key(0, 1000)], at(499), TTL, false);
        assert_eq!(p, Plan { successor_from: None, keep: vec![true] });
        assert!(!p.changes_anything());
    }

    #[test]
    fn at_half_life_a_successor_is_published_and_signs_a_tenth_later() {
        let p = plan(&[key(0, 1000)], at(500), TTL, false);
        assert_eq!(p, Plan { successor_from: Some(at(600)), keep: vec![true] });
    }

    #[test]
    fn after_a_missed_rotation_the_successor_signs_at_once_and_the_expired_key_goes() {
        // The daemon was down across the whole life of the only key.
        let p = plan(&[key(0, 1000)], at(1500), TTL, false);
        assert_eq!(p, Plan { successor_from: Some(at(1500)), keep: vec![false] });
        // Down until shortly before expiry: the old key cannot cover the lead time either.
        let p = plan(&[key(0, 1000)], at(950), TTL, false);
        assert_eq!(p, Plan { successor_from: Some(at(950)), keep: vec![true] });
    }

    #[test]
    fn after_a_restart_a_retired_key_still_valid_stays_in_the_bundle() {
        // Old key (retired, still valid) and its successor, which signs now and is before its half-life.
        let keys = [key(0, 1000), key(600, 1500)];
        assert_eq!(signer_at(&keys, at(700)), Some(1));
        let p = plan(&keys, at(700), TTL, false);
        assert_eq!(p, Plan { successor_from: None, keep: vec![true, true] });
        // Once the old key expires it leaves; the successor keeps signing.
        let p = plan(&keys, at(1000), TTL, false);
        assert_eq!(p, Plan { successor_from: None, keep: vec![false, true] });
    }

    #[test]
    fn a_published_successor_does_not_sign_before_its_time() {
        let keys = [key(0, 1000), key(600, 1500)];
        assert_eq!(signer_at(&keys, at(599)), Some(0));
        assert_eq!(signer_at(&keys, at(600)), Some(1));
    }

    #[test]
    fn force_makes_a_successor_that_signs_at_once() {
        let p = plan(&[key(0, 1000)], at(10), TTL, true);
        assert_eq!(p, Plan { successor_from: Some(at(10)), keep: vec![true] });
    }
}
