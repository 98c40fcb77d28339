//! `[gateway]`: the node gateway's listeners, routes and credentials. A route names an upstream
//! (a host, or `*.suffix` in proxy mode), who may use it (`for`), what it allows (methods, paths)
//! and which credential is injected; a credential names a header, its format and where its secret
//! comes from. Secret files are checked here (root- or daemon-owned, no group/other bits, not
//! empty), so `tessera check` and a reload refuse one that the gateway must not read.

use super::Validator;
use crate::spiffe_id::SpiffeId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    socket_path: Option<PathBuf>,
    listen: Option<Spanned<String>>,
    max_request_body: Option<Spanned<u64>>,
    max_header_bytes: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_connections_per_uid: Option<Spanned<u64>>,
    connect_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    credentials: Vec<Spanned<RawCredential>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    host: Spanned<String>,
    prefix: Option<Spanned<String>>,
    #[serde(rename = "for")]
    for_: Spanned<Vec<Spanned<String>>>,
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    paths: Option<Spanned<Vec<Spanned<String>>>>,
    credential: Option<Spanned<String>>,
    ca_file: Option<Spanned<PathBuf>>,
    audience: Option<Spanned<String>>,
    #[serde(default)]
    tunnel: bool,
    max_request_body: Option<Spanned<u64>>,
    transports: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: Spanned<String>,
    header: Spanned<String>,
    format: Option<Spanned<String>>,
    source: Spanned<RawSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    file: Option<Spanned<PathBuf>>,
    systemd: Option<Spanned<String>>,
    oauth_client_credentials: Option<Spanned<RawTokenEndpoint>>,
    jwt_bearer: Option<Spanned<RawTokenEndpoint>>,
    token_exchange: Option<Spanned<RawTokenEndpoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenEndpoint {
    token_url: Spanned<String>,
    client_id: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<PathBuf>>,
    audience: Option<Spanned<String>>,
    scope: Option<String>,
    ca_file: Option<Spanned<PathBuf>>,
}

/// Defaults of the gateway's limits.
pub(crate) const DEFAULT_MAX_REQUEST_BODY: u64 = 32 << 20;
pub(crate) const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;

/// The validated `[gateway]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gateway {
    /// Unix socket (mode 0777: attestation decides), beside the Workload API socket by default.
    pub socket_path: PathBuf,
    /// Loopback TCP listener (base URL and proxy mode).
    pub listen: Option<SocketAddr>,
    pub limits: GatewayLimits,
    pub routes: Vec<Arc<Route>>,
    pub credentials: Vec<Arc<Credential>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GatewayLimits {
    /// Largest request body a route accepts unless it sets its own (bytes).
    pub max_request_body: u64,
    /// Largest request head (request line and headers, bytes).
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
    /// Time to connect (TCP and TLS) to an upstream or a token endpoint.
    pub connect_timeout: Duration,
    /// A keep-alive connection idle this long is closed; an upstream silent this long in the
    /// middle of a response is abandoned.
    pub idle_timeout: Duration,
    /// The whole request, response streaming included.
    pub request_timeout: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
            max_connections: 4096,
            max_connections_per_uid: 512,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// Which upstream hosts a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not `example.com` itself).
    Suffix(String),
}

impl HostPattern {
    pub(crate) fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1 && host.ends_with(s.as_str()) && {
                    let cut = host.len() - s.len() - 1;
                    host.as_bytes()[cut] == b'.'
                }
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// Whom a route serves: one SPIFFE ID, or every ID under a path (`spiffe://td/agents/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdPattern {
    Exact(SpiffeId),
    /// The text before `*` (`spiffe://td/agents/`).
    Prefix(String),
}

impl IdPattern {
    pub(crate) fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            IdPattern::Exact(e) => e == id,
            IdPattern::Prefix(p) => id.to_string().starts_with(p.as_str()),
        }
    }
}

