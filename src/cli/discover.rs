//! `tessera discover [--json]`: processes that look like agents and hold no tessera identity
//! (docs/discovery.md). Runs as any user; what it cannot read is reported as such.

use super::admin_client::call;
use crate::discovery::{Scan, Settings, scan};
use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;

/// `[discovery]` of the config file, when one is given (the rest of the file is not read here).
fn settings(config: Option<&Path>) -> Result<Settings> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(default)]
        discovery: Settings,
    }
    let Some(path) = config else { return Ok(Settings::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let only: Only = toml::from_str(&text).with_context(|| format!("{}: [discovery]", path.display()))?;
    Ok(only.discovery)
}

/// The pids holding identities, from the daemon's inventory (`Err`: why it is not known).
fn managed(socket: &Path) -> Result<HashSet<i64>, String> {
    let doc = call(socket, http::Method::GET, "/inventory?refusals=0", None).map_err(|e| format!("{e:#}"))?;
    let pids =
        doc.get("workloads").and_then(Value::as_array).map(|w| w.iter().filter_map(|x| x["pid"].as_i64()).collect());
    pids.ok_or_else(|| "the inventory has no workloads list".into())
}

pub(super) fn discover(socket: &Path, config: Option<&Path>, json_out: bool) -> Result<()> {
    let settings = settings(config)?;
    let t0 = std::time::Instant::now();
    let Scan { processes, found } = scan(Path::new("/proc"), &settings.signatures, std::process::id().cast_signed());
    let took = t0.elapsed();
    let held = managed(socket);
    let unmanaged: Vec<_> =
        found.into_iter().filter(|f| held.as_ref().map_or(true, |h| !h.contains(&i64::from(f.pid)))).collect();
    if json_out {
        let doc = json!({
            "processes_scanned": processes,
            "scan_ms": took.as_secs_f64() * 1000.0,
            "identities_checked": held.is_ok(),
            "identities_unknown_reason": held.as_ref().err(),
            "unmanaged": unmanaged,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if let Err(why) = &held {
        println!("(daemon not reachable at {}: {why}; listing every agent-like process)", socket.display());
    }
    println!(
        "UNMANAGED ({} of {processes} processes, scanned in {:.1} ms)",
        unmanaged.len(),
        took.as_secs_f64() * 1000.0
    );
    for f in &unmanaged {
        let uid = f.uid.map_or_else(|| "?".into(), |u| u.to_string());
        let script = f.script.as_deref().map(|s| format!(" script={s}")).unwrap_or_default();
        println!("  pid {} uid {uid} {}{script}", f.pid, f.exe);
        if !f.signatures.is_empty() {
            println!("    looks like: {}", f.signatures.join(", "));
        }
        if !f.secret_env.is_empty() {
            println!("    key-like environment variables: {}", f.secret_env.join(", "));
        }
        if f.environ != "read" {
            println!("    environment: {}", f.environ);
        }
    }
    Ok(())
}
