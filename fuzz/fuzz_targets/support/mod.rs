//! What the HTTP masking targets share: a masker with every detector (redact) and the
//! given field rules, made once per process.

use interceptor::masking::{FieldRule, Masker, MaskingDoc, Strategy};

pub fn masker_with(fields: &[(&str, Strategy)]) -> (Masker, Vec<FieldRule>) {
    let doc: MaskingDoc =
        serde_yaml::from_str("detectors:\n  - kind: all\n    strategy: redact\n").expect("doc");
    let fields = fields
        .iter()
        .map(|(path, s)| FieldRule::new(path, *s).expect("path"))
        .collect();
    (Masker::new(&doc, vec![7u8; 32]).expect("masker"), fields)
}