/// A path rule: exact, or a prefix (`/v1/*` matches `/v1/` and everything under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => p == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// One `[[gateway.routes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub name: String,
    pub host: HostPattern,
    /// The upstream port (443 unless the host gave one).
    pub port: u16,
    /// Base URL mode: requests under this path prefix (no trailing `/`) go to `host`, the prefix
    /// stripped.
    pub prefix: Option<String>,
    pub for_ids: Vec<IdPattern>,
    /// None: every method.
    pub methods: Option<Vec<http::Method>>,
    /// None: every path.
    pub paths: Option<Vec<PathPattern>>,
    pub credential: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// The `aud` a delegated token must carry on this route.
    pub audience: String,
    /// CONNECT to `host:port` allowed (a blind tunnel: no injection).
    pub tunnel: bool,
    pub max_request_body: Option<u64>,
    /// How callers may reach it: `unix` (kernel-attested, every selector as strong as its
    /// attestor) and `tcp` (attributed by socket scans: see the README's strength table).
    pub transports: Vec<&'static str>,
}

impl Route {
    pub(crate) fn serves(&self, id: &SpiffeId) -> bool {
        self.for_ids.iter().any(|p| p.matches(id))
    }

    pub(crate) fn allows_method(&self, m: &http::Method) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(m))
    }

    pub(crate) fn allows_path(&self, path: &str) -> bool {
        self.paths.as_ref().is_none_or(|ps| ps.iter().any(|p| p.matches(path)))
    }
}

/// One `[[gateway.credentials]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    pub name: String,
    pub header: http::HeaderName,
    /// The header value with `{secret}` where the secret goes.
    pub format: String,
    pub source: CredentialSource,
}

/// Where a credential's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    /// A root-owned file, not group/world readable, re-read when it changes.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/NAME` (systemd `LoadCredential=`).
    Systemd(String),
    /// RFC 6749 §4.4 with a client secret from a file.
    OAuthClientCredentials(TokenEndpoint),
    /// RFC 7523: the calling agent's JWT-SVID (for `audience`) is the assertion.
    JwtBearer(TokenEndpoint),
    /// RFC 8693 at an external STS: the agent's JWT-SVID (for `audience`) is the subject token.
    TokenExchange(TokenEndpoint),
}

impl CredentialSource {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CredentialSource::File(_) => "file",
            CredentialSource::Systemd(_) => "systemd",
            CredentialSource::OAuthClientCredentials(_) => "oauth_client_credentials",
            CredentialSource::JwtBearer(_) => "jwt_bearer",
            CredentialSource::TokenExchange(_) => "token_exchange",
        }
    }
}

/// A token endpoint and what to ask it for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenEndpoint {
    pub token_url: http::Uri,
    /// Client credentials only.
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// JWT bearer and token exchange: the `aud` of the agent's JWT-SVID (default: token_url).
    pub audience: String,
    pub scope: Option<String>,
    /// The token endpoint's CA (else the system roots).
    pub ca_file: Option<PathBuf>,
}

/// Why a secret file may not be used.
pub(crate) fn secret_file_problem(path: &Path) -> Option<(String, &'static str)> {
    use std::os::unix::fs::MetadataExt;
    let fix = "create it as root with mode 0600 (chmod 600) holding the secret";
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some((format!("cannot read {}: {e}", path.display()), fix)),
    };
    if !meta.is_file() {
        return Some((format!("{} is not a regular file", path.display()), fix));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Some((format!("{} is owned by uid {}, not root", path.display(), meta.uid()), "chown root: it"));
    }
    if meta.mode() & 0o077 != 0 {
        return Some((
            format!("{} has mode {:04o}: group or others may read or change it", path.display(), meta.mode() & 0o7777),
            "chmod 600 it",
        ));
    }
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Some((format!("{} is empty", path.display()), fix)),
        Ok(_) => None,
        Err(e) => Some((format!("cannot read {}: {e}", path.display()), fix)),
    }
}

