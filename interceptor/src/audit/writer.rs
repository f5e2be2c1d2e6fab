//! The writer thread and its group commit: it takes every message queued while the last
//! fdatasync ran, writes them in one `write`, syncs once, then answers every committer.
//!
//! In async mode (`--audit-mode async`, nobody waits for the disk) it writes each batch
//! without syncing, syncs at most every `ASYNC_SYNC_EVERY` (and on flush, close, rotation
//! and when idle), and lingers `ASYNC_LINGER` after a batch so that records arriving
//! meanwhile join the next one: senders then find it busy instead of waking it once per
//! record (each wake-up is a futex call and, on a VM, an inter-processor interrupt).
//!
//! A plain thread with blocking I/O, not a tokio task (`tokio::fs` hands each write to the
//! blocking pool: two wake-ups per write).

use std::{
    fs::File,
    io::{self, Write},
    path::PathBuf,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};

use super::{segment::SegmentStore, AuditError, Position};

pub(super) type Ack = oneshot::Sender<Result<Position, AuditError>>;

pub(super) enum Msg {
    /// Serialised records, written together; the ack (if any) gets the first one's position.
    Records(Vec<String>, Option<Ack>),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

pub(super) enum Store {
    /// `--audit-log FILE|-`: plain JSON lines, no chain. Files are fdatasync'd.
    Plain {
        out: Box<dyn Write + Send>,
        file: Option<File>,
        path: PathBuf,
        lines: u64,
    },
    Chain(Box<SegmentStore>),
}

impl Store {
    fn write(&mut self, recs: &[&str], sync: bool) -> io::Result<Position> {
        match self {
            Store::Chain(s) => s.write_batch(recs, sync),
            Store::Plain {
                out, file, lines, ..
            } => {
                let mut buf = Vec::with_capacity(recs.iter().map(|r| r.len() + 1).sum());
                for r in recs {
                    buf.extend_from_slice(r.as_bytes());
                    buf.push(b'\n');
                }
                out.write_all(&buf)?;
                out.flush()?;
                if let Some(f) = file.as_ref().filter(|_| sync) {
                    f.sync_data()?;
                    super::segment::release_cache(f);
                }
                let first = *lines + 1;
                *lines += recs.len() as u64;
                Ok(Position {
                    segment: 0,
                    seq: first,
                })
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Store::Chain(s) => s.sync(),
            Store::Plain { out, file, .. } => {
                out.flush()?;
                if let Some(f) = file {
                    f.sync_data()?;
                    super::segment::release_cache(f);
                }
                Ok(())
            }
        }
    }

    fn path(&self) -> PathBuf {
        match self {
            Store::Chain(s) => s.dir().to_path_buf(),
            Store::Plain { path, .. } => path.clone(),
        }
    }
}

/// Most messages taken into one group commit.
const MAX_BATCH: usize = 8192;
/// Async mode: longest time written records stay unsynced while records keep coming.
const ASYNC_SYNC_EVERY: Duration = Duration::from_millis(200);
/// Async mode: pause after a batch, gathering the next one.
const ASYNC_LINGER: Duration = Duration::from_millis(1);

pub(super) fn run(
    mut store: Store,
    rx: Receiver<Msg>,
    durable: watch::Sender<Position>,
    sync_each: bool,
) {
    // Async mode: written but not yet synced since this instant.
    let mut unsynced: Option<Instant> = None;
    loop {
        let wait = if unsynced.is_some() {
            ASYNC_SYNC_EVERY
        } else {
            Duration::from_secs(1)
        };
        let first = match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                sync_now(&mut store, &mut unsynced);
                if let Store::Chain(s) = &mut store {
                    if let Err(e) = s.maybe_rotate() {
                        tracing::error!(error = %e, "audit segment rotation failed");
                    }
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                sync_now(&mut store, &mut unsynced);
                break;
            }
        };
        let mut batch: Vec<(Vec<String>, Option<Ack>)> = Vec::new();
        let mut flushes = Vec::new();
        let mut closes = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Msg::Records(r, ack) => batch.push((r, ack)),
                Msg::Flush(d) => flushes.push(d),
                Msg::Close(d) => closes.push(d),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let wrote = !batch.is_empty();
        if wrote {
            commit(&mut store, batch, &durable, sync_each);
            if !sync_each {
                unsynced.get_or_insert_with(Instant::now);
            }
        }
        if !flushes.is_empty()
            || !closes.is_empty()
            || unsynced.is_some_and(|t| t.elapsed() >= ASYNC_SYNC_EVERY)
        {
            sync_now(&mut store, &mut unsynced);
        }
        for f in flushes {
            let _ = f.send(());
        }
        if !closes.is_empty() {
            if let Store::Chain(s) = &mut store {
                if let Err(e) = s.close() {
                    tracing::error!(error = %e, "cannot sign the last audit segment");
                }
            }
            // Release the store (and its directory lock) before answering; the thread ends
            // and later records are refused (`AuditError::Closed`).
            drop(store);
            for c in closes {
                let _ = c.send(());
            }
            return;
        }
        if wrote && !sync_each {
            std::thread::sleep(ASYNC_LINGER);
        }
    }
}

/// Syncs records written without a sync, if any.
fn sync_now(store: &mut Store, unsynced: &mut Option<Instant>) {
    if unsynced.take().is_some() {
        if let Err(e) = store.sync() {
            tracing::error!(error = %e, path = %store.path().display(), "audit fdatasync failed");
        }
    }
}

fn commit(
    store: &mut Store,
    batch: Vec<(Vec<String>, Option<Ack>)>,
    durable: &watch::Sender<Position>,
    sync: bool,
) {
    let rotated = match store {
        Store::Chain(s) => s.maybe_rotate(),
        Store::Plain { .. } => Ok(()),
    };
    let result = rotated.and_then(|()| {
        let recs: Vec<&str> = batch
            .iter()
            .flat_map(|(r, _)| r.iter().map(String::as_str))
            .collect();
        store.write(&recs, sync).map_err(|e| AuditError::Write {
            path: store.path(),
            detail: e.to_string(),
        })
    });
    match result {
        Ok(first) => {
            let mut seq = first.seq;
            for (recs, ack) in batch {
                if let Some(ack) = ack {
                    let _ = ack.send(Ok(Position {
                        segment: first.segment,
                        seq,
                    }));
                }
                seq += recs.len() as u64;
            }
            durable.send_replace(Position {
                segment: first.segment,
                seq: seq - 1,
            });
        }
        Err(e) => {
            let n: usize = batch.iter().map(|(r, _)| r.len()).sum();
            tracing::error!(error = %e, records = n, "audit write failed: these records are lost and the commands waiting for them are refused");
            for (_, ack) in batch {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
    }
}
