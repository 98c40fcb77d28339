//! HPACK pre-decoder validation: a header block's integers and string lengths, checked before the decoder sees them.
//!
//! fluke-hpack unwraps some malformed integers (a truncated table size update panics), so
//! [`super::h2_authority`] runs [`check_block`] on every block first.

/// The dynamic table size h2 advertises by default; a client may not ask for more.
pub(super) const MAX_TABLE: usize = 4096;

/// Walk a header block's representations (RFC 7541 §6) and check every integer is complete and
/// small, and every string lies within the block. Decoding is left to the decoder.
pub(super) fn check_block(block: &[u8]) -> Result<(), &'static str> {
    let mut i = 0;
    while let Some(&first) = block.get(i) {
        let (prefix, literal, size_update) = match first {
            b if b & 0x80 != 0 => (7, false, false), // indexed field
            b if b & 0x40 != 0 => (6, true, false),  // literal with incremental indexing
            b if b & 0x20 != 0 => (5, false, true),  // dynamic table size update
            _ => (4, true, false),                   // literal without / never indexed
        };
        let (value, n) = hpack_int(&block[i..], prefix)?;
        i += n;
        if size_update && value > MAX_TABLE {
            return Err("dynamic table size update above the advertised limit");
        }
        if literal {
            // Index 0: the name is a literal string too.
            let strings = if value == 0 { 2 } else { 1 };
            for _ in 0..strings {
                let rest = block.get(i..).unwrap_or_default();
                let (len, n) = hpack_int(rest, 7)?;
                if len > rest.len() - n {
                    return Err("string length runs past the end of the header block");
                }
                i += n + len;
            }
        }
    }
    Ok(())
}

/// An HPACK integer with an N-bit prefix (RFC 7541 §5.1) and how many bytes it took. At most 3
/// continuation bytes: no legitimate value in a 64 KiB block needs more.
pub(super) fn hpack_int(buf: &[u8], prefix: u8) -> Result<(usize, usize), &'static str> {
    let mask = ((1u16 << prefix) - 1) as u8;
    let first = buf.first().ok_or("truncated integer")? & mask;
    if first < mask {
        return Ok((first as usize, 1));
    }
    let mut value = mask as usize;
    for (k, &b) in buf[1..].iter().enumerate() {
        if k == 3 {
            return Err("integer too large");
        }
        value += ((b & 0x7f) as usize) << (7 * k);
        if b & 0x80 == 0 {
            return Ok((value, k + 2));
        }
    }
    Err("truncated integer")
}
