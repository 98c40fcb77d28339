//! `ca.json`: the CA's state on disk (version 1, unchanged since the first release), written
//! atomically with mode 0600. Key PEMs are `secret::PrivateKey`s: wiped on drop, never cloned: a rotation
//! writes a borrowed view of (kept keys + new keys) first, and only then moves the new keys in.

use super::CaError;
use crate::clock::{from_unix_secs, unix_secs};
use crate::secret::PrivateKey;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::SystemTime;
use zeroize::Zeroizing;

pub(super) const STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(super) struct StoredState {
    pub(super) version: u32,
    pub(super) trust_domain: String,
    pub(super) x509: Vec<StoredX509>,
    pub(super) jwt: Vec<StoredJwt>,
    /// Keys that sign delegated access tokens (absent from files written before delegation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) delegation: Vec<StoredJwt>,
    /// WIT-SVID signing keys (a separate kind: their kids never collide with JWT ones; absent
    /// from files written before WIT-SVIDs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) wit: Vec<StoredJwt>,
    /// Roots of the operator's PKI that our intermediates chain to (PEM), if any.
    #[serde(default)]
    pub(super) upstream_roots: Vec<String>,
    /// Roots the operator has replaced, kept until what chains to them has expired.
    #[serde(default)]
    pub(super) retired_roots: Vec<RetiredRoot>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct RetiredRoot {
    pub(super) pem: String,
    /// Unix seconds after which nothing chains to this root any more.
    pub(super) until: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredX509 {
    pub(super) cert_pem: String,
    pub(super) key_pem: PrivateKey,
    /// An intermediate under an upstream root (it goes into SVID chains, not into the bundle).
    #[serde(default)]
    pub(super) intermediate: bool,
    /// When this authority may start signing (unix seconds); it is in the bundle before that.
    pub(super) active_from: u64,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredJwt {
    pub(super) kid: String,
    pub(super) key_pem: PrivateKey,
    pub(super) active_from: u64,
    pub(super) not_after: u64,
}

/// One rotation's changes to the stored state.
#[derive(Default)]
pub(super) struct Change {
    pub(super) keep_x509: Vec<bool>,
    pub(super) keep_jwt: Vec<bool>,
    pub(super) keep_delegation: Vec<bool>,
    pub(super) keep_wit: Vec<bool>,
    pub(super) new_wit: Option<StoredJwt>,
    pub(super) new_x509: Option<StoredX509>,
    pub(super) new_jwt: Option<StoredJwt>,
    pub(super) new_delegation: Option<StoredJwt>,
    /// New upstream roots (PEM); roots no longer listed retire until `retire_until`.
    pub(super) new_roots: Option<Vec<String>>,
    pub(super) retire_until: u64,
    pub(super) now: u64,
}

impl Change {
    /// The new key (if any) and the keys kept of one ES256 kind.
    pub(super) fn set_es256(&mut self, kind: super::KeyKind, new: Option<StoredJwt>, keep: Vec<bool>) {
        let (new_slot, keep_slot) = match kind {
            super::KeyKind::Jwt => (&mut self.new_jwt, &mut self.keep_jwt),
            super::KeyKind::Wit => (&mut self.new_wit, &mut self.keep_wit),
            super::KeyKind::Delegation => (&mut self.new_delegation, &mut self.keep_delegation),
            // Not an ES256 kind: the caller handles X.509 authorities itself.
            super::KeyKind::X509 => return,
        };
        *new_slot = new;
        *keep_slot = keep;
    }
}

/// The state after a change, borrowed from the current state and the change: what is written
/// and built before anything in memory moves.
#[derive(Serialize)]
pub(super) struct StateView<'a> {
    version: u32,
    trust_domain: &'a str,
    pub(super) x509: Vec<&'a StoredX509>,
    pub(super) jwt: Vec<&'a StoredJwt>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) delegation: Vec<&'a StoredJwt>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) wit: Vec<&'a StoredJwt>,
    pub(super) upstream_roots: Vec<&'a String>,
    pub(super) retired_roots: Vec<&'a RetiredRoot>,
}

/// The retired roots a change adds (owned: they are new values, not copies of keys).
pub(super) fn newly_retired(state: &StoredState, change: &Change) -> Vec<RetiredRoot> {
    let Some(new) = &change.new_roots else { return Vec::new() };
    state
        .upstream_roots
        .iter()
        .filter(|old| !new.contains(old))
        .map(|old| RetiredRoot { pem: old.clone(), until: change.retire_until })
        .collect()
}

impl StoredState {
    pub(super) fn empty(trust_domain: &str) -> Self {
        Self {
            version: STATE_VERSION,
            trust_domain: trust_domain.to_owned(),
            x509: vec![],
            jwt: vec![],
            delegation: vec![],
            wit: vec![],
            upstream_roots: vec![],
            retired_roots: vec![],
        }
    }

    /// Parse `ca.json` bytes (the caller checks version and trust domain).
    pub(super) fn parse(bytes: &[u8], path: &Path) -> Result<Self, CaError> {
        let s: StoredState = serde_json::from_slice(bytes)
            .map_err(|e| CaError::Corrupt { path: path.to_owned(), reason: e.to_string() })?;
        if s.version != STATE_VERSION {
            return Err(CaError::Corrupt { path: path.to_owned(), reason: format!("unknown version {}", s.version) });
        }
        // Times past year 9999 are not something tessera wrote; refuse them here rather than let
        // time arithmetic on them overflow later.
        let times = s.x509.iter().map(|a| ("x509.active_from", a.active_from)).chain(
            s.jwt
                .iter()
                .chain(s.delegation.iter())
                .chain(s.wit.iter())
                .flat_map(|k| [("jwt.active_from", k.active_from), ("jwt.not_after", k.not_after)])
                .chain(s.retired_roots.iter().map(|r| ("retired_roots.until", r.until))),
        );
        for (field, t) in times {
            if t > MAX_STORED_TIME {
                return Err(CaError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("{field} = {t} is not a plausible time (past year 9999)"),
                });
            }
        }
        Ok(s)
    }

    /// The state as it is.
    pub(super) fn view(&self) -> StateView<'_> {
        StateView {
            version: self.version,
            trust_domain: &self.trust_domain,
            x509: self.x509.iter().collect(),
            jwt: self.jwt.iter().collect(),
            delegation: self.delegation.iter().collect(),
            wit: self.wit.iter().collect(),
            upstream_roots: self.upstream_roots.iter().collect(),
            retired_roots: self.retired_roots.iter().collect(),
        }
    }

    /// The state as it will be after `change` (with `retired` from [`newly_retired`]).
    pub(super) fn view_after<'a>(&'a self, change: &'a Change, retired: &'a [RetiredRoot]) -> StateView<'a> {
        let kept = |keep: &[bool], i: usize| keep.get(i).copied().unwrap_or(true);
        StateView {
            version: self.version,
            trust_domain: &self.trust_domain,
            x509: (self.x509.iter().enumerate().filter(|(i, _)| kept(&change.keep_x509, *i)).map(|(_, a)| a))
                .chain(change.new_x509.as_ref())
                .collect(),
            jwt: (self.jwt.iter().enumerate().filter(|(i, _)| kept(&change.keep_jwt, *i)).map(|(_, k)| k))
                .chain(change.new_jwt.as_ref())
                .collect(),
            delegation: (self.delegation.iter().enumerate())
                .filter(|(i, _)| kept(&change.keep_delegation, *i))
                .map(|(_, k)| k)
                .chain(change.new_delegation.as_ref())
                .collect(),
            wit: (self.wit.iter().enumerate().filter(|(i, _)| kept(&change.keep_wit, *i)).map(|(_, k)| k))
                .chain(change.new_wit.as_ref())
                .collect(),
            upstream_roots: change.new_roots.as_ref().unwrap_or(&self.upstream_roots).iter().collect(),
            retired_roots: self.retired_roots.iter().chain(retired).filter(|r| r.until > change.now).collect(),
        }
    }

    /// Apply `change` by moving its keys in (after the view was written to disk).
    pub(super) fn commit(&mut self, change: Change, retired: Vec<RetiredRoot>) {
        let mut i = 0;
        self.x509.retain(|_| {
            i += 1;
            change.keep_x509.get(i - 1).copied().unwrap_or(true)
        });
        let mut i = 0;
        self.jwt.retain(|_| {
            i += 1;
            change.keep_jwt.get(i - 1).copied().unwrap_or(true)
        });
        let mut i = 0;
        self.delegation.retain(|_| {
            i += 1;
            change.keep_delegation.get(i - 1).copied().unwrap_or(true)
        });
        self.wit.retain(|_| {
            i += 1;
            change.keep_wit.get(i - 1).copied().unwrap_or(true)
        });
        self.wit.extend(change.new_wit);
        self.x509.extend(change.new_x509);
        self.jwt.extend(change.new_jwt);
        self.delegation.extend(change.new_delegation);
        if let Some(roots) = change.new_roots {
            self.upstream_roots = roots;
        }
        self.retired_roots.extend(retired);
        self.retired_roots.retain(|r| r.until > change.now);
    }
}

