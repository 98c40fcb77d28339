//! Lets unmodified grpcio clients (py-spiffe) talk to us over a Unix socket.
//!
//! grpcio (≥ 1.57) and grpc-java send the socket path, often percent-encoded, as the HTTP/2
//! `:authority` of every request. The `h2` crate under tonic treats that as a malformed request and
//! resets the stream (hyperium/h2#487, unmerged), so those clients could never get an SVID.
//!
//! This filter sits between the socket and h2 on the client-to-server byte stream only. It passes
//! every frame through untouched except header blocks, which it decodes (HPACK, tracking the
//! client's dynamic table) and re-encodes as plain literals, replacing an `:authority` that is not
//! a valid URI authority with `localhost` — the value grpc-go and kubelet use for Unix sockets.
//! Re-encoding every block without indexing keeps h2's own HPACK table empty and so in step.
//! The authority carries no meaning on a Unix socket; nothing else about a request changes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack_check::{MAX_TABLE, check_block};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// h2's default SETTINGS_MAX_FRAME_SIZE, which tonic keeps: our frames must not exceed it.
const MAX_FRAME: usize = 16_384;
/// A header block (HEADERS plus CONTINUATIONs) larger than this is refused: Workload API requests
/// carry a handful of short headers. Bounds what one connection can make us buffer.
const MAX_BLOCK: usize = 64 * 1024;
/// The most decoded header bytes (names plus values) one block may expand to. HPACK lets a tiny
/// block reference a large table entry many times; without this bound one frame could decode to
/// gigabytes.
const MAX_DECODED: usize = 64 * 1024;
/// Filtered bytes held for h2 at once; the rest of what the client sent waits, unexpanded.
const OUT_HIGH_WATER: usize = 64 * 1024;

