//! A federation partner's bundle endpoint as the trust-material layer takes it: where it is and
//! how its server is authenticated (the config's `[[federation]]` blocks are parsed into these).

use crate::spiffe_id::SpiffeId;

/// How a partner's bundle endpoint is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartnerProfile {
    /// Its server SVID must chain to the partner's current bundle and carry this ID.
    HttpsSpiffe { endpoint_spiffe_id: SpiffeId },
    /// Its certificate must be valid for the URL's host under the system's Web PKI roots.
    HttpsWeb,
}

/// A partner's bundle endpoint, fetched at start and then at its refresh hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FederationEndpoint {
    pub url: http::Uri,
    pub profile: PartnerProfile,
}
