//! TLS for HTTP services: the local CA (rcgen; `interceptor ca init|export`), per-host
//! certificates it mints (cached), the rustls server config offered to the agent, and the
//! upstream rustls client config that verifies the real server (system roots, Mozilla
//! roots and the service's optional `ca_file`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::mint_cache::{now_secs, MintCache};
use super::server_name::{canonical, shown, Canonical};

/// Errors of the local CA and of TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("local CA: cannot {what} {path}: {source} (check the state directory's permissions, or run `interceptor ca init`)")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "local CA at {path} is unusable: {message} (move it away and run `interceptor ca init`)"
    )]
    BadCa { path: PathBuf, message: String },
    #[error("cannot mint a certificate for {host}: {message}")]
    Mint { host: String, message: String },
    #[error("service {service}: ca_file {path}: {message}")]
    CaFile {
        service: String,
        path: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the CA lives: `<state dir>/ca/ca.pem` (0644: agents running as another user read
/// it) and `ca.key` (0600).
pub fn ca_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let d = state_dir.join("ca");
    (d.join("ca.pem"), d.join("ca.key"))
}

/// The local CA: signs per-host certificates for intercepted TLS.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every minted leaf (minting is then one signature).
    leaf_key: KeyPair,
    leaf_key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
    minted: Mutex<MintCache>,
}

/// Modes of the CA's files: the certificate is public, the key is not.
const CERT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

/// Creates the CA if it does not exist yet (or always, with `force`). Returns its cert path
/// and whether it was created.
pub fn init(state_dir: &Path, force: bool) -> Result<(PathBuf, bool), TlsError> {
    let (cert, key) = ca_paths(state_dir);
    if cert.exists() && key.exists() && !force {
        // A CA written by an older version has its certificate 0600; agents running as
        // another user (`run --user`) must read it. Best effort: the owner can do this.
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&cert) {
            if m.permissions().mode() & 0o044 != 0o044 {
                let _ = std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(CERT_MODE));
            }
        }
        return Ok((cert, false));
    }
    let dir = cert.parent().expect("ca dir");
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        what: "create",
        path: dir.into(),
        source,
    })?;
    let bad = |message: String| TlsError::BadCa {
        path: cert.clone(),
        message,
    };
    let kp = KeyPair::generate().map_err(|e| bad(e.to_string()))?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| bad(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "interceptor local CA");
    dn.push(DnType::OrganizationName, "interceptor");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let c = p.self_signed(&kp).map_err(|e| bad(e.to_string()))?;
    write_file(&key, kp.serialize_pem().as_bytes(), KEY_MODE)?;
    write_file(&cert, c.pem().as_bytes(), CERT_MODE)?;
    Ok((cert, true))
}

/// Writes `data` to `path` atomically (a temporary file of this process, then renamed):
/// a reader sees the old file or the new one, never a partial one.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| TlsError::Io {
        what: "write",
        path: path.into(),
        source,
    };
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // The umask may have taken bits away from `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Writes the client bundle (`bundle`) to `path`, 0644, atomically: every `run` sharing a
/// state directory rewrites it while other agents may be reading it.
pub fn write_bundle(path: &Path, ca_pem: &str) -> Result<(), TlsError> {
    write_file(path, bundle(ca_pem).as_bytes(), CERT_MODE)
}

