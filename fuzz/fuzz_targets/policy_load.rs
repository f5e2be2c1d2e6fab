//! The policy loader: YAML parsing with `deny_unknown_fields`, validation, compilation and
//! the error messages with file:line:col (`Policy::from_str`; DNS names stay unresolved).
#![no_main]

use interceptor::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::from_str(text, "fuzz.yaml") {
        Ok(p) => {
            let _ = p.summary();
            let _ = p.rule_names();
            let _ = p.sql_rule_names();
            let _ = p.host_names();
            let _ = p.default_verdict();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
