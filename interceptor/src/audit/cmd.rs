//! The audit command line: daemon flags (`AuditArgs`), `interceptor audit …` and
//! `interceptor sessions …` (parsing and their text/JSON output).

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Subcommand, ValueEnum};

use super::{checkpoint, sessions, verify, Settings};
use crate::term::printable as p;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Commands wait until their record is fsync'd (write before forward; fail closed).
    Durable,
    /// Records are written (and synced) in the background; commands do not wait.
    Async,
}

/// Daemon flags for the audit store.
#[derive(Debug, Args, Clone)]
pub struct AuditArgs {
    /// Chained, signed audit store: records go to DIR/<instance>/segment-NNNNNN.jsonl.
    /// Default: <state dir>/audit. Ignored with --audit-log.
    #[arg(long)]
    pub audit_dir: Option<PathBuf>,
    /// Rotate a segment when it reaches this many bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub audit_segment_bytes: u64,
    /// Rotate a segment when it is this old (e.g. 1h, 15m).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub audit_segment_age: Duration,
    /// `durable`: statements and connections are recorded on disk before they go upstream.
    #[arg(long, value_enum, default_value_t = Mode::Durable)]
    pub audit_mode: Mode,
    /// Copy records to PostgreSQL (for fleets), e.g. postgres://audit@db.example/audit.
    /// The password comes from --audit-sink-password-file or INTERCEPTOR_AUDIT_SINK_PASSWORD.
    #[arg(long)]
    pub audit_sink: Option<String>,
    #[arg(long)]
    pub audit_sink_password_file: Option<PathBuf>,
}

impl AuditArgs {
    pub fn settings(&self, plain: Option<PathBuf>, state_dir: &Path, instance: &str) -> Settings {
        Settings {
            plain,
            dir: self
                .audit_dir
                .clone()
                .unwrap_or_else(|| default_dir(state_dir)),
            chain: instance.to_owned(),
            state_dir: state_dir.to_path_buf(),
            segment_bytes: self.audit_segment_bytes,
            segment_age: self.audit_segment_age,
            durable: self.audit_mode == Mode::Durable,
        }
    }
}

pub fn default_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("audit")
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a chained audit store; names the first bad record (file, line, seq), exit 1.
    Verify {
        /// A chain directory or a directory of chains. Default: <state dir>/audit.
        dir: Option<PathBuf>,
        /// Public key file (hex, from `audit key export`) to check checkpoints with.
        /// Default: signing.pub next to the chains (trusts the directory itself).
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// (benchmark) N concurrent committers, each waiting for durability; prints JSON.
    #[command(hide = true)]
    Bench {
        /// A scratch directory (its audit/ and key are created there).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 256)]
        committers: usize,
        #[arg(long, default_value_t = 200_000)]
        records: usize,
    },
    /// The checkpoint signing key.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the public key (hex) of <state dir>/audit-signing.key.
    Export,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Sessions, oldest first.
    List {
        /// Only sessions that started after this: a duration back (2h) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Process name, executable, cgroup (substring), uid or pid.
        #[arg(long)]
        identity: Option<String>,
        /// Policy resource name or destination address (substring).
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        json: bool,
        /// Audit directory, chain directory or plain audit file. Default: <state dir>/audit.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Every command of a session with its decision, rows, masked fields and timing.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Play a session's commands and outcomes back in order, with their original timing.
    Replay {
        id: String,
        /// Speed-up factor (2 = twice as fast; inf = no waiting).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub async fn audit(cmd: AuditCommand, state_dir: &Path) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Bench {
            dir,
            committers,
            records,
        } => {
            let r = super::bench::run(&dir, committers, records).await?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(0)
        }
        AuditCommand::Key {
            command: KeyCommand::Export,
        } => {
            let k = checkpoint::load_key(state_dir)?;
            println!("{}", checkpoint::public_hex(&k.verifying_key()));
            Ok(0)
        }
        AuditCommand::Verify { dir, key, json } => {
            let dir = dir.unwrap_or_else(|| default_dir(state_dir));
            let chains = verify::chain_dirs(&dir)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
            if chains.is_empty() {
                anyhow::bail!("no audit segments under {}", dir.display());
            }
            let given = match &key {
                Some(p) => Some(
                    checkpoint::parse_public(&std::fs::read_to_string(p)?).ok_or_else(|| {
                        anyhow::anyhow!("{}: not a hex ed25519 public key", p.display())
                    })?,
                ),
                None => None,
            };
            let mut bad = false;
            let mut reports = Vec::new();
            for c in chains {
                let found = verify::find_key(&c);
                let k = given.or(found.as_ref().map(|f| f.0));
                let r = verify::verify_chain(&c, k.as_ref());
                bad |= !r.ok();
                if !json {
                    print!(
                        "{}",
                        render_verify(
                            &r,
                            key.is_none()
                                .then_some(found.map(|f| f.1))
                                .flatten()
                                .as_deref()
                        )
                    );
                }
                reports.push(r);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            }
            Ok(i32::from(bad))
        }
    }
}

