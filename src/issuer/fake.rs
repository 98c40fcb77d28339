//! An [`Issuer`] for unit tests of the services: it signs nothing and hands out what the test
//! set (a token, or an error), so a service's handling of its issuer is tested without a CA.

use super::{Bundles, IssueError, IssuedJwt, Issuer, X509Svids};
use crate::bundle::{JwtBundle, X509Bundle};
use crate::caller::Caller;
use crate::spiffe_id::TrustDomain;
use crate::svid::jwt::JwtSvid;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the fake's JWT-SVID calls answer.
pub(crate) enum JwtAnswer {
    /// This token for every entry of the caller.
    Token(&'static str),
    /// No signing key (as a CA between keys would say).
    NoKey,
}

pub(crate) struct FakeIssuer {
    trust_domain: TrustDomain,
    jwt: Mutex<JwtAnswer>,
    changes: watch::Sender<u64>,
}

impl FakeIssuer {
    pub(crate) fn new(trust_domain: &str, jwt: JwtAnswer) -> Self {
        let (changes, _) = watch::channel(0);
        #[allow(clippy::unwrap_used, reason = "a test's trust domain")]
        let trust_domain = trust_domain.parse().unwrap();
        Self { trust_domain, jwt: Mutex::new(jwt), changes }
    }

    pub(crate) fn answer_jwt(&self, answer: JwtAnswer) {
        *self.jwt.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }
}

impl Issuer for FakeIssuer {
    fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    fn x509_svids(&self, _caller: &Caller, _now: SystemTime) -> Result<X509Svids, IssueError> {
        Err(IssueError::NoX509Authority)
    }

    fn jwt_svids(&self, caller: &Caller, _audience: &[String], now: SystemTime) -> Result<Vec<IssuedJwt>, IssueError> {
        match &*self.jwt.lock().unwrap_or_else(|p| p.into_inner()) {
            JwtAnswer::NoKey => Err(IssueError::NoJwtKey),
            JwtAnswer::Token(token) => Ok(caller
                .entries
                .iter()
                .map(|e| IssuedJwt {
                    svid: JwtSvid {
                        spiffe_id: e.spiffe_id.clone(),
                        token: (*token).to_owned(),
                        expires_at: now + Duration::from_secs(300),
                    },
                    kid: "fake".into(),
                })
                .collect()),
        }
    }

    fn wit_svids(
        &self,
        _caller: &Caller,
        _now: SystemTime,
    ) -> Result<(Vec<crate::svid::wit::WitSvid>, SystemTime), IssueError> {
        Err(IssueError::NoWitKey)
    }

    fn bundles(&self) -> Arc<Bundles> {
        Arc::new(Bundles {
            x509: X509Bundle::default(),
            jwt: Arc::new(JwtBundle::new(vec![])),
            wit: Arc::new(JwtBundle::new(vec![])),
        })
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
