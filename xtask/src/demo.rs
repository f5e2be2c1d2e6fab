//! `cargo xtask demo`: a local TCP service on 127.0.0.2, a small "agent" under
//! `interceptor run` with the demo policy: one allowed connect, one denied, and the audit
//! records that prove it. Then PostgreSQL: a throwaway server with a table of personal
//! data, a psycopg "agent" with a wrong password under `interceptor run` with
//! policies/examples/demo-postgres.yaml: an allowed SELECT with masked columns, a denied
//! DELETE and its error, and the statement audit records. Then HTTPS (demo_http.rs).

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
};

use anyhow::{bail, Context, Result};

use crate::build::{self, Profile};
use crate::pg;
use crate::util::{is_root, workspace_root};

/// A tiny echo service; counts the connections it accepted.
pub fn echo_service(addr: &str) -> Result<Arc<AtomicUsize>> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} (in use?)"))?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0
                        || s.write_all(b"echo: ")
                            .and_then(|_| s.write_all(&buf[..n]))
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(accepted)
}

pub fn run_demo() -> Result<()> {
    if !is_root() {
        bail!("the demo attaches eBPF programs to a cgroup: run it as root (sudo -E cargo xtask demo)");
    }
    build::build(Profile::Release)?;
    let root = workspace_root();
    let interceptor = build::daemon_path(Profile::Release);
    let dir = root.join("target/demo");
    fs::create_dir_all(&dir)?;
    let audit = dir.join("audit.jsonl");
    let _ = fs::remove_file(&audit);

    let allowed = echo_service("127.0.0.2:7001")?;
    let denied = echo_service("127.0.0.2:7002")?;
    let policy = root.join("policies/examples/demo.yaml");
    println!("\n==> demo: echo services on 127.0.0.2:7001 and 127.0.0.2:7002");
    println!(
        "    policy {}: allow 127.0.0.2:7001, deny the other ports",
        policy.display()
    );
    println!("==> interceptor run -- python3 xtask/demo/agent.py\n");
    let status = Command::new(&interceptor)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log", "warn", "run", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(&audit)
        .arg("--")
        .arg("python3")
        .arg(root.join("xtask/demo/agent.py"))
        .status()
        .context("starting the interceptor")?;
    if !status.success() {
        bail!("interceptor run failed: {status}");
    }
    println!("\n==> what the services saw");
    println!(
        "    127.0.0.2:7001 accepted {} connection(s) (from the proxy)",
        allowed.load(Ordering::SeqCst)
    );
    println!(
        "    127.0.0.2:7002 accepted {} connection(s) — the denied connect never reached it",
        denied.load(Ordering::SeqCst)
    );
    println!("\n==> audit records ({})", audit.display());
    for line in fs::read_to_string(&audit)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = &v["identity"];
        if v["type"] == "connection_open" {
            // Written when an allowed connection starts; its `connection` record follows
            // when it ends, with the byte counts.
            println!(
                "    open  {:<22} rule={:<17} pid={} exe={}",
                v["destination"].as_str().unwrap_or("-"),
                v["rule"].as_str().unwrap_or("(default)"),
                id["pid"],
                id["exe"].as_str().unwrap_or("?"),
            );
            continue;
        }
        println!(
            "    {:<5} {:<22} rule={:<17} pid={} exe={} up={}B down={}B\n          reason: {}",
            v["decision"].as_str().unwrap_or("?"),
            v["destination"].as_str().unwrap_or("-"),
            v["rule"].as_str().unwrap_or("(default)"),
            id["pid"],
            id["exe"].as_str().unwrap_or("?"),
            v["bytes_up"],
            v["bytes_down"],
            v["reason"].as_str().unwrap_or(""),
        );
    }
    println!("\n    raw JSON lines are in {}", audit.display());
    if denied.load(Ordering::SeqCst) != 0 {
        bail!("the denied service was reached: the demo failed");
    }
    postgres_demo(&interceptor, &dir)?;
    crate::demo_http::run(&interceptor, &dir)
}

/// 20 customers: names, emails, phones, card numbers (Luhn-valid test numbers), SSNs in
/// dashed form, and free-text notes that repeat some of it.
const CUSTOMERS: &str = "CREATE TABLE customers (
    id int PRIMARY KEY, name text NOT NULL, email text, phone text, card_number text,
    ssn text, notes text);
