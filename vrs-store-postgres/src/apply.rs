//! Applying change sets: the calls of one `apply` are folded into their net effect (what
//! writing them one after another would leave), which goes to the server as one statement
//! of data-modifying CTEs: one round trip, one transaction, all or nothing. Guards:
//!
//! - a new dose's id must be free: the primary key of `dose_ids` (unique_violation);
//! - an update must carry the stored revision plus one: a conditional `UPDATE` whose row
//!   count `vrs_check` verifies (SQLSTATE VR409);
//! - a slot claim must find the slot free or held by the same dose: an
//!   `INSERT .. ON CONFLICT DO UPDATE .. WHERE` whose row count `vrs_check` verifies.
//!
//! Each becomes [`vrs_core::Error::Conflict`] and the service decides again.
//!
//! Export cursors: every dose write takes the next number of the `dose_seq` sequence
//! while holding a shared advisory lock on its municipality; a `ChangedSince` scan takes
//! that lock exclusively for a moment to learn the highest number that is certainly
//! committed (see `scan`), so a delta export never skips a write that committed late.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use sqlx::postgres::{PgArguments, PgConnection};
use sqlx::{Arguments, Connection, Row};
use vrs_core::access::TabletAccount;
use vrs_core::credentials::SecretHash;
use vrs_core::dose::DoseRecord;
use vrs_core::finding::{Finding, FindingKind};
use vrs_core::ids::DoseId;
use vrs_core::stats::StatsKey;
use vrs_core::store::{Applied, AuditEvent, ChangeSet, DoseSlot};
use vrs_core::{Error, Result};

use crate::codec::{age_band_code, kind_code, municipality_number, sex_code};
use crate::conn::{Conns, Lease};
use crate::error::{db, storage_message};

/// The first key of the advisory locks that order dose writes per municipality (the second
/// is the municipality code as a number). 0x5652 is "VR".
pub(crate) const LOCK_SPACE: i32 = 0x5652;

/// How a dose is written by the call.
enum DoseOp {
    /// Inserted (the id must be free).
    New,
    /// Updated; the stored record must have this revision.
    Update { expected: u32 },
}

/// The last state of one dose written by the call.
struct DoseWrite {
    record: DoseRecord,
    /// Position of the last write among all dose writes of the call (1-based): it gets
    /// the `pos`-th sequence number taken.
    pos: i32,
    op: DoseOp,
}

/// Which sequence numbers a statement reports.
#[derive(Clone, Copy)]
enum Numbers {
    /// None: it writes no dose.
    None,
    /// The one number it draws (a single registration or change: no array to build).
    One,
    /// The highest, and every number by the position of its write.
    Each,
}

/// Slot operations that can go in one statement: one kind, no slot twice.
struct SlotBatch {
    claim: bool,
    ops: Vec<(DoseSlot, DoseId)>,
}

/// The net effect of a call's change sets.
#[derive(Default)]
struct Net {
    doses: Vec<DoseWrite>,
    by_id: HashMap<DoseId, usize>,
    /// Dose writes in the call (each takes a sequence number).
    writes: i32,
    slots: Vec<SlotBatch>,
    findings: HashMap<(DoseId, FindingKind), Finding>,
    counters: BTreeMap<StatsKey, i64>,
    accounts: BTreeMap<String, TabletAccount>,
    account_secrets: BTreeMap<String, SecretHash>,
    audit: Vec<AuditEvent>,
}

fn conflict(what: String) -> Error {
    Error::Conflict { what }
}

