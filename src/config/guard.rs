//! `[[guard]]`: a guard in front of a protected service. Each one listens on a loopback TCP
//! address or a Unix socket, authenticates every request by its bearer token (a tessera
//! delegated token or a JWT-SVID for `audience`), decides it with the `[policy]` set
//! (`Action::"serve"`) and forwards what is permitted to `upstream`. With `mcp = true` it reads
//! the JSON-RPC body: `tools/call` is decided per tool and `tools/list` answers only the tools
//! the caller may call.
//! With `tls = "mtls"` (TCP only, any address; not SPIRE mode) the listener serves TLS 1.3 with
//! an SVID the daemon mints for the guard (`spiffe_id`, default
//! `spiffe://<td>/tessera/guard/<name>`) and requires the client's X.509-SVID.

use super::Validator;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    name: Spanned<String>,
    listen: Option<Spanned<String>>,
    socket_path: Option<Spanned<PathBuf>>,
    upstream: Spanned<String>,
    ca_file: Option<Spanned<PathBuf>>,
    audience: Spanned<String>,
    #[serde(default)]
    mcp: bool,
    tls: Option<Spanned<String>>,
    spiffe_id: Option<Spanned<String>>,
    max_request_body: Option<Spanned<u64>>,
    max_header_bytes: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_connections_per_peer: Option<Spanned<u64>>,
    header_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
}

/// Where a guard listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    /// A loopback address.
    Tcp(SocketAddr),
    /// A Unix socket (mode 0666: the token decides).
    Unix(PathBuf),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp(a) => write!(f, "{a}"),
            Bind::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A guard's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuardLimits {
    /// Largest request body (an MCP POST body is read whole, up to this).
    pub max_request_body: u64,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Per uid on a Unix socket, per source address on TCP.
    pub max_connections_per_peer: usize,
    /// Time for a request head.
    pub header_timeout: Duration,
    /// Time to connect to the upstream.
    pub connect_timeout: Duration,
    /// A body (either way) silent this long is cut; an idle keep-alive connection is closed.
    pub idle_timeout: Duration,
    /// The whole request, response streaming included.
    pub request_timeout: Duration,
}

/// Defaults of the limits.
pub(crate) const DEFAULT_MAX_BODY: u64 = 32 << 20;
/// The default for `mcp = true`, whose POST bodies are read whole.
pub(crate) const DEFAULT_MAX_MCP_BODY: u64 = 1 << 20;
const DEFAULT_MAX_HEADER_BYTES: u64 = 64 << 10;

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            max_request_body: DEFAULT_MAX_BODY,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
            max_connections: 1024,
            max_connections_per_peer: 256,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// One validated `[[guard]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Guard {
    pub name: String,
    pub bind: Bind,
    /// `http` or `https`, host and port; `upstream_path` holds its path (no trailing `/`).
    pub upstream: http::uri::Scheme,
    pub upstream_authority: http::uri::Authority,
    pub upstream_path: String,
    /// The upstream's CA (https; else the system roots).
    pub ca_file: Option<PathBuf>,
    /// The `aud` every bearer token must carry.
    pub audience: String,
    pub mcp: bool,
    /// `tls = "mtls"`: the SPIFFE ID of the X.509-SVID the guard presents (its TCP listener
    /// serves TLS 1.3 and requires a client X.509-SVID). None: plain HTTP.
    pub mtls: Option<SpiffeId>,
    pub limits: GuardLimits,
}

impl Guard {
    /// The upstream as written (for logs).
    pub(crate) fn upstream_url(&self) -> String {
        format!("{}://{}{}", self.upstream, self.upstream_authority, self.upstream_path)
    }
}

