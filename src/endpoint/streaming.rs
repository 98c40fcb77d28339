//! The server-streaming Workload API RPCs, served with a response body of our own.
//!
//! tonic's response body for a stream (`EncodeBody`) keeps the buffer its last message was encoded
//! in for the life of the stream (the frozen message and the emptied buffer share one
//! allocation): ~1.1 KiB per open `FetchX509SVID` stream, which idles almost all of its life.
//! Here each message is encoded into its own exactly sized `Bytes` (5-byte gRPC prefix + prost)
//! that HTTP/2 frees once written, so an idle stream holds no message.
//!
//! Only the response encoding differs. Every other step is tonic's or shared with the tonic
//! service: the same interceptor (`require_security_header`) on a `tonic::Request` built the
//! way tonic builds it, the same request decoder and size limit, the same `grpc-encoding`
//! refusal, the same [`WorkloadService`] methods that open the stream, refusals before the first
//! message as trailers-only responses (`Status::into_http`), and the final status in trailers.
//! This service sits inside tonic's server, so the request timeout, `grpc-timeout` and the
//! HTTP/2 limits apply as to any route. Other paths go to the generated server.

use super::status::ApiError;
use super::stream::EntitlementStream;
use super::workload_api::WorkloadService;
use crate::pb;
use crate::peer::PeerInfo;
use bytes::Bytes;
use http_body::Frame;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::server::NamedService;

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

/// The Workload API service: the streaming RPCs here, everything else through `generated` (the
/// tonic server with the interceptor).
#[derive(Clone)]
pub(crate) struct WorkloadRoutes<S, I> {
    api: WorkloadService,
    interceptor: I,
    generated: S,
}

impl<S, I> WorkloadRoutes<S, I> {
    pub(crate) fn new(api: WorkloadService, interceptor: I, generated: S) -> Self {
        Self { api, interceptor, generated }
    }
}

impl<S: NamedService, I> NamedService for WorkloadRoutes<S, I> {
    const NAME: &'static str = S::NAME;
}

/// Request paths of the server-streaming RPCs (`/<service>/<method>` as in the proto).
const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
const FETCH_X509_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";
const FETCH_JWT_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchJWTBundles";
const FETCH_WIT_SVID: &str = "/SpiffeWorkloadAPI/FetchWITSVID";
const FETCH_WIT_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchWITBundles";

impl<S, B, I> tower::Service<http::Request<Body>> for WorkloadRoutes<S, I>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
    I: Fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone + Send + Sync + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.generated.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> BoxFuture {
        let api = self.api.clone();
        let check = self.interceptor.clone();
        match req.uri().path() {
            FETCH_X509_SVID => Box::pin(serve(req, check, move |peer, m: pb::X509svidRequest| async move {
                api.x509_svid_stream(peer, m).await
            })),
            FETCH_X509_BUNDLES => Box::pin(serve(req, check, move |peer, m: pb::X509BundlesRequest| async move {
                api.x509_bundles_stream(peer, m).await
            })),
            FETCH_JWT_BUNDLES => Box::pin(serve(req, check, move |peer, m: pb::JwtBundlesRequest| async move {
                api.jwt_bundles_stream(peer, m).await
            })),
            FETCH_WIT_SVID => Box::pin(serve(req, check, move |peer, m: pb::WitsvidRequest| async move {
                api.wit_svid_stream(peer, m).await
            })),
            FETCH_WIT_BUNDLES => Box::pin(serve(req, check, move |peer, m: pb::WitBundlesRequest| async move {
                api.wit_bundles_stream(peer, m).await
            })),
            _ => {
                let response = self.generated.call(req);
                Box::pin(async move { response.await.map(|r| r.map(Body::new)) })
            }
        }
    }
}