impl Ca {
    /// Loads the CA of `state_dir`, creating it first when missing.
    pub fn load_or_init(state_dir: &Path) -> Result<Ca, TlsError> {
        let (cert, _) = init(state_dir, false)?;
        let (_, key) = ca_paths(state_dir);
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TlsError::Io {
                what: "read",
                path: p.into(),
                source,
            })
        };
        let cert_pem = read(&cert)?;
        let bad = |message: String| TlsError::BadCa {
            path: cert.clone(),
            message,
        };
        let kp = KeyPair::from_pem(&read(&key)?).map_err(|e| bad(format!("key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, kp).map_err(|e| bad(e.to_string()))?;
        let ca_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let leaf_key = KeyPair::generate().map_err(|e| bad(e.to_string()))?;
        let leaf_key_der = leaf_key.serialize_der();
        Ok(Ca {
            cert_pem,
            issuer,
            leaf_key,
            leaf_key_der,
            ca_der,
            minted: Mutex::default(),
        })
    }

    /// The server config presenting a certificate for `host` (a DNS name or an IP
    /// address), minted on first use and cached by its canonical form
    /// (`server_name::canonical`; other names are refused). ALPN: h2, then http/1.1.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let name = canonical(host).map_err(|message| TlsError::Mint {
            host: shown(host),
            message,
        })?;
        self.server_config_for(&name)
    }

    /// `server_config` for a name already in canonical form.
    pub fn server_config_for(&self, name: &Canonical) -> Result<Arc<ServerConfig>, TlsError> {
        let cached = self
            .minted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name, now_secs());
        if let Some(c) = cached {
            return Ok(c);
        }
        let host = name.to_string();
        let (ck, not_after) = self.mint_until(&host)?;
        let mint = |message: String| TlsError::Mint {
            host: shown(&host),
            message,
        };
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| mint(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(ck)));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        self.minted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), cfg.clone(), not_after);
        Ok(cfg)
    }

    /// How many certificates are cached.
    pub fn minted(&self) -> usize {
        self.minted.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// A certificate for `host` signed by the CA, with the CA in its chain.
    pub fn mint(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        self.mint_until(host).map(|(ck, _)| ck)
    }

    /// `mint`, and when the certificate expires (Unix seconds).
    fn mint_until(&self, host: &str) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
        let host = host.to_owned();
        let mint = |message: String| TlsError::Mint {
            host: shown(&host),
            message,
        };
        let mut p = CertificateParams::new(vec![host.clone()]).map_err(|e| mint(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host.as_str());
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let now = time_now_days();
        p.not_before = rcgen::date_time_ymd(now.0, now.1, 1);
        p.not_after = rcgen::date_time_ymd(now.0 + 1, now.1, 1);
        let not_after = p.not_after.unix_timestamp();
        // Unique per certificate (RFC 5280 4.1.2.2; NSS rejects a reused issuer + serial),
        // which rcgen's default (a hash of the one leaf key) is not: 16 random bytes,
        // positive.
        let mut serial = [0u8; 16];
        provider()
            .secure_random
            .fill(&mut serial)
            .map_err(|_| mint("no random bytes for the serial number".into()))?;
        serial[0] = (serial[0] & 0x7f) | 0x40;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let leaf = p
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| mint(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| mint(e.to_string()))?;
        let ck = CertifiedKey::new(vec![leaf.der().clone(), self.ca_der.clone()], signer);
        Ok((Arc::new(ck), not_after))
    }
}

/// (year, month) of today, for certificate validity (from a month ago, for a year).
fn time_now_days() -> (i32, u8) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant), one month back.
    let z = (secs / 86400) as i64 - 31 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8)
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// System roots plus the Mozilla roots, loaded once.
fn default_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        roots
    })
}

