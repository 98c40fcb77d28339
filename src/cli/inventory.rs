//! `tessera inventory`: the live inventory from the admin socket (and the request helper the
//! other admin commands share).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One request to the admin socket; a non-2xx answer becomes an error with the daemon's message.
pub(crate) fn call(socket: &Path, method: http::Method, path: &str, body: Option<Value>) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap_or_default()));
    let answer = rt.block_on(crate::http::client::request(socket, method, path, body, TIMEOUT));
    if let Err(crate::http::client::ClientError::Connect { source, .. }) = &answer
        && source.kind() == std::io::ErrorKind::PermissionDenied
    {
        bail!(
            "permission denied on the admin socket {}: it serves only root, the daemon's user and \
             admin_socket_group",
            socket.display()
        );
    }
    let (status, bytes) = answer.with_context(|| format!("admin socket {}", socket.display()))?;
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    if !status.is_success() {
        let message =
            value.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| value.to_string());
        bail!("{} ({status})", message);
    }
    Ok(value)
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

/// `tessera inventory [--json] [--refusals N]`.
pub fn inventory(socket: &Path, json: bool, refusals: usize) -> Result<()> {
    let doc = call(socket, http::Method::GET, &format!("/inventory?refusals={refusals}"), None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    print!("{}", render(&doc));
    Ok(())
}

/// The text form of the inventory document.
pub fn render(doc: &Value) -> String {
    let empty = Vec::new();
    let list = |k: &str| doc.get(k).and_then(Value::as_array).unwrap_or(&empty).clone();
    let mut out = String::new();
    let entries = list("entries");
    out += &format!("ENTRIES ({})\n", entries.len());
    for e in &entries {
        let revoked: Vec<String> = e["revoked_by"].as_array().unwrap_or(&empty).iter().map(s).collect();
        out += &format!(
            "  {:<8} {}  owner={}{}\n",
            s(&e["status"]),
            s(&e["spiffe_id"]),
            s(&e["owner"]),
            if revoked.is_empty() { String::new() } else { format!("  REVOKED by {}", revoked.join(",")) }
        );
        if let Some(m) = e["metadata"].as_object().filter(|m| !m.is_empty()) {
            let kv: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
            out += &format!("           metadata: {}\n", kv.join(" "));
        }
    }
    let workloads = list("workloads");
    out += &format!("\nWORKLOADS ({})\n", workloads.len());
    for w in &workloads {
        out += &format!(
            "  pid {} uid {} started {} connected since {}\n    exe {} sha256:{}\n",
            s(&w["pid"]),
            s(&w["uid"]),
            time(&w["start_time"]),
            time(&w["connected_since"]),
            s(&w["exe"]["path"]),
            s(&w["exe"]["sha256"]),
        );
        if !w["script"].is_null() {
            out += &format!("    script {}\n", s(&w["script"]));
        }
        for h in w["identities"].as_array().unwrap_or(&empty) {
            let id = if h["kind"] == "x509" {
                format!("serial {}", s(&h["serial"]))
            } else {
                format!("kid {}", s(&h["kid"]))
            };
            out += &format!(
                "    {:<4} {}  {id}  expires {}  owner={}  {}\n",
                s(&h["kind"]),
                s(&h["spiffe_id"]),
                time(&h["expires_at"]),
                s(&h["owner"]),
                s(&h["status"]),
            );
        }
    }
    let refusals = list("refusals");
    out += &format!("\nRECENT REFUSALS ({})\n", refusals.len());
    for r in &refusals {
        out += &format!(
            "  {} pid {} uid {} exe {}: {}\n",
            time(&r["time"]),
            s(&r["pid"]),
            s(&r["uid"]),
            s(&r["exe"]["path"]),
            s(&r["reason"]),
        );
    }
    let revocations = list("revocations");
    if !revocations.is_empty() {
        out += &format!("\nREVOCATIONS ({})\n", revocations.len());
        for r in &revocations {
            out += &format!("  {}\n", super::revoke::revocation_line(r));
        }
    }
    out
}
