//! Cutting audit values to size: long strings and arrays marked with what was left out, deep nesting replaced.

use serde_json::{Map, Value};

/// Longest string kept whole in an audit line (bytes).
pub(super) const MAX_STRING: usize = 1024;
/// Most array elements (or object members) kept in an audit line.
pub(super) const MAX_ITEMS: usize = 64;
/// Deepest nesting kept.
const MAX_DEPTH: usize = 6;

/// Cut long strings and arrays (marked, with what was left out), and deep nesting.
pub(super) fn bound(v: &mut Value, depth: usize) {
    bound_to(v, depth, MAX_STRING, MAX_ITEMS)
}

pub(super) fn bound_to(v: &mut Value, depth: usize, max_string: usize, max_items: usize) {
    match v {
        Value::String(s) if s.len() > max_string => {
            let mut cut = max_string;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let more = s.len() - cut;
            s.truncate(cut);
            s.push_str(&format!("…(+{more} more bytes)"));
        }
        Value::Array(_) | Value::Object(_) if depth > MAX_DEPTH => *v = Value::String("…(nested too deep)".into()),
        Value::Array(a) => {
            if a.len() > max_items {
                // A marker from an earlier cut stands for the elements it counted.
                let earlier = a
                    .last()
                    .and_then(Value::as_str)
                    .and_then(|m| m.strip_prefix("…(+")?.strip_suffix(" more)")?.parse::<usize>().ok())
                    .map_or(0, |n| n - 1);
                let more = a.len() - max_items + earlier;
                a.truncate(max_items);
                a.push(Value::String(format!("…(+{more} more)")));
            }
            for x in a.iter_mut() {
                bound_to(x, depth + 1, max_string, max_items);
            }
        }
        Value::Object(m) => {
            if m.len() > max_items {
                let more = m.len() - max_items;
                let keep: Map<String, Value> = std::mem::take(m).into_iter().take(max_items).collect();
                *m = keep;
                m.insert("…".into(), Value::String(format!("(+{more} more)")));
            }
            for x in m.values_mut() {
                bound_to(x, depth + 1, max_string, max_items);
            }
        }
        _ => {}
    }
}
