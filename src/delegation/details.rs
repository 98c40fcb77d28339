//! RFC 9396 `authorization_details` in a token exchange: the form parameter (a JSON array of
//! objects, each with a string `type`) checked against the declared types
//! ([`crate::registry::delegation::DetailTypes`]) and the types the agent's entry lists. Every
//! declared field is required, no other field is allowed, each value must have its declared JSON
//! type, and a type appears at most once. Any failure is `invalid_authorization_details` (§5).
//!
//! When the subject token itself carries `authorization_details` (an earlier hop's token), each
//! requested object must equal the subject's object of the same type: details are never widened
//! along a chain (RFC 9396 §6.1 leaves comparison to each type; tessera compares exactly).

use crate::registry::delegation::DetailTypes;
use serde_json::{Map, Value};

/// Longest `authorization_details` parameter accepted (bytes, decoded).
pub(crate) const MAX_LEN: usize = 16 * 1024;

/// Validated details.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Details {
    /// The array as requested: the token's `authorization_details` claim and the response's.
    pub requested: Value,
    /// By type, each an object of its fields (without `type`): what the decision reads
    /// (Cedar's `context.details.<type>.<field>`).
    pub by_type: Map<String, Value>,
}

impl Details {
    /// A canonical text of the details (types and fields sorted, no whitespace): what an
    /// approval binds to.
    pub(crate) fn canonical(&self) -> String {
        // Sorted explicitly: serde_json's Map keeps insertion order in this build (cedar-policy
        // turns on `preserve_order`), so its text alone would depend on the request's key order.
        fn sorted(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
                }
                Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
                other => other.clone(),
            }
        }
        serde_json::to_string(&sorted(&Value::Object(self.by_type.clone()))).unwrap_or_default()
    }
}

/// Check the parameter's text for an agent whose entry lists the types `allowed`.
pub(crate) fn check(raw: &str, types: &DetailTypes, allowed: &[String]) -> Result<Details, String> {
    if raw.len() > MAX_LEN {
        return Err(format!("authorization_details is {} bytes; at most {MAX_LEN} are accepted", raw.len()));
    }
    let requested: Value = serde_json::from_str(raw).map_err(|e| format!("authorization_details is not JSON: {e}"))?;
    let Value::Array(items) = &requested else {
        return Err("authorization_details must be a JSON array of objects".into());
    };
    if items.is_empty() {
        return Err("authorization_details is an empty array: omit the parameter instead".into());
    }
    let mut by_type = Map::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(obj) = item else { return Err(format!("authorization_details[{i}] is not an object")) };
        let Some(Value::String(ty)) = obj.get("type") else {
            return Err(format!("authorization_details[{i}] has no string \"type\""));
        };
        let ty_shown = cut(ty);
        let Some(fields) = types.get(ty) else {
            return Err(format!("type {ty_shown:?} is not a declared authorization_details type"));
        };
        if !allowed.iter().any(|a| a == ty) {
            return Err(format!("this agent may not request type {ty_shown:?} (its delegation.authorization_details)"));
        }
        if by_type.contains_key(ty) {
            return Err(format!("type {ty_shown:?} appears more than once"));
        }
        let mut out = Map::new();
        for (name, value) in obj.iter().filter(|(k, _)| k.as_str() != "type") {
            let Some(want) = fields.get(name) else {
                return Err(format!("type {ty_shown:?} has no field {:?}", cut(name)));
            };
            if !want.admits(value) {
                return Err(format!("{ty_shown}.{name} must be a {}", want.name()));
            }
            out.insert(name.clone(), value.clone());
        }
        if let Some(missing) = fields.keys().find(|f| !out.contains_key(*f)) {
            return Err(format!("{ty_shown}.{missing} is missing (every declared field is required)"));
        }
        by_type.insert(ty.clone(), Value::Object(out));
    }
    Ok(Details { requested, by_type })
}

/// The details a later hop holds: those it asked for, which must be exactly the subject token's
/// own `authorization_details` (when it has them); none asked for: the subject token's, carried
/// on (checked against the declaration and the entry like a request). Dropping them along the
/// chain would also drop every policy condition on them (an amount cap).
pub(crate) fn for_hop(
    requested: Option<Details>,
    subject: Option<&Value>,
    types: &DetailTypes,
    allowed: &[String],
) -> Result<Option<Details>, String> {
    let Some(claim) = subject else { return Ok(requested) };
    match requested {
        Some(d) => {
            within(&d, Some(claim))?;
            let held = claim.as_array().map_or(0, Vec::len);
            if d.by_type.len() != held {
                return Err("a later hop must carry all of the subject token's authorization_details".into());
            }
            Ok(Some(d))
        }
        None => check(&claim.to_string(), types, allowed)
            .map(Some)
            .map_err(|e| format!("the subject token's authorization_details cannot be carried on: {e}")),
    }
}

