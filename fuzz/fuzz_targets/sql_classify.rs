//! The SQL classifier (`sql::classify_with`, both settings of
//! `standard_conforming_strings`) and the classification cache's shape lexer: when the
//! proxy would use the classification of a text's literal shape instead of the text's own
//! (`literal_shape` gives a different text whose classification is one statement), both
//! must agree on everything a policy looks at.
#![no_main]

use std::borrow::Cow;

use interceptor::protocols::postgres::shape::literal_shape;
use interceptor::sql::{classify_with, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let on = ParseOptions {
        standard_conforming_strings: true,
    };
    let off = ParseOptions {
        standard_conforming_strings: false,
    };
    let own = classify_with(sql, on);
    if let Ok(c) = &own {
        let _ = c.summary();
    }
    let _ = classify_with(sql, off);

    if let Some(Cow::Owned(shape)) = literal_shape(sql) {
        let Ok(shaped) = classify_with(&shape, on) else {
            return;
        };
        if shaped.statements.len() != 1 {
            return;
        }
        let own = match own {
            Ok(c) => c,
            Err(e) => panic!("shape {shape:?} classifies but the text does not: {e}"),
        };
        assert_eq!(own.statements.len(), 1, "shape {shape:?}");
        let (a, b) = (&own.statements[0], &shaped.statements[0]);
        assert_eq!(a.kind, b.kind, "shape {shape:?}");
        assert_eq!(a.operations, b.operations, "shape {shape:?}");
        assert_eq!(a.tables_read, b.tables_read, "shape {shape:?}");
        assert_eq!(a.tables_written, b.tables_written, "shape {shape:?}");
        assert_eq!(a.functions, b.functions, "shape {shape:?}");
        assert_eq!(a.prepared_name, b.prepared_name, "shape {shape:?}");
    }
});
