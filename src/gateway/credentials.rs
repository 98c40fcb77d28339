//! The credential broker: the header value a route injects, from the credential's source.
//!
//! - `file` and `systemd` secrets are read when first used and again whenever the file changes
//!   (stat per call), so rotating a key needs no reload. A changed file that is unusable (world
//!   readable, empty, gone) does not take the credential down: the last good secret stays in use
//!   and the problem is logged once per change.
//! - OAuth sources fetch a token from the endpoint per (credential, agent), reuse it until
//!   shortly before it expires, fetch once for any number of concurrent callers, and back off
//!   (1 s doubling to 60 s) after a failure, failing fast meanwhile: an endpoint that is down
//!   must not be hammered by every request of every agent.
//!
//! Secrets and tokens stay in wiped buffers and never reach a log line or an error: those carry
//! the credential's name and source kind only.

use super::tls;
use crate::caller::Caller;
use crate::clock::Clock;
use crate::config::gateway::{Credential, CredentialSource, TokenEndpoint, secret_file_problem};
use crate::issuer::Issuer;
use crate::secret::BearerToken;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tls::FileStamp;
use zeroize::Zeroizing;

/// The whole token request, connect to last body byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// A token response is a small JSON object; anything bigger is not one.
const MAX_ANSWER: usize = 64 << 10;
/// The shortest token life accepted.
const MIN_LIFE: Duration = Duration::from_secs(10);
/// The life assumed when the endpoint gives no `expires_in` (RFC 6749 §5.1 makes it optional).
const DEFAULT_LIFE: Duration = Duration::from_secs(300);
/// The longest a fetched token is reused, whatever the endpoint says.
const MAX_LIFE: Duration = Duration::from_secs(24 * 3600);
/// A token is refreshed this long before it expires, at most (and at most 10 % of its life).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Agents cached per credential; beyond, expired entries are dropped first, then idle ones.
const MAX_AGENTS: usize = 10_000;
/// Longest endpoint-supplied text kept in an error reason.
const MAX_REASON: usize = 300;

/// The header a request carries upstream. The value is a secret: marked sensitive (HPACK never
/// indexes it) and never printed by `Debug`.
pub(crate) struct Injected {
    pub name: HeaderName,
    pub value: HeaderValue,
}

impl std::fmt::Debug for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injected")
            .field("name", &self.name)
            .field("value", &format_args!("<{} bytes, redacted>", self.value.len()))
            .finish()
    }
}

/// Why no header could be injected. The server answers `Unavailable` with 502.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CredentialError {
    /// The route names a credential the config does not define (a reload race at worst: the
    /// config check refuses such routes).
    #[error("no credential named {0:?}")]
    Unknown(String),
    /// The secret cannot be had now (file unusable, token endpoint down or refusing).
    #[error("credential {credential:?} is unavailable: {reason}")]
    Unavailable { credential: String, reason: String },
    /// The source needs the agent's identity and the caller carries none.
    #[error("credential {credential:?} needs the calling agent's SPIFFE ID")]
    NoIdentity { credential: String },
}

impl CredentialError {
    /// The text for an error body: names and endpoint answers, never a secret.
    pub(crate) fn reason(&self) -> String {
        self.to_string()
    }
}

/// Serves the header for each configured credential.
pub(crate) struct Broker {
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    connect_timeout: Duration,
    issuer: Arc<dyn Issuer>,
    clock: Arc<dyn Clock>,
    /// `$CREDENTIALS_DIRECTORY` as the daemon started with it.
    credentials_dir: Option<PathBuf>,
}

impl Broker {
    pub(crate) fn new(
        creds: &[Arc<Credential>],
        connect_timeout: Duration,
        issuer: Arc<dyn Issuer>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        Self::with_credentials_dir(creds, connect_timeout, issuer, clock, dir)
    }

    /// [`Self::new`] with systemd's credentials directory given rather than read from the
    /// environment (tests: the environment is shared by every test thread).
    pub(crate) fn with_credentials_dir(
        creds: &[Arc<Credential>],
        connect_timeout: Duration,
        issuer: Arc<dyn Issuer>,
        clock: Arc<dyn Clock>,
        credentials_dir: Option<PathBuf>,
    ) -> Self {
        let broker = Self { slots: RwLock::new(HashMap::new()), connect_timeout, issuer, clock, credentials_dir };
        broker.update(creds);
        broker
    }

