//! What the admin commands share: one request to the admin socket, and how its answers' values
//! are shown.

use anyhow::{Result, bail};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One request to the admin socket; a non-2xx answer becomes an error with the daemon's message.
pub(crate) fn call(socket: &Path, method: http::Method, path: &str, body: Option<Value>) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap_or_default()));
    let answer = rt.block_on(crate::net::http::client::request(socket, method, path, body, TIMEOUT));
    if let Err(crate::net::http::client::ClientError::Connect { source, .. }) = &answer
        && source.kind() == std::io::ErrorKind::PermissionDenied
    {
        bail!(
            "permission denied on the admin socket {}: it serves only root, the daemon's user and \
             admin_socket_group",
            socket.display()
        );
    }
    let (status, bytes) = answer.map_err(|e| unreachable(socket, e))?;
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    if !status.is_success() {
        let message =
            value.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
        bail!("{} ({status})", message);
    }
    Ok(value)
}

/// The error for an admin socket that cannot be reached: the OS error once, and where else to look.
pub(crate) fn unreachable(socket: &Path, e: crate::net::http::client::ClientError) -> anyhow::Error {
    use crate::net::http::client::ClientError;
    match e {
        ClientError::Connect { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
        {
            anyhow::anyhow!(
                "cannot reach the admin socket {} ({source}): is tessera running? If its admin socket is \
                 elsewhere, pass --admin-socket PATH or --config FILE (its admin_socket_path), or set \
                 TESSERA_ADMIN_SOCKET",
                socket.display()
            )
        }
        other => anyhow::anyhow!("admin socket {}: {other}", socket.display()),
    }
}

pub(crate) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn time(v: &Value) -> String {
    v.as_u64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// `ID  selector S | spiffe_id ID  reason  (source)`.
pub(crate) fn revocation_line(r: &Value) -> String {
    let what = if r["selector"].is_string() {
        format!("selector {}", s(&r["selector"]))
    } else {
        format!("spiffe_id {}", s(&r["spiffe_id"]))
    };
    let source = match r["source"].as_str() {
        Some("runtime") => format!("revoked by uid {} at {}", s(&r["by_uid"]), time(&r["at"])),
        _ => "config [[deny]]".to_owned(),
    };
    format!("{}\t{what}\t{}\t({source})", s(&r["id"]), s(&r["reason"]))
}
