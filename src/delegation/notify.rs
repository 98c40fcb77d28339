//! `[approvals] notify_url`: each new pending approval is POSTed there as JSON (`approval_id`,
//! `agent`, `owner`, `user`, `scope`, `audience`, `authorization_details`, `expires_at`), so the
//! user hears of it (a chat message, a push notification). Never in the exchange's way: a
//! spawned task per approval, at most [`MAX_IN_FLIGHT`] at once (more are dropped and logged),
//! each tried [`TRIES`] times with a doubling pause, every try bounded by [`TRY_TIMEOUT`]. Any 2xx
//! answer is delivery. The body names no token.

use super::approvals::Approval;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Notifications being delivered at once (each a task with its body).
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Tries per notification, the first pause between them (doubling), and the bound of one try.
pub(crate) const TRIES: u32 = 4;
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook client.
pub(crate) struct Notifier {
    url: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    slots: Arc<Semaphore>,
}

/// The webhook's JSON for an approval.
pub(crate) fn payload(a: &Approval) -> Value {
    json!({
        "approval_id": a.approval_id,
        "agent": a.agent,
        "owner": a.owner,
        "user": a.user,
        "scope": a.scope,
        "audience": a.audience,
        "authorization_details": a.authorization_details,
        "expires_at": a.expires_at,
    })
}

impl Notifier {
    /// A client for `url` (http, or https trusting `ca_file` or the system roots).
    pub(crate) fn new(url: http::Uri, ca_file: Option<&Path>) -> Result<Self, String> {
        let tls = crate::gateway::tls::client_config(ca_file, false)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // http:// and https:// alike (the config allows both); never through a proxy.
        let connector = HttpsConnector::from((http, tls));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { url, client, slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)) })
    }

    /// Deliver `a` in the background (or drop it, logged, when [`MAX_IN_FLIGHT`] are under way:
    /// false).
    pub(crate) fn notify(&self, a: &Approval) -> bool {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(approval = %a.approval_id, "approval notification dropped: {MAX_IN_FLIGHT} are being delivered");
            return false;
        };
        let body = Bytes::from(payload(a).to_string());
        let (client, url, id) = (self.client.clone(), self.url.clone(), a.approval_id.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut pause = FIRST_PAUSE;
            for attempt in 1..=TRIES {
                match deliver(&client, &url, body.clone()).await {
                    Ok(()) => {
                        tracing::info!(approval = %id, attempt, "approval notification delivered");
                        return;
                    }
                    Err(why) if attempt < TRIES => {
                        tracing::debug!(approval = %id, attempt, "approval notification failed ({why}); retrying");
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                    }
                    Err(why) => {
                        tracing::warn!(approval = %id, tries = TRIES, "approval notification not delivered: {why}")
                    }
                }
            }
        });
        true
    }
}

async fn deliver(
    client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: &http::Uri,
    body: Bytes,
) -> Result<(), String> {
    let req = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("tessera/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(TRY_TIMEOUT, async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read (a bounded part of) the answer so the connection can be reused.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            http_body_util::Limited::new(resp.into_body(), 64 << 10).collect(),
        )
        .await;
        Ok::<_, String>(status)
    })
    .await
    .map_err(|_| format!("no answer within {}s", TRY_TIMEOUT.as_secs()))??;
    if answer.is_success() { Ok(()) } else { Err(format!("answered {answer}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delegation::approvals::{Approvals, NewApproval};

    fn approval() -> Approval {
        Approvals::default()
            .open(NewApproval {
                agent: "spiffe://t/a".into(),
                agent_uid: 1,
                agent_pid: None,
                owner: Some("team".into()),
                user: "alice".into(),
                scope: vec!["booking:create".into()],
                audience: "https://api".into(),
                authorization_details: Some(json!([{ "type": "t", "n": 1 }])),
                fingerprint: [0; 32],
                user_issuer: None,
                subject_token_sha256: [0; 32],
            })
            .unwrap()
    }

    #[test]
    fn the_payload_names_the_request_and_no_token() {
        let a = approval();
        let p = payload(&a);
        let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["agent", "approval_id", "audience", "authorization_details", "expires_at", "owner", "scope", "user"]
        );
        assert_eq!(p["authorization_details"][0]["n"], 1);
    }

    /// A webhook that never answers: MAX_IN_FLIGHT notifications wait on it, the next is dropped
    /// at once (the exchange never waits).
    #[tokio::test]
    async fn at_most_max_in_flight_then_dropped() {
        crate::install_crypto_provider();
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap()).parse().unwrap();
        let n = Notifier::new(url, None).unwrap();
        let a = approval();
        for _ in 0..MAX_IN_FLIGHT {
            assert!(n.notify(&a));
        }
        assert!(!n.notify(&a), "the next one is dropped");
    }
}
