//! The Unix socket: taking over a stale socket file, refusing to start beside a live daemon, and
//! opening it to every local user by default (attestation, not file modes, decides who gets what).

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EndpointError {
    #[error("another tessera (or other server) is already serving on {0}; stop it or choose another socket_path")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it (remove it or choose another socket_path)")]
    NotASocket(PathBuf),
    #[error("cannot prepare socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// `InUse` when a server answers on `path` (nothing is created or removed here).
pub(crate) fn ensure_free(path: &Path) -> Result<(), EndpointError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_ok() => {
            Err(EndpointError::InUse(path.to_owned()))
        }
        _ => Ok(()),
    }
}

pub(crate) fn bind(path: &Path, mode: u32) -> Result<UnixListener, EndpointError> {
    let io_err = |source| EndpointError::Io { path: path.to_owned(), source };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(EndpointError::NotASocket(path.to_owned()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(EndpointError::InUse(path.to_owned()));
            }
            // Nobody answers: a stale socket from a daemon that did not shut down cleanly.
            tracing::info!(path = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    Ok(listener)
}

/// Parse a Workload API address: `unix:///abs/path`, `unix:/abs/path` or a bare path.
pub(crate) fn socket_from_address(addr: &str) -> Result<PathBuf, String> {
    let path = if let Some(rest) = addr.strip_prefix("unix://") {
        if !rest.starts_with('/') {
            return Err(format!("{addr:?}: a unix address has no authority; write unix:///absolute/path"));
        }
        rest
    } else if let Some(rest) = addr.strip_prefix("unix:") {
        rest
    } else if addr.contains("://") {
        return Err(format!("{addr:?}: only unix sockets are supported (unix:///path)"));
    } else {
        addr
    };
    if path.is_empty() {
        return Err(format!("{addr:?}: no socket path"));
    }
    Ok(PathBuf::from(path))
}
