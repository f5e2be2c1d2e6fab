//! A throwaway PostgreSQL 15 cluster for the demo and `bench pg`: Debian's packages
//! (installed when missing), `initdb` as the `postgres` user, listening only on a loopback
//! address at a free port, SCRAM for TCP logins, trust on its private unix socket for the
//! superuser. Stopped on drop. Also finds (or installs) client tools: pgbench, pgbouncer,
//! a Python with psycopg 3.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{apt_install, output, run};

pub const BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// The PostgreSQL 15 server binaries, installing Debian's packages when missing.
pub fn ensure_postgres() -> Result<PathBuf> {
    let bin = PathBuf::from(BINDIR);
    let present = || {
        ["initdb", "postgres", "pgbench", "psql"]
            .iter()
            .all(|b| bin.join(b).exists())
    };
    if !present() {
        apt_install(&["postgresql-15", "postgresql-client-15"])?;
        if !present() {
            bail!("PostgreSQL 15 not found in {BINDIR} after installing postgresql-15");
        }
    }
    Ok(bin)
}

/// pgbouncer, installed when missing; `None` when that fails (the comparison is skipped).
pub fn ensure_pgbouncer() -> Option<PathBuf> {
    crate::util::ensure_daemon_package("/usr/sbin/pgbouncer", "pgbouncer")
}

/// A Python interpreter that can `import psycopg` (3.x): `python3` or `/usr/bin/python3`;
/// installs Debian's python3-psycopg, or psycopg[binary] with pip, when neither can.
pub fn psycopg_python() -> Result<PathBuf> {
    let candidates = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for py in ["python3", "/usr/bin/python3"] {
            let Ok(o) = Command::new(py)
                .args(["-c", "import sys; print(sys.executable)"])
                .stderr(Stdio::null())
                .output()
            else {
                continue;
            };
            let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if o.status.success() && p.is_absolute() && !v.contains(&p) {
                v.push(p);
            }
        }
        v
    };
    let ok = |p: &Path| {
        Command::new(p)
            .args(["-c", "import psycopg"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(p) = candidates().into_iter().find(|p| ok(p)) {
        return Ok(p);
    }
    if apt_install(&["python3", "python3-psycopg"]).is_ok() && ok(Path::new("/usr/bin/python3")) {
        return Ok("/usr/bin/python3".into());
    }
    for py in candidates() {
        for extra in [&[][..], &["--break-system-packages"][..]] {
            let _ = Command::new(&py)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(extra)
                .arg("psycopg[binary]")
                .status();
            if ok(&py) {
                return Ok(py);
            }
        }
    }
    bail!("no Python with psycopg 3 (tried apt-get install python3-psycopg and pip install psycopg[binary])")
}

/// uid and gid of the `postgres` system user, creating it when missing.
fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id")
            .args([flag, "postgres"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "postgres",
        ]))?;
    }
    Ok((
        id("-u").context("uid of postgres")?,
        id("-g").context("gid of postgres")?,
    ))
}

/// A free TCP port on `host`.
pub fn free_port(host: &str) -> Result<u16> {
    Ok(TcpListener::bind((host, 0))
        .with_context(|| format!("bind {host}:0"))?
        .local_addr()?
        .port())
}

/// Random hex from the kernel.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub struct Cluster {
    pub port: u16,
    /// Holds `data/`, the unix socket and `server.log`.
    pub dir: PathBuf,
    pub bindir: PathBuf,
    child: Child,
}

impl Cluster {
    /// A fresh cluster in `dir` (removed first). When the `postgres` user cannot reach
    /// `dir` (e.g. the workspace is under /root), a directory under /tmp is used instead.
    pub fn start(dir: &Path, host: &'static str, settings: &[(&str, &str)]) -> Result<Cluster> {
        let bindir = ensure_postgres()?;
        let (uid, gid) = postgres_ids()?;
        let mut dir = dir.to_path_buf();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let reachable = Command::new("test")
            .arg("-x")
            .arg(&dir)
            .uid(uid)
            .gid(gid)
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            let _ = fs::remove_dir_all(&dir);
            let tmp = std::env::temp_dir().join(format!(
                "interceptor-{}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("pg")
            ));
            println!(
                "    the postgres user cannot reach {}; using {}",
                dir.display(),
                tmp.display()
            );
            dir = tmp;
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir)?;
        }
        let data = dir.join("data");
        fs::create_dir(&data)?;
        for d in [&dir, &data] {
            output(Command::new("chown").arg(format!("{uid}:{gid}")).arg(d))?;
        }
        output(
            Command::new(bindir.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .uid(uid)
                .gid(gid),
        )
        .context("initdb")?;
        fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.0/8 scram-sha-256\n",
        )?;
        let port = free_port(host)?;
        let log = fs::File::create(dir.join("server.log"))?;
        let mut cmd = Command::new(bindir.join("postgres"));
        cmd.arg("-D").arg(&data);
        let mut set = |k: &str, v: &str| {
            cmd.arg("-c").arg(format!("{k}={v}"));
        };
        set("listen_addresses", host);
        set("port", &port.to_string());
        set(
            "unix_socket_directories",
            dir.to_str().context("utf-8 path")?,
        );
        set("password_encryption", "scram-sha-256");
        for (k, v) in settings {
            set(k, v);
        }
        let child = cmd
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting postgres")?;
        let mut c = Cluster {
            port,
            dir,
            bindir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c
            .admin("postgres", "SELECT 1")
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
        {
            if Instant::now() > deadline || c.child.try_wait()?.is_some() {
                bail!(
                    "PostgreSQL did not start; its log:\n{}",
                    fs::read_to_string(c.dir.join("server.log")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    fn admin(&self, db: &str, sql: &str) -> Command {
        let mut c = Command::new(self.bindir.join("psql"));
        c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .stdin(Stdio::null());
        c
    }

    /// Runs SQL as the superuser (unix socket) and returns psql's unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        output(&mut self.admin(db, sql))
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (ends sessions, checkpoints, exits).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
