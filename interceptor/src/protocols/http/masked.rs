//! The response side of an allowed request: passed on as it streams, or — when the rule
//! masks — buffered (bounded), masked with `mask.rs` and sent with a fixed length. Streams
//! of records (server-sent events, JSON lines) are masked record by record as they arrive
//! (`records.rs`) and stay streams. A body whose type does not say what it is gets its
//! first bytes looked at: binary is passed on, text is masked (as JSON when it parses).
//! A gzip or deflate body is decoded first (`inflate.rs`) and, when masking changed it,
//! sent on uncompressed; unchanged, it goes on as it came.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::response::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};

use super::audit::HttpRecord;
use super::counting::{counted, Finish};
use super::inflate::{self, Coding, Inflater};
use super::mask::{self, BodyKind, MaskError};
use super::records::{Masked, RecordMasker};
use super::respond::{fail, full, keeping, Body, BoxError};
use super::{budget, charset};
use super::{global, Ctx};
use crate::masking::{FieldRule, Masker};
use crate::policy::HttpEffects;

/// The response for the agent: `masking` is the allowing rule's effects when they mask.
/// `parts` as the upstream sent them: the hop-by-hop headers are removed here.
pub(super) async fn respond(
    ctx: &Arc<Ctx>,
    masking: Option<&HttpEffects>,
    mut rec: HttpRecord,
    mut fin: Finish,
    down: Arc<AtomicU64>,
    mut parts: Parts,
    mut body: Incoming,
) -> Response<Body> {
    // A transfer coding other than chunked (`gzip, chunked`) is not undone by the client
    // library: the body would be masked as if it were the content.
    let transfer_coded = transfer_codings(&parts.headers);
    super::inject::strip_hop_by_hop(&mut parts.headers);
    let no_body = matches!(parts.status.as_u16(), 204 | 304) || parts.status.is_informational();
    let header = |h: header::HeaderName| parts.headers.get(h).and_then(|v| v.to_str().ok());
    let kind = mask::body_kind(header(header::CONTENT_TYPE));
    let effects = match masking {
        Some(e) if !no_body => e,
        _ => {
            fin.rec = Some(rec);
            let body = counted(body, down, ctx.bytes_down.clone(), Some(fin));
            return Response::from_parts(parts, body);
        }
    };
    if let Err(e) = mask::partial(parts.status) {
        return withheld(ctx, rec, fin, e.to_string());
    }
    if let Some(te) = transfer_coded {
        return withheld(ctx, rec, fin, MaskError::Compressed(te).to_string());
    }
    let coding = match inflate::coding(content_encoding(&parts.headers).as_deref()) {
        Ok(c) => c,
        Err(e) => return withheld(ctx, rec, fin, e.to_string()),
    };
    let cs = match charset::declared(header(header::CONTENT_TYPE)) {
        Ok(c) => c,
        Err(e) => return withheld(ctx, rec, fin, e.to_string()),
    };
    let limit = ctx.svc.max_mask_bytes();
    let mut inflater = Inflater::new(coding);
    if let Some(records) = kind.records() {
        let masker = match global().masker(&ctx.service, &ctx.svc, effects.mask) {
            Ok(m) => m,
            Err(e) => return withheld(ctx, rec, fin, e),
        };
        // The length changes with the masking: HTTP/1.1 sends the stream chunked.
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::CONTENT_ENCODING);
        fin.rec = Some(rec);
        let body = MaskedRecords {
            rest: counted(body, down, ctx.bytes_down.clone(), None),
            inflater,
            records: RecordMasker::new(records, limit),
            masker,
            fields: effects.mask_fields.clone(),
            fin,
            ended: false,
            cut: None,
            yielded: false,
        };
        return Response::from_parts(parts, BodyExt::boxed(body));
    }
    // The raw bytes read so far and what they decode to, held from the daemon's budget
    // (`held` counts all that is buffered at once).
    let (mut raw, mut text) = (Vec::new(), Vec::new());
    let mut held = budget::MASKING.reserve();
    let mut kind = kind;
    if kind == BodyKind::Unknown {
        // The first bytes (decoded) say whether it is text: binary is passed on untouched.
        while text.is_empty() {
            let d = match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => break, // trailers: the data has ended
                },
                Some(Err(e)) => {
                    return withheld(ctx, rec, fin, format!("reading the upstream response: {e}"))
                }
                None => break,
            };
            match decode(&mut inflater, &d, limit) {
                Ok(t) => text.extend_from_slice(&t),
                Err(e) => return withheld(ctx, rec, fin, e.to_string()),
            }
            raw.extend_from_slice(&d);
            if let Err(e) = held.hold((raw.len() + text.len()) as u64) {
                return busy(ctx, rec, fin, e);
            }
        }
        if let Err(e) = charset::byte_order_mark(&text) {
            return withheld(ctx, rec, fin, e.to_string());
        }
        if text.is_empty() {
            kind = BodyKind::Text;
        } else if cs.looks_binary(&text) {
            fin.rec = Some(rec);
            let body = Prepend {
                first: Some(raw.into()),
                rest: body,
            };
            let body = counted(body, down, ctx.bytes_down.clone(), Some(fin));
            return Response::from_parts(parts, body);
        }
    }
    let mut rest = Vec::new();
    loop {
        let d = match body.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue, // trailers are not passed on from a masked body
            },
            Some(Err(e)) => {
                return withheld(ctx, rec, fin, format!("reading the upstream response: {e}"))
            }
            None => break,
        };
        if (raw.len() + rest.len() + d.len()) as u64 > limit {
            return withheld(ctx, rec, fin, MaskError::TooLarge(limit).to_string());
        }
        if let Err(e) = held.hold((raw.len() + text.len() + rest.len() + d.len()) as u64) {
            return busy(ctx, rec, fin, e);
        }
        rest.extend_from_slice(&d);
    }
    let rest = Bytes::from(rest);
    let n = (raw.len() + rest.len()) as u64;
    down.fetch_add(n, Relaxed);
    ctx.bytes_down.fetch_add(n, Relaxed);
    let bytes: Bytes = match inflater.as_mut() {
        None if raw.is_empty() => rest,
        None => [&raw[..], &rest[..]].concat().into(),
        Some(i) => {
            let budget = |t: &[u8]| limit.saturating_sub(t.len() as u64);
            let last = i
                .push(&rest, budget(&text))
                .and_then(|t| {
                    text.extend_from_slice(&t);
                    i.finish(budget(&text))
                })
                .map(|t| text.extend_from_slice(&t));
            if let Err(e) = last {
                return withheld(ctx, rec, fin, e.to_string());
            }
            if let Err(e) = held.hold((raw.len() + rest.len() + text.len()) as u64) {
                return busy(ctx, rec, fin, e);
            }
            raw.extend_from_slice(&rest);
            text.into()
        }
    };
    if let Err(e) = charset::byte_order_mark(&bytes) {
        return withheld(ctx, rec, fin, e.to_string());
    }
    let masked = global()
        .masker(&ctx.service, &ctx.svc, effects.mask)
        .and_then(|m| {
            cs.mask(&bytes, |b| {
                mask::mask_body(&m, &effects.mask_fields, kind, b)
            })
            .map_err(|e| e.to_string())
        });
    match masked {
        Ok((new, n, relabel)) => {
            rec.fields_masked = n;
            if relabel {
                // The masked text has characters the declared charset lacks: sent as UTF-8.
                let ct = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                if let Some(v) =
                    ct.and_then(|c| HeaderValue::from_str(&charset::utf8_content_type(c)).ok())
                {
                    parts.headers.insert(header::CONTENT_TYPE, v);
                }
            }
            let bytes = match new {
                // Decoded and changed: sent on uncompressed.
                Some(b) => {
                    parts.headers.remove(header::CONTENT_ENCODING);
                    b
                }
                // Unchanged: as it came, compressed or not.
                None if coding != Coding::Identity => raw.into(),
                None => bytes,
            };
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            fin.rec = Some(rec);
            drop(fin);
            // What is kept until the agent has read it.
            held.shrink_to(bytes.len() as u64);
            Response::from_parts(parts, keeping(full(bytes), held))
        }
        Err(e) => withheld(ctx, rec, fin, e),
    }
}

