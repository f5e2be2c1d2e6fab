//! Policy files in the repository: examples, fixtures, the README example and missing files.

use super::*;

#[test]
fn examples_load() {
    let dir = repo().join("policies/examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (p, res) = Policy::load_resolved(&path).unwrap_or_else(|e| panic!("{e}"));
            for r in &res {
                assert_eq!(r.name, "localhost", "examples must only use localhost");
                assert!(r.result.is_ok(), "{r:?}");
            }
            seen.push((path.file_name().unwrap().to_string_lossy().into_owned(), p));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "approvals.yaml",
            "demo-http.yaml",
            "demo-postgres.yaml",
            "demo.yaml",
            "deny-all.yaml",
            "egress.yaml",
            "http.yaml",
            "postgres.yaml"
        ]
    );
    let by_name = |n: &str| &seen.iter().find(|s| s.0 == n).expect("listed above").1;
    // The PostgreSQL demo's L4 rule opens its (template) port only.
    let demo_pg = by_name("demo-postgres.yaml");
    assert!(decide(demo_pg, "127.0.0.2:5432").is_allow());
    assert!(!decide(demo_pg, "127.0.0.2:5433").is_allow());

    let demo = by_name("demo.yaml");
    assert_eq!(
        decide(demo, "127.0.0.2:7001").rule.as_deref(),
        Some("allow-echo")
    );
    assert!(decide(demo, "127.0.0.2:7001").is_allow());
    let d = decide(demo, "127.0.0.2:7002");
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("deny-other-ports"))
    );
    let d = decide(demo, "127.0.0.3:7001");
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));

    let deny_all = by_name("deny-all.yaml");
    assert_eq!(deny_all.summary(), "0 identities, 0 rules, default deny");
    assert!(!decide(deny_all, "127.0.0.1:80").is_allow());

    let egress = by_name("egress.yaml");
    assert!(decide(egress, "127.0.10.5:5432").is_allow());
    assert!(!decide(egress, "127.0.10.5:5433").is_allow());
    let other = Subject {
        exe: Some("/usr/bin/curl"),
        ..subject()
    };
    assert!(!evaluate(egress, &req(other, "127.0.10.5:5432")).is_allow());
    for a in egress.host_addrs("localhost").unwrap() {
        assert!(decide(egress, &SocketAddr::new(*a, 443).to_string()).is_allow());
    }
    assert_eq!(
        decide(egress, "127.0.0.1:80").rule.as_deref(),
        Some("deny-rest")
    );
}

#[test]
fn load_reports_missing_file() {
    let err = Policy::load(Path::new("/nonexistent/policy.yaml")).unwrap_err();
    assert!(matches!(err, PolicyError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/policy.yaml: cannot read policy: "),
        "{err}"
    );
}

/// Every `policies/tests/bad/*.yaml` must fail with the text of its
/// `# expect: ...` comment (and at its `# line: N`, when given); every
/// `policies/tests/good/*.yaml` must load.
#[test]
fn fixtures() {
    let dir = repo().join("policies/tests");
    let mut count = 0;
    for entry in std::fs::read_dir(dir.join("bad")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let comment = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::trim))
        };
        let want =
            comment("expect").unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()));
        let line = comment("line").map(|l| l.parse::<usize>().unwrap());
        let origin = path.display().to_string();
        let err = match Policy::from_str(&text, &origin) {
            Ok(_) => panic!("{origin}: loaded but should fail with {want:?}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(msg.starts_with(&origin), "{msg}");
        assert!(msg.contains(want), "{origin}: error {msg:?} lacks {want:?}");
        if let Some(line) = line {
            assert_eq!(err.line(), Some(line), "{msg}");
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} bad fixtures");
    for entry in std::fs::read_dir(dir.join("good")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // from_str: names are not resolved, so fixtures may use any name.
        Policy::from_str(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The complete example in policies/README.md is valid.
#[test]
fn readme_example_loads() {
    let readme = std::fs::read_to_string(repo().join("policies/README.md")).unwrap();
    let start = readme
        .find("```yaml\nversion: 1")
        .expect("README has a full example")
        + 8;
    let len = readme[start..].find("```").unwrap();
    let p = Policy::from_str(&readme[start..start + len], "README.md")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.summary(), "1 identity, 2 rules, default deny");
    assert_eq!(
        decide(&p, "127.0.0.2:7003").rule.as_deref(),
        Some("allow-local-echo")
    );
}
