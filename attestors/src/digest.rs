//! SHA-256 of files, computed once per file version.
//!
//! The cache key is what `fstat` says about the *opened* file: (device, inode, size, mtime,
//! ctime). Any write changes ctime, and ctime cannot be set from user space, so a hit means the
//! content is the one we hashed — except for a write landing in the same timestamp tick as an
//! earlier one. Like git's "racily clean" index entries, a file whose ctime is within
//! [`DIGEST_CACHE_RACY_WINDOW`] of the moment hashing started is hashed but not cached.
//!
//! A miss is charged to the peer's uid first (`budget`: [`HashBudget`]); the file is then
//! streamed through SHA-256 (`stream`), on a second thread for big files.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

mod budget;
mod stream;
pub use budget::HashBudget;

/// Files changed this recently (by ctime) are not cached: a second write within the same
/// timestamp tick (≤ 10 ms at HZ=100) would not change the cache key.
pub const DIGEST_CACHE_RACY_WINDOW: Duration = Duration::from_millis(50);

/// Most file versions remembered; the least recently used is dropped beyond this.
pub const DIGEST_CACHE_CAPACITY: usize = 4096;

/// Counters of the digest cache, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestStats {
    /// Digests served from the cache (the file was not read).
    pub hits: u64,
    /// Digests computed by reading the file.
    pub misses: u64,
    /// Total bytes read for hashing.
    pub bytes_hashed: u64,
    /// File versions currently cached.
    pub entries: usize,
}

#[derive(Debug, Error)]
pub(crate) enum DigestError {
    #[error("{size} bytes is over the hashing limit of {limit} bytes ({key})")]
    TooLarge { size: u64, limit: u64, key: &'static str },
    #[error(
        "uid {uid} has used its hashing budget ({bytes} bytes per {secs} s; hash_budget_per_uid); \
         no digest until the window ends"
    )]
    OverBudget { uid: u32, bytes: u64, secs: u64 },
    #[error("not a regular file")]
    NotRegular,
    #[error("file changed while it was being hashed")]
    Changed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What `fstat` says of a file's identity and content version: any write changes ctime, which
/// user space cannot set back. The digest cache's key, and the "unchanged since" check of a
/// reused attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    pub fn of(m: &Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// When the file last changed, if representable.
    pub fn ctime(&self) -> Option<SystemTime> {
        let secs = u64::try_from(self.ctime.0).ok()?;
        let nanos = u32::try_from(self.ctime.1).ok()?;
        UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    }
}

#[derive(Debug, Default)]
struct Lru {
    map: HashMap<FileKey, (String, u64)>,
    tick: u64,
}

/// The shared digest cache. Hashing happens outside the lock, so one big file does not hold
/// up lookups of others.
#[derive(Debug, Default)]
pub(crate) struct DigestCache {
    lru: Mutex<Lru>,
    /// uid → (window start, bytes charged in it).
    budgets: Mutex<HashMap<u32, (Instant, u64)>>,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_hashed: AtomicU64,
}

