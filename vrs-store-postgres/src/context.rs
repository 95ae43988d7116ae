//! What registrations are decided against ([`PersonContext`]), read for many queries in one
//! statement: one round trip instead of a read per dose, voucher and finding list.
//!
//! The statement only gathers rows: each query's stored dose (a replay) with its findings,
//! else the voucher's holder (or, without one, the first resident naming it as previous
//! voucher), the doses of the voucher read and of that resident's vouchers, and their
//! findings. Which resident and which vouchers make the context is then decided by the
//! core's own functions ([`voucher_resident`], [`person_vouchers`]); a voucher they name
//! that the statement did not gather sends that query through [`read_person_context`].

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use sqlx::postgres::PgRow;
use vrs_core::access::TabletAccount;
use vrs_core::dose::DoseRecord;
use vrs_core::finding::Finding;
use vrs_core::ids::{AccountId, DoseId, MunicipalityCode, VoucherNumber, VoucherRef};
use vrs_core::resident::Resident;
use vrs_core::store::{PersonContext, PersonQuery, person_vouchers, read_person_context, voucher_resident};
use vrs_core::{Error, Result};

use crate::PostgresStore;
use crate::codec::{self, RESIDENT_COLUMNS, col, kind_code, record};
use crate::error::storage_message;

/// Row tags of the statement, in the order its rows come.
const EXISTING: i16 = 0;
const RESIDENT: i16 = 1;
const VOUCHER: i16 = 2;
const DOSE: i16 = 3;
const FINDING: i16 = 4;
/// The tablet account (only in [`lean_statement`]).
const ACCOUNT: i16 = 5;

/// Typed NULLs in place of a resident's columns ([`RESIDENT_COLUMNS`], same names).
const NO_RESIDENT: &str = "NULL::text AS municipality, NULL::text AS addressee, NULL::text AS voucher, NULL::text AS name, \
     NULL::text AS name_kana, NULL::date AS birth_date, NULL::int2 AS sex, NULL::text AS address, \
     NULL::text AS previous_municipality, NULL::text AS previous_voucher, NULL::bytea AS personal_number_hash, \
     NULL::int2 AS status, NULL::date AS status_date";

