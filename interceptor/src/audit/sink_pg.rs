//! PostgreSQL sink: a background task copies this daemon's chained records to a table
//! (`interceptor_audit`), idempotently (primary key (host, chain, segment, seq), ON CONFLICT
//! DO NOTHING). It reads the local segments, never the writer's queue: enforcement never
//! waits for it, and after an outage it catches up from where the table ends (its
//! position is `max(seq)` of this host and chain, mirrored in `<chain>/sink-postgres.pos`).
//! Only durable records are copied (seq ≤ the writer's last fsync'd position). Records never
//! hold result values, so masked values cannot reach the sink.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use super::{chain, segment::list_segments, Position};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("--audit-sink {url:?} is not a PostgreSQL connection string: {detail}")]
    Url { url: String, detail: String },
    #[error("cannot read the sink password file {path}: {source}")]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit sink database: {0} (records stay in the local segments and are copied once it is back)")]
    Db(#[from] tokio_postgres::Error),
    #[error("reading local segments for the sink: {0}")]
    Io(#[from] std::io::Error),
}

pub const PASSWORD_ENV: &str = "INTERCEPTOR_AUDIT_SINK_PASSWORD";

#[derive(Clone)]
pub struct SinkConfig {
    pub pg: tokio_postgres::Config,
    pub host: String,
    pub chain: String,
    pub chain_dir: PathBuf,
}

impl SinkConfig {
    /// Parses the URL; the password comes from `password_file`, else `$INTERCEPTOR_AUDIT_SINK_PASSWORD`,
    /// else the URL.
    pub fn new(
        url: &str,
        password_file: Option<&Path>,
        chain: &str,
        chain_dir: &Path,
    ) -> Result<Self, SinkError> {
        let mut pg = tokio_postgres::Config::from_str(url).map_err(|e| SinkError::Url {
            url: redact(url),
            detail: e.to_string(),
        })?;
        if let Some(p) = password_file {
            let pw = std::fs::read_to_string(p).map_err(|source| SinkError::Password {
                path: p.into(),
                source,
            })?;
            pg.password(pw.trim_end_matches(['\n', '\r']));
        } else if let Ok(pw) = std::env::var(PASSWORD_ENV) {
            pg.password(pw);
        }
        pg.application_name("interceptor-audit-sink");
        pg.connect_timeout(Duration::from_secs(5));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self {
            pg,
            host,
            chain: chain.into(),
            chain_dir: chain_dir.into(),
        })
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://…@{}", &url[..s], &url[a + 1..]),
        _ => url.into(),
    }
}

pub const TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS interceptor_audit (
    host text NOT NULL, chain text NOT NULL, segment bigint NOT NULL, seq bigint NOT NULL,
    type text, session text, hash text NOT NULL, record jsonb NOT NULL,
    copied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, chain, segment, seq))";

const INSERT: &str = "INSERT INTO interceptor_audit (host, chain, segment, seq, type, session, hash, record)
    SELECT $1, $2, s, q, t, se, h, r::jsonb
    FROM unnest($3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::text[]) AS u(s, q, t, se, h, r)
    ON CONFLICT DO NOTHING";

const BATCH: usize = 1000;

/// Runs until `stop` turns true, then makes one last pass (bounded) and returns.
pub async fn run(
    cfg: SinkConfig,
    mut durable: watch::Receiver<Position>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut down = false;
    loop {
        let stopping = *stop.borrow();
        let pass = async {
            let client = connect(&cfg).await?;
            catch_up(&cfg, &client, &mut durable, &mut stop).await
        };
        let r = if stopping {
            tokio::time::timeout(Duration::from_secs(5), pass)
                .await
                .unwrap_or(Ok(0))
        } else {
            pass.await
        };
        match r {
            Ok(_) => return,
            Err(e) => {
                if !down {
                    tracing::warn!(error = %e, "audit sink unavailable; retrying (enforcement is not affected)");
                    down = true;
                }
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn connect(cfg: &SinkConfig) -> Result<Client, SinkError> {
    let (client, conn) = cfg.pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "audit sink connection ended");
        }
    });
    // Created only when missing: a least-privilege role (INSERT and SELECT on a table
    // another role owns, no CREATE on the schema) cannot run even `CREATE TABLE IF NOT
    // EXISTS` (PostgreSQL checks the schema privilege first).
    let exists: bool = client
        .query_one("SELECT to_regclass('interceptor_audit') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        client.batch_execute(TABLE_DDL).await?;
    }
    Ok(client)
}

