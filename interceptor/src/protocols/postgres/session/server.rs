//! The upstream → client direction of a session: backend messages passed through, with
//! result rows masked by the plan of their RowDescription and counted for the audit.

use super::*;

/// Upstream → client. Returns only on error or end of stream.
pub(super) async fn server_pump<R, W>(
    c: &Common<'_>,
    reader: &mut FrameReader<R>,
    client: &tokio::sync::Mutex<W>,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        let Some(f) = reader.next().await? else {
            return Err(PgError::Closed("upstream"));
        };
        let mut frames = vec![f];
        while out.len() < 256 * 1024 {
            match reader.try_frame()? {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        for f in frames {
            on_backend(c, f, &mut out).await?;
        }
        if !out.is_empty() {
            c.ctx.bytes_down.fetch_add(out.len() as u64, Relaxed);
            client.lock().await.write_all(&out).await?;
            out.clear();
        }
        if c.st().outstanding == 0 {
            c.idle.notify_waiters();
        }
    }
}

async fn on_backend(c: &Common<'_>, f: Frame, out: &mut BytesMut) -> Result<()> {
    match f.tag {
        backend::ERROR => {
            let fields = backend::fields(&f.body)?;
            let sqlstate = backend::field(&fields, b'C').map(str::to_owned);
            let mut frame = f;
            let mut ours = false;
            let mut st = c.st();
            if let Some(m) = backend::field(&fields, b'M') {
                if let Some(i) = m.find(DENY_TOKEN).filter(|_| !st.denials.is_empty()) {
                    let tok: String = m[i..]
                        .chars()
                        .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                        .collect();
                    if let Some(e) = st.denials.remove(&tok) {
                        frame = e;
                        ours = true;
                    }
                }
            }
            match st.pending.front_mut() {
                Some(Pending::Exec(u)) if u.simple => {
                    if let Some(s) = u.stmts.pop_front() {
                        c.audit_stmt("simple", &s, Some(u), sqlstate);
                    }
                    u.stmts.clear();
                }
                Some(Pending::Sync) | None => {}
                Some(_) => {
                    // Extended protocol: the server skips everything up to Sync.
                    let mut first = true;
                    while let Some(p) = st.pending.front() {
                        if matches!(p, Pending::Sync) {
                            break;
                        }
                        match st.pending.pop_front() {
                            Some(Pending::Exec(u)) => {
                                if first && !ours && !u.denied && !u.simple {
                                    if let Some(s) = u.stmts.front() {
                                        c.audit_stmt("extended", s, Some(&u), sqlstate.clone());
                                    }
                                }
                                if u.simple {
                                    // A Query inside the skipped part is skipped too, and
                                    // no ReadyForQuery will answer it.
                                    st.outstanding -= 1;
                                    st.answered += 1;
                                    u.invalidates.apply(&mut st);
                                }
                            }
                            // Skipped: what it named may or may not exist now.
                            Some(Pending::Parse { name, new }) => {
                                st.forget_statement(&name);
                                if new {
                                    st.parse_failed.push(name);
                                }
                            }
                            Some(Pending::Bind { portal, .. }) => {
                                st.portal_fields.remove(&portal);
                                st.bound.remove(&portal);
                            }
                            _ => {}
                        }
                        first = false;
                    }
                }
            }
            drop(st);
            if !ours {
                frame = masked_text(c, frame, notices::error_or_notice)?;
            }
            frame.encode(out);
        }
        backend::NOTICE => masked_text(c, f, notices::error_or_notice)?.encode(out),
        NOTIFICATION => masked_text(c, f, notices::notification)?.encode(out),
        backend::READY => {
            let mut st = c.st();
            st.tx = f.body.first().copied().unwrap_or(b'I');
            st.answered += 1;
            if st.tx == b'I' {
                st.idle_answered = st.answered;
                st.transaction_ended();
            }
            st.outstanding -= 1;
            while let Some(p) = st.pending.pop_front() {
                match p {
                    Pending::Sync => break,
                    Pending::Exec(u) if u.simple => {
                        u.invalidates.apply(&mut st);
                        break;
                    }
                    _ => {}
                }
            }
            if st.outstanding <= 0 {
                st.outstanding = 0;
                st.denials.clear();
            }
            f.encode(out);
        }
        backend::ROW_DESCRIPTION => {
            let fields = backend::row_description(&f.body)?;
            let simple_needs_plan = {
                let mut st = c.st();
                match st.pending.front() {
                    Some(Pending::DescribeStatement(n)) => {
                        let n = n.clone();
                        st.pending.pop_front();
                        st.stmt_fields.insert(n, fields.clone());
                        false
                    }
                    Some(Pending::DescribePortal(n)) => {
                        let n = n.clone();
                        st.pending.pop_front();
                        st.portal_fields.insert(n, fields.clone());
                        false
                    }
                    Some(Pending::Exec(_)) => true,
                    _ => false,
                }
            };
            if simple_needs_plan {
                let plan = match &c.masker {
                    Some(m) => Some(plan_for(c, m, &fields, &[]).await),
                    None => None,
                };
                if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
                    u.fields = Some(fields);
                    u.mask = plan;
                }
            }
            f.encode(out);
        }
        backend::NO_DATA => {
            let mut st = c.st();
            if matches!(
                st.pending.front(),
                Some(Pending::DescribeStatement(_) | Pending::DescribePortal(_))
            ) {
                st.pending.pop_front();
            }
            f.encode(out);
        }
        b'1' | b'3' => {
            let mut st = c.st();
            match st.pending.front() {
                // The statement of this name is a new one: no description of it yet.
                Some(Pending::Parse { name, .. }) => {
                    let name = name.clone();
                    st.pending.pop_front();
                    st.forget_statement(&name);
                }
                Some(Pending::Close { kind, name }) => {
                    let (kind, name) = (*kind, name.clone());
                    st.pending.pop_front();
                    if kind == b'S' {
                        st.forget_statement(&name);
                    } else {
                        st.portal_fields.remove(&name);
                        st.bound.remove(&name);
                    }
                }
                _ => {}
            }
            f.encode(out);
        }
        b'2' => {
            let mut st = c.st();
            if let Some(Pending::Bind { .. }) = st.pending.front() {
                if let Some(Pending::Bind {
                    portal,
                    statement,
                    formats,
                }) = st.pending.pop_front()
                {
                    st.bind_complete(portal, statement, formats);
                }
            }
            f.encode(out);
        }
        backend::DATA_ROW => data_row(c, f, out).await?,
        backend::COMMAND_COMPLETE | backend::EMPTY_QUERY | backend::PORTAL_SUSPENDED => {
            let mut st = c.st();
            let mut tag_frame = f;
            if let Some(Pending::Exec(u)) = st.pending.front_mut() {
                if u.withheld > 0 && tag_frame.tag == backend::COMMAND_COMPLETE {
                    let limit = u.row_limit.unwrap_or(0);
                    let note = format!(
                        "interceptor: row limit {limit} reached; {} more row(s) were not sent",
                        u.withheld
                    );
                    let mut notice = backend::error("WARNING", "01000", &note, None, None);
                    notice.tag = backend::NOTICE;
                    notice.encode(out);
                    let tag = backend::command_tag(&tag_frame.body)?;
                    let new = match tag.rsplit_once(' ') {
                        Some((verb, n)) if n.parse::<u64>().is_ok() => format!("{verb} {limit}"),
                        _ => tag.to_owned(),
                    };
                    tag_frame = frontend::query(&new);
                    tag_frame.tag = backend::COMMAND_COMPLETE;
                }
                let simple = u.simple;
                if let Some(s) = u.stmts.pop_front() {
                    c.audit_stmt(
                        if simple { "simple" } else { "extended" },
                        &s,
                        Some(u),
                        None,
                    );
                }
                if simple {
                    u.rows = 0;
                    u.withheld = 0;
                    u.masked = 0;
                    u.fields = None;
                    u.mask = None;
                    u.started = Instant::now();
                } else {
                    st.pending.pop_front();
                }
            }
            tag_frame.encode(out);
        }
        backend::PARAMETER_STATUS => {
            let (k, v) = backend::parse_parameter_status(&f.body)?;
            if k == "standard_conforming_strings" {
                c.st().scs = v == "on";
            }
            if k == "client_encoding" && !encoding_is_safe(&v) {
                // The classifier reads statements as UTF-8; in these encodings a
                // multi-byte character can end in a backslash byte and turn `E'…\'…'`
                // into two statements. Nothing more from this session goes upstream.
                return Err(PgError::Unsupported(format!(
                    "client_encoding {v}: the interceptor cannot classify statements in it (use UTF8); session ended"
                )));
            }
            let masked = c
                .masker
                .as_ref()
                .and_then(|m| notices::parameter(m, &k, &v));
            match masked {
                Some((g, n)) => {
                    count_masked(c, n);
                    g.encode(out);
                }
                None => f.encode(out),
            }
        }
        backend::COPY_IN => {
            let mut st = c.st();
            if matches!(st.pending.front(), Some(Pending::Exec(u)) if u.copy_from) {
                st.copy_in = true;
            }
            drop(st);
            f.encode(out)
        }
        _ => f.encode(out),
    }
    Ok(())
}