struct PendingBlock {
    stream_id: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// The filtering stream. Reads are filtered; writes pass straight through.
pub(crate) struct AuthorityFix<S> {
    inner: S,
    raw: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    preface_left: usize,
    /// Payload bytes of a non-header frame still to copy through unparsed.
    passthrough_left: usize,
    decoder: fluke_hpack::Decoder<'static>,
    pending: Option<PendingBlock>,
    rewritten: u64,
    /// Complete header blocks passed on (requests, trailers): the connection has made a request.
    header_blocks: u64,
}

impl<S> AuthorityFix<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            preface_left: PREFACE_LEN,
            passthrough_left: 0,
            decoder: {
                let mut d = fluke_hpack::Decoder::new();
                d.set_max_allowed_table_size(MAX_TABLE);
                d
            },
            pending: None,
            rewritten: 0,
            header_blocks: 0,
        }
    }

    /// Complete header blocks seen so far.
    pub(crate) fn header_blocks(&self) -> u64 {
        self.header_blocks
    }

    /// Turn as much of `raw` as possible into `out`, stopping once `out` holds
    /// [`OUT_HIGH_WATER`] bytes: HPACK lets a 25-byte frame expand to 64 KiB, so a single read
    /// could otherwise expand 1,300-fold before h2 consumes any of it.
    fn process(&mut self) -> io::Result<()> {
        let mut pos = 0;
        loop {
            if self.out.len() >= OUT_HIGH_WATER {
                break;
            }
            let avail = &self.raw[pos..];
            if self.preface_left > 0 {
                let n = self.preface_left.min(avail.len());
                self.out.extend_from_slice(&avail[..n]);
                self.preface_left -= n;
                pos += n;
                if self.preface_left > 0 {
                    break;
                }
                continue;
            }
            if self.passthrough_left > 0 {
                let n = self.passthrough_left.min(avail.len());
                self.out.extend_from_slice(&avail[..n]);
                self.passthrough_left -= n;
                pos += n;
                if self.passthrough_left > 0 || n == 0 {
                    break;
                }
                continue;
            }
            if avail.len() < FRAME_HEADER_LEN {
                break;
            }
            let len = u32::from_be_bytes([0, avail[0], avail[1], avail[2]]) as usize;
            let (ty, flags) = (avail[3], avail[4]);
            if ty != TYPE_HEADERS && ty != TYPE_CONTINUATION {
                if self.pending.is_some() {
                    return Err(bad("frame interleaved inside a header block"));
                }
                self.out.extend_from_slice(&avail[..FRAME_HEADER_LEN]);
                self.passthrough_left = len;
                pos += FRAME_HEADER_LEN;
                continue;
            }
            if len > MAX_FRAME {
                // Larger than h2's SETTINGS_MAX_FRAME_SIZE: h2 would refuse it too.
                return Err(bad("header frame larger than the maximum frame size"));
            }
            if avail.len() < FRAME_HEADER_LEN + len {
                break;
            }
            let mut stream_id = [0u8; 4];
            stream_id.copy_from_slice(&avail[5..9]);
            let payload = &avail[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
            pos += FRAME_HEADER_LEN + len;
            if ty == TYPE_HEADERS {
                if self.pending.is_some() {
                    return Err(bad("HEADERS inside a header block"));
                }
                let mut body = payload;
                let mut pad = 0usize;
                if flags & FLAG_PADDED != 0 {
                    let (&p, rest) = body.split_first().ok_or_else(|| bad("empty padded frame"))?;
                    pad = p as usize;
                    body = rest;
                }
                let mut priority = None;
                if flags & FLAG_PRIORITY != 0 {
                    if body.len() < 5 {
                        return Err(bad("short priority block"));
                    }
                    let mut p = [0u8; 5];
                    p.copy_from_slice(&body[..5]);
                    priority = Some(p);
                    body = &body[5..];
                }
                if pad > body.len() {
                    return Err(bad("padding exceeds frame"));
                }
                let fragment = body[..body.len() - pad].to_vec();
                self.pending = Some(PendingBlock {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    priority,
                    block: fragment,
                });
            } else {
                let p = self.pending.as_mut().ok_or_else(|| bad("CONTINUATION without HEADERS"))?;
                if p.stream_id != stream_id {
                    return Err(bad("CONTINUATION on another stream"));
                }
                if p.block.len() + payload.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                p.block.extend_from_slice(payload);
            }
            if flags & FLAG_END_HEADERS != 0
                && let Some(p) = self.pending.take()
            {
                self.emit(p)?;
                self.header_blocks += 1;
            }
        }
        self.raw.drain(..pos);
        if self.raw.is_empty() {
            self.raw = Vec::new();
        }
        Ok(())
    }

    fn emit(&mut self, p: PendingBlock) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut decoded = 0usize;
        // fluke-hpack unwraps some malformed integers (a truncated table size update panics):
        // every integer and string length is checked here first, so the decoder never sees one.
        check_block(&p.block).map_err(|e| bad(&format!("HPACK: {e}")))?;
        let decoder = &mut self.decoder;
        // Last resort should the decoder still panic: the connection closes like any other
        // framing error, and the panic hook stays quiet (a peer must not be able to fill the log).
        let result = quiet_catch_unwind(|| {
            decoder.decode_with_cb(&p.block, |name, value| {
                decoded += name.len() + value.len();
                if decoded <= MAX_DECODED {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
        });
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(bad(&format!("HPACK: {e:?}"))),
            Err(_) => return Err(bad("HPACK: undecodable header block")),
        }
        if decoded > MAX_DECODED {
            return Err(bad("header block decodes to more than 64 KiB"));
        }
        let mut block = Vec::with_capacity(p.block.len() * 2);
        for (name, mut value) in headers {
            if name == b":authority" && !valid_authority(&value) {
                value = b"localhost".to_vec();
                self.rewritten += 1;
            }
            // Literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman.
            block.push(0x00);
            encode_string(&mut block, &name);
            encode_string(&mut block, &value);
        }
        let prio_len = if p.priority.is_some() { 5 } else { 0 };
        let mut rest: &[u8] = &block;
        let mut first = true;
        loop {
            let room = if first { MAX_FRAME - prio_len } else { MAX_FRAME };
            let n = room.min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            let last = tail.is_empty();
            let (ty, mut flags, extra) = if first {
                let mut f = if p.end_stream { FLAG_END_STREAM } else { 0 };
                if p.priority.is_some() {
                    f |= FLAG_PRIORITY;
                }
                (TYPE_HEADERS, f, prio_len)
            } else {
                (TYPE_CONTINUATION, 0, 0)
            };
            if last {
                flags |= FLAG_END_HEADERS;
            }
            let len = (chunk.len() + extra) as u32;
            self.out.extend_from_slice(&len.to_be_bytes()[1..]);
            self.out.push(ty);
            self.out.push(flags);
            self.out.extend_from_slice(&p.stream_id);
            if first && let Some(prio) = p.priority {
                self.out.extend_from_slice(&prio);
            }
            self.out.extend_from_slice(chunk);
            rest = tail;
            first = false;
            if last {
                break;
            }
        }
        Ok(())
    }
}

thread_local! {
    /// Set while a panic is expected and handled (see `quiet_catch_unwind`).
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `catch_unwind`, with the panic hook silenced for panics on this thread meanwhile (the hook
/// installed before ours still reports every other panic).
fn quiet_catch_unwind<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP/2 framing: {msg}"))
}

fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// HPACK string literal, no Huffman: 7-bit-prefix length then the bytes.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    // Idle connections (thousands of open streams) hold no buffer: a read
                    // allocates what it needs and gives it back once h2 has taken it.
                    this.out = Vec::new();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            // Expand what is already held (process stops at the high-water mark) before reading more.
            if !this.raw.is_empty() {
                this.process()?;
                if !this.out.is_empty() {
                    continue;
                }
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        // EOF: hand over any unparsed tail as-is and let h2 judge it.
                        if this.raw.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.out.append(&mut this.raw);
                        continue;
                    }
                    this.raw.extend_from_slice(got);
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