impl Net {
    /// Folds change sets in order, failing early on what is a conflict whatever is stored
    /// (the same new id twice, a broken revision chain within the call).
    fn fold(changes: Vec<ChangeSet>) -> Result<Net> {
        let mut net = Net::default();
        for cs in changes {
            let ChangeSet { new_doses, updated_doses, claim_slots, release_slots, findings, counters, accounts, audit, account_secrets } =
                cs;
            for d in new_doses {
                if net.by_id.contains_key(&d.id) {
                    return Err(conflict(format!("dose {} already exists", d.id)));
                }
                net.writes += 1;
                net.by_id.insert(d.id, net.doses.len());
                net.doses.push(DoseWrite { record: d, pos: net.writes, op: DoseOp::New });
            }
            for d in updated_doses {
                net.writes += 1;
                match net.by_id.get(&d.id) {
                    Some(&i) => {
                        let w = &mut net.doses[i];
                        if d.revision.checked_sub(1) != Some(w.record.revision) {
                            return Err(conflict(format!(
                                "dose {} changed meanwhile: stored revision {}, the update is revision {}",
                                d.id, w.record.revision, d.revision
                            )));
                        }
                        w.record = d;
                        w.pos = net.writes;
                    }
                    None => {
                        let Some(expected) = d.revision.checked_sub(1) else {
                            return Err(conflict(format!("dose {} changed meanwhile: the update is revision 0", d.id)));
                        };
                        net.by_id.insert(d.id, net.doses.len());
                        net.doses.push(DoseWrite { record: d, pos: net.writes, op: DoseOp::Update { expected } });
                    }
                }
            }
            for op in release_slots {
                net.slot_op(false, op);
            }
            for op in claim_slots {
                net.slot_op(true, op);
            }
            for f in findings {
                net.findings.insert((f.dose, f.kind), f);
            }
            for (key, delta) in counters {
                *net.counters.entry(key).or_default() += delta;
            }
            for a in accounts {
                net.accounts.insert(a.id.as_str().to_owned(), a);
            }
            for h in account_secrets {
                net.account_secrets.insert(h.account.as_str().to_owned(), h);
            }
            net.audit.extend(audit);
        }
        Ok(net)
    }

    fn slot_op(&mut self, claim: bool, op: (DoseSlot, DoseId)) {
        if let Some(last) = self.slots.last_mut()
            && last.claim == claim
            && !last.ops.iter().any(|(s, _)| *s == op.0)
        {
            last.ops.push(op);
            return;
        }
        self.slots.push(SlotBatch { claim, ops: vec![op] });
    }

    /// Whether the slot batches fit in the one statement: at most a release batch then a
    /// claim batch, on different slots (one statement may not touch a row twice).
    fn slots_fit_one_statement(&self) -> bool {
        match self.slots.as_slice() {
            [] | [_] => true,
            [release, claim] => !release.claim && claim.claim && !release.ops.iter().any(|(s, _)| claim.ops.iter().any(|(c, _)| c == s)),
            _ => false,
        }
    }
}

/// A statement under construction: its text and its bound arguments.
struct Stmt {
    ctes: Vec<String>,
    checks: Vec<String>,
    args: PgArguments,
    n: usize,
}

impl Stmt {
    fn new() -> Self {
        // Room for a registration's arguments (some 30, most of the bytes its record's
        // JSON): growing the buffer from empty reallocated it a dozen times per call.
        let mut args = PgArguments::default();
        args.reserve(32, 4096);
        Self { ctes: Vec::with_capacity(8), checks: Vec::new(), args, n: 0 }
    }

    /// Binds a value; returns its placeholder.
    fn bind<'q, T>(&mut self, value: T) -> Result<String>
    where
        T: sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'q,
    {
        self.args.add(value).map_err(|e| storage_message(format!("encoding a statement argument: {e}")))?;
        self.n += 1;
        Ok(format!("${}", self.n))
    }

    fn cte(&mut self, text: String) {
        self.ctes.push(text);
    }

    /// Adds a guard: `ok` must hold, else the statement fails with `what`.
    fn check(&mut self, ok: String, what: &str) -> Result<()> {
        let what = self.bind(what.to_owned())?;
        self.checks.push(format!("vrs_check({ok}, {what})"));
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.ctes.is_empty()
    }

    /// The statement: every CTE, then one row after every guard passed with the highest
    /// sequence number taken (`NULL` when none) and, for `Numbers::Each`, every number
    /// taken in the order of the writes' positions.
    fn finish(self, numbers: Numbers) -> (String, PgArguments) {
        let seq = match numbers {
            Numbers::None => "NULL::int8 AS seq, NULL::int8[] AS seqs",
            // One write: its number is the highest.
            Numbers::One => "(SELECT max(seq) FROM sq) AS seq, NULL::int8[] AS seqs",
            Numbers::Each => "(SELECT max(seq) FROM sq) AS seq, (SELECT array_agg(seq ORDER BY pos) FROM sq) AS seqs",
        };
        let checks = if self.checks.is_empty() { "true".to_owned() } else { self.checks.join(" AND ") };
        let sql = format!("WITH {} SELECT {seq}, {checks} AS ok", self.ctes.join(",\n"));
        (sql, self.args)
    }
}

