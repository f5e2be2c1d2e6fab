use std::io::Write;

use http::HeaderValue;

use super::*;

const LIMIT: u64 = 1 << 20;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_static(v));
    }
    h
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(b).unwrap();
    z.finish().unwrap()
}

#[test]
fn a_text_body_is_shown_and_keyed_by_its_digest() {
    let body = b"{\n  \"amount\": 42\n}";
    let h = headers(&[("content-type", "application/json")]);
    let s = show_body(body, None, &h, LIMIT, MAX_COMMAND);
    assert_eq!(s.note, " (body: 18 bytes, application/json)");
    assert_eq!(s.text.as_deref(), Some("{\n  \"amount\": 42\n}"));
    let key = s.key.unwrap();
    assert!(key.contains(&sha256_hex(body)), "{key}");
    // Another body, or the same bytes as another type, is another key.
    let other = show_body(b"{\n  \"amount\": 43\n}", None, &h, LIMIT, MAX_COMMAND);
    assert_ne!(other.key.unwrap(), key);
    let plain = headers(&[("content-type", "text/plain")]);
    assert_ne!(
        show_body(body, None, &plain, LIMIT, MAX_COMMAND)
            .key
            .unwrap(),
        key
    );
}

#[test]
fn a_binary_body_is_shown_as_length_and_digest() {
    let body = b"\x00\xff\xfe binary";
    let s = show_body(body, None, &HeaderMap::new(), LIMIT, MAX_COMMAND);
    assert_eq!(
        s.note,
        format!(" (body: 10 bytes, binary, sha256 {})", sha256_hex(body))
    );
    assert!(s.text.is_none());
    assert!(s.key.is_some(), "the same bytes may be covered by a grant");
}

#[test]
fn a_gzip_body_is_shown_decoded_and_others_not_at_all() {
    let z = gzip(b"{\"amount\": 42}");
    let h = headers(&[
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ]);
    let s = show_body(&z, None, &h, LIMIT, MAX_COMMAND);
    assert_eq!(
        s.note,
        format!(
            " (body: {} bytes, application/json, gzip-encoded, 14 bytes decoded)",
            z.len()
        )
    );
    assert_eq!(s.text.as_deref(), Some("{\"amount\": 42}"));
    assert!(s.key.is_some());

    // br is not decoded here: not shown, approved once at most.
    let br = headers(&[("content-encoding", "br")]);
    let s = show_body(b"\x1b\x03", None, &br, LIMIT, MAX_COMMAND);
    assert!(
        s.note
            .contains("br-encoded, not decoded here; not shown, sha256 "),
        "{}",
        s.note
    );
    assert!(s.text.is_none() && s.key.is_none());

    // Corrupt gzip, and gzip that inflates beyond the limit.
    let s = show_body(b"not gzip at all", None, &h, LIMIT, MAX_COMMAND);
    assert!(s.note.contains("does not decode"), "{}", s.note);
    assert!(s.text.is_none() && s.key.is_none());
    let bomb = gzip(&vec![b'a'; 4096]);
    let s = show_body(&bomb, None, &h, 1000, MAX_COMMAND);
    assert!(
        s.note.contains("decodes to more than 1000 bytes"),
        "{}",
        s.note
    );
    assert!(s.key.is_none());
}

#[test]
fn a_body_cut_in_the_command_names_its_digest_and_trailers_count() {
    let body = vec![b'a'; 100];
    let s = show_body(&body, None, &HeaderMap::new(), LIMIT, 50);
    assert!(
        s.note
            .ends_with(&format!(", sha256 {})", sha256_hex(&body))),
        "{}",
        s.note
    );
    let mut t = HeaderMap::new();
    t.insert("x-sum", HeaderValue::from_static("1"));
    let a = show_body(b"x", Some(&t), &HeaderMap::new(), LIMIT, MAX_COMMAND);
    assert!(a.note.contains("trailers: x-sum"), "{}", a.note);
    t.insert("x-sum", HeaderValue::from_static("2"));
    let b = show_body(b"x", Some(&t), &HeaderMap::new(), LIMIT, MAX_COMMAND);
    assert_ne!(a.key, b.key, "other trailers, another request");
}
