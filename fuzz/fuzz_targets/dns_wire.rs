//! Datagrams an agent sends to the DNS proxy, through `dns::wire`: `parse_query`, then the
//! REFUSED/SERVFAIL reply built from the question.
//!
//! Properties besides "no panic": a parsed name is printable ASCII without upper case, and
//! splitting it at its unescaped dots gives as many labels as the question has (a dot inside
//! a label is never read as a boundary); the reply answers the same id with the given rcode,
//! copies the question byte for byte and is not itself read as a query.
#![no_main]

use interceptor::dns::wire::{answer_rcode, error_reply, parse_query, RCODE_SERVFAIL};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = answer_rcode(data, 0);
    let Some(q) = parse_query(data) else {
        return;
    };
    assert!(
        q.name
            .bytes()
            .all(|c| c.is_ascii_graphic() && !c.is_ascii_uppercase()),
        "{:?}",
        q.name
    );
    // Labels on the wire.
    let mut wire_labels = 0;
    let mut i = 12;
    while data[i] != 0 {
        wire_labels += 1;
        i += 1 + data[i] as usize;
    }
    let mut read_labels = 0;
    if q.name != "." {
        read_labels = 1;
        let mut escaped = false;
        for c in q.name.chars() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '.') => read_labels += 1,
                _ => {}
            }
        }
    }
    assert_eq!(read_labels, wire_labels, "{:?}", q.name);
    let reply = error_reply(data, &q, RCODE_SERVFAIL);
    assert_eq!(answer_rcode(&reply, q.id), Some(RCODE_SERVFAIL));
    assert_eq!(&reply[12..], &data[12..q.end]);
    assert!(parse_query(&reply).is_none());
});