INSERT INTO customers VALUES
 (1, 'Maria Gonzalez', 'maria.gonzalez@gmail.com', '+1 415 555 0132', '4111 1111 1111 1111', '512-44-8721', 'Prefers email. Asked to update billing address.'),
 (2, 'James Whitaker', 'jwhitaker@outlook.com', '(212) 555-0187', '5555 5555 5555 4444', '401-23-9087', 'Called from 212-555-0199 about a double charge.'),
 (3, 'Aisha Khan', 'aisha.khan@protonmail.com', '+44 20 7946 0958', '3782 822463 10005', '623-12-4410', 'VIP. Escalations go to her assistant, omar.k@khan-holdings.co.uk.'),
 (4, 'Liam O''Connor', 'liam.oconnor@yahoo.ie', '+353 1 555 0144', '4012 8888 8888 1881', '287-65-4302', 'Card on file 4012 8888 8888 1881 expired; sent reminder.'),
 (5, 'Sofia Rossi', 'sofia.rossi@libero.it', '+39 02 5555 0199', '6011 1111 1111 1117', '134-76-2290', 'No notes.'),
 (6, 'Chen Wei', 'chen.wei@163.com', '+86 10 5555 0123', '5105 1051 0510 5100', '458-30-1177', 'SSN 458-30-1177 verified by phone on 2026-03-02.'),
 (7, 'Emily Carter', 'emily.carter@icloud.com', '(617) 555-0110', '4242 4242 4242 4242', '539-81-6604', 'Wants invoices in PDF.'),
 (8, 'Noah Schmidt', 'noah.schmidt@web.de', '+49 30 5555 0177', '4000 0566 5566 5556', '301-57-9921', 'Moved to Berlin; new IBAN DE89 3704 0044 0532 0130 00.'),
 (9, 'Olivia Martin', 'olivia.martin@orange.fr', '+33 1 55 55 01 66', '3714 496353 98431', '212-48-3356', 'Refund approved by J. Whitaker.'),
 (10, 'Lucas Silva', 'lucas.silva@uol.com.br', '+55 11 5555 0133', '6011 0009 9013 9424', '665-21-0098', 'Prefers WhatsApp: +55 11 5555 0134.'),
 (11, 'Hannah Lee', 'hannah.lee@gmail.com', '(415) 555-0175', '5200 8282 8282 8210', '145-09-7732', 'Disputed charge, see ticket 88231.'),
 (12, 'Mohammed Al-Sayed', 'm.alsayed@hotmail.com', '+971 4 555 0109', '4000 0025 0000 3155', '378-62-1145', 'Requested data export under GDPR.'),
 (13, 'Grace Kim', 'grace.kim@naver.com', '+82 2 5555 0147', '3530 1113 3330 0000', '256-93-4471', 'Email bounced; alternate grace.kim.work@gmail.com.'),
 (14, 'Daniel Novak', 'dnovak@seznam.cz', '+420 2 5555 0161', '5555 3412 4444 1115', '419-37-8820', 'Pays by card ending 1115.'),
 (15, 'Isabella Garcia', 'isabella.garcia@gmail.com', '(305) 555-0121', '4111 1111 1111 1111', '532-71-0653', 'Shares card with Maria Gonzalez (same number).'),
 (16, 'Ethan Brown', 'ethan.brown@aol.com', '(312) 555-0155', '6011 6011 6011 6611', '227-84-5519', 'Closed account in 2025.'),
 (17, 'Yuki Tanaka', 'yuki.tanaka@docomo.ne.jp', '+81 3 5555 0118', '3566 0020 2036 0505', '368-15-2207', 'Speaks Japanese and English.'),
 (18, 'Fatima Zahra', 'fatima.zahra@gmail.com', '+212 522 555 014', '4917 6100 0000 0000', '604-29-3318', 'Asked us to call 0522-555-014 only after 6pm.'),
 (19, 'Oliver Smith', 'oliver.smith@btinternet.com', '+44 161 555 0192', '5425 2334 3010 9903', '191-58-6642', 'Loyalty tier gold.'),
 (20, 'Ava Johnson', 'ava.johnson@comcast.net', '(503) 555-0168', '2223 0031 2200 3222', '473-06-9184', 'Left a review; SSN 473-06-9184 was pasted in a chat by mistake.');";

