//! Streaming an opened file through SHA-256 under a size limit, on a helper thread for big files.

use super::{DigestCache, DigestError};
use aws_lc_rs::digest::{Context, SHA256};
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::Ordering;

pub(super) const CHUNK: usize = 256 * 1024;

/// Files at least this big are read on a second thread while this one hashes: copying 100 MiB
/// out of the page cache costs about a third of what hashing it does, and the two overlap.
pub(super) const PIPELINE_FROM: u64 = 4 << 20;

/// Chunks in flight between the reading and the hashing thread.
const PIPELINE_DEPTH: usize = 4;

impl DigestCache {
    /// Streams the file through SHA-256 (aws-lc's, at openssl speed with SHA-NI), never
    /// buffering it whole, and never reading past `limit` even if the file grows meanwhile.
    /// `size` (from `fstat`) only chooses how: a big file is read on a helper thread.
    pub(super) fn hash_stream(
        &self,
        file: &mut File,
        size: u64,
        limit: Option<u64>,
        key: &'static str,
    ) -> Result<String, DigestError> {
        // The file is read once, front to back: a larger readahead window halves the time a file
        // that is not in the page cache takes (an advice only; reading works without it).
        let _ = rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::Sequential);
        let mut hasher = Context::new(&SHA256);
        match (size >= PIPELINE_FROM).then(|| self.hash_pipelined(file, &mut hasher, limit, key)) {
            Some(Some(done)) => done?,
            // Small, or no thread to be had: read here.
            _ => self.hash_inline(file, &mut hasher, limit, key)?,
        }
        Ok(to_hex(hasher.finish().as_ref()))
    }

    fn hash_inline(
        &self,
        file: &mut File,
        hasher: &mut Context,
        limit: Option<u64>,
        key: &'static str,
    ) -> Result<(), DigestError> {
        let mut buf = vec![0u8; CHUNK];
        let mut total: u64 = 0;
        while let Some(n) = read_chunk(file, &mut buf)? {
            hasher.update(&buf[..n]);
            self.count(&mut total, n, limit, key)?;
        }
        Ok(())
    }

    /// Adds `n` read bytes to `total` and the stats; over `limit` is an error.
    fn count(&self, total: &mut u64, n: usize, limit: Option<u64>, key: &'static str) -> Result<(), DigestError> {
        *total += n as u64;
        self.bytes_hashed.fetch_add(n as u64, Ordering::Relaxed);
        match limit {
            Some(limit) if *total > limit => Err(DigestError::TooLarge { size: *total, limit, key }),
            _ => Ok(()),
        }
    }

    /// A scoped helper thread reads chunks while this one hashes the previous ones; buffers go
    /// back and forth, so at most [`PIPELINE_DEPTH`] chunks exist. Either side stopping (end of
    /// file, an error, the limit) ends the other: its channels close. `None` (nothing read) if
    /// no thread could be started.
    fn hash_pipelined(
        &self,
        file: &mut File,
        hasher: &mut Context,
        limit: Option<u64>,
        key: &'static str,
    ) -> Option<Result<(), DigestError>> {
        use std::sync::mpsc::sync_channel;
        let (full_tx, full_rx) = sync_channel::<io::Result<(Vec<u8>, usize)>>(PIPELINE_DEPTH);
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
        for _ in 0..PIPELINE_DEPTH {
            // Cannot fail: the channel has room for every buffer and its receiver is alive.
            let _ = free_tx.send(vec![0u8; CHUNK]);
        }
        std::thread::scope(|scope| {
            // Owned by this closure, so they close when it returns, before the scope joins the
            // reader: an early error here must not leave the reader blocked on them.
            let (full_rx, free_tx) = (full_rx, free_tx);
            let read = move || {
                // All of it will be read: have the kernel fetch it from disk at full queue depth
                // rather than one readahead window at a time (about 2× faster for a file not in
                // the page cache). Up to the limit only; an advice, reading works without it.
                let len = limit.and_then(|l| std::num::NonZeroU64::new(l.saturating_add(1)));
                let _ = rustix::fs::fadvise(&*file, 0, len, rustix::fs::Advice::WillNeed);
                let mut total: u64 = 0;
                while let Ok(mut buf) = free_rx.recv() {
                    let sent = match read_chunk(file, &mut buf) {
                        Ok(None) => return,
                        Ok(Some(n)) => {
                            total += n as u64;
                            full_tx.send(Ok((buf, n)))
                        }
                        Err(e) => full_tx.send(Err(e)),
                    };
                    // Past the limit the hashing side refuses: read no further.
                    if sent.is_err() || limit.is_some_and(|l| total > l) {
                        return;
                    }
                }
            };
            std::thread::Builder::new().name("tessera-hash-read".into()).spawn_scoped(scope, read).ok()?;
            let mut total: u64 = 0;
            let mut hash = || {
                for chunk in &full_rx {
                    let (buf, n) = chunk?;
                    hasher.update(&buf[..n]);
                    self.count(&mut total, n, limit, key)?;
                    // The reader may have stopped (end of file): then nobody takes it back.
                    let _ = free_tx.send(buf);
                }
                Ok(())
            };
            Some(hash())
        })
    }
}

/// One `read` into `buf`, retried on EINTR; `None` at end of file.
fn read_chunk(file: &mut File, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        return match file.read(buf) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}