/// NotificationResponse (`LISTEN`/`NOTIFY`).
const NOTIFICATION: u8 = b'A';

/// Client encodings whose multi-byte characters can contain ASCII bytes (a backslash):
/// PostgreSQL's client-only encodings. Every server encoding is safe.
pub(super) fn encoding_is_safe(name: &str) -> bool {
    let n = name.to_ascii_uppercase().replace(['_', '-'], "");
    !matches!(
        n.as_str(),
        "SJIS"
            | "SHIFTJIS"
            | "SHIFTJIS2004"
            | "MSKANJI"
            | "BIG5"
            | "GBK"
            | "CP936"
            | "UHC"
            | "GB18030"
            | "JOHAB"
            | "WIN936"
            | "WIN949"
            | "WIN950"
            | "TCVN"
            | "TCVN5712"
            | "VSCII"
            | "WIN1258"
            | "ABC"
    ) || n.is_empty()
}

/// A `notices` function: the frame with its text masked and the values masked, if any.
type TextMask = fn(&Masker, &Frame) -> Result<Option<(Frame, u64)>>;

/// `f` with its free text masked by `mask` (when the session masks), counted.
fn masked_text(c: &Common<'_>, f: Frame, mask: TextMask) -> Result<Frame> {
    let Some(m) = &c.masker else {
        return Ok(f);
    };
    Ok(match mask(m, &f)? {
        Some((g, n)) => {
            count_masked(c, n);
            g
        }
        None => f,
    })
}

