//! PostgreSQL sink: a background task copies this daemon's chained records to a table
//! (`interceptor_audit`), idempotently (primary key (host, chain, segment, seq), ON CONFLICT
//! DO NOTHING). It reads the local segments, never the writer's queue: enforcement never
//! waits for it, and after an outage it catches up from where the table ends (its
//! position is `max(seq)` of this host and chain, mirrored in `<chain>/sink-postgres.pos`).
//! Only durable records are copied (seq ≤ the writer's last fsync'd position), only as an
//! unbroken chain (`sink_read.rs`), and a local chain that is not the one the table holds
//! under the instance's name goes under a name of its own (`incarnation`). Records never
//! hold result values, so masked values cannot reach the sink.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use super::{
    sink_read::{linked_prefix, read_range, Row},
    Position,
};

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
/// Each outage is logged once when it starts and once when the sink is back.
pub async fn run(
    cfg: SinkConfig,
    mut durable: watch::Receiver<Position>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    let mut down = false;
    loop {
        let stopping = *stop.borrow();
        let pass = one_pass(&cfg, &mut durable, &mut stop, &mut down);
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
                    backoff = Duration::from_millis(200);
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

/// Connects and copies until an error or `stop`.
async fn one_pass(
    cfg: &SinkConfig,
    durable: &mut watch::Receiver<Position>,
    stop: &mut watch::Receiver<bool>,
    down: &mut bool,
) -> Result<u64, SinkError> {
    let client = connect(cfg).await?;
    catch_up(cfg, &client, durable, stop, down).await
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

/// The table's position for `chain` (its highest seq), and whether the local chain holds
/// the same record there (same hash): if not, the local chain is not the one the table
/// copied (the directory was moved aside and a new chain began under the same name).
async fn position(
    cfg: &SinkConfig,
    client: &Client,
    chain: &str,
) -> Result<(u64, bool), SinkError> {
    let row = client
        .query_opt(
            "SELECT seq, hash FROM interceptor_audit WHERE host = $1 AND chain = $2 ORDER BY seq DESC LIMIT 1",
            &[&cfg.host, &chain],
        )
        .await?;
    let Some(row) = row else { return Ok((0, true)) };
    let (pos, hash) = (row.get::<_, i64>(0) as u64, row.get::<_, String>(1));
    let dir = cfg.chain_dir.clone();
    let local = tokio::task::spawn_blocking(move || read_range(&dir, pos, pos))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok((pos, local.first().is_some_and(|r| r.hash == hash)))
}

/// The name the local chain's rows go under: the instance's, or, when the table holds
/// another chain under it, `<instance>~<first 16 hex digits of the local first record's
/// hash>` (one name per incarnation of the chain).
async fn incarnation(cfg: &SinkConfig, client: &Client) -> Result<(String, u64), SinkError> {
    let (pos, same) = position(cfg, client, &cfg.chain).await?;
    if same {
        return Ok((cfg.chain.clone(), pos));
    }
    let dir = cfg.chain_dir.clone();
    let first = tokio::task::spawn_blocking(move || read_range(&dir, 1, 1))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let tag = first.first().map_or("none", |r| &r.hash[..16]);
    let name = format!("{}~{tag}", cfg.chain);
    tracing::error!(host = %cfg.host, chain = %cfg.chain, copy_as = %name, table_seq = pos, "the audit sink table holds a different chain under this instance's name (the chain directory was moved aside or replaced, so the local chain started again): copying the local chain under a new name instead of skipping it; compare both with `interceptor audit verify`");
    let (pos, same) = position(cfg, client, &name).await?;
    if !same {
        return Err(SinkError::Io(std::io::Error::other(format!(
            "the sink's rows for {name} do not match the local chain either: not copying"
        ))));
    }
    Ok((name, pos))
}

/// Copies everything durable after the table's position, then follows new records until the
/// connection fails or `stop` is set (returns after a final pass). It copies only an
/// unbroken chain: at a missing, forged or edited record it stops (and says so) instead of
/// copying it or skipping past it.
async fn catch_up(
    cfg: &SinkConfig,
    client: &Client,
    durable: &mut watch::Receiver<Position>,
    stop: &mut watch::Receiver<bool>,
    down: &mut bool,
) -> Result<u64, SinkError> {
    let (chain, mut pos) = incarnation(cfg, client).await?;
    tracing::info!(host = %cfg.host, chain = %chain, position = pos, "audit sink connected; copying from its position");
    let mut copied = 0;
    let mut broken_at = None;
    loop {
        let upto = durable.borrow_and_update().seq;
        if upto > pos {
            let (n, reached, why) = copy_range(cfg, client, &chain, pos, upto).await?;
            copied += n;
            if reached > pos {
                pos = reached;
                let _ = super::segment::write_private(
                    &cfg.chain_dir.join("sink-postgres.pos"),
                    format!("{{\"seq\":{pos},\"time\":\"{}\"}}\n", super::now_rfc3339()).as_bytes(),
                );
            }
            if let Some(why) = why.filter(|_| broken_at != Some(pos)) {
                broken_at = Some(pos);
                tracing::error!(chain = %chain, after_seq = pos, problem = %why, "the local audit chain is broken: the sink stops copying here (run `interceptor audit verify`)");
            }
        }
        // Back only once records could be copied again (not merely connected).
        if std::mem::take(down) {
            tracing::info!(chain = %chain, position = pos, "audit sink is back");
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

/// Copies the unbroken part of `after < seq <= upto`: returns the rows copied, the last seq
/// copied (or `after`), and why it stopped early.
async fn copy_range(
    cfg: &SinkConfig,
    client: &Client,
    chain: &str,
    after: u64,
    upto: u64,
) -> Result<(u64, u64, Option<String>), SinkError> {
    let dir = cfg.chain_dir.clone();
    let mut rows = tokio::task::spawn_blocking(move || read_range(&dir, after.max(1), upto))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    // The record at `after` (already in the table) anchors the linkage check.
    let anchor = match rows.first() {
        Some(r) if after > 0 && r.seq as u64 == after => rows.remove(0).hash_raw,
        _ => super::chain::GENESIS,
    };
    let (good, why) = linked_prefix(after, anchor, &rows);
    let rows = &rows[..good];
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
                    &chain,
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
    let reached = rows.last().map_or(after, |r| r.seq as u64);
    Ok((n, reached, why))
}