impl Validator<'_> {
    pub(super) fn gateway(&mut self, raw: Option<&Spanned<RawGateway>>, api_socket: &Path) -> Option<Gateway> {
        let raw = raw?.get_ref();
        let listen = raw.listen.as_ref().and_then(|l| self.gateway_listen(l));
        let d = GatewayLimits::default();
        let count = |v: &mut Self, x: &Option<Spanned<u64>>, key: &str, default: u64, min: u64| match x {
            None => default,
            Some(n) if *n.get_ref() >= min => *n.get_ref(),
            Some(n) => {
                v.issue(
                    n,
                    key,
                    format!("{} is below the minimum of {min}", n.get_ref()),
                    &format!("use at least {min}"),
                );
                default
            }
        };
        let max_request_body = count(self, &raw.max_request_body, "gateway.max_request_body", d.max_request_body, 0);
        let max_header_bytes =
            count(self, &raw.max_header_bytes, "gateway.max_header_bytes", DEFAULT_MAX_HEADER_BYTES, 8192);
        let max_connections =
            count(self, &raw.max_connections, "gateway.max_connections", d.max_connections as u64, 1) as usize;
        let max_connections_per_uid = count(
            self,
            &raw.max_connections_per_uid,
            "gateway.max_connections_per_uid",
            d.max_connections_per_uid as u64,
            1,
        ) as usize;
        let hour = Duration::from_secs(3600);
        let limits = GatewayLimits {
            max_request_body,
            max_header_bytes: usize::try_from(max_header_bytes.min(1 << 20)).unwrap_or(1 << 20),
            max_connections,
            max_connections_per_uid: max_connections_per_uid.min(max_connections),
            connect_timeout: self.duration(&raw.connect_timeout, "gateway.connect_timeout", d.connect_timeout, hour),
            idle_timeout: self.duration(&raw.idle_timeout, "gateway.idle_timeout", d.idle_timeout, hour),
            request_timeout: self.duration(
                &raw.request_timeout,
                "gateway.request_timeout",
                d.request_timeout,
                24 * hour,
            ),
        };
        let credentials: Vec<Arc<Credential>> =
            raw.credentials.iter().enumerate().filter_map(|(i, c)| self.credential(i, c)).map(Arc::new).collect();
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in raw.credentials.iter().enumerate() {
            if !names.insert(c.get_ref().name.get_ref().clone()) {
                self.issue(
                    &c.get_ref().name,
                    &format!("gateway.credentials[{i}].name"),
                    format!("credential {:?} is defined twice", c.get_ref().name.get_ref()),
                    "give each credential its own name",
                );
            }
        }
        let mut route_names = std::collections::BTreeSet::new();
        let mut prefixes = std::collections::BTreeSet::new();
        let mut routes = Vec::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let rr = r.get_ref();
            if !route_names.insert(rr.name.get_ref().clone()) {
                self.issue(
                    &rr.name,
                    &format!("gateway.routes[{i}].name"),
                    format!("route {:?} is defined twice", rr.name.get_ref()),
                    "give each route its own name",
                );
            }
            if let Some(p) = &rr.prefix
                && !prefixes.insert(p.get_ref().trim_end_matches('/').to_owned())
            {
                self.issue(
                    p,
                    &format!("gateway.routes[{i}].prefix"),
                    format!("prefix {:?} is used by two routes", p.get_ref()),
                    "give each route its own prefix",
                );
            }
            if let Some(c) = &rr.credential
                && !names.contains(c.get_ref())
            {
                self.issue(
                    c,
                    &format!("gateway.routes[{i}].credential"),
                    format!("no [[gateway.credentials]] is named {:?}", c.get_ref()),
                    "name a credential defined in [[gateway.credentials]], or remove the key",
                );
            }
            if let Some(route) = self.route(i, rr) {
                routes.push(Arc::new(route));
            }
        }
        Some(Gateway {
            socket_path: raw.socket_path.clone().unwrap_or_else(|| super::beside(api_socket, "gateway.sock")),
            listen,
            limits,
            routes,
            credentials,
        })
    }

    fn gateway_listen(&mut self, l: &Spanned<String>) -> Option<SocketAddr> {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(_) => {
                self.issue(
                    l,
                    "gateway.listen",
                    format!("{:?} is not a loopback address: the gateway serves local processes only", l.get_ref()),
                    "write listen = \"127.0.0.1:4180\" (or [::1]:4180)",
                );
                None
            }
            Err(e) => {
                self.issue(
                    l,
                    "gateway.listen",
                    format!("{:?} is not an address: {e}", l.get_ref()),
                    "write listen = \"127.0.0.1:4180\"",
                );
                None
            }
        }
    }

    fn route(&mut self, i: usize, r: &RawRoute) -> Option<Route> {
        let key = |k: &str| format!("gateway.routes[{i}].{k}");
        let name = r.name.get_ref().clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            self.issue(&r.name, &key("name"), format!("{name:?} is not a route name"), "use letters, digits, - _ .");
        }
        let (host, port) = self.upstream_host(&r.host, &key("host"))?;
        let prefix = match &r.prefix {
            None => None,
            Some(p) => {
                let t = p.get_ref().trim_end_matches('/');
                if !t.starts_with('/') || t.len() < 2 || t.contains(['?', '#', '*', ' ']) {
                    self.issue(
                        p,
                        &key("prefix"),
                        format!("{:?} is not a path prefix", p.get_ref()),
                        "write e.g. prefix = \"/openai\"",
                    );
                    None
                } else {
                    if matches!(host, HostPattern::Suffix(_)) {
                        self.issue(
                            p,
                            &key("prefix"),
                            "a route with a prefix forwards to one host; \"*.\" hosts are for proxy mode".into(),
                            "name one host, or remove the prefix",
                        );
                    }
                    Some(t.to_owned())
                }
            }
        };
        let mut for_ids = Vec::new();
        for f in r.for_.get_ref() {
            let s = f.get_ref();
            if let Some(p) = s.strip_suffix('*') {
                if p.ends_with('/') && format!("{p}x").parse::<SpiffeId>().is_ok() {
                    for_ids.push(IdPattern::Prefix(p.to_owned()));
                    continue;
                }
            } else if let Ok(id) = s.parse::<SpiffeId>() {
                for_ids.push(IdPattern::Exact(id));
                continue;
            }
            self.issue(
                f,
                &key("for"),
                format!("{s:?} is not a SPIFFE ID or a prefix ending in /*"),
                "write e.g. for = [\"spiffe://example.org/agents/support\"] or [\"spiffe://example.org/agents/*\"]",
            );
        }
        if r.for_.get_ref().is_empty() {
            self.issue(
                &r.for_,
                &key("for"),
                "a route must name who may use it".into(),
                "list SPIFFE IDs in for = [...]",
            );
        }
        let methods = r.methods.as_ref().map(|ms| {
            ms.get_ref()
                .iter()
                .filter_map(|m| match http::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(method) if method != http::Method::CONNECT => Some(method),
                    _ => {
                        self.issue(
                            m,
                            &key("methods"),
                            format!("{:?} is not a method a route can allow", m.get_ref()),
                            "write e.g. methods = [\"GET\", \"POST\"] (CONNECT: set tunnel = true instead)",
                        );
                        None
                    }
                })
                .collect()
        });
        let paths = r.paths.as_ref().map(|ps| {
            ps.get_ref()
                .iter()
                .filter_map(|p| {
                    let s = p.get_ref();
                    if !s.starts_with('/') || s.contains(['?', '#']) || s[..s.len().saturating_sub(1)].contains('*') {
                        self.issue(
                            p,
                            &key("paths"),
                            format!("{s:?} is not a path or a prefix ending in /*"),
                            "write e.g. paths = [\"/v1/chat/completions\", \"/v1/files/*\"]",
                        );
                        return None;
                    }
                    Some(match s.strip_suffix('*') {
                        Some(pre) => PathPattern::Prefix(pre.to_owned()),
                        None => PathPattern::Exact(s.clone()),
                    })
                })
                .collect()
        });
        if let (HostPattern::Suffix(_), Some(c)) = (&host, &r.credential) {
            // The agent names the host under a suffix: a credential there goes wherever it
            // points (another tenant's `x.openai.azure.com`, a bucket it owns).
            self.issue(
                c,
                &key("credential"),
                "a \"*.\" route cannot carry a credential: the agent would choose which host receives it".into(),
                "name each host that may receive the credential in a route of its own",
            );
        }
        let ca_file = r.ca_file.as_ref().and_then(|c| self.pem_file(c, &key("ca_file")));
        let default_audience = match (&host, port) {
            (HostPattern::Exact(h), 443) => format!("https://{h}"),
            (HostPattern::Exact(h), p) => format!("https://{h}:{p}"),
            (HostPattern::Suffix(_), _) => String::new(),
        };
        let audience = r.audience.as_ref().map(|a| a.get_ref().clone()).unwrap_or(default_audience);
        let transports = match &r.transports {
            None => vec!["unix", "tcp"],
            Some(ts) => {
                let mut out = Vec::new();
                for t in ts.get_ref() {
                    match t.get_ref().as_str() {
                        "unix" => out.push("unix"),
                        "tcp" => out.push("tcp"),
                        other => self.issue(
                            t,
                            &key("transports"),
                            format!("{other:?} is not a transport"),
                            "write transports = [\"unix\"] or [\"unix\", \"tcp\"]",
                        ),
                    }
                }
                if out.is_empty() {
                    self.issue(ts, &key("transports"), "no transport left".into(), "write transports = [\"unix\"]");
                }
                out
            }
        };
        Some(Route {
            transports,
            name,
            host,
            port,
            prefix,
            for_ids,
            methods,
            paths,
            credential: r.credential.as_ref().map(|c| c.get_ref().clone()),
            ca_file,
            audience,
            tunnel: r.tunnel,
            max_request_body: r.max_request_body.as_ref().map(|m| *m.get_ref()),
        })
    }

    /// `host`, `host:port`, `*.suffix` or `*.suffix:port` (lowercase DNS name or IP literal).
    fn upstream_host(&mut self, h: &Spanned<String>, key: &str) -> Option<(HostPattern, u16)> {
        let s = h.get_ref().trim().to_ascii_lowercase();
        let fix = "write host = \"api.openai.com\", \"api.example.com:8443\" or \"*.example.com\"";
        let uri = format!("https://{}", s.trim_start_matches("*."));
        let parsed = uri.parse::<http::Uri>().ok().filter(|u| u.path() == "/" && u.query().is_none());
        let Some(authority) = parsed.as_ref().and_then(|u| u.authority()) else {
            self.issue(h, key, format!("{:?} is not a host name", h.get_ref()), fix);
            return None;
        };
        if authority.as_str().contains('@') || authority.host().is_empty() {
            self.issue(h, key, format!("{:?} is not a host name", h.get_ref()), fix);
            return None;
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(443);
        Some((if s.starts_with("*.") { HostPattern::Suffix(host) } else { HostPattern::Exact(host) }, port))
    }

    /// A PEM file that exists (read again when used), that only root or the daemon's user may
    /// change: whoever can add a CA to it can read what the gateway sends under its trust.
    pub(super) fn pem_file(&mut self, p: &Spanned<PathBuf>, key: &str) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata(p.get_ref()) {
            let me = nix::unistd::geteuid().as_raw();
            if (meta.uid() != 0 && meta.uid() != me) || meta.mode() & 0o022 != 0 {
                self.issue(
                    p,
                    key,
                    format!(
                        "{} (owner uid {}, mode {:04o}) may be changed by someone other than root",
                        p.get_ref().display(),
                        meta.uid(),
                        meta.mode() & 0o7777
                    ),
                    "make it root-owned and not group- or world-writable (chmod 644)",
                );
                return None;
            }
        }
        match std::fs::read(p.get_ref()) {
            Ok(b) if b.windows(11).any(|w| w == b"-----BEGIN ") => Some(p.get_ref().clone()),
            Ok(_) => {
                self.issue(p, key, format!("{} holds no PEM certificate", p.get_ref().display()), "give a PEM CA file");
                None
            }
            Err(e) => {
                self.issue(
                    p,
                    key,
                    format!("cannot read {}: {e}", p.get_ref().display()),
                    "give a readable PEM CA file",
                );
                None
            }
        }
    }

    fn credential(&mut self, i: usize, c: &Spanned<RawCredential>) -> Option<Credential> {
        let key = |k: &str| format!("gateway.credentials[{i}].{k}");
        let c = c.get_ref();
        let header = match http::HeaderName::from_bytes(c.header.get_ref().as_bytes()) {
            Ok(h)
                if !crate::net::http::hop::is_hop_by_hop(&h)
                    && h != http::header::HOST
                    && h != http::header::CONTENT_LENGTH =>
            {
                Some(h)
            }
            _ => {
                self.issue(
                    &c.header,
                    &key("header"),
                    format!("{:?} is not a header a credential can go in", c.header.get_ref()),
                    "write e.g. header = \"Authorization\" or \"x-api-key\"",
                );
                None
            }
        };
        let format = match &c.format {
            None => "{secret}".to_owned(),
            Some(f)
                if f.get_ref().matches("{secret}").count() == 1 && http::HeaderValue::from_str(f.get_ref()).is_ok() =>
            {
                f.get_ref().clone()
            }
            Some(f) => {
                self.issue(
                    f,
                    &key("format"),
                    format!("{:?} must hold {{secret}} exactly once, in header-safe text", f.get_ref()),
                    "write e.g. format = \"Bearer {secret}\"",
                );
                return None;
            }
        };
        let source = self.source(&c.source, &key("source"))?;
        Some(Credential { name: c.name.get_ref().clone(), header: header?, format, source })
    }

    fn source(&mut self, s: &Spanned<RawSource>, key: &str) -> Option<CredentialSource> {
        let r = s.get_ref();
        let given = [
            r.file.is_some(),
            r.systemd.is_some(),
            r.oauth_client_credentials.is_some(),
            r.jwt_bearer.is_some(),
            r.token_exchange.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let fix = "write exactly one of source = { file = PATH }, { systemd = NAME }, \
                   { oauth_client_credentials = {...} }, { jwt_bearer = {...} }, { token_exchange = {...} }";
        if given != 1 {
            self.issue(s, key, format!("a source needs exactly one kind; {given} given"), fix);
            return None;
        }
        if let Some(f) = &r.file {
            if let Some((why, fix)) = secret_file_problem(f.get_ref()) {
                self.issue(f, &format!("{key}.file"), why, fix);
                return None;
            }
            return Some(CredentialSource::File(f.get_ref().clone()));
        }
        if let Some(n) = &r.systemd {
            let name = n.get_ref();
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                self.issue(
                    n,
                    &format!("{key}.systemd"),
                    format!("{name:?} is not a credential name"),
                    "write the name given to LoadCredential=",
                );
                return None;
            }
            return Some(CredentialSource::Systemd(name.clone()));
        }
        if let Some(e) = &r.oauth_client_credentials {
            let k = format!("{key}.oauth_client_credentials");
            let ep = self.token_endpoint(e, &k)?;
            if ep.client_id.is_none() || ep.client_secret_file.is_none() {
                self.issue(e, &k, "client credentials need client_id and client_secret_file".into(), "set both");
                return None;
            }
            return Some(CredentialSource::OAuthClientCredentials(ep));
        }
        if let Some(e) = &r.jwt_bearer {
            return Some(CredentialSource::JwtBearer(self.token_endpoint(e, &format!("{key}.jwt_bearer"))?));
        }
        if let Some(e) = &r.token_exchange {
            return Some(CredentialSource::TokenExchange(self.token_endpoint(e, &format!("{key}.token_exchange"))?));
        }
        None
    }

    fn token_endpoint(&mut self, e: &Spanned<RawTokenEndpoint>, key: &str) -> Option<TokenEndpoint> {
        let r = e.get_ref();
        let url = match r.token_url.get_ref().parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => u,
            _ => {
                self.issue(
                    &r.token_url,
                    &format!("{key}.token_url"),
                    format!("{:?} is not an https:// URL", r.token_url.get_ref()),
                    "write token_url = \"https://auth.example.com/oauth/token\"",
                );
                return None;
            }
        };
        let client_secret_file = match &r.client_secret_file {
            None => None,
            Some(f) => match secret_file_problem(f.get_ref()) {
                Some((why, fix)) => {
                    self.issue(f, &format!("{key}.client_secret_file"), why, fix);
                    return None;
                }
                None => Some(f.get_ref().clone()),
            },
        };
        let ca_file = match &r.ca_file {
            None => None,
            Some(c) => Some(self.pem_file(c, &format!("{key}.ca_file"))?),
        };
        Some(TokenEndpoint {
            audience: r.audience.as_ref().map(|a| a.get_ref().clone()).unwrap_or_else(|| url.to_string()),
            token_url: url,
            client_id: r.client_id.as_ref().map(|c| c.get_ref().clone()),
            client_secret_file,
            scope: r.scope.clone(),
            ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            &format!("trust_domain = \"example.org\"\nsocket_path = \"/run/t/api.sock\"\n{extra}"),
            Path::new("/etc/tessera/tessera.toml"),
        )
    }

    fn secret(dir: &Path, mode: u32, body: &str) -> std::path::PathBuf {
        let p = dir.join(format!("s{mode:o}{}", body.len()));
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_route_and_a_file_credential() {
        let dir = tempfile::tempdir().unwrap();
        let s = secret(dir.path(), 0o600, "sk-live\n");
        let cfg = parse(&format!(
            "[gateway]\nlisten = \"127.0.0.1:4180\"\n[[gateway.routes]]\nname = \"openai\"\nhost = \"api.openai.com\"\n\
             prefix = \"/openai/\"\nfor = [\"spiffe://example.org/agents/support\", \"spiffe://example.org/team/*\"]\n\
             methods = [\"GET\", \"post\"]\npaths = [\"/v1/models\", \"/v1/files/*\"]\ncredential = \"openai-prod\"\n\
             [[gateway.credentials]]\nname = \"openai-prod\"\nheader = \"Authorization\"\nformat = \"Bearer {{secret}}\"\n\
             source = {{ file = {:?} }}\n",
            s.display().to_string()
        ))
        .unwrap();
        let g = cfg.gateway.unwrap();
        assert_eq!(g.socket_path, Path::new("/run/t/gateway.sock"));
        assert_eq!(g.listen, Some("127.0.0.1:4180".parse().unwrap()));
        let r = &g.routes[0];
        assert_eq!(
            (r.port, r.prefix.as_deref(), r.audience.as_str()),
            (443, Some("/openai"), "https://api.openai.com")
        );
        assert!(r.serves(&"spiffe://example.org/team/x/y".parse().unwrap()));
        assert!(!r.serves(&"spiffe://example.org/teamx".parse().unwrap()));
        assert!(r.allows_method(&http::Method::POST) && !r.allows_method(&http::Method::DELETE));
        assert!(r.allows_path("/v1/files/abc") && r.allows_path("/v1/models") && !r.allows_path("/v1/models/x"));
        assert!(r.host.matches("API.openai.com."));
    }

    #[test]
    fn bad_secret_files_and_routes_are_located_errors() {
        let dir = tempfile::tempdir().unwrap();
        let world = secret(dir.path(), 0o644, "x");
        let empty = secret(dir.path(), 0o600, "\n");
        let missing = dir.path().join("nope");
        for (path, says) in [(world, "mode 0644"), (empty, "is empty"), (missing, "cannot read")] {
            let err = parse(&format!(
                "[gateway]\n[[gateway.credentials]]\nname = \"c\"\nheader = \"x-api-key\"\nsource = {{ file = {:?} }}\n",
                path.display().to_string()
            ))
            .unwrap_err();
            let issue = &err.issues[0];
            assert_eq!((issue.line, issue.key.as_str()), (7, "gateway.credentials[0].source.file"), "{err}");
            assert!(issue.message.contains(says), "{err}");
        }
        let err = parse(
            "[gateway]\nlisten = \"0.0.0.0:4180\"\n[[gateway.routes]]\nname = \"r\"\nhost = \"*.example.com\"\n\
             prefix = \"/x\"\nfor = [\"alice\"]\ncredential = \"nope\"\n",
        )
        .unwrap_err();
        let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "gateway.listen",
                "gateway.routes[0].credential",
                "gateway.routes[0].prefix",
                "gateway.routes[0].for",
                "gateway.routes[0].credential"
            ],
            "{err}"
        );
    }

    #[test]
    fn transports() {
        let route = |extra: &str| {
            parse(&format!(
                "[gateway]\n[[gateway.routes]]\nname = \"r\"\nhost = \"a.example\"\nfor = [\"spiffe://example.org/a\"]\n{extra}"
            ))
        };
        assert_eq!(route("").unwrap().gateway.unwrap().routes[0].transports, ["unix", "tcp"]);
        assert_eq!(route("transports = [\"unix\"]\n").unwrap().gateway.unwrap().routes[0].transports, ["unix"]);
        let err = route("transports = [\"udp\"]\n").unwrap_err();
        assert!(err.issues.iter().any(|i| i.key == "gateway.routes[0].transports"), "{err}");
    }

    #[test]
    fn host_patterns() {
        let cfg = parse(
            "[gateway]\n[[gateway.routes]]\nname = \"r\"\nhost = \"*.example.com:8443\"\nfor = [\"spiffe://example.org/a\"]\n",
        )
        .unwrap();
        let r = &cfg.gateway.unwrap().routes[0];
        assert_eq!(r.port, 8443);
        assert!(r.host.matches("a.example.com") && r.host.matches("a.b.example.com"));
        // The agent names the host: a credential there would go wherever it says.
        let err = parse(
            "[gateway]\n[[gateway.routes]]\nname = \"r\"\nhost = \"*.example.com\"\nfor = [\"spiffe://example.org/a\"]\n\
             credential = \"c\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot carry a credential"), "{err}");
        assert!(!r.host.matches("example.com") && !r.host.matches("aexample.com"));
    }
}