/// Adds masked values to the statement being answered, if any.
fn count_masked(c: &Common<'_>, n: u64) {
    if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
        u.masked += n;
    }
}

/// A plan for these fields, naming their tables first (side query on a pooled connection).
/// The masking plan of a result. Plans are memoised per session by result shape once
/// every table of it is named (a plan made while a table was unknown is made again).
async fn plan_for(
    c: &Common<'_>,
    m: &Masker,
    fields: &[Field],
    formats: &[i16],
) -> Arc<ResultMask> {
    if let Some(p) = c
        .plans
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(fields, formats)
    {
        return p;
    }
    let catalog = &c.catalog;
    let table_oids = || fields.iter().map(|f| (f.table_oid, f.column));
    if !catalog.missing(table_oids()).is_empty() {
        let _turn = catalog.fill_turn().await;
        let oids = catalog.missing(table_oids());
        if !oids.is_empty() {
            if let Err(e) = fill_catalog(c, catalog, &oids).await {
                tracing::warn!(session = %c.ctx.session, error = %e, "table names unknown; their columns are masked by the first column rule");
            }
        }
    }
    let plan = Arc::new(mask::plan(m, fields, formats, catalog, true));
    if catalog.missing(table_oids()).is_empty() {
        c.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(fields, formats, plan.clone());
    }
    plan
}

