//! `tessera attest PID`: the selectors of a running process, by attestor, with their strength,
//! so an operator can write an entry from them.

use anyhow::{Context, Result};
use serde_json::json;
use tessera_attestors::{AttestConfig, Attestor, ProcessHandle, Strength};

pub fn run(pid: i32, config: AttestConfig, as_json: bool) -> Result<()> {
    // Show every digest, even those no entry uses yet: the operator is writing entries.
    let attestor = Attestor::new(AttestConfig { want_exe_digest: true, want_script_digest: true, ..config });
    let handle = ProcessHandle::open(pid).with_context(|| format!("cannot pin process {pid}"))?;
    let att = attestor.attest(&handle).with_context(|| format!("cannot attest process {pid}"))?;
    let strength = |s: Strength| match s {
        Strength::Kernel => "kernel-backed",
        Strength::Weak => "weak (forgeable by a process of the same uid)",
    };
    if as_json {
        let reports: Vec<_> = att
            .reports
            .iter()
            .map(|r| {
                json!({
                    "attestor": r.attestor,
                    "error": r.error,
                    "selectors": r.selectors.iter().map(|s| json!({
                        "selector": s.to_string(),
                        "strength": match s.strength() { Strength::Kernel => "kernel", Strength::Weak => "weak" },
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "pid": att.pid, "attestors": reports }))?);
        return Ok(());
    }
    println!("Selectors of process {}:", att.pid);
    for r in &att.reports {
        println!("\n[{}]", r.attestor);
        match (&r.error, r.selectors.is_empty()) {
            (Some(e), true) => println!("  (nothing: {e})"),
            // Some selectors came, others were withheld or failed: say which and why.
            (Some(e), false) => println!("  (incomplete: {e})"),
            (None, _) => {}
        }
        for s in &r.selectors {
            println!("  {:<80} {}", s.to_string(), strength(s.strength()));
        }
    }
    println!(
        "\nAn entry applies when the process has all of its selectors. Combine weak selectors with \
         kernel-backed ones (uid, exe digest, cgroup)."
    );
    Ok(())
}
