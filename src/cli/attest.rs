//! `tessera attest PID`: the selectors of a running process, by attestor, with their strength,
//! so an operator can write an entry from them.

use anyhow::{Context, Result};
use serde_json::json;
use tessera_attestors::{AttestConfig, Attestor, ProcessHandle, Strength};

pub(super) fn run(pid: i32, config: AttestConfig, as_json: bool) -> Result<()> {
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

/// `tessera attest PID --spire`: the process's selectors as a ready-to-paste
/// `spire-server entry create` command (kernel-backed identity first), the rest listed below it.
pub(super) fn run_spire(pid: i32, config: AttestConfig, trust_domain: Option<&str>) -> Result<()> {
    let attestor = Attestor::new(AttestConfig { want_exe_digest: true, want_script_digest: true, ..config });
    let handle = ProcessHandle::open(pid).with_context(|| format!("cannot pin process {pid}"))?;
    let att = attestor.attest(&handle).with_context(|| format!("cannot attest process {pid}"))?;
    let all: Vec<&tessera_attestors::Selector> = att.reports.iter().flat_map(|r| r.selectors.iter()).collect();
    print!("{}", spire_command(&all, trust_domain.unwrap_or("example.org")));
    Ok(())
}

/// The command text: uid, then the most specific code identity (script digest, else executable
/// digest, else path), then config digests; every other selector as a commented `-selector` line.
pub(super) fn spire_command(selectors: &[&tessera_attestors::Selector], td: &str) -> String {
    let find = |prefix: &str| selectors.iter().copied().find(|s| s.to_string().starts_with(prefix));
    let mut chosen: Vec<&tessera_attestors::Selector> = Vec::new();
    chosen.extend(find("unix:uid:"));
    if let Some(s) = find("script:sha256:") {
        chosen.push(s);
    } else if let Some(s) = find("unix:sha256:").or_else(|| find("unix:path:")) {
        chosen.push(s);
    }
    chosen.extend(selectors.iter().copied().filter(|s| s.to_string().starts_with("config:sha256:")));
    let mut out = format!(
        "spire-server entry create \\\n    -parentID spiffe://{td}/node/NODE_ALIAS \\\n    -spiffeID spiffe://{td}/WORKLOAD"
    );
    for s in &chosen {
        out.push_str(&format!(" \\\n    -selector {}", shell_word(&s.to_string())));
    }
    out.push('\n');
    let rest: Vec<_> = selectors.iter().filter(|s| !chosen.contains(s)).collect();
    if !rest.is_empty() {
        out.push_str(
            "# Other selectors of this process (add any with -selector; weak ones only beside kernel-backed):\n",
        );
        for s in rest {
            let strength = match s.strength() {
                Strength::Kernel => "kernel-backed",
                Strength::Weak => "weak",
            };
            out.push_str(&format!("#   -selector {}   ({strength})\n", shell_word(&s.to_string())));
        }
    }
    out
}

/// Quote for a POSIX shell when needed.
fn shell_word(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/=@%+,".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spire_command_prefers_script_digest_and_quotes() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let sels: Vec<tessera_attestors::Selector> = [
            "unix:uid:1000".to_owned(),
            format!("unix:sha256:{a}"),
            format!("script:sha256:{b}"),
            "env:NAME:a b".into(),
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let refs: Vec<_> = sels.iter().collect();
        let out = spire_command(&refs, "example.test");
        assert!(out.contains(&format!("-selector unix:uid:1000 \\\n    -selector script:sha256:{b}\n")), "{out}");
        assert!(out.contains(&format!("#   -selector unix:sha256:{a}   (kernel-backed)")), "{out}");
        assert!(out.contains("-selector 'env:NAME:a b'"), "{out}");
        assert!(out.starts_with("spire-server entry create \\\n    -parentID spiffe://example.test/"), "{out}");
    }
}
