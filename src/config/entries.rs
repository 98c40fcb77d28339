//! `[[entries]]`: each entry's identity, selectors, TTLs and names, then the checks across
//! entries (duplicates, `federates_with` without a `[[federation]]` block).

use super::schema::{RawConfig, RawEntry};
use super::sections::Durations;
use super::validator::Validator;
use super::{Federation, MAX_SVID_TTL};
use crate::registry::Entry;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;
use tessera_attestors::Selector;

impl Validator<'_> {
    /// The valid entries; an invalid one is reported and left out.
    pub(super) fn entries(
        &mut self,
        raw: &RawConfig,
        trust_domain: Option<&TrustDomain>,
        durations: &Durations,
        federation: &[Federation],
    ) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut seen: HashSet<(String, BTreeSet<Selector>)> = HashSet::new();
        for (i, raw_entry) in raw.entries.iter().enumerate() {
            let e = raw_entry.get_ref();
            let agent = self.agent_keys(i, e, raw_entry, raw.require_owner);
            if let Some(mut entry) = self.entry(i, e, trust_domain, durations.x509_svid_ttl, durations.jwt_svid_ttl) {
                (entry.owner, entry.metadata, entry.retired) = (agent.owner, agent.metadata, agent.retired);
                if !seen.insert((entry.spiffe_id.to_string(), entry.selectors.clone())) {
                    self.issue(
                        raw_entry,
                        &format!("entries[{i}]"),
                        format!("duplicate entry: {} with the same selectors is already registered", entry.spiffe_id),
                        "remove this entry or change its selectors",
                    );
                }
                entries.push(entry);
            }
        }
        for (i, raw_entry) in raw.entries.iter().enumerate() {
            for (j, f) in raw_entry.get_ref().federates_with.iter().enumerate() {
                if let Ok(td) = f.get_ref().parse::<TrustDomain>()
                    && !federation.iter().any(|x| x.trust_domain == td)
                {
                    self.issue(
                        f,
                        &format!("entries[{i}].federates_with[{j}]"),
                        format!("no [[federation]] block for {td}"),
                        &format!("add [[federation]] trust_domain = \"{td}\" bundle_path = \"...\""),
                    );
                }
            }
        }
        entries
    }

    fn entry(
        &mut self,
        i: usize,
        e: &RawEntry,
        td: Option<&TrustDomain>,
        x509_default: Duration,
        jwt_default: Duration,
    ) -> Option<Entry> {
        let key = |k: &str| format!("entries[{i}].{k}");
        let id = match SpiffeId::parse_workload(e.spiffe_id.get_ref()) {
            Ok(id) => Some(id),
            Err(err) => {
                self.issue(
                    &e.spiffe_id,
                    &key("spiffe_id"),
                    format!("invalid SPIFFE ID {:?}: {err}", e.spiffe_id.get_ref()),
                    "write spiffe://<trust domain>/<path>, e.g. spiffe://example.org/agents/support",
                );
                None
            }
        };
        if let (Some(id), Some(td)) = (&id, td)
            && id.trust_domain() != td
        {
            self.issue(
                &e.spiffe_id,
                &key("spiffe_id"),
                format!("{id} is outside the trust domain {td}"),
                &format!("write spiffe://{td}{}", id.path()),
            );
        }
        let mut selectors = BTreeSet::new();
        if e.selectors.get_ref().is_empty() {
            self.issue(
                &e.selectors,
                &key("selectors"),
                "an entry needs at least one selector".into(),
                "add e.g. \"unix:uid:1000\"; see `tessera attest PID`",
            );
        }
        for (j, s) in e.selectors.get_ref().iter().enumerate() {
            match s.get_ref().parse::<Selector>() {
                Ok(sel) => {
                    selectors.insert(sel);
                }
                Err(err) => self.issue(
                    s,
                    &format!("entries[{i}].selectors[{j}]"),
                    err.to_string(),
                    "run `tessera attest PID` to see the selectors of a running process",
                ),
            }
        }
        let x509_svid_ttl = self.duration(&e.x509_svid_ttl, &key("x509_svid_ttl"), x509_default, MAX_SVID_TTL);
        let jwt_svid_ttl = self.duration(&e.jwt_svid_ttl, &key("jwt_svid_ttl"), jwt_default, MAX_SVID_TTL);
        for (j, d) in e.dns_names.iter().enumerate() {
            if !valid_dns_name(d.get_ref()) {
                self.issue(
                    d,
                    &format!("entries[{i}].dns_names[{j}]"),
                    format!("{:?} is not a DNS name", d.get_ref()),
                    "write a name such as \"billing.internal\"",
                );
            }
        }
        if let Some(h) = &e.hint
            && h.get_ref().len() > 1024
        {
            self.issue(h, &key("hint"), "hint is longer than 1024 bytes".into(), "shorten the hint");
        }
        let mut federates_with = Vec::new();
        for (j, f) in e.federates_with.iter().enumerate() {
            match f.get_ref().parse::<TrustDomain>() {
                Ok(t) => federates_with.push(t),
                Err(err) => self.issue(
                    f,
                    &format!("entries[{i}].federates_with[{j}]"),
                    format!("invalid trust domain {:?}: {err}", f.get_ref()),
                    "write a trust domain name such as \"partner.org\"",
                ),
            }
        }
        let delegation = self.entry_delegation(i, e.delegation.as_ref());
        Some(Entry {
            spiffe_id: id?,
            selectors,
            x509_svid_ttl,
            jwt_svid_ttl,
            dns_names: e.dns_names.iter().map(|d| d.get_ref().clone()).collect(),
            hint: e.hint.as_ref().map(|h| h.get_ref().clone()),
            federates_with,
            owner: None,
            metadata: Default::default(),
            retired: false,
            delegation,
        })
    }
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, label)| {
            // A leading "*" label allows wildcard DNS SANs.
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        })
}
