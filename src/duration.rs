//! Human durations in config files and flags: "90s", "10m", "1h30m", "2d".

use std::time::Duration;

/// The largest duration `parse` accepts (~36 billion years): far below what overflows a u64 of
/// seconds. Each config key applies its own, much smaller, bound on top.
const MAX_SECS: u64 = u64::MAX / 16;

/// Parse a duration such as `10m` or `1h30m`. Units: ms, s, m, h, d. A bare number is refused,
/// because "10" is ambiguous between seconds and minutes.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{s:?} is not a duration"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let too_large = || format!("{s:?} is too large");
        let secs_of = |unit_secs: u64| n.checked_mul(unit_secs).map(Duration::from_secs).ok_or_else(too_large);
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => secs_of(60)?,
            "h" => secs_of(3600)?,
            "d" => secs_of(86400)?,
            "" => return Err(format!("{s:?} has a number without a unit")),
            other => return Err(format!("{s:?} has an unknown unit {other:?}")),
        };
        // Whole seconds must fit in a u64, and then some: no caller should meet a value that
        // overflows as soon as it is added to a timestamp.
        total = total.checked_add(part).filter(|t| t.as_secs() <= MAX_SECS).ok_or_else(too_large)?;
    }
    Ok(total)
}

/// Render a duration the way `parse` reads it (largest units first).
pub(crate) fn format(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172800));
        assert_eq!(format(Duration::from_secs(5400)), "1h30m");
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "-1s",
            "99999999999999999999s",
            "213503982334601d",
            "1d18446744073709551615s",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
