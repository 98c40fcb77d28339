//! The node agent loop: attest (or load the persisted identity), then every sync interval renew
//! the agent SVID when due, sync entries and bundles, sign SVIDs for new, changed and half-spent
//! entries, and put the result in force (registry policy + served SVIDs) in one step. Errors
//! back off (to min(8 min, 48 × interval)) and keep the last good state; a ban or eviction stops
//! every identity.

use super::convert::{self, EntryRefusal};
use super::error::SpireError;
use super::issuer::{Served, SpireIssuer, key_of};
use super::keys::{from_unix, unix};
use super::last_sync::LastSync;
use super::node_attestation;
use super::pb::types::{self, permission_denied_details::Reason};
use super::persist::{AgentState, Snapshot, Store, StoredSvid, StoredSvids};
use super::svids::{self, Held, Want};
use super::tls;
use crate::bundle::FederatedBundle;
use crate::config::Config;
use crate::config::spire::{NodeAttestation, SpireConfig};
use crate::events::{Event, Events};
use crate::issuer::Bundles;
use crate::registry::{Entry, Policy, Registry};
use crate::secret::PrivateKey;
use crate::spiffe_id::TrustDomain;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tessera_attestors::{AttestConfig, Attestor};
use tokio::sync::watch;
use tonic::transport::Channel;

/// Start SPIRE mode: load what was persisted and serve it at once, then sync in the background.
/// `last_sync` is kept up to date with the end of every good sync (telemetry reads it).
pub fn start(
    config: &Config,
    spire: &SpireConfig,
    policy: watch::Sender<Arc<Policy>>,
    events: Events,
    last_sync: Arc<LastSync>,
    shutdown: watch::Receiver<bool>,
) -> Result<Arc<SpireIssuer>, SpireError> {
    let bootstrap = read_bundle_pem(&spire.trust_bundle_path)?;
    let store = Store::open(&config.data_dir)?;
    let issuer = Arc::new(SpireIssuer::new(config.trust_domain.clone()));
    let mut agent = Agent {
        cfg: spire.clone(),
        td: config.trust_domain.clone(),
        store,
        events,
        base_attest: config.attest.clone(),
        policy,
        issuer: issuer.clone(),
        bootstrap,
        agent: None,
        channel: None,
        entries: HashMap::new(),
        bundle: None,
        federated: Vec::new(),
        held: HashMap::new(),
        last_good: last_sync,
        failing: true,
    };
    agent.load();
    tokio::spawn(agent.run(shutdown));
    Ok(issuer)
}

fn read_bundle_pem(path: &std::path::Path) -> Result<Vec<Vec<u8>>, SpireError> {
    let text = std::fs::read(path)?;
    let certs: Vec<Vec<u8>> = pem::parse_many(text)
        .map_err(|e| SpireError::Protocol(format!("{}: {e}", path.display())))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(SpireError::Protocol(format!("{}: no CERTIFICATE block", path.display())));
    }
    Ok(certs)
}

struct Agent {
    cfg: SpireConfig,
    td: TrustDomain,
    store: Store,
    events: Events,
    base_attest: AttestConfig,
    policy: watch::Sender<Arc<Policy>>,
    issuer: Arc<SpireIssuer>,
    bootstrap: Vec<Vec<u8>>,
    agent: Option<AgentState>,
    /// mTLS with the current agent SVID; rebuilt after every renewal.
    channel: Option<Channel>,
    /// Last synced entries, by ID.
    entries: HashMap<String, types::Entry>,
    bundle: Option<types::Bundle>,
    federated: Vec<types::Bundle>,
    /// SVIDs by entry ID.
    held: HashMap<String, Held>,
    /// When the last good sync ended (from the snapshot's mtime after a restart).
    last_good: Arc<LastSync>,
    failing: bool,
}

enum Outcome {
    Continue,
    Stop,
}

impl Agent {
    /// The trust bundle's roots: the server's last bundle, else the bootstrap bundle.
    fn roots(&self) -> Vec<Vec<u8>> {
        match &self.bundle {
            Some(b) if !b.x509_authorities.is_empty() => b.x509_authorities.iter().map(|a| a.asn1.clone()).collect(),
            _ => self.bootstrap.clone(),
        }
    }

