//! Prometheus metrics: a subscriber on the event spine counts what happens, and a collector reads
//! what is only known at scrape time (CA expiry, the attestors' digest cache). Label values come
//! from small fixed sets; never a pid, a path, a digest or a uid.

use crate::clock::Clock;
use crate::events::{Event, Refusal, Subscriber, SvidKind};
use crate::issuer::KeySource;
use crate::registry::Policy;
use crate::spire::last_sync::LastSync;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// One label with a value from a fixed set.
type Label = [(&'static str, &'static str); 1];
type Counters = Family<Label, Counter>;
/// The gateway's labels: the route (config-bounded) and, for the counter, the result.
type RouteLabels = Vec<(&'static str, String)>;

/// The `reason` label of `tessera_refusals_total`.
fn refusal_reason(why: &Refusal) -> &'static str {
    match why {
        Refusal::AttestationFailed(_) => "attestation_failed",
        Refusal::NoEntry { .. } => "no_entry",
        Refusal::NotEntitled(_) => "not_entitled",
        Refusal::Revoked { .. } => "revoked",
        Refusal::Policy { .. } => "policy",
    }
}
const ADMIN_DENIED: &str = "admin_denied";

/// The metrics of one daemon and the registry they are encoded from.
pub(crate) struct Metrics {
    registry: Registry,
    attestations: Counters,
    attestation_duration: Histogram,
    svids_issued: Counters,
    refusals: Counters,
    open_streams: Gauge,
    reloads: Counters,
    revocations: Counter,
    withdrawals: Counter,
    drift: Counter,
    key_rotations: Counters,
    jwt_validations: Counters,
    /// The newest X.509 authority (by activation time) and JWT kid seen, to tell which kind rotated.
    newest_keys: Mutex<(Option<SystemTime>, Option<String>)>,
    ca: Option<Arc<dyn KeySource>>,
    gateway_requests: Family<RouteLabels, Counter>,
    gateway_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

/// Buckets of the gateway's call durations: 0.5 ms to ~2 min.
fn gateway_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Metrics {
    /// `spire`: SPIRE mode's last good sync (a gauge of its age); None in standalone mode.
    /// `clock`: where the gauges read at scrape time take "now".
    pub(crate) fn new(
        ca: Option<Arc<dyn KeySource>>,
        spire: Option<Arc<LastSync>>,
        policy: watch::Receiver<Arc<Policy>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut registry = Registry::default();
        let family = |registry: &mut Registry, name: &str, help: &str, label: &'static str, values: &[&'static str]| {
            let f = Counters::default();
            // Every known value from the start (at 0), so a rate over the first event is right
            // and dashboards see the series before anything happened.
            for v in values {
                let _ = f.get_or_create(&[(label, *v)]);
            }
            registry.register(name, help, f.clone());
            f
        };
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let attestations = family(
            &mut registry,
            "tessera_attestations",
            "Workload attestations run (an RPC's start or a stream's re-attestation), by result",
            "result",
            &["success", "failure"],
        );
        // 0.5 ms .. 4 s: a cached attestation takes a fraction of a millisecond, hashing a large
        // binary cold takes seconds.
        let attestation_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "tessera_attestation_duration_seconds",
            "Time the attestors took for one workload (waiting for a slot excluded)",
            attestation_duration.clone(),
        );
        let svids_issued = family(
            &mut registry,
            "tessera_svids_issued",
            "SVIDs handed to workloads, by kind",
            "kind",
            &["x509", "jwt"],
        );
        let refusals = family(
            &mut registry,
            "tessera_refusals",
            "Callers given no identity (or refused by the admin socket), by reason",
            "reason",
            &["attestation_failed", "no_entry", "not_entitled", ADMIN_DENIED],
        );
        let open_streams = Gauge::default();
        registry.register(
            "tessera_open_streams",
            "Workload API streams open now (FetchX509SVID, FetchX509Bundles, FetchJWTBundles)",
            open_streams.clone(),
        );
        let reloads = family(
            &mut registry,
            "tessera_reloads",
            "Configuration reloads, by result (failure: the previous config stays)",
            "result",
            &["success", "failure"],
        );
        let revocations = counter(&mut registry, "tessera_revocations", "Revocations made");
        let withdrawals = counter(
            &mut registry,
            "tessera_withdrawals",
            "Identities withdrawn from open streams (the workload stopped matching, or exec'd)",
        );
        let drift = counter(&mut registry, "tessera_drift", "Streaming workloads whose selectors changed");
        let key_rotations = family(
            &mut registry,
            "tessera_key_rotations",
            "New signing keys published by the CA, by kind",
            "kind",
            &["x509", "jwt"],
        );
        let jwt_validations = family(
            &mut registry,
            "tessera_jwt_validations",
            "JWT-SVIDs checked by ValidateJWTSVID, by result",
            "result",
            &["valid", "invalid"],
        );
        // Labelled by route name (bounded by the config; `-` for calls no route took).
        let gateway_requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "tessera_gateway_requests",
            "Calls through the node gateway, by route and result (ok, client_error, upstream_error, server_error, aborted, denied)",
            gateway_requests.clone(),
        );
        let gateway_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(gateway_histogram);
        registry.register(
            "tessera_gateway_request_duration_seconds",
            "Time from a gateway call's request to the end of its response, by route",
            gateway_duration.clone(),
        );
        registry.register_collector(Box::new(super::unmanaged::AtScrape));
        registry.register_collector(Box::new(AtScrape { ca: ca.clone(), spire, policy, clock }));
        let newest_keys = Mutex::new(newest_keys(ca.as_ref()));
        Self {
            registry,
            attestations,
            attestation_duration,
            svids_issued,
            refusals,
            open_streams,
            reloads,
            revocations,
            withdrawals,
            drift,
            key_rotations,
            jwt_validations,
            newest_keys,
            ca,
            gateway_requests,
            gateway_duration,
        }
    }

    /// OpenMetrics text (`application/openmetrics-text; version=1.0.0`).
    pub(crate) fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The classic Prometheus text format, version 0.0.4.
    pub(crate) fn prometheus_text(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn inc(family: &Counters, label: &'static str, value: &'static str) {
        family.get_or_create(&[(label, value)]).inc();
    }

    fn ca_rotated(&self) {
        let (x509, jwt) = newest_keys(self.ca.as_ref());
        let mut seen = self.newest_keys.lock().unwrap_or_else(|p| p.into_inner());
        if x509.is_some() && x509 != seen.0 {
            Self::inc(&self.key_rotations, "kind", "x509");
        }
        if jwt.is_some() && jwt != seen.1 {
            Self::inc(&self.key_rotations, "kind", "jwt");
        }
        *seen = (x509, jwt);
    }
}

