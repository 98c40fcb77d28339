//! Which route a request is for, and where it goes upstream. Pure: the request target, the `Host`
//! header and the routes in; the route, the mode, the upstream host, port and path out.
//!
//! - CONNECT `host:port`: a route with `tunnel = true` for that host and port.
//! - Absolute-form `http://host/path` (an `http_proxy` client): the route for that host.
//! - Origin-form under a route's `prefix` (an SDK's base URL): that route, the prefix stripped.
//! - Other origin-form (curl `--unix-socket`, a UDS transport): the route for the `Host` header.
//!
//! A path that could mean two things (dot segments, encoded slashes or dots, empty segments) is
//! refused: the allow-list checks the path the upstream will see, and an upstream that normalises
//! `/v1/models/../files` would otherwise serve a path no rule allowed.

use crate::config::gateway::{HostPattern, Route};
use crate::events::gateway::Mode;
use std::sync::Arc;

/// Where one request goes.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub route: Arc<Route>,
    pub mode: Mode,
    /// The upstream host (the route's, or the request's for a `*.suffix` route).
    pub host: String,
    pub port: u16,
    /// The upstream path (starts with `/`; empty for a tunnel) and query.
    pub path: String,
    pub query: Option<String>,
}

impl Resolved {
    /// `host` or `host:port` (port 443 left out), as `Host` and the URI authority.
    pub(crate) fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 443 { host } else { format!("{host}:{}", self.port) }
    }

    /// The upstream URI (always https).
    pub(crate) fn upstream_uri(&self) -> Result<http::Uri, http::Error> {
        let pq = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        http::Uri::builder().scheme("https").authority(self.authority()).path_and_query(pq).build()
    }
}

/// Why no route takes a request (403 unless `BadTarget`, which is 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unrouted {
    /// No route covers this host (or prefix).
    NoRoute { host: Option<String> },
    /// CONNECT to a host:port no route opens a tunnel to.
    NoTunnel { authority: String },
    /// A target or path the gateway will not forward.
    BadTarget(String),
}

impl Unrouted {
    pub(crate) fn reason(&self) -> String {
        match self {
            Unrouted::NoRoute { host: Some(h) } => format!("no gateway route covers host {h:?}"),
            Unrouted::NoRoute { host: None } => {
                "no gateway route covers this request (no prefix or Host matched)".into()
            }
            Unrouted::NoTunnel { authority } => {
                format!("CONNECT {authority:?} refused: no route with tunnel = true names that host and port")
            }
            Unrouted::BadTarget(why) => why.clone(),
        }
    }

    pub(crate) fn host(&self) -> Option<String> {
        match self {
            Unrouted::NoRoute { host } => host.clone(),
            Unrouted::NoTunnel { authority } => Some(authority.clone()),
            Unrouted::BadTarget(_) => None,
        }
    }
}

/// The route for a request.
pub(crate) fn resolve(
    routes: &[Arc<Route>],
    method: &http::Method,
    uri: &http::Uri,
    host_header: Option<&str>,
) -> Result<Resolved, Unrouted> {
    if method == http::Method::CONNECT {
        let authority = uri.authority().ok_or_else(|| Unrouted::BadTarget("CONNECT needs host:port".into()))?;
        let host = bare(authority.host());
        let port = authority.port_u16().ok_or_else(|| Unrouted::BadTarget("CONNECT needs host:port".into()))?;
        let route = routes
            .iter()
            .find(|r| r.tunnel && r.port == port && r.host.matches(&host))
            .ok_or_else(|| Unrouted::NoTunnel { authority: authority.to_string() })?;
        return Ok(Resolved { route: route.clone(), mode: Mode::Tunnel, host, port, path: String::new(), query: None });
    }
    let path = uri.path();
    check_path(path)?;
    let query = uri.query().map(str::to_owned);
    if let Some(scheme) = uri.scheme_str() {
        // Absolute-form: a proxy client. The client's `http://` is upgraded to TLS upstream; an
        // `https://` target would have come as CONNECT.
        if scheme != "http" {
            return Err(Unrouted::BadTarget(format!("absolute-form {scheme}:// targets are not proxied; use http://")));
        }
        let authority = uri.authority().ok_or_else(|| Unrouted::BadTarget("no host in the request target".into()))?;
        let host = bare(authority.host());
        let route = by_host(routes, &host, authority.port_u16())
            .ok_or_else(|| Unrouted::NoRoute { host: Some(shown(&host, authority.port_u16())) })?;
        return Ok(resolved(route, Mode::Proxy, host, path.to_owned(), query));
    }
    if let Some(route) = by_prefix(routes, path) {
        let prefix = route.prefix.as_deref().unwrap_or_default();
        let rest = &path[prefix.len()..];
        let upstream_path = if rest.is_empty() { "/".to_owned() } else { rest.to_owned() };
        let HostPattern::Exact(host) = &route.host else {
            return Err(Unrouted::BadTarget("a prefix route needs one host".into()));
        };
        return Ok(resolved(route, Mode::BaseUrl, host.clone(), upstream_path, query));
    }
    let host_header = host_header.ok_or(Unrouted::NoRoute { host: None })?;
    let authority: http::uri::Authority =
        host_header.parse().map_err(|_| Unrouted::BadTarget(format!("Host {:?} is not a host", cut(host_header))))?;
    let host = bare(authority.host());
    let route = by_host(routes, &host, authority.port_u16())
        .ok_or_else(|| Unrouted::NoRoute { host: Some(shown(&host, authority.port_u16())) })?;
    Ok(resolved(route, Mode::Host, host, path.to_owned(), query))
}