    fn load(&mut self) {
        self.agent = self.store.agent();
        if let Some(s) = self.store.snapshot() {
            // An empty snapshot (written when the agent was banned) vouches for nothing.
            if s != Snapshot::default()
                && let Some(t) = self.store.snapshot_time()
            {
                self.last_good.set(t);
            }
            self.entries = s.entries.into_iter().map(|e| (e.id.clone(), e)).collect();
            self.bundle = s.bundle;
            self.federated = s.federated;
        }
        if !self.cfg.persist_svids {
            self.store.remove_svids();
        } else if let Some(stored) = self.store.svids() {
            let now = crate::clock::now();
            let roots = self.roots();
            for s in stored.svids {
                let Some(e) = self.entries.get(&s.entry_id) else { continue };
                let Ok(id) = convert::spiffe_id(e.spiffe_id.as_ref()) else { continue };
                if svids::verify_chain(&s.chain, &roots, &id).is_err() {
                    continue;
                }
                let hint = Some(e.hint.clone()).filter(|h| !h.is_empty());
                let issued = from_unix(s.issued_at);
                if let Ok(h) =
                    Held::build(s.entry_id.clone(), s.revision, id, hint, s.chain, PrivateKey::new(s.key_pkcs8), issued)
                    && h.svid.not_after > now
                {
                    self.held.insert(s.entry_id, h);
                }
            }
        }
        if !self.entries.is_empty() {
            tracing::info!(
                entries = self.entries.len(),
                svids = self.held.len(),
                "SPIRE mode: serving the persisted state until the first sync"
            );
            self.publish();
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let interval = self.cfg.sync_interval;
        let ceiling = (interval * 48).min(Duration::from_secs(480));
        let mut delay = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            match self.tick().await {
                Ok(()) => {
                    if self.failing {
                        tracing::info!(
                            entries = self.held.len(),
                            seconds_since_good_sync = ?self.since_good(),
                            "synced with the SPIRE Server"
                        );
                        self.failing = false;
                    }
                    self.last_good.set(crate::clock::now());
                    delay = interval;
                    self.events.emit(Event::SpireSync {
                        ok: true,
                        entries: self.held.len(),
                        since_good_sync: Some(0),
                        error: None,
                    });
                }
                Err(e) => {
                    if let Outcome::Stop = self.on_error(&e) {
                        return;
                    }
                    self.failing = true;
                    let since = self.since_good();
                    delay = if delay.is_zero() { interval } else { (delay * 2).min(ceiling) };
                    let served = if self.held.is_empty() {
                        "nothing is served until a sync succeeds"
                    } else {
                        "the last good state stays in force"
                    };
                    if e.unreachable() {
                        // Not a refusal: nothing answered (server down, wrong server_address, firewall).
                        tracing::warn!(
                            server = %self.cfg.server_address,
                            error = %e,
                            seconds_since_good_sync = ?since,
                            retry_in = ?delay,
                            "SPIRE sync failed: cannot reach the SPIRE Server at {} (is it running, and is \
                             [spire] server_address right?); {served}",
                            self.cfg.server_address
                        );
                    } else {
                        tracing::warn!(
                            error = %e,
                            seconds_since_good_sync = ?since,
                            retry_in = ?delay,
                            "SPIRE sync failed; {served}"
                        );
                    }
                    self.events.emit(Event::SpireSync {
                        ok: false,
                        entries: self.held.len(),
                        since_good_sync: since,
                        error: Some(e.to_string()),
                    });
                }
            }
        }
    }

    fn since_good(&self) -> Option<u64> {
        self.last_good.get().map(|t| t.elapsed().unwrap_or_default().as_secs())
    }

