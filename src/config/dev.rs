//! The built-in default for newcomers: `tessera run` with no config. A dev trust domain, a socket
//! and data dir in per-user locations, and one entry giving the invoking user's processes an identity.

use crate::config::Config;
use crate::registry::{Entry, Registry};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevModeError {
    #[error(transparent)]
    Id(#[from] crate::spiffe_id::SpiffeIdError),
    #[error(
        "dev-mode socket directory {dir} {problem}: another user could replace the socket and receive \
         what clients send to it. Remove the directory (it is created 0700), set XDG_RUNTIME_DIR, or run \
         with --config"
    )]
    UnsafeDir { dir: PathBuf, problem: String },
    #[error("cannot create the dev-mode socket directory {dir}: {source}")]
    Create { dir: PathBuf, source: std::io::Error },
}

pub const DEV_TRUST_DOMAIN: &str = "tessera.dev";

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `$XDG_RUNTIME_DIR/tessera/api.sock`, else `/tmp/tessera-<uid>/api.sock`.
pub fn socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("tessera/api.sock"),
        None => PathBuf::from(format!("/tmp/tessera-{}/api.sock", uid())),
    }
}

/// Check that `dir` is a directory (not a symlink) owned by our uid and writable by no one else.
pub fn check_socket_dir(dir: &Path) -> Result<(), DevModeError> {
    let unsafe_dir = |problem: String| DevModeError::UnsafeDir { dir: dir.to_owned(), problem };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| unsafe_dir(format!("cannot be examined ({e})")))?;
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory (a symlink?)".into()));
    }
    if meta.uid() != uid() {
        return Err(unsafe_dir(format!("is owned by uid {}, not by you (uid {})", meta.uid(), uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!("is writable by group or others (mode {:04o})", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// The socket directory, created 0700 if absent, else checked like `check_socket_dir`. Never
/// chmods a directory it did not create: a directory someone else made is refused, not adopted.
pub fn prepare_socket_dir(dir: &Path) -> Result<(), DevModeError> {
    // Missing parents (an XDG_RUNTIME_DIR not yet created) are made private too.
    if let Some(parent) = dir.parent()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| DevModeError::Create { dir: parent.to_owned(), source })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(DevModeError::Create { dir: dir.to_owned(), source }),
    }
    check_socket_dir(dir)
}

/// `$XDG_STATE_HOME/tessera`, else `~/.local/state/tessera`, else next to the socket.
pub fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("tessera");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/tessera");
    }
    PathBuf::from(format!("/tmp/tessera-{}/data", uid()))
}

/// The dev-mode config for the invoking user; its socket directory is prepared and checked.
pub fn config() -> Result<Config, DevModeError> {
    let uid = uid();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        .unwrap_or_else(|| format!("uid-{uid}"));
    let spiffe_id = format!("spiffe://{DEV_TRUST_DOMAIN}/user/{user}");
    let socket_path = socket_path();
    if let Some(dir) = socket_path.parent() {
        prepare_socket_dir(dir)?;
    }
    let data_dir = data_dir();
    let entry = Entry {
        spiffe_id: spiffe_id.parse()?,
        selectors: [tessera_attestors::Selector::new(tessera_attestors::Kind::Unix, format!("uid:{uid}"))].into(),
        x509_svid_ttl: Duration::from_secs(600),
        jwt_svid_ttl: Duration::from_secs(300),
        dns_names: vec![],
        hint: Some("dev".into()),
        federates_with: vec![],
        owner: None,
        metadata: Default::default(),
        retired: false,
        delegation: None,
    };
    Ok(Config {
        source: None,
        trust_domain: DEV_TRUST_DOMAIN.parse()?,
        admin_socket_path: super::beside(&socket_path, "admin.sock"),
        admin_socket_group: None,
        socket_path,
        socket_mode: 0o700,
        audit_log: data_dir.join("audit.log"),
        audit: Default::default(),
        data_dir,
        jwt_issuer: None,
        delegation: None,
        ca_ttl: Duration::from_secs(7 * 86400),
        upstream: None,
        reattest_interval: Duration::from_secs(30),
        federation: vec![],
        oidc: None,
        bundle_endpoint: None,
        attest: Default::default(),
        registry: Registry::new(vec![entry]),
        deny: Vec::new(),
        warnings: Vec::new(),
        dev_mode: true,
        telemetry: Default::default(),
        spire: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn socket_dir_is_created_private_or_refused_when_unsafe() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("run/fresh");
        prepare_socket_dir(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);

        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare_socket_dir(&open).unwrap_err().to_string();
        assert!(err.contains("writable by group or others (mode 0777)"), "{err}");
        assert_eq!(std::fs::metadata(&open).unwrap().permissions().mode() & 0o777, 0o777, "never chmodded");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(prepare_socket_dir(&link).unwrap_err().to_string().contains("not a directory"));

        if uid() == 0 {
            let foreign = tmp.path().join("foreign");
            std::fs::create_dir(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
            let err = prepare_socket_dir(&foreign).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
        }
    }
}