impl Validator<'_> {
    /// The guards; `td` names their default SPIFFE IDs, `spire`: SPIRE mode (no local CA to
    /// mint a guard's own SVID).
    pub(super) fn guards(
        &mut self,
        raw: &[Spanned<RawGuard>],
        td: Option<&TrustDomain>,
        spire: bool,
    ) -> Vec<std::sync::Arc<Guard>> {
        let mut names = std::collections::BTreeSet::new();
        let mut binds = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (i, g) in raw.iter().enumerate() {
            let r = g.get_ref();
            if !names.insert(r.name.get_ref().clone()) {
                self.issue(
                    &r.name,
                    &format!("guard[{i}].name"),
                    format!("guard {:?} is defined twice", r.name.get_ref()),
                    "give each [[guard]] its own name",
                );
            }
            if let Some(guard) = self.guard(i, g, td, spire) {
                if !binds.insert(guard.bind.to_string()) {
                    self.issue(
                        g,
                        &format!("guard[{i}]"),
                        format!("{} is used by two guards", guard.bind),
                        "give each [[guard]] its own listen address or socket_path",
                    );
                }
                out.push(std::sync::Arc::new(guard));
            }
        }
        out
    }

    fn guard(&mut self, i: usize, g: &Spanned<RawGuard>, td: Option<&TrustDomain>, spire: bool) -> Option<Guard> {
        let key = |k: &str| format!("guard[{i}].{k}");
        let r = g.get_ref();
        let name = r.name.get_ref().clone();
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            self.issue(&r.name, &key("name"), format!("{name:?} is not a guard name"), "use letters, digits, - _ .");
        }
        let bind = match (&r.listen, &r.socket_path) {
            (Some(l), None) => self.guard_listen(l, &key("listen"), r.tls.is_some()),
            (None, Some(p)) if p.get_ref().is_absolute() => Some(Bind::Unix(p.get_ref().clone())),
            (None, Some(p)) => {
                self.issue(
                    p,
                    &key("socket_path"),
                    format!("{} is not an absolute path", p.get_ref().display()),
                    "write e.g. socket_path = \"/run/tessera/guard-flights.sock\"",
                );
                None
            }
            _ => {
                self.issue(
                    g,
                    &format!("guard[{i}]"),
                    "a guard needs exactly one of listen and socket_path".into(),
                    "write listen = \"127.0.0.1:8443\" or socket_path = \"/run/tessera/guard.sock\" (not both)",
                );
                None
            }
        };
        let mtls = self.guard_tls(i, r, td, spire);
        let (scheme, authority, path) = self.guard_upstream(&r.upstream, &key("upstream"))?;
        let ca_file = match &r.ca_file {
            Some(c) if scheme != http::uri::Scheme::HTTPS => {
                self.issue(
                    c,
                    &key("ca_file"),
                    "ca_file is for an https upstream".into(),
                    "remove the key, or use an https:// upstream",
                );
                None
            }
            Some(c) => self.pem_file(c, &key("ca_file")),
            None => None,
        };
        let audience = r.audience.get_ref().trim().to_owned();
        if audience.is_empty() || audience.len() > 1024 || audience.chars().any(char::is_control) {
            self.issue(
                &r.audience,
                &key("audience"),
                "the audience is empty, too long or has control characters".into(),
                "write the resource's URI, e.g. audience = \"https://api.flights.example\"",
            );
        }
        let limits = self.guard_limits(i, r);
        Some(Guard {
            name,
            bind: bind?,
            upstream: scheme,
            upstream_authority: authority,
            upstream_path: path,
            ca_file,
            audience,
            mcp: r.mcp,
            mtls,
            limits,
        })
    }

    /// `tls` and `spiffe_id`: the guard's own SPIFFE ID with `tls = "mtls"` (default
    /// `spiffe://<td>/tessera/guard/<name>`), None without TLS (or on an error, reported).
    fn guard_tls(&mut self, i: usize, r: &RawGuard, td: Option<&TrustDomain>, spire: bool) -> Option<SpiffeId> {
        let key = |k: &str| format!("guard[{i}].{k}");
        let Some(t) = &r.tls else {
            if let Some(s) = &r.spiffe_id {
                self.issue(s, &key("spiffe_id"), "spiffe_id is for tls = \"mtls\"".into(), "add tls = \"mtls\"");
            }
            return None;
        };
        if t.get_ref() != "mtls" {
            let fix = "write tls = \"mtls\" (or remove the key: plain HTTP with bearer tokens)";
            self.issue(t, &key("tls"), format!("{:?} is not a TLS mode", t.get_ref()), fix);
            return None;
        }
        if r.listen.is_none() {
            let fix = "use listen = \"127.0.0.1:8443\" for mTLS, or remove tls on a socket_path guard";
            self.issue(t, &key("tls"), "tls = \"mtls\" needs a TCP listen address".into(), fix);
            return None;
        }
        if spire {
            let why = "tls = \"mtls\" needs the local CA to mint the guard's SVID (not SPIRE mode)";
            self.issue(t, &key("tls"), why.into(), "remove the key (bearer tokens authenticate the caller)");
            return None;
        }
        let td = td?;
        let default = format!("{}/tessera/guard/{}", td.id_string(), r.name.get_ref());
        match &r.spiffe_id {
            None => match default.parse::<SpiffeId>() {
                Ok(id) => Some(id),
                Err(e) => {
                    let fix = "rename the guard, or set spiffe_id";
                    self.issue(&r.name, &key("name"), format!("{default:?} is not a SPIFFE ID: {e}"), fix);
                    None
                }
            },
            Some(s) => match SpiffeId::parse_workload(s.get_ref()) {
                Ok(id) if id.trust_domain() == td => Some(id),
                Ok(_) | Err(_) => {
                    self.issue(
                        s,
                        &key("spiffe_id"),
                        format!("{:?} is not a SPIFFE ID of {td} with a path", s.get_ref()),
                        &format!("write spiffe_id = \"{default}\""),
                    );
                    None
                }
            },
        }
    }

    /// A listen address: loopback only for plain HTTP; any address with `tls = "mtls"`.
    fn guard_listen(&mut self, l: &Spanned<String>, key: &str, tls: bool) -> Option<Bind> {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() || tls => Some(Bind::Tcp(a)),
            Ok(_) => {
                self.issue(
                    l,
                    key,
                    format!("{:?} is not a loopback address: a guard without TLS serves plain HTTP", l.get_ref()),
                    "write listen = \"127.0.0.1:8443\" (or [::1]:8443), or add tls = \"mtls\"",
                );
                None
            }
            Err(e) => {
                self.issue(
                    l,
                    key,
                    format!("{:?} is not an address: {e}", l.get_ref()),
                    "write listen = \"127.0.0.1:8443\"",
                );
                None
            }
        }
    }

    fn guard_upstream(
        &mut self,
        u: &Spanned<String>,
        key: &str,
    ) -> Option<(http::uri::Scheme, http::uri::Authority, String)> {
        let fix = "write upstream = \"http://127.0.0.1:9000\" or \"https://api.example.com/base\"";
        let Ok(uri) = u.get_ref().parse::<http::Uri>() else {
            self.issue(u, key, format!("{:?} is not a URL", u.get_ref()), fix);
            return None;
        };
        let scheme = match uri.scheme() {
            Some(s) if *s == http::uri::Scheme::HTTP || *s == http::uri::Scheme::HTTPS => s.clone(),
            _ => {
                self.issue(u, key, format!("{:?} is not an http:// or https:// URL", u.get_ref()), fix);
                return None;
            }
        };
        let Some(authority) = uri.authority().filter(|a| !a.host().is_empty() && !a.as_str().contains('@')) else {
            self.issue(u, key, format!("{:?} names no host (or has user information)", u.get_ref()), fix);
            return None;
        };
        if uri.query().is_some() || u.get_ref().contains('#') {
            self.issue(u, key, format!("{:?} has a query or fragment", u.get_ref()), fix);
            return None;
        }
        Some((scheme, authority.clone(), uri.path().trim_end_matches('/').to_owned()))
    }

    fn guard_limits(&mut self, i: usize, r: &RawGuard) -> GuardLimits {
        let d = GuardLimits::default();
        let key = |k: &str| format!("guard[{i}].{k}");
        let mut count = |x: &Option<Spanned<u64>>, k: &str, default: u64, min: u64| match x {
            None => default,
            Some(n) if *n.get_ref() >= min => *n.get_ref(),
            Some(n) => {
                self.issue(
                    n,
                    &key(k),
                    format!("{} is below the minimum of {min}", n.get_ref()),
                    &format!("use at least {min}"),
                );
                default
            }
        };
        let body_default = if r.mcp { DEFAULT_MAX_MCP_BODY } else { DEFAULT_MAX_BODY };
        let max_request_body = count(&r.max_request_body, "max_request_body", body_default, 0);
        let max_header_bytes = count(&r.max_header_bytes, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES, 8192);
        let max_connections = count(&r.max_connections, "max_connections", d.max_connections as u64, 1);
        let per_peer =
            count(&r.max_connections_per_peer, "max_connections_per_peer", d.max_connections_per_peer as u64, 1);
        let hour = Duration::from_secs(3600);
        let max_connections = usize::try_from(max_connections).unwrap_or(usize::MAX);
        GuardLimits {
            max_request_body,
            max_header_bytes: usize::try_from(max_header_bytes.min(1 << 20)).unwrap_or(1 << 20),
            max_connections,
            max_connections_per_peer: usize::try_from(per_peer).unwrap_or(usize::MAX).min(max_connections),
            header_timeout: self.duration(
                &r.header_timeout,
                &key("header_timeout"),
                d.header_timeout,
                Duration::from_secs(600),
            ),
            connect_timeout: self.duration(&r.connect_timeout, &key("connect_timeout"), d.connect_timeout, hour),
            idle_timeout: self.duration(&r.idle_timeout, &key("idle_timeout"), d.idle_timeout, hour),
            request_timeout: self.duration(&r.request_timeout, &key("request_timeout"), d.request_timeout, 24 * hour),
        }
    }
}

#[cfg(test)]
mod tests;
