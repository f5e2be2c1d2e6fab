//! Tests of `http_services`, `http_rules` and `evaluate_http`.

use super::*;

const BASE: &str = "version: 1
identities:
  agent:
    comm: curl
  other:
    comm: other
http_services:
  api:
    address: 127.0.0.2
    port: 8443
    hosts: [api.test, API2.test]
    tls: intercept
  cdn:
    address: 127.0.0.3
    port: 443
    hosts: [cdn.test]
    tls: passthrough
http_rules:
  - name: no-delete
    identity: agent
    service: api
    action: deny
    methods: [DELETE]
  - name: read-v1
    identity: agent
    service: api
    action: allow
    methods: [GET, HEAD]
    paths: [\"/v1/**\"]
    inject:
      - header: Authorization
        prefix: \"Bearer \"
        secret_env: API_TOKEN
    mask_fields:
      - path: $.user.ssn
        strategy: redact
  - name: admin-with-header
    service: api
    action: allow
    methods: [POST]
    paths: [\"/admin/*\"]
    headers:
      - name: X-Ticket
        value: \"T-*\"
  - name: cdn-any
    service: cdn
    action: allow
";

fn policy() -> Policy {
    Policy::from_str(BASE, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn subject<'a>() -> Subject<'a> {
    Subject {
        cgroup: Some("/interceptor/run-1"),
        uid: 1000,
        gid: 1000,
        exe: Some("/usr/bin/curl"),
        comm: "curl",
        token: None,
    }
}

fn req<'a>(
    service: &'a str,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    headers: &'a ::http::HeaderMap,
) -> HttpRequest<'a> {
    HttpRequest {
        subject: subject(),
        service,
        host: Some(host),
        sni: None,
        method: Some(method),
        path: Some(path),
        headers: Some(headers),
    }
}

#[test]
fn services_are_found_by_destination() {
    let p = policy();
    assert_eq!(
        p.http_service("127.0.0.2:8443".parse().unwrap()).unwrap().0,
        "api"
    );
    assert!(p.http_service("127.0.0.2:443".parse().unwrap()).is_none());
    assert!(p.intercepts_tls());
}

#[test]
fn method_path_and_first_match() {
    let p = policy();
    let h = ::http::HeaderMap::new();
    let d = evaluate_http(&p, &req("api", "api.test", "GET", "/v1/users/7", &h));
    assert_eq!((d.verdict, d.rule), (Verdict::Allow, Some("read-v1")));
    let e = d.effects.unwrap();
    assert_eq!(e.inject.len(), 1);
    assert!(e.masks());
    let d = evaluate_http(&p, &req("api", "api.test", "DELETE", "/v1/users/7", &h));
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, Some("no-delete")));
    assert!(d.effects.is_none());
    let d = evaluate_http(&p, &req("api", "api.test", "GET", "/v2/x", &h));
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));
    assert!(
        d.reason.contains("no HTTP rule allows GET /v2/x"),
        "{}",
        d.reason
    );
    let d = evaluate_http(&p, &req("api", "api.test", "POST", "/v1/x", &h));
    assert_eq!(d.verdict, Verdict::Deny);
}

#[test]
fn path_parameters_cannot_change_the_rule() {
    let p = policy();
    let h = ::http::HeaderMap::new();
    let get = |path| evaluate_http(&p, &req("api", "api.test", "GET", path, &h));
    // Same rule either way: decided as usual.
    let d = get("/v1/users;jsessionid=42/7");
    assert_eq!((d.verdict, d.rule), (Verdict::Allow, Some("read-v1")));
    // Tomcat reads `..;` as `..`: `/v1/..;/admin/keys` is `/admin/keys` there.
    for path in ["/v1/..;/admin/keys", "/v1/x/..;a=b/..;/v2/secret"] {
        let d = get(path);
        assert_eq!((d.verdict, d.rule), (Verdict::Deny, None), "{path}");
        assert!(
            d.reason
                .contains("rule read-v1 decides one reading while the default deny"),
            "{}",
            d.reason
        );
    }
    // A deny rule reached only without the parameters also wins.
    let mut h2 = ::http::HeaderMap::new();
    h2.insert("x-ticket", "T-1".parse().unwrap());
    let d = evaluate_http(
        &p,
        &req("api", "api.test", "POST", "/admin/reset;x/..;/", &h2),
    );
    assert_eq!(d.verdict, Verdict::Deny, "{}", d.reason);
    assert_eq!(
        http_eval::without_path_parameters("/a;x/b;y/"),
        Some("/a/b/".into())
    );
    assert_eq!(
        http_eval::without_path_parameters("/a/..;"),
        Some("/".into())
    );
    assert_eq!(http_eval::without_path_parameters(";"), Some("/".into()));
    assert_eq!(http_eval::without_path_parameters("/a/b"), None);
}

