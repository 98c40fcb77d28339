//! What can go wrong talking to the SPIRE Server.

use super::pb::types::permission_denied_details::Reason;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpireError {
    #[error("{what}: {}", describe(status))]
    Rpc { what: &'static str, status: tonic::Status },
    #[error("TLS to the SPIRE Server: {0}")]
    Tls(#[from] super::tls::TlsError),
    #[error("cannot generate a key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("SPIRE state under data_dir: {0}")]
    Io(#[from] std::io::Error),
    #[error("the SPIRE Server answered out of protocol: {0}")]
    Protocol(String),
    #[error("node attestation: {0}")]
    Attestation(String),
}

impl SpireError {
    pub(crate) fn rpc(what: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc { what, status }
    }

    /// The server could not be reached at all (no connection: refused, no route, DNS, TLS
    /// handshake never completed). A status the server itself sent has no transport cause.
    pub(crate) fn unreachable(&self) -> bool {
        match self {
            Self::Rpc { status, .. } => {
                status.code() == tonic::Code::Unavailable && std::error::Error::source(status).is_some()
            }
            _ => false,
        }
    }

    /// The PermissionDenied reason, when the server refused this agent.
    pub(crate) fn denied(&self) -> Option<Reason> {
        match self {
            Self::Rpc { status, .. } => super::status::denied_reason(status),
            _ => None,
        }
    }
}

/// A one-line description of a status that names TLS failures plainly (tonic buries them).
pub(crate) fn describe(status: &tonic::Status) -> String {
    let mut msg = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        // tonic repeats a cause inside its wrapper's text: keep each once.
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    msg
}