    fn on_error(&mut self, e: &SpireError) -> Outcome {
        let reattestable = self.agent.as_ref().is_some_and(|a| a.reattestable);
        match e.denied() {
            Some(Reason::AgentBanned) => {
                self.stop("the SPIRE Server banned this agent (spire-server agent ban)");
                Outcome::Stop
            }
            Some(r @ (Reason::AgentNotAttested | Reason::AgentExpired)) if !reattestable => {
                self.stop(&format!(
                    "the SPIRE Server no longer accepts this agent ({}): evicted or expired",
                    r.as_str_name()
                ));
                Outcome::Stop
            }
            Some(Reason::AgentNotAttested | Reason::AgentExpired | Reason::AgentMustReattest) => {
                tracing::warn!("the SPIRE Server asks this agent to attest again");
                self.agent = None;
                self.channel = None;
                Outcome::Continue
            }
            Some(Reason::AgentNotActive) => {
                self.channel = None;
                Outcome::Continue
            }
            _ => {
                let text = e.to_string();
                if let (SpireError::Rpc { what: "attestation refused", status }, NodeAttestation::JoinToken(_)) =
                    (e, &self.cfg.attestation)
                    && status.code() == tonic::Code::InvalidArgument
                {
                    tracing::error!(
                        "join-token attestation refused: a join token is single-use. Generate a new one with \
                         `spire-server token generate -spiffeID <node alias>`, put it in [spire] join_token, restart"
                    );
                }
                if text.contains("invalid peer certificate") {
                    tracing::error!(
                        bundle = %self.cfg.trust_bundle_path.display(),
                        "TLS to the SPIRE Server failed: its certificate does not verify against the trust bundle \
                         (give the output of `spire-server bundle show` as trust_bundle_path): {text}"
                    );
                }
                Outcome::Continue
            }
        }
    }

    /// Banned or evicted: drop every identity, forget the agent's credentials, say so loudly.
    fn stop(&mut self, reason: &str) {
        let agent_id = self.agent.as_ref().map(|a| a.spiffe_id.clone()).unwrap_or_default();
        self.store.forget_agent();
        self.agent = None;
        self.channel = None;
        self.entries.clear();
        self.held.clear();
        self.issuer.set_channel(None);
        self.issuer.clear_jwts();
        let _ = self.store.save_snapshot(&Snapshot::default());
        self.last_good.clear();
        self.publish();
        // Said once nothing is served any more.
        tracing::error!(agent_id, "{reason}: NO IDENTITIES ARE SERVED ANY MORE; re-provision the node to recover");
        self.events.emit(Event::SpireAgentStopped { agent_id, reason: reason.to_owned() });
    }

    fn mtls(&mut self) -> Result<Channel, SpireError> {
        if let Some(c) = &self.channel {
            return Ok(c.clone());
        }
        let agent = self.agent.as_ref().ok_or_else(|| SpireError::Attestation("not attested".into()))?;
        let identity = tls::ClientIdentity { chain: &agent.chain, key_pkcs8: &agent.key_pkcs8 };
        let config = tls::client_config(&self.td, &self.roots(), Some(identity))?;
        let channel = tls::channel(&self.cfg.server_address, config)?;
        self.channel = Some(channel.clone());
        self.issuer.set_channel(Some(channel.clone()));
        Ok(channel)
    }

    async fn attest(&mut self) -> Result<(), SpireError> {
        let config = tls::client_config(&self.td, &self.roots(), None)?;
        let channel = tls::channel(&self.cfg.server_address, config)?;
        let (state, bundle) = node_attestation::attest(channel, &self.cfg.attestation).await?;
        // On disk before first use: the server retires the previous SVID when this one is used.
        self.store.save_agent(&state)?;
        tracing::info!(agent_id = %state.spiffe_id, reattestable = state.reattestable, "node attested to the SPIRE Server");
        self.agent = Some(state);
        self.bundle = Some(bundle);
        self.channel = None;
        Ok(())
    }

    async fn ensure_agent(&mut self) -> Result<(), SpireError> {
        let now = crate::clock::now();
        match &self.agent {
            Some(a) if from_unix(a.expires_at) > now => {
                if node_attestation::renewal_due(a, now) {
                    if a.reattestable {
                        self.attest().await?;
                    } else {
                        let current = a.clone();
                        let channel = self.mtls()?;
                        let renewed = node_attestation::renew(channel, &current).await?;
                        self.store.save_agent(&renewed)?;
                        tracing::info!(agent_id = %renewed.spiffe_id, "agent SVID renewed");
                        self.agent = Some(renewed);
                        // Every later call uses the new SVID (which activates it on first use).
                        self.channel = None;
                    }
                }
                Ok(())
            }
            Some(a) => {
                tracing::error!(agent_id = %a.spiffe_id, "the agent SVID expired; attesting again");
                self.attest().await
            }
            None => self.attest().await,
        }
    }