/// 503 for a response that does not fit in the daemon's masking memory now.
fn busy(ctx: &Ctx, rec: HttpRecord, fin: Finish, e: budget::Full) -> Response<Body> {
    let why = e.to_string();
    tracing::warn!(session = %ctx.session, service = %ctx.service, error = %why, "response withheld");
    fail(
        rec,
        fin,
        StatusCode::SERVICE_UNAVAILABLE,
        "response withheld: the interceptor's masking memory is full",
        why,
        true,
    )
}

/// Every `Content-Encoding` line, joined with ", " (a second line is as much a coding as
/// the first); a value that is not text stays in (lossily), so it is never taken for
/// identity.
pub(super) fn content_encoding(headers: &http::HeaderMap) -> Option<String> {
    let all: Vec<_> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!all.is_empty()).then(|| all.join(", "))
}

/// The transfer codings other than `chunked`, if any (`Transfer-Encoding: gzip, chunked`).
fn transfer_codings(headers: &http::HeaderMap) -> Option<String> {
    let other: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "chunked")
                .collect::<Vec<_>>()
        })
        .collect();
    (!other.is_empty()).then(|| other.join(", "))
}

/// The decoded bytes of `d`: itself when the body is not compressed.
fn decode(inflater: &mut Option<Inflater>, d: &Bytes, budget: u64) -> Result<Bytes, MaskError> {
    match inflater {
        None => Ok(d.clone()),
        Some(i) => i.push(d, budget).map(Bytes::from),
    }
}

