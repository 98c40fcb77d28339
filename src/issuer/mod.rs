//! Who signs. The services ask an [`Issuer`] for SVIDs and bundles and never see a key; today's
//! node-local CA with its per-process SVID cache is [`local::LocalIssuer`]. A signer elsewhere (a
//! SPIRE Server, a KMS) is another implementation of the same trait.

#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod local;

use crate::bundle::{JwtBundle, X509Bundle};
use crate::caller::Caller;
use crate::spiffe_id::TrustDomain;
use crate::svid::{jwt::JwtSvid, x509::X509Svid};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// The signing side as the services that publish or use its keys see it (delegation, OIDC and
/// the bundle endpoint, telemetry): a snapshot of the key ring and the trust domain, behind one
/// seam beside [`Issuer`]. The node-local CA is one; a SPIRE-mode key view would be another.
pub(crate) trait KeySource: Send + Sync {
    /// The current key ring (an immutable snapshot).
    fn authorities(&self) -> Arc<crate::ca::Authorities>;
    fn trust_domain(&self) -> &TrustDomain;
    /// The life of each signing key (publications are refreshed well within it).
    fn key_ttl(&self) -> std::time::Duration;
}

impl KeySource for crate::ca::Ca {
    fn authorities(&self) -> Arc<crate::ca::Authorities> {
        crate::ca::Ca::authorities(self)
    }
    fn trust_domain(&self) -> &TrustDomain {
        crate::ca::Ca::trust_domain(self)
    }
    fn key_ttl(&self) -> std::time::Duration {
        self.ttl()
    }
}

/// Why no SVID could be made (the caller was entitled; the signing side failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    #[error("no active X.509 authority")]
    NoX509Authority,
    #[error("no active JWT signing key")]
    NoJwtKey,
    #[error("minting failed: {0}")]
    X509Mint(String),
    #[error("could not mint JWT-SVID: {0}")]
    JwtMint(String),
    #[error("no active WIT signing key")]
    NoWitKey,
    #[error("could not mint WIT-SVID: {0}")]
    WitMint(String),
}

/// The local trust domain's bundles at one moment; a new value (a new `Arc`) after each change.
#[derive(Debug)]
pub(crate) struct Bundles {
    pub x509: X509Bundle,
    pub jwt: Arc<JwtBundle>,
    /// WIT signing keys (`use: wit-svid`), for FetchWITBundles only.
    pub wit: Arc<JwtBundle>,
}

/// One X.509-SVID handed out, and whether this process had it already.
pub(crate) struct IssuedX509 {
    pub svid: Arc<X509Svid>,
    pub reused: bool,
}

/// X.509-SVIDs for every entry of a caller, the bundle they verify against, and when to renew.
pub(crate) struct X509Svids {
    pub svids: Vec<IssuedX509>,
    pub bundles: Arc<Bundles>,
    pub refresh: SystemTime,
}

/// One JWT-SVID and the key ID that signed it.
pub(crate) struct IssuedJwt {
    pub svid: JwtSvid,
    pub kid: String,
}

pub(crate) trait Issuer: Send + Sync {
    /// The trust domain this issuer signs for.
    fn trust_domain(&self) -> &TrustDomain;
    /// An X.509-SVID for each of the caller's entries, in order.
    fn x509_svids(&self, caller: &Caller, now: SystemTime) -> Result<X509Svids, IssueError>;
    /// A JWT-SVID for each of the caller's entries, for `audience`.
    fn jwt_svids(&self, caller: &Caller, audience: &[String], now: SystemTime) -> Result<Vec<IssuedJwt>, IssueError>;
    /// A fresh WIT-SVID (and key pair) for each of the caller's entries, and when to renew.
    fn wit_svids(
        &self,
        caller: &Caller,
        now: SystemTime,
    ) -> Result<(Vec<crate::svid::wit::WitSvid>, SystemTime), IssueError>;
    /// The local trust domain's bundles now.
    fn bundles(&self) -> Arc<Bundles>;
    /// Changes whenever the bundles change (rotation).
    fn changes(&self) -> watch::Receiver<u64>;
}
