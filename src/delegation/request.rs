//! The RFC 8693 token request (`application/x-www-form-urlencoded`) and the OAuth errors of
//! RFC 6749 §5.2 that answer a bad one.

use crate::registry::delegation::valid_scope_token;
use serde_json::{Value, json};

pub(crate) const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub(crate) const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Scopes one request may name.
pub(crate) const MAX_SCOPES: usize = 64;

/// The OAuth error codes the token endpoint answers with (RFC 6749 §5.2, RFC 8693 §2.2.2,
/// RFC 8628 §3.5 for the approval wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OAuthCode {
    InvalidRequest,
    InvalidGrant,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
    UnsupportedGrantType,
    AuthorizationPending,
    SlowDown,
    AccessDenied,
    TemporarilyUnavailable,
    /// RFC 9396 §5: the `authorization_details` are malformed, undeclared or not allowed.
    InvalidAuthorizationDetails,
    /// RFC 6750 §3.1: a bearer token (a user's, deciding an approval) is missing or bad.
    InvalidToken,
}

impl OAuthCode {
    /// The code on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OAuthCode::InvalidRequest => "invalid_request",
            OAuthCode::InvalidGrant => "invalid_grant",
            OAuthCode::InvalidScope => "invalid_scope",
            OAuthCode::InvalidTarget => "invalid_target",
            OAuthCode::UnauthorizedClient => "unauthorized_client",
            OAuthCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthCode::AuthorizationPending => "authorization_pending",
            OAuthCode::SlowDown => "slow_down",
            OAuthCode::AccessDenied => "access_denied",
            OAuthCode::TemporarilyUnavailable => "temporarily_unavailable",
            OAuthCode::InvalidAuthorizationDetails => "invalid_authorization_details",
            OAuthCode::InvalidToken => "invalid_token",
        }
    }
}

/// An OAuth error response (always 400, RFC 6749 §5.2).
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    pub code: OAuthCode,
    pub description: String,
    /// For `authorization_pending`: the approval to poll with.
    pub approval_id: Option<String>,
}

impl OAuthError {
    pub(crate) fn new(code: OAuthCode, description: impl Into<String>) -> Self {
        Self { code, description: description.into(), approval_id: None }
    }
    pub(crate) fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(OAuthCode::InvalidRequest, d)
    }
    pub(crate) fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(OAuthCode::InvalidGrant, d)
    }
    pub(crate) fn invalid_details(d: impl Into<String>) -> Self {
        Self::new(OAuthCode::InvalidAuthorizationDetails, d)
    }
    pub(crate) fn body(&self) -> Value {
        let mut v = json!({ "error": self.code.as_str(), "error_description": self.description });
        if let Some(id) = &self.approval_id {
            v["approval_id"] = id.clone().into();
            v["interval"] = 2.into();
        }
        v
    }
}

/// A well-formed token exchange request.
#[derive(Debug)]
pub(crate) struct TokenRequest {
    /// The user's (or an earlier hop's) token: a secret, never printed.
    pub subject_token: crate::secret::BearerToken,
    pub audience: String,
    /// As requested, in order, without repeats.
    pub scopes: Vec<String>,
    pub approval_id: Option<String>,
    /// The RFC 9396 `authorization_details` parameter's text (at most
    /// [`super::details::MAX_LEN`] bytes; checked against the declared types by the exchange).
    pub authorization_details: Option<String>,
}

/// What could be read of a request even when it is refused (for the audit line).
#[derive(Debug, Default)]
pub(crate) struct Requested {
    pub audience: Option<String>,
    pub scopes: Vec<String>,
    /// An `approval_id` was given: the request polls an approval.
    pub approval_id: bool,
}

