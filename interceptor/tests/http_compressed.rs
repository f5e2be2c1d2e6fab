//! Root test: responses a masking rule covers that the upstream compresses although the
//! proxy removed `Accept-Encoding` — decoded, masked and sent on plain (gzip and deflate,
//! whole bodies and streams), passed on as they came when nothing needed masking, and
//! withheld when the coding cannot be decoded. Real curl and httpx under `interceptor run`.

mod http_support;
mod support;

use http_support::*;
use serde_json::Value;
use support::*;

/// httpx reading a gzip event stream (after `PY_RESOLVE` and `PY_SSE`).
const PY_CLIENT: &str = r#"
import json, sys
import httpx
print(json.dumps({"sse": read_sse(httpx.Client(timeout=60), sys.argv[1], "gz", "&gz=1")}))
"#;

#[test]
fn compressed_responses_are_decoded_masked_and_sent_plain() {
    if !root_or_skip("compressed_responses_are_decoded_masked_and_sent_plain") || !python_ok() {
        return;
    }
    let env = Env::new();
    let d = env.dir.path().to_path_buf();
    let up = Upstream::start(&d, "upstream", None);
    let p = up.port;
    let pol = env.policy(
        "http.yaml",
        &policy(&[p], &service("api", p, "    tls: plain\n")),
    );
    std::fs::write(
        d.join("client.py"),
        [PY_RESOLVE, PY_SSE, PY_CLIENT].concat(),
    )
    .unwrap();
    let dd = d.display();
    // The agent asks for no compression (no --compressed): what it gets must be plain.
    let script = format!(
        "set -u; D={dd}; R='--resolve api.test:{p}:127.0.0.2'; U=http://api.test:{p}
curl -sS $R -D $D/gzip.h -o $D/gzip.json \"$U/gzip?always=1\"
curl -sS $R -D $D/deflate.h -o $D/deflate.json \"$U/gzip?always=1&coding=deflate\"
curl -sS $R --compressed -D $D/clean.h -o $D/clean.json \"$U/gzip?always=1&clean=1\"
curl -sS $R -o $D/br.json -w '%{{http_code}}' \"$U/gzip?always=1&coding=br\" > $D/br.code
curl -sS $R -D $D/lines.h -o $D/lines.json \"$U/typed?ct=application/x-ndjson&lines=2&gz=1\"
curl -sS $R -o $D/untyped.json \"$U/typed?ct=none&gz=1\"
python3 $D/client.py $U > $D/py.json
"
    );
    let out = run_sh(&env, &pol, &script);
    assert!(out.status.success(), "{:?}", out.status);

    // gzip and deflate: masked, plain, with the new length.
    for f in ["gzip", "deflate"] {
        assert_masked_user(&json(&d.join(format!("{f}.json"))), f);
        let h = read(&d.join(format!("{f}.h"))).to_ascii_lowercase();
        assert!(!h.contains("content-encoding"), "{f}: {h}");
        let len = std::fs::metadata(d.join(format!("{f}.json")))
            .unwrap()
            .len();
        assert!(h.contains(&format!("content-length: {len}")), "{f}: {h}");
    }
    // Nothing to mask: passed on as it came, still compressed (curl decoded it).
    assert_eq!(
        json(&d.join("clean.json")),
        serde_json::json!({"id": "z", "ok": true})
    );
    let h = read(&d.join("clean.h")).to_ascii_lowercase();
    assert!(h.contains("content-encoding: gzip"), "{h}");
    // A coding the proxy cannot decode: withheld, saying why.
    assert_eq!(read(&d.join("br.code")), "502");
    let br = json(&d.join("br.json"));
    assert!(
        br["reason"]
            .as_str()
            .unwrap()
            .contains("compressed with \"br\""),
        "{br}"
    );
    assert!(!br.to_string().contains("alice@example.com"), "{br}");
    // JSON lines and a body without a type (sniffed after decoding).
    let lines = read(&d.join("lines.json"));
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for l in lines.lines() {
        assert_masked_user(&serde_json::from_str(l).unwrap(), "gzip x-ndjson");
    }
    let h = read(&d.join("lines.h")).to_ascii_lowercase();
    assert!(!h.contains("content-encoding"), "{h}");
    assert_masked_user(&json(&d.join("untyped.json")), "gzip, no type");
    // A gzip event stream (flushed per chunk): masked event by event, event 1 handed on
    // before the upstream sent the rest.
    let py = json(&d.join("py.json"));
    check_masked_event_stream(&py["sse"]);

    // The upstream was never asked for compression; the audit counts what was masked.
    let seen = up.requests();
    assert!(
        seen.iter().all(|r| r["accept_encoding"] == Value::Null),
        "{seen:?}"
    );
    let recs = http_records(&env);
    let masked: Vec<u64> = recs
        .iter()
        .filter(|r| r["path"] == "/gzip")
        .map(|r| r["fields_masked"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(masked.iter().filter(|&&n| n == 3).count(), 2, "{recs:#?}");
    let withheld: Vec<&Value> = recs.iter().filter(|r| r["status"] == 502).collect();
    assert_eq!(withheld.len(), 1, "{recs:#?}");
    assert!(
        withheld[0]["error"].as_str().unwrap_or("").contains("br"),
        "{:#}",
        withheld[0]
    );
    no_token_in(&d, &env);
}
