//! `--allow` patterns and the authorizer built from them.
//!
//! A pattern is one of:
//! - an exact SPIFFE ID: `spiffe://td/agents/billing`;
//! - a whole trust domain: `spiffe://td` (every ID in `td`);
//! - a path prefix: `spiffe://td/agents/*` (every ID under `/agents/`, at any depth, but not
//!   `spiffe://td/agents` itself and not `spiffe://td/agentsX`).
//!
//! The authorizer runs inside spiffe-rustls's verifier, after the peer's chain has been verified
//! against the bundle of its trust domain, so it only ever sees a cryptographically proven ID.

use spiffe::{SpiffeId, TrustDomain};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Why an `--allow` pattern was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternError {
    #[error("{0:?}: not a SPIFFE ID or trust domain ({1})")]
    Invalid(String, String),
    #[error("{0:?}: `*` is only allowed as a whole last path segment, as in spiffe://td/agents/*")]
    Wildcard(String),
    #[error("{0:?}: give a SPIFFE ID or trust domain as spiffe://…")]
    NoScheme(String),
}

/// One `--allow` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Any ID of this trust domain.
    TrustDomain(TrustDomain),
    /// Any ID whose path starts with `prefix` + `/` (`prefix` is itself a valid ID).
    Prefix(SpiffeId),
}

impl Pattern {
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(want) => want == id,
            Self::TrustDomain(td) => id.trust_domain() == td,
            Self::Prefix(base) => {
                id.trust_domain() == base.trust_domain()
                    && id.path().strip_prefix(base.path()).is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
            }
        }
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        match self {
            Self::Exact(id) | Self::Prefix(id) => id.trust_domain(),
            Self::TrustDomain(td) => td,
        }
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |e: &dyn fmt::Display| PatternError::Invalid(s.to_owned(), e.to_string());
        let Some(rest) = s.strip_prefix("spiffe://") else {
            return Err(PatternError::NoScheme(s.to_owned()));
        };
        let (base, prefix) = match s.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (s, false),
        };
        if base.contains('*') {
            return Err(PatternError::Wildcard(s.to_owned()));
        }
        // A bare trust domain (`spiffe://td` or `spiffe://td/`).
        if !rest.trim_end_matches('/').contains('/') {
            if prefix {
                // `spiffe://td/*` means the whole trust domain.
                let td = TrustDomain::new(base).map_err(|e| invalid(&e))?;
                return Ok(Self::TrustDomain(td));
            }
            let td = TrustDomain::new(s.trim_end_matches('/')).map_err(|e| invalid(&e))?;
            return Ok(Self::TrustDomain(td));
        }
        let id = SpiffeId::new(base).map_err(|e| invalid(&e))?;
        Ok(if prefix { Self::Prefix(id) } else { Self::Exact(id) })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::TrustDomain(td) => write!(f, "spiffe://{td}"),
            Self::Prefix(id) => write!(f, "{id}/*"),
        }
    }
}

/// The `--allow` list: a peer is admitted when any pattern matches its SPIFFE ID.
#[derive(Debug, Clone)]
pub struct AllowList {
    patterns: Vec<Pattern>,
}

impl AllowList {
    pub fn new(patterns: Vec<Pattern>) -> Self {
        Self { patterns }
    }

    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.patterns.iter().any(|p| p.matches(id))
    }

    /// The trust domains named by the patterns: the peer's chain is only ever checked against
    /// the bundles of these (`TrustDomainPolicy::AllowList`), so a bundle of an unrelated
    /// federated domain never vouches for anybody here.
    pub fn trust_domains(&self) -> BTreeSet<TrustDomain> {
        self.patterns.iter().map(|p| p.trust_domain().clone()).collect()
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.patterns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl spiffe_rustls::Authorizer for AllowList {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self.allows(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn allow(ps: &[&str]) -> AllowList {
        AllowList::new(ps.iter().map(|p| p.parse().unwrap()).collect())
    }

    #[test]
    fn exact() {
        let a = allow(&["spiffe://td/agents/billing"]);
        assert!(a.allows(&id("spiffe://td/agents/billing")));
        assert!(!a.allows(&id("spiffe://td/agents/billing/x")));
        assert!(!a.allows(&id("spiffe://td/agents/billingx")));
        assert!(!a.allows(&id("spiffe://other/agents/billing")));
    }

    #[test]
    fn trust_domain() {
        for p in ["spiffe://td", "spiffe://td/", "spiffe://td/*"] {
            let a = allow(&[p]);
            assert!(a.allows(&id("spiffe://td/anything/at/all")), "{p}");
            assert!(!a.allows(&id("spiffe://td2/x")), "{p}");
            assert!(!a.allows(&id("spiffe://other/td/x")), "{p}");
        }
    }

    #[test]
    fn prefix() {
        let a = allow(&["spiffe://td/agents/*"]);
        assert!(a.allows(&id("spiffe://td/agents/billing")));
        assert!(a.allows(&id("spiffe://td/agents/a/b")));
        assert!(!a.allows(&id("spiffe://td/agents")));
        assert!(!a.allows(&id("spiffe://td/agentsx/a")));
        assert!(!a.allows(&id("spiffe://other/agents/a")));
        assert_eq!(a.to_string(), "spiffe://td/agents/*");
    }

    #[test]
    fn several_and_trust_domains() {
        let a = allow(&["spiffe://a/x", "spiffe://b"]);
        assert!(a.allows(&id("spiffe://a/x")));
        assert!(a.allows(&id("spiffe://b/y")));
        assert!(!a.allows(&id("spiffe://a/y")));
        let tds: Vec<String> = a.trust_domains().iter().map(|t| t.to_string()).collect();
        assert_eq!(tds, ["a", "b"]);
    }

    #[test]
    fn bad_patterns() {
        for p in ["td/agents", "https://td/x", "spiffe://td/a*", "spiffe://td/*/x", "spiffe://td/a//b", "spiffe://", ""]
        {
            assert!(p.parse::<Pattern>().is_err(), "{p} should be rejected");
        }
        // The trust domain is case-insensitive: the spiffe crate normalises it to lowercase.
        let a = allow(&["spiffe://TD.example/x"]);
        assert!(a.allows(&id("spiffe://td.example/x")));
    }
}