    /// A reloaded config's credentials. Those whose definition did not change keep what they
    /// hold (the file's last good secret, the fetched tokens, the backoff).
    pub(crate) fn update(&self, creds: &[Arc<Credential>]) {
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::take(&mut *slots);
        for c in creds {
            let slot = match old.get(&c.name) {
                Some(s) if *s.def == **c => s.clone(),
                _ => Arc::new(Slot::new(c.clone(), self.credentials_dir.as_deref())),
            };
            slots.insert(c.name.clone(), slot);
        }
    }

    /// The header `credential` puts on a request of `caller` (narrowed to the one identity the
    /// route serves: its first entry is the agent).
    pub(crate) async fn header(&self, credential: &str, caller: &Caller) -> Result<Injected, CredentialError> {
        let slot = self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(credential)
            .cloned()
            .ok_or_else(|| CredentialError::Unknown(credential.to_owned()))?;
        let unavailable = |reason: String| CredentialError::Unavailable { credential: credential.to_owned(), reason };
        let secret = match &slot.kind {
            SlotKind::Static(file) => current(file, &slot.def).map_err(unavailable)?,
            SlotKind::Fetched(f) => {
                let Fetched { endpoint, client_secret, tokens } = &**f;
                let agent = caller
                    .entries
                    .first()
                    .ok_or_else(|| CredentialError::NoIdentity { credential: credential.to_owned() })?;
                let token = self
                    .token(&slot.def, endpoint, client_secret.as_ref(), tokens, &agent.spiffe_id.to_string(), caller)
                    .await
                    .map_err(unavailable)?;
                Zeroizing::new(token.expose().to_owned())
            }
        };
        let value = Zeroizing::new(slot.def.format.replacen("{secret}", &secret, 1));
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| unavailable("the secret holds characters that cannot go in a header".into()))?;
        value.set_sensitive(true);
        Ok(Injected { name: slot.def.header.clone(), value })
    }

    /// The agent's current token: cached, else fetched (once for all concurrent callers), else
    /// the failure of the last fetch while its backoff lasts.
    async fn token(
        &self,
        def: &Credential,
        endpoint: &TokenEndpoint,
        client_secret: Option<&Mutex<FileSecret>>,
        tokens: &TokenCache,
        agent: &str,
        caller: &Caller,
    ) -> Result<Arc<BearerToken>, String> {
        let cell = tokens.cell(agent, self.clock.monotonic());
        // Held across the fetch: the single flight. Callers for the same agent wait here and
        // then find the token (or the failure) it left.
        let mut state = cell.lock().await;
        let start = self.clock.monotonic();
        if let Some(t) = &state.token
            && start < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        if let Some(f) = &state.failure
            && start < f.retry_at
        {
            // Still valid (in its refresh window): better than nothing while the endpoint is down.
            return state.valid_token(start).ok_or_else(|| f.reason.clone());
        }
        match self.fetch(def, endpoint, client_secret, caller).await {
            Ok((token, life)) => {
                let margin = REFRESH_MARGIN.min(life / 10);
                let token = Arc::new(token);
                state.token =
                    Some(Fresh { token: token.clone(), refresh_at: start + life - margin, expires_at: start + life });
                state.failure = None;
                tracing::debug!(credential = %def.name, source = def.source.kind(), agent, life_s = life.as_secs(), "token fetched");
                Ok(token)
            }
            Err(reason) => {
                let backoff = state.failure.as_ref().map_or(FIRST_BACKOFF, |f| (f.backoff * 2).min(MAX_BACKOFF));
                tracing::warn!(
                    credential = %def.name,
                    source = def.source.kind(),
                    agent,
                    reason = %reason,
                    retry_in_s = backoff.as_secs(),
                    "token fetch failed"
                );
                state.failure =
                    Some(Failure { reason: reason.clone(), retry_at: self.clock.monotonic() + backoff, backoff });
                state.valid_token(self.clock.monotonic()).ok_or(reason)
            }
        }
    }

    /// One token request; the token and how long to use it.
    async fn fetch(
        &self,
        def: &Credential,
        endpoint: &TokenEndpoint,
        client_secret: Option<&Mutex<FileSecret>>,
        caller: &Caller,
    ) -> Result<(BearerToken, Duration), String> {
        // What was sent that the endpoint might echo: scrubbed from any reason it gives.
        let mut sent: Vec<Zeroizing<String>> = Vec::new();
        let svid = |sent: &mut Vec<Zeroizing<String>>| -> Result<Zeroizing<String>, String> {
            let issued = self
                .issuer
                .jwt_svids(caller, std::slice::from_ref(&endpoint.audience), self.clock.now())
                .map_err(|e| format!("could not mint the agent's JWT-SVID: {e}"))?;
            let first = issued.into_iter().next().ok_or("could not mint the agent's JWT-SVID: no identity")?;
            let token = Zeroizing::new(first.svid.token);
            sent.push(token.clone());
            Ok(token)
        };
        let token_exchange = matches!(def.source, CredentialSource::TokenExchange(_));
        // Built in a block: the serializer is not `Send` and must be gone before the first await.
        let mut authorization = None;
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            match &def.source {
                CredentialSource::OAuthClientCredentials(_) => {
                    form.append_pair("grant_type", "client_credentials");
                }
                CredentialSource::JwtBearer(_) => {
                    let assertion = svid(&mut sent)?;
                    form.append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
                    form.append_pair("assertion", &assertion);
                }
                CredentialSource::TokenExchange(_) => {
                    let subject = svid(&mut sent)?;
                    form.append_pair("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange");
                    form.append_pair("subject_token", &subject);
                    form.append_pair("subject_token_type", "urn:ietf:params:oauth:token-type:jwt");
                    // No `audience` parameter: that names the target service (RFC 8693 §2.1),
                    // while the source's `audience` is the SVID's `aud`, the STS itself.
                    form.append_pair("requested_token_type", "urn:ietf:params:oauth:token-type:access_token");
                }
                CredentialSource::File(_) | CredentialSource::Systemd(_) => {
                    return Err("not a token endpoint source".into());
                }
            }
            if let Some(scope) = &endpoint.scope {
                form.append_pair("scope", scope);
            }
            match (&endpoint.client_id, client_secret) {
                (Some(id), Some(secret)) => {
                    let secret = current(secret, def)?;
                    sent.push(secret.clone());
                    authorization = Some(basic_auth(id, &secret)?);
                }
                // A public client identifies itself in the body (RFC 6749 §3.2.1).
                (Some(id), None) => {
                    form.append_pair("client_id", id);
                }
                (None, _) => {}
            }
            Zeroizing::new(form.finish())
        };

        // A client per fetch: a token is fetched at most once per (credential, agent) per token
        // life, and a fresh connection each time sees a rotated CA file or a moved endpoint.
        // The connect timeout covers TCP; the TLS handshake counts against FETCH_TIMEOUT.
        let config = tls::client_config(endpoint.ca_file.as_deref(), false)?;
        let client = tls::https_client::<Full<Bytes>>(config, self.connect_timeout);
        let mut request = http::Request::post(endpoint.token_url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json");
        if let Some(a) = authorization {
            request = request.header(http::header::AUTHORIZATION, a);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| format!("cannot build the token request: {e}"))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| format!("token endpoint: {}", chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("token endpoint answer: {}", chain(e.as_ref())))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, answer) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("token endpoint did not answer within {} s", FETCH_TIMEOUT.as_secs()))??;
        let scrub = |text: String| -> String {
            let mut text = text;
            for s in &sent {
                if !s.is_empty() {
                    text = text.replace(s.as_str(), "[redacted]");
                }
            }
            text
        };
        if !status.is_success() {
            return Err(scrub(refusal(status, &answer)));
        }
        parse_token(&answer, token_exchange).map_err(scrub)
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1), marked sensitive.
fn basic_auth(id: &str, secret: &str) -> Result<HeaderValue, String> {
    use base64::Engine as _;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = Zeroizing::new(format!("{}:{}", enc(id), Zeroizing::new(enc(secret)).as_str()));
    let value = Zeroizing::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())));
    let mut value =
        HeaderValue::from_str(&value).map_err(|_| "the client credentials cannot go in a header".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// An error and its causes on one line (hyper's own message is just "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    cap(&text)
}

