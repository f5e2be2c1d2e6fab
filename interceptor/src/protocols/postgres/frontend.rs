//! Messages from the client (`(F)` in the protocol documentation): the startup packets and
//! the typed messages the proxy inspects. Everything is relayed as the original frame
//! unless the proxy decides otherwise, so parsing only borrows what it needs.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{put_cstr, Body, Frame};
use super::error::{PgError, Result};

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;
pub const PROTOCOL_3: i32 = 196608;

/// The first packet of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        key: i32,
    },
    /// Protocol version and parameters (user, database, application_name, options, …).
    Startup {
        version: i32,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    pub fn parse(body: &[u8]) -> Result<Startup> {
        let mut b = Body::new(body, "startup");
        let code = b.i32()?;
        Ok(match code {
            SSL_REQUEST => Startup::Ssl,
            GSSENC_REQUEST => Startup::GssEnc,
            CANCEL_REQUEST => Startup::Cancel {
                pid: b.i32()?,
                key: b.i32()?,
            },
            v if v >> 16 == 3 => {
                let mut params = Vec::new();
                loop {
                    let k = b.cstr()?;
                    if k.is_empty() {
                        break;
                    }
                    params.push((k.to_owned(), b.cstr()?.to_owned()));
                }
                Startup::Startup { version: v, params }
            }
            v => {
                return Err(PgError::Unsupported(format!(
                    "protocol version {}.{} (only 3.x is spoken)",
                    v >> 16,
                    v & 0xffff
                )))
            }
        })
    }

    pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Encodes a startup message (protocol 3.0) with these parameters.
pub fn startup_message(params: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(PROTOCOL_3);
    for (k, v) in params {
        put_cstr(&mut body, k);
        put_cstr(&mut body, v);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(&body);
    out
}

pub fn cancel_request(pid: i32, key: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16u32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..].copy_from_slice(&key.to_be_bytes());
    out
}

/// The parameter formats and values of a Bind as sent; decoded only to show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindParams<'a>(&'a [u8]);

impl BindParams<'_> {
    /// Longest part of one value shown.
    const SHOWN: usize = 200;

    /// `$1 = 'text', $2 = NULL, $3 = '\x00ff' (binary)`, each value cut at 200 characters
    /// (for approvers of a held statement; masked by the caller like statement text).
    pub fn describe(&self) -> String {
        let mut b = Body::new(self.0, "Bind");
        let mut out = String::new();
        let Ok(nfmt) = b.i16() else { return out };
        let formats: Vec<i16> = (0..nfmt.max(0)).map_while(|_| b.i16().ok()).collect();
        let Ok(n) = b.i16() else { return out };
        for i in 0..n.max(0) as usize {
            let Ok(len) = b.i32() else { break };
            let binary = match formats.len() {
                0 => false,
                1 => formats[0] == 1,
                _ => formats.get(i) == Some(&1),
            };
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${} = ", i + 1));
            if len < 0 {
                out.push_str("NULL");
                continue;
            }
            let Ok(v) = b.bytes(len as usize) else { break };
            let text = match (binary, std::str::from_utf8(v)) {
                (false, Ok(t)) => t.to_owned(),
                _ => {
                    let hex: String = v.iter().map(|x| format!("{x:02x}")).collect();
                    format!("\\x{hex}")
                }
            };
            let cut: String = text.chars().take(Self::SHOWN).collect();
            out.push('\'');
            out.push_str(&cut.replace('\'', "''"));
            out.push('\'');
            if cut.len() < text.len() {
                out.push_str(&format!(" (cut, {} bytes)", v.len()));
            }
            if binary {
                // Drivers send integers this way (psycopg, asyncpg); other types stay hex.
                let int = match v.len() {
                    2 => Some(i16::from_be_bytes([v[0], v[1]]) as i64),
                    4 => Some(i32::from_be_bytes([v[0], v[1], v[2], v[3]]) as i64),
                    8 => Some(i64::from_be_bytes(v.try_into().unwrap_or_default())),
                    _ => None,
                };
                match int {
                    Some(n) => out.push_str(&format!(" (binary; as an integer {n})")),
                    None => out.push_str(" (binary)"),
                }
            }
        }
        out
    }
}

