//! Engine tests of `Masker`: policy parsing, strategies, column plans, JSON (values, and the
//! fidelity of the text masking against the former `Value`-based one), realistic rows and a
//! micro-benchmark.

use super::*;

const KEY: &[u8] = b"test-key-0123456789abcdef";

fn doc(yaml: &str) -> MaskingDoc {
    serde_yaml::from_str(yaml).unwrap()
}

fn masker(yaml: &str) -> Masker {
    Masker::new(&doc(yaml), KEY.to_vec()).unwrap()
}

fn text(m: &Masker, t: &str) -> String {
    m.mask_text(t).map_or_else(|| t.to_owned(), |(s, _)| s)
}

fn cols<'a>(spec: &[(Option<&'a str>, &'a str, bool)]) -> Vec<ColumnRef<'a>> {
    spec.iter()
        .map(|&(table, name, text_like)| ColumnRef {
            table,
            name,
            text_like,
            origins: &[],
            table_unknown: false,
        })
        .collect()
}

mod bench;
mod column_plans;
mod customers;
mod detectors;
mod json_fidelity;
mod json_values;
mod policy;
mod realistic;
mod value_oracle;
