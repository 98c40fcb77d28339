//! Tests of the `:authority` filter and its HPACK checks.

use super::*;
use crate::net::hpack_check::hpack_int;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn frame(ty: u8, flags: u8, sid: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&sid.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0x00];
    encode_string(&mut b, name.as_bytes());
    encode_string(&mut b, value.as_bytes());
    b
}

async fn filter(input: Vec<u8>) -> Vec<u8> {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    a.write_all(&input).await.unwrap();
    drop(a);
    let mut out = Vec::new();
    AuthorityFix::new(b).read_to_end(&mut out).await.unwrap();
    out
}

/// One 4 KB table entry referenced 16 times per 25-byte HEADERS frame: one 8 KiB read used
/// to expand to ~10 MB held in `out`. Now at most the high-water mark (plus one block) is.
#[tokio::test]
async fn a_small_read_cannot_expand_into_megabytes() {
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // Literal with incremental indexing, new name: "x-big" = 4000 bytes, into the table.
    let mut first = vec![0x40];
    encode_string(&mut first, b"x-big");
    encode_string(&mut first, &[b'a'; 4000]);
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &first));
    for i in 0..1000u32 {
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3 + 2 * i, &[0x80 | 62; 16]));
    }
    let (mut a, b) = tokio::io::duplex(1 << 20);
    a.write_all(&input).await.unwrap();
    drop(a);
    let mut fix = AuthorityFix::new(b);
    let mut buf = [0u8; 1024];
    let mut total = 0;
    let mut peak = 0;
    loop {
        let n = fix.read(&mut buf).await.unwrap();
        peak = peak.max(fix.out.capacity()).max(fix.out.len());
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total > 60_000_000, "every block still passes through ({total} bytes)");
    assert!(peak <= OUT_HIGH_WATER + MAX_DECODED + 16 * 1024, "peak buffered output {peak} bytes");
}

#[tokio::test]
async fn rewrites_socket_path_authority_split_across_continuation() {
    let mut block = literal(":method", "POST");
    block.extend(literal(":authority", "%2Ftmp%2Fapi.sock"));
    block.extend(literal(":path", "/SpiffeWorkloadAPI/FetchX509SVID"));
    let (a, b) = block.split_at(10);
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes through
    input.extend(frame(TYPE_HEADERS, FLAG_PADDED, 1, &[&[3u8][..], a, &[0, 0, 0]].concat()));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
    input.extend(frame(0x0, FLAG_END_STREAM, 1, b"data"));
    let out = filter(input).await;
    assert_eq!(&out[..24], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_eq!(&out[24..33], &frame(0x4, 0, 0, &[])[..]);
    let hlen = u32::from_be_bytes([0, out[33], out[34], out[35]]) as usize;
    assert_eq!((out[36], out[37]), (TYPE_HEADERS, FLAG_END_HEADERS));
    let headers = fluke_hpack::Decoder::new().decode(&out[42..42 + hlen]).unwrap();
    assert_eq!(headers[1], (b":authority".to_vec(), b"localhost".to_vec()));
    assert_eq!(headers[2].1, b"/SpiffeWorkloadAPI/FetchX509SVID");
    assert_eq!(&out[42 + hlen..], &frame(0x0, FLAG_END_STREAM, 1, b"data")[..]);
}

async fn filter_result(input: Vec<u8>) -> std::io::Result<Vec<u8>> {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    a.write_all(&input).await.unwrap();
    drop(a);
    let mut out = Vec::new();
    AuthorityFix::new(b).read_to_end(&mut out).await.map(|_| out)
}

#[tokio::test]
async fn hpack_bombs_and_malformed_blocks_are_refused_not_expanded() {
    // One 4 KB header added to the table, then referenced thousands of times (0xbe = index 62).
    let mut block = vec![0x40];
    encode_string(&mut block, b"x-big");
    encode_string(&mut block, &vec![b'a'; 4000]);
    block.extend(std::iter::repeat_n(0xbe, 12_000));
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block));
    let err = filter_result(input).await.unwrap_err();
    assert!(err.to_string().contains("64 KiB"), "{err}");

    // A frame over the maximum frame size.
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &vec![0u8; MAX_FRAME + 1]));
    assert!(filter_result(input).await.is_err());

    // Integers that panic inside fluke-hpack (truncated, or too long): refused before it.
    for block in [&[0x3f, 0xff][..], &[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], &[0x3f]] {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, block));
        let err = filter_result(input).await.unwrap_err();
        assert!(err.to_string().contains("integer"), "{block:x?}: {err}");
    }

    // A table size above what h2 advertises.
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x3f, 0xe1, 0xff, 0x03]));
    assert!(filter_result(input).await.is_err());
}

#[test]
fn block_checker_accepts_valid_and_refuses_malformed_encodings() {
    let mut ok = literal(":method", "POST");
    ok.extend([0x82, 0x20, 0x3f, 0xe1, 0x1f]); // indexed, size update 0, size update 4096
    ok.extend(literal("x", &"v".repeat(300))); // multi-byte string length
    ok.extend([0x41, 0x01, b'h']); // indexed name, literal value
    assert_eq!(check_block(&ok), Ok(()));
    assert_eq!(check_block(&[0x00, 0x05, b'a']), Err("string length runs past the end of the header block"));
    assert_eq!(check_block(&[0x41, 0x7f, 0xff]), Err("truncated integer"));
    assert_eq!(check_block(&[0xff, 0x80, 0x80, 0x80, 0x01]), Err("integer too large"));
    assert!(check_block(&[0x3f, 0xe2, 0x1f]).is_err(), "table size 4097");
    assert_eq!(hpack_int(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3)), "RFC 7541 C.1.2");
}

#[test]
fn a_caught_panic_is_not_printed_and_others_still_are() {
    assert!(quiet_catch_unwind(|| panic!("expected")).is_err());
    assert!(!QUIET.with(std::cell::Cell::get));
}

#[tokio::test]
async fn keeps_valid_authority() {
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &literal(":authority", "localhost:80")));
    let out = filter(input).await;
    let headers = fluke_hpack::Decoder::new().decode(&out[33..]).unwrap();
    assert_eq!(headers[0].1, b"localhost:80");
}
