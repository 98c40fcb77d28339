//! Opening files *inside a process's root* (`/proc/PID/root`) without escaping it.
//!
//! A plain `open("/proc/PID/root/etc/x")` resolves an absolute symlink at `etc/x` against the
//! **daemon's** root, which lets a workload point us at any host file. `openat2(2)` fixes that:
//! - [`Resolve::InRoot`] (`RESOLVE_IN_ROOT`): symlinks resolve as the process itself would see
//!   them, clamped at its root (used for scripts: `/usr/local/bin/agent -> /opt/agent/main.py`
//!   is normal);
//! - [`Resolve::Beneath`] (`RESOLVE_BENEATH`): any absolute symlink or `..` that climbs above the
//!   root is refused outright (used for config files: "never follow a link out of that root").
//!
//! Both add `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd/N`-style jumps) and open with `O_NONBLOCK`
//! so a FIFO planted at the path cannot hang the daemon; non-regular files are refused.

use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolve {
    InRoot,
    Beneath,
}

/// Opens `path` (absolute, as the process sees it) relative to the process root `root`.
pub(crate) fn open_in_root(root: &OwnedFd, path: &Path, how: Resolve) -> Result<File, String> {
    let rel = path.strip_prefix("/").map_err(|_| format!("{} is not an absolute path", path.display()))?;
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let resolve = ResolveFlags::NO_MAGICLINKS
        | match how {
            Resolve::InRoot => ResolveFlags::IN_ROOT,
            Resolve::Beneath => ResolveFlags::BENEATH,
        };
    let fd = openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        resolve,
    )
    .map_err(|e| match e {
        rustix::io::Errno::XDEV => format!(
            "{} resolves through a symlink that leaves the process root (absolute or ..); refused",
            path.display()
        ),
        rustix::io::Errno::NOSYS => "openat2 is not available on this kernel (< 5.6)".to_owned(),
        e => format!("{}: {}", path.display(), std::io::Error::from(e)),
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(file)
}
