//! Protocol detection from the agent's first bytes, peeked (never consumed).

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::sni::{self, Hello};

/// What the agent speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/1.x: a method token (or the blank lines servers ignore before one).
    Http,
    /// TLS, with the ClientHello's server name.
    Tls { sni: Option<String> },
    /// Anything else (with a description for the audit record).
    Other(String),
    /// The agent sent nothing (or not enough) before the deadline.
    Timeout,
    /// The agent closed before sending anything.
    Closed,
}

/// Largest ClientHello we wait for.
const MAX_HELLO: usize = 20 * 1024;

/// Pauses between looks at an incomplete ClientHello.
const MIN_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(250);

/// Peeks at the first bytes until they tell the protocol, at most `timeout`.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 512];
    // Bytes seen at the last look, and the pause before the next one: it doubles while
    // nothing new arrives (up to MAX_PAUSE), so thousands of stalled ClientHellos do not
    // keep the daemon busy polling them.
    let (mut seen, mut pause) = (0, MIN_PAUSE);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, stream.peek(&mut buf)).await {
            Err(_) => return Detected::Timeout,
            Ok(Err(e)) => return Detected::Other(format!("read error: {e}")),
            Ok(Ok(0)) => return Detected::Closed,
            Ok(Ok(n)) => n,
        };
        let b = &buf[..n];
        match classify(b) {
            Some(d) => return d,
            None => {
                // A ClientHello still arriving: wait for more bytes.
                let want = match sni::parse(b) {
                    Hello::Incomplete(w) => w.min(MAX_HELLO),
                    _ => unreachable!("classify returns None only for an incomplete hello"),
                };
                if want > buf.len() {
                    buf.resize(want, 0);
                }
                if Instant::now() >= deadline {
                    return Detected::Timeout;
                }
                // peek returns at once while data is queued: back off.
                pause = if n > seen {
                    MIN_PAUSE
                } else {
                    (pause * 2).min(MAX_PAUSE)
                };
                seen = n;
                tokio::time::sleep(pause.min(left)).await;
            }
        }
    }
}

/// Decides on the bytes so far; `None` when a TLS ClientHello is not complete yet.
pub fn classify(b: &[u8]) -> Option<Detected> {
    match b.first()? {
        0x16 => match sni::parse(b) {
            Hello::Complete { sni } => Some(Detected::Tls { sni }),
            Hello::Incomplete(n) if n <= MAX_HELLO => None,
            Hello::Incomplete(_) => Some(Detected::Other("ClientHello too large".into())),
            Hello::Invalid(why) => Some(Detected::Other(why.into())),
        },
        b'A'..=b'Z' | b'\r' | b'\n' => {
            // A method token: upper-case letters up to the first space. hyper checks the rest.
            let token_ok = b
                .iter()
                .skip_while(|c| matches!(c, b'\r' | b'\n'))
                .take_while(|&&c| c != b' ')
                .all(u8::is_ascii_uppercase);
            Some(if token_ok {
                Detected::Http
            } else {
                Detected::Other("neither an HTTP request line nor TLS".into())
            })
        }
        _ => Some(Detected::Other(
            "neither an HTTP request line nor TLS".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_tls_and_others() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"DELE"), Some(Detected::Http));
        assert_eq!(classify(b"\r\nPOST /x HTTP/1.1"), Some(Detected::Http));
        assert!(matches!(
            classify(b"get / HTTP/1.1"),
            Some(Detected::Other(_))
        ));
        assert!(matches!(
            classify(b"SSH-2.0-OpenSSH"),
            Some(Detected::Other(_))
        ));
        assert!(matches!(
            classify(&[0, 0, 0, 8, 4, 210, 22, 47]),
            Some(Detected::Other(_))
        ));
        assert_eq!(classify(&[0x16, 3, 1]), None);
        assert_eq!(classify(b""), None);
    }
}
