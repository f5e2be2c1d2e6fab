//! Verifying a JWT against the policy's issuers: routed by its (unverified) `iss`, then
//! checked for signature (key chosen by `kid` from the issuer's JWKS), issuer, audience,
//! expiry and not-before with the issuer's leeway.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "the token is not a JWT ({0}); pass the raw token (three base64url parts separated by '.')"
    )]
    Malformed(String),
    #[error(
        "token issuer {iss:?} is not configured (configured: {known}); add it under `auth.issuers`"
    )]
    UnknownIssuer { iss: String, known: String },
    #[error("no key {kid:?} in the JWKS of issuer {issuer}; the issuer may have rotated its keys: reload the policy")]
    NoKey { issuer: String, kid: String },
    #[error("token expired at {0} (unix time); get a fresh token")]
    Expired(u64),
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token signature is invalid (not signed by issuer {0})")]
    BadSignature(String),
    #[error("token audience does not include {0:?}")]
    Audience(String),
    #[error("token has no `sub` claim")]
    NoSubject,
    #[error("token rejected: {0}")]
    Other(String),
}

/// The verified facts of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Issuer name (`auth.issuers[].name`), not the `iss` URL.
    pub issuer: String,
    pub subject: String,
    pub groups: Vec<String>,
    /// `exp` (unix seconds).
    pub expires: u64,
}

impl Claims {
    pub fn expired_at(&self, now: u64) -> bool {
        now >= self.expires
    }
}

/// One issuer, compiled: its keys loaded.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub name: String,
    pub iss: String,
    pub audience: String,
    pub keys: JwkSet,
    pub leeway: u64,
    pub groups_claim: String,
}

/// Every configured issuer.
#[derive(Debug, Clone, Default)]
pub struct Issuers(pub Vec<Issuer>);

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Issuers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Issuer> {
        self.0.iter().find(|i| i.name == name)
    }

    /// Verifies `token` (surrounding whitespace ignored).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let token = token.trim();
        let payload = unverified_payload(token)?;
        let iss = payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| TokenError::Malformed("no `iss` claim".into()))?;
        let issuer =
            self.0
                .iter()
                .find(|i| i.iss == iss)
                .ok_or_else(|| TokenError::UnknownIssuer {
                    iss: iss.to_owned(),
                    known: if self.0.is_empty() {
                        "none".into()
                    } else {
                        self.0
                            .iter()
                            .map(|i| i.iss.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })?;
        issuer.verify(token)
    }
}

impl Issuer {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid).ok_or_else(|| TokenError::NoKey {
                issuer: self.name.clone(),
                kid: kid.clone(),
            })?,
            None => match self.keys.keys.as_slice() {
                [only] => only,
                _ => {
                    return Err(TokenError::Malformed(
                        "no `kid` in the header and the issuer has several keys".into(),
                    ))
                }
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::Other(e.to_string()))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.iss]);
        v.set_audience(&[&self.audience]);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Value>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired(0),
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidSignature => TokenError::BadSignature(self.name.clone()),
                K::InvalidAudience => TokenError::Audience(self.audience.clone()),
                K::MissingRequiredClaim(c) if c == "sub" => TokenError::NoSubject,
                _ => TokenError::Other(e.to_string()),
            }
        });
        let data = match data {
            Err(TokenError::Expired(_)) => {
                let exp = unverified_payload(token)
                    .ok()
                    .and_then(|p| p.get("exp").and_then(Value::as_u64))
                    .unwrap_or(0);
                return Err(TokenError::Expired(exp));
            }
            other => other?,
        };
        let c = data.claims;
        let subject = c
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::NoSubject)?
            .to_owned();
        let groups = match c.get(&self.groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let expires = c.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Claims {
            issuer: self.name.clone(),
            subject,
            groups,
            expires,
        })
    }
}

/// The payload as JSON, without checking anything (for routing and messages only).
fn unverified_payload(token: &str) -> Result<serde_json::Map<String, Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(_), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three parts".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .map_err(|e| TokenError::Malformed(format!("payload is not base64url: {e}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed("payload is not a JSON object".into())),
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
