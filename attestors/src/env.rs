//! `env` attestor: `env:NAME:VALUE` for allowlisted names only.
//!
//! The environment holds secrets. The whole block is read into one buffer that never leaves
//! this function; only allowlisted pairs become selectors, and error messages never quote
//! names or values that were not asked for.

use crate::{Ctx, Found, Kind, Selector};

const KIND: Kind = Kind::Env;

pub(crate) fn attest(ctx: &Ctx<'_>) -> Found {
    let mut found = Found::new(KIND.as_str());
    if ctx.config.env_allowlist.is_empty() {
        return found;
    }
    let raw = match ctx.process.environ_raw() {
        Ok(raw) => raw,
        Err(e) => {
            found.fail(format!("environ: {e}"));
            return found;
        }
    };
    for (name, value) in pairs(&raw) {
        if !ctx.config.env_allowlist.iter().any(|a| a.as_bytes() == name) {
            continue;
        }
        match (std::str::from_utf8(name), std::str::from_utf8(value)) {
            (Ok(n), Ok(v)) => found.push(Selector::keyed(KIND, n, v)),
            (Ok(n), Err(_)) => found.fail(format!("{n}: value is not UTF-8")),
            _ => {}
        }
    }
    found
}

/// `NAME=VALUE` pairs of an environ block. When a name repeats, every occurrence is returned
/// (getenv would take the first; both are weak evidence anyway).
fn pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|b| *b == 0).filter_map(|entry| {
        let eq = entry.iter().position(|b| *b == b'=')?;
        Some((&entry[..eq], &entry[eq + 1..]))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_pairs() {
        let raw = b"A=1\0B=x=y\0NOEQ\0\0C=\0";
        let got: Vec<_> = super::pairs(raw).collect();
        assert_eq!(got, vec![(&b"A"[..], &b"1"[..]), (&b"B"[..], &b"x=y"[..]), (&b"C"[..], &b""[..])]);
    }
}