fn render_verify(r: &verify::ChainReport, trusted: Option<&Path>) -> String {
    let mut o = String::new();
    match &r.problem {
        None => {
            let _ = writeln!(
                o,
                "OK {}: {} segments, {} records (seq 1..{}), {} signed checkpoints",
                r.dir.display(),
                r.segments,
                r.records,
                r.last_seq,
                r.checkpoints
            );
        }
        Some(p) => {
            let _ = writeln!(o, "TAMPERED {}: first bad record: {p}", r.dir.display());
            for p in &r.problems[1..] {
                let _ = writeln!(o, "  also: {p}");
            }
        }
    }
    for w in &r.warnings {
        let _ = writeln!(o, "  note: {w}");
    }
    if let Some(p) = trusted {
        let _ = writeln!(o, "  note: signatures checked with {} from the audit directory itself; pass --key with an exported copy to rule out a replaced key", p.display());
    }
    o
}

pub async fn sessions_cmd(cmd: SessionsCommand, state_dir: &Path) -> anyhow::Result<i32> {
    let load = |dir: Option<PathBuf>| {
        let dir = dir.unwrap_or_else(|| default_dir(state_dir));
        sessions::load(&dir)
            .map_err(|e| anyhow::anyhow!("cannot read audit records under {}: {e}", dir.display()))
    };
    let find = |dir, id: &str| -> anyhow::Result<sessions::Session> {
        let all = sessions::build(&load(dir)?);
        let mut m = all.into_iter().filter(|s| s.id == id || s.id.ends_with(id));
        match (m.next(), m.next()) {
            (Some(s), None) => Ok(s),
            (None, _) => anyhow::bail!("no session {id} (see `interceptor sessions list`)"),
            (Some(_), Some(_)) => anyhow::bail!("{id} matches several sessions; give the full id"),
        }
    };
    match cmd {
        SessionsCommand::List {
            since,
            identity,
            resource,
            json,
            dir,
        } => {
            let f = sessions::Filter {
                since: since
                    .as_deref()
                    .map(sessions::parse_since)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                identity,
                resource,
            };
            let mut list: Vec<_> = sessions::build(&load(dir)?)
                .into_iter()
                .filter(|s| f.matches(s))
                .collect();
            if json {
                for s in &mut list {
                    s.log.clear();
                }
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render_list(&list));
            }
        }
        SessionsCommand::Show { id, json, dir } => {
            let s = find(dir, &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", render_header(&s));
                for c in &s.log {
                    println!("{}", render_command(c));
                }
            }
        }
        SessionsCommand::Replay {
            id,
            speed,
            json,
            dir,
        } => {
            if speed.is_nan() || speed <= 0.0 {
                anyhow::bail!("--speed must be > 0 (inf: no waiting)");
            }
            let s = find(dir, &id)?;
            if !json {
                print!("{}", render_header(&s));
            }
            let start = tokio::time::Instant::now();
            for c in &s.log {
                let at = Duration::from_secs_f64((c.offset_ms / 1000.0 / speed).min(86_400.0));
                tokio::time::sleep_until(start + at).await;
                if json {
                    println!("{}", serde_json::to_string(c)?);
                } else {
                    println!("{}", render_command(c));
                }
                let _ = std::io::stdout().flush();
            }
            if !json {
                println!(
                    "end of session {} ({} commands, {} denied)",
                    p(&s.id),
                    s.commands,
                    s.denied
                );
            }
        }
    }
    Ok(0)
}

