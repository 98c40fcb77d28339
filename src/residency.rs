//! Resident code. An idle daemon's RSS was mostly its own code: the kernel maps a file's pages
//! around every page that runs in 64 KiB blocks ("fault-around"), and start-up (argument and
//! config parsing, CA loading, key generation) touches code that never runs again. Once the
//! daemon serves, the read-only mappings of its own executable (text and read-only data) are
//! told to fault page by page (`MADV_RANDOM`) and their mapped pages are dropped
//! (`MADV_DONTNEED`): what runs afterwards comes back from the page cache on first use, a minor
//! fault per page, so RSS counts the code the daemon runs, not its neighbours or its start-up.
//!
//! Only the executable's mappings: the kernel mapped them at exec and nothing remaps them, while
//! a library (an NSS module an attestation's name lookup loads) may be mapped and relocated
//! while this runs.
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

/// A file as `/proc/PID/maps` names it: device (major, minor) and inode.
type FileId = ((u64, u64), u64);

/// The mappings to drop: of the file `exe`, not writable, and holding no anonymous pages, in
/// memory or in swap. The last rules out the RELRO segment the dynamic loader relocated
/// (copy-on-write pages whose content is not the file's): dropping it would lose the
/// relocations. A mapping that is not writable cannot gain such pages later.
fn droppable(smaps: &str, exe: FileId) -> Vec<Droppable> {
    let mut out = Vec::new();
    // The mapping being read, and its anonymous and swapped kB once seen.
    let mut current: Option<(Droppable, Option<u64>, Option<u64>)> = None;
    let mut finish = |current: &mut Option<(Droppable, Option<u64>, Option<u64>)>| {
        if let Some((m, Some(0), Some(0))) = current.take() {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            finish(&mut current);
            // A mapping's header line: range perms offset dev inode [path].
            let perms = fields.next().unwrap_or("");
            let dev = fields.nth(1).and_then(|d| d.split_once(':')).and_then(|(major, minor)| {
                Some((u64::from_str_radix(major, 16).ok()?, u64::from_str_radix(minor, 16).ok()?))
            });
            let inode = fields.next().and_then(|i| i.parse::<u64>().ok());
            let ours = dev.zip(inode) == Some(exe);
            current = (ours && perms.starts_with('r') && !perms.contains('w') && end > start)
                .then(|| (Droppable { start, len: end - start }, None, None));
            continue;
        }
        let kb = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
        if let Some((_, anon, swap)) = current.as_mut() {
            match first {
                "Anonymous:" => *anon = kb(),
                "Swap:" => *swap = kb(),
                _ => {}
            }
        }
    }
    finish(&mut current);
    out
}

/// The executable's device and inode, as `/proc/self/maps` names them.
fn exe_id() -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self/exe").ok()?;
    let dev = meta.dev();
    Some(((nix::sys::stat::major(dev), nix::sys::stat::minor(dev)), meta.ino()))
}

/// Drop the daemon's mapped code and read-only data (see the module doc); the bytes unmapped.
/// Best effort: a mapping that refuses is left as it is.
pub(crate) fn trim_code() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let Some(exe) = exe_id() else { return 0 };
    let mut dropped = 0;
    for m in droppable(&smaps, exe) {
        let Some(addr) = NonNull::new(m.start as *mut c_void) else { continue };
        // SAFETY: `addr..addr+len` is a whole mapping of this process's executable, not
        // writable, with no anonymous (copy-on-write) page in memory or swap: every page holds
        // exactly the file's bytes, and none can become private without a write. MADV_RANDOM
        // only changes fault-ahead; MADV_DONTNEED unmaps the pages, and the next access maps the
        // same file pages again from the page cache (as after memory reclaim, which may do the
        // same to these pages at any time). No memory content is lost and no pointer is
        // invalidated. The executable's mappings were made at exec and nothing remaps them.
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
Swap:                  0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 123 /usr/bin/tessera
Rss:                6000 kB
Anonymous:             0 kB
Swap:                  0 kB
55d0c0900000-55d0c0950000 r--p 00900000 fe:00 123 /usr/bin/tessera
Rss:                 296 kB
Anonymous:           296 kB
Swap:                  0 kB
55d0c0950000-55d0c0960000 r--p 00950000 fe:00 123 /usr/bin/tessera
Rss:                   0 kB
Anonymous:             0 kB
Swap:                 64 kB
55d0c0960000-55d0c0970000 rw-p 00960000 fe:00 123 /usr/bin/tessera
Anonymous:            20 kB
Swap:                  0 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Anonymous:          1900 kB
Swap:                  0 kB
7f0000200000-7f0000300000 r-xp 00028000 fe:00 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
Swap:                  0 kB
7ffe00000000-7ffe00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
Swap:                  0 kB
";

    const EXE: FileId = ((0xfe, 0), 123);

    #[test]
    fn only_the_executables_clean_read_only_mappings() {
        let got = droppable(SMAPS, EXE);
        assert_eq!(
            got,
            vec![
                Droppable { start: 0x55d0c0000000, len: 0x100000 },
                Droppable { start: 0x55d0c0100000, len: 0x800000 }
            ],
            "the executable's text and read-only data; never its relocated RELRO (in memory or \
             swapped out), its writable data, the heap, a library or the vdso"
        );
    }

    #[test]
    fn a_mapping_without_its_counts_or_with_garbage_gives_nothing() {
        assert!(droppable("", EXE).is_empty());
        assert!(droppable("zz-yy r-xp 0 fe:00 123 /x\nAnonymous: 0 kB\nSwap: 0 kB\n", EXE).is_empty());
        assert!(droppable("1000-2000 r-xp 0 fe:00 123 /x\nAnonymous: x kB\nSwap: 0 kB\n", EXE).is_empty());
        assert!(droppable("1000-2000 r-xp 0 fe:00 123 /x\nAnonymous: 0 kB\n", EXE).is_empty(), "no Swap line");
        assert!(
            droppable("1000-2000 r-xp 0 fe:00 124 /x\nAnonymous: 0 kB\nSwap: 0 kB\n", EXE).is_empty(),
            "another file"
        );
        assert_eq!(droppable("1000-2000 r-xp 0 fe:00 123 /x\nAnonymous: 0 kB\nSwap: 0 kB\n", EXE).len(), 1);
    }

    #[test]
    fn the_running_executable_is_found_in_its_own_maps() {
        let exe = exe_id().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(!droppable(&smaps, exe).is_empty(), "the test binary's own text should qualify");
    }
}