/// Printable text, at most [`MAX_REASON`] characters.
fn cap(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX_REASON).collect();
    if text.chars().count() > MAX_REASON {
        out.push('…');
    }
    out
}

/// The reason of a non-2xx answer: its `error` and `error_description` (RFC 6749 §5.2) if any.
fn refusal(status: http::StatusCode, answer: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorAnswer {
        error: Option<String>,
        error_description: Option<String>,
    }
    let mut reason = format!("token endpoint answered {status}");
    if let Ok(e) = serde_json::from_slice::<ErrorAnswer>(answer) {
        if let Some(code) = e.error {
            reason.push_str(": ");
            reason.push_str(&code);
        }
        if let Some(d) = e.error_description {
            reason.push_str(" (");
            reason.push_str(&d);
            reason.push(')');
        }
    }
    cap(&reason)
}

/// A successful answer (RFC 6749 §5.1, RFC 8693 §2.2.1): the token and its life.
fn parse_token(answer: &[u8], token_exchange: bool) -> Result<(BearerToken, Duration), String> {
    #[derive(serde::Deserialize)]
    struct TokenAnswer {
        access_token: Option<String>,
        token_type: Option<String>,
        /// A number by the RFC; some servers send a string.
        expires_in: Option<serde_json::Value>,
    }
    let parsed: TokenAnswer =
        serde_json::from_slice(answer).map_err(|_| "token endpoint answer is not a token response".to_owned())?;
    let token = BearerToken::new(
        parsed.access_token.filter(|t| !t.is_empty()).ok_or("token endpoint answered without an access_token")?,
    );
    match parsed.token_type.as_deref() {
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        // RFC 8693 §2.2.1: N_A when the token is not an OAuth access token; it is still what
        // the upstream expects in the header.
        Some(t) if token_exchange && t.eq_ignore_ascii_case("n_a") => {}
        Some(t) => return Err(cap(&format!("token endpoint issued a {t:?} token, not a bearer token"))),
    }
    let life = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .map_or(DEFAULT_LIFE, Duration::from_secs)
    .min(MAX_LIFE);
    // A token that lives only seconds would be fetched again on nearly every call: the
    // endpoint hammered, every call waiting for it. Refused (backed off like a failure).
    if life < MIN_LIFE {
        return Err(cap(&format!(
            "token endpoint issued a token that expires in {}s (at least {}s needed)",
            life.as_secs(),
            MIN_LIFE.as_secs()
        )));
    }
    Ok((token, life))
}

