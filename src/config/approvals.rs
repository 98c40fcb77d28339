//! `[approvals]`: how a pending approval reaches its user and how the user answers, besides the
//! admin socket's `tessera approve`: `notify_url` (a webhook POSTed with each new pending
//! approval) and `listen` (loopback TCP or a Unix socket serving `POST /approvals/ID/approve|reject`
//! with the user's own bearer token). Needs delegation; `listen` needs a `[[delegation.issuers]]`.

use super::Validator;
use crate::registry::delegation::DelegationConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovals {
    notify_url: Option<Spanned<String>>,
    notify_ca_file: Option<Spanned<PathBuf>>,
    listen: Option<Spanned<String>>,
}

/// Where the users' decisions are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApprovalsListen {
    /// A loopback address and port.
    Tcp(SocketAddr),
    /// A Unix socket (mode 0666: the bearer token decides, not the peer).
    Unix(PathBuf),
}

/// The validated `[approvals]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApprovalsConfig {
    /// POSTed with every new pending approval (http or https).
    pub notify_url: Option<http::Uri>,
    /// PEM roots for an https `notify_url` (default: the system roots).
    pub notify_ca_file: Option<PathBuf>,
    pub listen: Option<ApprovalsListen>,
}

impl Validator<'_> {
    pub(super) fn approvals(
        &mut self,
        raw: Option<&Spanned<RawApprovals>>,
        delegation: Option<&DelegationConfig>,
    ) -> Option<ApprovalsConfig> {
        let r = raw?;
        if delegation.is_none() {
            self.issue(
                r,
                "approvals",
                "[approvals] is set but delegation is not configured".into(),
                "configure delegation ([[delegation.issuers]] and [entries.delegation]) or remove [approvals]",
            );
        }
        let a = r.get_ref();
        let notify_url = a.notify_url.as_ref().and_then(|u| {
            let parsed = u.get_ref().parse::<http::Uri>().ok().filter(|p| {
                matches!(p.scheme_str(), Some("http" | "https")) && p.host().is_some_and(|h| !h.is_empty())
            });
            if parsed.is_none() {
                self.issue(
                    u,
                    "approvals.notify_url",
                    format!("{:?} is not an http:// or https:// URL", u.get_ref()),
                    "write e.g. notify_url = \"https://approvals.example.com/hooks/tessera\"",
                );
            }
            parsed
        });
        if let Some(ca) = &a.notify_ca_file {
            if !ca.get_ref().is_file() {
                self.issue(
                    ca,
                    "approvals.notify_ca_file",
                    format!("{} is not a readable file", ca.get_ref().display()),
                    "give a PEM file of the CA certificates that sign the webhook's server, or remove the key",
                );
            } else if notify_url.as_ref().is_some_and(|u| u.scheme_str() != Some("https")) {
                self.issue(ca, "approvals.notify_ca_file", "notify_url is not https".into(), "remove notify_ca_file");
            }
        }
        let listen = a.listen.as_ref().and_then(|l| {
            let s = l.get_ref();
            if s.starts_with('/') {
                return Some(ApprovalsListen::Unix(PathBuf::from(s)));
            }
            match s.parse::<SocketAddr>() {
                Ok(addr) if addr.ip().is_loopback() => Some(ApprovalsListen::Tcp(addr)),
                _ => {
                    self.issue(
                        l,
                        "approvals.listen",
                        format!("{s:?} is neither a loopback address and port nor an absolute socket path"),
                        "write e.g. listen = \"127.0.0.1:8787\" (put a TLS proxy in front for remote users) or \
                         listen = \"/run/tessera/approvals.sock\"",
                    );
                    None
                }
            }
        });
        if let (Some(l), Some(d)) = (&a.listen, delegation)
            && d.issuers.is_empty()
        {
            self.issue(
                l,
                "approvals.listen",
                "no [[delegation.issuers]] is configured: no user token could be verified".into(),
                "configure the identity provider whose tokens users approve with, or remove listen",
            );
        }
        Some(ApprovalsConfig {
            notify_url,
            notify_ca_file: a.notify_ca_file.as_ref().map(|c| c.get_ref().clone()),
            listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ApprovalsListen;
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("/etc/tessera/tessera.toml"))
    }

    fn with_issuer(extra: &str) -> (tempfile::NamedTempFile, String) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), r#"{"keys":[]}"#).unwrap();
        let text = format!(
            "trust_domain = \"example.org\"\njwt_issuer = \"https://t.example\"\n[[delegation.issuers]]\n\
             issuer = \"https://idp.example\"\njwks_path = \"{}\"\naudience = \"tessera\"\n{extra}",
            f.path().display()
        );
        (f, text)
    }

    #[test]
    fn a_full_section() {
        let (_f, text) =
            with_issuer("[approvals]\nnotify_url = \"http://127.0.0.1:9/hook\"\nlisten = \"127.0.0.1:8787\"\n");
        let a = parse(&text).unwrap().approvals.unwrap();
        assert_eq!(a.notify_url.unwrap().to_string(), "http://127.0.0.1:9/hook");
        assert_eq!(a.listen, Some(ApprovalsListen::Tcp("127.0.0.1:8787".parse().unwrap())));
        let (_f, text) = with_issuer("[approvals]\nlisten = \"/run/t/approvals.sock\"\n");
        assert_eq!(
            parse(&text).unwrap().approvals.unwrap().listen,
            Some(ApprovalsListen::Unix("/run/t/approvals.sock".into()))
        );
    }

    #[test]
    fn bad_values_are_located() {
        let (_f, text) = with_issuer("[approvals]\nnotify_url = \"ftp://x/\"\nlisten = \"0.0.0.0:8787\"\n");
        let err = parse(&text).unwrap_err();
        let found: Vec<(usize, &str)> = err.issues.iter().map(|i| (i.line, i.key.as_str())).collect();
        assert_eq!(found, [(8, "approvals.notify_url"), (9, "approvals.listen")]);
        let err = parse("trust_domain = \"example.org\"\n[approvals]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.issues[0].key, "approvals", "{err}");
        assert!(err.to_string().contains("delegation is not configured"), "{err}");
    }
}
