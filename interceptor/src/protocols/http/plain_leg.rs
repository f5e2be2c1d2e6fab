//! Plain HTTP from the agent: when it may go upstream in plain HTTP, and with what.
//!
//! A service declared `tls: intercept` or `tls: passthrough` has an upstream that speaks
//! TLS, so a plain-HTTP request to it is refused (400) before any rule: forwarding it
//! would send the request, and any injected secret, across the network in clear text.
//! A service with no `tls` may be either, so its plain requests still go upstream in
//! plain HTTP, but never with injected headers: a secret goes on a plain leg only when the
//! policy says the upstream speaks plain HTTP (`tls: plain`).

use crate::policy::{HttpEffects, HttpService, TlsHandling};

/// The `error` of the 400 answered to plain HTTP sent to a TLS service.
pub const USE_HTTPS: &str = "this service is reached over TLS; use https://";

/// Why a plain-HTTP request to `svc` is refused whatever the rules say, if it is.
pub fn refused(service: &str, svc: &HttpService) -> Option<String> {
    match svc.tls? {
        TlsHandling::Plain => None,
        t => Some(format!(
            "{USE_HTTPS} (service {service} is declared `tls: {}`; plain HTTP would cross the network unencrypted)",
            t.as_str()
        )),
    }
}

/// Why a plain-HTTP request allowed by `rule` is refused because of its injected headers.
pub fn refused_injection(
    service: &str,
    svc: &HttpService,
    rule: Option<&str>,
    effects: &HttpEffects,
) -> Option<String> {
    if effects.inject.is_empty() || svc.tls == Some(TlsHandling::Plain) {
        return None;
    }
    Some(format!(
        "rule {} injects a secret, which is never sent upstream in plain HTTP unless the service says its upstream speaks plain HTTP; use https://, or declare service {service} `tls: plain`",
        rule.unwrap_or("-")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(tls: &str) -> HttpService {
        serde_yaml::from_str(&format!(
            "{{address: 127.0.0.2, port: 80, hosts: [api.test]{tls}}}"
        ))
        .unwrap()
    }

    #[test]
    fn tls_services_refuse_plain_http_and_unspecified_ones_refuse_injection() {
        let with_inject: HttpEffects = HttpEffects {
            inject: vec![serde_yaml::from_str(
                "{header: Authorization, prefix: 'Bearer ', secret_env: T}",
            )
            .unwrap()],
            ..Default::default()
        };
        let none = HttpEffects::default();
        for t in [", tls: intercept", ", tls: passthrough"] {
            let why = refused("api", &svc(t)).expect(t);
            assert!(why.starts_with(USE_HTTPS), "{why}");
        }
        assert_eq!(refused("api", &svc("")), None);
        assert_eq!(refused("api", &svc(", tls: plain")), None);
        let why = refused_injection("api", &svc(""), Some("r"), &with_inject).unwrap();
        assert!(why.contains("tls: plain"), "{why}");
        assert_eq!(refused_injection("api", &svc(""), Some("r"), &none), None);
        assert_eq!(
            refused_injection("api", &svc(", tls: plain"), Some("r"), &with_inject),
            None
        );
    }
}
