//! Upstream login: startup message, then cleartext, md5 or SCRAM-SHA-256 with the
//! resource's secret (never the agent's), until ReadyForQuery.

use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend as fe;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::backend::{self, AUTH, BACKEND_KEY, ERROR, NOTICE, PARAMETER_STATUS, READY};
use super::codec::{Body, FrameReader};
use super::error::{PgError, Result};
use super::frontend::startup_message;

/// What the server told us once logged in.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub params: Vec<(String, String)>,
    pub pid: i32,
    pub key: i32,
}

/// Logs in as `user` to `database`. `password` is the resource's secret, if it has one.
/// `channel_binding`: on TLS, the `tls-server-end-point` hash of the server's certificate
/// (`tls::server_end_point`); SCRAM then binds the login to this TLS session
/// (SCRAM-SHA-256-PLUS) when the server offers it. `Some(None)`: TLS, but the certificate's
/// hash is undefined (e.g. Ed25519): no binding. `None`: no TLS.
pub async fn login<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    resource: &str,
    user: &str,
    database: &str,
    password: Option<&[u8]>,
    channel_binding: Option<Option<Vec<u8>>>,
) -> Result<Session>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let params = [
        ("user", user),
        ("database", database),
        ("application_name", "interceptor"),
        ("client_encoding", "UTF8"),
    ];
    writer.write_all(&startup_message(&params)).await?;
    let auth_err = |message: String| PgError::UpstreamAuth {
        resource: resource.to_owned(),
        message,
    };
    let need_pw = || {
        password.ok_or_else(|| auth_err("the server asks for a password but the resource has no `password_file` or `password_env`".into()))
    };
    let mut scram: Option<sasl::ScramSha256> = None;
    let mut out = Session::default();
    loop {
        let f = reader.expect().await?;
        let mut buf = BytesMut::new();
        match f.tag {
            AUTH => {
                let mut b = Body::new(&f.body, "Authentication");
                match b.i32()? {
                    0 => {}
                    3 => fe::password_message(need_pw()?, &mut buf)?,
                    5 => {
                        let salt: [u8; 4] = b.bytes(4)?.try_into().expect("4 bytes");
                        fe::password_message(md5_hash(user.as_bytes(), need_pw()?, salt).as_bytes(), &mut buf)?;
                    }
                    10 => {
                        let mut mechs = Vec::new();
                        while !b.is_empty() {
                            let m = b.cstr()?;
                            if m.is_empty() {
                                break;
                            }
                            mechs.push(m.to_owned());
                        }
                        if !mechs.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                            return Err(auth_err(format!("the server offers only SASL mechanisms {mechs:?}; SCRAM-SHA-256 is supported")));
                        }
                        let plus = mechs.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS);
                        let (mech, binding) = match &channel_binding {
                            Some(Some(hash)) if plus => (
                                sasl::SCRAM_SHA_256_PLUS,
                                sasl::ChannelBinding::tls_server_end_point(hash.clone()),
                            ),
                            // TLS without a usable certificate hash: say we cannot bind
                            // ("n"), or the server would suspect a downgrade.
                            Some(None) => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unsupported()),
                            _ => (sasl::SCRAM_SHA_256, sasl::ChannelBinding::unrequested()),
                        };
                        let s = sasl::ScramSha256::new(need_pw()?, binding);
                        fe::sasl_initial_response(mech, s.message(), &mut buf)?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or_else(|| auth_err("SASL continue without SASL start".into()))?;
                        s.update(b.rest()).map_err(|e| auth_err(format!("SCRAM: {e}")))?;
                        fe::sasl_response(s.message(), &mut buf)?;
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| auth_err("SASL final without SASL start".into()))?;
                        s.finish(b.rest()).map_err(|e| auth_err(format!("SCRAM server signature: {e}")))?;
                    }
                    code => return Err(auth_err(format!("authentication method {code} is not supported (use scram-sha-256, md5 or password)"))),
                }
            }
            ERROR => {
                let fields = backend::fields(&f.body)?;
                let msg = backend::field(&fields, b'M').unwrap_or("login failed");
                let code = backend::field(&fields, b'C').unwrap_or("");
                return Err(auth_err(format!("{msg} (SQLSTATE {code})")));
            }
            PARAMETER_STATUS => out.params.push(backend::parse_parameter_status(&f.body)?),
            BACKEND_KEY => (out.pid, out.key) = backend::parse_backend_key(&f.body)?,
            READY => return Ok(out),
            NOTICE => {}
            t => {
                return Err(auth_err(format!(
                    "unexpected message {:?} during login",
                    t as char
                )))
            }
        }
        if !buf.is_empty() {
            writer.write_all(&buf).await?;
        }
    }
}
