//! A throwaway PostgreSQL 15 cluster for tests: found on the machine or installed from
//! Debian's packages, initialised in a temp dir as the `postgres` user, listening only on
//! 127.0.0.2 at a free port, SCRAM for everyone but `md5user` (md5). Stopped on drop.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HOST: &str = "127.0.0.2";
pub const APP_PASSWORD: &str = "s3cret-app-pw";
pub const MD5_PASSWORD: &str = "md5-pw";

fn ci() -> bool {
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
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    pub fn start() -> Pg {
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
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all md5user 127.0.0.0/8 md5\nhost all all 127.0.0.0/8 scram-sha-256\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(bin.join("postgres"))
            .args(["-D", data.to_str().unwrap()])
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
            ])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Pg {
            port,
            dir,
            child,
            bin,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pg.sql_ok("postgres", "SELECT 1") {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within 30 s"
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
             GRANT SELECT ON users, orders TO md5user;",
        );
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
