//! The agent's side of startup: SSLRequest/GSSENCRequest are answered `N`, a CancelRequest
//! is forwarded, a StartupMessage ends the phase. The whole phase has a deadline
//! ([`STARTUP_TIMEOUT`]), so a client that trickles bytes or never finishes its startup
//! packet cannot hold a connection (PostgreSQL's own `authentication_timeout` does the same).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::backend;
use super::codec::FrameReader;
use super::frontend::Startup;
use super::session::{cancel_request, Ctx, Outcome};

/// How long the agent has to send its startup packet(s).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How the startup phase ended.
pub enum Begin {
    /// A StartupMessage with these parameters: the session goes on.
    Params(Vec<(String, String)>),
    /// The connection is done (cancel request, error, end of stream, timeout).
    Done(Outcome),
}

fn fatal(message: &str) -> bytes::BytesMut {
    backend::error("FATAL", "08P01", message, None, None).to_bytes()
}

/// Reads the agent's startup packets within [`STARTUP_TIMEOUT`].
pub async fn client_startup<R, W>(creader: &mut FrameReader<R>, cw: &mut W, ctx: &Ctx) -> Begin
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    client_startup_within(creader, cw, ctx, STARTUP_TIMEOUT).await
}

pub async fn client_startup_within<R, W>(
    creader: &mut FrameReader<R>,
    cw: &mut W,
    ctx: &Ctx,
    limit: Duration,
) -> Begin
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, phase(creader, cw, ctx)).await {
        Ok(begin) => begin,
        Err(_) => {
            let msg = format!(
                "interceptor: the client did not complete its startup packet within {limit:?}; closing"
            );
            tracing::info!(session = %ctx.session, "{msg}");
            let _ = cw.write_all(&fatal(&msg)).await;
            Begin::Done(Outcome { error: Some(msg) })
        }
    }
}

async fn phase<R, W>(creader: &mut FrameReader<R>, cw: &mut W, ctx: &Ctx) -> Begin
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let body = match creader.next_startup().await {
            Ok(Some(b)) => b,
            Ok(None) => return Begin::Done(Outcome::default()),
            Err(e) => {
                let _ = cw.write_all(&fatal(&format!("interceptor: {e}"))).await;
                return Begin::Done(Outcome {
                    error: Some(e.to_string()),
                });
            }
        };
        match Startup::parse(&body) {
            Ok(Startup::Ssl) | Ok(Startup::GssEnc) => {
                if let Err(e) = cw.write_all(b"N").await {
                    return Begin::Done(Outcome {
                        error: Some(e.to_string()),
                    });
                }
            }
            Ok(Startup::Cancel { pid, key }) => {
                return Begin::Done(cancel_request(ctx, pid, key).await)
            }
            Ok(Startup::Startup { params, .. }) => return Begin::Params(params),
            Err(e) => {
                let _ = cw.write_all(&fatal(&format!("interceptor: {e}"))).await;
                return Begin::Done(Outcome {
                    error: Some(e.to_string()),
                });
            }
        }
    }
}