fn resolved(route: &Arc<Route>, mode: Mode, host: String, path: String, query: Option<String>) -> Resolved {
    Resolved { route: route.clone(), mode, host, port: route.port, path, query }
}

/// The route for a host named by the client, whose port (if any) is the client's notion: none,
/// 80 (plain `http://`) or the route's upstream port. Exact hosts before `*.suffix` ones.
fn by_host<'r>(routes: &'r [Arc<Route>], host: &str, port: Option<u16>) -> Option<&'r Arc<Route>> {
    let port_ok = |r: &Route| port.is_none_or(|p| p == 80 || p == r.port);
    routes.iter().find(|r| matches!(r.host, HostPattern::Exact(_)) && r.host.matches(host) && port_ok(r)).or_else(
        || routes.iter().find(|r| matches!(r.host, HostPattern::Suffix(_)) && r.host.matches(host) && port_ok(r)),
    )
}

/// The route with the longest prefix that `path` is under (`/openai` takes `/openai` and
/// `/openai/...`, never `/openaix`).
fn by_prefix<'r>(routes: &'r [Arc<Route>], path: &str) -> Option<&'r Arc<Route>> {
    routes
        .iter()
        .filter(|r| {
            r.prefix
                .as_deref()
                .is_some_and(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
        })
        .max_by_key(|r| r.prefix.as_ref().map_or(0, String::len))
}

/// `host[:port]` for messages: never the userinfo an agent may have put in the authority.
fn shown(host: &str, port: Option<u16>) -> String {
    let h: String = host.chars().take(253).collect();
    match port {
        Some(p) => format!("{h}:{p}"),
        None => h,
    }
}

