//! The response side of an allowed request: passed on as it streams, or — when the rule
//! masks — buffered (bounded), masked with `mask.rs` and sent with a fixed length. Streams
//! of records (server-sent events, JSON lines) are masked record by record as they arrive
//! (`records.rs`) and stay streams. A body whose type does not say what it is gets its
//! first bytes looked at: binary is passed on, text is masked (as JSON when it parses).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::response::Parts;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Frame, Incoming, SizeHint};

use super::audit::HttpRecord;
use super::counting::{counted, Finish};
use super::mask::{self, BodyKind};
use super::records::RecordMasker;
use super::respond::{fail, full, Body, BoxError};
use super::{global, Ctx};
use crate::masking::{FieldRule, Masker};
use crate::policy::HttpEffects;

/// The response for the agent: `masking` is the allowing rule's effects when they mask.
pub(super) async fn respond(
    ctx: &Arc<Ctx>,
    masking: Option<&HttpEffects>,
    mut rec: HttpRecord,
    mut fin: Finish,
    down: Arc<AtomicU64>,
    mut parts: Parts,
    mut body: Incoming,
) -> Response<Body> {
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
    if let Err(e) = mask::check_encoding(header(header::CONTENT_ENCODING)) {
        return withheld(ctx, rec, fin, e.to_string());
    }
    if let Some(records) = kind.records() {
        let masker = match global().masker(&ctx.service, &ctx.svc, effects.mask) {
            Ok(m) => m,
            Err(e) => return withheld(ctx, rec, fin, e),
        };
        // The length changes with the masking: HTTP/1.1 sends the stream chunked.
        parts.headers.remove(header::CONTENT_LENGTH);
        fin.rec = Some(rec);
        let body = MaskedRecords {
            rest: counted(body, down, ctx.bytes_down.clone(), None),
            records: RecordMasker::new(records, ctx.svc.max_mask_bytes()),
            masker,
            fields: effects.mask_fields.clone(),
            fin,
            ended: false,
            cut: None,
            yielded: false,
        };
        return Response::from_parts(parts, BodyExt::boxed(body));
    }
    let mut kind = kind;
    let mut first = None;
    if kind == BodyKind::Unknown {
        match body.frame().await {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) if mask::looks_binary(&d) => {
                    fin.rec = Some(rec);
                    let body = Prepend {
                        first: Some(d),
                        rest: body,
                    };
                    let body = counted(body, down, ctx.bytes_down.clone(), Some(fin));
                    return Response::from_parts(parts, body);
                }
                Ok(d) => first = Some(d),
                // Trailers first: there was no data.
                Err(_) => kind = BodyKind::Text,
            },
            Some(Err(e)) => {
                return withheld(ctx, rec, fin, format!("reading the upstream response: {e}"))
            }
            None => kind = BodyKind::Text,
        }
    }
    let limit = ctx.svc.max_mask_bytes();
    let body = Prepend { first, rest: body };
    let bytes = match Limited::new(body, limit as usize).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return withheld(ctx, rec, fin, mask::MaskError::TooLarge(limit).to_string())
        }
        Err(e) => return withheld(ctx, rec, fin, format!("reading the upstream response: {e}")),
    };
    down.fetch_add(bytes.len() as u64, Relaxed);
    ctx.bytes_down.fetch_add(bytes.len() as u64, Relaxed);
    if kind == BodyKind::Unknown {
        kind = mask::sniff(&bytes);
    }
    let masked = global()
        .masker(&ctx.service, &ctx.svc, effects.mask)
        .and_then(|m| {
            mask::mask_body(&m, &effects.mask_fields, kind, &bytes).map_err(|e| e.to_string())
        });
    match masked {
        Ok((new, n)) => {
            let bytes = new.unwrap_or(bytes);
            rec.fields_masked = n;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            fin.rec = Some(rec);
            drop(fin);
            Response::from_parts(parts, full(bytes))
        }
        Err(e) => withheld(ctx, rec, fin, e),
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
            let masked = match std::task::ready!(Pin::new(&mut this.rest).poll_frame(cx)) {
                // Trailers are not passed on from a masked body.
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => this.records.push(&this.masker, &this.fields, &d),
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    this.ended = true;
                    this.cut = Some(e);
                    continue;
                }
                None => {
                    this.ended = true;
                    this.records.finish(&this.masker, &this.fields)
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

/// A body whose first data frame was already read.
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
