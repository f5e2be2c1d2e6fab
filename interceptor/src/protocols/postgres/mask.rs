//! Result masking: a `ColumnPlan` per RowDescription (table OIDs named through a cached
//! catalog lookup on a side connection) and DataRow rewriting with correct lengths.
//!
//! Binary-format values: for text, varchar, char, name, json, xml and unknown the binary
//! format *is* the text, so they are masked exactly like text-format values. Other binary
//! values that can hold text (jsonb, text arrays, types defined in the database such as
//! enums, domains or citext) are scanned as raw bytes; a detector hit or a column rule sends
//! NULL (the masked text cannot be re-encoded in that format). A column rule on any other
//! binary column also sends NULL. A column rule on a text-format non-text column (e.g. an
//! integer id) sends the masked text.

use std::sync::Arc;

use bytes::BytesMut;

use super::backend::{self, Field};
pub use super::catalog::{Catalog, TableInfo};
use super::error::Result;
use crate::masking::{ColumnPlan, ColumnRef, Masker};

/// Types whose text-format values detectors scan: every type except the built-in ones
/// whose values cannot hold free text (numbers, booleans, times, UUIDs… and arrays of
/// them). Everything else is scanned — text of course, but also `name`, `bytea` (hex output
/// is decoded first, see [`Encoding::ByteaHex`]; escape output as it comes), `record` (`row(email, ssn)`), `tsvector`, `refcursor`, `anyarray`
/// (`pg_stats.histogram_bounds`), `inet` (IP addresses), and every type defined in the
/// database (`citext`, domains, enums).
pub fn text_like_type(oid: u32) -> bool {
    !matches!(
        oid,
        // bool, int8, int2, int4, oid, tid, xid, cid
        16 | 20 | 21 | 23 | 26 | 27 | 28 | 29
            // float4, float8, money, date, time, timestamp, timestamptz, interval, timetz
            | 700 | 701 | 790 | 1082 | 1083 | 1114 | 1184 | 1186 | 1266
            // bit, varbit, numeric, uuid, pg_lsn, xid8
            | 1560 | 1562 | 1700 | 2950 | 3220 | 5069
            // their arrays: bool, int2, int4, int8, oid, float4, float8, money, date,
            // time, timestamp, timestamptz, interval, timetz, numeric, uuid
            | 1000 | 1005 | 1007 | 1016 | 1028 | 1021 | 1022 | 791 | 1182 | 1183 | 1115
            | 1185 | 1187 | 1270 | 1231 | 2951
    )
}

/// Built-in types whose binary format is exactly their text (`textsend` and friends).
pub fn binary_is_text(oid: u32) -> bool {
    matches!(oid, 18 | 19 | 25 | 114 | 142 | 705 | 1042 | 1043)
}

/// How a column's values are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Text format, or a binary format identical to the text: masked in place.
    Text,
    /// Another binary format: a value that would be masked is sent as NULL.
    Binary,
    /// `inet`/`cidr` in binary: the detectors look at its text form (`10.1.2.3`), and a
    /// value they would mask is sent as NULL.
    BinaryInet,
    /// Text-format `bytea` (`array`: `bytea[]`). With `bytea_output = hex` (the server's
    /// default) a value is `\x6361…` and the detectors would see only hex digits: the hex
    /// is decoded, the detectors run on the bytes, and a masked value is sent as `\x` and
    /// lower-case hex again. Escape output (`bytea_output = escape`) is scanned as it comes.
    ByteaHex { array: bool },
}

/// The text form of a binary `inet`/`cidr` value (family, bits, is_cidr, length, address),
/// without the prefix length; `None` when it is not one.
fn inet_text(v: &[u8]) -> Option<String> {
    match v {
        [2, _, _, 4, a @ ..] if a.len() == 4 => {
            Some(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string())
        }
        [3, _, _, 16, a @ ..] => {
            let b: [u8; 16] = a.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(b).to_string())
        }
        _ => None,
    }
}

/// A plan for one result set. `formats` are the effective formats (0 text, 1 binary).
#[derive(Debug)]
pub struct ResultMask {
    pub plan: ColumnPlan,
    pub encoding: Vec<Encoding>,
}

