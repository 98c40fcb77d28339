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
//! Both add `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd/N`-style jumps). The caller names the path
//! (argv, entries), so the daemon, running as root, must never *open* a device node or a FIFO
//! there: opening a device can have side effects (a tape rewinds, a modem hangs up) and
//! opening a FIFO wakes its writer (or blocks). So the path is first resolved with `O_PATH`,
//! which opens nothing, the resulting inode is checked with `fstat`, and only a regular file is
//! then reopened for reading through `/proc/self/fd/N` (the very inode checked, whatever the
//! path points to by now), non-blocking.

use rustix::fs::{Mode, OFlags, ResolveFlags, fstat, openat2};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolve {
    InRoot,
    Beneath,
}

/// Opens `path` (absolute, as the process sees it) relative to the process root `root`, for
/// reading; refuses anything but a regular file without opening it.
pub(crate) fn open_in_root(root: &OwnedFd, path: &Path, how: Resolve) -> Result<File, String> {
    let rel = path.strip_prefix("/").map_err(|_| format!("{} is not an absolute path", path.display()))?;
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let resolve = ResolveFlags::NO_MAGICLINKS
        | match how {
            Resolve::InRoot => ResolveFlags::IN_ROOT,
            Resolve::Beneath => ResolveFlags::BENEATH,
        };
    let located = openat2(root, rel, OFlags::PATH | OFlags::CLOEXEC, Mode::empty(), resolve).map_err(|e| match e {
        rustix::io::Errno::XDEV => format!(
            "{} resolves through a symlink that leaves the process root (absolute or ..); refused",
            path.display()
        ),
        rustix::io::Errno::NOSYS => "openat2 is not available on this kernel (< 5.6)".to_owned(),
        e => format!("{}: {}", path.display(), std::io::Error::from(e)),
    })?;
    let st = fstat(&located).map_err(|e| format!("{}: {}", path.display(), std::io::Error::from(e)))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(format!("{} is not a regular file; refused without opening it", path.display()));
    }
    reopen_for_reading(&located, st.st_dev, st.st_ino).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reopens an `O_PATH` fd for reading. `/proc/self/fd/N` is a magic link to the inode itself, so
/// no path is resolved again; the (dev, ino) comparison is a belt-and-braces check of that.
fn reopen_for_reading(located: &OwnedFd, dev: u64, ino: u64) -> Result<File, String> {
    let link = format!("/proc/self/fd/{}", located.as_raw_fd());
    let fd = rustix::fs::open(
        link.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| format!("reopening for reading: {}", std::io::Error::from(e)))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if meta.dev() != dev || meta.ino() != ino || !meta.file_type().is_file() {
        return Err("the file changed between lookup and open; refused".to_owned());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::mpsc;
    use std::time::Duration;

    fn root() -> OwnedFd {
        rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap()
    }

    /// Runs `f` on a thread and fails the test if it does not finish within 5 s (a FIFO open
    /// that blocks would otherwise hang the test run).
    fn within_timeout<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("open_in_root blocked")
    }

    #[test]
    fn reads_a_regular_file_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("real.py"), "print(1)\n").unwrap();
        std::os::unix::fs::symlink("real.py", dir.path().join("link.py")).unwrap();
        let mut s = String::new();
        open_in_root(&root(), &dir.path().join("link.py"), Resolve::InRoot).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "print(1)\n");
    }

    #[test]
    fn a_fifo_is_refused_and_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("script.py");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o666), 0).unwrap();
        // A writer blocks in open() until some reader opens the FIFO: if the attestor opened
        // it (even O_NONBLOCK), this writer would wake up.
        let (woke_tx, woke_rx) = mpsc::channel();
        let writer_path = fifo.clone();
        std::thread::spawn(move || {
            let w = std::fs::OpenOptions::new().write(true).open(&writer_path);
            let _ = woke_tx.send(w.is_ok());
        });
        for how in [Resolve::InRoot, Resolve::Beneath] {
            let p = fifo.clone();
            let err = within_timeout(move || open_in_root(&root(), &p, how).unwrap_err());
            assert!(err.contains("not a regular file"), "{err}");
        }
        assert!(woke_rx.recv_timeout(Duration::from_millis(300)).is_err(), "the FIFO was opened by the attestor");
        // Release the writer thread.
        let _reader = rustix::fs::open(&fifo, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap();
        assert_eq!(woke_rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    }

    #[test]
    fn char_devices_are_refused_directly_and_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("config.toml");
        // A fresh node for /dev/null's device number (1, 3): creating it needs root, as the daemon is.
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            &dev,
            rustix::fs::FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(1, 3),
        );
        let link = dir.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let mut paths = vec![link];
        if made.is_ok() {
            paths.push(dev);
        }
        for p in paths {
            for how in [Resolve::InRoot, Resolve::Beneath] {
                let q = p.clone();
                match within_timeout(move || open_in_root(&root(), &q, how)) {
                    Err(e) => assert!(
                        e.contains("not a regular file") || e.contains("leaves the process root"),
                        "{}: {e}",
                        p.display()
                    ),
                    Ok(_) => panic!("{} was opened", p.display()),
                }
            }
        }
    }
}
