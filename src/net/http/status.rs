//! The one table of HTTP statuses that tessera's HTTP listeners (admin, token, telemetry, OIDC,
//! bundle endpoint) answer with. Handlers name an [`Answer`]; only this table turns it into a
//! status code, so a status is chosen once per meaning and checked by a test per row. (OAuth
//! errors are all `BadRequest`, RFC 6749 §5.2; their codes are `delegation::request::OAuthCode`.)

use ::http::StatusCode;

/// What an answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The request was served.
    Ok,
    /// A resource was made (a revocation).
    Created,
    /// The request is malformed, or an OAuth error (RFC 6749 §5.2).
    BadRequest,
    /// No valid credentials were presented (a bearer token missing, malformed or not verified).
    Unauthorized,
    /// The caller may not do this (the admin socket's peer check, a self-approval).
    Forbidden,
    /// No such path or object.
    NotFound,
    /// The path exists, not with this method.
    MethodNotAllowed,
    /// The request did not complete in time.
    RequestTimeout,
    /// The state forbids it (already decided, already revoked, a config rule).
    Conflict,
    /// The body is over the listener's limit.
    PayloadTooLarge,
    /// Our fault (a task failed, a store could not be written).
    Internal,
    /// An upstream behind a guard failed or sent something unusable.
    BadGateway,
    /// An upstream behind a guard sent no answer in time.
    GatewayTimeout,
    /// Not ready, or over a limit: try again later.
    Unavailable,
    /// A store is full (revocations).
    InsufficientStorage,
}

impl Answer {
    /// The status code: the whole table.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Answer::Ok => StatusCode::OK,
            Answer::Created => StatusCode::CREATED,
            Answer::BadRequest => StatusCode::BAD_REQUEST,
            Answer::Unauthorized => StatusCode::UNAUTHORIZED,
            Answer::Forbidden => StatusCode::FORBIDDEN,
            Answer::NotFound => StatusCode::NOT_FOUND,
            Answer::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Answer::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Answer::Conflict => StatusCode::CONFLICT,
            Answer::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Answer::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Answer::BadGateway => StatusCode::BAD_GATEWAY,
            Answer::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Answer::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    /// Whether a client's answer of `status` means this (for the HTTP clients: the bundle
    /// endpoint fetch, the CLI).
    pub(crate) fn is(self, status: StatusCode) -> bool {
        self.status() == status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_answer_has_its_status() {
        let rows = [
            (Answer::Ok, 200),
            (Answer::Created, 201),
            (Answer::BadRequest, 400),
            (Answer::Unauthorized, 401),
            (Answer::Forbidden, 403),
            (Answer::NotFound, 404),
            (Answer::MethodNotAllowed, 405),
            (Answer::RequestTimeout, 408),
            (Answer::Conflict, 409),
            (Answer::PayloadTooLarge, 413),
            (Answer::Internal, 500),
            (Answer::BadGateway, 502),
            (Answer::GatewayTimeout, 504),
            (Answer::Unavailable, 503),
            (Answer::InsufficientStorage, 507),
        ];
        for (answer, code) in rows {
            assert_eq!(answer.status().as_u16(), code, "{answer:?}");
            assert!(answer.is(answer.status()));
        }
    }
}