/// Part 2: PostgreSQL with masking, a denied DELETE and statement audit.
fn postgres_demo(interceptor: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    let root = workspace_root();
    println!("\n==> demo, part 2: PostgreSQL");
    let python = pg::psycopg_python()?;
    let cluster = pg::Cluster::start(&dir.join("pg"), "127.0.0.2", &[("fsync", "off")])?;
    let port = cluster.port;
    let secret = pg::random_hex(16)?;
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE crm LOGIN PASSWORD '{secret}'"),
    )?;
    cluster.sql("postgres", "CREATE DATABASE crm OWNER crm")?;
    cluster.sql("crm", &format!("SET ROLE crm; {CUSTOMERS}"))?;
    let pass = dir.join("crm.pass");
    fs::write(&pass, format!("{secret}\n"))?;
    fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;

    // The example policy, pointed at this server and secret.
    let example = root.join("policies/examples/demo-postgres.yaml");
    let mut policy_text = fs::read_to_string(&example)?;
    for (from, to) in [
        ("ports: 5432".to_owned(), format!("ports: {port}")),
        ("port: 5432".to_owned(), format!("port: {port}")),
        (
            "/var/lib/interceptor/demo/crm.pass".to_owned(),
            pass.display().to_string(),
        ),
    ] {
        if !policy_text.contains(&from) {
            bail!("{} no longer contains {from:?}", example.display());
        }
        policy_text = policy_text.replace(&from, &to);
    }
    let policy = dir.join("demo-postgres.yaml");
    fs::write(&policy, policy_text)?;
    let audit = dir.join("audit-postgres.jsonl");
    let _ = fs::remove_file(&audit);

    println!(
        "    PostgreSQL 15 on 127.0.0.2:{port} (data in {}), database crm, table customers: 20 rows of personal data",
        cluster.dir.display()
    );
    println!(
        "    the real password of role crm is in {} (mode 600); the agent is given another one",
        pass.display()
    );
    println!(
        "    policy {} (port and password_file filled in: {})",
        example.display(),
        policy.display()
    );
    println!("    what the table really holds (row 1, read as the superuser, not through the interceptor):");
    let row = cluster.sql(
        "crm",
        "SELECT name, email, phone, card_number, ssn, notes FROM customers WHERE id = 1",
    )?;
    println!("      {}", row.trim());
    println!("\n==> interceptor run -- python3 xtask/demo/pg_agent.py {port}\n");
    let status = Command::new(interceptor)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log", "warn", "run", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(&audit)
        .arg("--")
        .arg(&python)
        .arg(root.join("xtask/demo/pg_agent.py"))
        .arg(port.to_string())
        .status()
        .context("starting the interceptor")?;
    if !status.success() {
        bail!("interceptor run (PostgreSQL agent) failed: {status}");
    }

    println!("\n==> audit records ({})", audit.display());
    let mut allowed_masked = false;
    let mut denied_delete = false;
    for line in fs::read_to_string(&audit)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
        match v["type"].as_str().unwrap_or("") {
            "session_start" => println!(
                "    session_start  {}  agent asked for user={} database={}; upstream login {}@{} ({})",
                s("session"),
                s("client_user"),
                s("client_database"),
                s("user"),
                s("database"),
                if v["reused"] == true { "pooled connection" } else { "new login" }
            ),
            "statement" => {
                println!(
                    "    statement      {:<5} rule={} rows={} fields_masked={} {:.1}ms\n                   {}\n                   classification: {}",
                    s("decision"),
                    v["rule"].as_str().unwrap_or("(none)"),
                    v["rows"],
                    v["fields_masked"],
                    v["duration_ms"].as_f64().unwrap_or(0.0),
                    s("statement"),
                    s("classification"),
                );
                if v["decision"] == "deny" {
                    println!("                   reason: {}", s("reason"));
                    denied_delete |= s("statement").starts_with("DELETE");
                } else {
                    allowed_masked |= v["fields_masked"].as_u64().unwrap_or(0) > 0;
                }
            }
            "session_end" => println!(
                "    session_end    {}  statements={} denied={} upstream back to the pool: {}",
                s("session"),
                v["statements"],
                v["denied"],
                v["pooled"]
            ),
            "connection" => println!(
                "    connection     {} {} → {} rule={} exe={}",
                s("session"),
                s("decision"),
                s("destination"),
                v["rule"].as_str().unwrap_or("(default)"),
                v["identity"]["exe"].as_str().unwrap_or("?")
            ),
            _ => {}
        }
    }
    let left = cluster.sql("crm", "SELECT count(*) FROM customers")?;
    println!(
        "\n==> customers still in the table: {} (the DELETE never reached PostgreSQL)",
        left.trim()
    );
    println!("    raw JSON lines are in {}", audit.display());
    drop(cluster);
    println!("    PostgreSQL stopped");
    if left.trim() != "20" || !allowed_masked || !denied_delete {
        bail!("the PostgreSQL demo did not show what it should (masked SELECT, denied DELETE, 20 rows left)");
    }
    Ok(())
}
