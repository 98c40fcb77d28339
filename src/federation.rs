//! The federation service: keeping partners' bundles fresh from their bundle endpoints: fetch at start, then at the
//! partner's refresh hint (clamped to [30 s, 1 h], 5 min without one), retrying with backoff after
//! a failure. The last good bundle of each partner is kept under `data_dir/federation/` so a
//! restart while the partner is away still serves it; a malformed or unauthenticated answer never
//! replaces it (audited as `FederatedBundleRefused`, logged).

use crate::bundle::FederatedBundle;
use crate::bundle::endpoint::FederationEndpoint;
use crate::bundle::fetch::{self, Fetched};
use crate::config::Config;
use crate::events::{Event, Events};
use crate::registry::PolicyComposer;
use crate::spiffe_id::TrustDomain;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

const MIN_REFRESH: Duration = Duration::from_secs(30);
const MAX_REFRESH: Duration = Duration::from_secs(3600);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The bundles fetched from endpoints (or, before the first fetch, the last good one on disk or
/// the initial `bundle_path`), by trust domain. Read by the daemon on every (re)load; the
/// [`PolicyComposer`] gets each update as it comes.
#[derive(Clone, Default)]
pub(crate) struct FetchedBundles {
    inner: Arc<RwLock<BTreeMap<TrustDomain, Arc<FederatedBundle>>>>,
}

impl FetchedBundles {
    pub(crate) fn get(&self, td: &TrustDomain) -> Option<Arc<FederatedBundle>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).get(td).cloned()
    }
    fn set(&self, td: &TrustDomain, bundle: Arc<FederatedBundle>) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).insert(td.clone(), bundle);
    }
}

/// Where the last good bundle of `td` is kept.
pub(crate) fn cache_path(data_dir: &Path, td: &TrustDomain) -> PathBuf {
    data_dir.join("federation").join(format!("{}.json", td.as_str()))
}

/// The bundles in force before any fetch: for each endpoint federation, the last good bundle on
/// disk if it still parses, else nothing here (the file at `bundle_path` is used then).
pub(crate) fn initial(config: &Config) -> FetchedBundles {
    let fetched = FetchedBundles::default();
    for f in config.federation.iter().filter(|f| f.endpoint.is_some()) {
        let path = cache_path(&config.data_dir, &f.trust_domain);
        match std::fs::read(&path) {
            Ok(bytes) => match crate::bundle::federation::parse_endpoint_document(&bytes) {
                Ok((bundle, _, _)) => {
                    tracing::info!(trust_domain = %f.trust_domain, path = %path.display(), "federated bundle: last good copy loaded");
                    fetched.set(&f.trust_domain, Arc::new(bundle));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable federated bundle cache")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read federated bundle cache"),
        }
    }
    fetched
}

/// The bundle of an endpoint federation: the fetched one, else the file's (the initial bundle).
pub(crate) fn current(
    fetched: &FetchedBundles,
    f: &crate::config::Federation,
) -> Result<Option<Arc<FederatedBundle>>, crate::bundle::federation::BundleError> {
    if let Some(b) = fetched.get(&f.trust_domain) {
        return Ok(Some(b));
    }
    match &f.bundle_path {
        Some(p) => Ok(Some(Arc::new(crate::bundle::federation::load(p)?))),
        None => Ok(None),
    }
}

/// One task per endpoint federation. Changes of the federation list take effect at restart.
pub(crate) fn spawn(
    config: &Config,
    fetched: FetchedBundles,
    policy: PolicyComposer,
    events: Events,
    shutdown: watch::Receiver<bool>,
) {
    if config.federation.iter().any(|f| f.endpoint.is_some())
        && let Err(e) = crate::storage::private_dir(&config.data_dir.join("federation"))
    {
        tracing::error!(error = %e, "cannot create the federated bundle cache directory; bundles are not kept across restarts");
    }
    for f in &config.federation {
        let Some(endpoint) = f.endpoint.clone() else { continue };
        let partner = Partner {
            trust_domain: f.trust_domain.clone(),
            endpoint,
            initial: f.bundle_path.clone(),
            cache: cache_path(&config.data_dir, &f.trust_domain),
        };
        tokio::spawn(partner.run(fetched.clone(), policy.clone(), events.clone(), shutdown.clone()));
    }
}

struct Partner {
    trust_domain: TrustDomain,
    endpoint: FederationEndpoint,
    initial: Option<PathBuf>,
    cache: PathBuf,
}

impl Partner {
    async fn run(
        self,
        fetched: FetchedBundles,
        policy: PolicyComposer,
        events: Events,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut retry = FIRST_RETRY;
        loop {
            let wait = match self.fetch_once(&fetched).await {
                Ok(new) => {
                    retry = FIRST_RETRY;
                    let delay = new.refresh_hint.map_or(DEFAULT_REFRESH, |h| h.clamp(MIN_REFRESH, MAX_REFRESH));
                    self.accept(new, &fetched, &policy, &events);
                    delay
                }
                Err(reason) => {
                    tracing::warn!(
                        trust_domain = %self.trust_domain,
                        url = %self.endpoint.url,
                        retry_in = ?retry,
                        "federated bundle refused, the current one stays: {reason}"
                    );
                    events.emit(Event::FederatedBundleRefused {
                        trust_domain: self.trust_domain.clone(),
                        url: self.endpoint.url.to_string(),
                        reason: reason.to_string(),
                    });
                    let wait = retry;
                    retry = (retry * 2).min(MAX_RETRY);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn fetch_once(&self, fetched: &FetchedBundles) -> Result<Fetched, fetch::FetchError> {
        // The endpoint is authenticated with the bundle in force (https_spiffe): the fetched one,
        // else the initial file.
        let current = match fetched.get(&self.trust_domain) {
            Some(b) => Some(b),
            None => match &self.initial {
                Some(p) => crate::bundle::federation::load(p).ok().map(Arc::new),
                None => None,
            },
        };
        let tls = fetch::client_config(&self.endpoint.profile, current.as_deref())?;
        fetch::fetch(&self.endpoint.url, tls).await
    }

    fn accept(&self, new: Fetched, fetched: &FetchedBundles, policy: &PolicyComposer, events: &Events) {
        if fetched.get(&self.trust_domain).is_some_and(|b| *b == new.bundle) {
            return;
        }
        if let Err(e) = crate::storage::write_atomic(&self.cache, &new.raw) {
            tracing::error!(path = %self.cache.display(), error = %e, "cannot keep the federated bundle on disk");
        }
        let bundle = Arc::new(new.bundle);
        fetched.set(&self.trust_domain, bundle.clone());
        // Streams follow the policy: the new bundle reaches open FetchX509Bundles/FetchJWTBundles now.
        policy.bundle_updated(self.trust_domain.clone(), bundle.clone());
        tracing::info!(
            trust_domain = %self.trust_domain,
            sequence = ?new.sequence,
            x509_authorities = bundle.x509.certs().len(),
            jwt_keys = bundle.jwt.len(),
            "federated bundle updated from its endpoint"
        );
        events.emit(Event::FederatedBundleUpdated {
            trust_domain: self.trust_domain.clone(),
            sequence: new.sequence,
            x509_authorities: bundle.x509.certs().len(),
            jwt_keys: bundle.jwt.len(),
        });
    }
}