impl StateView<'_> {
    pub(super) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, CaError> {
        serde_json::to_vec_pretty(self).map(Zeroizing::new).map_err(|e| CaError::Serialize(e.to_string()))
    }
}

/// 9999-12-31T23:59:59Z: no time in `ca.json` is later.
const MAX_STORED_TIME: u64 = 253_402_300_799;

/// Seconds helpers for the stored form.
pub(super) fn secs(t: SystemTime) -> u64 {
    unix_secs(t)
}
pub(super) fn time(s: u64) -> SystemTime {
    from_unix_secs(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ca.json` written by tessera at 3102019 (before the CA was split into modules), with
    /// throwaway keys.
    const FIXTURE: &[u8] = include_bytes!("testdata/ca-3102019.json");

    #[test]
    fn reads_a_state_file_written_by_the_previous_layout() {
        crate::install_crypto_provider();
        let state = StoredState::parse(FIXTURE, Path::new("ca.json")).unwrap();
        assert_eq!(state.trust_domain, "fixture.example");
        assert_eq!(state.x509.len(), 1);
        assert_eq!(state.jwt.len(), 1);
        let auth = super::super::build(&state.view(), Path::new("ca.json")).unwrap();
        assert_eq!(auth.x509.len(), 1);
        assert_eq!(auth.roots.len(), 1);
        assert_eq!(auth.jwt[0].kid, state.jwt[0].kid);
        // Written back, it is the same document (same fields, same values).
        let again: serde_json::Value = serde_json::from_slice(&state.view().to_json().unwrap()).unwrap();
        let orig: serde_json::Value = serde_json::from_slice(FIXTURE).unwrap();
        assert_eq!(again, orig);
    }

    #[test]
    fn a_change_is_written_as_viewed_and_committed_by_moving() {
        let mut state = StoredState::parse(FIXTURE, Path::new("ca.json")).unwrap();
        let kid = state.jwt[0].kid.clone();
        let change = Change {
            keep_x509: vec![false],
            keep_jwt: vec![true],
            new_jwt: Some(StoredJwt {
                kid: "new".into(),
                key_pem: PrivateKey::new(b"k".to_vec()),
                active_from: 1,
                not_after: 2,
            }),
            now: 0,
            ..Change::default()
        };
        let retired = newly_retired(&state, &change);
        let view: serde_json::Value =
            serde_json::from_slice(&state.view_after(&change, &retired).to_json().unwrap()).unwrap();
        state.commit(change, retired);
        let after: serde_json::Value = serde_json::from_slice(&state.view().to_json().unwrap()).unwrap();
        assert_eq!(view, after);
        assert!(state.x509.is_empty());
        assert_eq!(state.jwt.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), [kid.as_str(), "new"]);
        assert_eq!(format!("{:?}", state.jwt[1].key_pem), "PrivateKey(1 bytes, redacted)");
    }
}
