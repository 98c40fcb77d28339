//! Local file systems: where a `stat` or `open` cannot wait on a network peer or a user-space
//! server (NFS, SMB, FUSE, 9p, autofs…). Work that must not stall the daemon's async threads is
//! allowed only on these; anything else takes the slow, bounded path.

use rustix::fs::StatFs;

/// `f_type` magic numbers (linux/magic.h) of disk and memory file systems.
const LOCAL: &[u64] = &[
    0xEF53,      // ext2/3/4
    0x5846_5342, // xfs
    0x9123_683E, // btrfs
    0x0102_1994, // tmpfs
    0x8584_58F6, // ramfs
    0x794C_7630, // overlayfs
    0x2FC1_2FC1, // zfs
    0x7371_7368, // squashfs
    0xE0F5_E1E2, // erofs
    0xF2F5_2010, // f2fs
];

/// Whether `statfs` describes a local file system.
pub fn is_local(fs: &StatFs) -> bool {
    u64::try_from(fs.f_type).is_ok_and(|t| LOCAL.contains(&t))
}

/// Whether `path` (followed) lives on a local file system; false when it cannot be examined.
pub fn path_is_local(path: &std::path::Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| is_local(&s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_is_not_local_and_a_tempdir_usually_is() {
        // procfs is not on the list (nothing the attestors stamp lives there).
        assert!(!super::path_is_local(std::path::Path::new("/proc/self/status")));
        assert!(!super::path_is_local(std::path::Path::new("/nonexistent/x")));
    }
}
