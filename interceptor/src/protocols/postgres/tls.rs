//! Upstream TLS with rustls (ring): `verify-full` checks the chain and the name,
//! `prefer`/`require` encrypt without verification (like libpq's modes of the same names).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::{PgError, Result};
use crate::policy::{PostgresResource, TlsMode};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// System roots plus the Mozilla roots, loaded once.
fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            Arc::new(roots)
        })
        .clone()
}

/// The client config for this resource (`None` for `tls: disable`).
pub fn config(name: &str, r: &PostgresResource) -> Result<Option<Arc<ClientConfig>>> {
    let err = |message: String| PgError::Tls {
        resource: name.to_owned(),
        message,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?;
    let cfg = match r.tls {
        TlsMode::Disable => return Ok(None),
        TlsMode::Prefer | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyFull => {
            let roots = match &r.ca_file {
                None => default_roots(),
                Some(path) => {
                    let mut roots = RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(path)
                        .map_err(|e| err(format!("cannot read ca_file {}: {e}", path.display())))?;
                    for c in certs {
                        let c = c.map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
                        roots
                            .add(c)
                            .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
                    }
                    if roots.is_empty() {
                        return Err(err(format!(
                            "ca_file {} holds no certificate",
                            path.display()
                        )));
                    }
                    Arc::new(roots)
                }
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(cfg)))
}

/// The name verified against the certificate.
pub fn server_name(name: &str, r: &PostgresResource) -> Result<ServerName<'static>> {
    match &r.server_name {
        Some(n) => ServerName::try_from(n.clone()).map_err(|e| PgError::Tls {
            resource: name.to_owned(),
            message: format!("server_name {n:?}: {e}"),
        }),
        None => Ok(ServerName::IpAddress(r.address.into())),
    }
}

/// The `tls-server-end-point` channel binding data of a server certificate (RFC 5929): its
/// hash with the hash function of its signature algorithm, SHA-256 for MD5 and SHA-1.
/// `None` when that is undefined (Ed25519, Ed448) or the certificate cannot be parsed.
pub fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    /// One DER TLV: (tag, contents, rest).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = b.split_first()?;
        let (&l0, mut rest) = rest.split_first()?;
        let len = if l0 < 0x80 {
            l0 as usize
        } else {
            let n = (l0 & 0x7f) as usize;
            if n == 0 || n > 4 {
                return None;
            }
            let (lb, r) = rest.split_at_checked(n)?;
            rest = r;
            lb.iter().fold(0usize, |a, &x| (a << 8) | x as usize)
        };
        let (content, rest) = rest.split_at_checked(len)?;
        Some((tag, content, rest))
    }
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (0x30, body, _) = tlv(cert)? else {
        return None;
    };
    let (0x30, _tbs, rest) = tlv(body)? else {
        return None;
    };
    let (0x30, alg, _) = tlv(rest)? else {
        return None;
    };
    let (0x06, oid, _) = tlv(alg)? else {
        return None;
    };
    const RSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
    const RSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
    const ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
    const ECDSA_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
    const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    const ED448: &[u8] = &[0x2b, 0x65, 0x71];
    Some(match oid {
        RSA_SHA384 | ECDSA_SHA384 => sha2::Sha384::digest(cert).to_vec(),
        RSA_SHA512 | ECDSA_SHA512 => sha2::Sha512::digest(cert).to_vec(),
        ED25519 | ED448 => return None,
        _ => sha2::Sha256::digest(cert).to_vec(),
    })
}

/// Accepts any certificate (tls: prefer/require), still checking handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::server_end_point;

    /// SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID } (signature algorithm) }
    fn cert(oid: &[u8]) -> Vec<u8> {
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let mut body = vec![0x30, 0x00, 0x30, alg.len() as u8];
        body.extend(alg);
        let mut c = vec![0x30, body.len() as u8];
        c.extend(body);
        c
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let ecdsa_sha256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        let ecdsa_sha384 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        assert_eq!(server_end_point(&cert(&ecdsa_sha256)).unwrap().len(), 32);
        assert_eq!(server_end_point(&cert(&ecdsa_sha384)).unwrap().len(), 48);
        assert_eq!(
            server_end_point(&cert(&sha1_rsa)).unwrap().len(),
            32,
            "SHA-1 → SHA-256"
        );
        assert_eq!(
            server_end_point(&cert(&[0x2b, 0x65, 0x70])),
            None,
            "Ed25519"
        );
        assert_eq!(server_end_point(b"\x30\x05garbage"), None);
    }
}