    async fn tick(&mut self) -> Result<(), SpireError> {
        self.ensure_agent().await?;
        let channel = self.mtls()?;
        let list = super::sync::entries(channel.clone(), &self.entries).await?;
        let (bundle, federated) = super::sync::bundles(channel.clone(), &list).await?;
        if bundle.trust_domain != self.td.to_string() {
            return Err(SpireError::Protocol(format!("bundle of {:?}, not {}", bundle.trust_domain, self.td)));
        }
        if let Err(reason) = convert::bundle(&bundle) {
            self.refused("bundle", &reason);
            return Err(SpireError::Protocol(reason));
        }
        let bundle_changed = self.bundle.as_ref() != Some(&bundle) || self.federated != federated;
        if bundle_changed {
            // The server's CA may have rotated: reconnect trusting the new roots.
            self.channel = None;
        }
        self.bundle = Some(bundle);
        self.federated = federated;
        let roots = self.roots();

        let now = crate::clock::now();
        let mut next: HashMap<String, types::Entry> = HashMap::with_capacity(list.len());
        let mut wants = Vec::new();
        for e in list {
            match convert::entry(&e, &self.td) {
                Ok(entry) => {
                    let due = match self.held.get(&e.id) {
                        Some(h) => {
                            h.revision != e.revision_number
                                || now >= h.rotate_at()
                                || h.svid.spiffe_id != entry.spiffe_id
                        }
                        None => true,
                    };
                    if due {
                        wants.push(Want {
                            entry_id: e.id.clone(),
                            revision: e.revision_number,
                            spiffe_id: entry.spiffe_id,
                            hint: entry.hint,
                        });
                    }
                    next.insert(e.id.clone(), e);
                }
                Err(EntryRefusal::ForeignSelector(t)) => {
                    tracing::debug!(entry = %e.id, selector_type = %t, "entry not for this node's attestors");
                }
                Err(r @ EntryRefusal::Malformed(_)) => {
                    // Keep the previous version of this entry, if there was one.
                    self.refused(&format!("entry {}", e.id), &r.to_string());
                    if let Some(old) = self.entries.get(&e.id) {
                        next.insert(e.id.clone(), old.clone());
                    }
                }
            }
        }
        let mut changed = bundle_changed || next.len() != self.entries.len();
        changed |= next.iter().any(|(id, e)| self.entries.get(id) != Some(e));
        // SVIDs of entries that are gone are dropped (and never served again).
        self.held.retain(|id, _| next.contains_key(id));
        if !wants.is_empty() {
            let channel = self.mtls()?;
            let results = svids::sign(channel, wants, &roots).await?;
            for r in results {
                match r {
                    Ok(h) => {
                        self.held.insert(h.entry_id.clone(), h);
                        changed = true;
                    }
                    Err(reason) => self.refused("X.509-SVID", &reason),
                }
            }
        }
        // An SVID for an earlier revision of a changed entry may name other selectors: never served.
        self.held
            .retain(|id, h| next.get(id).is_some_and(|e| e.revision_number == h.revision) && h.svid.not_after > now);
        self.entries = next;
        if changed {
            self.publish();
            self.persist();
        } else {
            // Nothing new: no rewrite (and fsync) every few seconds, only the good-sync time.
            self.store.touch_snapshot();
        }
        Ok(())
    }

    fn refused(&self, what: &str, reason: &str) {
        tracing::warn!(what, reason, "refused what the SPIRE Server sent; the previous state is kept");
        self.events.emit(Event::SpireRefused { what: what.to_owned(), reason: reason.to_owned() });
    }

