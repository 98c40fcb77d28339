//! Resident code. An idle daemon's RSS was mostly its own code: the kernel maps a file's pages
//! around every page that runs in 64 KiB blocks ("fault-around"), and start-up (argument and
//! config parsing, CA loading, key generation) touches code that never runs again. Once the
//! daemon serves, its read-only file mappings (its own text and read-only data, libc's) are told
//! to fault page by page (`MADV_RANDOM`) and their mapped pages are dropped (`MADV_DONTNEED`):
//! what runs afterwards comes back from the page cache on first use, a minor fault per page, so
//! RSS counts the code the daemon runs, not its neighbours or its start-up.
//!
//! This is the binary's only `unsafe` (the library forbids it): `madvise` on mappings the process
//! did not create itself.

use std::ffi::c_void;
use std::ptr::NonNull;

use nix::sys::mman::{MmapAdvise, madvise};

/// One mapping of `/proc/self/smaps` that may be dropped.
#[derive(Debug, PartialEq, Eq)]
struct Droppable {
    start: usize,
    len: usize,
}

/// The mappings to drop: file-backed (a path), not writable, and holding no anonymous pages.
/// The last rules out the RELRO segments the dynamic loader relocated (copy-on-write pages whose
/// content is not the file's): dropping one would lose the relocations.
fn droppable(smaps: &str) -> Vec<Droppable> {
    let mut out = Vec::new();
    let mut current: Option<Droppable> = None;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            // A mapping's header line: range perms offset dev inode [path].
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = (path.starts_with('/') && !perms.contains('w') && perms.starts_with('r') && end > start)
                .then(|| Droppable { start, len: end - start });
            continue;
        }
        if first == "Anonymous:" {
            let anon_kb = fields.next().and_then(|v| v.parse::<u64>().ok());
            if let Some(m) = current.take()
                && anon_kb == Some(0)
            {
                out.push(m);
            }
        }
    }
    out
}

/// Drop the daemon's mapped code and read-only data (see the module doc); the bytes unmapped.
/// Best effort: a mapping that refuses is left as it is.
pub(crate) fn trim_code() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut dropped = 0;
    for m in droppable(&smaps) {
        let Some(addr) = NonNull::new(m.start as *mut c_void) else { continue };
        // SAFETY: `addr..addr+len` is a whole mapping of this process, read-only and backed by a
        // file, with no anonymous (copy-on-write) pages: every page holds exactly the file's
        // bytes. MADV_RANDOM only changes fault-ahead; MADV_DONTNEED unmaps the pages, and the
        // next access maps the same file pages again from the page cache (as after memory
        // reclaim, which may do the same to these pages at any time). No memory content is lost
        // and no pointer is invalidated. Mappings do not change under us: the daemon loads no
        // library at run time.
        let ok = unsafe {
            madvise(addr, m.len, MmapAdvise::MADV_RANDOM).is_ok()
                && madvise(addr, m.len, MmapAdvise::MADV_DONTNEED).is_ok()
        };
        if ok {
            dropped += m.len;
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 123 /usr/bin/tessera
Size:               1024 kB
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 123 /usr/bin/tessera
Rss:                6000 kB
Anonymous:             0 kB
55d0c0900000-55d0c0950000 r--p 00900000 fe:00 123 /usr/bin/tessera
Rss:                 296 kB
Anonymous:           296 kB
55d0c0950000-55d0c0960000 rw-p 00950000 fe:00 123 /usr/bin/tessera
Anonymous:            20 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:          1900 kB
7f0000200000-7f0000300000 r-xp 00028000 fe:00 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffe00000000-7ffe00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_read_only_file_mappings_without_anonymous_pages() {
        let got = droppable(SMAPS);
        assert_eq!(
            got,
            vec![
                Droppable { start: 0x55d0c0000000, len: 0x100000 },
                Droppable { start: 0x55d0c0100000, len: 0x800000 },
                Droppable { start: 0x7f0000200000, len: 0x100000 },
            ],
            "text and read-only data of the binary and libc; never the relocated RELRO, writable data, the heap or the vdso"
        );
    }

    #[test]
    fn garbage_gives_nothing() {
        assert!(droppable("").is_empty());
        assert!(droppable("zz-yy r-xp 0 0 0 /x\nAnonymous: 0 kB\n").is_empty());
        assert!(droppable("1000-2000 r-xp 0 0 0 /x\nAnonymous: x kB\n").is_empty());
    }
}