/// The upstream client config: default roots plus `ca_file`; ALPN http/1.1.
pub fn client_config(service: &str, ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = default_roots().clone();
    if let Some(path) = ca_file {
        let err = |message: String| TlsError::CaFile {
            service: service.to_owned(),
            path: path.into(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
        let mut n = 0;
        for c in certs {
            roots
                .add(c.map_err(|e| err(e.to_string()))?)
                .map_err(|e| err(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(err("holds no certificate".into()));
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A PEM bundle for clients: the system's roots file (when there is one) and the local CA.
pub fn bundle(ca_pem: &str) -> String {
    let mut out = String::new();
    for p in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(s) = std::fs::read_to_string(p) {
            out.push_str(&s);
            if !out.ends_with('\n') {
                out.push('\n');
            }
            break;
        }
    }
    out.push_str(ca_pem);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn ca_is_private_and_mints_verifiable_certs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, created) = init(dir.path(), false).unwrap();
        assert!(created);
        let (_, key) = ca_paths(dir.path());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644, "the certificate is public");
        assert!(!init(dir.path(), false).unwrap().1, "kept when it exists");
        let ca = Ca::load_or_init(dir.path()).unwrap();
        let a = ca.server_config("api.test").unwrap();
        let b = ca.server_config("API.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "cached per host");
        // The minted chain verifies against the CA for the name.
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&cert).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let ck = ca.mint("api.test").unwrap();
        let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
        verifier
            .verify_server_cert(
                &ck.cert[0],
                &ck.cert[1..],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
        let other = rustls::pki_types::ServerName::try_from("other.test").unwrap();
        assert!(verifier
            .verify_server_cert(
                &ck.cert[0],
                &[],
                &other,
                &[],
                rustls::pki_types::UnixTime::now()
            )
            .is_err());
    }

    #[test]
    fn case_and_dot_variants_mint_one_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_init(dir.path()).unwrap();
        let host = "interceptor-api.example.test";
        let (mut ok, mut refused) = (0, 0);
        for i in 0..1000u32 {
            let mut v: String = host
                .chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> (j % 24)) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            match i % 4 {
                1 => v.push('.'),
                2 | 3 => v.push_str(&".".repeat(2 + i as usize)),
                _ => {}
            }
            match ca.server_config(&v) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.to_string().len() < 300, "name cut: {e}");
                    refused += 1;
                }
            }
        }
        assert_eq!((ok, refused), (500, 500));
        assert_eq!(ca.minted(), 1, "one certificate for every spelling");
        // Spellings of one address: one more.
        for a in ["127.0.0.51", "::ffff:127.0.0.51", "0:0::ffff:7f00:33"] {
            ca.server_config(a).unwrap();
        }
        assert_eq!(ca.minted(), 2);
    }

    /// The serialNumber of a DER certificate (SEQUENCE { SEQUENCE { [0] version, INTEGER … }}).
    fn der_serial(der: &[u8]) -> &[u8] {
        // (tag, content start, content length) of the element at `b[0]`.
        fn tlv(b: &[u8]) -> (u8, usize, usize) {
            let (l, n) = match b[1] {
                l if l < 0x80 => (l as usize, 0),
                l => {
                    let n = (l & 0x7f) as usize;
                    (b[2..2 + n].iter().fold(0, |a, &x| a << 8 | x as usize), n)
                }
            };
            (b[0], 2 + n, l)
        }
        let (_, cert, _) = tlv(der);
        let tbs = &der[cert..];
        let (_, at, _) = tlv(tbs);
        let mut b = &tbs[at..];
        let (tag, at, len) = tlv(b);
        if tag == 0xa0 {
            b = &b[at + len..];
        }
        let (tag, at, len) = tlv(b);
        assert_eq!(tag, 2, "INTEGER");
        &b[at..at + len]
    }

    #[test]
    fn minted_certificates_have_distinct_serials() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_init(dir.path()).unwrap();
        let serial = |h: &str| {
            let ck = ca.mint(h).unwrap();
            der_serial(&ck.cert[0]).to_vec()
        };
        let (a, b, a2) = (serial("api.test"), serial("alt.test"), serial("api.test"));
        assert_ne!(a, b);
        assert_ne!(a, a2, "a renewed certificate gets a new serial too");
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn bundle_is_public_and_replaced_whole_and_old_private_ca_pem_is_opened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = init(dir.path(), false).unwrap();
        let bundle = cert.with_file_name("bundle.pem");
        std::fs::write(&bundle, "old").unwrap();
        let before = std::fs::metadata(&bundle).unwrap();
        write_bundle(&bundle, "CA PEM\n").unwrap();
        let after = std::fs::metadata(&bundle).unwrap();
        assert!(std::fs::read_to_string(&bundle)
            .unwrap()
            .ends_with("CA PEM\n"));
        assert_eq!(after.permissions().mode() & 0o777, 0o644);
        use std::os::unix::fs::MetadataExt;
        assert_ne!(
            before.ino(),
            after.ino(),
            "renamed into place, not rewritten"
        );
        let left: Vec<_> = std::fs::read_dir(cert.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A CA of an older version (ca.pem 0600) is made readable when loaded.
        std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o600)).unwrap();
        Ca::load_or_init(dir.path()).unwrap();
        let mode = std::fs::metadata(&cert).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
}