/// One credential as configured, and what the broker holds for it.
struct Slot {
    def: Arc<Credential>,
    kind: SlotKind,
}

enum SlotKind {
    /// `file` and `systemd`.
    Static(Mutex<FileSecret>),
    /// The OAuth sources.
    Fetched(Box<Fetched>),
}

struct Fetched {
    endpoint: TokenEndpoint,
    /// Client credentials: the secret half, from its file.
    client_secret: Option<Mutex<FileSecret>>,
    tokens: TokenCache,
}

impl Slot {
    fn new(def: Arc<Credential>, credentials_dir: Option<&Path>) -> Self {
        let kind = match &def.source {
            CredentialSource::File(path) => SlotKind::Static(Mutex::new(FileSecret::new(path.clone(), Check::Owner))),
            CredentialSource::Systemd(name) => {
                // Without the directory there is nothing to read; the error says so on use.
                let path = credentials_dir.map(|d| d.join(name)).unwrap_or_default();
                SlotKind::Static(Mutex::new(FileSecret::new(path, Check::Systemd)))
            }
            CredentialSource::OAuthClientCredentials(e)
            | CredentialSource::JwtBearer(e)
            | CredentialSource::TokenExchange(e) => SlotKind::Fetched(Box::new(Fetched {
                endpoint: e.clone(),
                client_secret: e
                    .client_secret_file
                    .as_ref()
                    .map(|p| Mutex::new(FileSecret::new(p.clone(), Check::Owner))),
                tokens: TokenCache::new(MAX_AGENTS),
            })),
        };
        Self { def, kind }
    }
}

/// The file's secret now (a plain function: the guard must never live across an await).
fn current(file: &Mutex<FileSecret>, def: &Credential) -> Result<Zeroizing<String>, String> {
    file.lock().unwrap_or_else(|p| p.into_inner()).current(def)
}

/// What a secret file must be besides non-empty.
#[derive(Clone, Copy)]
enum Check {
    /// Root- or daemon-owned, no group/other bits ([`secret_file_problem`]).
    Owner,
    /// Under `$CREDENTIALS_DIRECTORY`: systemd owns the directory and its modes.
    Systemd,
}

/// A secret read from a file, re-read when the file changes; the last good one kept when the
/// file turns bad.
struct FileSecret {
    path: PathBuf,
    check: Check,
    /// The file version last looked at (inner `None`: it was missing); `None`: never looked.
    seen: Option<Option<FileStamp>>,
    good: Option<Zeroizing<String>>,
    /// Why the file as last seen cannot be used.
    problem: Option<String>,
}

