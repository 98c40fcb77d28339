//! The CLI's side of the admin and token sockets: one HTTP/1.1 request over a Unix socket.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("HTTP to {path} failed: {message}")]
    Http { path: String, message: String },
    #[error("no answer from {path} within {0:?}", .timeout)]
    Timeout { path: String, timeout: Duration },
}

/// Send `method path` with an optional body (JSON or a form, per `content_type`) and return the
/// status and body.
pub(crate) async fn request(
    socket: &Path,
    method: http::Method,
    path: &str,
    body: Option<(&str, Vec<u8>)>,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), ClientError> {
    let shown = socket.display().to_string();
    let work = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::Connect { path: shown.clone(), source })?;
        let http_err = |e: &dyn std::fmt::Display| ClientError::Http { path: shown.clone(), message: e.to_string() };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| http_err(&e))?;
        tokio::spawn(conn);
        let mut builder = http::Request::builder().method(method).uri(path).header(http::header::HOST, "localhost");
        let payload = match body {
            Some((content_type, bytes)) => {
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(payload)).map_err(|e| http_err(&e))?;
        let response = sender.send_request(request).await.map_err(|e| http_err(&e))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| http_err(&e))?.to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, work).await.unwrap_or(Err(ClientError::Timeout { path: shown.clone(), timeout }))
}
