//! The node agent loop: attest (or load the persisted identity), then every sync interval renew
//! the agent SVID when due, sync entries and bundles, sign SVIDs for new, changed and half-spent
//! entries, and put the result in force (registry policy + served SVIDs) in one step. Errors
//! back off (to min(8 min, 48 × interval)) and keep the last good state; a ban or eviction stops
//! every identity. What is held and how a sync changes it is [`super::state`]'s; this is the
//! talking, the timers, the disk and the logs.

use super::error::SpireError;
use super::issuer::SpireIssuer;
use super::keys::from_unix;
use super::last_sync::LastSync;
use super::node_attestation;
use super::persist::{AgentState, Snapshot, Store};
use super::state::{self, BundleRefusal, Refusal, State, Verdict};
use super::svids;
use super::tls;
use crate::config::Config;
use crate::config::spire::{NodeAttestation, SpireConfig};
use crate::events::{Event, Events};
use crate::registry::PolicyComposer;
use crate::spiffe_id::TrustDomain;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Start SPIRE mode: load what was persisted and serve it at once, then sync in the background.
/// `last_sync` is kept up to date with the end of every good sync (telemetry reads it).
pub(crate) fn start(
    config: &Config,
    spire: &SpireConfig,
    policy: PolicyComposer,
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
        policy,
        issuer: issuer.clone(),
        state: State::new(config.trust_domain.clone(), bootstrap),
        agent: None,
        channel: None,
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
    policy: PolicyComposer,
    issuer: Arc<SpireIssuer>,
    /// Entries, bundles and workload SVIDs.
    state: State,
    agent: Option<AgentState>,
    /// mTLS with the current agent SVID; rebuilt after every renewal.
    channel: Option<Channel>,
    /// When the last good sync ended (from the snapshot's mtime after a restart).
    last_good: Arc<LastSync>,
    failing: bool,
}

enum Outcome {
    Continue,
    Stop,
}

impl Agent {
    fn load(&mut self) {
        self.agent = self.store.agent();
        if let Some(s) = self.store.snapshot() {
            // An empty snapshot (written when the agent was banned) vouches for nothing.
            if s != Snapshot::default()
                && let Some(t) = self.store.snapshot_time()
            {
                self.last_good.set(t);
            }
            self.state.restore(s);
        }
        if !self.cfg.persist_svids {
            self.store.remove_svids();
        } else if let Some(stored) = self.store.svids() {
            self.state.restore_svids(stored, crate::clock::now());
        }
        if !self.state.entries.is_empty() {
            tracing::info!(
                entries = self.state.entries.len(),
                svids = self.state.held.len(),
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
                            entries = self.state.held.len(),
                            seconds_since_good_sync = ?self.since_good(),
                            "synced with the SPIRE Server"
                        );
                        self.failing = false;
                    }
                    self.last_good.set(crate::clock::now());
                    delay = interval;
                    self.events.emit(Event::SpireSync {
                        ok: true,
                        entries: self.state.held.len(),
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
                    let served = if self.state.held.is_empty() {
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
                        entries: self.state.held.len(),
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
        match state::verdict(e.denied(), reattestable) {
            Verdict::Stop(reason) => {
                self.stop(&reason);
                Outcome::Stop
            }
            Verdict::Reattest => {
                tracing::warn!("the SPIRE Server asks this agent to attest again");
                self.agent = None;
                self.channel = None;
                Outcome::Continue
            }
            Verdict::Reconnect => {
                self.channel = None;
                Outcome::Continue
            }
            Verdict::Retry => {
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
        self.state.clear();
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
        let config = tls::client_config(&self.td, &self.state.roots(), Some(identity))?;
        let channel = tls::channel(&self.cfg.server_address, config)?;
        self.channel = Some(channel.clone());
        self.issuer.set_channel(Some(channel.clone()));
        Ok(channel)
    }

    async fn attest(&mut self) -> Result<(), SpireError> {
        let config = tls::client_config(&self.td, &self.state.roots(), None)?;
        let channel = tls::channel(&self.cfg.server_address, config)?;
        let (state, bundle) = node_attestation::attest(channel, &self.cfg.attestation).await?;
        // On disk before first use: the server retires the previous SVID when this one is used.
        self.store.save_agent(&state)?;
        tracing::info!(agent_id = %state.spiffe_id, reattestable = state.reattestable, "node attested to the SPIRE Server");
        self.agent = Some(state);
        self.state.bundle = Some(bundle);
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
        let list = super::sync::entries(channel.clone(), &self.state.entries).await?;
        let (bundle, federated) = super::sync::bundles(channel.clone(), &list).await?;
        let bundle_changed = match self.state.apply_bundles(bundle, federated) {
            Ok(changed) => changed,
            Err(BundleRefusal::ForeignTrustDomain(reason)) => return Err(SpireError::Protocol(reason)),
            Err(BundleRefusal::Invalid(reason)) => {
                self.refused(&Refusal { what: "bundle".into(), reason: reason.clone() });
                return Err(SpireError::Protocol(reason));
            }
        };
        if bundle_changed {
            // The server's CA may have rotated: reconnect trusting the new roots.
            self.channel = None;
        }
        let roots = self.state.roots();
        let now = crate::clock::now();
        let mut pending = self.state.begin_sync(list, bundle_changed, now);
        for r in std::mem::take(&mut pending.refusals) {
            self.refused(&r);
        }
        let wants = std::mem::take(&mut pending.wants);
        let signed = if wants.is_empty() { Vec::new() } else { svids::sign(self.mtls()?, wants, &roots).await? };
        let outcome = self.state.finish_sync(pending, signed, now);
        for r in &outcome.refusals {
            self.refused(r);
        }
        if outcome.changed {
            self.publish();
            self.persist();
        } else {
            // Nothing new: no rewrite (and fsync) every few seconds, only the good-sync time.
            self.store.touch_snapshot();
        }
        Ok(())
    }

    fn refused(&self, r: &Refusal) {
        let (what, reason) = (r.what.as_str(), r.reason.as_str());
        tracing::warn!(what, reason, "refused what the SPIRE Server sent; the previous state is kept");
        self.events.emit(Event::SpireRefused { what: what.to_owned(), reason: reason.to_owned() });
    }

    fn persist(&self) {
        if let Err(e) = self.store.save_snapshot(&self.state.snapshot()) {
            tracing::warn!(error = %e, "cannot persist the SPIRE entries and bundles");
        }
        if self.cfg.persist_svids
            && let Err(e) = self.store.save_svids(&self.state.stored_svids())
        {
            tracing::warn!(error = %e, "cannot persist the workload SVIDs");
        }
    }

    /// Put the current entries, SVIDs and bundles in force together.
    fn publish(&self) {
        let published = self.state.published();
        for r in &published.refusals {
            self.refused(r);
        }
        let n = published.sync.registry.entries().len();
        // SVIDs first, then the entries that reference them.
        self.issuer.publish(published.served);
        self.policy.spire_synced(published.sync);
        tracing::info!(entries = n, "SPIRE entries and SVIDs in force");
    }
}