impl DigestCache {
    pub(crate) fn stats(&self) -> DigestStats {
        DigestStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_hashed: self.bytes_hashed.load(Ordering::Relaxed),
            entries: self.lock().map.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (worst case a missing entry), so recover from poisoning.
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lowercase hex SHA-256 of an opened file, from the cache when this file version was seen.
    /// A miss is charged to `charge` (uid and budget) before any byte is read.
    pub(crate) fn digest(
        &self,
        file: &mut File,
        limit: Option<u64>,
        limit_key: &'static str,
        charge: Option<(u32, HashBudget)>,
    ) -> Result<String, DigestError> {
        let before = file.metadata()?;
        if !before.file_type().is_file() {
            return Err(DigestError::NotRegular);
        }
        if let Some(limit) = limit
            && before.len() > limit
        {
            return Err(DigestError::TooLarge { size: before.len(), limit, key: limit_key });
        }
        let key = FileKey::of(&before);
        {
            let mut lru = self.lock();
            lru.tick += 1;
            let tick = lru.tick;
            if let Some((hex, used)) = lru.map.get_mut(&key) {
                *used = tick;
                let hex = hex.clone();
                drop(lru);
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(hex);
            }
        }
        if let Some((uid, budget)) = charge {
            self.charge(uid, budget, before.len())?;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let started = SystemTime::now();
        let hex = self.hash_stream(file, before.len(), limit, limit_key)?;
        if FileKey::of(&file.metadata()?) != key {
            return Err(DigestError::Changed);
        }
        let racy = key.ctime().is_none_or(|c| c + DIGEST_CACHE_RACY_WINDOW >= started);
        if !racy {
            self.insert(key, hex.clone());
        }
        Ok(hex)
    }
    fn insert(&self, key: FileKey, hex: String) {
        let mut lru = self.lock();
        if lru.map.len() >= DIGEST_CACHE_CAPACITY && !lru.map.contains_key(&key) {
            // O(n) eviction is fine at this size and only runs when full.
            if let Some(oldest) = lru.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| *k) {
                lru.map.remove(&oldest);
            }
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.map.insert(key, (hex, tick));
    }
}

#[cfg(test)]
mod tests {
    use super::stream::{CHUNK, PIPELINE_FROM, to_hex};
    use super::*;
    use std::io::Write;

    #[test]
    fn known_digest_and_limit() {
        let cache = DigestCache::default();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"abc").unwrap();
        let mut f = reopen(&f);
        assert_eq!(
            cache.digest(&mut f, None, "max_hash_size", None).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut f = reopen(&f);
        assert!(matches!(
            cache.digest(&mut f, Some(2), "max_hash_size", None),
            Err(DigestError::TooLarge { size: 3, limit: 2, .. })
        ));
    }

    #[test]
    fn multi_chunk_digest_matches_sha2() {
        let data: Vec<u8> = (0..CHUNK * 3 + 12345).map(|i| (i % 251) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let got = DigestCache::default().digest(&mut reopen(&f), None, "max_hash_size", None).unwrap();
        assert_eq!(got, to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&data)));
    }

    #[test]
    fn big_files_hashed_on_two_threads_match_sha2_and_stop_at_the_limit() {
        let len = usize::try_from(PIPELINE_FROM).unwrap() + CHUNK * 5 + 777;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let cache = DigestCache::default();
        let got = cache.digest(&mut reopen(&f), None, "max_hash_size", None).unwrap();
        assert_eq!(got, to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&data)));
        assert_eq!(cache.stats().bytes_hashed, len as u64);
        // A file that grew past the limit after fstat: refused, and the reader stops with it
        // (this returns at all: neither side is left waiting on the other).
        let limit = PIPELINE_FROM + 1;
        let err = cache.hash_stream(&mut reopen(&f), len as u64, Some(limit), "max_hash_size").unwrap_err();
        assert!(matches!(err, DigestError::TooLarge { limit: l, .. } if l == limit), "{err}");
    }

    #[test]
    fn fresh_files_are_not_cached() {
        let cache = DigestCache::default();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"just written").unwrap();
        cache.digest(&mut reopen(&f), None, "max_hash_size", None).unwrap();
        assert_eq!(cache.stats().entries, 0, "a file written just now is racy");
    }

    #[test]
    fn each_uid_has_its_own_hashing_budget_per_window() {
        let cache = DigestCache::default();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 1000]).unwrap();
        let budget = HashBudget { bytes: 2500, window: Duration::from_millis(300) };
        // Fresh file: never cached, so every call is a miss charged 1000 bytes.
        for _ in 0..2 {
            cache.digest(&mut reopen(&f), None, "k", Some((1000, budget))).unwrap();
        }
        let over = cache.digest(&mut reopen(&f), None, "k", Some((1000, budget))).unwrap_err();
        assert!(matches!(over, DigestError::OverBudget { uid: 1000, .. }), "{over}");
        assert!(over.to_string().contains("hash_budget_per_uid"), "{over}");
        // Another uid is not affected; nor is an uncharged (CLI) caller.
        cache.digest(&mut reopen(&f), None, "k", Some((1001, budget))).unwrap();
        cache.digest(&mut reopen(&f), None, "k", None).unwrap();
        // The window ends; the budget is back.
        std::thread::sleep(Duration::from_millis(350));
        cache.digest(&mut reopen(&f), None, "k", Some((1000, budget))).unwrap();
        // A file bigger than the whole budget never fits (a fresh file: the old one may be
        // cached by now, and hits cost nothing).
        let mut g = tempfile::tempfile().unwrap();
        g.write_all(&[1u8; 100]).unwrap();
        let small = HashBudget { bytes: 10, window: Duration::from_secs(60) };
        assert!(matches!(
            cache.digest(&mut reopen(&g), None, "k", Some((2000, small))),
            Err(DigestError::OverBudget { .. })
        ));
    }

    fn reopen(f: &File) -> File {
        use std::io::Seek;
        let mut g = f.try_clone().unwrap();
        g.rewind().unwrap();
        g
    }
}