/// Every lookup is a `LATERAL` subquery fenced by `OFFSET 0`: the planner cannot tell how
/// few queries the arrays hold and would otherwise hash-join whole tables (measured: half
/// the registration rate of the single reads). One query (a registration) comes as scalars
/// in a `VALUES` row instead of arrays: no arrays to build and take apart, no function scan
/// to materialise (measured with pgbench: ~8 µs less server CPU per registration).
fn statement(one: bool) -> String {
    let queries = if one {
        "(VALUES ($1::int4, $2::text, $3::text, $4::bytea)) AS q(ord, m, v, dose)"
    } else {
        "unnest($1::int4[], $2::text[], $3::text[], $4::bytea[]) AS q(ord, m, v, dose)"
    };
    format!(
        "WITH q AS (SELECT * FROM {queries}),
        ex AS MATERIALIZED (
            SELECT q.ord, d.id, d.record, d.seq FROM q CROSS JOIN LATERAL (
                SELECT d.id, d.record, d.seq FROM dose_ids AS k JOIN doses AS d ON d.municipality = k.municipality AND d.id = k.id
                WHERE k.id = q.dose OFFSET 0) AS d),
        rest AS MATERIALIZED (SELECT q.ord, q.m, q.v FROM q WHERE NOT EXISTS (SELECT 1 FROM ex WHERE ex.ord = q.ord)),
        holder AS MATERIALIZED (
            SELECT rest.ord, 0::int2 AS which, r.* FROM rest CROSS JOIN LATERAL (
                SELECT {RESIDENT_COLUMNS} FROM residents WHERE municipality = rest.m AND voucher = rest.v
                ORDER BY voucher_import DESC, addressee_len DESC, addressee DESC LIMIT 1) AS r),
        naming AS MATERIALIZED (
            SELECT rest.ord, 1::int2 AS which, r.* FROM rest CROSS JOIN LATERAL (
                SELECT {RESIDENT_COLUMNS} FROM residents WHERE previous_municipality = rest.m AND previous_voucher = rest.v
                ORDER BY municipality, addressee_len, addressee LIMIT 1) AS r
            WHERE NOT EXISTS (SELECT 1 FROM holder AS h WHERE h.ord = rest.ord)),
        who AS MATERIALIZED (SELECT * FROM holder UNION ALL SELECT * FROM naming),
        pv AS MATERIALIZED (
            SELECT ord, m, v FROM rest
            UNION SELECT ord, municipality, voucher FROM who
            UNION SELECT ord, previous_municipality, previous_voucher FROM who WHERE previous_voucher IS NOT NULL),
        ds AS MATERIALIZED (
            SELECT pv.ord, d.m, d.v, d.id, d.record, d.seq FROM pv CROSS JOIN LATERAL (
                SELECT d.municipality AS m, d.voucher AS v, d.id, d.record, d.seq FROM doses AS d
                WHERE d.municipality = pv.m AND d.voucher = pv.v OFFSET 0) AS d),
        fs AS (
            SELECT i.ord, f.id, f.kind, f.record FROM (SELECT ord, id FROM ex UNION SELECT ord, id FROM ds) AS i CROSS JOIN LATERAL (
                SELECT f.dose AS id, f.kind, f.record FROM findings AS f WHERE f.dose = i.id OFFSET 0) AS f)
        SELECT {EXISTING}::int2 AS tag, ord, NULL::text AS m, NULL::text AS v, id, NULL::int2 AS kind, record, seq,
            NULL::int2 AS which, {NO_RESIDENT} FROM ex
        UNION ALL SELECT {RESIDENT}::int2, ord, NULL, NULL, NULL, NULL, NULL, NULL, which, {RESIDENT_COLUMNS} FROM who
        UNION ALL SELECT {VOUCHER}::int2, ord, m, v, NULL, NULL, NULL, NULL, NULL, {NO_RESIDENT} FROM pv
        UNION ALL SELECT {DOSE}::int2, ord, m, v, id, NULL, record, seq, NULL, {NO_RESIDENT} FROM ds
        UNION ALL SELECT {FINDING}::int2, ord, NULL, NULL, id, kind, record, NULL, NULL, {NO_RESIDENT} FROM fs
        ORDER BY ord, tag, id, kind"
    )
}

/// [`statement`]'s text, built once per form: the text is some 4 KB, and formatting it
/// for every registration cost the client more than the rest of the call's encoding.
fn cached(one: bool) -> &'static str {
    static FORMS: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    FORMS[usize::from(one)].get_or_init(|| statement(one))
}

/// A registration's account and person in one round trip, for the common case only: the
/// account; the dose stored under the query's id and its findings; the voucher's holders;
/// the voucher's doses and their findings. Each part is a plain index lookup, so the
/// server starts a few small plans instead of [`statement`]'s two dozen CTE nodes
/// (measured with prepared statements on a loaded machine: 243–290 µs of backend CPU per
/// call, the account included, against 306–343 µs for `statement` alone). A person it does
/// not cover (no holder, more than one, or a moved-in resident with a previous voucher) is
/// left to [`person_contexts`].
fn lean_statement() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "SELECT {ACCOUNT}::int2 AS tag, a.record, NULL::bytea AS id, NULL::int8 AS seq, {NO_RESIDENT} FROM accounts AS a WHERE a.id = $4::text
             UNION ALL SELECT {EXISTING}::int2, d.record, d.id, d.seq, {NO_RESIDENT}
                FROM dose_ids AS k JOIN doses AS d ON d.municipality = k.municipality AND d.id = k.id WHERE k.id = $3::bytea
             UNION ALL SELECT {FINDING}::int2, f.record, f.dose, NULL, {NO_RESIDENT} FROM findings AS f WHERE f.dose = $3::bytea
             UNION ALL SELECT {RESIDENT}::int2, NULL, NULL, NULL, {RESIDENT_COLUMNS} FROM residents WHERE municipality = $1::text AND voucher = $2::text
             UNION ALL SELECT {DOSE}::int2, d.record, d.id, d.seq, {NO_RESIDENT} FROM doses AS d WHERE d.municipality = $1::text AND d.voucher = $2::text
             UNION ALL SELECT {FINDING}::int2, f.record, f.dose, NULL, {NO_RESIDENT}
                FROM doses AS d JOIN findings AS f ON f.dose = d.id WHERE d.municipality = $1::text AND d.voucher = $2::text"
        )
    })
}