#[test]
fn header_selectors() {
    let p = policy();
    let mut h = ::http::HeaderMap::new();
    let d = evaluate_http(&p, &req("api", "api.test", "POST", "/admin/reset", &h));
    assert_eq!(d.verdict, Verdict::Deny);
    h.insert("x-ticket", "X-1".parse().unwrap());
    let d = evaluate_http(&p, &req("api", "api.test", "POST", "/admin/reset", &h));
    assert_eq!(d.verdict, Verdict::Deny);
    h.insert("x-ticket", "T-42".parse().unwrap());
    let d = evaluate_http(&p, &req("api", "api.test", "POST", "/admin/reset", &h));
    assert_eq!(
        (d.verdict, d.rule),
        (Verdict::Allow, Some("admin-with-header"))
    );
    // `*` stays in one segment.
    let d = evaluate_http(&p, &req("api", "api.test", "POST", "/admin/a/b", &h));
    assert_eq!(d.verdict, Verdict::Deny);
}

#[test]
fn forged_hosts_are_denied_before_rules() {
    let p = policy();
    let h = ::http::HeaderMap::new();
    for host in ["evil.test", "cdn.test", "127.0.0.3"] {
        let d = evaluate_http(&p, &req("api", host, "GET", "/v1/x", &h));
        assert_eq!((d.verdict, d.rule), (Verdict::Deny, None), "{host}");
        assert!(d.reason.starts_with("forged host"), "{}", d.reason);
    }
    for host in ["API.test", "api2.test", "127.0.0.2", "api.test."] {
        let d = evaluate_http(&p, &req("api", host, "GET", "/v1/x", &h));
        assert_eq!(d.verdict, Verdict::Allow, "{host}: {}", d.reason);
    }
    // Host must agree with the SNI.
    let mut r = req("api", "api2.test", "GET", "/v1/x", &h);
    r.sni = Some("api.test");
    let d = evaluate_http(&p, &r);
    assert!(
        d.reason.contains("differs from the TLS SNI"),
        "{}",
        d.reason
    );
    // No Host at all.
    let mut r = req("api", "api.test", "GET", "/v1/x", &h);
    r.host = None;
    assert_eq!(evaluate_http(&p, &r).verdict, Verdict::Deny);
}

#[test]
fn passthrough_decides_on_sni_with_plain_rules_only() {
    let p = policy();
    let pass = |service, sni| {
        evaluate_http(
            &p,
            &HttpRequest {
                subject: subject(),
                service,
                host: None,
                sni: Some(sni),
                method: None,
                path: None,
                headers: None,
            },
        )
    };
    let d = pass("cdn", "cdn.test");
    assert_eq!((d.verdict, d.rule), (Verdict::Allow, Some("cdn-any")));
    assert!(pass("cdn", "api.test").reason.starts_with("forged host"));
    // Every api rule looks inside requests: none can decide on the SNI.
    let d = pass("api", "api.test");
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));
}

#[test]
fn identities_select_rules() {
    let p = policy();
    let h = ::http::HeaderMap::new();
    let mut r = req("api", "api.test", "DELETE", "/v1/x", &h);
    r.subject.comm = "other";
    // `no-delete` is for `agent` only; `other` falls to the default.
    let d = evaluate_http(&p, &r);
    assert_eq!((d.verdict, d.rule), (Verdict::Deny, None));
}

