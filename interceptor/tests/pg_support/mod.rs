//! A throwaway PostgreSQL 15 cluster for tests: found on the machine or installed from
//! Debian's packages, initialised in a temp dir as the `postgres` user, listening only on
//! 127.0.0.2 at a free port, SCRAM for everyone but `md5user` (md5). Optionally with TLS
//! (`ssl=on`, a test CA and server certificate made with the `openssl` CLI; then only
//! `hostssl` logins are accepted). The server log (connections logged) is
//! `dir/server.log`. Stopped on drop.
//!
//! Also finds the client tools: psql, pgbench, and a Python with psycopg 3 or asyncpg
//! (installed with pip, or from Debian's packages, when missing).
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const HOST: &str = "127.0.0.2";
pub const APP_PASSWORD: &str = "s3cret-app-pw";
pub const MD5_PASSWORD: &str = "md5-pw";

pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn apt_install(pkgs: &[&str]) {
    let _ = Command::new("apt-get").arg("update").status();
    let ok = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok && ci() {
        panic!("apt-get install {pkgs:?} failed and CI=true: the PostgreSQL tests need it");
    }
}

/// Directory with initdb and postgres, installing postgresql-15 when missing.
pub fn bindir() -> PathBuf {
    let find = || {
        let d = PathBuf::from("/usr/lib/postgresql/15/bin");
        if d.join("initdb").exists() && d.join("postgres").exists() {
            return Some(d);
        }
        None
    };
    if let Some(d) = find() {
        return d;
    }
    apt_install(&["postgresql-15", "postgresql-client-15"]);
    find().unwrap_or_else(|| panic!("PostgreSQL 15 binaries not found in /usr/lib/postgresql/15/bin (apt-get install postgresql-15)"))
}

/// Path of pgbench (from postgresql-15, installed with the server).
pub fn pgbench() -> PathBuf {
    bindir().join("pgbench")
}

/// A Python client library the tests drive: how to check it, and where to get it.
struct PyLib {
    /// Checked with `python -c`: exits 0 when the library is there and new enough.
    check: &'static str,
    /// `pip install` spec (PyPI), tried first.
    pip: &'static str,
    /// Debian package, tried when pip cannot.
    apt: &'static str,
}

const PSYCOPG: PyLib = PyLib {
    check: "import psycopg, sys; sys.exit(0 if psycopg.__version__ >= '3.1' else 1)",
    pip: "psycopg[binary]",
    apt: "python3-psycopg",
};

const ASYNCPG: PyLib = PyLib {
    check: "import asyncpg",
    pip: "asyncpg",
    apt: "python3-asyncpg",
};

/// A Python interpreter that can `import psycopg` (version 3), installing psycopg when
/// missing: `pip install psycopg[binary]` (PyPI), else Debian's `python3-psycopg`.
/// `None` (with the reason printed) when impossible; under CI=true that is a panic.
pub fn python() -> Option<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    found(PY.get_or_init(|| find_python(&PSYCOPG)))
}

/// A Python interpreter that can `import asyncpg`, installed the same way (pip `asyncpg`,
/// else Debian's `python3-asyncpg`).
pub fn python_asyncpg() -> Option<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    found(PY.get_or_init(|| find_python(&ASYNCPG)))
}

fn found(r: &Result<PathBuf, String>) -> Option<PathBuf> {
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) if ci() => panic!("{why}, and CI=true: the Python client tests need it"),
        Err(why) => {
            eprintln!("SKIP: {why}");
            None
        }
    }
}

