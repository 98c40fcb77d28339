//! The process's executable, root directory and cwd, and the daemon-visible path of a file the
//! process sees.

use super::ProcessHandle;
use rustix::fs::OFlags;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

impl ProcessHandle {
    /// The executable the kernel mapped, opened through the `/proc/PID/exe` magic link (the
    /// inode itself: a replaced or deleted binary is still the one running).
    pub(crate) fn open_exe(&self) -> Result<File, String> {
        self.proc_dir.open_relative("exe").map_err(|e| e.to_string())
    }

    /// `readlink /proc/PID/exe`, as the daemon sees the path.
    pub(crate) fn exe_link(&self) -> Result<PathBuf, String> {
        self.exe_link.get_or_init(|| self.proc_dir.exe().map_err(|e| e.to_string())).clone()
    }

    /// An `O_PATH` dirfd of the process's root directory (`/proc/PID/root`).
    pub(crate) fn root_dir(&self) -> Result<OwnedFd, String> {
        self.proc_dir
            .open_relative_flags("root", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)
            .map(OwnedFd::from)
            .map_err(|e| e.to_string())
    }

    /// The process's cwd as a path inside its own root (for resolving relative script paths).
    pub(crate) fn cwd_in_root(&self) -> Result<PathBuf, String> {
        let cwd = self.proc_dir.cwd().map_err(|e| e.to_string())?;
        let root = self.proc_dir.root().map_err(|e| e.to_string())?;
        // Both links are rendered relative to the daemon's root; for a chrooted process the
        // cwd link starts with the root link. In another mount namespace both are rendered
        // from that namespace's root, so root is "/".
        let rel = cwd
            .strip_prefix(&root)
            .map_err(|_| format!("cwd {} is outside the process root {}", cwd.display(), root.display()))?;
        Ok(Path::new("/").join(rel))
    }

    /// A daemon-visible path for a file the process sees at `in_root` (for file watching):
    /// the same path when the process shares our mount namespace and root, the host path under
    /// its chroot, else `/proc/PID/root/...` (valid while the process lives).
    pub(crate) fn host_path(&self, in_root: &Path) -> PathBuf {
        let rel = in_root.strip_prefix("/").unwrap_or(in_root);
        if self.same_mount_ns()
            && let Ok(root) = self.proc_dir.root()
        {
            return root.join(rel);
        }
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(rel)
    }

    /// The exe path for file watching, same rules as [`Self::host_path`].
    pub(crate) fn exe_host_path(&self, link: &Path) -> PathBuf {
        if self.same_mount_ns() { link.to_path_buf() } else { self.host_path(link) }
    }

    /// Whether the executable the process runs lives on a local file system (see
    /// [`crate::local_fs`]).
    pub fn exe_on_local_fs(&self) -> bool {
        self.open_exe().ok().and_then(|f| rustix::fs::fstatfs(&f).ok()).is_some_and(|s| crate::local_fs::is_local(&s))
    }
}