/// A session's masking plans by result shape (the RowDescription's fields and the result
/// formats), looked up without copying the shape.
#[derive(Default)]
pub(super) struct Plans {
    by_hash: HashMap<u64, Vec<PlanEntry>>,
    len: usize,
}

/// A result shape (fields, formats) and its plan.
type PlanEntry = (Vec<Field>, Vec<i16>, Arc<ResultMask>);

/// Result shapes whose plans a session keeps.
const PLAN_MEMO: usize = 64;

impl Plans {
    fn hash(fields: &[Field], formats: &[i16]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        fields.hash(&mut h);
        formats.hash(&mut h);
        h.finish()
    }

    fn get(&self, fields: &[Field], formats: &[i16]) -> Option<Arc<ResultMask>> {
        self.by_hash
            .get(&Self::hash(fields, formats))?
            .iter()
            .find(|(f, fm, _)| f == fields && fm == formats)
            .map(|(_, _, p)| p.clone())
    }

    fn put(&mut self, fields: &[Field], formats: &[i16], plan: Arc<ResultMask>) {
        if self.len >= PLAN_MEMO {
            self.by_hash.clear();
            self.len = 0;
        }
        self.by_hash
            .entry(Self::hash(fields, formats))
            .or_default()
            .push((fields.to_vec(), formats.to_vec(), plan));
        self.len += 1;
    }
}

async fn fill_catalog(c: &Common<'_>, catalog: &mask::Catalog, oids: &[u32]) -> Result<()> {
    let mut conn = c.side_connection().await?;
    let r = catalog.fill(oids, &mut conn).await;
    c.give_back(conn).await;
    r
}

async fn data_row(c: &Common<'_>, f: Frame, out: &mut BytesMut) -> Result<()> {
    // Row limit and counting.
    let needs_plan = {
        let mut st = c.st();
        // The portal's description, looked up only while its result has no plan yet (the
        // first row) and only when there is masking.
        let unplanned = match st.pending.front() {
            Some(Pending::Exec(u)) if c.masker.is_some() && u.mask.is_none() => {
                Some(u.portal.clone())
            }
            _ => None,
        };
        let described = unplanned.map(|p| st.portal_rows(&p));
        match st.pending.front_mut() {
            Some(Pending::Exec(u)) => {
                u.rows += 1;
                if u.row_limit.is_some_and(|l| u.rows > l) {
                    u.withheld += 1;
                    return Ok(());
                }
                if c.masker.is_none() {
                    f.encode(out);
                    return Ok(());
                }
                // The portal's description as bound (never a later statement's of the
                // same name), computed once per result.
                described
            }
            _ => {
                if c.masker.is_none() {
                    f.encode(out);
                    return Ok(());
                }
                Some((Vec::new(), Vec::new()))
            }
        }
    };
    let masker = c.masker.as_ref().expect("checked above");
    if let Some((fields, formats)) = needs_plan {
        if fields.is_empty() {
            // No description of this result: fail closed, every value becomes NULL.
            let values = backend::data_row(&f.body)?;
            let n = values.iter().filter(|v| v.is_some()).count() as u64;
            backend::encode_data_row(values.iter().map(|_| None), out);
            if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
                u.masked += n;
            }
            return Ok(());
        }
        let plan = plan_for(c, masker, &fields, &formats).await;
        if let Some(Pending::Exec(u)) = c.st().pending.front_mut() {
            u.mask = Some(plan);
        }
    }
    let mut st = c.st();
    if let Some(Pending::Exec(u)) = st.pending.front_mut() {
        if let Some(m) = &u.mask {
            u.masked += mask::rewrite_row(masker, m, &f.body, out)?;
        }
    }
    Ok(())
}
