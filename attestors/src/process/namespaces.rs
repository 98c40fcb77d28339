//! Whether a process shares the daemon's mount and user namespaces, and so whether the paths
//! and files seen through its root are evidence.

use super::ProcessHandle;
use procfs::ProcError;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

impl ProcessHandle {
    /// Whether the daemon resolves the process's paths as the process does: the same mount
    /// namespace and the same root directory (not chrooted).
    pub fn shares_daemon_view(&self) -> bool {
        self.same_mount_ns() && self.proc_dir.root().is_ok_and(|r| r == Path::new("/"))
    }

    pub(super) fn same_mount_ns(&self) -> bool {
        *self.same_mnt.get_or_init(|| self.same_ns(Namespace::Mount))
    }

    pub(super) fn same_ns(&self, kind: Namespace) -> bool {
        let theirs = self
            .proc_dir
            .open_relative(format!("ns/{}", kind.name()))
            .and_then(|f| f.metadata().map_err(ProcError::from));
        match (theirs, kind.ours()) {
            (Ok(a), Some(b)) => (a.dev(), a.ino()) == b,
            _ => false,
        }
    }

    /// Why paths seen through this process's root are not evidence, if they are not.
    ///
    /// A process in its own user namespace can have created its mount namespace without any
    /// privilege (`unshare -Urm`) and mounted anything anywhere in it: a tmpfs over
    /// `/usr/local/sbin` holding its own `legit-daemon`, a copy of a root-owned prompt file. Then
    /// `/proc/PID/exe`'s path and every file read through `/proc/PID/root` say what it chose.
    /// (In the daemon's user namespace, a separate mount namespace or chroot needs privilege:
    /// systemd sandboxing, root-run containers; those paths stay evidence.) Unreadable
    /// namespace links count as foreign: fail closed.
    pub(crate) fn untrusted_root(&self) -> Option<String> {
        if self.same_mount_ns() || self.same_ns(Namespace::User) {
            return None;
        }
        Some(format!(
            "process {} runs in a mount namespace of its own user namespace (e.g. `unshare -Urm`, \
             rootless containers), where it can mount any file at any path; paths and files seen \
             through its root are not evidence",
            self.pid
        ))
    }
}

/// A namespace kind compared with the daemon's own.
#[derive(Clone, Copy)]
pub(super) enum Namespace {
    Mount,
    User,
}

impl Namespace {
    fn name(self) -> &'static str {
        match self {
            Self::Mount => "mnt",
            Self::User => "user",
        }
    }

    /// The daemon's own (device, inode) of this namespace, kept once read: the daemon never
    /// changes its namespaces. `None` while unreadable (e.g. out of fds; then no process counts
    /// as sharing it: fail closed), and read again next time.
    fn ours(self) -> Option<(u64, u64)> {
        static OURS: [std::sync::OnceLock<(u64, u64)>; 2] = [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let cell = &OURS[self as usize];
        if let Some(ours) = cell.get() {
            return Some(*ours);
        }
        let m = std::fs::metadata(format!("/proc/self/ns/{}", self.name())).ok()?;
        Some(*cell.get_or_init(|| (m.dev(), m.ino())))
    }
}
