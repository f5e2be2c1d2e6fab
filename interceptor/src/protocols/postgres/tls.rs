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
