//! `[telemetry]`: where `/metrics`, `/live` and `/ready` are served over TCP besides the admin
//! socket (which always serves them). Off when the section or `listen` is absent.

use super::Validator;
use serde::Deserialize;
use std::net::SocketAddr;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    listen: Option<Spanned<String>>,
}

/// The validated `[telemetry]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Telemetry {
    /// Plain-HTTP listener for scrapers (`127.0.0.1:9988`); None: admin socket only.
    pub listen: Option<SocketAddr>,
}

impl Validator<'_> {
    pub(super) fn telemetry(&mut self, raw: &RawTelemetry) -> Telemetry {
        let Some(listen) = &raw.listen else { return Telemetry::default() };
        match listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Telemetry { listen: Some(addr) },
            Err(_) => {
                self.issue(
                    listen,
                    "telemetry.listen",
                    format!("{:?} is not an IP address and port", listen.get_ref()),
                    "write e.g. listen = \"127.0.0.1:9988\" (or [::1]:9988), or remove the key to serve metrics \
                     on the admin socket only",
                );
                Telemetry::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(&format!("trust_domain = \"example.org\"\n{extra}"), Path::new("/etc/tessera/tessera.toml"))
    }

    #[test]
    fn off_unless_listen_is_set() {
        assert_eq!(parse("").unwrap().telemetry.listen, None);
        assert_eq!(parse("[telemetry]\n").unwrap().telemetry.listen, None);
        let cfg = parse("[telemetry]\nlisten = \"127.0.0.1:9988\"\n").unwrap();
        assert_eq!(cfg.telemetry.listen, Some("127.0.0.1:9988".parse().unwrap()));
    }

    #[test]
    fn bad_listen_is_a_located_error_with_a_fix() {
        let err = parse("\n[telemetry]\nlisten = \"localhost\"\n").unwrap_err();
        let issue = &err.issues[0];
        assert_eq!((issue.line, issue.key.as_str()), (4, "telemetry.listen"));
        assert!(issue.fix.contains("127.0.0.1:9988"), "{issue:?}");
        let err = parse("[telemetry]\nport = 9988\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }
}