#[test]
fn load_errors_name_the_problem() {
    let bad = |from: &str, to: &str, want: &str| {
        let text = BASE.replacen(from, to, 1);
        let e = Policy::from_str(&text, "t.yaml").unwrap_err().to_string();
        assert!(e.contains(want), "{e} lacks {want}");
    };
    bad(
        "service: api\n    action: deny",
        "service: nope\n    action: deny",
        "unknown HTTP service \"nope\"",
    );
    bad(
        "methods: [DELETE]",
        "methods: [delete]",
        "must be upper-case",
    );
    bad(
        "        secret_env: API_TOKEN\n",
        "",
        "give `secret_file` or `secret_env`",
    );
    bad(
        "    action: deny\n    methods",
        "    action: deny\n    mask: true\n    methods",
        "only apply to `allow` rules",
    );
    bad(
        "port: 443\n",
        "port: 8443\n    address: 127.0.0.2\n",
        "duplicate field",
    );
    bad(
        "    address: 127.0.0.3\n    port: 443",
        "    address: 127.0.0.2\n    port: 8443",
        "is already HTTP service \"api\"",
    );
    bad(
        "hosts: [cdn.test]",
        "hosts: []",
        "`hosts` must name at least one",
    );
    bad(
        "hosts: [cdn.test]",
        "hosts: [\"cdn.test:443\"]",
        "not a plain host name",
    );
    bad(
        "paths: [\"/v1/**\"]",
        "paths: [\"v1/**\"]",
        "must start with '/'",
    );
    bad(
        "    tls: passthrough",
        "    tls: maybe",
        "unknown variant `maybe`",
    );
}

#[test]
fn deny_header_values_match_any_list_element_in_any_case_allow_values_exactly() {
    let p = Policy::from_str(
        "version: 1
http_services:
  api:
    address: 127.0.0.2
    port: 8443
    hosts: [api.test]
http_rules:
  - name: no-admin
    service: api
    action: deny
    headers:
      - name: X-Role
        value: admin
  - name: users
    service: api
    action: allow
    headers:
      - name: X-Role
        value: user
",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let decide = |values: &[&str]| {
        let mut h = ::http::HeaderMap::new();
        for v in values {
            h.append("x-role", v.parse().unwrap());
        }
        let d = evaluate_http(&p, &req("api", "api.test", "GET", "/", &h));
        (d.verdict, d.rule.map(str::to_owned))
    };
    let denied = (Verdict::Deny, Some("no-admin".to_owned()));
    for v in [
        "admin",
        "user, admin",
        "user,admin",
        "Admin",
        " ADMIN ",
        "user ,  aDmIn",
    ] {
        assert_eq!(decide(&[v]), denied, "{v:?}");
    }
    assert_eq!(decide(&["user", "admin"]), denied, "two lines");
    assert_eq!(
        decide(&["user"]),
        (Verdict::Allow, Some("users".to_owned()))
    );
    // Allow rules stay exact: anything else is not theirs (default deny).
    for v in ["User", "user, user", "user,", "administrator"] {
        assert_eq!(decide(&[v]), (Verdict::Deny, None), "{v:?}");
    }
}

#[test]
fn deny_paths_match_in_any_case_allow_paths_exactly() {
    let p = Policy::from_str(
        "version: 1
http_services:
  api:
    address: 127.0.0.2
    port: 8443
    hosts: [api.test]
http_rules:
  - name: no-admin
    service: api
    action: deny
    paths: [\"/Admin/**\", \"/admin\"]
  - name: docs
    service: api
    action: allow
    paths: [\"/Docs/**\"]
",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let h = ::http::HeaderMap::new();
    let decide = |path: &str| {
        let d = evaluate_http(&p, &req("api", "api.test", "GET", path, &h));
        (d.verdict, d.rule.map(str::to_owned))
    };
    for path in ["/admin", "/ADMIN", "/aDmIn", "/admin/x", "/ADMIN/users/1"] {
        assert_eq!(
            decide(path),
            (Verdict::Deny, Some("no-admin".into())),
            "{path}"
        );
    }
    assert_eq!(decide("/Docs/a").0, Verdict::Allow);
    assert_eq!(
        decide("/docs/a"),
        (Verdict::Deny, None),
        "allow paths stay exact"
    );
}