/// One streaming RPC: the response, or its refusal as a trailers-only response.
async fn serve<Q, T, F, Fut>(
    req: http::Request<Body>,
    check: impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status>,
    open: F,
) -> Result<http::Response<Body>, Infallible>
where
    Q: prost::Message + Default + Send + 'static,
    T: prost::Message + Send + 'static,
    F: FnOnce(Result<PeerInfo, ApiError>, Q) -> Fut,
    Fut: Future<Output = Result<EntitlementStream<T>, Status>>,
{
    let opened = async {
        let (peer, message) = request::<Q>(req, check).await?;
        open(peer, message).await
    };
    Ok(match opened.await {
        Ok(stream) => {
            let mut response = http::Response::new(Body::new(MessageBody { stream: Some(stream) }));
            response.headers_mut().insert(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
            response
        }
        Err(status) => status.into_http(),
    })
}

const GRPC_CONTENT_TYPE: http::HeaderValue = http::HeaderValue::from_static("application/grpc");

/// The caller and its one request message, checked and decoded as tonic does for a
/// server-streaming RPC (interceptor, then `grpc-encoding`, then the message and its trailers).
async fn request<Q>(
    req: http::Request<Body>,
    check: impl Fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status>,
) -> Result<(Result<PeerInfo, ApiError>, Q), Status>
where
    Q: prost::Message + Default + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let checked = check(tonic::Request::from_http(http::Request::from_parts(parts, ())))?;
    if let Some(encoding) = checked.metadata().get("grpc-encoding")
        && encoding.as_bytes() != b"identity"
    {
        // No compression is enabled on the server: tonic's refusal (the same code and text).
        let name = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
        let mut status = Status::unimplemented(format!("Content is compressed with `{name}` which isn't supported"));
        status.metadata_mut().insert("grpc-accept-encoding", tonic::metadata::MetadataValue::from_static("identity"));
        return Err(status);
    }
    let peer = checked
        .extensions()
        .get::<PeerInfo>()
        .cloned()
        .ok_or(ApiError::from(crate::caller::CallerError::NoPeerCredentials));
    drop(checked);
    let decoder = crate::pb::codec::WorkloadCodec::<T0, Q>::default().decoder();
    // `None`: tonic's default limit for a request message (4 MiB).
    let mut messages = Streaming::new_request(decoder, body, None, None);
    let message = messages.message().await?.ok_or_else(|| Status::internal("Missing request message."))?;
    messages.trailers().await?;
    Ok((peer, message))
}

/// The encode side of the codec is not used to decode; any message type fills the slot.
type T0 = pb::X509svidRequest;

/// A stream's response body: each message encoded on its own, then the final status as
/// trailers (`grpc-status` 0 when the stream ended, the error's status when it failed).
struct MessageBody<T> {
    /// `None` once the trailers went out; the stream (and its subscriptions) is dropped then.
    stream: Option<EntitlementStream<T>>,
}

impl<T: prost::Message> http_body::Body for MessageBody<T> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let Some(stream) = self.stream.as_mut() else { return Poll::Ready(None) };
        let status = match ready!(stream.as_mut().poll_next(cx)) {
            Some(Ok(message)) => match encode(&message) {
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(status) => status,
            },
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.stream = None;
        let mut trailers = http::HeaderMap::with_capacity(3);
        Poll::Ready(Some(status.add_header(&mut trailers).map(|()| Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none()
    }
}

/// A gRPC length-prefixed message (uncompressed) in one allocation of exactly its size.
fn encode<T: prost::Message>(message: &T) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let prefix = u32::try_from(len)
        .map_err(|_| Status::resource_exhausted(format!("a response message of {len} bytes is too large")))?;
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0); // not compressed
    buf.extend_from_slice(&prefix.to_be_bytes());
    message.encode(&mut buf).map_err(|e| Status::internal(format!("encoding a response: {e}")))?;
    // len == capacity: the Vec's allocation becomes the `Bytes` as it is.
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_prefixed_and_sized_exactly() {
        let m = pb::X509svidResponse {
            svids: vec![pb::X509svid { spiffe_id: "spiffe://t/a".into(), ..Default::default() }],
            ..Default::default()
        };
        let b = encode(&m).unwrap();
        let len = prost::Message::encoded_len(&m);
        assert_eq!(b.len(), 5 + len);
        assert_eq!(b[0], 0);
        assert_eq!(u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize, len);
        assert_eq!(<pb::X509svidResponse as prost::Message>::decode(&b[5..]).unwrap(), m);
    }
}
