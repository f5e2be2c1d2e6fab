//! Masking JSON text keeps every byte it does not mask: numbers as written, key order,
//! whitespace, escapes, duplicate keys. Each case runs against `mask_json_text` and against
//! the former `Value`-based masking (`value_oracle::old_mask`), which must fail the cases
//! marked `fidelity`; random documents compare the two as parsed values.

use serde_json::Value;

use super::value_oracle::old_mask;
use super::*;

type Out = Result<Option<(Vec<u8>, usize)>, String>;

fn new_mask(m: &Masker, text: &[u8], rules: &[FieldRule]) -> Out {
    m.mask_json_text(text, rules).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Nothing masked: the text goes on as it came.
    Unchanged,
    /// The whole new text and the count.
    Masked(&'static str, usize),
    /// Not JSON that can be masked.
    Refused,
}

struct Case {
    name: &'static str,
    input: &'static str,
    want: Want,
    /// The former masking gets it wrong.
    fidelity: bool,
}

const fn case(name: &'static str, input: &'static str, want: Want, fidelity: bool) -> Case {
    Case {
        name,
        input,
        want,
        fidelity,
    }
}

const CASES: &[Case] = &[
    case(
        "big integer",
        r#"{"id":12345678901234567890123,"m":"a@b.example"}"#,
        Want::Masked(
            r#"{"id":12345678901234567890123,"m":"[REDACTED:email]"}"#,
            1,
        ),
        true,
    ),
    case(
        "beyond u64 and i64",
        r#"[18446744073709551616,-9223372036854775809,"a@b.example"]"#,
        Want::Masked(
            r#"[18446744073709551616,-9223372036854775809,"[REDACTED:email]"]"#,
            1,
        ),
        true,
    ),
    case(
        "long decimal",
        r#"{"x":0.1000000000000000055,"m":"a@b.example"}"#,
        Want::Masked(r#"{"x":0.1000000000000000055,"m":"[REDACTED:email]"}"#, 1),
        true,
    ),
    case(
        "exponents and trailing zeros",
        r#"{"e":1e2,"E":-2.5E-3,"f":1.50,"g":1.0,"m":"a@b.example"}"#,
        Want::Masked(
            r#"{"e":1e2,"E":-2.5E-3,"f":1.50,"g":1.0,"m":"[REDACTED:email]"}"#,
            1,
        ),
        true,
    ),
    case(
        "minus zero",
        r#"{"m":"a@b.example","z":-0}"#,
        Want::Masked(r#"{"m":"[REDACTED:email]","z":-0}"#, 1),
        true,
    ),
    case(
        "key order",
        r#"{"zeta":1,"alpha":"a@b.example","mid":[3,2,1]}"#,
        Want::Masked(r#"{"zeta":1,"alpha":"[REDACTED:email]","mid":[3,2,1]}"#, 1),
        true,
    ),
    case(
        "whitespace and newlines",
        "\n{\n  \"b\" : [ 1 ,\t2 ],\r\n  \"a\": \"a@b.example\"\n}\n",
        Want::Masked(
            "\n{\n  \"b\" : [ 1 ,\t2 ],\r\n  \"a\": \"[REDACTED:email]\"\n}\n",
            1,
        ),
        true,
    ),
    case(
        "duplicate keys, both masked",
        r#"{"n":"a@b.example","n":"c@d.example"}"#,
        Want::Masked(r#"{"n":"[REDACTED:email]","n":"[REDACTED:email]"}"#, 2),
        true,
    ),
    case(
        "duplicate keys, the first one masked",
        r#"{"n":"call a@b.example","n":"clean","x":{"k":"c@d.example","k":2}}"#,
        Want::Masked(
            r#"{"n":"call [REDACTED:email]","n":"clean","x":{"k":"[REDACTED:email]","k":2}}"#,
            2,
        ),
        true,
    ),
    case(
        "duplicate keys, nothing to mask",
        r#"{"a":1,"a":2}"#,
        Want::Unchanged,
        true,
    ),
    case(
        "escapes kept where nothing is masked",
        r#"{"q":"say \"hi\" \\ caf\u00e9 \ud83d\ude00 \/","m":"a@b.example"}"#,
        Want::Masked(
            r#"{"q":"say \"hi\" \\ caf\u00e9 \ud83d\ude00 \/","m":"[REDACTED:email]"}"#,
            1,
        ),
        true,
    ),
    case(
        "escapes decoded for the detectors",
        r#"{"m":"a\u0040b.example caf\u00e9 \ud83d\ude00 \"x\""}"#,
        Want::Masked(
            "{\"m\":\"[REDACTED:email] caf\u{e9} \u{1f600} \\\"x\\\"\"}",
            1,
        ),
        false,
    ),
    case(
        "keys the detectors mask, in place and never merged",
        r#"{"z":1,"a@b.example":{"c@d.example":2},"[REDACTED:email]":3}"#,
        Want::Masked(
            r#"{"z":1,"[REDACTED:email]#2":{"[REDACTED:email]":2},"[REDACTED:email]":3}"#,
            2,
        ),
        true,
    ),
    case(
        "an escaped key meets a masked one",
        r#"{"b@c.example":1,"\u005bREDACTED:email]":2,"a@c.example":3}"#,
        Want::Masked(
            r#"{"[REDACTED:email]#3":1,"\u005bREDACTED:email]":2,"[REDACTED:email]#2":3}"#,
            2,
        ),
        true,
    ),
    case(
        "nothing to mask",
        " [ {\"a\" : 1e5 , \"b\":[true,false,null, -0.0 ,\"x\\ty\"]} ] ",
        Want::Unchanged,
        false,
    ),
    case("an empty object", "{}", Want::Unchanged, false),
    case(
        "a number too large for f64",
        r#"[1e400,"a@b.example"]"#,
        Want::Masked(r#"[1e400,"[REDACTED:email]"]"#, 1),
        true,
    ),
    case("truncated", r#"{"a":"#, Want::Refused, false),
    case("truncated string", r#"["a@b.exa"#, Want::Refused, false),
    case("trailing comma", r#"{"a":1,}"#, Want::Refused, false),
    case("missing comma", "[1 2]", Want::Refused, false),
    case("trailing characters", r#"{"a":1} x"#, Want::Refused, false),
    case("bare word", "nul", Want::Refused, false),
    case("leading zero", "[01]", Want::Refused, false),
    case("lone surrogate", r#"["\ud800"]"#, Want::Refused, false),
    case(
        "lone trailing surrogate",
        r#"["\udc00"]"#,
        Want::Refused,
        false,
    ),
    case("control character", "[\"a\tb\"]", Want::Refused, false),
    case("bad escape", r#"["\x"]"#, Want::Refused, false),
    case("key not a string", "{a:1}", Want::Refused, false),
    case("empty", "  ", Want::Refused, false),
    case("a comment", "[1] // no", Want::Refused, false),
];

fn detectors() -> Masker {
    masker("detectors: [{kind: all, strategy: redact}]")
}

fn check(f: fn(&Masker, &[u8], &[FieldRule]) -> Out, c: &Case) -> Result<(), String> {
    let got = f(&detectors(), c.input.as_bytes(), &[]);
    let ok = match (c.want, &got) {
        (Want::Unchanged, Ok(None)) | (Want::Refused, Err(_)) => true,
        (Want::Masked(text, n), Ok(Some((out, k)))) => out == text.as_bytes() && *k == n,
        _ => false,
    };
    let shown = got.map(|o| o.map(|(out, n)| (String::from_utf8_lossy(&out).into_owned(), n)));
    ok.then_some(())
        .ok_or_else(|| format!("{}: {:?} wanted, got {shown:?}", c.name, c.want))
}

#[test]
fn text_masking_keeps_what_it_does_not_mask() {
    let failed: Vec<String> = CASES
        .iter()
        .filter_map(|c| check(new_mask, c).err())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn the_former_masking_fails_the_fidelity_cases() {
    for c in CASES {
        let old = check(old_mask, c);
        assert_eq!(old.is_err(), c.fidelity, "{}: {old:?}", c.name);
    }
}

#[test]
fn field_rules_on_strings_numbers_arrays_and_objects() {
    let m = detectors();
    let rules = [
        FieldRule::new("$.a[*].card", Strategy::PARTIAL).unwrap(),
        FieldRule::new("$..obj", Strategy::Redact).unwrap(),
        FieldRule::new("$.num", Strategy::Hash).unwrap(),
        FieldRule::new("$.big", Strategy::Partial { keep_last: 2 }).unwrap(),
        FieldRule::new("$.arr", Strategy::Hash).unwrap(),
        FieldRule::new("$.q", Strategy::Partial { keep_last: 3 }).unwrap(),
        FieldRule::new("$.t", Strategy::Redact).unwrap(),
        FieldRule::new("$.nothing", Strategy::Redact).unwrap(),
        FieldRule::new("$.list[1]", Strategy::Redact).unwrap(),
    ];
    let input = concat!(
        r#"{"num": 42, "a": [{"card": "4111 1111 1111 1111", "k": 1.50}, "#,
        r#"{"card": 12345678901234567890123}], "obj": {"x": [1, "a@b.example"]}, "#,
        r#""deep": [{"obj": [1]}], "t": true, "big": 1.50, "arr": [3, {"b": 1, "a": 2}], "#,
        r#""q": "ab\"c\n", "nothing": null, "list": [0, {"z": 1}, 2e0]}"#
    );
    let hash = |prefix: &str, text: &str| {
        let mut out = Vec::new();
        replace::push_hash(&mut out, &m.mac, prefix, text.as_bytes());
        String::from_utf8(out).unwrap()
    };
    let want = format!(
        concat!(
            r#"{{"num": "{}", "a": [{{"card": "****1111", "k": 1.50}}, "#,
            r#"{{"card": "****0123"}}], "obj": "[REDACTED]", "#,
            r#""deep": [{{"obj": "[REDACTED]"}}], "t": "[REDACTED]", "big": "****50", "arr": "{}", "#,
            r#""q": "****\"c\n", "nothing": null, "list": [0, "[REDACTED]", 2e0]}}"#
        ),
        hash("num", "42"),
        // The hash of an object or array is that of its compact form, keys sorted.
        hash("arr", r#"[3,{"a":2,"b":1}]"#),
    );
    let (out, n) = m.mask_json_text(input.as_bytes(), &rules).unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&out).unwrap(), want);
    assert_eq!(n, 10);
    // The former masking: the same values where the text of a number did not matter.
    let (old, k) = old_mask(&m, input.as_bytes(), &rules).unwrap().unwrap();
    let old: Value = serde_json::from_slice(&old).unwrap();
    assert_eq!(
        (old["num"].clone(), old["arr"].clone(), k),
        (
            hash("num", "42").into(),
            hash("arr", r#"[3,{"a":2,"b":1}]"#).into(),
            10
        )
    );
    assert_eq!(old["a"][1]["card"], "****e+22", "through f64");
    assert_eq!(old["big"], "****.5", "through f64");
}

#[test]
fn nesting_is_limited_as_serde_json_limits_it() {
    let m = detectors();
    let nested = |d: usize| format!("{}\"a@b.example\"{}", "[".repeat(d), "]".repeat(d));
    let deepest = nested(MAX_JSON_DEPTH);
    let (out, n) = m.mask_json_text(deepest.as_bytes(), &[]).unwrap().unwrap();
    assert_eq!(
        (out, n),
        (
            nested(MAX_JSON_DEPTH)
                .replace("a@b.example", "[REDACTED:email]")
                .into_bytes(),
            1
        )
    );
    assert!(serde_json::from_str::<Value>(&deepest).is_ok());
    let too_deep = nested(MAX_JSON_DEPTH + 1);
    assert_eq!(
        m.mask_json_text(too_deep.as_bytes(), &[]),
        Err(JsonTextError::TooDeep {
            line: 1,
            column: MAX_JSON_DEPTH + 1
        })
    );
    assert!(serde_json::from_str::<Value>(&too_deep).is_err());
    // A bomb: refused, no stack overflow.
    let bomb = "{\"a\":[".repeat(100_000);
    assert!(matches!(
        m.mask_json_text(bomb.as_bytes(), &[]),
        Err(JsonTextError::TooDeep { .. })
    ));
    assert!(check_json(bomb.as_bytes()).is_err());
    // Under a field rule too: the replaced value is still checked.
    let rules = [FieldRule::new("$.a", Strategy::Redact).unwrap()];
    assert!(m.mask_json_text(bomb.as_bytes(), &rules).is_err());
}

#[test]
fn errors_say_where() {
    let m = detectors();
    let err = |t: &[u8]| m.mask_json_text(t, &[]).unwrap_err().to_string();
    assert_eq!(err(b"nope"), "expected ident at line 1 column 2");
    assert_eq!(
        err(b"{\"a\":1,\n \"b\" 2}"),
        "expected `:` at line 2 column 6"
    );
    assert_eq!(
        err(b"[\"\xff\"]"),
        "invalid unicode code point at line 1 column 3"
    );
}

/// xorshift64: random documents without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// Random JSON text: `strings`, `keys` and `numbers` are the leaves (as JSON text), keys
/// distinct within an object unless `dups`, whitespace anywhere.
struct Gen<'a> {
    rng: Rng,
    strings: &'a [&'a str],
    keys: &'a [&'a str],
    numbers: &'a [&'a str],
    dups: bool,
}

impl Gen<'_> {
    fn ws(&mut self, out: &mut String) {
        out.push_str(self.rng.pick(&["", "", "", " ", "\n  ", "\t", "\r\n"]));
    }

    fn value(&mut self, depth: usize, out: &mut String) {
        self.ws(out);
        let leaf = depth >= 4 || self.rng.below(3) > 0;
        match self.rng.below(if leaf { 5 } else { 7 }) {
            0 | 1 => out.push_str(self.rng.pick(self.strings)),
            2 => out.push_str(self.rng.pick(self.numbers)),
            3 => out.push_str(self.rng.pick(&["true", "false", "null"])),
            4 => out.push_str(self.rng.pick(&["[]", "{}", "[ ]"])),
            5 => {
                out.push('[');
                for i in 0..self.rng.below(4) {
                    if i > 0 {
                        out.push(',');
                    }
                    self.value(depth + 1, out);
                }
                self.ws(out);
                out.push(']');
            }
            _ => {
                out.push('{');
                let mut used = Vec::new();
                for _ in 0..self.rng.below(5) {
                    let k = self.rng.pick(self.keys);
                    if used.contains(&k) && !self.dups {
                        continue;
                    }
                    if !used.is_empty() {
                        out.push(',');
                    }
                    used.push(k);
                    self.ws(out);
                    out.push_str(k);
                    self.ws(out);
                    out.push(':');
                    self.value(depth + 1, out);
                }
                self.ws(out);
                out.push('}');
            }
        }
        self.ws(out);
    }

    fn document(&mut self) -> String {
        let mut out = String::new();
        while !out.trim_start().starts_with(['[', '{']) {
            out.clear();
            self.value(0, &mut out);
        }
        out
    }
}

#[test]
fn random_documents_with_nothing_to_mask_come_back_as_they_came() {
    let m = detectors();
    let rules = [FieldRule::new("$..never", Strategy::Redact).unwrap()];
    let mut g = Gen {
        rng: Rng(0x9E37_79B9_7F4A_7C15),
        strings: &[
            r#""""#,
            r#""plain""#,
            r#""caf\u00e9""#,
            r#""a\"b\\c\/""#,
            r#""\ud83d\ude00 x""#,
            "\"é ü\"",
        ],
        keys: &[
            r#""a""#,
            r#""b""#,
            r#""\u0061""#,
            r#""key with space""#,
            r#""ü""#,
        ],
        numbers: &[
            "0",
            "-0",
            "1e2",
            "1.50",
            "0.1000000000000000055",
            "12345678901234567890123",
            "-2.5E-3",
            "1E+400",
        ],
        dups: true,
    };
    for i in 0..2000 {
        let doc = g.document();
        assert_eq!(
            m.mask_json_text(doc.as_bytes(), &rules),
            Ok(None),
            "#{i}: {doc}"
        );
    }
}

#[test]
fn random_documents_mask_as_the_former_masking_did() {
    let m = masker(
        "detectors: [{kind: all, strategy: redact}, {kind: email, strategy: partial}, {kind: phone, strategy: hash}]",
    );
    let rules = [
        FieldRule::new("$..ssn", Strategy::Redact).unwrap(),
        FieldRule::new("$.users[*].email", Strategy::Hash).unwrap(),
        FieldRule::new("$..card", Strategy::PARTIAL).unwrap(),
        FieldRule::new("$.list[1]", Strategy::Redact).unwrap(),
        FieldRule::new("$..obj", Strategy::Hash).unwrap(),
        FieldRule::new("$..[2]", Strategy::Partial { keep_last: 2 }).unwrap(),
    ];
    let mut g = Gen {
        rng: Rng(0x2545_F491_4F6C_DD1D),
        strings: &[
            r#""plain""#,
            r#""a@b.example""#,
            r#""mail a\u0040b.example now""#,
            r#""call 555-201-3344""#,
            r#""123-45-6789""#,
            r#""4111 1111 1111 1111""#,
            r#""caf\u00e9 \"q\"""#,
            r#""[REDACTED:email]""#,
        ],
        keys: &[
            r#""ssn""#,
            r#""SSN""#,
            r#""email""#,
            r#""users""#,
            r#""card""#,
            r#""list""#,
            r#""obj""#,
            r#""n""#,
            r#""a@b.example""#,
            r#""c@d.example""#,
            r#""a***@b.example""#,
            r#""[REDACTED:email]""#,
        ],
        numbers: &[
            "0",
            "-7",
            "42",
            "9007199254740991",
            "-9223372036854775808",
            "18446744073709551615",
            "2.5",
            "-0.125",
        ],
        dups: false,
    };
    let mut masked = 0;
    for i in 0..3000 {
        let doc = g.document();
        let new = new_mask(&m, doc.as_bytes(), &rules);
        let old = old_mask(&m, doc.as_bytes(), &rules);
        match (new, old) {
            (Ok(None), Ok(None)) => {}
            (Ok(Some((out, n))), Ok(Some((was, k)))) => {
                let out: Value =
                    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("#{i}: {e}: {doc}"));
                let was: Value = serde_json::from_slice(&was).unwrap();
                assert_eq!((out, n), (was, k), "#{i}: {doc}");
                masked += 1;
            }
            (new, old) => panic!("#{i}: {doc}\nnew {new:?}\nold {old:?}"),
        }
    }
    assert!(
        masked > 400,
        "only {masked} documents had something to mask"
    );
}

#[test]
fn many_keys_masked_to_one_text_get_distinct_names() {
    let m = detectors();
    let n = 20_000;
    let keys: Vec<String> = (0..n)
        .map(|i| format!("\"u{i:05}@x.example\":{i}"))
        .collect();
    let doc = format!("{{\"[REDACTED:email]#3\":0,{}}}", keys.join(","));
    let (out, count) = m.mask_json_text(doc.as_bytes(), &[]).unwrap().unwrap();
    assert_eq!(count, n);
    let v: serde_json::Map<String, Value> = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.len(), n + 1, "no two members merged");
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with(
        "{\"[REDACTED:email]#3\":0,\"[REDACTED:email]\":0,\"[REDACTED:email]#2\":1,\"[REDACTED:email]#4\":2,"
    ));
    assert!(text.ends_with(&format!("\"[REDACTED:email]#{}\":{}}}", n + 1, n - 1)));
}