fn find_python(lib: &PyLib) -> Result<PathBuf, String> {
    // The interpreters to try, as absolute paths (a pyenv shim resolves to its target).
    let candidates = || -> Vec<PathBuf> {
        let mut v = Vec::new();
        for py in ["python3", "/usr/bin/python3"] {
            let out = Command::new(py)
                .args(["-c", "import sys; print(sys.executable)"])
                .stderr(Stdio::null())
                .output();
            if let Ok(o) = out {
                let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                if o.status.success() && p.is_absolute() && !v.contains(&p) {
                    v.push(p);
                }
            }
        }
        v
    };
    let with_lib = |cands: &[PathBuf]| {
        cands
            .iter()
            .find(|p| {
                Command::new(p)
                    .args(["-c", lib.check])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .cloned()
    };
    let cands = candidates();
    if let Some(p) = with_lib(&cands) {
        return Ok(p);
    }
    for py in &cands {
        let pip = |extra: &[&str]| {
            Command::new(py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .arg(lib.pip)
                .status()
                .is_ok_and(|s| s.success())
        };
        eprintln!("installing {} for {} with pip", lib.pip, py.display());
        // Debian's own Python refuses pip installs (PEP 668) unless told otherwise.
        if pip(&[]) || pip(&["--break-system-packages"]) {
            if let Some(p) = with_lib(std::slice::from_ref(py)) {
                return Ok(p);
            }
        }
    }
    apt_install(&["python3", lib.apt]);
    with_lib(&candidates()).ok_or_else(|| {
        format!(
            "no Python with {}: `pip install {}` and `apt-get install {}` both failed",
            lib.pip, lib.pip, lib.apt
        )
    })
}

/// Path of psql, installing the client when missing.
pub fn psql() -> PathBuf {
    for p in ["/usr/bin/psql", "/usr/lib/postgresql/15/bin/psql"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    apt_install(&["postgresql-client-15"]);
    PathBuf::from("/usr/bin/psql")
}

fn postgres_ids() -> (u32, u32) {
    let lookup = || nix::unistd::User::from_name("postgres").ok().flatten();
    let user = match lookup() {
        Some(u) => u,
        None => {
            let _ = Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home", "postgres"])
                .status();
            lookup().expect("a `postgres` system user (useradd failed)")
        }
    };
    (user.uid.as_raw(), user.gid.as_raw())
}

pub struct Pg {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
    bin: PathBuf,
    pub certs: Option<Certs>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Test certificates made with the `openssl` CLI: a CA, a server certificate it signed for
/// 127.0.0.2 (and `db.test`), and an unrelated CA.
pub struct Certs {
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

const OPENSSL_CNF: &str = "[req]
distinguished_name = dn
prompt = no
[dn]
CN = interceptor test
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.2,DNS:db.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

fn openssl() -> PathBuf {
    if !Path::new("/usr/bin/openssl").exists() {
        apt_install(&["openssl"]);
    }
    PathBuf::from("/usr/bin/openssl")
}

impl Certs {
    fn make(dir: &Path, uid: u32, gid: u32) -> Certs {
        let cnf = dir.join("openssl.cnf");
        std::fs::write(&cnf, OPENSSL_CNF).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(openssl()).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
        let cnf_s = cnf.to_str().unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (key, cert, cn) in [
            ("ca.key", "ca.pem", "/CN=interceptor test CA"),
            ("wrong-ca.key", "wrong-ca.pem", "/CN=some other CA"),
        ] {
            let mut a = vec!["req", "-x509", "-config", cnf_s, "-extensions", "ca_ext"];
            a.extend(ec);
            let (k, c) = (p(key), p(cert));
            a.extend(["-keyout", &k, "-out", &c, "-days", "3", "-subj", cn]);
            run(&a);
        }
        let (key, csr, crt) = (p("server.key"), p("server.csr"), p("server.crt"));
        let mut a = vec!["req", "-new", "-config", cnf_s];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.2"]);
        run(&a);
        let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "3",
            "-extfile",
            cnf_s,
            "-extensions",
            "server_ext",
        ]);
        // The server refuses a key file others can read.
        nix::unistd::chown(Path::new(&key), Some(uid.into()), Some(gid.into())).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&crt, std::fs::Permissions::from_mode(0o644)).unwrap();
        Certs {
            ca: ca.into(),
            wrong_ca: p("wrong-ca.pem").into(),
            server_cert: crt.into(),
            server_key: key.into(),
        }
    }
}

impl Pg {
    pub fn start() -> Pg {
        Pg::start_with(false)
    }

    /// A cluster with `ssl=on` that only accepts TLS logins over TCP.
    pub fn start_tls() -> Pg {
        Pg::start_with(true)
    }

    fn start_with(tls: bool) -> Pg {
        let bin = bindir();
        let (uid, gid) = postgres_ids();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        nix::unistd::chown(dir.path(), Some(uid.into()), Some(gid.into())).unwrap();
        nix::unistd::chown(&data, Some(uid.into()), Some(gid.into())).unwrap();
        let out = Command::new(bin.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let certs = tls.then(|| Certs::make(dir.path(), uid, gid));
        let (host, nossl) = if tls {
            ("hostssl", "hostnossl all all 127.0.0.0/8 reject\n")
        } else {
            ("host", "")
        };
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n{nossl}{host} all md5user 127.0.0.0/8 md5\n{host} all all 127.0.0.0/8 scram-sha-256\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.args(["-D", data.to_str().unwrap()])
            .args(["-c", &format!("listen_addresses={HOST}")])
            .args(["-c", &format!("port={port}")])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.path().display()),
            ])
            .args([
                "-c",
                "password_encryption=scram-sha-256",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=50",
                "-c",
                "log_connections=on",
            ]);
        if let Some(c) = &certs {
            cmd.args(["-c", "ssl=on"])
                .args(["-c", &format!("ssl_cert_file={}", c.server_cert.display())])
                .args(["-c", &format!("ssl_key_file={}", c.server_key.display())]);
        }
        let child = cmd
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pg = Pg {
            port,
            dir,
            child,
            bin,
            certs,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.sql_ok("postgres", "SELECT 1") {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within 30 s: {}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg.setup();
        pg
    }

    /// Runs SQL as the superuser over the unix socket; panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.admin(db, sql).output().unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sql` as the superuser: its output, or `None` when it fails (e.g. a table not made yet).
    pub fn try_sql(&self, db: &str, sql: &str) -> Option<String> {
        let out = self.admin(db, sql).stderr(Stdio::null()).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sql_ok(&self, db: &str, sql: &str) -> bool {
        self.admin(db, sql)
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn admin(&self, db: &str, sql: &str) -> Command {
        let mut c = Command::new(psql());
        c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        c
    }

    fn setup(&self) {
        self.sql(
            "postgres",
            &format!("CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'"),
        );
        self.sql("postgres", &format!("SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD '{MD5_PASSWORD}'"));
        self.sql("postgres", "CREATE DATABASE app OWNER app");
        self.sql(
            "app",
            "SET ROLE app;
             CREATE TABLE users (id int PRIMARY KEY, name text, email text, ssn text, phone text, note text);
             INSERT INTO users VALUES
               (123456789, 'Alice Martin', 'alice.martin@example.com', '078-05-1120', '+1 415 555 0132', 'prefers email'),
               (2, 'Bob Chen', 'bob.chen@example.org', '219-09-9999', '+44 20 7946 0958', 'card 4111 1111 1111 1111 on file'),
               (3, 'Chloé Dubois', 'chloe@example.fr', '536-90-4399', '+33 1 23 45 67 89', 'no notes');
             CREATE TABLE orders (id serial PRIMARY KEY, user_id int, total numeric);
             INSERT INTO orders (user_id, total) SELECT 1 + i % 3, i * 10 FROM generate_series(1, 50) i;
             CREATE TABLE imports (id int, email text, note text);
             GRANT SELECT ON users, orders TO md5user;",
        );
    }

    /// The server's log so far (connections are logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn count(&self, table: &str) -> i64 {
        self.sql("app", &format!("SELECT count(*) FROM {table}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.bin;
    }
}

/// The `agent` read rule most PostgreSQL tests start from (a `sql_rules` list item).
pub const READ_ONLY_RULE: &str = "  - name: agent-read
    identity: agent
    resource: appdb
    action: allow
    operations: [read, transaction, session]
";

/// The policy the PostgreSQL root tests share: identity `agent`, a TCP rule for
/// 127.0.0.2:`port`, and resource `appdb` (database `app`, login `user` with `password` in
/// a password file written into `dir`). `resource_extra` adds lines to the resource
/// (indented 6: `tls:`, `masking:` …); `sql_rules` is the list under `sql_rules:`.
pub fn appdb_policy_yaml(
    dir: &Path,
    port: u16,
    user: &str,
    password: &str,
    resource_extra: &str,
    sql_rules: &str,
) -> String {
    let pw = dir.join("appdb.pass");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    format!(
        "version: 1
identities:
  agent: {{}}
rules:
  - name: allow-db
    action: allow
    to:
      - cidr: 127.0.0.2/32
        ports: {port}
resources:
  appdb:
    postgres:
      address: 127.0.0.2
      port: {port}
      database: app
      user: {user}
      password_file: {pw}
{resource_extra}sql_rules:
{sql_rules}",
        pw = pw.display()
    )
}