/// 502 for a response that must be masked and cannot be.
fn withheld(ctx: &Ctx, rec: HttpRecord, fin: Finish, why: String) -> Response<Body> {
    tracing::warn!(session = %ctx.session, service = %ctx.service, error = %why, "response withheld");
    fail(
        rec,
        fin,
        StatusCode::BAD_GATEWAY,
        "response withheld: it cannot be masked",
        why,
        true,
    )
}

/// A response body masked record by record as it streams. A record that cannot be masked
/// (too long, a JSON line that does not parse) ends the stream with an error: the agent
/// sees a broken transfer, never the record.
struct MaskedRecords {
    /// The upstream body, counted as it is read.
    rest: Body,
    /// Decodes a compressed stream before it is cut into records.
    inflater: Option<Inflater>,
    records: RecordMasker,
    masker: Arc<Masker>,
    fields: Vec<FieldRule>,
    /// Holds the request's record: its masked-field count grows with the stream.
    fin: Finish,
    ended: bool,
    /// The error to end with, once the records before it are handed on.
    cut: Option<BoxError>,
    /// Whether hyper was given its one chance to flush before `cut` is returned.
    yielded: bool,
}

impl hyper::body::Body for MaskedRecords {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.cut.is_some() {
                // hyper drops what it has not written yet when a body fails: yield once so
                // it flushes the records handed on before the cut.
                if !std::mem::replace(&mut this.yielded, true) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Poll::Ready(this.cut.take().map(Err));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let budget = this.records.max_record();
            let masked = match std::task::ready!(Pin::new(&mut this.rest).poll_frame(cx)) {
                // Trailers are not passed on from a masked body.
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => match decode(&mut this.inflater, &d, budget) {
                        Ok(d) => this.records.push(&this.masker, &this.fields, &d),
                        Err(e) => failed(e),
                    },
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    this.ended = true;
                    this.cut = Some(e);
                    continue;
                }
                None => {
                    this.ended = true;
                    let last = match this.inflater.as_mut().map(|i| i.finish(budget)) {
                        Some(Err(e)) => failed(e),
                        Some(Ok(d)) => this.records.push(&this.masker, &this.fields, &d),
                        None => Masked::default(),
                    };
                    match last.error {
                        Some(_) => last,
                        None => last.then(this.records.finish(&this.masker, &this.fields)),
                    }
                }
            };
            if let Some(rec) = this.fin.rec.as_mut() {
                rec.fields_masked += masked.fields;
            }
            if let Some(e) = masked.error {
                this.ended = true;
                let why = format!("stream cut: {e}");
                let ctx = &this.fin.ctx;
                tracing::warn!(session = %ctx.session, service = %ctx.service, error = %why, "masked response stream cut");
                if let Some(rec) = this.fin.rec.as_mut() {
                    rec.error = Some(why);
                }
                this.cut = Some(e.into());
            }
            if !masked.out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(masked.out.into()))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.cut.is_none()
    }
}

fn failed(e: MaskError) -> Masked {
    Masked {
        error: Some(e),
        ..Masked::default()
    }
}

/// A body whose first data frames were already read.
struct Prepend {
    first: Option<Bytes>,
    rest: Incoming,
}

impl hyper::body::Body for Prepend {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.first.take() {
            Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let n = self.first.as_ref().map_or(0, |d| d.len() as u64);
        let r = self.rest.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(r.lower() + n);
        if let Some(u) = r.upper() {
            h.set_upper(u + n);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_content_encoding_line_counts() {
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_ENCODING, "identity".parse().unwrap());
        h.append(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let coding = |h: &http::HeaderMap| inflate::coding(content_encoding(h).as_deref());
        assert_eq!(coding(&h), Ok(Coding::Gzip));
        h.append(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert!(matches!(coding(&h), Err(MaskError::Compressed(_))));
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_ENCODING, "gzip, gzip".parse().unwrap());
        assert!(matches!(coding(&h), Err(MaskError::Compressed(_))));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_bytes(b"gz\xffip").unwrap(),
        );
        assert!(coding(&h).is_err(), "not text: not identity either");
        assert_eq!(coding(&http::HeaderMap::new()), Ok(Coding::Identity));
    }
}