impl FileSecret {
    fn new(path: PathBuf, check: Check) -> Self {
        Self { path, check, seen: None, good: None, problem: None }
    }

    /// The secret now: re-read if the file changed since the last look.
    fn current(&mut self, def: &Credential) -> Result<Zeroizing<String>, String> {
        let stamp = FileStamp::read(&self.path).ok();
        if self.seen != Some(stamp) {
            self.seen = Some(stamp);
            match self.load() {
                Ok(secret) => {
                    self.good = Some(secret);
                    self.problem = None;
                }
                Err(problem) => {
                    // Once per change of the file: the stamp is remembered.
                    if self.good.is_some() {
                        tracing::warn!(credential = %def.name, source = def.source.kind(), %problem,
                            "secret file changed and cannot be used; keeping the last good secret");
                    } else {
                        tracing::warn!(credential = %def.name, source = def.source.kind(), %problem,
                            "secret file cannot be used");
                    }
                    self.problem = Some(problem);
                }
            }
        }
        match &self.good {
            Some(secret) => Ok(secret.clone()),
            None => Err(self.problem.clone().unwrap_or_else(|| "no secret".into())),
        }
    }

    fn load(&self) -> Result<Zeroizing<String>, String> {
        let path = &self.path;
        match self.check {
            Check::Owner => {
                if let Some((why, _fix)) = secret_file_problem(path) {
                    return Err(why);
                }
            }
            Check::Systemd => {
                if path.as_os_str().is_empty() {
                    return Err("$CREDENTIALS_DIRECTORY is not set (no LoadCredential= in the unit?)".into());
                }
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?);
        let text = std::str::from_utf8(&bytes).map_err(|_| format!("{} is not text", path.display()))?;
        let secret = text.trim_end_matches(['\n', '\r', ' ', '\t']);
        if secret.trim().is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        // Checked here, not when injecting: a bad new file must leave the good old secret in use.
        if !secret.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(format!(
                "{} holds characters that cannot go in a header (one line of text expected)",
                path.display()
            ));
        }
        Ok(Zeroizing::new(secret.to_owned()))
    }
}

/// Tokens of one credential by agent SPIFFE ID.
struct TokenCache {
    agents: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TokenState>>>>,
    max: usize,
}

#[derive(Default)]
struct TokenState {
    token: Option<Fresh>,
    failure: Option<Failure>,
}

struct Fresh {
    token: Arc<BearerToken>,
    /// Fetch a new one from here on.
    refresh_at: Instant,
    expires_at: Instant,
}

struct Failure {
    reason: String,
    /// No fetch before this (the backoff).
    retry_at: Instant,
    backoff: Duration,
}

impl TokenState {
    fn valid_token(&self, now: Instant) -> Option<Arc<BearerToken>> {
        self.token.as_ref().filter(|t| now < t.expires_at).map(|t| t.token.clone())
    }

    /// Whether dropping this entry loses anything (a usable token, a backoff in force).
    fn holds_something(&self, now: Instant) -> bool {
        self.valid_token(now).is_some() || self.failure.as_ref().is_some_and(|f| now < f.retry_at)
    }
}

impl TokenCache {
    fn new(max: usize) -> Self {
        Self { agents: Mutex::new(HashMap::new()), max }
    }

    fn cell(&self, agent: &str, now: Instant) -> Arc<tokio::sync::Mutex<TokenState>> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cell) = agents.get(agent) {
            return cell.clone();
        }
        if agents.len() >= self.max {
            // In use: someone holds the Arc (a fetch, or waiters). Busy: its lock is taken.
            let idle = |c: &Arc<tokio::sync::Mutex<TokenState>>| Arc::strong_count(c) == 1 && c.try_lock().is_ok();
            agents.retain(|_, c| !idle(c) || c.try_lock().is_ok_and(|s| s.holds_something(now)));
            if agents.len() >= self.max {
                // Still full of live tokens: drop idle ones (refetched when next used).
                let excess = agents.len() + 1 - self.max;
                let drop: Vec<String> =
                    agents.iter().filter(|(_, c)| idle(c)).map(|(k, _)| k.clone()).take(excess).collect();
                for k in drop {
                    agents.remove(&k);
                }
            }
        }
        agents.entry(agent.to_owned()).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.agents.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests;