/// A host without IPv6 brackets, lowercase, no trailing dot.
fn bare(host: &str) -> String {
    host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

/// A path the allow-list can judge as the upstream will read it: after one round of
/// percent-decoding it must be valid UTF-8 (no overlong encodings), hold no control character,
/// no `%` (double encoding), no `\\`, no empty segment, and no segment that is `.` or `..`,
/// alone or before a `;` parameter (`..;` is `..` to some servers).
fn check_path(path: &str) -> Result<(), Unrouted> {
    let refuse = || {
        Unrouted::BadTarget(format!(
            "path {:?} has dot segments, empty segments, encoded separators or control characters; \
             the gateway forwards only plain paths",
            cut(path)
        ))
    };
    if !path.starts_with('/') {
        return Err(refuse());
    }
    let decoded: Vec<u8> = percent_decode(path.as_bytes()).ok_or_else(refuse)?;
    let decoded = String::from_utf8(decoded).map_err(|_| refuse())?;
    if decoded.chars().any(|c| c.is_control() || c == '%' || c == '\\') {
        return Err(refuse());
    }
    let raw_segments = path.split('/').skip(1);
    for (raw, seg) in raw_segments.zip(decoded.split('/').skip(1)) {
        let bare = seg.split(';').next().unwrap_or_default();
        // A decoded `/` inside a raw segment (`%2F`) splits differently: refused too.
        let encoded_slash = raw.to_ascii_lowercase().contains("%2f");
        if bare == "." || bare == ".." || encoded_slash {
            return Err(refuse());
        }
    }
    if path.contains("//") {
        return Err(refuse());
    }
    Ok(())
}

/// The path as the upstream will read it (`%XX` decoded once; `check_path` refused what would
/// decode to a separator, a dot segment or a control character): what policies see, so that
/// `/%61dmin` cannot slip past a `forbid` on `/admin`.
pub(crate) fn decoded_path(path: &str) -> String {
    percent_decode(path.as_bytes()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|| path.to_owned())
}

/// `%XX` decoded once; None for a malformed escape.
fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

fn cut(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gateway::{IdPattern, PathPattern};

    fn route(name: &str, host: HostPattern, port: u16, prefix: Option<&str>, tunnel: bool) -> Arc<Route> {
        Arc::new(Route {
            name: name.into(),
            host,
            port,
            prefix: prefix.map(str::to_owned),
            for_ids: vec![IdPattern::Prefix("spiffe://t/".into())],
            methods: None,
            paths: Some(vec![PathPattern::Prefix("/v1/".into())]),
            credential: None,
            ca_file: None,
            audience: String::new(),
            tunnel,
            max_request_body: None,
            transports: vec!["unix", "tcp"],
        })
    }

    fn routes() -> Vec<Arc<Route>> {
        vec![
            route("openai", HostPattern::Exact("api.openai.com".into()), 443, Some("/openai"), false),
            route("local", HostPattern::Exact("localhost".into()), 8443, Some("/local"), false),
            route("wild", HostPattern::Suffix("example.com".into()), 443, None, false),
            route("tun", HostPattern::Exact("db.internal".into()), 5432, None, true),
        ]
    }

    fn go(method: &str, target: &str, host: Option<&str>) -> Result<Resolved, Unrouted> {
        resolve(&routes(), &method.parse().unwrap(), &target.parse().unwrap(), host)
    }

    #[test]
    fn base_url_proxy_host_and_tunnel() {
        let r = go("POST", "/openai/v1/chat/completions?x=1", Some("127.0.0.1:4180")).unwrap();
        assert_eq!((r.route.name.as_str(), r.mode, r.path.as_str()), ("openai", Mode::BaseUrl, "/v1/chat/completions"));
        assert_eq!(r.upstream_uri().unwrap().to_string(), "https://api.openai.com/v1/chat/completions?x=1");
        let r = go("GET", "/local", None).unwrap();
        assert_eq!((r.path.as_str(), r.authority()), ("/", "localhost:8443".to_owned()));
        assert!(matches!(go("GET", "/openaix/v1", None), Err(Unrouted::NoRoute { host: None })));

        let r = go("GET", "http://API.openai.com/v1/models", Some("evil.com")).unwrap();
        assert_eq!((r.route.name.as_str(), r.mode, r.host.as_str()), ("openai", Mode::Proxy, "api.openai.com"));
        let r = go("GET", "http://a.b.example.com:80/v1/x", None).unwrap();
        assert_eq!((r.route.name.as_str(), r.host.as_str(), r.port), ("wild", "a.b.example.com", 443));
        let r = go("GET", "http://localhost:8443/v1/x", None).unwrap();
        assert_eq!(r.route.name, "local");
        assert!(matches!(go("GET", "http://localhost:9999/v1/x", None), Err(Unrouted::NoRoute { .. })));
        assert!(matches!(go("GET", "http://example.com/v1/x", None), Err(Unrouted::NoRoute { .. })));
        assert!(matches!(go("GET", "https://api.openai.com/v1/x", None), Err(Unrouted::BadTarget(_))));

        let r = go("GET", "/v1/models", Some("api.openai.com")).unwrap();
        assert_eq!((r.route.name.as_str(), r.mode), ("openai", Mode::Host));
        assert!(matches!(go("GET", "/v1/models", Some("other.org")), Err(Unrouted::NoRoute { .. })));

        let r = go("CONNECT", "db.internal:5432", None).unwrap();
        assert_eq!((r.route.name.as_str(), r.mode), ("tun", Mode::Tunnel));
        assert!(matches!(go("CONNECT", "api.openai.com:443", None), Err(Unrouted::NoTunnel { .. })));
        assert!(matches!(go("CONNECT", "db.internal:22", None), Err(Unrouted::NoTunnel { .. })));
    }

    #[test]
    fn plain_paths_pass() {
        for p in
            ["/openai/v1/models", "/openai/v1/files/", "/openai/v1/a%20b", "/openai/v1/caf%C3%A9", "/openai/v1/x;v=1"]
        {
            assert!(go("GET", p, None).is_ok(), "{p}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/openai/v1/../x",
            "/openai/v1/./x",
            "/openai//v1",
            "/openai/v1/%2e%2e/x",
            "/openai/v1%2Fx",
            "/openai/a\\b",
        ] {
            assert!(matches!(go("GET", p, None), Err(Unrouted::BadTarget(_))), "{p}");
        }
    }
}
