//! `tools/list` answers cut to the tools the caller may call: a JSON answer is read whole
//! (bounded) and rewritten; a server-sent event stream is rewritten event by event as it passes
//! (each event carrying a result with a `tools` array loses the tools the policy denies; other
//! events pass unchanged and at once). A tool without a string name is dropped.

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use serde_json::Value;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Whether the caller may call a tool.
pub(crate) type MayCall = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Largest JSON answer or single event rewritten (bytes); more fails the response.
pub(crate) const MAX_FILTERED: usize = 16 << 20;

/// Drop from a JSON-RPC response's `result.tools` the tools `may_call` refuses; the names taken
/// out are returned. Anything else is left as it is.
pub(crate) fn filter_tools(v: &mut Value, may_call: &dyn Fn(&str) -> bool) -> Vec<String> {
    let Some(tools) = v.get_mut("result").and_then(|r| r.get_mut("tools")).and_then(Value::as_array_mut) else {
        return Vec::new();
    };
    let mut hidden = Vec::new();
    tools.retain(|t| match t.get("name").and_then(Value::as_str) {
        Some(name) if may_call(name) => true,
        Some(name) => {
            hidden.push(name.chars().take(256).collect());
            false
        }
        None => {
            hidden.push("(a tool without a name)".into());
            false
        }
    });
    hidden
}

/// Rewrite a whole JSON answer; `None` when it is not JSON (passed on unchanged then).
pub(crate) fn rewrite_json(body: &[u8], may_call: &dyn Fn(&str) -> bool) -> Option<(Vec<u8>, Vec<String>)> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let hidden = filter_tools(&mut v, may_call);
    Some((serde_json::to_vec(&v).ok()?, hidden))
}

/// The end of the first event in `buf` (after its blank line), if a whole one is there.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        let b = buf[i];
        if b == b'\n' || b == b'\r' {
            // The end of a line: a second line end right after it ends the event.
            let next = if b == b'\r' && buf.get(i + 1) == Some(&b'\n') { i + 2 } else { i + 1 };
            match buf.get(next) {
                Some(b'\n') => return Some(next + 1),
                Some(b'\r') => {
                    return match buf.get(next + 1) {
                        Some(b'\n') => Some(next + 2),
                        Some(_) => Some(next + 1),
                        // The blank line's LF may yet come.
                        None => None,
                    };
                }
                // A lone CR at the end of what arrived may yet be followed by its LF.
                None if b == b'\r' && next == i + 1 => return None,
                _ => {}
            }
            i = next;
        } else {
            i += 1;
        }
    }
    None
}

/// One event rewritten: its data lines, joined, filtered and written back as one `data:` line;
/// its other lines (event, id, retry, comments) kept. Unchanged when its data is not a tools
/// answer.
pub(crate) fn rewrite_event(event: &[u8], may_call: &dyn Fn(&str) -> bool) -> (Bytes, Vec<String>) {
    let unchanged = || (Bytes::copy_from_slice(event), Vec::new());
    let Ok(text) = std::str::from_utf8(event) else { return unchanged() };
    let mut data: Vec<&str> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    for line in text.split(['\n', '\r']).filter(|l| !l.is_empty()) {
        match line.strip_prefix("data") {
            Some(rest) if rest.is_empty() || rest.starts_with(':') => {
                let v = rest.strip_prefix(':').unwrap_or(rest);
                data.push(v.strip_prefix(' ').unwrap_or(v));
            }
            _ => others.push(line),
        }
    }
    if data.is_empty() {
        return unchanged();
    }
    let Ok(mut v) = serde_json::from_str::<Value>(&data.join("\n")) else { return unchanged() };
    let hidden = filter_tools(&mut v, may_call);
    if hidden.is_empty() {
        return unchanged();
    }
    let Ok(json) = serde_json::to_string(&v) else { return unchanged() };
    let mut out = String::with_capacity(json.len() + 64);
    for o in others {
        out.push_str(o);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&json);
    out.push_str("\n\n");
    (Bytes::from(out), hidden)
}

