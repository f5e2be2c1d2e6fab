//! PostgreSQL backend decoding, as the proxy reads a server: tagged frames and the typed
//! views of RowDescription, DataRow, ErrorResponse/NoticeResponse, ParameterStatus,
//! BackendKeyData and CommandComplete; DataRows after a RowDescription go through result
//! masking (`mask::plan` + `mask::rewrite_row`) like in a session with `masking:`.
#![no_main]

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use interceptor::masking::{Masker, MaskingDoc};
use interceptor::protocols::postgres::backend::{self, Field};
use interceptor::protocols::postgres::codec::{FrameReader, DEFAULT_MAX_FRAME};
use interceptor::protocols::postgres::mask::{self, Catalog};
use libfuzzer_sys::fuzz_target;

fn now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory reader returned Pending"),
    }
}

const MASKING: &str = r#"
columns:
  - match: "*ssn*"
    strategy: redact
  - match: "*phone*"
    strategy: partial
    keep_last: 2
  - match: "*mail*"
    strategy: hash
detectors:
  - kind: all
    strategy: partial
"#;

fn masker() -> &'static Masker {
    static M: OnceLock<Masker> = OnceLock::new();
    M.get_or_init(|| {
        let doc: MaskingDoc = serde_yaml::from_str(MASKING).expect("masking doc");
        Masker::new(&doc, vec![7u8; 32]).expect("masker")
    })
}

fuzz_target!(|data: &[u8]| {
    let masker = masker();
    let catalog = Catalog::default();
    let mut fields: Option<Vec<Field>> = None;
    let mut r = FrameReader::new(data, DEFAULT_MAX_FRAME, "upstream");
    while let Ok(Some(frame)) = now(r.next()) {
        let body = &frame.body[..];
        match frame.tag {
            backend::ROW_DESCRIPTION => {
                if let Ok(f) = backend::row_description(body) {
                    if f.len() <= i16::MAX as usize {
                        let again = backend::encode_row_description(&f);
                        assert_eq!(backend::row_description(&again.body).unwrap(), f);
                    }
                    fields = Some(f);
                }
            }
            backend::DATA_ROW => {
                let Ok(values) = backend::data_row(body) else {
                    continue;
                };
                let Some(f) = &fields else { continue };
                let plan = mask::plan(masker, f, &[], &catalog);
                let mut out = BytesMut::new();
                if mask::rewrite_row(masker, &plan, body, &mut out).is_ok() {
                    // The rewritten row is one well-formed DataRow with as many values.
                    let mut rr = FrameReader::new(&out[..], DEFAULT_MAX_FRAME, "proxy");
                    let row = now(rr.next()).unwrap().unwrap();
                    assert_eq!(row.tag, backend::DATA_ROW);
                    let masked = backend::data_row(&row.body).unwrap();
                    assert_eq!(masked.len(), values.len());
                    assert!(now(rr.next()).unwrap().is_none());
                }
            }
            backend::ERROR | backend::NOTICE => {
                if let Ok(fs) = backend::fields(body) {
                    let _ = backend::field(&fs, b'M');
                }
            }
            backend::PARAMETER_STATUS => {
                let _ = backend::parse_parameter_status(body);
            }
            backend::BACKEND_KEY => {
                let _ = backend::parse_backend_key(body);
            }
            backend::COMMAND_COMPLETE => {
                let _ = backend::command_tag(body);
            }
            _ => {}
        }
    }
});
