//! The config of what tessera publishes over the network (`[oidc]`, `[bundle_endpoint]`) and of
//! partner bundle endpoints it fetches from (`bundle_endpoint_url` in `[[federation]]`).

use super::Validator;
use crate::spiffe_id::{SpiffeId, TrustDomain};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    listen: Option<Spanned<String>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBundleEndpoint {
    listen: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    spiffe_id: Option<Spanned<String>>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
}

/// The endpoint part of a `[[federation]]` block.
#[derive(Deserialize, Default)]
pub(super) struct RawFederationEndpoint {
    pub(super) bundle_endpoint_url: Option<Spanned<String>>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) endpoint_spiffe_id: Option<Spanned<String>>,
}

/// A certificate chain and key in PEM files, for a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[oidc]`: OIDC discovery and the JWKS, for verifiers that know only OIDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Oidc {
    pub listen: SocketAddr,
    /// None: plain HTTP (behind the operator's TLS proxy).
    pub tls: Option<TlsFiles>,
}

/// How a SPIFFE bundle endpoint authenticates itself (SPIFFE_Trust_Domain_and_Bundle.md §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointProfile {
    /// TLS with an X.509-SVID of the trust domain.
    HttpsSpiffe { spiffe_id: SpiffeId },
    /// TLS with a Web PKI certificate.
    HttpsWeb(TlsFiles),
}

/// `[bundle_endpoint]`: our trust bundle for federated partners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BundleEndpoint {
    pub listen: SocketAddr,
    pub profile: EndpointProfile,
}

pub(crate) use crate::bundle::endpoint::{FederationEndpoint, PartnerProfile};

const PROFILES: &str = "write profile = \"https_spiffe\" or profile = \"https_web\"";

