//! The `[spire]` section: tessera as the node agent of a SPIRE Server. With it, entries, SVIDs
//! and bundles come from the server, so local `[[entries]]` are refused (two sources of truth).

use super::{RawEntry, Validator};

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// spire-agent's default: entries and bundles are fetched this often.
pub(crate) const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(5);
const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpire {
    server_address: Spanned<String>,
    trust_bundle_path: Spanned<PathBuf>,
    join_token: Option<Spanned<String>>,
    x509pop: Option<Spanned<RawX509Pop>>,
    #[serde(default)]
    persist_svids: bool,
    sync_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawX509Pop {
    cert_path: Spanned<PathBuf>,
    key_path: Spanned<PathBuf>,
    intermediates_path: Option<Spanned<PathBuf>>,
}

/// How this node proves itself to the server.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum NodeAttestation {
    /// Single use: after the first attestation the persisted agent SVID is renewed instead.
    JoinToken(String),
    X509Pop {
        cert_path: PathBuf,
        key_path: PathBuf,
        intermediates_path: Option<PathBuf>,
    },
}

impl std::fmt::Debug for NodeAttestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // A join token is a credential until used: never printed.
            Self::JoinToken(_) => f.write_str("JoinToken(..)"),
            Self::X509Pop { cert_path, .. } => write!(f, "X509Pop({})", cert_path.display()),
        }
    }
}

/// The validated `[spire]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpireConfig {
    /// `host:port` of the server's agent API.
    pub server_address: String,
    /// The bootstrap bundle (PEM): trusted for the first connection only, until the server's own
    /// bundle has been fetched and persisted.
    pub trust_bundle_path: PathBuf,
    pub attestation: NodeAttestation,
    /// Keep workload SVIDs and their keys on disk (0600) to serve through a restart during an outage.
    pub persist_svids: bool,
    pub sync_interval: Duration,
}

