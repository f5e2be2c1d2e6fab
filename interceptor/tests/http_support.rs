//! Harness of the HTTP root tests: a Python HTTP(S) upstream on 127.0.0.2
//! (support/http_upstream.py), a test CA made with rcgen, Python with requests and httpx.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use serde_json::Value;

pub const HOST: &str = "127.0.0.2";
/// What the daemon injects; the agent must never see it.
pub const TOKEN: &str = "tok-7d1f0c9e-daemon-only";

pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The upstream server; killed on drop.
pub struct Upstream {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Upstream {
    /// Plain HTTP, or HTTPS with `tls = Some((cert, key))`.
    pub fn start(dir: &Path, name: &str, tls: Option<(&Path, &Path)>) -> Upstream {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/http_upstream.py");
        let log = dir.join(format!("{name}.log"));
        let mut c = Command::new("python3");
        c.arg(script).arg(HOST).arg(&log).arg(TOKEN);
        if let Some((cert, key)) = tls {
            c.arg(cert).arg(key);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 for the upstream server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("upstream server said {line:?}"))
            .parse()
            .unwrap();
        Upstream { port, log, child }
    }

    /// The requests the server received (one JSON object each).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate it signed for api.test, cdn.test and 127.0.0.2.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn make(dir: &Path) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "upstream test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(p, ca_key);
        let key = KeyPair::generate().unwrap();
        let sp = CertificateParams::new(vec![
            "api.test".to_owned(),
            "cdn.test".to_owned(),
            HOST.to_owned(),
        ])
        .unwrap();
        let cert = sp.signed_by(&key, &issuer).unwrap();
        let t = TestCa {
            ca: dir.join("upstream-ca.pem"),
            cert: dir.join("upstream.crt"),
            key: dir.join("upstream.key"),
        };
        std::fs::write(&t.ca, ca_cert.pem()).unwrap();
        std::fs::write(&t.cert, cert.pem()).unwrap();
        std::fs::write(&t.key, key.serialize_pem()).unwrap();
        t
    }
}

/// `python3` able to import requests and httpx (installed with pip when missing; the
/// CI machine gets them from `cargo xtask setup`).
pub fn python_ok() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        let has = || {
            Command::new("python3")
                .args(["-c", "import requests, httpx"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if has() {
            return Ok(());
        }
        for extra in [&[][..], &["--break-system-packages"][..]] {
            let _ = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .args(["requests", "httpx"])
                .status();
            if has() {
                return Ok(());
            }
        }
        Err("python3 cannot import requests and httpx (pip install failed)".to_owned())
    });
    match r {
        Ok(()) => true,
        Err(why) if ci() => panic!("{why}, and CI=true"),
        Err(why) => {
            eprintln!("SKIP: {why}");
            false
        }
    }
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn json(p: &Path) -> Value {
    let s = read(p);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}: {s:?}", p.display()))
}
