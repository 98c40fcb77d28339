//! MCP messages as the guard reads them: one JSON-RPC 2.0 message per POST (a batch array is
//! refused: MCP dropped batching in 2025-06-18), parsed strictly so that the guard and the
//! upstream cannot read the same bytes two ways: a duplicated member name at any depth, a
//! trailing byte, a lone surrogate or a number that is not JSON is refused (400), never resolved
//! "last one wins". The `Mcp-Method` and `Mcp-Name` headers (2026-07-28 transport), when sent,
//! must agree with the body (their `=?base64?…?=` form decoded first), else 400 with JSON-RPC
//! error -32020 (HeaderMismatch).

use base64::Engine;
use http::HeaderMap;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// JSON-RPC error codes the guard answers with.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const INVALID_PARAMS: i64 = -32602;
/// MCP 2026-07-28: a header disagrees with the body.
pub(crate) const HEADER_MISMATCH: i64 = -32020;
/// The guard's refusal of a request its policy denies (an implementation-defined server error).
pub(crate) const FORBIDDEN: i64 = -32003;

/// A JSON value whose objects have no duplicated member names.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&k) {
                let shown: String = k.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!("the member {shown:?} appears twice in one object")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parse JSON strictly (no duplicated member names).
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0).map_err(|e| e.to_string())
}

/// What a POST body is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    /// A request (has an `id`): `tools/call` names its tool.
    Request { id: Value, method: String, tool: Option<String>, name: Option<String> },
    /// A notification (no `id`).
    Notification { method: String, name: Option<String> },
    /// A response to the server's request (the client answering a sampling or elicitation).
    Response,
}

impl Message {
    pub(crate) fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response => None,
        }
    }

    pub(crate) fn id(&self) -> Option<&Value> {
        match self {
            Message::Request { id, .. } => Some(id),
            _ => None,
        }
    }

    fn name(&self) -> Option<&str> {
        match self {
            Message::Request { name, .. } | Message::Notification { name, .. } => name.as_deref(),
            Message::Response => None,
        }
    }
}

/// A body the guard refuses: the JSON-RPC error code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub code: i64,
    pub reason: String,
}

fn refused(code: i64, reason: impl Into<String>) -> Refused {
    Refused { code, reason: reason.into() }
}

/// The methods whose spelling the guard decides on: another case of one of these is refused
/// (an upstream that matched methods without case would otherwise run a tool undecided).
const DECIDED: [&str; 2] = ["tools/call", "tools/list"];

/// Read one JSON-RPC message.
pub(crate) fn message(body: &[u8]) -> Result<Message, Refused> {
    let v =
        parse_strict(body).map_err(|e| refused(PARSE_ERROR, format!("the body is not JSON the guard accepts: {e}")))?;
    let obj = match v {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(refused(INVALID_REQUEST, "JSON-RPC batches are not accepted: send one message per request"));
        }
        _ => return Err(refused(INVALID_REQUEST, "the body is not a JSON-RPC message (an object)")),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(refused(INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\""));
    }
    let id = match obj.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(_) => return Err(refused(INVALID_REQUEST, "\"id\" must be a string or a number")),
    };
    let Some(method) = obj.get("method") else {
        return match (id, obj.contains_key("result") || obj.contains_key("error")) {
            (Some(_), true) => Ok(Message::Response),
            _ => Err(refused(
                INVALID_REQUEST,
                "neither a request (\"method\") nor a response (\"id\" with \"result\" or \"error\")",
            )),
        };
    };
    let method = method.as_str().ok_or_else(|| refused(INVALID_REQUEST, "\"method\" is not a string"))?.to_owned();
    if method.is_empty() || method.len() > 256 {
        return Err(refused(INVALID_REQUEST, "\"method\" is empty or longer than 256 bytes"));
    }
    if DECIDED.iter().any(|d| d.eq_ignore_ascii_case(&method) && *d != method) {
        return Err(refused(INVALID_REQUEST, format!("\"method\" {method:?} is not spelled as MCP spells it")));
    }
    let params = match obj.get("params") {
        None => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return Err(refused(INVALID_REQUEST, "\"params\" is not an object")),
    };
    let string_param = |k: &str| -> Result<Option<String>, Refused> {
        match params.and_then(|p| p.get(k)) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(refused(INVALID_PARAMS, format!("\"params.{k}\" is not a string"))),
        }
    };
    // Mcp-Name mirrors `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
    let name = match method.as_str() {
        "resources/read" => string_param("uri")?,
        _ => string_param("name")?,
    };
    let Some(id) = id else { return Ok(Message::Notification { method, name }) };
    let tool = if method == "tools/call" {
        let t = name.clone().ok_or_else(|| refused(INVALID_PARAMS, "tools/call without a string \"params.name\""))?;
        if t.is_empty() || t.len() > 256 {
            return Err(refused(INVALID_PARAMS, "the tool name is empty or longer than 256 bytes"));
        }
        Some(t)
    } else {
        None
    };
    Ok(Message::Request { id, method, tool, name })
}

/// An MCP header's value, its `=?base64?…?=` form decoded (Err: not decodable).
fn header_value(v: &http::HeaderValue) -> Result<String, String> {
    let s = v.to_str().map_err(|_| "not ASCII".to_owned())?;
    match s.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "bad base64".to_owned())?;
            String::from_utf8(bytes).map_err(|_| "not UTF-8 once decoded".to_owned())
        }
        None => Ok(s.to_owned()),
    }
}

/// `Mcp-Method` and `Mcp-Name`, when present (once each), must equal the body's.
pub(crate) fn headers_agree(headers: &HeaderMap, msg: &Message) -> Result<(), Refused> {
    for (header, body) in [("mcp-method", msg.method()), ("mcp-name", msg.name())] {
        let mut all = headers.get_all(header).iter();
        let Some(v) = all.next() else { continue };
        if all.next().is_some() {
            return Err(refused(HEADER_MISMATCH, format!("{header} is sent more than once")));
        }
        let v = header_value(v).map_err(|e| refused(HEADER_MISMATCH, format!("{header} cannot be read: {e}")))?;
        if Some(v.as_str()) != body {
            let shown: String = v.chars().take(64).collect();
            return Err(refused(
                HEADER_MISMATCH,
                format!("the {header} header {shown:?} does not match the body ({:?})", body.unwrap_or("none")),
            ));
        }
    }
    Ok(())
}

/// A JSON-RPC error response.
pub(crate) fn error_body(id: Option<&Value>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    serde_json::json!({ "jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": error })
}
