//! The API's one error type and the one table that turns it into a gRPC status. Codes follow the
//! SPIFFE Workload API spec (`standards/SPIFFE_Workload_API.md`) and what SPIRE's agent returns,
//! so SDKs react as they do against SPIRE: retry on Unavailable, stop on PermissionDenied, fix the
//! request on InvalidArgument. Audit and metrics read the variant, never the code.

use crate::caller::CallerError;
use crate::issuer::IssueError;
use crate::svid::jwt::JwtError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The `workload.spiffe.io: true` metadata is missing (anti-SSRF, spec §"Transport").
    #[error("security header missing from request")]
    MissingSecurityHeader,
    /// A request field the RPC needs is empty or malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Attest / entitle refused the caller.
    #[error(transparent)]
    Caller(#[from] CallerError),
    /// The caller is entitled but no SVID could be signed.
    #[error(transparent)]
    Issue(#[from] IssueError),
    /// ValidateJWTSVID: the token is not valid.
    #[error(transparent)]
    InvalidJwt(#[from] JwtError),
    /// An RPC tessera does not serve (yet).
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ApiError {
    /// The gRPC code of this error: the whole table.
    pub fn code(&self) -> Code {
        match self {
            // Spec: a request without the security header MUST be rejected; SPIRE: InvalidArgument.
            ApiError::MissingSecurityHeader | ApiError::BadRequest(_) => Code::InvalidArgument,
            ApiError::Caller(e) => match e {
                // SPIRE: attestation failures are Unavailable, so the client retries (the
                // process may be mid-exec, a file mid-write).
                CallerError::NoPeerCredentials
                | CallerError::ShuttingDown
                | CallerError::Attestation(_)
                | CallerError::PolicyChanging => Code::Unavailable,
                // An attestation that could not even run is our fault.
                CallerError::AttestTask(_) => Code::Internal,
                // Spec: no identity for the caller → PermissionDenied (SDKs: "no identity issued").
                CallerError::NoIdentity
                | CallerError::NotEntitled(_)
                | CallerError::Revoked(_)
                | CallerError::DeniedByPolicy(_) => Code::PermissionDenied,
            },
            // Signing failed on the server side for an entitled caller: a condition that may pass
            // (a rotation in progress, a key not yet active), so Unavailable and the client
            // retries — the same code for X.509 and JWT (SPIRE's agent answers its signing
            // failures with Unavailable too), never Internal for one and Unavailable for the other.
            ApiError::Issue(_) => Code::Unavailable,
            // Spec: ValidateJWTSVID with an invalid token → InvalidArgument.
            ApiError::InvalidJwt(_) => Code::InvalidArgument,
            ApiError::Unsupported(_) => Code::Unimplemented,
        }
    }
}

impl From<&ApiError> for Status {
    fn from(e: &ApiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: impl Into<ApiError>) -> Status {
        Status::from(&e.into())
    }

    #[test]
    fn no_security_header_is_invalid_argument() {
        let s = status(ApiError::MissingSecurityHeader);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "security header missing from request");
    }

    #[test]
    fn bad_request_fields_are_invalid_argument() {
        assert_eq!(status(ApiError::BadRequest("audience must be specified".into())).code(), Code::InvalidArgument);
    }

    #[test]
    fn attestation_failure_is_unavailable() {
        assert_eq!(status(CallerError::NoPeerCredentials).code(), Code::Unavailable);
        assert_eq!(status(CallerError::ShuttingDown).code(), Code::Unavailable);
        assert_eq!(status(CallerError::PolicyChanging).code(), Code::Unavailable);
        let e = tessera_attestors::AttestError::NoPid;
        let s = status(CallerError::Attestation(e));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().starts_with("workload attestation failed: "), "{}", s.message());
        assert_eq!(status(CallerError::AttestTask("panicked".into())).code(), Code::Internal);
    }

    #[test]
    fn no_entry_is_permission_denied() {
        let s = status(CallerError::NoIdentity);
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "no identity issued");
        let id: crate::spiffe_id::SpiffeId = "spiffe://t/x".parse().unwrap();
        let s = status(CallerError::NotEntitled(id));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "no identity issued for spiffe://t/x");
    }

    #[test]
    fn bad_jwt_is_invalid_argument() {
        assert_eq!(status(JwtError::NoKid).code(), Code::InvalidArgument);
        assert_eq!(status(JwtError::Invalid("expired".into())).code(), Code::InvalidArgument);
    }

    #[test]
    fn minting_failure_is_one_code_for_both_svid_kinds() {
        let x509 = status(IssueError::X509Mint("rcgen".into())).code();
        let jwt = status(IssueError::JwtMint("encode".into())).code();
        assert_eq!(x509, Code::Unavailable);
        assert_eq!(jwt, x509);
        assert_eq!(status(IssueError::NoX509Authority).code(), Code::Unavailable);
        assert_eq!(status(IssueError::NoJwtKey).code(), Code::Unavailable);
    }

    #[test]
    fn unsupported_rpcs_are_unimplemented() {
        assert_eq!(status(ApiError::Unsupported("WIT-SVIDs are not supported")).code(), Code::Unimplemented);
    }
}