/// What the statement gathered for one query.
#[derive(Default)]
struct Gathered {
    existing: Option<DoseRecord>,
    holder: Option<Resident>,
    naming: Option<Resident>,
    /// Vouchers whose doses were read (each with its doses, in id order).
    doses: HashMap<VoucherRef, Vec<DoseRecord>>,
    /// Findings of the doses read, each list in kind order.
    findings: HashMap<DoseId, Vec<Finding>>,
}

impl Gathered {
    /// The context, as [`read_person_context`] composes it; `None` when it would need a
    /// voucher the statement did not read.
    fn context(mut self, query: &PersonQuery) -> Option<PersonContext> {
        if let Some(dose) = self.existing {
            let findings = self.findings.remove(&dose.id).unwrap_or_default();
            return Some(PersonContext { existing: Some((dose, findings)), ..PersonContext::default() });
        }
        let resident = voucher_resident(self.holder, self.naming.into_iter().collect());
        let mut doses = Vec::new();
        for v in person_vouchers(resident.as_ref(), query.voucher) {
            doses.push((v, self.doses.get(&v)?.clone()));
        }
        let findings =
            PersonContext::dose_ids(&doses).into_iter().map(|id| (id, self.findings.get(&id).cloned().unwrap_or_default())).collect();
        Some(PersonContext { existing: None, resident, doses, findings })
    }
}

fn voucher_of(row: &PgRow) -> Result<VoucherRef> {
    let m: String = col(row, "m")?;
    let v: String = col(row, "v")?;
    Ok(VoucherRef {
        municipality: MunicipalityCode::parse(&m)
            .map_err(|e| storage_message(format!("a stored municipality code does not parse: {e}")))?,
        number: VoucherNumber::parse(&v).map_err(|e| storage_message(format!("a stored voucher number does not parse: {e}")))?,
    })
}

fn dose_id(row: &PgRow) -> Result<DoseId> {
    let bytes: Vec<u8> = col(row, "id")?;
    let b = <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| storage_message(format!("a stored dose id of {} bytes", bytes.len())))?;
    Ok(DoseId::from_bytes(b))
}

/// Sorts the statement's rows into what each query gathered.
fn gather(rows: &[PgRow], n: usize) -> Result<Vec<Gathered>> {
    let mut out: Vec<Gathered> = (0..n).map(|_| Gathered::default()).collect();
    for row in rows {
        let ord: i32 = col(row, "ord")?;
        let g = usize::try_from(ord)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(|| storage_message(format!("a person context row for query {ord} of {n}")))?;
        match col::<i16>(row, "tag")? {
            EXISTING => g.existing = Some(codec::dose(row)?),
            RESIDENT => {
                let r = codec::resident(row)?;
                if col::<i16>(row, "which")? == 0 {
                    g.holder = Some(r);
                } else {
                    g.naming = Some(r);
                }
            }
            VOUCHER => {
                g.doses.entry(voucher_of(row)?).or_default();
            }
            DOSE => g.doses.entry(voucher_of(row)?).or_default().push(codec::dose(row)?),
            FINDING => g.findings.entry(dose_id(row)?).or_default().push(record(row, "record")?),
            other => return Err(storage_message(format!("a person context row tagged {other}"))),
        }
    }
    Ok(out)
}