/// Copies everything durable after the table's position, then follows new records until the
/// connection fails or `stop` is set (returns after a final pass).
async fn catch_up(
    cfg: &SinkConfig,
    client: &Client,
    durable: &mut watch::Receiver<Position>,
    stop: &mut watch::Receiver<bool>,
) -> Result<u64, SinkError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM interceptor_audit WHERE host = $1 AND chain = $2",
            &[&cfg.host, &cfg.chain],
        )
        .await?;
    let mut pos = row.get::<_, i64>(0) as u64;
    tracing::info!(host = %cfg.host, chain = %cfg.chain, position = pos, "audit sink connected; copying from its position");
    let mut copied = 0;
    loop {
        let upto = durable.borrow_and_update().seq;
        if upto > pos {
            let n = copy_range(cfg, client, pos, upto).await?;
            copied += n;
            pos = upto;
            let _ = std::fs::write(
                cfg.chain_dir.join("sink-postgres.pos"),
                format!("{{\"seq\":{pos},\"time\":\"{}\"}}\n", super::now_rfc3339()),
            );
        }
        if *stop.borrow() {
            return Ok(copied);
        }
        tokio::select! {
            r = durable.changed() => if r.is_err() { return Ok(copied) },
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                client.simple_query("").await?; // notice an outage while idle
            }
        }
    }
}

struct Row {
    segment: i64,
    seq: i64,
    kind: String,
    session: String,
    hash: String,
    record: String,
}

async fn copy_range(
    cfg: &SinkConfig,
    client: &Client,
    after: u64,
    upto: u64,
) -> Result<u64, SinkError> {
    let dir = cfg.chain_dir.clone();
    let rows = tokio::task::spawn_blocking(move || read_range(&dir, after, upto))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let mut n = 0;
    for chunk in rows.chunks(BATCH) {
        let col = |f: fn(&Row) -> String| chunk.iter().map(f).collect::<Vec<String>>();
        let segs: Vec<i64> = chunk.iter().map(|r| r.segment).collect();
        let seqs: Vec<i64> = chunk.iter().map(|r| r.seq).collect();
        client
            .execute(
                INSERT,
                &[
                    &cfg.host,
                    &cfg.chain,
                    &segs,
                    &seqs,
                    &col(|r| r.kind.clone()),
                    &col(|r| r.session.clone()),
                    &col(|r| r.hash.clone()),
                    &col(|r| r.record.clone()),
                ],
            )
            .await?;
        n += chunk.len() as u64;
    }
    Ok(n)
}

/// Records with `after < seq <= upto` from the local segments.
fn read_range(dir: &Path, after: u64, upto: u64) -> std::io::Result<Vec<Row>> {
    let mut out = Vec::new();
    for (n, path) in list_segments(dir)? {
        // Skip whole segments that a checkpoint shows to be already copied.
        if let Ok(cp) = super::checkpoint::read(&super::checkpoint::path_for(&path)) {
            if cp.body.last_seq <= after {
                continue;
            }
        }
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines() {
            let Ok(o) = chain::open(line) else { continue };
            if o.seq <= after || o.seq > upto {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
            out.push(Row {
                segment: n as i64,
                seq: o.seq as i64,
                kind: s("type"),
                session: s("session"),
                hash: chain::hex(&o.hash),
                record: line.to_owned(),
            });
        }
        if out.last().is_some_and(|r| r.seq as u64 >= upto) {
            break;
        }
    }
    Ok(out)
}
