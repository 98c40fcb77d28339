//! STUB (replaced by the creds branch).
use crate::caller::Caller;
use crate::config::gateway::Credential;
use std::sync::Arc;
use std::time::Duration;
pub(crate) struct Broker;
pub(crate) struct Injected {
    pub name: http::HeaderName,
    pub value: http::HeaderValue,
}
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialError {
    #[error("credential {credential}: {reason}")]
    Unavailable { credential: String, reason: String },
}
impl CredentialError {
    pub(crate) fn reason(&self) -> String {
        self.to_string()
    }
}
impl Broker {
    pub(crate) fn new(
        _c: &[Arc<Credential>],
        _t: Duration,
        _i: Arc<dyn crate::issuer::Issuer>,
        _clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        Broker
    }
    pub(crate) fn update(&self, _c: &[Arc<Credential>]) {}
    pub(crate) async fn header(&self, credential: &str, _caller: &Caller) -> Result<Injected, CredentialError> {
        Err(CredentialError::Unavailable { credential: credential.into(), reason: "stub".into() })
    }
}