/// Parse and check the form. Unknown parameters are ignored (RFC 6749 §3.2), repeated ones
/// refused (except `audience`, which RFC 8693 lets repeat, and which must be exactly one here).
/// `truncated`: `body` is only the start of a body over the socket's limit (the rest was read and
/// dropped): the answer names the parameter that made it too long when it can.
pub(crate) fn parse(
    content_type: Option<&str>,
    body: &[u8],
    truncated: bool,
    seen: &mut Requested,
) -> Result<TokenRequest, OAuthError> {
    let form_type = content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
    }
    if truncated {
        return Err(too_long(body, seen));
    }
    let mut single: std::collections::BTreeMap<String, String> = Default::default();
    let mut audiences = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if k == "audience" {
            audiences.push(v.into_owned());
            continue;
        }
        if single.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {:?} is repeated", cut(&k))));
        }
    }
    if let [one] = audiences.as_slice() {
        seen.audience = Some(cut(one));
    }
    seen.approval_id = single.contains_key("approval_id");
    if let Some(s) = single.get("scope") {
        seen.scopes = s.split(' ').filter(|s| !s.is_empty()).take(MAX_SCOPES).map(cut).collect();
    }
    match single.get("grant_type").map(String::as_str) {
        Some(GRANT_TYPE) => {}
        Some(other) => {
            return Err(OAuthError::new(
                OAuthCode::UnsupportedGrantType,
                format!("grant_type {:?} is not supported", cut(other)),
            ));
        }
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
    }
    let subject_token = single.remove("subject_token").filter(|t| !t.is_empty());
    let Some(subject_token) = subject_token else {
        return Err(OAuthError::invalid_request("subject_token is missing"));
    };
    match single.get("subject_token_type").map(String::as_str) {
        Some(TOKEN_TYPE_JWT | TOKEN_TYPE_ACCESS) => {}
        Some(other) => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {:?} is not supported (use {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ACCESS})",
                cut(other)
            )));
        }
        None => return Err(OAuthError::invalid_request("subject_token_type is missing")),
    }
    if let Some(t) = single.get("requested_token_type")
        && t != TOKEN_TYPE_ACCESS
        && t != TOKEN_TYPE_JWT
    {
        return Err(OAuthError::invalid_request(format!("requested_token_type {:?} cannot be issued", cut(t))));
    }
    if single.contains_key("actor_token") {
        return Err(OAuthError::invalid_request(
            "actor_token is not accepted: the actor is the attested calling process",
        ));
    }
    if single.contains_key("resource") {
        return Err(OAuthError::new(
            OAuthCode::InvalidTarget,
            "name the target with exactly one audience, not resource",
        ));
    }
    let audience = match audiences.len() {
        1 => audiences.swap_remove(0),
        0 => return Err(OAuthError::invalid_request("audience is missing: name exactly one")),
        n => return Err(OAuthError::invalid_request(format!("{n} audiences given: name exactly one"))),
    };
    if audience.is_empty() || audience.len() > 1024 {
        return Err(OAuthError::invalid_request("audience must be 1 to 1024 bytes"));
    }
    let Some(scope) = single.get("scope") else {
        return Err(OAuthError::invalid_request("scope is missing: name the scopes this task needs"));
    };
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !valid_scope_token(s) {
            return Err(OAuthError::new(OAuthCode::InvalidScope, format!("{:?} is not a scope token", cut(s))));
        }
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err(OAuthError::invalid_request("scope is empty"));
    }
    if scopes.len() > MAX_SCOPES {
        return Err(OAuthError::new(OAuthCode::InvalidScope, format!("more than {MAX_SCOPES} scopes")));
    }
    let approval_id = single.remove("approval_id");
    if approval_id.as_ref().is_some_and(|a| a.is_empty() || a.len() > 64) {
        return Err(OAuthError::invalid_request("approval_id is malformed"));
    }
    let authorization_details = single.remove("authorization_details");
    if let Some(d) = &authorization_details
        && d.len() > super::details::MAX_LEN
    {
        return Err(OAuthError::invalid_details(format!(
            "authorization_details is {} bytes; at most {} are accepted",
            d.len(),
            super::details::MAX_LEN
        )));
    }
    Ok(TokenRequest {
        subject_token: crate::secret::BearerToken::new(subject_token),
        audience,
        scopes,
        approval_id,
        authorization_details,
    })
}

/// The error for a body over the socket's limit, read from its start: an `authorization_details`
/// parameter in it (whole or cut off) made it too long; else the body is just too large.
fn too_long(start: &[u8], seen: &mut Requested) -> OAuthError {
    let mut details = false;
    for (k, v) in form_urlencoded::parse(start) {
        match k.as_ref() {
            "authorization_details" => details = true,
            "audience" if seen.audience.is_none() => seen.audience = Some(cut(&v)),
            _ => {}
        }
    }
    if details {
        OAuthError::invalid_details(format!(
            "authorization_details is far longer than the {} bytes accepted",
            super::details::MAX_LEN
        ))
    } else {
        OAuthError::invalid_request("the request body is too large")
    }
}

fn cut(s: &str) -> String {
    s.chars().take(128).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn form(extra: &str) -> Vec<u8> {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&\
             subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt{extra}"
        )
        .into_bytes()
    }

    #[test]
    fn well_formed() {
        let r =
            parse(FORM, &form("&audience=https%3A%2F%2Fapi&scope=a+b+a"), false, &mut Requested::default()).unwrap();
        assert_eq!(r.audience, "https://api");
        assert_eq!(r.scopes, ["a", "b"]);
        // The parsed request can be logged: the token is not in it.
        let shown = format!("{r:?}");
        assert!(!shown.contains("a.b.c") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn refusals() {
        let code = |ct, body: &[u8]| parse(ct, body, false, &mut Requested::default()).unwrap_err().code.as_str();
        assert_eq!(code(FORM, &form("&scope=a")), "invalid_request", "no audience");
        assert_eq!(code(FORM, &form("&audience=x&audience=y&scope=a")), "invalid_request");
        assert_eq!(code(FORM, &form("&audience=x")), "invalid_request", "no scope");
        assert_eq!(code(FORM, &form("&audience=x&scope=a%22b")), "invalid_scope");
        assert_eq!(code(FORM, &form("&audience=x&scope=a&scope=b")), "invalid_request");
        assert_eq!(code(FORM, &form("&audience=x&scope=a&resource=r")), "invalid_target");
        assert_eq!(code(Some("application/json"), &form("&audience=x&scope=a")), "invalid_request");
        assert_eq!(code(FORM, b"grant_type=password"), "unsupported_grant_type");
        let long =
            format!("&audience=x&scope=a&authorization_details={}", "a".repeat(super::super::details::MAX_LEN + 1));
        assert_eq!(code(FORM, &form(&long)), "invalid_authorization_details");
    }

    /// The start of a body over the socket's limit: the parameter that made it long is named.
    #[test]
    fn a_cut_off_body() {
        let cut = |body: &[u8]| parse(FORM, body, true, &mut Requested::default()).unwrap_err().code.as_str();
        assert_eq!(cut(&form("&audience=x&authorization_details=%5B%7B%22type")), "invalid_authorization_details");
        assert_eq!(cut(&form("&audience=x&scope=aaaa")), "invalid_request");
        let r =
            parse(FORM, &form("&audience=x&scope=a&authorization_details=%5B%5D"), false, &mut Requested::default());
        assert_eq!(r.unwrap().authorization_details.as_deref(), Some("[]"));
    }
}
