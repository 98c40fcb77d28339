//! `tessera export oidc DIR`: the discovery document and JWKS as files, for static hosting
//! (object storage, any web server), fetched from the running daemon's admin socket; with
//! delegation on, the delegated-token issuer's two documents too, under `DIR/delegation/`.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

/// Write `DIR/.well-known/openid-configuration` and `DIR/keys` (and, with delegation on,
/// `DIR/delegation/.well-known/openid-configuration` and `DIR/delegation/keys`); returns what to
/// tell the operator.
pub(super) async fn oidc(admin_socket: &Path, dir: &Path) -> Result<String> {
    let (status, body) =
        crate::net::http::client::request(admin_socket, http::Method::GET, "/oidc", None, Duration::from_secs(10))
            .await
            .with_context(|| format!("asking the daemon at {}", admin_socket.display()))?;
    if !status.is_success() {
        bail!("the daemon answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body).context("the daemon's answer is not JSON")?;
    let Some(discovery) = answer.get("discovery").filter(|d| !d.is_null()) else {
        bail!("jwt_issuer is not set in the daemon's config: set it to the HTTPS URL the documents will be served at");
    };
    let write = |path: &Path, v: &serde_json::Value| -> Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let bytes = serde_json::to_vec_pretty(v)?;
        crate::storage::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        // Public documents: readable by the web server.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    };
    let mut wrote = Vec::new();
    let mut write_pair = |base: &Path, discovery: &serde_json::Value, jwks: &serde_json::Value| -> Result<()> {
        write(&base.join(".well-known/openid-configuration"), discovery)?;
        write(&base.join("keys"), jwks)?;
        wrote.push(format!("{0}/.well-known/openid-configuration and {0}/keys", base.display()));
        Ok(())
    };
    write_pair(dir, discovery, &answer["jwks"])?;
    if let Some(d) = answer.get("delegation").filter(|d| !d.is_null()) {
        write_pair(&dir.join("delegation"), &d["discovery"], &d["jwks"])?;
    }
    let wrote = wrote.join(", ");
    let next = answer.get("next_publication").and_then(serde_json::Value::as_u64);
    Ok(match next {
        Some(t) => format!(
            "wrote {wrote}; the next key is published at {} (unix {t}): \
             re-run then, before it starts signing a tenth of the CA TTL later",
            humantime_utc(t)
        ),
        None => format!("wrote {wrote}"),
    })
}

fn humantime_utc(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("unix {unix}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::humantime_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::humantime_utc(1_796_000_000), "2026-11-30T00:53:20Z");
    }
}
