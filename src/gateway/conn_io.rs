//! The connection under hyper, watched byte by byte for what hyper does not give a service:
//! - when it last moved bytes (the keep-alive idle timeout);
//! - a request head that takes too long (slowloris): answered 408 with a JSON reason and closed;
//! - a request head that carries both `Content-Length` and `Transfer-Encoding` (hyper would
//!   serve it as chunked with the length dropped; the gateway refuses it: such a request is how
//!   smuggling starts between proxies that frame differently);
//! - hyper's own answer to a malformed or oversized head (an empty 400 or 431): replaced by the
//!   same status with a JSON reason.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection's service and its IO share.
#[derive(Default)]
pub(crate) struct Watch {
    /// Milliseconds since `base` of the last byte moved.
    pub last: AtomicU64,
    /// Requests the service is handling (head seen, response body not yet ended).
    pub in_flight: Arc<AtomicUsize>,
    /// Heads that reached the service.
    pub served: AtomicU64,
    /// A head with both framings was seen: the request is refused.
    pub conflicting_framing: AtomicBool,
    /// The connection ended on a slow head (408 sent).
    pub slow_head: AtomicBool,
    /// Part of a request head has arrived (its own deadline runs; the idle timeout waits).
    pub head_in_progress: AtomicBool,
}

pub(crate) struct ConnIo<S> {
    inner: S,
    watch: Arc<Watch>,
    base: Instant,
    head_timeout: Duration,
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    served_seen: u64,
    /// The bytes of the current line (heads only; bounded).
    line: Vec<u8>,
    scan: Scan,
    /// Bytes still to write before anything else (a replaced answer).
    pending: Vec<u8>,
}

/// Where the line scanner is.
#[derive(Default, Clone, Copy)]
struct Scan {
    in_head: bool,
    cl: bool,
    te: bool,
}

impl<S> ConnIo<S> {
    pub(crate) fn new(inner: S, watch: Arc<Watch>, base: Instant, head_timeout: Duration) -> Self {
        Self {
            inner,
            watch,
            base,
            head_timeout,
            head_deadline: None,
            served_seen: 0,
            line: Vec::new(),
            scan: Scan::default(),
            pending: Vec::new(),
        }
    }

    fn touch(&self) {
        self.watch.last.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Follow request heads line by line: a request line starts one, an empty line ends it.
    /// Bytes of bodies go through the same scanner; a body would have to hold a request line
    /// and both framing headers on lines of their own to be mistaken for a head.
    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() < 256 {
                    self.line.push(b);
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if !self.scan.in_head {
                if is_request_line(line) {
                    self.scan = Scan { in_head: true, cl: false, te: false };
                }
                continue;
            }
            if line.is_empty() {
                if self.scan.cl && self.scan.te {
                    self.watch.conflicting_framing.store(true, Ordering::Relaxed);
                }
                self.scan = Scan::default();
                continue;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"content-length:") {
                self.scan.cl = true;
            } else if lower.starts_with(b"transfer-encoding:") {
                self.scan.te = true;
            }
        }
    }
}

fn is_request_line(line: &[u8]) -> bool {
    let Some(sp) = line.iter().position(|b| *b == b' ') else { return false };
    sp > 0
        && line[..sp].iter().all(u8::is_ascii_uppercase)
        && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
}

/// Whether an answer's head (the start of `data`) says its body is JSON.
fn is_json_answer(data: &[u8]) -> bool {
    let head = data.split(|b| *b == b'\n').take_while(|l| l.len() > 1);
    head.map(<[u8]>::to_ascii_lowercase)
        .any(|l| l.starts_with(b"content-type:") && l.windows(16).any(|w| w == b"application/json"))
}

/// A JSON error answer as raw HTTP/1.1, closing the connection.
pub(crate) fn raw_answer(status: u16, text: &str, error: &str, reason: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": error, "reason": reason }).to_string();
    format!(
        "HTTP/1.1 {status} {text}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let served = this.watch.served.load(Ordering::Relaxed);
        if served != this.served_seen {
            this.served_seen = served;
            this.head_deadline = None;
            this.watch.head_in_progress.store(false, Ordering::Relaxed);
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        if got > 0 {
            this.touch();
            let fresh = buf.filled()[before..].to_vec();
            this.scan(&fresh);
            // Bytes while no request is being served: a head is arriving, and has its deadline.
            if this.watch.in_flight.load(Ordering::Relaxed) == 0 && this.head_deadline.is_none() {
                this.head_deadline = Some(Box::pin(tokio::time::sleep(this.head_timeout)));
                this.watch.head_in_progress.store(true, Ordering::Relaxed);
            }
        }
        if r.is_pending()
            && this.watch.in_flight.load(Ordering::Relaxed) == 0
            && let Some(deadline) = this.head_deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            this.watch.slow_head.store(true, Ordering::Relaxed);
            let answer = raw_answer(
                408,
                "Request Timeout",
                "request_timeout",
                &format!("the request head did not arrive within {:?}", this.head_timeout),
            );
            // Best effort: the answer fits a socket buffer; a peer that does not read loses it.
            let _ = Pin::new(&mut this.inner).poll_write(cx, &answer);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head too slow")));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    /// Write what is pending first; Ready(Ok) once it is all out.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        // hyper's answer to a head it could not parse: only ever written with no request in
        // the service, as one status line with an empty body.
        // The gateway's own refusals (JSON already, e.g. a 400 for a smuggling attempt, whose
        // request left the in-flight count before its answer is written) are left as they are.
        if this.watch.in_flight.load(Ordering::Relaxed) == 0 && data.starts_with(b"HTTP/1.1 4") && !is_json_answer(data)
        {
            let replaced = if data.starts_with(b"HTTP/1.1 400 ") {
                Some(raw_answer(400, "Bad Request", "bad_request", "malformed request line or headers"))
            } else if data.starts_with(b"HTTP/1.1 431 ") {
                Some(raw_answer(
                    431,
                    "Request Header Fields Too Large",
                    "headers_too_large",
                    "the request head is larger than the gateway's max_header_bytes",
                ))
            } else {
                None
            };
            if let Some(answer) = replaced {
                this.pending = answer;
                this.touch();
                let _ = this.drain(cx);
                return Poll::Ready(Ok(data.len()));
            }
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(bytes: &[u8]) -> bool {
        let w = Arc::new(Watch::default());
        let mut io = ConnIo::new(tokio::io::empty(), w.clone(), Instant::now(), Duration::from_secs(1));
        // In two pieces, split mid-line.
        let (a, b) = bytes.split_at(bytes.len() / 2);
        io.scan(a);
        io.scan(b);
        w.conflicting_framing.load(Ordering::Relaxed)
    }

    #[test]
    fn the_gateways_own_json_refusals_are_told_from_hypers_empty_ones() {
        assert!(is_json_answer(&raw_answer(400, "Bad Request", "bad_request", "x")));
        assert!(is_json_answer(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n"));
        assert!(!is_json_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"));
        assert!(!is_json_answer(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\ncontent-type: application/json"
        ));
    }

    #[test]
    fn both_framings_in_one_head_are_seen() {
        assert!(scanned(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        assert!(scanned(
            b"GET / HTTP/1.1\r\n\r\nPOST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
        ));
        assert!(!scanned(b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"));
        assert!(!scanned(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
        // One header in each of two heads is no conflict.
        assert!(!scanned(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"));
    }
}