/// Activation time of the newest X.509 authority and kid of the newest JWT key.
fn newest_keys(ca: Option<&Arc<dyn KeySource>>) -> (Option<SystemTime>, Option<String>) {
    let Some(ca) = ca else { return (None, None) };
    let auth = ca.authorities();
    (auth.x509.iter().map(|a| a.not_before).max(), auth.jwt.iter().max_by_key(|k| k.not_before).map(|k| k.kid.clone()))
}

impl Subscriber for Metrics {
    fn on_event(&self, event: &Event) {
        match event {
            Event::AttestationFinished { ok, duration } => {
                Self::inc(&self.attestations, "result", if *ok { "success" } else { "failure" });
                self.attestation_duration.observe(duration.as_secs_f64());
            }
            Event::Refused { why, .. } => Self::inc(&self.refusals, "reason", refusal_reason(why)),
            Event::AdminRefused { .. } => Self::inc(&self.refusals, "reason", ADMIN_DENIED),
            Event::Issued { kind, issued, .. } => {
                let kind = match kind {
                    SvidKind::X509 => "x509",
                    SvidKind::Jwt => "jwt",
                    SvidKind::Wit => "wit",
                };
                self.svids_issued.get_or_create(&[("kind", kind)]).inc_by(issued.len() as u64);
            }
            Event::StreamOpened => {
                self.open_streams.inc();
            }
            Event::StreamClosed => {
                self.open_streams.dec();
            }
            Event::Reloaded { .. } => Self::inc(&self.reloads, "result", "success"),
            Event::ReloadRefused { .. } => Self::inc(&self.reloads, "result", "failure"),
            Event::Revoked { .. } => {
                self.revocations.inc();
            }
            Event::Withdrawn { .. } => {
                self.withdrawals.inc();
            }
            Event::Drift { .. } => {
                self.drift.inc();
            }
            Event::CaRotated => self.ca_rotated(),
            Event::GatewayCall(c) => {
                let route = c.route.clone().unwrap_or_else(|| "-".to_owned());
                self.gateway_requests
                    .get_or_create(&vec![("route", route.clone()), ("result", c.result().to_owned())])
                    .inc();
                if c.allowed {
                    self.gateway_duration.get_or_create(&vec![("route", route)]).observe(c.duration_ms / 1000.0);
                }
            }
            Event::JwtValidated { valid } => {
                Self::inc(&self.jwt_validations, "result", if *valid { "valid" } else { "invalid" })
            }
            // Facts with no metric of their own (Started, Attested: counted by AttestationFinished).
            _ => {}
        }
    }
}

