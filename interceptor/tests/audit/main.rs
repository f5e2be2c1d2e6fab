//! Root tests of the tamper-evident audit store (issue 6) on real daemons, a real
//! PostgreSQL 15 (pg_support/mod.rs) and real clients (psql, pgbench): verify, sessions
//! list/show/replay, kill -9 under load, the PostgreSQL sink through an outage, and the
//! agent locked out of the audit directory.

#[path = "../pg_support/mod.rs"]
mod pg_support;
#[path = "../support/mod.rs"]
mod support;

mod crash;
mod session;
mod sink;
mod sink_chain;

use std::{
    collections::HashSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use pg_support::{appdb_policy_yaml, Pg, APP_PASSWORD, READ_ONLY_RULE};
use serde_json::Value;
use support::*;

fn policy(env: &Env, pg: &Pg, sql_rules: &str) -> PathBuf {
    let yaml = appdb_policy_yaml(
        env.dir.path(),
        pg.port,
        "app",
        APP_PASSWORD,
        "      tls: disable
      masking:
        detectors:
          - kind: email
            strategy: partial
",
        &format!("{READ_ONLY_RULE}{sql_rules}"),
    );
    env.policy("audit.yaml", &yaml)
}

/// `interceptor run` with the default (chained) audit store.
fn run(env: &Env, policy: &Path, extra: &[&str], args: &[&str]) -> Output {
    let out = env
        .cmd()
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "--- interceptor run stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `interceptor attach` with the chained store (and `extra` flags).
fn attach(env: &Env, cg: &TestCgroup, policy: &Path, extra: &[&str]) -> Attached {
    let child = env
        .cmd()
        .arg("attach")
        .arg("--cgroup")
        .arg(&cg.path)
        .arg("--policy")
        .arg(policy)
        .args(extra)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let status = wait_for("attach daemon status", Duration::from_secs(20), || {
        let out = env.cmd().args(["status", "--json"]).output().ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array().and_then(|a| a.first().cloned())
    });
    Attached {
        child,
        listeners: Vec::new(),
        instance: status["instance"].as_str().unwrap().to_string(),
    }
}

fn cli(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("--- interceptor {args:?} ({:?}) ---\n{so}{se}", out.status);
    (out.status.code().unwrap_or(-1), so, se)
}

fn conninfo(pg: &Pg) -> String {
    format!(
        "host=127.0.0.2 port={} user=agent password=x dbname=anything",
        pg.port
    )
}

/// Every record of every chain under `<state>/audit`.
fn records(env: &Env) -> Vec<Value> {
    interceptor::audit::sessions::load(&env.state().join("audit")).unwrap()
}

/// Counts rows of the sink table (as the superuser); `None` until it exists.
fn sink_count(sink: &Pg, db: &str, cond: &str) -> Option<i64> {
    let sql = format!("SELECT count(*) FROM interceptor_audit WHERE {cond}");
    sink.try_sql(db, &sql)?.trim().parse().ok()
}