impl Validator<'_> {
    fn listen(&mut self, v: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                self.issue(
                    v,
                    key,
                    format!("{:?} is not an address: {e}", v.get_ref()),
                    "write listen = \"127.0.0.1:8081\"",
                );
                None
            }
        }
    }

    fn tls_files(
        &mut self,
        cert: &Option<Spanned<PathBuf>>,
        key: &Option<Spanned<PathBuf>>,
        section: &str,
        at: &Spanned<String>,
    ) -> Option<TlsFiles> {
        match (cert, key) {
            (Some(c), Some(k)) => Some(TlsFiles { cert: c.get_ref().clone(), key: k.get_ref().clone() }),
            (None, None) => None,
            _ => {
                self.issue(
                    at,
                    &format!("{section}.tls_cert"),
                    "tls_cert and tls_key go together".into(),
                    "set both (PEM files) or neither",
                );
                None
            }
        }
    }

    pub(super) fn oidc(&mut self, raw: &RawOidc) -> Option<Oidc> {
        let listen_at = raw.listen.as_ref()?;
        let listen = self.listen(listen_at, "oidc.listen")?;
        let tls = self.tls_files(&raw.tls_cert, &raw.tls_key, "oidc", listen_at);
        Some(Oidc { listen, tls })
    }

    pub(super) fn bundle_endpoint(
        &mut self,
        raw: &RawBundleEndpoint,
        td: Option<&TrustDomain>,
    ) -> Option<BundleEndpoint> {
        let listen_at = raw.listen.as_ref()?;
        let listen = self.listen(listen_at, "bundle_endpoint.listen")?;
        let tls = self.tls_files(&raw.tls_cert, &raw.tls_key, "bundle_endpoint", listen_at);
        let profile = raw.profile.as_ref().map(|p| p.get_ref().as_str()).unwrap_or("https_spiffe");
        let profile = match profile {
            "https_spiffe" => {
                let td = td?;
                let id = match &raw.spiffe_id {
                    None => format!("{}/tessera/bundle-endpoint", td.id_string()).parse::<SpiffeId>().ok()?,
                    Some(s) => match s.get_ref().parse::<SpiffeId>() {
                        Ok(id) if id.trust_domain() == td => id,
                        Ok(_) | Err(_) => {
                            self.issue(
                                s,
                                "bundle_endpoint.spiffe_id",
                                format!("{:?} is not a SPIFFE ID of {td}", s.get_ref()),
                                &format!("write spiffe_id = \"{}/tessera/bundle-endpoint\"", td.id_string()),
                            );
                            return None;
                        }
                    },
                };
                EndpointProfile::HttpsSpiffe { spiffe_id: id }
            }
            "https_web" => match tls {
                Some(t) => EndpointProfile::HttpsWeb(t),
                None => {
                    self.issue(
                        listen_at,
                        "bundle_endpoint.tls_cert",
                        "profile https_web needs the server's certificate".into(),
                        "set tls_cert and tls_key (PEM files), or use profile = \"https_spiffe\"",
                    );
                    return None;
                }
            },
            other => {
                let at = raw.profile.as_ref().unwrap_or(listen_at);
                self.issue(at, "bundle_endpoint.profile", format!("unknown profile {other:?}"), PROFILES);
                return None;
            }
        };
        Some(BundleEndpoint { listen, profile })
    }

    /// The endpoint of `[[federation]]` block `i`, if it names one. `has_bundle_path`: the
    /// https_spiffe profile needs an initial bundle to authenticate the first fetch.
    pub(super) fn federation_endpoint(
        &mut self,
        i: usize,
        raw: &RawFederationEndpoint,
        has_bundle_path: bool,
        td_at: &Spanned<String>,
    ) -> Option<FederationEndpoint> {
        let key = |k: &str| format!("federation[{i}].{k}");
        let Some(url_at) = &raw.bundle_endpoint_url else {
            if !has_bundle_path {
                self.issue(
                    td_at,
                    &key("bundle_path"),
                    "no bundle_path and no bundle_endpoint_url".into(),
                    "set bundle_path (a bundle file), bundle_endpoint_url, or both",
                );
            }
            return None;
        };
        let url = match url_at.get_ref().parse::<http::Uri>() {
            Ok(u) if u.scheme_str() == Some("https") && u.host().is_some() => u,
            _ => {
                self.issue(
                    url_at,
                    &key("bundle_endpoint_url"),
                    format!("{:?} is not an https URL", url_at.get_ref()),
                    "write bundle_endpoint_url = \"https://partner.example:8443/\"",
                );
                return None;
            }
        };
        let profile = match raw.profile.as_ref().map(|p| p.get_ref().as_str()) {
            Some("https_spiffe") => {
                let Some(id_at) = &raw.endpoint_spiffe_id else {
                    self.issue(
                        url_at,
                        &key("endpoint_spiffe_id"),
                        "profile https_spiffe needs the endpoint's SPIFFE ID".into(),
                        "set endpoint_spiffe_id = \"spiffe://partner.org/spire/server\"",
                    );
                    return None;
                };
                let Ok(id) = id_at.get_ref().parse::<SpiffeId>() else {
                    self.issue(
                        id_at,
                        &key("endpoint_spiffe_id"),
                        format!("{:?} is not a SPIFFE ID", id_at.get_ref()),
                        "write endpoint_spiffe_id = \"spiffe://partner.org/spire/server\"",
                    );
                    return None;
                };
                if !has_bundle_path {
                    self.issue(
                        url_at,
                        &key("bundle_path"),
                        "profile https_spiffe needs the partner's initial bundle to authenticate its endpoint".into(),
                        "set bundle_path to the partner's bundle (spire-server bundle show -format spiffe)",
                    );
                    return None;
                }
                PartnerProfile::HttpsSpiffe { endpoint_spiffe_id: id }
            }
            Some("https_web") => PartnerProfile::HttpsWeb,
            Some(other) => {
                if let Some(p) = &raw.profile {
                    self.issue(p, &key("profile"), format!("unknown profile {other:?}"), PROFILES);
                }
                return None;
            }
            None => {
                self.issue(url_at, &key("profile"), "a bundle endpoint needs a profile".into(), PROFILES);
                return None;
            }
        };
        Some(FederationEndpoint { url, profile })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("trust_domain = \"example.org\"\n{extra}"), Path::new("/etc/tessera/t.toml"))
    }

    fn issue(extra: &str) -> (usize, String, String) {
        let e = parse(extra).expect_err("must be refused");
        let i = &e.issues[0];
        (i.line, i.key.clone(), format!("{} / {}", i.message, i.fix))
    }

    #[test]
    fn publication_sections() {
        assert!(parse("").unwrap().oidc.is_none());
        let c = parse("[oidc]\nlisten = \"127.0.0.1:8081\"\n[bundle_endpoint]\nlisten = \"0.0.0.0:8443\"\n").unwrap();
        assert_eq!(c.oidc.unwrap().listen.port(), 8081);
        match c.bundle_endpoint.unwrap().profile {
            super::EndpointProfile::HttpsSpiffe { spiffe_id } => {
                assert_eq!(spiffe_id.to_string(), "spiffe://example.org/tessera/bundle-endpoint")
            }
            other => panic!("{other:?}"),
        }
        let (line, key, _) = issue("[oidc]\nlisten = \"localhost\"\n");
        assert_eq!((line, key.as_str()), (3, "oidc.listen"));
        let (_, key, text) = issue("[bundle_endpoint]\nlisten = \"0.0.0.0:1\"\nprofile = \"https_web\"\n");
        assert_eq!(key, "bundle_endpoint.tls_cert");
        assert!(text.contains("tls_key"), "{text}");
        let (_, key, _) = issue("[bundle_endpoint]\nlisten = \"0.0.0.0:1\"\nspiffe_id = \"spiffe://other.org/x\"\n");
        assert_eq!(key, "bundle_endpoint.spiffe_id");
        let (_, key, _) = issue("[oidc]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"/c.pem\"\n");
        assert_eq!(key, "oidc.tls_cert");
    }

    #[test]
    fn federation_endpoints() {
        let fed = |extra: &str| format!("[[federation]]\ntrust_domain = \"partner.org\"\n{extra}");
        let c = parse(&fed(
            "bundle_path = \"/p.json\"\nbundle_endpoint_url = \"https://p:8443/\"\nprofile = \"https_spiffe\"\n\
             endpoint_spiffe_id = \"spiffe://partner.org/spire/server\"\n",
        ))
        .unwrap();
        assert!(c.federation[0].endpoint.is_some());
        // https_web needs no initial bundle.
        let c = parse(&fed("bundle_endpoint_url = \"https://p/\"\nprofile = \"https_web\"\n")).unwrap();
        assert_eq!(c.federation[0].bundle_path, None);
        let (_, key, _) = issue(&fed(""));
        assert_eq!(key, "federation[0].bundle_path");
        let (_, key, _) = issue(&fed("bundle_endpoint_url = \"http://p/\"\nprofile = \"https_web\"\n"));
        assert_eq!(key, "federation[0].bundle_endpoint_url");
        let (_, key, _) = issue(&fed("bundle_endpoint_url = \"https://p/\"\n"));
        assert_eq!(key, "federation[0].profile");
        let (_, key, _) = issue(&fed(
            "bundle_endpoint_url = \"https://p/\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.org/s\"\n",
        ));
        assert_eq!(key, "federation[0].bundle_path", "https_spiffe needs the initial bundle");
        let (_, key, _) =
            issue(&fed("bundle_path = \"/p\"\nbundle_endpoint_url = \"https://p/\"\nprofile = \"https_spiffe\"\n"));
        assert_eq!(key, "federation[0].endpoint_spiffe_id");
    }
}
