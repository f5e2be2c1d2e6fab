//! The few DNS wire-format pieces the proxy needs (RFC 1035 §4.1): the question of a query,
//! the rcode of an answer, and a header-only REFUSED / SERVFAIL reply.

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: u16,
    /// Lower case, no trailing dot; "." for the root.
    pub name: String,
    pub qtype: u16,
    /// Byte length of header + question (what a reply copies).
    pub end: usize,
}

pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_REFUSED: u8 = 5;

/// Parses a query with exactly one question. `None` for anything else (answers, truncated or
/// compressed questions, several questions).
pub fn parse_query(b: &[u8]) -> Option<Question> {
    if b.len() < 12 || b[2] & 0x80 != 0 {
        return None;
    }
    let qdcount = u16::from_be_bytes([b[4], b[5]]);
    if qdcount != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *b.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression pointers have no place in a question
        }
        labels.push(presentation(b.get(i..i + len)?));
        i += len;
        if i > 12 + 255 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]);
    b.get(i + 2..i + 4)?; // qclass
    Some(Question {
        id: u16::from_be_bytes([b[0], b[1]]),
        name: if labels.is_empty() {
            ".".into()
        } else {
            labels.join(".")
        },
        qtype,
        end: i + 4,
    })
}

/// A label in presentation form (RFC 1035 §5.1), lower case: a `.` or a backslash inside the
/// label is escaped with a backslash, and bytes other than printable ASCII are written as a
/// backslash and three decimal digits. So the policy and the audit see the name the resolver
/// will see: the wire labels `["x.example", "test"]` read `x\.example.test` (one label under
/// `test`), which `*.example.test` does not match, and no two different names read the same
/// (DNS compares ASCII letters case-insensitively).
fn presentation(label: &[u8]) -> String {
    let mut out = String::with_capacity(label.len());
    for &c in label {
        match c {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(c as char);
            }
            0x21..=0x7e => out.push(c.to_ascii_lowercase() as char),
            _ => out.push_str(&format!("\\{c:03}")),
        }
    }
    out
}

/// The rcode of an answer to `id`; `None` if `b` is not such an answer.
pub fn answer_rcode(b: &[u8], id: u16) -> Option<u8> {
    if b.len() < 12 || b[2] & 0x80 == 0 || u16::from_be_bytes([b[0], b[1]]) != id {
        return None;
    }
    Some(b[3] & 0x0f)
}

/// A reply to `query` with no records and the given rcode.
pub fn error_reply(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut r = query[..q.end].to_vec();
    r[2] = 0x80 | (query[2] & 0x79); // QR, keep opcode and RD
    r[3] = 0x80 | rcode; // RA
    r[6..12].fill(0); // no answers, authority or additional records
    r
}

pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => n.to_string(),
    }
}

pub fn qtype_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn parses_question() {
        let q = parse_query(&query("WWW.Example.test", 28)).unwrap();
        assert_eq!(q.name, "www.example.test");
        assert_eq!(
            (q.id, q.qtype, qtype_name(q.qtype).as_str()),
            (0x1234, 28, "AAAA")
        );
    }

    #[test]
    fn rejects_garbage_and_answers() {
        assert!(parse_query(&[0; 5]).is_none());
        let mut a = query("a.b", 1);
        a[2] |= 0x80;
        assert!(parse_query(&a).is_none());
        let mut truncated = query("abc.def", 1);
        truncated.truncate(16);
        assert!(parse_query(&truncated).is_none());
        let mut ptr = query("x", 1);
        ptr[12] = 0xc0;
        assert!(parse_query(&ptr).is_none());
    }

    #[test]
    fn names_are_in_presentation_form() {
        // A dot inside a label is not a label boundary: the policy must not read
        // ["x.example", "test"] as x.example.test.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in [&b"x.Example"[..], b"te\\st", b"a b\xff\x00"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l);
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let name = parse_query(&q).unwrap().name;
        assert_eq!(name, r"x\.example.te\\st.a\032b\255\000");
        let p = crate::policy::Policy::from_str(
            "version: 1\ndns:\n  resolvers: [\"127.0.0.53\"]\n  allow_names: [\"*.example.test\"]\n",
            "p",
        )
        .unwrap();
        let one_label = {
            let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 14];
            q.extend_from_slice(b"x.example.test");
            q.extend_from_slice(&[0, 0, 1, 0, 1]);
            parse_query(&q).unwrap().name
        };
        assert_eq!(one_label, r"x\.example\.test");
        assert!(!crate::policy::evaluate_dns(&p.dns(), &one_label).is_allow());
        let real_subdomain = parse_query(&query("x.example.test", 1)).unwrap().name;
        assert!(crate::policy::evaluate_dns(&p.dns(), &real_subdomain).is_allow());
    }

    #[test]
    fn refused_reply_echoes_question() {
        let raw = query("evil.org", 1);
        let q = parse_query(&raw).unwrap();
        let r = error_reply(&raw, &q, RCODE_REFUSED);
        assert_eq!(answer_rcode(&r, 0x1234), Some(RCODE_REFUSED));
        assert_eq!(&r[12..], &raw[12..]);
        assert_eq!(r[2] & 0x01, 0x01, "RD kept");
        assert_eq!(answer_rcode(&r, 0x9999), None);
    }
}