/// Process name, pid and uid (the name escaped: the agent chooses it).
fn who(s: &sessions::Session) -> String {
    format!(
        "{} pid={} uid={}",
        p(s.comm.as_deref().unwrap_or("?")),
        s.pid.map_or("?".into(), |p| p.to_string()),
        s.uid.map_or("?".into(), |u| u.to_string())
    )
}

pub fn render_list(list: &[sessions::Session]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<24} {:<24} {:<28} {:<22} {:>8} {:>6} {:>10}",
        "SESSION", "START", "WHO", "RESOURCE/DESTINATION", "COMMANDS", "DENIED", "DURATION"
    );
    for s in list {
        let target = match (&s.resource, &s.destination) {
            (Some(r), _) => r.clone(),
            (None, Some(d)) => d.clone(),
            _ => "-".into(),
        };
        let dur = s
            .duration_ms
            .map_or("open".into(), |d| format!("{:.0} ms", d));
        let dec = if s.decision.as_deref() == Some("deny") {
            " (denied)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "{:<24} {:<24} {:<28} {:<22} {:>8} {:>6} {:>10}{dec}",
            p(&s.id),
            p(&s.start),
            who(s),
            p(&target),
            s.commands,
            s.denied,
            dur
        );
    }
    let _ = writeln!(o, "{} sessions", list.len());
    o
}

pub fn render_header(s: &sessions::Session) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "session {} ({})", p(&s.id), p(&s.instance));
    let _ = writeln!(o, "  started  {}", p(&s.start));
    let _ = writeln!(
        o,
        "  who      {}{}",
        who(s),
        s.exe
            .as_deref()
            .map(|e| format!(" exe={}", p(e)))
            .unwrap_or_default()
    );
    if let Some(d) = &s.destination {
        let _ = writeln!(
            o,
            "  to       {}{}",
            p(d),
            s.resource
                .as_deref()
                .map(|r| format!(" (resource {})", p(r)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        o,
        "  commands {} ({} denied){}",
        s.commands,
        s.denied,
        s.duration_ms
            .map(|d| format!(", lasted {d:.1} ms"))
            .unwrap_or_else(|| ", no end record".into())
    );
    o
}

pub fn render_command(c: &sessions::Command) -> String {
    let mut o = format!(
        "[+{:>9.3}s] {:<5} {}",
        c.offset_ms / 1000.0,
        p(&c.decision.to_uppercase()),
        p(&c.text.replace('\n', " "))
    );
    let mut facts = Vec::new();
    if let Some(r) = c.rows {
        facts.push(format!("{r} rows"));
    }
    if let Some(w) = c.rows_withheld.filter(|w| *w > 0) {
        facts.push(format!("{w} withheld"));
    }
    if let Some(m) = c.fields_masked {
        facts.push(format!("{m} masked"));
    }
    facts.push(format!("{:.2} ms", c.duration_ms));
    if let Some(e) = &c.error {
        facts.push(format!("error {}", p(e)));
    }
    if c.decision == "deny" {
        if let Some(r) = &c.reason {
            facts.push(format!("reason: {}", p(r)));
        }
    }
    let _ = write!(o, "  -> {}", facts.join(", "));
    o
}
