//! Messages from the server (`(B)`): typed views of the ones the proxy inspects, and
//! builders for the ones it sends itself.

use bytes::{BufMut, BytesMut};

use super::codec::{put_cstr, Body, Frame};
use super::error::Result;

pub const AUTH: u8 = b'R';
pub const BACKEND_KEY: u8 = b'K';
pub const PARAMETER_STATUS: u8 = b'S';
pub const READY: u8 = b'Z';
pub const ERROR: u8 = b'E';
pub const NOTICE: u8 = b'N';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const DATA_ROW: u8 = b'D';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const EMPTY_QUERY: u8 = b'I';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const NO_DATA: u8 = b'n';
pub const COPY_IN: u8 = b'G';
pub const COPY_OUT: u8 = b'H';
pub const COPY_BOTH: u8 = b'W';

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_mod: i32,
    pub format: i16,
}

pub fn row_description(body: &[u8]) -> Result<Vec<Field>> {
    let mut b = Body::new(body, "RowDescription");
    let n = b.i16()?.max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Field {
            name: b.cstr()?.to_owned(),
            table_oid: b.u32()?,
            column: b.i16()?,
            type_oid: b.u32()?,
            type_len: b.i16()?,
            type_mod: b.i32()?,
            format: b.i16()?,
        });
    }
    Ok(out)
}

pub fn encode_row_description(fields: &[Field]) -> Frame {
    let mut b = BytesMut::new();
    b.put_i16(fields.len() as i16);
    for f in fields {
        put_cstr(&mut b, &f.name);
        b.put_u32(f.table_oid);
        b.put_i16(f.column);
        b.put_u32(f.type_oid);
        b.put_i16(f.type_len);
        b.put_i32(f.type_mod);
        b.put_i16(f.format);
    }
    Frame::new(ROW_DESCRIPTION, b.freeze())
}

/// The values of a DataRow (`None` = SQL NULL), borrowed from the frame.
pub fn data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>> {
    let mut b = Body::new(body, "DataRow");
    let n = b.i16()?.max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = b.i32()?;
        out.push(if len < 0 {
            None
        } else {
            Some(b.bytes(len as usize)?)
        });
    }
    Ok(out)
}

pub fn encode_data_row<'a>(
    values: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
    out: &mut BytesMut,
) {
    let start = out.len();
    out.put_u8(DATA_ROW);
    out.put_u32(0);
    out.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => out.put_i32(-1),
            Some(v) => {
                out.put_i32(v.len() as i32);
                out.put_slice(v);
            }
        }
    }
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Fields of an ErrorResponse or NoticeResponse: (code, value), e.g. (b'C', "42501").
pub fn fields(body: &[u8]) -> Result<Vec<(u8, String)>> {
    let mut b = Body::new(body, "ErrorResponse");
    let mut out = Vec::new();
    loop {
        let t = b.u8()?;
        if t == 0 {
            return Ok(out);
        }
        out.push((t, b.cstr()?.to_owned()));
    }
}

pub fn field(fields: &[(u8, String)], code: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v.as_str())
}

/// An ErrorResponse (or, with `tag = NOTICE`, a NoticeResponse).
pub fn error(
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Frame {
    let mut b = BytesMut::new();
    for (t, v) in [
        (b'S', Some(severity)),
        (b'V', Some(severity)),
        (b'C', Some(code)),
        (b'M', Some(message)),
        (b'D', detail),
        (b'H', hint),
    ] {
        if let Some(v) = v {
            b.put_u8(t);
            put_cstr(&mut b, v);
        }
    }
    b.put_u8(0);
    Frame::new(ERROR, b.freeze())
}

pub fn ready(status: u8) -> Frame {
    Frame::new(READY, vec![status])
}

pub fn auth_ok() -> Frame {
    Frame::new(AUTH, 0i32.to_be_bytes().to_vec())
}

pub fn backend_key(pid: i32, key: i32) -> Frame {
    let mut b = BytesMut::with_capacity(8);
    b.put_i32(pid);
    b.put_i32(key);
    Frame::new(BACKEND_KEY, b.freeze())
}

pub fn parameter_status(name: &str, value: &str) -> Frame {
    let mut b = BytesMut::new();
    put_cstr(&mut b, name);
    put_cstr(&mut b, value);
    Frame::new(PARAMETER_STATUS, b.freeze())
}

pub fn parse_parameter_status(body: &[u8]) -> Result<(String, String)> {
    let mut b = Body::new(body, "ParameterStatus");
    Ok((b.cstr()?.to_owned(), b.cstr()?.to_owned()))
}

pub fn parse_backend_key(body: &[u8]) -> Result<(i32, i32)> {
    let mut b = Body::new(body, "BackendKeyData");
    Ok((b.i32()?, b.i32()?))
}

/// The tag of a CommandComplete, e.g. "SELECT 3".
pub fn command_tag(body: &[u8]) -> Result<&str> {
    Body::new(body, "CommandComplete").cstr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let f = error("ERROR", "42501", "interceptor: denied", Some("d"), None);
        let fs = fields(&f.body).unwrap();
        assert_eq!(field(&fs, b'C'), Some("42501"));
        assert_eq!(field(&fs, b'M'), Some("interceptor: denied"));
        assert_eq!(field(&fs, b'D'), Some("d"));
        assert_eq!(field(&fs, b'H'), None);
    }

    #[test]
    fn data_row_round_trip() {
        let mut out = BytesMut::new();
        let vals: Vec<Option<&[u8]>> =
            vec![Some(b"1"), None, Some(b""), Some(b"alice@example.com")];
        encode_data_row(vals.iter().copied(), &mut out);
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len());
        assert_eq!(data_row(&out[5..]).unwrap(), vals);
        assert!(
            data_row(&[0, 1, 0, 0, 0, 9, b'x']).is_err(),
            "value longer than the message"
        );
    }

    #[test]
    fn row_description_round_trip() {
        let fields = vec![Field {
            name: "email".into(),
            table_oid: 16384,
            column: 2,
            type_oid: 25,
            type_len: -1,
            type_mod: -1,
            format: 0,
        }];
        let f = encode_row_description(&fields);
        assert_eq!(row_description(&f.body).unwrap(), fields);
    }
}
