//! Root tests of PostgreSQL enforcement through the transparent path: a real PostgreSQL 15
//! on 127.0.0.2 (see pg_support/mod.rs), psql and raw clients under `interceptor run`.

#[path = "../pg_support/mod.rs"]
mod pg_support;
#[path = "../support/mod.rs"]
mod support;

mod basics;
mod clients;
mod leaks;
mod routines;
mod upstream;

use pg_support::{appdb_policy_yaml, Pg, APP_PASSWORD, MD5_PASSWORD, READ_ONLY_RULE};
use serde_json::Value;
use support::*;

struct Setup {
    pg: Pg,
    env: Env,
    policy: std::path::PathBuf,
}

fn policy_yaml(pg: &Pg, env: &Env, user: &str, password: &str, sql_rules: &str) -> String {
    policy_yaml_with(pg, env, user, password, "      tls: disable\n", sql_rules)
}

/// `resource_extra`: more lines of the resource (indented 6), e.g. `tls:` and `ca_file:`.
fn policy_yaml_with(
    pg: &Pg,
    env: &Env,
    user: &str,
    password: &str,
    resource_extra: &str,
    sql_rules: &str,
) -> String {
    let resource = format!(
        "{resource_extra}      masking:
        columns:
          - match: users.ssn
            strategy: redact
        detectors:
          - kind: email
            strategy: partial
"
    );
    appdb_policy_yaml(
        env.dir.path(),
        pg.port,
        user,
        password,
        &resource,
        sql_rules,
    )
}

const READ_ONLY: &str = READ_ONLY_RULE;

/// Writes to `imports` (and reads of it) are allowed; listed first so it wins for them.
const WRITE_IMPORTS: &str = "  - name: agent-import
    identity: agent
    resource: appdb
    action: allow
    operations: [read, write, transaction, session]
    tables: [\"public.imports\"]
";

fn setup(user: &str, password: &str, rules: &str) -> Setup {
    let pg = Pg::start();
    let env = Env::new();
    let policy = env.policy("pg.yaml", &policy_yaml(&pg, &env, user, password, rules));
    Setup { pg, env, policy }
}

impl Setup {
    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.2 port={} user=agent password=wrong-password dbname=anything",
            self.pg.port
        )
    }

    /// psql under `interceptor run` with one `-c` per command (each its own Query).
    fn psql(&self, cmds: &[&str]) -> (String, String) {
        let psql = pg_support::psql();
        let conn = self.conninfo();
        let mut args = vec![
            psql.to_str().unwrap(),
            "-X",
            "-A",
            "-t",
            "-v",
            "VERBOSITY=verbose",
            &conn,
        ];
        for c in cmds {
            args.push("-c");
            args.push(c);
        }
        let out = self.env.run(&self.policy, &args);
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        let se = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("--- psql stdout ---\n{so}");
        (so, se)
    }

    /// A scenario of tests/support/pg_client.py (psycopg 3) under `interceptor run`;
    /// `None` when no Python with psycopg can be had (skipped, except under CI=true).
    fn psycopg(&self, scenario: &str) -> Option<Value> {
        Some(self.python_client(&pg_support::python()?, "pg_client.py", &[scenario]))
    }

    /// tests/support/pg_asyncpg.py under `interceptor run` (`None`: no asyncpg, as above).
    fn asyncpg(&self) -> Option<Value> {
        Some(self.python_client(&pg_support::python_asyncpg()?, "pg_asyncpg.py", &[]))
    }

    /// Runs `script ARGS… PORT` from tests/support with `py` under `interceptor run` and
    /// parses the one JSON object it prints.
    fn python_client(&self, py: &std::path::Path, script: &str, args: &[&str]) -> Value {
        let path = probe().with_file_name(script);
        let port = self.pg.port.to_string();
        let mut argv = vec![py.to_str().unwrap(), path.to_str().unwrap()];
        argv.extend_from_slice(args);
        argv.push(&port);
        let out = self.env.run(&self.policy, &argv);
        let so = String::from_utf8_lossy(&out.stdout);
        let se = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{script} {args:?} failed ({:?}):\n{so}\n{se}",
            out.status
        );
        eprintln!("--- {script} {args:?} ---\n{so}");
        serde_json::from_str(so.trim()).unwrap_or_else(|e| panic!("{so:?}: {e}"))
    }

    fn records(&self, kind: &str) -> Vec<Value> {
        self.env
            .audit()
            .into_iter()
            .filter(|r| r["type"] == kind)
            .collect()
    }
}

/// `id, name, email, ssn` of user 2 as the agent must see them: the email partially
/// masked by the detector, the SSN column redacted by its column rule.
fn bob_masked(row: &Value, text: &str) {
    assert_eq!(row[0], 2, "{text}");
    assert_eq!(row[1], "Bob Chen");
    let email = row[2].as_str().unwrap();
    assert!(
        email.ends_with("@example.org") && email != "bob.chen@example.org",
        "{email}"
    );
    assert_eq!(row[3], "[REDACTED]");
}

fn no_plain_pii(text: &str) {
    for secret in [
        "bob.chen@example.org",
        "alice.martin@example.com",
        "219-09-9999",
        "078-05-1120",
    ] {
        assert!(!text.contains(secret), "{secret} reached the agent: {text}");
    }
}