    fn persist(&self) {
        let snapshot = Snapshot {
            entries: self.entries.values().cloned().collect(),
            bundle: self.bundle.clone(),
            federated: self.federated.clone(),
        };
        if let Err(e) = self.store.save_snapshot(&snapshot) {
            tracing::warn!(error = %e, "cannot persist the SPIRE entries and bundles");
        }
        if self.cfg.persist_svids {
            let svids = StoredSvids {
                svids: self
                    .held
                    .values()
                    .map(|h| StoredSvid {
                        entry_id: h.entry_id.clone(),
                        revision: h.revision,
                        chain: h.chain.clone(),
                        key_pkcs8: h.svid.key_pkcs8().to_vec(),
                        issued_at: unix(h.issued_at),
                        expires_at: unix(h.svid.not_after),
                    })
                    .collect(),
            };
            if let Err(e) = self.store.save_svids(&svids) {
                tracing::warn!(error = %e, "cannot persist the workload SVIDs");
            }
        }
    }

    /// Put the current entries, SVIDs and bundles in force together.
    fn publish(&self) {
        let mut served_entries: Vec<(&types::Entry, Entry)> = self
            .entries
            .values()
            .filter(|e| self.held.contains_key(&e.id))
            .filter_map(|e| convert::entry(e, &self.td).ok().map(|c| (e, c)))
            .collect();
        // Oldest first: the first match is a workload's default identity, stably.
        served_entries.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
        let mut served = Served::empty();
        if let Some(b) = self.bundle.as_ref().and_then(|b| convert::bundle(b).ok()) {
            served.bundles = Arc::new(Bundles {
                x509: b.x509,
                jwt: Arc::new(b.jwt),
                wit: Arc::new(crate::bundle::JwtBundle::new(vec![])),
            });
        }
        for (raw, entry) in &served_entries {
            if let Some(h) = self.held.get(&raw.id) {
                served.svids.insert(key_of(entry), h.clone());
                served.entry_ids.insert(key_of(entry), raw.id.clone());
            }
        }
        let mut federated = BTreeMap::new();
        for b in &self.federated {
            let name = b.trust_domain.strip_prefix("spiffe://").unwrap_or(&b.trust_domain);
            match (name.parse::<TrustDomain>(), convert::bundle(b)) {
                (Ok(td), Ok(fb)) => {
                    federated.insert(td, Arc::new(fb));
                }
                (_, Err(e)) => self.refused(&format!("federated bundle {name}"), &e),
                (Err(e), _) => self.refused("federated bundle", &e.to_string()),
            }
        }
        let entries: Vec<Entry> = served_entries.into_iter().map(|(_, e)| e).collect();
        let attest_base = attest_config(&self.base_attest, &entries);
        let previous = self.policy.borrow().clone();
        // Deny rules (config and `tessera revoke`) stay in force across syncs.
        let attest = previous.deny.attest_config(&attest_base);
        let attestor = if *previous.attestor.config() == attest {
            previous.attestor.clone()
        } else {
            Arc::new(Attestor::new(attest))
        };
        let n = entries.len();
        // SVIDs first, then the entries that reference them.
        self.issuer.publish(served);
        self.policy.send_replace(Arc::new(Policy {
            registry: Registry::new(entries),
            attestor,
            jwt_issuer: None,
            federated: federated.into_iter().collect::<BTreeMap<TrustDomain, Arc<FederatedBundle>>>(),
            deny: previous.deny.clone(),
            attest_base,
            delegation_issuers: previous.delegation_issuers.clone(),
        }));
        tracing::info!(entries = n, "SPIRE entries and SVIDs in force");
    }
}

/// The attestor settings for `entries`: digests and config files only where an entry asks.
fn attest_config(base: &AttestConfig, entries: &[Entry]) -> AttestConfig {
    let mut c = base.clone();
    let sels = || entries.iter().flat_map(|e| e.selectors.iter());
    let wants = |kind: tessera_attestors::Kind| sels().any(|s| s.kind() == kind && s.value().starts_with("sha256:"));
    c.want_exe_digest = wants(tessera_attestors::Kind::Unix);
    c.want_script_digest = wants(tessera_attestors::Kind::Script);
    let mut paths: Vec<_> = sels().filter_map(tessera_attestors::config_path_of).collect();
    paths.sort();
    paths.dedup();
    c.config_paths = paths;
    c
}
