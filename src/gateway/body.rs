//! Bodies that stream through the gateway frame by frame (a server-sent event goes out as soon as
//! it arrives), counted, capped and watched for silence; and the guard that writes a call's audit
//! line when its response body ends, however it ends (complete, upstream error, client gone).

use crate::events::gateway::GatewayCall;
use crate::events::{Event, Events};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type GwBody = BoxBody<Bytes, BoxError>;

/// A body of fixed bytes.
pub(crate) fn full(bytes: impl Into<Bytes>) -> GwBody {
    http_body_util::Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn empty() -> GwBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// Why a body was cut.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the request body is larger than the route's limit of {0} bytes")]
    TooLarge(u64),
    #[error("no data for {0:?}")]
    Idle(Duration),
    #[error("the call took longer than request_timeout")]
    Total,
}

/// Writes the audit line of a call once, when dropped: after its response body ended.
pub(crate) struct CallGuard {
    pub record: Option<GatewayCall>,
    pub events: Events,
    pub started: Instant,
    pub request_bytes: Arc<AtomicU64>,
    pub response_bytes: Arc<AtomicU64>,
    /// Set when the body ended with an error (upstream reset, silence): the line says so.
    pub broken: Arc<AtomicBool>,
    /// Decrements the connection's in-flight count (idle detection).
    pub in_flight: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.in_flight {
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(mut rec) = self.record.take() {
            rec.request_bytes = self.request_bytes.load(Ordering::Relaxed);
            rec.response_bytes = self.response_bytes.load(Ordering::Relaxed);
            rec.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            if self.broken.load(Ordering::Relaxed) {
                rec.reason =
                    format!("{}; the response ended early (upstream error, silence or client gone)", rec.reason);
            }
            self.events.emit(Event::GatewayCall(Box::new(rec)));
        }
    }
}

/// A body passed through: counts its bytes, fails past `limit` bytes and after `idle` without
/// a frame, and holds an optional guard dropped with it.
pub(crate) struct Metered<B> {
    inner: B,
    count: Arc<AtomicU64>,
    limit: Option<u64>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The whole call's deadline (request_timeout), response streaming included.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    over: Option<Arc<AtomicBool>>,
    broken: Option<Arc<AtomicBool>>,
    /// Trailer frames are dropped (an agent's request: a trailer could carry a credential
    /// header past the ones the gateway removed, to an HTTP/2 upstream that forwards them).
    drop_trailers: bool,
    _guard: Option<CallGuard>,
}

impl<B> Metered<B> {
    pub(crate) fn new(inner: B, count: Arc<AtomicU64>, idle: Duration) -> Self {
        Self {
            inner,
            count,
            limit: None,
            idle,
            timer: None,
            deadline: None,
            over: None,
            broken: None,
            drop_trailers: false,
            _guard: None,
        }
    }

    /// Fail once more than `limit` bytes came; `over` is set then.
    pub(crate) fn limit(mut self, limit: u64, over: Arc<AtomicBool>) -> Self {
        self.limit = Some(limit);
        self.over = Some(over);
        self
    }

    /// Drop trailer frames.
    pub(crate) fn without_trailers(mut self) -> Self {
        self.drop_trailers = true;
        self
    }

    /// End with an error at `at` (the call's total time limit).
    pub(crate) fn deadline(mut self, at: Instant) -> Self {
        self.deadline = Some(Box::pin(tokio::time::sleep_until(at.into())));
        self
    }

    pub(crate) fn guard(mut self, guard: CallGuard) -> Self {
        self.broken = Some(guard.broken.clone());
        self._guard = Some(guard);
        self
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if this.drop_trailers && frame.is_trailers() => {
                // Trailers end a body: nothing follows them.
                this.timer = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                if let Some(data) = frame.data_ref() {
                    let total = this.count.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if let Some(limit) = this.limit
                        && total > limit
                    {
                        if let Some(over) = &this.over {
                            over.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(BodyError::TooLarge(limit).into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(b) = &this.broken {
                    b.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if let Some(d) = this.deadline.as_mut()
                    && d.as_mut().poll(cx).is_ready()
                {
                    if let Some(b) = &this.broken {
                        b.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Some(Err(BodyError::Total.into())));
                }
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    if let Some(b) = &this.broken {
                        b.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Some(Err(BodyError::Idle(idle).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