/// A typed client message after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend<'a> {
    Query(&'a str),
    Parse {
        name: &'a str,
        query: &'a str,
    },
    Bind {
        portal: &'a str,
        statement: &'a str,
        result_formats: Vec<i16>,
        params: BindParams<'a>,
    },
    /// `kind` is `b'S'` (statement) or `b'P'` (portal).
    Describe {
        kind: u8,
        name: &'a str,
    },
    Execute {
        portal: &'a str,
        max_rows: i32,
    },
    Close {
        kind: u8,
        name: &'a str,
    },
    Sync,
    Flush,
    Terminate,
    CopyData,
    CopyDone,
    CopyFail,
    FunctionCall {
        oid: u32,
    },
    /// Password/SASL responses (only meaningful during authentication).
    Password,
    Unknown(u8),
}

impl<'a> Frontend<'a> {
    pub fn parse(f: &'a Frame) -> Result<Frontend<'a>> {
        let body = &f.body[..];
        Ok(match f.tag {
            b'Q' => Frontend::Query(Body::new(body, "Query").cstr()?),
            b'P' => {
                let mut b = Body::new(body, "Parse");
                Frontend::Parse {
                    name: b.cstr()?,
                    query: b.cstr()?,
                }
            }
            b'B' => {
                let mut b = Body::new(body, "Bind");
                let portal = b.cstr()?;
                let statement = b.cstr()?;
                let raw = b.remaining();
                let nfmt = b.i16()?.max(0) as usize;
                for _ in 0..nfmt {
                    b.i16()?;
                }
                let nparams = b.i16()?.max(0) as usize;
                for _ in 0..nparams {
                    let len = b.i32()?;
                    if len > 0 {
                        b.bytes(len as usize)?;
                    }
                }
                let params = BindParams(&raw[..raw.len() - b.remaining().len()]);
                let nres = b.i16()?.max(0) as usize;
                let mut result_formats = Vec::with_capacity(nres);
                for _ in 0..nres {
                    result_formats.push(b.i16()?);
                }
                Frontend::Bind {
                    portal,
                    statement,
                    result_formats,
                    params,
                }
            }
            b'D' => {
                let mut b = Body::new(body, "Describe");
                Frontend::Describe {
                    kind: kind(b.u8()?, "Describe")?,
                    name: b.cstr()?,
                }
            }
            b'E' => {
                let mut b = Body::new(body, "Execute");
                Frontend::Execute {
                    portal: b.cstr()?,
                    max_rows: b.i32()?,
                }
            }
            b'C' => {
                let mut b = Body::new(body, "Close");
                Frontend::Close {
                    kind: kind(b.u8()?, "Close")?,
                    name: b.cstr()?,
                }
            }
            b'S' => Frontend::Sync,
            b'H' => Frontend::Flush,
            b'X' => Frontend::Terminate,
            b'd' => Frontend::CopyData,
            b'c' => Frontend::CopyDone,
            b'f' => Frontend::CopyFail,
            b'F' => Frontend::FunctionCall {
                oid: Body::new(body, "FunctionCall").u32()?,
            },
            b'p' => Frontend::Password,
            t => Frontend::Unknown(t),
        })
    }
}

fn kind(k: u8, what: &'static str) -> Result<u8> {
    match k {
        b'S' | b'P' => Ok(k),
        other => Err(PgError::malformed(
            what,
            format!("target kind {:?} is neither 'S' nor 'P'", other as char),
        )),
    }
}

/// A Query message.
pub fn query(sql: &str) -> Frame {
    let mut b = BytesMut::with_capacity(sql.len() + 1);
    put_cstr(&mut b, sql);
    Frame::new(b'Q', b.freeze())
}

/// A Parse message without parameter types.
pub fn parse(name: &str, sql: &str) -> Frame {
    let mut b = BytesMut::new();
    put_cstr(&mut b, name);
    put_cstr(&mut b, sql);
    b.put_i16(0);
    Frame::new(b'P', b.freeze())
}

pub fn terminate() -> Frame {
    Frame::new(b'X', Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_packets() {
        let m = startup_message(&[("user", "agent"), ("database", "app")]);
        assert_eq!(
            Startup::parse(&m[4..]).unwrap(),
            Startup::Startup {
                version: PROTOCOL_3,
                params: vec![
                    ("user".into(), "agent".into()),
                    ("database".into(), "app".into())
                ]
            }
        );
        let c = cancel_request(42, -7);
        assert_eq!(
            Startup::parse(&c[4..]).unwrap(),
            Startup::Cancel { pid: 42, key: -7 }
        );
        assert_eq!(
            Startup::parse(&SSL_REQUEST.to_be_bytes()).unwrap(),
            Startup::Ssl
        );
        assert_eq!(
            Startup::parse(&GSSENC_REQUEST.to_be_bytes()).unwrap(),
            Startup::GssEnc
        );
        assert!(Startup::parse(&0x0002_0000i32.to_be_bytes()).is_err());
        assert!(
            Startup::parse(&[0, 3, 0, 0, b'u', b's']).is_err(),
            "unterminated parameter"
        );
    }

    #[test]
    fn bind_parameters_are_described_for_approvers() {
        let mut buf = BytesMut::new();
        let long = "x".repeat(300);
        postgres_protocol::message::frontend::bind(
            "",
            "s1",
            [0i16],
            [Some("it's"), None, Some(long.as_str())],
            |v, out| {
                match v {
                    Some(t) => out.put_slice(t.as_bytes()),
                    None => return Ok(postgres_protocol::IsNull::Yes),
                }
                Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::No)
            },
            [0i16],
            &mut buf,
        )
        .map_err(|_| ())
        .unwrap();
        let f = Frame::new(buf[0], buf.split_off(5).freeze());
        let Frontend::Bind { params, .. } = Frontend::parse(&f).unwrap() else {
            panic!("not a Bind")
        };
        let d = params.describe();
        assert!(d.starts_with("$1 = 'it''s', $2 = NULL, $3 = 'xxx"), "{d}");
        assert!(d.ends_with("' (cut, 300 bytes)"), "{d}");
    }

    #[test]
    fn typed_messages_round_trip() {
        let q = query("SELECT 1");
        assert_eq!(Frontend::parse(&q).unwrap(), Frontend::Query("SELECT 1"));
        let p = parse("s1", "SELECT $1");
        assert_eq!(
            Frontend::parse(&p).unwrap(),
            Frontend::Parse {
                name: "s1",
                query: "SELECT $1"
            }
        );
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::bind(
            "p1",
            "s1",
            [1i16],
            [Some(7i32)],
            |v, out| {
                out.put_i32(v.unwrap());
                Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::No)
            },
            [0i16, 1],
            &mut buf,
        )
        .map_err(|_| ())
        .unwrap();
        let f = Frame::new(buf[0], buf.split_off(5).freeze());
        let Frontend::Bind {
            portal,
            statement,
            result_formats,
            params,
        } = Frontend::parse(&f).unwrap()
        else {
            panic!("not a Bind")
        };
        assert_eq!((portal, statement), ("p1", "s1"));
        assert_eq!(result_formats, vec![0, 1]);
        assert_eq!(
            params.describe(),
            "$1 = '\\x00000007' (binary; as an integer 7)"
        );
        let mut buf = BytesMut::new();
        postgres_protocol::message::frontend::execute("p1", 10, &mut buf).unwrap();
        let f = Frame::new(buf[0], buf.split_off(5).freeze());
        assert_eq!(
            Frontend::parse(&f).unwrap(),
            Frontend::Execute {
                portal: "p1",
                max_rows: 10
            }
        );
        let bad = Frame::new(b'D', &b"Xname\0"[..]);
        assert!(Frontend::parse(&bad).is_err());
        let bad = Frame::new(b'Q', &b"no nul"[..]);
        assert!(Frontend::parse(&bad).is_err());
    }
}