/// A server-sent event stream, rewritten event by event.
pub(crate) struct SseFilter<B> {
    inner: B,
    buf: BytesMut,
    may_call: MayCall,
    /// The tools taken out so far (for the audit line).
    pub hidden: Arc<Mutex<Vec<String>>>,
    done: bool,
}

impl<B> SseFilter<B> {
    pub(crate) fn new(inner: B, may_call: MayCall, hidden: Arc<Mutex<Vec<String>>>) -> Self {
        Self { inner, buf: BytesMut::new(), may_call, hidden, done: false }
    }

    fn emit(&mut self, end: usize) -> Bytes {
        let event = self.buf.split_to(end);
        let (bytes, hidden) = rewrite_event(&event, &*self.may_call);
        if !hidden.is_empty() {
            self.hidden.lock().unwrap_or_else(|p| p.into_inner()).extend(hidden);
        }
        bytes
    }
}

impl<B> Body for SseFilter<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<super::BoxError>,
{
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(end) = event_end(&this.buf) {
                let bytes = this.emit(end);
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.done {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                let end = this.buf.len();
                let bytes = this.emit(end);
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if this.buf.len() + data.len() > MAX_FILTERED {
                            return Poll::Ready(Some(Err(
                                "a server-sent event is larger than the guard rewrites".into()
                            )));
                        }
                        this.buf.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::json;

    fn only_search(name: &str) -> bool {
        name == "search_flights"
    }

    fn listing() -> Value {
        json!({ "jsonrpc": "2.0", "id": 1, "result": { "tools": [
            { "name": "search_flights" }, { "name": "purchase_flight" }, { "title": "no name" } ] } })
    }

    #[test]
    fn json_answers_lose_the_tools_the_caller_may_not_call() {
        let (out, hidden) = rewrite_json(listing().to_string().as_bytes(), &only_search).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([{ "name": "search_flights" }]));
        assert_eq!(hidden, ["purchase_flight", "(a tool without a name)"]);
        assert!(rewrite_json(b"not json", &only_search).is_none());
        // Not a tools answer: unchanged.
        let (out, hidden) = rewrite_json(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, &only_search).unwrap();
        assert_eq!((out.as_slice(), hidden.len()), (&br#"{"jsonrpc":"2.0","id":1,"result":{}}"#[..], 0));
    }

    #[test]
    fn event_boundaries_in_every_line_ending() {
        assert_eq!(event_end(b"data: x\n\nrest"), Some(9));
        assert_eq!(event_end(b"data: x\r\n\r\nrest"), Some(11));
        assert_eq!(event_end(b"data: x\r\rrest"), Some(9));
        assert_eq!(event_end(b"data: x\nid: 1\n"), None);
        assert_eq!(event_end(b"data: x\r"), None);
        assert_eq!(event_end(b"data: x\r\n\r"), None);
    }

    #[tokio::test]
    async fn sse_streams_are_rewritten_event_by_event_across_chunk_boundaries() {
        let text = format!(
            "event: message\r\nid: 7\r\ndata: {}\r\n\r\n: comment\n\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}}\n\n",
            listing()
        );
        // Cut into 5-byte chunks.
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
            text.as_bytes().chunks(5).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        let inner = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let hidden = Arc::new(Mutex::new(Vec::new()));
        let body = SseFilter::new(inner, Arc::new(only_search), hidden.clone());
        let out = body.collect().await.unwrap().to_bytes();
        let out = String::from_utf8(out.to_vec()).unwrap();
        let first = out.split("\n\n").next().unwrap();
        assert!(first.starts_with("event: message\nid: 7\ndata: {"), "{out}");
        assert!(!first.contains("purchase_flight") && first.contains("search_flights"), "{out}");
        assert!(out.contains(": comment\n\n") && out.contains("notifications/x"), "{out}");
        assert_eq!(hidden.lock().unwrap().len(), 2);
    }
}