/// `strict`: a column of a table the catalog does not name (its lookup failed) is masked by
/// the first column rule, since which rules apply is not known.
pub fn plan(
    masker: &Masker,
    fields: &[Field],
    formats: &[i16],
    catalog: &Catalog,
    strict: bool,
) -> ResultMask {
    let encoding: Vec<Encoding> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let binary = match formats {
                [] => f.format == 1,
                [one] => *one == 1,
                many => many.get(i).copied().unwrap_or(0) == 1,
            };
            if binary && matches!(f.type_oid, 650 | 869) {
                Encoding::BinaryInet
            } else if !binary && matches!(f.type_oid, 17 | 1001) {
                Encoding::ByteaHex {
                    array: f.type_oid == 1001,
                }
            } else if binary && !binary_is_text(f.type_oid) {
                Encoding::Binary
            } else {
                Encoding::Text
            }
        })
        .collect();
    let infos: Vec<Option<Arc<TableInfo>>> =
        fields.iter().map(|f| catalog.get(f.table_oid)).collect();
    let cols: Vec<ColumnRef> = fields
        .iter()
        .zip(&infos)
        .map(|(f, info)| ColumnRef {
            table: info.as_ref().map(|i| i.qualified.as_str()),
            name: info
                .as_ref()
                .and_then(|i| i.columns.get(&f.column))
                .map_or(f.name.as_str(), String::as_str),
            text_like: text_like_type(f.type_oid),
            origins: info
                .as_ref()
                .and_then(|i| i.origins.get(&f.column))
                .map_or(&[], Vec::as_slice),
            table_unknown: strict && f.table_oid != 0 && info.is_none(),
        })
        .collect();
    ResultMask {
        plan: masker.plan(&cols),
        encoding,
    }
}

/// Rewrites one DataRow into `out`; returns the number of fields masked. Unchanged rows are
/// copied as they came.
pub fn rewrite_row(
    masker: &Masker,
    m: &ResultMask,
    body: &[u8],
    out: &mut BytesMut,
) -> Result<u64> {
    if m.plan.is_noop() {
        super::codec::Frame::new(backend::DATA_ROW, bytes::Bytes::copy_from_slice(body))
            .encode(out);
        return Ok(0);
    }
    let values = backend::data_row(body)?;
    let mut masked: Vec<Option<Option<Vec<u8>>>> = Vec::with_capacity(values.len());
    let mut count = 0;
    for (i, v) in values.iter().enumerate() {
        let encoding = m.encoding.get(i).copied().unwrap_or(Encoding::Text);
        let new = v
            .and_then(|v| match encoding {
                // (A server sends only well-formed addresses.)
                Encoding::BinaryInet => inet_text(v)
                    .and_then(|t| masker.mask_value(&m.plan, i, t.as_bytes()))
                    .map(|_| None),
                // Column rules mask the value as it came, like any other text value.
                Encoding::ByteaHex { array } if !m.plan.has_rule(i) => {
                    match bytea_hex(masker, &m.plan, i, v, array) {
                        Hex::Masked(b) => Some(Some(b)),
                        Hex::Clean => None,
                        Hex::Other => masker.mask_value(&m.plan, i, v).map(|mv| Some(mv.bytes)),
                    }
                }
                Encoding::Binary => masker.mask_value(&m.plan, i, v).map(|_| None),
                Encoding::Text | Encoding::ByteaHex { .. } => {
                    masker.mask_value(&m.plan, i, v).map(|mv| Some(mv.bytes))
                }
            })
            .inspect(|_| count += 1);
        masked.push(new);
    }
    let merged = values.iter().zip(&masked).map(|(orig, new)| match new {
        None => *orig,
        Some(None) => None,
        Some(Some(b)) => Some(b.as_slice()),
    });
    backend::encode_data_row(merged, out);
    Ok(count)
}

/// What the hex form of a `bytea` value came to.
enum Hex {
    /// Not (only) hex-format bytea: scanned as it is.
    Other,
    /// Decoded, nothing found.
    Clean,
    /// The value with its masked bytes re-encoded.
    Masked(Vec<u8>),
}

