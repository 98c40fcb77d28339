//! SPIFFE IDs and trust domains, validated by the rules of `standards/SPIFFE-ID.md`.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Why a string is not a SPIFFE ID (messages follow go-spiffe's wording where it has one).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpiffeIdError {
    #[error("scheme is missing or invalid: a SPIFFE ID starts with \"spiffe://\" (lowercase)")]
    Scheme,
    #[error("trust domain is missing")]
    MissingTrustDomain,
    #[error("trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores")]
    TrustDomainChars,
    #[error("trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    #[error("path segment characters are limited to letters, numbers, dots, dashes, and underscores")]
    PathChars,
    #[error("path cannot contain empty segments (\"//\")")]
    EmptySegment,
    #[error("path cannot contain dot segments (\".\" or \"..\")")]
    DotSegment,
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    #[error("a SPIFFE ID is at most 2048 bytes")]
    TooLong,
    #[error("a workload SPIFFE ID needs a path, e.g. spiffe://example.org/agents/support")]
    RootPath,
}

/// A trust domain name, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `spiffe://<td>`: the key used for bundles on the Workload API.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept both "example.org" and "spiffe://example.org", as operators write either.
        let name = s.strip_prefix("spiffe://").unwrap_or(s);
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > 255 {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if !td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')) {
        return Err(SpiffeIdError::TrustDomainChars);
    }
    Ok(())
}

/// A SPIFFE ID: `spiffe://<trust domain><path>`. The path may be empty only for trust-domain IDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    path: String,
}

impl SpiffeId {
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }
    pub fn path(&self) -> &str {
        &self.path
    }
    /// Parse an ID that must name a workload (non-root path), as X509-SVID leaves require.
    pub fn parse_workload(s: &str) -> Result<Self, SpiffeIdError> {
        let id: Self = s.parse()?;
        if id.path.is_empty() {
            return Err(SpiffeIdError::RootPath);
        }
        Ok(id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > 2048 {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        if !path.is_empty() {
            validate_path(path)?;
        }
        Ok(Self { trust_domain: TrustDomain(td.to_owned()), path: path.to_owned() })
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    // `path` starts with '/'; every segment after it must be a non-empty, non-dot run of allowed chars.
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(if i == last { SpiffeIdError::TrailingSlash } else { SpiffeIdError::EmptySegment });
        }
        if *seg == "." || *seg == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
            return Err(SpiffeIdError::PathChars);
        }
    }
    Ok(())
}

/// As a string (`spiffe://td/path`), e.g. the `sub` of a JWT.
impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_round_trip() {
        for s in ["spiffe://example.org/agents/support", "spiffe://a-b_c.d/x/y.z", "spiffe://10.0.0.1/w"] {
            assert_eq!(s.parse::<SpiffeId>().unwrap().to_string(), s);
        }
        assert_eq!("spiffe://example.org".parse::<SpiffeId>().unwrap().path(), "");
    }

    #[test]
    fn invalid_ids_name_the_rule() {
        let cases = [
            ("http://example.org/x", SpiffeIdError::Scheme),
            ("SPIFFE://example.org/x", SpiffeIdError::Scheme),
            ("spiffe:///x", SpiffeIdError::MissingTrustDomain),
            ("spiffe://Example.org/x", SpiffeIdError::TrustDomainChars),
            ("spiffe://example.org:8080/x", SpiffeIdError::TrustDomainChars),
            ("spiffe://user@example.org/x", SpiffeIdError::TrustDomainChars),
            ("spiffe://example.org/a//b", SpiffeIdError::EmptySegment),
            ("spiffe://example.org/a/", SpiffeIdError::TrailingSlash),
            ("spiffe://example.org/a/../b", SpiffeIdError::DotSegment),
            ("spiffe://example.org/a?b", SpiffeIdError::PathChars),
            ("spiffe://example.org/a#b", SpiffeIdError::PathChars),
            ("spiffe://example.org/a%20b", SpiffeIdError::PathChars),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<SpiffeId>().unwrap_err(), want, "{s}");
        }
        assert_eq!(SpiffeId::parse_workload("spiffe://example.org").unwrap_err(), SpiffeIdError::RootPath);
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert_eq!(long.parse::<SpiffeId>().unwrap_err(), SpiffeIdError::TooLong);
    }
}
