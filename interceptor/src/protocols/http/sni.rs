//! Reads the SNI (server name) out of a TLS ClientHello without consuming it.

/// What the peeked bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A complete ClientHello, with its server name if it has one.
    Complete { sni: Option<String> },
    /// The start of a ClientHello: at least this many bytes are needed in all.
    Incomplete(usize),
    /// Not a TLS ClientHello.
    Invalid(&'static str),
}

/// Parses the first TLS record(s): a handshake record holding a ClientHello.
/// The ClientHello may span several records; it is reassembled here.
pub fn parse(buf: &[u8]) -> Hello {
    let mut hs = Vec::new();
    let mut at = 0;
    loop {
        if buf.len() < at + 5 {
            return Hello::Incomplete(at + 5);
        }
        if buf[at] != 0x16 {
            return Hello::Invalid("not a TLS handshake record");
        }
        if buf[at + 1] != 3 {
            return Hello::Invalid("unknown TLS record version");
        }
        let len = u16::from_be_bytes([buf[at + 3], buf[at + 4]]) as usize;
        if len == 0 || len > 16384 + 2048 {
            return Hello::Invalid("bad TLS record length");
        }
        if buf.len() < at + 5 + len {
            return Hello::Incomplete(at + 5 + len);
        }
        hs.extend_from_slice(&buf[at + 5..at + 5 + len]);
        at += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Hello::Invalid("first handshake message is not a ClientHello");
            }
            let body = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]) as usize;
            if body > 64 * 1024 {
                return Hello::Invalid("ClientHello too large");
            }
            if hs.len() >= 4 + body {
                return match client_hello(&hs[4..4 + body]) {
                    Some(sni) => Hello::Complete { sni },
                    None => Hello::Invalid("malformed ClientHello"),
                };
            }
        }
    }
}

/// The SNI of a ClientHello body (`None` inside: no server_name extension).
fn client_hello(b: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(b);
    r.skip(2 + 32)?; // version, random
    let sid = r.u8()? as usize;
    r.skip(sid)?;
    let cs = r.u16()? as usize;
    r.skip(cs)?;
    let comp = r.u8()? as usize;
    r.skip(comp)?;
    if r.0.is_empty() {
        return Some(None);
    }
    let ext_len = r.u16()? as usize;
    let mut ext = Reader(r.take(ext_len)?);
    while !ext.0.is_empty() {
        let typ = ext.u16()?;
        let len = ext.u16()? as usize;
        let data = ext.take(len)?;
        if typ == 0 {
            let mut d = Reader(data);
            let list_len = d.u16()? as usize;
            let mut list = Reader(d.take(list_len)?);
            while !list.0.is_empty() {
                let kind = list.u8()?;
                let n = list.u16()? as usize;
                let name = list.take(n)?;
                if kind == 0 {
                    let s = std::str::from_utf8(name).ok()?;
                    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_graphic()) {
                        return None;
                    }
                    return Some(Some(s.to_ascii_lowercase()));
                }
            }
            return Some(None);
        }
    }
    Some(None)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as produced by rustls for `api.test`.
    fn hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut c = rustls::ClientConnection::new(
            Arc::new(cfg),
            rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_sni_and_asks_for_more() {
        let h = hello("API.test");
        assert_eq!(
            parse(&h),
            Hello::Complete {
                sni: Some("api.test".into())
            }
        );
        assert!(matches!(parse(&h[..3]), Hello::Incomplete(5)));
        assert!(matches!(parse(&h[..h.len() - 1]), Hello::Incomplete(n) if n == h.len()));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Hello::Invalid(_)));
    }

    #[test]
    fn ip_names_have_no_sni() {
        // rustls sends no SNI for an IP address.
        let h = hello("127.0.0.2");
        assert_eq!(parse(&h), Hello::Complete { sni: None });
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let mut h = hello("api.test");
        for i in 5..h.len().min(200) {
            let saved = h[i];
            h[i] = 0xff;
            let _ = parse(&h);
            h[i] = saved;
        }
    }
}