/// One column of a row source, with its values.
enum Col {
    Text(Vec<String>),
    Bytes(Vec<Vec<u8>>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Date(Vec<NaiveDate>),
}

impl Col {
    fn len(&self) -> usize {
        match self {
            Col::Text(v) => v.len(),
            Col::Bytes(v) => v.len(),
            Col::I16(v) => v.len(),
            Col::I32(v) => v.len(),
            Col::I64(v) => v.len(),
            Col::Bool(v) => v.len(),
            Col::Date(v) => v.len(),
        }
    }

    /// Binds the column: its one value as a scalar when `one`, else the array; returns
    /// the placeholder with its cast.
    fn bind(self, stmt: &mut Stmt, one: bool) -> Result<String> {
        fn put<T>(stmt: &mut Stmt, mut values: Vec<T>, one: bool, ty: &str) -> Result<String>
        where
            T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
            Vec<T>: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + 'static,
        {
            match values.pop() {
                Some(v) if one && values.is_empty() => Ok(format!("{}::{ty}", stmt.bind(v)?)),
                last => {
                    values.extend(last);
                    Ok(format!("{}::{ty}[]", stmt.bind(values)?))
                }
            }
        }
        match self {
            Col::Text(v) => put(stmt, v, one, "text"),
            Col::Bytes(v) => put(stmt, v, one, "bytea"),
            Col::I16(v) => put(stmt, v, one, "int2"),
            Col::I32(v) => put(stmt, v, one, "int4"),
            Col::I64(v) => put(stmt, v, one, "int8"),
            Col::Bool(v) => put(stmt, v, one, "bool"),
            Col::Date(v) => put(stmt, v, one, "date"),
        }
    }
}

/// A row source of equally long columns named `alias(names)`: `unnest` of arrays, or for
/// a single row a `VALUES` of scalars. A registration writes one row to each table, and
/// the scalar form spares the server the arrays and the function scans that materialise
/// them (measured with pgbench on the registration's statement: about 20 µs less server
/// CPU per registration, some 10% of the statement).
fn rows(stmt: &mut Stmt, alias: &str, names: &[&str], cols: Vec<Col>) -> Result<String> {
    let one = cols.iter().all(|c| c.len() == 1);
    let mut placeholders = Vec::with_capacity(cols.len());
    for c in cols {
        placeholders.push(c.bind(stmt, one)?);
    }
    let (list, names) = (placeholders.join(", "), names.join(", "));
    Ok(if one { format!("(VALUES ({list})) AS {alias}({names})") } else { format!("unnest({list}) AS {alias}({names})") })
}

/// Dose columns as arrays, for `unnest`.
#[derive(Default)]
struct DoseColumns {
    pos: Vec<i32>,
    municipality: Vec<String>,
    id: Vec<Vec<u8>>,
    voucher: Vec<String>,
    revision: Vec<i32>,
    expected: Vec<i32>,
    matched: Vec<bool>,
    site: Vec<String>,
    registered_on: Vec<NaiveDate>,
    record: Vec<String>,
}

impl DoseColumns {
    fn push(&mut self, w: &DoseWrite, expected: Option<u32>) -> Result<()> {
        let d = &w.record;
        let revision =
            i32::try_from(d.revision).map_err(|_| storage_message(format!("dose {} revision {} is too large", d.id, d.revision)))?;
        self.pos.push(w.pos);
        self.municipality.push(d.owner().as_str().to_owned());
        self.id.push(d.id.as_bytes().to_vec());
        self.voucher.push(d.voucher.number.as_str().to_owned());
        self.revision.push(revision);
        if let Some(e) = expected {
            self.expected.push(i32::try_from(e).unwrap_or(i32::MAX));
        }
        self.matched.push(d.matched.is_some());
        self.site.push(d.details().site.as_str().to_owned());
        self.registered_on.push(d.registered_on_jst());
        self.record.push(json(&format!("dose {}", d.id), d)?);
        Ok(())
    }
}

/// Text that PostgreSQL can hold: serde_json escapes control characters, so only a NUL
/// written as `\u0000` is left to refuse (JSONB cannot hold it).
fn json<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    // Sized for a dose record (~750 bytes) so that serialising it does not grow the buffer.
    let mut bytes = Vec::with_capacity(1024);
    serde_json::to_writer(&mut bytes, value).map_err(|e| storage_message(format!("encoding {what}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| storage_message(format!("encoding {what}: {e}")))?;
    if text.contains("\\u0000") {
        return Err(Error::Invalid {
            field: "text",
            value: "(redacted)".into(),
            reason: format!("{what} contains a NUL byte, which PostgreSQL cannot hold"),
        });
    }
    Ok(text)
}

fn slot_columns(ops: &[(DoseSlot, DoseId)]) -> (Vec<String>, Vec<String>, Vec<i16>, Vec<Vec<u8>>) {
    let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Key order, so that concurrent writers lock slots in the same order.
    let mut sorted: Vec<&(DoseSlot, DoseId)> = ops.iter().collect();
    sorted.sort_by_key(|(s, _)| *s);
    for (slot, id) in sorted {
        cols.0.push(slot.voucher.municipality.as_str().to_owned());
        cols.1.push(slot.voucher.number.as_str().to_owned());
        cols.2.push(i16::from(slot.dose_number));
        cols.3.push(id.as_bytes().to_vec());
    }
    cols
}

/// Adds a slot batch to a statement, as CTE `name`.
fn add_slots(stmt: &mut Stmt, batch: &SlotBatch, name: &str) -> Result<()> {
    let (m, v, n, d) = slot_columns(&batch.ops);
    let count = m.len();
    let input =
        rows(stmt, "u", &["municipality", "voucher", "dose_number", "dose"], vec![Col::Text(m), Col::Text(v), Col::I16(n), Col::Bytes(d)])?;
    if batch.claim {
        stmt.cte(format!(
            "{name} AS (INSERT INTO slots AS s (municipality, voucher, dose_number, dose) SELECT * FROM {input} \
             ON CONFLICT (municipality, voucher, dose_number) DO UPDATE SET dose = excluded.dose WHERE s.dose = excluded.dose \
             RETURNING 1)"
        ));
        let held: Vec<String> = batch.ops.iter().map(|(s, _)| format!("dose {} of voucher {}", s.dose_number, s.voucher)).collect();
        let what = format!("{} is already held by another dose", held.join(", "));
        let count = stmt.bind(i64::try_from(count).unwrap_or(i64::MAX))?;
        stmt.check(format!("(SELECT count(*) FROM {name}) = {count}"), &what)?;
    } else {
        stmt.cte(format!(
            "{name} AS (DELETE FROM slots AS s USING {input} WHERE s.municipality = u.municipality AND s.voucher = u.voucher \
             AND s.dose_number = u.dose_number AND s.dose = u.dose)"
        ));
    }
    Ok(())
}

/// Builds the statement of everything but the slot batches it is not given.
fn statement(net: &Net, slots: &[SlotBatch]) -> Result<(Stmt, Numbers)> {
    let mut stmt = Stmt::new();
    let numbers = match net.writes {
        0 => Numbers::None,
        1 => Numbers::One,
        _ => Numbers::Each,
    };
    if net.writes > 0 {
        let owners: BTreeSet<i32> = net.doses.iter().map(|w| municipality_number(&w.record.owner())).collect();
        let owners = rows(&mut stmt, "o", &["m"], vec![Col::I32(owners.into_iter().collect())])?;
        stmt.cte(format!("lk AS (SELECT count(pg_advisory_xact_lock_shared({LOCK_SPACE}, o.m)) AS n FROM {owners})"));
        // The one-time filter takes the locks before any number is drawn.
        let numbers = if net.writes == 1 {
            "(VALUES (1)) AS g(g)".to_owned()
        } else {
            format!("generate_series(1, {}::int4) AS g", stmt.bind(net.writes)?)
        };
        stmt.cte(format!("sq AS MATERIALIZED (SELECT g AS pos, nextval('dose_seq') AS seq FROM {numbers} WHERE (SELECT n FROM lk) >= 0)"));
    }
    let mut new = DoseColumns::default();
    let mut updated = DoseColumns::default();
    for w in &net.doses {
        match w.op {
            DoseOp::New => new.push(w, None)?,
            DoseOp::Update { expected } => updated.push(w, Some(expected))?,
        }
    }
    if !new.id.is_empty() {
        let ids = rows(&mut stmt, "u", &["id", "municipality"], vec![Col::Bytes(new.id.clone()), Col::Text(new.municipality.clone())])?;
        stmt.cte(format!("ni AS (INSERT INTO dose_ids (id, municipality) SELECT u.id, u.municipality FROM {ids})"));
        let input = rows(
            &mut stmt,
            "u",
            &["pos", "municipality", "id", "voucher", "revision", "matched", "site", "registered_on", "record"],
            vec![
                Col::I32(new.pos),
                Col::Text(new.municipality),
                Col::Bytes(new.id),
                Col::Text(new.voucher),
                Col::I32(new.revision),
                Col::Bool(new.matched),
                Col::Text(new.site),
                Col::Date(new.registered_on),
                Col::Text(new.record),
            ],
        )?;
        stmt.cte(format!(
            "nd AS (INSERT INTO doses (municipality, id, voucher, seq, revision, matched, site, registered_on, record) \
             SELECT u.municipality, u.id, u.voucher, sq.seq, u.revision, u.matched, u.site, u.registered_on, u.record::jsonb \
             FROM {input} JOIN sq USING (pos))"
        ));
    }
    if !updated.id.is_empty() {
        let count = updated.id.len();
        let moved =
            rows(&mut stmt, "u", &["id", "municipality"], vec![Col::Bytes(updated.id.clone()), Col::Text(updated.municipality.clone())])?;
        let input = rows(
            &mut stmt,
            "u",
            &["pos", "municipality", "id", "voucher", "revision", "expected", "matched", "site", "registered_on", "record"],
            vec![
                Col::I32(updated.pos),
                Col::Text(updated.municipality),
                Col::Bytes(updated.id),
                Col::Text(updated.voucher),
                Col::I32(updated.revision),
                Col::I32(updated.expected),
                Col::Bool(updated.matched),
                Col::Text(updated.site),
                Col::Date(updated.registered_on),
                Col::Text(updated.record),
            ],
        )?;
        stmt.cte(format!(
            "ud AS (UPDATE doses AS d SET municipality = u.municipality, voucher = u.voucher, seq = sq.seq, revision = u.revision, \
             matched = u.matched, site = u.site, registered_on = u.registered_on, record = u.record::jsonb \
             FROM {input} JOIN sq USING (pos) JOIN dose_ids AS k ON k.id = u.id \
             WHERE d.municipality = k.municipality AND d.id = u.id AND d.revision = u.expected RETURNING d.id)"
        ));
        // A record whose owner changed moves in the id index too.
        stmt.cte(format!(
            "um AS (UPDATE dose_ids AS k SET municipality = u.municipality FROM {moved} WHERE k.id = u.id AND k.municipality <> u.municipality)"
        ));
        let ids: Vec<String> =
            net.doses.iter().filter(|w| matches!(w.op, DoseOp::Update { .. })).map(|w| w.record.id.to_string()).collect();
        let what =
            format!("dose {} changed meanwhile or does not exist: an update must carry the stored revision plus one", ids.join(", "));
        let count = stmt.bind(i64::try_from(count).unwrap_or(i64::MAX))?;
        stmt.check(format!("(SELECT count(*) FROM ud) = {count}"), &what)?;
    }
    for (i, batch) in slots.iter().enumerate() {
        add_slots(&mut stmt, batch, &format!("sl{i}"))?;
    }
    if !net.findings.is_empty() {
        let mut findings: Vec<&Finding> = net.findings.values().collect();
        findings.sort_by_key(|f| (f.municipality, f.dose, f.kind));
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for f in findings {
            cols.0.push(f.municipality.as_str().to_owned());
            cols.1.push(f.dose.as_bytes().to_vec());
            cols.2.push(kind_code(f.kind));
            cols.3.push(f.open);
            cols.4.push(json(&format!("a finding about dose {}", f.dose), f)?);
        }
        let keys = rows(
            &mut stmt,
            "u",
            &["municipality", "dose", "kind"],
            vec![Col::Text(cols.0.clone()), Col::Bytes(cols.1.clone()), Col::I16(cols.2.clone())],
        )?;
        let input = rows(
            &mut stmt,
            "u",
            &["municipality", "dose", "kind", "open", "record"],
            vec![Col::Text(cols.0), Col::Bytes(cols.1), Col::I16(cols.2), Col::Bool(cols.3), Col::Text(cols.4)],
        )?;
        // A finding is one per (dose, kind): one re-filed under another municipality leaves the old queue.
        stmt.cte(format!(
            "fd AS (DELETE FROM findings AS f USING {keys} WHERE f.dose = u.dose AND f.kind = u.kind AND f.municipality <> u.municipality)"
        ));
        stmt.cte(format!(
            "fu AS (INSERT INTO findings AS f (municipality, dose, kind, open, record) \
             SELECT u.municipality, u.dose, u.kind, u.open, u.record::jsonb FROM {input} \
             ON CONFLICT (municipality, dose, kind) DO UPDATE SET open = excluded.open, record = excluded.record)"
        ));
    }
    let counters: Vec<(&StatsKey, &i64)> = net.counters.iter().filter(|(_, d)| **d != 0).collect();
    if !counters.is_empty() {
        let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (key, delta) in counters {
            cols.0.push(key.municipality.as_str().to_owned());
            cols.1.push(key.date);
            cols.2.push(i16::from(key.dose_number));
            cols.3.push(sex_code(key.sex));
            cols.4.push(age_band_code(key.age_band));
            cols.5.push(key.product.as_str().to_owned());
            cols.6.push(*delta);
        }
        let input = rows(
            &mut stmt,
            "u",
            &["municipality", "day", "dose_number", "sex", "age_band", "product", "count"],
            vec![
                Col::Text(cols.0),
                Col::Date(cols.1),
                Col::I16(cols.2),
                Col::I16(cols.3),
                Col::I16(cols.4),
                Col::Text(cols.5),
                Col::I64(cols.6),
            ],
        )?;
        stmt.cte(format!(
            "cu AS (INSERT INTO counters AS c (municipality, day, dose_number, sex, age_band, product, count) \
             SELECT * FROM {input} \
             ON CONFLICT (municipality, day, dose_number, sex, age_band, product) DO UPDATE SET count = c.count + excluded.count)"
        ));
    }
    if !net.accounts.is_empty() {
        let mut cols = (Vec::new(), Vec::new(), Vec::new());
        for a in net.accounts.values() {
            cols.0.push(a.site.municipality.as_str().to_owned());
            cols.1.push(a.id.as_str().to_owned());
            cols.2.push(json(&format!("account {}", a.id.as_str()), a)?);
        }
        let input = rows(&mut stmt, "u", &["municipality", "id", "record"], vec![Col::Text(cols.0), Col::Text(cols.1), Col::Text(cols.2)])?;
        stmt.cte(format!(
            "au AS (INSERT INTO accounts AS a (municipality, id, record) SELECT u.municipality, u.id, u.record::jsonb FROM {input} \
             ON CONFLICT (id) DO UPDATE SET municipality = excluded.municipality, record = excluded.record)"
        ));
    }
    if !net.account_secrets.is_empty() {
        let mut cols = (Vec::new(), Vec::new(), Vec::new());
        for h in net.account_secrets.values() {
            cols.0.push(h.municipality.as_str().to_owned());
            cols.1.push(h.account.as_str().to_owned());
            cols.2.push(json(&format!("the secret hash of account {}", h.account.as_str()), h)?);
        }
        let input =
            rows(&mut stmt, "u", &["municipality", "account", "record"], vec![Col::Text(cols.0), Col::Text(cols.1), Col::Text(cols.2)])?;
        stmt.cte(format!(
            "sh AS (INSERT INTO account_secrets AS s (municipality, account, record) SELECT u.municipality, u.account, u.record::jsonb \
             FROM {input} \
             ON CONFLICT (account) DO UPDATE SET municipality = excluded.municipality, record = excluded.record)"
        ));
    }
    if !net.audit.is_empty() {
        let mut cols = (Vec::new(), Vec::new());
        for e in &net.audit {
            cols.0.push(e.municipality.as_str().to_owned());
            cols.1.push(json("an audit event", e)?);
        }
        let input = rows(&mut stmt, "u", &["municipality", "record"], vec![Col::Text(cols.0), Col::Text(cols.1)])?;
        // Rows come out of unnest in order, so the audit sequence follows the call's order.
        stmt.cte(format!("ev AS (INSERT INTO audit (municipality, record) SELECT u.municipality, u.record::jsonb FROM {input})"));
    }
    Ok((stmt, numbers))
}

/// The highest sequence number given so far (0 before the first).
async fn last_seq(c: &mut Lease<'_>) -> Result<u64> {
    let row = sqlx::query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS seq FROM dose_seq").fetch_one(&mut **c).await;
    let seq: i64 = c.check(row.and_then(|r| r.try_get("seq"))).map_err(db("reading the dose sequence"))?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

/// The numbers a statement reports (see [`Stmt::finish`]).
#[derive(Default)]
struct Taken {
    seq: Option<i64>,
    seqs: Option<Vec<i64>>,
}

impl Taken {
    fn read(row: &sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        Ok(Self { seq: row.try_get("seq")?, seqs: row.try_get("seqs")? })
    }
}

/// Runs the statement, then each slot batch after it, in one transaction.
async fn in_transaction(conn: &mut PgConnection, stmt: Option<(String, PgArguments)>, batches: &[SlotBatch]) -> sqlx::Result<Taken> {
    let mut tx = conn.begin().await?;
    let mut taken = Taken::default();
    if let Some((sql, args)) = stmt {
        taken = Taken::read(&sqlx::query_with(&sql, args).fetch_one(&mut *tx).await?)?;
    }
    for batch in batches {
        let mut s = Stmt::new();
        add_slots(&mut s, batch, "sl").map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        let (sql, args) = s.finish(Numbers::None);
        sqlx::query_with(&sql, args).fetch_one(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(taken)
}

/// Adds statistics counter changes inside a transaction the caller holds (an import
/// moving restated residents' doses), through the same counter upsert as [`apply`].
pub(crate) async fn add_counters(tx: &mut PgConnection, counters: Vec<(StatsKey, i64)>) -> Result<()> {
    let net = Net::fold(vec![ChangeSet { counters, ..ChangeSet::default() }])?;
    let (stmt, numbers) = statement(&net, &[])?;
    if stmt.is_empty() {
        return Ok(());
    }
    let (sql, args) = stmt.finish(numbers);
    sqlx::query_with(&sql, args).fetch_one(&mut *tx).await.map_err(db("moving statistics counters"))?;
    Ok(())
}

/// Applies change sets all or nothing; reports the highest sequence number given (or the
/// last one given before, when no dose was written) and the number of each dose written.
pub(crate) async fn apply(conns: &Conns, changes: Vec<ChangeSet>) -> Result<Applied> {
    let mut net = Net::fold(changes)?;
    let one_statement = net.slots_fit_one_statement();
    let slots = std::mem::take(&mut net.slots);
    let (inline, separate): (&[SlotBatch], &[SlotBatch]) = if one_statement { (&slots, &[]) } else { (&[], &slots) };
    let (stmt, numbers) = statement(&net, inline)?;
    let mut c = conns.get().await?;
    if stmt.is_empty() && separate.is_empty() {
        return Ok(Applied { seq: last_seq(&mut c).await?, doses: Vec::new() });
    }
    let taken = if separate.is_empty() {
        // One statement: its own transaction, one round trip.
        let (sql, args) = stmt.finish(numbers);
        let row = sqlx::query_with(&sql, args).fetch_one(&mut *c).await;
        c.check(row.and_then(|r| Taken::read(&r))).map_err(db("applying a change set"))?
    } else {
        // Slot operations that touch a slot twice go one statement each, in order, in one
        // transaction with the rest.
        let stmt = (!stmt.is_empty()).then(|| stmt.finish(numbers));
        let applied = in_transaction(&mut c, stmt, separate).await;
        c.check(applied).map_err(db("applying a change set"))?
    };
    let number = |s: i64| u64::try_from(s).map_err(|_| storage_message(format!("sequence number {s} is negative")));
    let Some(seq) = taken.seq else {
        return Ok(Applied { seq: last_seq(&mut c).await?, doses: Vec::new() });
    };
    let seq = number(seq)?;
    // Each dose's number is the one drawn for the position of its last write: the numbers
    // need not ascend with the positions.
    let doses = match (numbers, taken.seqs) {
        (Numbers::One, _) => net.doses.iter().map(|w| (w.record.id, seq)).collect(),
        (Numbers::Each, Some(seqs)) if usize::try_from(net.writes).is_ok_and(|n| n == seqs.len()) => {
            let mut doses = Vec::with_capacity(net.doses.len());
            for w in &net.doses {
                let drawn = usize::try_from(w.pos - 1).ok().and_then(|i| seqs.get(i));
                let Some(&s) = drawn else { return Err(storage_message(format!("no sequence number for dose write {}", w.pos))) };
                doses.push((w.record.id, number(s)?));
            }
            doses
        }
        (_, seqs) => {
            return Err(storage_message(format!(
                "the server reported {} sequence numbers for {} dose writes",
                seqs.map_or(0, |s| s.len()),
                net.writes
            )));
        }
    };
    Ok(Applied { seq, doses })
}
