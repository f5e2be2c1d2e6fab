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
                let nres = b.i16()?.max(0) as usize;
                let mut result_formats = Vec::with_capacity(nres);
                for _ in 0..nres {
                    result_formats.push(b.i16()?);
                }
                Frontend::Bind {
                    portal,
                    statement,
                    result_formats,
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
        assert_eq!(
            Frontend::parse(&f).unwrap(),
            Frontend::Bind {
                portal: "p1",
                statement: "s1",
                result_formats: vec![0, 1]
            }
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
