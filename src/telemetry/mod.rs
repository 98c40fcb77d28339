//! Telemetry: Prometheus metrics ([`metrics`]), liveness and readiness ([`health`]) and systemd's
//! notify protocol ([`systemd`]). `/metrics`, `/live` and `/ready` are served on the admin socket
//! always, and on `[telemetry] listen` (plain HTTP, for scrapers) when configured.

pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod systemd;
pub(crate) mod unmanaged;

use crate::config::Config;
use crate::events::Events;
use crate::issuer::KeySource;
use crate::net::http::{self, Answer, Method, Request, Response};
use crate::registry::Policy;
use crate::spire::last_sync::LastSync;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TelemetryError {
    #[error(
        "cannot listen on {addr} for telemetry: {source}; fix [telemetry] listen (another address or port), \
         or remove it to serve metrics on the admin socket only"
    )]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

/// The daemon's telemetry: what the endpoints answer from.
#[derive(Clone)]
pub(crate) struct Telemetry {
    metrics: Arc<metrics::Metrics>,
    health: Arc<health::Health>,
}

/// `application/openmetrics-text` (what prometheus-client's text encoder writes).
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Telemetry {
    /// Subscribe metrics, readiness and the systemd notifier to the spine (before it is shared),
    /// and start the systemd watchdog when systemd asked for one.
    /// `spire`: SPIRE mode's record of the last good sync (its age is a gauge and a `/ready` field).
    pub(crate) fn start(
        ca: Option<Arc<dyn KeySource>>,
        spire: Option<Arc<LastSync>>,
        policy: watch::Receiver<Arc<Policy>>,
        events: &mut Events,
        shutdown: watch::Receiver<bool>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        let metrics = Arc::new(metrics::Metrics::new(ca.clone(), spire.clone(), policy, clock.clone()));
        let health = Arc::new(health::Health::new(ca, spire, shutdown.clone(), clock));
        events.subscribe(metrics.clone());
        events.subscribe(health.clone());
        events.subscribe(Arc::new(systemd::Notifier));
        systemd::spawn_watchdog(shutdown);
        Self { metrics, health }
    }

    /// Serve the endpoints on the admin socket, and on `[telemetry] listen` when configured.
    pub(crate) async fn serve(
        &self,
        config: &Config,
        admin_routes: &mut crate::net::http::Routes,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), TelemetryError> {
        for path in ["/metrics", "/live", "/ready"] {
            let t = self.clone();
            admin_routes.add(Method::GET, path, move |r: Request| {
                let t = t.clone();
                async move { t.answer(&r) }
            });
        }
        let Some(addr) = config.telemetry.listen else { return Ok(()) };
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| TelemetryError::Bind { addr, source })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "telemetry listens beyond loopback: anyone who reaches it reads the metrics");
        }
        tracing::info!(%addr, "serving /metrics, /live and /ready");
        let t = self.clone();
        let handler = move |r: Request| {
            let t = t.clone();
            async move {
                match (r.method == Method::GET, r.path()) {
                    (true, "/metrics" | "/live" | "/ready") => t.answer(&r),
                    (false, "/metrics" | "/live" | "/ready") => http::method_not_allowed(),
                    _ => http::not_found(),
                }
            }
        };
        tokio::spawn(http::serve_tcp(listener, None, Arc::new(handler), telemetry_limits(), shutdown));
        Ok(())
    }

    /// `/metrics`, `/live` or `/ready`.
    fn answer(&self, request: &Request) -> Response {
        match request.path() {
            "/metrics" => self.metrics_response(request),
            "/live" => http::text(Answer::Ok, "live\n"),
            "/ready" => {
                let r = self.health.readiness();
                http::json(if r.ready { Answer::Ok } else { Answer::Unavailable }, &r)
            }
            _ => http::not_found(),
        }
    }

    fn metrics_response(&self, request: &Request) -> Response {
        let accept = request.headers.get(::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (encoded, content_type) = if wants_prometheus_text(accept) {
            (self.metrics.prometheus_text(), prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
        } else {
            (self.metrics.openmetrics(), OPENMETRICS_CONTENT_TYPE)
        };
        match encoded {
            Ok(body) => http::with_body(Answer::Ok, content_type, body),
            Err(_) => http::text(Answer::Internal, "cannot encode metrics\n"),
        }
    }
}

/// Scrapers are few: a small connection budget, short timeouts. One source (a host; all of
/// loopback is one) holds at most a quarter of the budget, and an eighth is kept for sources
/// holding none, so a flood from one host leaves the others' scrapes and probes served.
fn telemetry_limits() -> http::Limits {
    http::Limits {
        max_connections: 64,
        max_connections_per_source: 16,
        reserved_for_new_sources: 8,
        max_body: 4096,
        ..http::Limits::default()
    }
}

/// True when `Accept` prefers the classic text format (`text/plain`) over OpenMetrics. OpenMetrics
/// is the default: no Accept, `*/*`, or a tie.
fn wants_prometheus_text(accept: &str) -> bool {
    let mut openmetrics = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" | "*/*" | "application/*" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" => text = text.max(q),
            _ => {}
        }
    }
    text > openmetrics
}

#[cfg(test)]
mod tests {
    use super::wants_prometheus_text;

    #[test]
    fn accept_negotiation() {
        assert!(!wants_prometheus_text(""));
        assert!(!wants_prometheus_text("*/*"));
        assert!(wants_prometheus_text("text/plain; version=0.0.4"));
        assert!(wants_prometheus_text("text/plain;version=0.0.4;q=0.9,*/*;q=0.1"));
        // What Prometheus sends: OpenMetrics first.
        assert!(!wants_prometheus_text(
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,\
             text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ));
        assert!(!wants_prometheus_text("application/openmetrics-text"));
    }
}