impl Validator<'_> {
    pub(super) fn spire(
        &mut self,
        raw: Option<&Spanned<RawSpire>>,
        entries: &[Spanned<RawEntry>],
    ) -> Option<SpireConfig> {
        let raw_span = raw?;
        let raw = raw_span.get_ref();
        if let Some(first) = entries.first() {
            self.issue(
                first,
                "entries[0]",
                format!(
                    "{} local [[entries]] together with [spire]: in SPIRE mode the entries come from the server",
                    entries.len()
                ),
                "remove the [[entries]] blocks and create them with `spire-server entry create` (see \
                 `tessera attest PID --spire`), or remove [spire] to run standalone",
            );
        }
        let addr = raw.server_address.get_ref();
        let port_ok = addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            self.issue(
                &raw.server_address,
                "spire.server_address",
                format!("{addr:?} is not host:port"),
                "write e.g. server_address = \"spire-server.example.org:8081\"",
            );
        }
        if !raw.trust_bundle_path.get_ref().is_file() {
            self.issue(
                &raw.trust_bundle_path,
                "spire.trust_bundle_path",
                format!("{} is not a readable file", raw.trust_bundle_path.get_ref().display()),
                "write the output of `spire-server bundle show` to a file and give its path",
            );
        }
        let attestation = match (&raw.join_token, &raw.x509pop) {
            (Some(t), None) if t.get_ref().trim().is_empty() => {
                self.issue(
                    t,
                    "spire.join_token",
                    "empty join token".into(),
                    "paste the output of `spire-server token generate`",
                );
                None
            }
            (Some(t), None) => Some(NodeAttestation::JoinToken(t.get_ref().trim().to_owned())),
            (None, Some(x)) => {
                let x = x.get_ref();
                for (p, k) in [(&x.cert_path, "spire.x509pop.cert_path"), (&x.key_path, "spire.x509pop.key_path")]
                    .into_iter()
                    .chain(x.intermediates_path.as_ref().map(|p| (p, "spire.x509pop.intermediates_path")))
                {
                    if !p.get_ref().is_file() {
                        self.issue(
                            p,
                            k,
                            format!("{} is not a readable file", p.get_ref().display()),
                            "give the path of a PEM file",
                        );
                    }
                }
                Some(NodeAttestation::X509Pop {
                    cert_path: x.cert_path.get_ref().clone(),
                    key_path: x.key_path.get_ref().clone(),
                    intermediates_path: x.intermediates_path.as_ref().map(|p| p.get_ref().clone()),
                })
            }
            (Some(t), Some(_)) => {
                self.issue(
                    t,
                    "spire.join_token",
                    "both join_token and [spire.x509pop]: a node attests one way".into(),
                    "keep either join_token or the [spire.x509pop] block",
                );
                None
            }
            (None, None) => {
                self.issue(
                    raw_span,
                    "spire",
                    "no node attestation configured".into(),
                    "add join_token = \"...\" (from `spire-server token generate`) or a [spire.x509pop] block \
                     with cert_path and key_path",
                );
                None
            }
        };
        let sync_interval =
            self.duration(&raw.sync_interval, "spire.sync_interval", DEFAULT_SYNC_INTERVAL, MAX_SYNC_INTERVAL);
        Some(SpireConfig {
            server_address: addr.clone(),
            trust_bundle_path: raw.trust_bundle_path.get_ref().clone(),
            attestation: attestation?,
            persist_svids: raw.persist_svids,
            sync_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    fn base(bundle: &Path) -> String {
        format!(
            "trust_domain = \"example.test\"\n[spire]\nserver_address = \"127.0.0.1:8081\"\ntrust_bundle_path = \"{}\"\n",
            bundle.display()
        )
    }

    #[test]
    fn join_token_defaults() {
        let bundle = tempfile::NamedTempFile::new().unwrap();
        let c = parse(&format!("{}join_token = \"abc\"\n", base(bundle.path()))).unwrap();
        let s = c.spire.unwrap();
        assert_eq!(s.sync_interval, super::DEFAULT_SYNC_INTERVAL);
        assert!(!s.persist_svids);
        assert_eq!(s.attestation, super::NodeAttestation::JoinToken("abc".into()));
        // The token never shows in debug output.
        assert!(!format!("{:?}", s.attestation).contains("abc"));
    }

    #[test]
    fn refuses_local_entries_with_spire() {
        let bundle = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "[[entries]]\nspiffe_id = \"spiffe://example.test/a\"\nselectors = [\"unix:uid:0\"]\n\n{}join_token = \"abc\"\n",
            base(bundle.path())
        );
        // [[entries]] before [spire] in the file: a table array then a table.
        let text = text.replacen("trust_domain = \"example.test\"\n", "", 1);
        let text = format!("trust_domain = \"example.test\"\n{text}");
        let err = parse(&text).unwrap_err();
        let issue = err.issues.iter().find(|i| i.key == "entries[0]").expect("entries issue");
        assert_eq!(issue.line, 2);
        assert!(issue.message.contains("together with [spire]"), "{}", issue.message);
        assert!(issue.fix.contains("spire-server entry create"), "{}", issue.fix);
        assert!(err.to_string().contains("t.toml:2: entries[0]"), "{err}");
    }

    #[test]
    fn one_attestation_method() {
        let bundle = tempfile::NamedTempFile::new().unwrap();
        let both = format!(
            "{}join_token = \"abc\"\n[spire.x509pop]\ncert_path = \"{p}\"\nkey_path = \"{p}\"\n",
            base(bundle.path()),
            p = bundle.path().display()
        );
        assert!(parse(&both).unwrap_err().issues.iter().any(|i| i.key == "spire.join_token"));
        let none = parse(&base(bundle.path())).unwrap_err();
        assert!(none.issues.iter().any(|i| i.key == "spire" && i.fix.contains("join_token")));
        let x = format!(
            "{}[spire.x509pop]\ncert_path = \"{p}\"\nkey_path = \"{p}\"\n",
            base(bundle.path()),
            p = bundle.path().display()
        );
        assert!(matches!(parse(&x).unwrap().spire.unwrap().attestation, super::NodeAttestation::X509Pop { .. }));
    }

    #[test]
    fn bad_address_and_missing_bundle() {
        let err = parse(
            "trust_domain = \"example.test\"\n[spire]\nserver_address = \"nohost\"\ntrust_bundle_path = \"/nonexistent\"\njoin_token = \"t\"\n",
        )
        .unwrap_err();
        assert!(err.issues.iter().any(|i| i.key == "spire.server_address" && i.line == 3));
        assert!(err.issues.iter().any(|i| i.key == "spire.trust_bundle_path" && i.line == 4));
    }
}
