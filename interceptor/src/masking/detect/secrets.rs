//! Secrets: API keys with well-known prefixes (AWS, GitHub, GitLab, Slack, Stripe, OpenAI, Google, npm, PyPI, Hugging Face, Shopify, DigitalOcean, Linear) and PEM private key blocks.

use super::{DetectorKind, Hit, Hits};

#[inline]
fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[inline]
fn upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

#[inline]
fn alpha(b: u8) -> bool {
    b.is_ascii_alphabetic()
}

#[inline]
fn lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[inline]
fn alnum_us(b: u8) -> bool {
    alnum(b) || b == b'_'
}

#[inline]
fn alnum_dash(b: u8) -> bool {
    alnum(b) || b == b'-'
}

#[inline]
fn b64url(b: u8) -> bool {
    alnum(b) || b == b'-' || b == b'_'
}

/// Body rule after a prefix: allowed characters, minimum and maximum
/// length, and whether the body must mix digits, upper and lower case.
struct Body {
    chars: fn(u8) -> bool,
    min: usize,
    max: usize,
    mixed: bool,
}

const PREFIXES: &[(&[u8], Body)] = &[
    (
        b"AKIA",
        Body {
            chars: upper_alnum,
            min: 16,
            max: 16,
            mixed: false,
        },
    ),
    (
        b"ASIA",
        Body {
            chars: upper_alnum,
            min: 16,
            max: 16,
            mixed: false,
        },
    ),
    (
        b"AIza",
        Body {
            chars: b64url,
            min: 35,
            max: 35,
            mixed: false,
        },
    ),
    (
        b"ghp_",
        Body {
            chars: alnum,
            min: 20,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"gho_",
        Body {
            chars: alnum,
            min: 20,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"ghs_",
        Body {
            chars: alnum,
            min: 20,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"ghu_",
        Body {
            chars: alnum,
            min: 20,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"ghr_",
        Body {
            chars: alnum,
            min: 20,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"github_pat_",
        Body {
            chars: alnum_us,
            min: 20,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"xoxa-",
        Body {
            chars: alnum_dash,
            min: 10,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"xoxb-",
        Body {
            chars: alnum_dash,
            min: 10,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"xoxp-",
        Body {
            chars: alnum_dash,
            min: 10,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"xoxr-",
        Body {
            chars: alnum_dash,
            min: 10,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"xoxs-",
        Body {
            chars: alnum_dash,
            min: 10,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"sk_live_",
        Body {
            chars: alnum,
            min: 16,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"rk_live_",
        Body {
            chars: alnum,
            min: 16,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"glpat-",
        Body {
            chars: b64url,
            min: 20,
            max: 300,
            mixed: false,
        },
    ),
    (
        b"gldt-",
        Body {
            chars: b64url,
            min: 20,
            max: 300,
            mixed: false,
        },
    ),
    (
        b"npm_",
        Body {
            chars: alnum,
            min: 36,
            max: 36,
            mixed: false,
        },
    ),
    (
        b"pypi-AgEIcHlwaS5vcmc",
        Body {
            chars: b64url,
            min: 50,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"hf_",
        Body {
            chars: alpha,
            min: 34,
            max: 34,
            mixed: false,
        },
    ),
    (
        b"api_org_",
        Body {
            chars: alpha,
            min: 34,
            max: 34,
            mixed: false,
        },
    ),
    (
        b"shpat_",
        Body {
            chars: lower_hex,
            min: 32,
            max: 32,
            mixed: false,
        },
    ),
    (
        b"shpca_",
        Body {
            chars: lower_hex,
            min: 32,
            max: 32,
            mixed: false,
        },
    ),
    (
        b"shppa_",
        Body {
            chars: lower_hex,
            min: 32,
            max: 32,
            mixed: false,
        },
    ),
    (
        b"shpss_",
        Body {
            chars: lower_hex,
            min: 32,
            max: 32,
            mixed: false,
        },
    ),
    (
        b"dop_v1_",
        Body {
            chars: lower_hex,
            min: 64,
            max: 64,
            mixed: false,
        },
    ),
    (
        b"doo_v1_",
        Body {
            chars: lower_hex,
            min: 64,
            max: 64,
            mixed: false,
        },
    ),
    (
        b"dor_v1_",
        Body {
            chars: lower_hex,
            min: 64,
            max: 64,
            mixed: false,
        },
    ),
    (
        b"lin_api_",
        Body {
            chars: alnum,
            min: 40,
            max: 40,
            mixed: false,
        },
    ),
    (
        b"xapp-",
        Body {
            chars: alnum_dash,
            min: 10,
            max: 255,
            mixed: false,
        },
    ),
    (
        b"sk-",
        Body {
            chars: b64url,
            min: 20,
            max: 255,
            mixed: true,
        },
    ),
];

/// Every key is a whole token: a maximal run of letters, digits, `-` and
/// `_` (its prefix starts the token, its body ends it).
pub(super) fn find_api_keys(s: &[u8], _runs: &[usize], hits: &mut Hits) {
    let mut i = 0;
    while i < s.len() {
        if !b64url(s[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && b64url(s[i]) {
            i += 1;
        }
        if i - start >= 15 && key_token(&s[start..i]) {
            hits.push(Hit {
                start,
                end: i,
                kind: DetectorKind::ApiKey,
            });
        }
    }
}

/// Whether a whole token is a key of a known format.
fn key_token(t: &[u8]) -> bool {
    if !matches!(
        t[0],
        b'A' | b'g' | b'x' | b's' | b'r' | b'n' | b'p' | b'h' | b'a' | b'd' | b'l'
    ) {
        return false;
    }
    let Some((prefix, body)) = PREFIXES.iter().find(|(p, _)| t.starts_with(p)) else {
        return false;
    };
    let b = &t[prefix.len()..];
    if b.len() < body.min || b.len() > body.max || !b.iter().all(|&c| (body.chars)(c)) {
        return false;
    }
    !body.mixed
        || (b.iter().any(u8::is_ascii_digit)
            && b.iter().any(u8::is_ascii_uppercase)
            && b.iter().any(u8::is_ascii_lowercase))
}

const BEGIN: &[u8] = b"-----BEGIN ";
const DASHES: &[u8] = b"-----";

pub(super) fn find_private_keys(s: &[u8], _runs: &[usize], hits: &mut Hits) {
    let mut i = 0;
    while let Some(off) = find(&s[i..], BEGIN) {
        let start = i + off;
        let label_start = start + BEGIN.len();
        // The label runs to the closing dashes on the same line.
        let line_end = s[label_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(s.len(), |p| label_start + p);
        let Some(close) = find(&s[label_start..line_end], DASHES) else {
            i = label_start;
            continue;
        };
        let label = &s[label_start..label_start + close];
        if !label.ends_with(b"PRIVATE KEY") {
            i = label_start;
            continue;
        }
        // Through the matching END line; a block without one is masked to
        // the end of the value.
        let body_from = label_start + close + DASHES.len();
        let end = find_end(&s[body_from..], label).map_or(s.len(), |e| body_from + e);
        hits.push(Hit {
            start,
            end,
            kind: DetectorKind::PrivateKey,
        });
        i = end;
        if i >= s.len() {
            break;
        }
    }
}

/// The end of `-----END <label>-----` in `s`.
fn find_end(s: &[u8], label: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = find(&s[i..], b"-----END ") {
        let p = i + off + b"-----END ".len();
        let rest = &s[p..];
        if rest.starts_with(label) && rest[label.len()..].starts_with(DASHES) {
            return Some(p + label.len() + DASHES.len());
        }
        i = p;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let p = i + off;
        if &hay[p..p + needle.len()] == needle {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::masking::detect::kinds_found;
    use crate::masking::model::DetectorKind::{self, ApiKey, PrivateKey};

    fn found(kind: DetectorKind, t: &str) -> Vec<String> {
        kinds_found(t)
            .into_iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn api_key_positives() {
        for k in [
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGH",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "xoxp-1234567890-abcdef",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "rk_live_51H8abcdefGHIJKLmnopQRST",
            "sk-proj-Ab3dEf6hIj9kLmNoPqRsTuVwXyZ012345",
            "sk-T3BlbkFJabcdefghijklmnop1234567890QRST",
            "AIzaSyA-1234567890abcdefghijklmnopqrstu",
            "glpat-xYz12AbCdEfGhIjKlMnO",
            "glpat-Ab3dEf6hIj9kLmNoPqRsTuVwXyZ0123",
            "gldt-AbCdEfGhIjKlMnOpQrSt",
            "npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "pypi-AgEIcHlwaS5vcmcCJGE0YjYxZDM2LTAwMjgtNDdmMi1iZGE1LWVmMjRjMGU0ZTM1MgACKlsz",
            "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
            "api_org_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh",
            "shpat_0123456789abcdef0123456789abcdef",
            "shpss_0123456789abcdef0123456789abcdef",
            "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "lin_api_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCd",
            "xapp-1-A0123456789-1234567890123-abcdef0123456789",
        ] {
            assert_eq!(found(ApiKey, k), [k], "{k:?}");
            assert_eq!(found(ApiKey, &format!("key=\"{k}\";")), [k], "{k:?}");
        }
    }

    #[test]
    fn api_key_negatives() {
        for t in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLE1",
            "AKIAiosfodnn7example",
            "XAKIAIOSFODNN7EXAMPLE",
            "ghp_short",
            "sk-learn-is-a-python-library",
            "sk-learn scikit",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "risk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "AIzaSyA-123",
            "xoxz-1234567890-abc",
            // Wrong length or characters after a known prefix
            "glpat-short",
            "npm_AbCdEfGhIjKlMnOpQrStUvWxYz012345678",
            "npm_install_the_dependencies_of_this_project",
            "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfG1",
            "hf_hub_download_and_cache_a_model_file",
            "shpat_0123456789ABCDEF0123456789ABCDEF",
            "dop_v1_0123456789abcdef",
            "pypi-AgEIcHlwaS5vcmc",
        ] {
            assert_eq!(found(ApiKey, t), Vec::<String>::new(), "{t:?}");
        }
    }

    const PEM: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx\nAbCd==\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn private_keys() {
        assert_eq!(found(PrivateKey, PEM), [PEM]);
        let text = format!("key:\n{PEM}\nthanks");
        assert_eq!(found(PrivateKey, &text), [PEM]);
        let openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----";
        assert_eq!(found(PrivateKey, openssh), [openssh]);
        // Truncated: masked to the end.
        let cut = "x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
        assert_eq!(found(PrivateKey, cut), [&cut[2..]]);
        // Public keys and certificates are not private keys.
        for t in [
            "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUF\n-----END CERTIFICATE-----",
        ] {
            assert_eq!(found(PrivateKey, t), Vec::<String>::new());
        }
    }
}
