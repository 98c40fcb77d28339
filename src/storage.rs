//! Crash-safe files: private directories (0700) and atomic writes (temp file, fsync, rename,
//! fsync of the directory), so a `kill -9` at any moment leaves either the old or the new file.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Create `dir` (and parents) with mode 0700; tighten an existing one that is looser. A directory
/// owned by another uid is refused, never adopted or chmodded: its owner could swap our files.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = fs::metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is owned by uid {}, not by this process (uid {me}); chown it or choose another directory",
                dir.display(),
                std::os::unix::fs::MetadataExt::uid(&meta)
            ),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Distinguishes concurrent writers within one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The writer's temp file for `name`: `.NAME.tmp.PID.SEQ` (older versions wrote `.NAME.tmp.PID`).
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp.{}.{}", std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Whether `name` is one of the writer's temp names (either form), and the pid in it.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (stem, tail) = rest.rsplit_once(".tmp.")?;
    if stem.is_empty() {
        return None;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let pid = match tail.split_once('.') {
        Some((pid, seq)) if digits(pid) && digits(seq) => pid,
        None if digits(tail) => tail,
        _ => return None,
    };
    pid.parse().ok()
}

/// Atomically replace `path` with `data`, mode 0600. The temp file is created exclusively and
/// never through a symlink.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
    write_via(path, &dir.join(temp_name(&name.to_string_lossy())), data)
}

fn write_via(path: &Path, tmp: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let mut f =
        OpenOptions::new().write(true).create_new(true).custom_flags(libc_o_nofollow()).mode(0o600).open(tmp)?;
    let result = (|| {
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Remove the temp files a writer killed between create and rename left in `dir` (they may hold
/// copies of secrets, e.g. every CA key). Only regular files named like this writer's temp files,
/// never symlinks or directories, and never this process's own. Call it while holding the lock
/// that keeps other writers out of `dir`. Returns how many were removed.
pub(crate) fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let Some(pid) = temp_pid(&name) else { continue };
        // file_type() does not follow symlinks.
        if pid == std::process::id() || !entry.file_type()?.is_file() {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::warn!(file = %entry.path().display(), "removed a temp file left by an interrupted write");
                removed += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Free space under which the daemon warns: a full disk makes the CA's atomic writes (and so
/// its rotation) fail, and audit lines are lost.
pub(crate) const LOW_SPACE_BYTES: u64 = 64 << 20;
/// … or under this fraction of the filesystem, in per mille.
pub(crate) const LOW_SPACE_PER_MILLE: u64 = 10;
const SPACE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Available bytes and total bytes of the filesystem holding `path`.
pub(crate) fn free_space(path: &Path) -> io::Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let frag = st.fragment_size() as u64;
    Ok((st.blocks_available() as u64 * frag, st.blocks() as u64 * frag))
}

/// Whether (available, total) is low enough to warn about.
pub(crate) fn space_is_low(available: u64, total: u64) -> bool {
    available < LOW_SPACE_BYTES || available.saturating_mul(1000) < total.saturating_mul(LOW_SPACE_PER_MILLE)
}

/// Check the filesystems of `paths` now and every 30 s on a background thread; warn loudly when
/// one runs low (again every 10 minutes while it stays low), and say when it recovers.
pub(crate) fn watch_free_space(paths: Vec<std::path::PathBuf>) {
    let spawned = std::thread::Builder::new().name("free-space".into()).spawn(move || {
        let mut low_since: Vec<Option<std::time::Instant>> = vec![None; paths.len()];
        loop {
            for (path, low) in paths.iter().zip(low_since.iter_mut()) {
                let Ok((available, total)) = free_space(path) else { continue };
                if space_is_low(available, total) {
                    if low.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(600)) {
                        tracing::error!(
                            path = %path.display(),
                            available_bytes = available,
                            total_bytes = total,
                            "LOW DISK SPACE: CA state writes (rotation) and audit lines will fail when it is full; \
                             free space now"
                        );
                        *low = Some(std::time::Instant::now());
                    }
                } else if low.take().is_some() {
                    tracing::info!(path = %path.display(), available_bytes = available, "disk space recovered");
                }
            }
            std::thread::sleep(SPACE_CHECK_EVERY);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the free-space check");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_replacement() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let f = dir.join("k");
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temp files left behind");
        if nix::unistd::geteuid().is_root() {
            let foreign = tmp.path().join("foreign");
            fs::create_dir(&foreign).unwrap();
            fs::set_permissions(&foreign, fs::Permissions::from_mode(0o777)).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            let err = private_dir(&foreign).unwrap_err();
            assert!(err.to_string().contains("owned by uid 65534"), "{err}");
            assert_eq!(fs::metadata(&foreign).unwrap().permissions().mode() & 0o777, 0o777, "not chmodded");
        }
    }

    #[test]
    fn free_space_thresholds() {
        let (available, total) = free_space(Path::new("/")).unwrap();
        assert!(total > 0 && available <= total);
        assert!(space_is_low(LOW_SPACE_BYTES - 1, 1 << 40));
        assert!(space_is_low(5 << 30, 1 << 40), "5 GiB of 1 TiB is under 1 %");
        assert!(!space_is_low(20 << 30, 1 << 40));
        assert!(!space_is_low(LOW_SPACE_BYTES, LOW_SPACE_BYTES * 2));
    }

    #[test]
    fn stale_temp_files_are_removed_and_nothing_else() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let outside = dir.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"keep").unwrap();
        for stale in [".ca.json.tmp.4242", ".ca.json.tmp.4242.7", ".trust_domain.tmp.1.0"] {
            fs::write(dir.join(stale), b"{\"keys\": \"secret\"}").unwrap();
        }
        let keep = ["ca.json", ".ca.json.tmp.", ".ca.json.tmp.12x", ".tmp.12", "x.tmp.12", ".ca.json.tmp.1.2.3"];
        for k in keep {
            fs::write(dir.join(k), b"keep").unwrap();
        }
        symlink(outside.join("precious"), dir.join(".link.tmp.99")).unwrap();
        fs::create_dir(dir.join(".dir.tmp.98")).unwrap();
        let own = format!(".ours.tmp.{}.0", std::process::id());
        fs::write(dir.join(&own), b"in flight").unwrap();

        assert_eq!(remove_stale_temps(dir).unwrap(), 3);
        let mut left: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        want.extend([".dir.tmp.98".into(), ".link.tmp.99".into(), own, "outside".into()]);
        want.sort();
        assert_eq!(left, want);
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep", "a symlink is never followed");
    }

    #[test]
    fn temp_files_are_exclusive_private_and_never_follow_symlinks() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("victim");
        fs::write(&target, b"untouched").unwrap();
        // A symlink planted at the temp name.
        let f = tmp.path().join("k");
        let planted = tmp.path().join(".k.tmp.1.0");
        symlink(&target, &planted).unwrap();
        let err = write_via(&f, &planted, b"secret").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"untouched");
        assert!(!f.exists());
    }
}