/// Values read at scrape time.
struct AtScrape {
    /// None in SPIRE mode (the server signs; no local CA to watch).
    ca: Option<Arc<dyn KeySource>>,
    /// Some in SPIRE mode only.
    spire: Option<Arc<LastSync>>,
    policy: watch::Receiver<Arc<Policy>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtScrape")
    }
}

/// Seconds from now until `t` (negative once past).
fn seconds_until(t: SystemTime, now: SystemTime) -> f64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

impl Collector for AtScrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = self.clock.now();
        let expiry = self.ca.as_ref().map(|ca| {
            let auth = ca.authorities();
            // No signer (cannot happen while the CA rotates on time) reads as expired.
            let x509 = auth.x509_signer(now).map_or(0.0, |a| seconds_until(a.not_after, now));
            let jwt = auth.signer(crate::ca::KeyKind::Jwt, now).map_or(0.0, |k| seconds_until(k.not_after, now));
            (x509, jwt)
        });
        // The attestor of the policy in force (a reload that changes attestor settings starts a
        // new cache, and these counters restart from 0 with it).
        let stats = self.policy.borrow().attestor.digest_stats();
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: f64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
        };
        if let Some((x509, jwt)) = expiry {
            gauge(&mut encoder, "tessera_ca_expiry_seconds", "Seconds until the active X.509 CA expires", x509)?;
            gauge(
                &mut encoder,
                "tessera_jwt_key_expiry_seconds",
                "Seconds until the active JWT signing key expires",
                jwt,
            )?;
        }
        if let Some(spire) = &self.spire {
            gauge(
                &mut encoder,
                "tessera_spire_seconds_since_last_sync",
                "Seconds since the last good sync with the SPIRE Server (since the daemon started if there never \
                 was one)",
                spire.seconds_since_or_start(now),
            )?;
        }
        counter(
            &mut encoder,
            "tessera_digest_cache_hits",
            "File digests served from the attestors' cache (file not read)",
            stats.hits,
        )?;
        counter(
            &mut encoder,
            "tessera_digest_cache_misses",
            "File digests computed by reading the file",
            stats.misses,
        )?;
        gauge(&mut encoder, "tessera_digest_cache_entries", "File versions in the digest cache", stats.entries as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::registry::Registry as Entries;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn metrics() -> (Metrics, Arc<crate::ca::Ca>, tempfile::TempDir, Arc<FakeClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::at_unix(1_700_000_000));
        let ca = Arc::new(
            crate::ca::Ca::open(dir.path(), &"t.example".parse().unwrap(), Duration::from_secs(4), None, clock.now())
                .unwrap(),
        );
        (Metrics::new(Some(ca.clone()), None, m_policy(), clock.clone()), ca, dir, clock)
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    #[test]
    fn events_become_bounded_counters() {
        let (m, _ca, _dir, _clock) = metrics();
        let no_entry = Refusal::NoEntry {
            exe: tessera_attestors::ExeEvidence { path: Some("/secret/path".into()), sha256: Some("ab".repeat(32)) },
            selectors: vec!["unix:uid:1".into()],
        };
        m.on_event(&Event::Refused {
            rpc: crate::events::Call::FetchX509Svid.into(),
            pid: Some(42),
            uid: 1,
            why: no_entry,
        });
        m.on_event(&Event::AdminRefused { uid: Some(7), pid: None, method: "GET".into(), path: "/x".into() });
        m.on_event(&Event::AttestationFinished { ok: false, duration: Duration::from_millis(3) });
        m.on_event(&Event::StreamOpened);
        m.on_event(&Event::StreamOpened);
        m.on_event(&Event::StreamClosed);
        let rule = crate::registry::DenyRule {
            id: "r-1".into(),
            target: crate::registry::DenyTarget::SpiffeId("spiffe://t.example/a".parse().unwrap()),
            reason: "r".into(),
            origin: crate::registry::deny::Origin::Config,
        };
        m.on_event(&Event::Revoked { rule: rule.into(), by_uid: 0, by_pid: None, matched_now: Default::default() });
        let text = m.openmetrics().unwrap();
        assert_eq!(
            line(&text, "tessera_refusals_total{reason=\"no_entry\"}"),
            "tessera_refusals_total{reason=\"no_entry\"} 1"
        );
        assert!(text.contains("tessera_refusals_total{reason=\"admin_denied\"} 1"), "{text}");
        assert!(text.contains("tessera_attestations_total{result=\"failure\"} 1"), "{text}");
        assert!(text.contains("tessera_attestation_duration_seconds_bucket{le=\"0.004\"} 1"), "{text}");
        assert!(text.contains("tessera_open_streams 1\n"), "{text}");
        assert!(text.contains("tessera_revocations_total 1\n"), "{text}");
        // Nothing about the caller leaks into labels.
        // (Label values only: a gauge's value may well contain the digits 42.)
        let labels: String = text.lines().filter_map(|l| l.split_once('{').map(|(_, rest)| rest)).collect();
        assert!(!labels.contains("secret") && !labels.contains("abab") && !labels.contains("42"), "{text}");
        assert!(!text.contains("secret") && !text.contains("abab"), "{text}");
    }

    #[test]
    fn spire_sync_age_is_read_at_scrape_time() {
        let (m, _ca, _dir, clock) = metrics();
        assert!(!m.openmetrics().unwrap().contains("tessera_spire"), "standalone: no SPIRE gauge");
        let policy = m_policy();
        let last = Arc::new(LastSync::new(clock.now()));
        let m = Metrics::new(None, Some(last.clone()), policy, clock.clone());
        last.set(clock.now() - Duration::from_secs(30));
        let age = |m: &Metrics| -> f64 {
            let text = m.openmetrics().unwrap();
            line(&text, "tessera_spire_seconds_since_last_sync ").rsplit(' ').next().unwrap().parse().unwrap()
        };
        let first = age(&m);
        assert_eq!(first, 30.0);
        // No event in between: the age still grows (not frozen at the last sync event).
        clock.advance(Duration::from_secs(60));
        assert_eq!(age(&m), 90.0);
    }

    fn m_policy() -> watch::Receiver<Arc<Policy>> {
        let policy = Policy {
            registry: Entries::new(vec![]),
            attestor: Arc::new(tessera_attestors::Attestor::new(Default::default())),
            jwt_issuer: None,
            federated: BTreeMap::new(),
            deny: Default::default(),
            attest_base: Default::default(),
            delegation_issuers: Default::default(),
            authz: None,
            detail_types: Default::default(),
        };
        watch::channel(Arc::new(policy)).1
    }

    #[test]
    fn rotations_are_counted_by_kind() {
        let (m, ca, _dir, clock) = metrics();
        m.on_event(&Event::CaRotated);
        let text = m.openmetrics().unwrap();
        assert!(text.contains("tessera_key_rotations_total{kind=\"x509\"} 0"), "nothing new yet: {text}");
        // TTL 4 s: successors for both kinds at half-life.
        clock.advance(Duration::from_secs(3));
        assert!(ca.rotate_if_due(clock.now()).unwrap());
        m.on_event(&Event::CaRotated);
        let text = m.openmetrics().unwrap();
        assert!(text.contains("tessera_key_rotations_total{kind=\"x509\"} 1"), "{text}");
        assert!(text.contains("tessera_key_rotations_total{kind=\"jwt\"} 1"), "{text}");
        let expiry: f64 = line(&text, "tessera_ca_expiry_seconds ").rsplit(' ').next().unwrap().parse().unwrap();
        assert!(expiry > 0.0 && expiry <= 4.0, "{expiry}");
    }
}
