//! `tessera inventory`: the live inventory from the admin socket.

use super::admin_client::{call, s, time};
use anyhow::Result;
use serde_json::Value;
use std::path::Path;

/// `tessera inventory [--json] [--refusals N]`.
pub(super) fn inventory(socket: &Path, json: bool, refusals: usize) -> Result<()> {
    let doc = call(socket, http::Method::GET, &format!("/inventory?refusals={refusals}"), None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    print!("{}", render(&doc));
    Ok(())
}

/// The text form of the inventory document.
pub(super) fn render(doc: &Value) -> String {
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
    let grants = list("grants");
    out += &format!("\nGRANTS ({})\n", grants.len());
    for g in &grants {
        let chain: Vec<String> = g["act_chain"].as_array().unwrap_or(&empty).iter().map(s).collect();
        let scope: Vec<String> = g["scope"].as_array().unwrap_or(&empty).iter().map(s).collect();
        out += &format!(
            "  jti {}  user {}  agent {} (pid {})  expires {}\n    act {}  scope \"{}\"  aud {}\n",
            s(&g["jti"]),
            s(&g["user"]),
            s(&g["agent"]),
            s(&g["pid"]),
            time(&g["expires_at"]),
            chain.join(" <- "),
            scope.join(" "),
            s(&g["audience"]),
        );
        if !g["authorization_details"].is_null() {
            out += &format!("    authorization_details {}\n", g["authorization_details"]);
        }
        if !g["approval"].is_null() {
            out += &format!(
                "    approved by {} at {}\n",
                s(&g["approval"]["approver"]),
                time(&g["approval"]["approved_at"])
            );
        }
    }
    if let Some(gw) = doc.get("gateway").and_then(Value::as_object).filter(|g| !g.is_empty()) {
        out += &format!("\nGATEWAY ({} agents)\n", gw.len());
        for (agent, u) in gw {
            let routes: Vec<String> = u["routes"]
                .as_object()
                .map(|r| r.iter().map(|(k, v)| format!("{k}×{}", s(v))).collect())
                .unwrap_or_default();
            out += &format!("  {agent}  routes: {}  denied: {}\n", routes.join(", "), s(&u["denied"]));
            let l = &u["last_call"];
            if !l.is_null() {
                out += &format!(
                    "    last call {} pid {} {} {}{} -> {} ({})\n",
                    time(&l["time"]),
                    s(&l["pid"]),
                    s(&l["method"]),
                    s(&l["host"]),
                    s(&l["path"]),
                    s(&l["status"]),
                    s(&l["decision"]),
                );
            }
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
            out += &format!("  {}\n", super::admin_client::revocation_line(r));
        }
    }
    let unmanaged = list("unmanaged");
    if !unmanaged.is_empty() {
        out += &format!("\nUNMANAGED ({}, no identity; keys by name only)\n", unmanaged.len());
        for u in &unmanaged {
            let names = |k: &str| u[k].as_array().unwrap_or(&empty).iter().map(s).collect::<Vec<_>>().join(", ");
            out += &format!(
                "  pid {} uid {} {}  looks like: {}\n",
                s(&u["pid"]),
                s(&u["uid"]),
                s(&u["exe"]),
                names("signatures")
            );
            if !names("secret_env").is_empty() {
                out += &format!("    key-like environment variables: {}\n", names("secret_env"));
            }
            let refused = u["refusals"].as_array().map_or(0, Vec::len);
            if refused > 0 {
                out += &format!("    refused {refused} time(s) (see REFUSALS, pid {})\n", s(&u["pid"]));
            }
        }
    }
    out
}