/// The `(start, end)` of the hex digits of each `\x…` value in `v`: the whole of a `bytea`
/// value, or each element of a `bytea[]` (written `"\\x…"` in an array, or `NULL`).
/// Empty when `v` is not in hex form.
fn hex_runs(v: &[u8], array: bool) -> Vec<(usize, usize)> {
    let hex = |b: &[u8]| b.len().is_multiple_of(2) && b.iter().all(u8::is_ascii_hexdigit);
    if !array {
        return match v.strip_prefix(b"\\x") {
            Some(h) if hex(h) => vec![(2, v.len())],
            _ => Vec::new(),
        };
    }
    let mut runs = Vec::new();
    let mut i = 0;
    while let Some(off) = v[i..].windows(4).position(|w| w == b"\"\\\\x") {
        let start = i + off + 4;
        let len = v[start..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if v.get(start + len) != Some(&b'"') || !len.is_multiple_of(2) {
            return Vec::new();
        }
        runs.push((start, start + len));
        i = start + len;
    }
    runs
}

/// Runs the detectors of column `col` on the decoded bytes of a text-format `bytea` (or
/// `bytea[]`) value in hex form.
fn bytea_hex(
    masker: &Masker,
    plan: &crate::masking::ColumnPlan,
    col: usize,
    v: &[u8],
    array: bool,
) -> Hex {
    let runs = hex_runs(v, array);
    if runs.is_empty() {
        return Hex::Other;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let nibble = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        _ => (c | 0x20) - b'a' + 10,
    };
    let mut out = Vec::new();
    let mut last = 0;
    for (start, end) in runs {
        let bytes: Vec<u8> = v[start..end]
            .chunks_exact(2)
            .map(|p| nibble(p[0]) << 4 | nibble(p[1]))
            .collect();
        // The detectors read bytes and only match on ASCII: other bytes are kept as they are.
        if let Some(mv) = masker.mask_value(plan, col, &bytes) {
            out.extend_from_slice(&v[last..start]);
            for b in mv.bytes {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            last = end;
        }
    }
    if last == 0 {
        return Hex::Clean;
    }
    out.extend_from_slice(&v[last..]);
    Hex::Masked(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::{MaskingDoc, Origin};
    use std::collections::HashMap;

    fn field(name: &str, table_oid: u32, column: i16, type_oid: u32) -> Field {
        Field {
            name: name.into(),
            table_oid,
            column,
            type_oid,
            type_len: -1,
            type_mod: -1,
            format: 0,
        }
    }

    #[test]
    fn only_types_without_free_text_skip_the_detectors() {
        for oid in [
            16, 20, 21, 23, 700, 701, 1082, 1114, 1184, 1700, 2950, 1007, 1016,
        ] {
            assert!(!text_like_type(oid), "{oid}");
        }
        // text, varchar, name, bytea, json, jsonb, record, refcursor, tsvector, anyarray,
        // inet, name[], a type defined in the database.
        for oid in [
            25, 1043, 19, 17, 114, 3802, 2249, 1790, 3614, 2277, 869, 1003, 16390,
        ] {
            assert!(text_like_type(oid), "{oid}");
        }
    }

    #[test]
    fn binary_inet_values_are_scanned_as_their_text() {
        let doc: MaskingDoc =
            serde_yaml::from_str("detectors:\n  - kind: ipv4\n    strategy: redact\n").unwrap();
        let masker = Masker::new(&doc, vec![7; 32]).unwrap();
        let fields = vec![field("ip", 0, 0, 869), field("id", 0, 0, 23)];
        let m = plan(&masker, &fields, &[1, 1], &Catalog::default(), false);
        let v4: &[u8] = &[2, 32, 0, 4, 10, 1, 2, 3];
        let id: &[u8] = &[0, 0, 0, 7];
        let mut row = BytesMut::new();
        backend::encode_data_row([Some(v4), Some(id)].into_iter(), &mut row);
        let mut out = BytesMut::new();
        assert_eq!(rewrite_row(&masker, &m, &row[5..], &mut out).unwrap(), 1);
        let vals = backend::data_row(&out[5..]).unwrap();
        assert_eq!(
            vals,
            vec![None, Some(id)],
            "the address is withheld, the id kept"
        );
        assert_eq!(
            inet_text(&[3, 128, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn data_rows_are_rewritten_with_new_lengths() {
        let doc: MaskingDoc = serde_yaml::from_str(
            "columns:\n  - match: users.ssn\n    strategy: redact\ndetectors:\n  - kind: email\n    strategy: partial\n",
        )
        .unwrap();
        let masker = Masker::new(&doc, vec![7; 32]).unwrap();
        let catalog = Catalog::default();
        catalog.tables.lock().unwrap().insert(
            16384,
            Arc::new(TableInfo {
                qualified: "public.users".into(),
                columns: [
                    (1, "id".to_string()),
                    (2, "ssn".to_string()),
                    (3, "email".to_string()),
                ]
                .into(),
                origins: HashMap::new(),
                fetched: std::time::Instant::now(),
            }),
        );
        // A view's column renamed from users.ssn, and a partition's column.
        catalog.tables.lock().unwrap().insert(
            16390,
            Arc::new(TableInfo {
                qualified: "public.customer_view".into(),
                columns: [(1, "tax_id".to_string()), (2, "id".to_string())].into(),
                origins: [
                    (
                        1,
                        vec![Origin {
                            table: "public.users".into(),
                            column: Some("ssn".into()),
                        }],
                    ),
                    (
                        2,
                        vec![Origin {
                            table: "public.users".into(),
                            column: Some("id".into()),
                        }],
                    ),
                ]
                .into(),
                fetched: std::time::Instant::now(),
            }),
        );
        let v = plan(
            &masker,
            &[field("tax_id", 16390, 1, 25), field("id", 16390, 2, 25)],
            &[],
            &catalog,
            true,
        );
        assert!(
            v.plan.has_rule(0),
            "a view column renamed from a ruled column"
        );
        assert!(!v.plan.has_rule(1));
        // A table the catalog could not name: the first rule masks it (fail closed).
        let unknown = [field("x", 99_999, 1, 25)];
        assert!(plan(&masker, &unknown, &[], &catalog, true)
            .plan
            .has_rule(0));
        assert!(!plan(&masker, &unknown, &[], &catalog, false)
            .plan
            .has_rule(0));
        // A column added since the lookup makes its table missing again; system columns
        // (ctid: -1) and expressions (no table) never do.
        assert_eq!(
            catalog.missing([(16384, 2), (16384, -1), (0, 1)]),
            Vec::<u32>::new()
        );
        assert_eq!(
            catalog.missing([(16384, 4), (16385, 1)]),
            vec![16384, 16385]
        );
        // The agent aliased the columns: the catalog still names them.
        let fields = vec![
            field("id", 16384, 1, 23),
            field("s", 16384, 2, 25),
            field("e", 16384, 3, 25),
        ];
        let m = plan(&masker, &fields, &[], &catalog, false);
        let mut row = BytesMut::new();
        let vals: Vec<Option<&[u8]>> = vec![
            Some(b"123456789"),
            Some(b"078-05-1120"),
            Some(b"alice@example.com"),
        ];
        backend::encode_data_row(vals.into_iter(), &mut row);
        let mut out = BytesMut::new();
        let n = rewrite_row(&masker, &m, &row[5..], &mut out).unwrap();
        assert_eq!(n, 2);
        let got = backend::data_row(&out[5..]).unwrap();
        assert_eq!(
            got[0],
            Some(&b"123456789"[..]),
            "a plain 9-digit id is not an SSN"
        );
        assert_eq!(got[1], Some(&b"[REDACTED]"[..]));
        let email = std::str::from_utf8(got[2].unwrap()).unwrap();
        assert!(!email.contains("alice"), "{email}");
        assert!(email.ends_with("@example.com"), "{email}");
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        assert_eq!(len + 1, out.len(), "length rewritten");

        // Binary format of text columns is the text: masked the same way.
        let m = plan(&masker, &fields, &[1], &catalog, false);
        let mut out = BytesMut::new();
        rewrite_row(&masker, &m, &row[5..], &mut out).unwrap();
        let got = backend::data_row(&out[5..]).unwrap();
        assert_eq!(got[0], Some(&b"123456789"[..]));
        assert_eq!(got[1], Some(&b"[REDACTED]"[..]));
        assert!(std::str::from_utf8(got[2].unwrap())
            .unwrap()
            .ends_with("@example.com"));

        // Other binary formats: a value that would be masked becomes NULL, others pass.
        let fields = vec![
            field("id", 16384, 1, 23),
            field("s", 16384, 2, 3802),
            field("e", 16384, 3, 1009),
        ];
        let m = plan(&masker, &fields, &[1], &catalog, false);
        let mut row = BytesMut::new();
        let vals: Vec<Option<&[u8]>> = vec![
            Some(b"\0\0\0\x07"),
            Some(b"\x01\"078-05-1120\""),
            Some(b"..alice@example.com.."),
        ];
        backend::encode_data_row(vals.into_iter(), &mut row);
        let mut out = BytesMut::new();
        let n = rewrite_row(&masker, &m, &row[5..], &mut out).unwrap();
        assert_eq!(n, 2);
        let got = backend::data_row(&out[5..]).unwrap();
        assert_eq!(got, vec![Some(&b"\0\0\0\x07"[..]), None, None]);
    }

    fn hex(s: &[u8]) -> String {
        s.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn bytea_hex_output_is_decoded_for_the_detectors() {
        let doc: MaskingDoc = serde_yaml::from_str(
            "columns:\n  - match: docs.secret\n    strategy: redact\ndetectors:\n  - kind: us_ssn\n    strategy: redact\n",
        )
        .unwrap();
        let masker = Masker::new(&doc, vec![7; 32]).unwrap();
        let fields = vec![
            field("b", 0, 0, 17),
            field("arr", 0, 0, 1001),
            field("esc", 0, 0, 17),
            field("clean", 0, 0, 17),
            field("secret", 0, 0, 17),
        ];
        let m = plan(&masker, &fields, &[], &Catalog::default(), false);
        // A value with a byte that is not UTF-8 around the SSN: kept as it is.
        let b = format!("\\x{}", hex(b"\xff ssn 078-05-1120 \x00"));
        let arr = format!(
            "{{\"\\\\x{}\",NULL,\"\\\\x{}\"}}",
            hex(b"no"),
            hex(b"123-45-6789")
        );
        let esc = "ssn 078-05-1120\\000";
        let clean = format!("\\x{}", hex(b"nothing here"));
        let secret = format!("\\x{}", hex(b"x"));
        let mut row = BytesMut::new();
        let vals: Vec<Option<&[u8]>> = vec![
            Some(b.as_bytes()),
            Some(arr.as_bytes()),
            Some(esc.as_bytes()),
            Some(clean.as_bytes()),
            Some(secret.as_bytes()),
        ];
        backend::encode_data_row(vals.into_iter(), &mut row);
        let mut out = BytesMut::new();
        assert_eq!(rewrite_row(&masker, &m, &row[5..], &mut out).unwrap(), 4);
        let got = backend::data_row(&out[5..]).unwrap();
        let want_b = format!("\\x{}", hex(b"\xff ssn [REDACTED:us_ssn] \x00"));
        assert_eq!(
            got[0],
            Some(want_b.as_bytes()),
            "re-encoded as lower-case hex"
        );
        let want_arr = format!(
            "{{\"\\\\x{}\",NULL,\"\\\\x{}\"}}",
            hex(b"no"),
            hex(b"[REDACTED:us_ssn]")
        );
        assert_eq!(got[1], Some(want_arr.as_bytes()));
        assert_eq!(
            got[2],
            Some(&b"ssn [REDACTED:us_ssn]\\000"[..]),
            "escape output"
        );
        assert_eq!(got[3], Some(clean.as_bytes()), "nothing found: as it came");
        assert_eq!(got[4], Some(&b"[REDACTED]"[..]), "a column rule");
        // Upper-case hex too; odd lengths or other bytes are not hex form.
        assert_eq!(hex_runs(b"\\x4A4b", false), [(2, 6)]);
        assert!(hex_runs(b"\\x4a4", false).is_empty());
        assert!(hex_runs(b"\\x4g", false).is_empty());
        assert!(hex_runs(b"{\"\\\\x4a\",\"abc\"}", true) == [(5, 7)]);
    }
}
