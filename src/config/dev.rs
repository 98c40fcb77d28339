//! The built-in default for newcomers: `tessera run` with no config. A dev trust domain, a socket
//! and data dir in per-user locations, and one entry giving the invoking user's processes an identity.
//! It is config text validated like a file, so it has the same defaults and bounds.

use super::schema::RawConfig;
use super::{Config, ConfigError};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DevModeError {
    /// The built-in config failed validation (a user name the filter let through, say).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "dev-mode socket directory {dir} {problem}: another user could replace the socket and receive \
         what clients send to it. Remove the directory (it is created 0700), set XDG_RUNTIME_DIR, or run \
         with --config"
    )]
    UnsafeDir { dir: PathBuf, problem: String },
    #[error("cannot create the dev-mode socket directory {dir}: {source}")]
    Create { dir: PathBuf, source: std::io::Error },
}

pub(crate) const DEV_TRUST_DOMAIN: &str = "tessera.dev";

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `$XDG_RUNTIME_DIR/tessera/api.sock`, else `/tmp/tessera-<uid>/api.sock`.
pub(crate) fn socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("tessera/api.sock"),
        None => PathBuf::from(format!("/tmp/tessera-{}/api.sock", uid())),
    }
}

/// Check that `dir` is a directory (not a symlink) owned by our uid and writable by no one else.
pub(crate) fn check_socket_dir(dir: &Path) -> Result<(), DevModeError> {
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
pub(crate) fn prepare_socket_dir(dir: &Path) -> Result<(), DevModeError> {
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
pub(crate) fn data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("tessera");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(h).join(".local/state/tessera");
    }
    PathBuf::from(format!("/tmp/tessera-{}/data", uid()))
}

/// The dev-mode config for the invoking user; its socket directory is prepared and checked.
pub(crate) fn config() -> Result<Config, DevModeError> {
    let socket_path = socket_path();
    if let Some(dir) = socket_path.parent() {
        prepare_socket_dir(dir)?;
    }
    config_at(socket_path, data_dir())
}

/// The dev-mode config with the given socket and data dir (not prepared or checked): the
/// [`dev_toml`] text with the two paths, through the same validator as a config file, so it
/// carries the same defaults and bounds.
fn config_at(socket_path: PathBuf, data_dir: PathBuf) -> Result<Config, DevModeError> {
    let text = dev_toml(uid());
    let source = Path::new(DEV_SOURCE);
    let mut raw =
        RawConfig::from_toml(&text).map_err(|issue| ConfigError { file: source.into(), issues: vec![issue] })?;
    // Set here rather than written into the text: a path need not be UTF-8.
    (raw.socket_path, raw.data_dir) = (Some(socket_path), Some(data_dir));
    let mut cfg = Config::validate(&text, raw, source)?;
    cfg.source = None;
    cfg.dev_mode = true;
    // "entry has no owner" is advice for `tessera check`, which never sees the dev config.
    cfg.warnings.clear();
    Ok(cfg)
}

/// Names the dev config in (never expected) validation errors.
const DEV_SOURCE: &str = "(built-in dev-mode config)";

/// The dev setup as config text: the dev trust domain, a socket only the user can reach, and
/// one entry for the user's processes.
fn dev_toml(uid: u32) -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        .unwrap_or_else(|| format!("uid-{uid}"));
    format!(
        r#"trust_domain = "{DEV_TRUST_DOMAIN}"
socket_mode = "0700"

[[entries]]
spiffe_id = "spiffe://{DEV_TRUST_DOMAIN}/user/{user}"
selectors = ["unix:uid:{uid}"]
x509_svid_ttl = "600s"
jwt_svid_ttl = "300s"
hint = "dev"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Entry, Registry};
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    /// The config dev mode built by hand before it went through the validator.
    fn hand_built(socket_path: PathBuf, data_dir: PathBuf) -> Config {
        let uid = uid();
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
            .unwrap_or_else(|| format!("uid-{uid}"));
        let entry = Entry {
            spiffe_id: format!("spiffe://{DEV_TRUST_DOMAIN}/user/{user}").parse().unwrap(),
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
        Config {
            source: None,
            trust_domain: DEV_TRUST_DOMAIN.parse().unwrap(),
            admin_socket_path: crate::config::beside(&socket_path, "admin.sock"),
            admin_socket_group: None,
            socket_path,
            socket_mode: 0o700,
            audit_log: data_dir.join("audit.log"),
            audit: Default::default(),
            data_dir,
            jwt_issuer: None,
            delegation: None,
            approvals: None,
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
            gateway: None,
            policy: None,
            guards: Vec::new(),
            discovery: None,
        }
    }

    #[test]
    fn dev_config_is_validated_and_carries_the_validators_defaults() {
        let (sock, data) = (PathBuf::from("/run/user/1000/tessera/api.sock"), PathBuf::from("/home/u/.local/state/t"));
        let new = config_at(sock.clone(), data.clone()).unwrap();
        let old = hand_built(sock.clone(), data.clone());
        // The dev specifics, as before.
        assert_eq!(new.source, None);
        assert!(new.dev_mode);
        assert_eq!(new.trust_domain.to_string(), DEV_TRUST_DOMAIN);
        assert_eq!((&new.socket_path, new.socket_mode), (&sock, 0o700));
        assert_eq!(new.admin_socket_path, Path::new("/run/user/1000/tessera/admin.sock"));
        assert_eq!((&new.data_dir, &new.audit_log), (&data, &data.join("audit.log")));
        assert_eq!(new.registry.entries(), old.registry.entries());
        let entry = &new.registry.entries()[0];
        assert_eq!(entry.hint.as_deref(), Some("dev"));
        assert_eq!((entry.x509_svid_ttl, entry.jwt_svid_ttl), (Duration::from_secs(600), Duration::from_secs(300)));
        assert!(new.warnings.is_empty(), "{:?}", new.warnings);
        // Every other field the same as the hand-built config…
        assert_eq!(new.admin_socket_group, old.admin_socket_group);
        assert_eq!(new.audit, old.audit);
        assert_eq!((new.jwt_issuer.is_none(), new.delegation.is_none(), new.upstream.is_none()), (true, true, true));
        assert_eq!((new.ca_ttl, new.reattest_interval), (old.ca_ttl, old.reattest_interval));
        assert!(new.federation.is_empty() && new.deny.is_empty());
        assert!(new.oidc.is_none() && new.bundle_endpoint.is_none() && new.spire.is_none());
        assert_eq!(new.telemetry, old.telemetry);
        // …except the attestors, which now have the validator's bounds and hash only what an entry
        // asks for (the dev entry matches on the uid, no digest).
        assert_ne!(new.attest, old.attest);
        assert_eq!(old.attest.max_hash_size, None);
        assert_eq!(new.attest.max_hash_size, Some(crate::config::DEFAULT_MAX_HASH));
        assert_eq!(new.attest.max_script_hash_size, old.attest.max_script_hash_size);
        assert_eq!(new.attest.hash_budget_per_uid, old.attest.hash_budget_per_uid);
        assert!(!new.attest.want_exe_digest && !new.attest.want_script_digest);
        assert!(new.attest.env_allowlist.is_empty() && new.attest.config_paths.is_empty());
        // And a config file saying the same thing gives the same config.
        let file = Config::parse(&dev_toml(uid()), Path::new("/etc/tessera/dev.toml")).unwrap();
        assert_eq!(file.attest, new.attest);
        assert_eq!(file.registry.entries(), new.registry.entries());
    }

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
