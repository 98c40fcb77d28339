//! The built-in default for newcomers: `tessera run` with no config. A dev trust domain, a socket
//! and data dir in per-user locations, and one entry giving the invoking user's processes an identity.

use crate::config::Config;
use crate::registry::{Entry, Registry};
use std::path::PathBuf;
use std::time::Duration;

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

/// The dev-mode config for the invoking user.
pub fn config() -> Result<Config, crate::spiffe_id::SpiffeIdError> {
    let uid = uid();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        .unwrap_or_else(|| format!("uid-{uid}"));
    let spiffe_id = format!("spiffe://{DEV_TRUST_DOMAIN}/user/{user}");
    let data_dir = data_dir();
    let entry = Entry {
        spiffe_id: spiffe_id.parse()?,
        selectors: [tessera_attestors::Selector::new(tessera_attestors::Kind::Unix, format!("uid:{uid}"))].into(),
        x509_svid_ttl: Duration::from_secs(600),
        jwt_svid_ttl: Duration::from_secs(300),
        dns_names: vec![],
        hint: Some("dev".into()),
        federates_with: vec![],
    };
    Ok(Config {
        source: None,
        trust_domain: DEV_TRUST_DOMAIN.parse()?,
        socket_path: socket_path(),
        socket_mode: 0o700,
        audit_log: data_dir.join("audit.log"),
        data_dir,
        jwt_issuer: None,
        ca_ttl: Duration::from_secs(7 * 86400),
        upstream: None,
        reattest_interval: Duration::from_secs(30),
        federation: vec![],
        attest: Default::default(),
        registry: Registry::new(vec![entry]),
        dev_mode: true,
    })
}
