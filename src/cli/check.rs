//! `tessera check`: beyond the errors `Config::load` reports, warn about weak entries.

use crate::config::Config;
use tessera_attestors::Strength;

/// Entries made only of selectors that a process of the same uid could forge.
pub fn weak_only_entries(cfg: &Config) -> Vec<String> {
    cfg.registry
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.selectors.iter().all(|s| s.strength() == Strength::Weak))
        .map(|(i, e)| {
            format!(
                "entries[{i}] ({}) uses only weak selectors, which a process of the same uid can forge; \
                 add a kernel-backed one such as unix:uid, unix:sha256 or systemd:id",
                e.spiffe_id
            )
        })
        .collect()
}