/// Err (why) when `details` asks for more than the subject token's own `authorization_details`
/// claim (when it has one): each requested type's fields must equal the claim's.
pub(crate) fn within(details: &Details, subject: Option<&Value>) -> Result<(), String> {
    let Some(claim) = subject else { return Ok(()) };
    let Value::Array(held) = claim else {
        return Err("the subject token's authorization_details claim is not an array".into());
    };
    for (ty, fields) in &details.by_type {
        let same = held.iter().filter_map(Value::as_object).any(|h| {
            h.get("type").and_then(Value::as_str) == Some(ty.as_str())
                && h.len() == fields.as_object().map_or(0, Map::len) + 1
                && fields.as_object().is_some_and(|f| f.iter().all(|(k, v)| h.get(k) == Some(v)))
        });
        if !same {
            return Err(format!(
                "the subject token does not carry these {ty} details (a later hop may not change them)"
            ));
        }
    }
    Ok(())
}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::delegation::FieldType;
    use serde_json::json;

    fn types() -> DetailTypes {
        let flight = [("itinerary", FieldType::String), ("amount", FieldType::Long), ("currency", FieldType::String)];
        let hotel = [("nights", FieldType::Long), ("refundable", FieldType::Bool), ("rooms", FieldType::SetOfString)];
        let f = |x: &[(&str, FieldType)]| x.iter().map(|(k, t)| ((*k).to_owned(), *t)).collect();
        DetailTypes::new([("flight_booking".to_owned(), f(&flight)), ("hotel".to_owned(), f(&hotel))].into())
    }

    fn allowed() -> Vec<String> {
        vec!["flight_booking".into(), "hotel".into()]
    }

    const FLIGHT: &str = r#"{"type":"flight_booking","itinerary":"LHR-JFK","amount":500,"currency":"EUR"}"#;

    #[test]
    fn valid_details_by_type_and_canonical() {
        let raw = format!(r#"[{FLIGHT},{{"rooms":["a","b"],"type":"hotel","nights":2,"refundable":false}}]"#);
        let d = check(&raw, &types(), &allowed()).unwrap();
        assert_eq!(d.by_type["flight_booking"]["amount"], 500);
        assert_eq!(d.by_type["hotel"], json!({ "nights": 2, "refundable": false, "rooms": ["a", "b"] }));
        assert_eq!(d.requested.as_array().unwrap().len(), 2);
        // The same details in another order: the same canonical text; another amount: another.
        let swapped = format!(r#"[{{"type":"hotel","refundable":false,"nights":2,"rooms":["a","b"]}},{FLIGHT}]"#);
        assert_eq!(check(&swapped, &types(), &allowed()).unwrap().canonical(), d.canonical());
        let more = raw.replace("500", "501");
        assert_ne!(check(&more, &types(), &allowed()).unwrap().canonical(), d.canonical());
    }

    #[test]
    fn every_bad_input_is_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not JSON"),
            (r#"{"type":"hotel"}"#, "array"),
            ("[]", "empty"),
            ("[1]", "not an object"),
            (r#"[{"amount":1}]"#, "no string \"type\""),
            (r#"[{"type":"car"}]"#, "not a declared"),
            (r#"[{"type":"flight_booking","itinerary":"x","amount":1,"currency":"E","seat":"1A"}]"#, "no field"),
            (r#"[{"type":"flight_booking","itinerary":"x","amount":"1","currency":"E"}]"#, "must be a Long"),
            (r#"[{"type":"flight_booking","itinerary":"x","amount":1.5,"currency":"E"}]"#, "must be a Long"),
            (r#"[{"type":"flight_booking","itinerary":"x","amount":1e30,"currency":"E"}]"#, "must be a Long"),
            (r#"[{"type":"flight_booking","itinerary":"x","currency":"E"}]"#, "missing"),
            (r#"[{"type":"hotel","nights":1,"refundable":"no","rooms":[]}]"#, "must be a Bool"),
            (r#"[{"type":"hotel","nights":1,"refundable":true,"rooms":["a","a"]}]"#, "must be a Set<String>"),
            (r#"[{"type":"hotel","nights":1,"refundable":true,"rooms":[1]}]"#, "must be a Set<String>"),
        ];
        for (raw, want) in cases {
            let e = check(raw, &types(), &allowed()).unwrap_err();
            assert!(e.contains(want), "{raw}: {e}");
        }
        let twice = format!("[{FLIGHT},{FLIGHT}]");
        assert!(check(&twice, &types(), &allowed()).unwrap_err().contains("more than once"));
        let e = check(&format!("[{FLIGHT}]"), &types(), &["hotel".into()]).unwrap_err();
        assert!(e.contains("may not request"), "{e}");
        let long = format!(r#"[{{"type":"hotel","x":"{}"}}]"#, "a".repeat(MAX_LEN));
        assert!(check(&long, &types(), &allowed()).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_later_hop_keeps_the_details_it_was_given() {
        let d = check(&format!("[{FLIGHT}]"), &types(), &allowed()).unwrap();
        assert!(within(&d, None).is_ok());
        let held: Value = serde_json::from_str(&format!("[{FLIGHT}]")).unwrap();
        assert!(within(&d, Some(&held)).is_ok());
        let changed: Value = serde_json::from_str(&format!("[{}]", FLIGHT.replace("500", "5000"))).unwrap();
        assert!(within(&d, Some(&changed)).is_err());
        let extra: Value = serde_json::from_str(&format!("[{}]", FLIGHT.replace("}", r#","seat":"1A"}"#))).unwrap();
        assert!(within(&d, Some(&extra)).is_err());
        assert!(within(&d, Some(&json!({}))).is_err());
    }
}