/// [`StoreBackend::person_contexts`] in one statement (see the module documentation).
pub(crate) async fn person_contexts(store: &PostgresStore, queries: &[PersonQuery]) -> Result<Vec<PersonContext>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let (mut ord, mut municipality, mut voucher, mut dose) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, q) in queries.iter().enumerate() {
        ord.push(i32::try_from(i).map_err(|_| Error::Invalid {
            field: "queries",
            value: queries.len().to_string(),
            reason: "too many person contexts asked at once".into(),
        })?);
        municipality.push(q.voucher.municipality.as_str());
        voucher.push(q.voucher.number.as_str());
        dose.push(q.dose.map(|d| d.as_bytes().to_vec()));
    }
    let sql = cached(queries.len() == 1);
    let query = match (ord.as_slice(), municipality.as_slice(), voucher.as_slice(), dose.as_slice()) {
        ([o], [m], [v], [d]) => sqlx::query(sql).bind(*o).bind(*m).bind(*v).bind(d.clone()),
        _ => sqlx::query(sql).bind(ord).bind(municipality).bind(voucher).bind(dose),
    };
    let rows = store.fetch_all("reading what registrations are decided against", query).await?;
    let mut out = Vec::with_capacity(queries.len());
    for (g, q) in gather(&rows, queries.len())?.into_iter().zip(queries) {
        match g.context(q) {
            Some(c) => out.push(c),
            None => out.push(read_person_context(store, *q).await?),
        }
    }
    Ok(out)
}

/// [`StoreBackend::account_with_person_context`] in one statement ([`lean_statement`]).
pub(crate) async fn account_with_person_context(
    store: &PostgresStore,
    account: &AccountId,
    query: PersonQuery,
) -> Result<(Option<TabletAccount>, Option<PersonContext>)> {
    let q = sqlx::query(lean_statement())
        .bind(query.voucher.municipality.as_str())
        .bind(query.voucher.number.as_str())
        .bind(query.dose.map(|d| d.as_bytes().to_vec()))
        .bind(account.as_str());
    let rows = store.fetch_all("reading a tablet account and what its registration is decided against", q).await?;
    let mut stored = None;
    let mut existing = None;
    let mut holders = Vec::new();
    let mut doses = Vec::new();
    // Keyed by dose and kind code: a dose's findings may come twice (by id and by voucher).
    let mut findings: BTreeMap<(DoseId, i16), Finding> = BTreeMap::new();
    for row in &rows {
        match col::<i16>(row, "tag")? {
            ACCOUNT => stored = Some(record(row, "record")?),
            EXISTING => existing = Some(codec::dose(row)?),
            RESIDENT => holders.push(codec::resident(row)?),
            DOSE => doses.push(codec::dose(row)?),
            FINDING => {
                let f: Finding = record(row, "record")?;
                findings.insert((f.dose, kind_code(f.kind)), f);
            }
            other => return Err(storage_message(format!("a registration context row tagged {other}"))),
        }
    }
    let findings_of = |id: DoseId| -> Vec<Finding> { findings.range((id, i16::MIN)..=(id, i16::MAX)).map(|(_, f)| f.clone()).collect() };
    let context = if let Some(dose) = existing {
        let found = findings_of(dose.id);
        Some(PersonContext { existing: Some((dose, found)), ..PersonContext::default() })
    } else {
        match holders.as_slice() {
            // The voucher's one holder, without a previous voucher: the person's vouchers
            // are the voucher read alone (`person_vouchers`), whose doses came in id order
            // once sorted.
            [holder] if person_vouchers(Some(holder), query.voucher) == [query.voucher] => {
                doses.sort_by_key(|d| d.id);
                let doses = vec![(query.voucher, doses)];
                let found = PersonContext::dose_ids(&doses).into_iter().map(|id| (id, findings_of(id))).collect();
                Some(PersonContext { existing: None, resident: Some(holder.clone()), doses, findings: found })
            }
            _ => None,
        }
    };
    Ok((stored, context))
}
