//! Resident imports: the core's parser runs on a blocking thread and its residents stream
//! as COPY text into a temporary staging table; one set-based `INSERT .. ON CONFLICT`
//! then merges them into `residents`. A municipality's first upload skips both: its rows
//! stream straight into `residents` (the merge's conflict handling costs about as much as
//! the COPY), until a row names a resident again or another municipality, from which on
//! the rest goes through staging. All in one transaction: an import that fails, is
//! refused by its source, or loses its connection leaves nothing, and can simply be run
//! again.

use std::collections::HashSet;
use std::io::Write as _;

use sqlx::postgres::{PgConnection, PgCopyIn};
use sqlx::{Connection, Row};
use tokio::sync::mpsc;
use vrs_core::ids::MunicipalityCode;
use vrs_core::reconcile::vouchers_of;
use vrs_core::resident::Resident;
use vrs_core::stats::restated as restated_deltas;
use vrs_core::store::{ImportApplied, ResidentSource};
use vrs_core::{Error, Result};

use crate::apply;
use crate::codec::{self, STAGING_COLUMNS, copy_resident, municipality_number};
use crate::conn::{Conns, leaves_connection_usable};
use crate::error::{db, map, storage_message};

/// Residents asked from the source at a time.
const BATCH: usize = 8192;
/// Bytes of COPY text sent in one message.
const CHUNK: usize = 256 * 1024;
/// Chunks that may wait between the parser and the connection.
const CHANNEL: usize = 4;
/// The first key of the advisory locks that keep imports of one municipality apart (the
/// second is the municipality code as a number). 0x5649 is "VI".
const IMPORT_LOCK_SPACE: i32 = 0x5649;

const CREATE_STAGING: &str = "CREATE TEMP TABLE vrs_staging (
    ord bigint NOT NULL,
    municipality text COLLATE \"C\" NOT NULL,
    addressee_len smallint NOT NULL,
    addressee text COLLATE \"C\" NOT NULL,
    voucher text COLLATE \"C\" NOT NULL,
    name text NOT NULL,
    name_kana text NOT NULL,
    birth_date date NOT NULL,
    sex smallint NOT NULL,
    address text,
    previous_municipality text COLLATE \"C\",
    previous_voucher text COLLATE \"C\",
    personal_number_hash bytea,
    status smallint NOT NULL,
    status_date date
) ON COMMIT DROP";

/// The merge. `{distinct}` / `{order}` keep the last row of a resident the upload names
/// twice (only then: the sort costs). `first_import` tells inserted rows from replaced ones.
fn merge_sql(duplicates: bool) -> String {
    let (distinct, order) = if duplicates {
        (
            "DISTINCT ON (s.municipality, s.addressee_len, s.addressee) ",
            " ORDER BY s.municipality, s.addressee_len, s.addressee, s.ord DESC",
        )
    } else {
        ("", "")
    };
    format!(
        "WITH up AS (
            INSERT INTO residents AS r (municipality, addressee_len, addressee, voucher, first_import, voucher_import, name, name_kana,
                birth_date, sex, address, previous_municipality, previous_voucher, personal_number_hash, status, status_date)
            SELECT {distinct}s.municipality, s.addressee_len, s.addressee, s.voucher, $1, $1, s.name, s.name_kana, s.birth_date, s.sex,
                s.address, s.previous_municipality, s.previous_voucher, s.personal_number_hash, s.status, s.status_date
            FROM vrs_staging AS s{order}
            ON CONFLICT (municipality, addressee_len, addressee) DO UPDATE SET
                voucher = excluded.voucher,
                voucher_import = CASE WHEN r.voucher = excluded.voucher THEN r.voucher_import ELSE excluded.voucher_import END,
                name = excluded.name, name_kana = excluded.name_kana, birth_date = excluded.birth_date, sex = excluded.sex,
                address = excluded.address, previous_municipality = excluded.previous_municipality,
                previous_voucher = excluded.previous_voucher, personal_number_hash = excluded.personal_number_hash,
                status = excluded.status, status_date = excluded.status_date
            RETURNING r.first_import = $1 AS inserted)
        SELECT count(*) FILTER (WHERE inserted) AS inserted FROM up"
    )
}

/// The columns of `residents` a direct COPY fills, in the order its lines carry them: the
/// import's number twice, then the staging table's columns without `ord`.
fn direct_copy_sql() -> String {
    let columns = STAGING_COLUMNS.strip_prefix("ord, ").unwrap_or(STAGING_COLUMNS);
    format!("COPY residents (voucher_import, first_import, {columns}) FROM STDIN")
}

/// What the parsing thread hands the connection.
enum Msg {
    /// COPY text for the target in force.
    Chunk(Vec<u8>),
    /// The rows that follow go to the staging table (the direct COPY ends here).
    ToStaging,
}

/// What the parsing thread produced.
struct Produced {
    rows: u64,
    /// Rows that went straight into `residents` (distinct new residents).
    direct: u64,
    /// Residents that went straight in and came again after the switch to staging (the
    /// merge counts them as inserted once more).
    direct_again: u64,
    /// Whether the staged rows may name a resident twice.
    duplicates: bool,
}

/// A resident's key as one number: municipality, addressee length, addressee digits.
fn key(r: &Resident) -> u128 {
    let a = r.person.addressee.as_str();
    let digits: u128 = a.parse().unwrap_or(0);
    (u128::from(municipality_number(&r.person.municipality).unsigned_abs()) << 64) | ((a.len() as u128) << 56) | digits
}

/// The parsing thread: pulls batches from the source (after `first`), encodes them as COPY
/// text and hands full chunks over. While `direct` names the municipality of a direct
/// COPY, rows of it go straight into `residents`; the first row that cannot (a resident
/// named again, another municipality) switches every later row to the staging table.
/// Stops when the receiver is gone (the COPY failed).
fn produce(
    source: &mut dyn ResidentSource,
    first: Vec<Resident>,
    mut direct: Option<(MunicipalityCode, i64)>,
    out: &mpsc::Sender<Msg>,
) -> Result<Produced> {
    let gone = || storage_message("the import's connection went away while sending rows");
    let mut seen: HashSet<u128> = HashSet::new();
    let mut again: HashSet<u128> = HashSet::new();
    let mut produced = Produced { rows: 0, direct: 0, direct_again: 0, duplicates: false };
    let mut staged: HashSet<u128> = HashSet::new();
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut ord = 0i64;
    let mut batch = Some(first);
    while let Some(rows) = batch {
        for r in &rows {
            ord += 1;
            let k = key(r);
            if let Some((m, import)) = direct {
                if r.person.municipality == m && seen.insert(k) {
                    let _ = write!(buf, "{import}\t");
                    copy_resident(&mut buf, import, r)?;
                    produced.direct += 1;
                    if buf.len() >= CHUNK
                        && out.blocking_send(Msg::Chunk(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096)))).is_err()
                    {
                        return Err(gone());
                    }
                    continue;
                }
                direct = None;
                if !buf.is_empty() && out.blocking_send(Msg::Chunk(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096)))).is_err()
                {
                    return Err(gone());
                }
                if out.blocking_send(Msg::ToStaging).is_err() {
                    return Err(gone());
                }
            }
            if !staged.insert(k) {
                produced.duplicates = true;
            }
            if seen.contains(&k) && again.insert(k) {
                produced.direct_again += 1;
            }
            copy_resident(&mut buf, ord, r)?;
            if buf.len() >= CHUNK && out.blocking_send(Msg::Chunk(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096)))).is_err() {
                return Err(gone());
            }
        }
        batch = source.next_batch(BATCH)?;
    }
    if !buf.is_empty() && out.blocking_send(Msg::Chunk(buf)).is_err() {
        return Err(gone());
    }
    produced.rows = u64::try_from(ord).unwrap_or(0);
    Ok(produced)
}

/// Applies an import atomically (see the module documentation).
pub(crate) async fn import(conns: &Conns, source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
    let mut c = conns.get().await?;
    let result = import_on(&mut c, source).await;
    // Errors of the server or the source leave the connection usable (the transaction
    // rolls back before its next use); a lost connection is not put back.
    match &result {
        Err(Error::Storage { source: Some(e), .. }) if e.downcast_ref::<sqlx::Error>().is_some_and(|e| !leaves_connection_usable(e)) => {}
        _ => c.done(),
    }
    result
}

/// Sends the parser's chunks into a COPY until the parser ends (`false`) or switches to
/// the staging table (`true`).
async fn stream(copy: &mut PgCopyIn<&mut PgConnection>, received: &mut mpsc::Receiver<Msg>) -> Result<bool> {
    while let Some(msg) = received.recv().await {
        match msg {
            Msg::Chunk(chunk) => {
                copy.send(chunk).await.map_err(|e| map("sending residents to the server", e))?;
            }
            Msg::ToStaging => return Ok(true),
        }
    }
    Ok(false)
}

/// Whether `m` has no resident yet, under the lock that keeps other imports of `m` out
/// until this transaction ends (so that it stays so, but for this import).
async fn first_upload(tx: &mut PgConnection, m: &MunicipalityCode) -> Result<bool> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(IMPORT_LOCK_SPACE)
        .bind(municipality_number(m))
        .execute(&mut *tx)
        .await
        .map_err(db("waiting for other imports of the municipality"))?;
    // A statement of its own: its snapshot is taken after the lock is held.
    sqlx::query("SELECT NOT EXISTS (SELECT 1 FROM residents WHERE municipality = $1) AS empty")
        .bind(m.as_str())
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("empty"))
        .map_err(db("looking for the municipality's residents"))
}

async fn import_on(conn: &mut PgConnection, mut source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
    let mut tx = conn.begin().await.map_err(db("starting an import"))?;
    sqlx::query(CREATE_STAGING).execute(&mut *tx).await.map_err(db("creating the import's staging table"))?;
    let import_id: i64 = sqlx::query("SELECT nextval('import_seq') AS id")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("id"))
        .map_err(db("numbering the import"))?;

    // The first batch says which municipality the upload is for: when it has no resident
    // yet, its rows go straight into `residents` (no staging, no merge).
    let (returned, first) = tokio::task::spawn_blocking(move || {
        let first = source.next_batch(BATCH);
        (source, first)
    })
    .await
    .map_err(|e| storage_message(format!("the import's parsing thread failed: {e}")))?;
    source = returned;
    let first = first?.unwrap_or_default();
    let direct = match first.first().map(|r| r.person.municipality) {
        Some(m) if first_upload(&mut tx, &m).await? => Some((m, import_id)),
        _ => None,
    };

    let (chunks, mut received) = mpsc::channel::<Msg>(CHANNEL);
    let parser = tokio::task::spawn_blocking(move || {
        let produced = produce(source.as_mut(), first, direct, &chunks);
        (source, produced)
    });
    let staging_sql = format!("COPY vrs_staging ({STAGING_COLUMNS}) FROM STDIN");
    let mut sql = if direct.is_some() { direct_copy_sql() } else { staging_sql.clone() };
    let mut parser = Some(parser);
    let mut back: Option<Box<dyn ResidentSource>> = None;
    let copied: Result<Produced> = loop {
        let mut copy = match tx.copy_in_raw(&sql).await {
            Ok(copy) => copy,
            Err(e) => break Err(map("starting the COPY of residents", e)),
        };
        match stream(&mut copy, &mut received).await {
            Ok(true) => {
                if let Err(e) = copy.finish().await {
                    break Err(map("finishing the COPY of residents", e));
                }
                sql = staging_sql.clone();
            }
            Ok(false) => {
                // The parser ended: learn how.
                let Some(handle) = parser.take() else { break Err(storage_message("the import's parsing thread ended twice")) };
                let (returned, produced) = handle.await.map_err(|e| storage_message(format!("the import's parsing thread failed: {e}")))?;
                back = Some(returned);
                break match produced {
                    Err(e) => {
                        // The source's own error (a failed read, a refused value) is the one to report.
                        let _ = copy.abort("the import's source failed").await;
                        Err(e)
                    }
                    Ok(p) => copy.finish().await.map(|_| p).map_err(db("finishing the COPY of residents")),
                };
            }
            // The COPY is left open: the transaction rolls back.
            Err(e) => break Err(e),
        }
    };
    if let Some(handle) = parser.take() {
        // Stop the parser (the server went away or refused the rows).
        received.close();
        let (returned, _) = handle.await.map_err(|e| storage_message(format!("the import's parsing thread failed: {e}")))?;
        back = Some(returned);
    }
    let source = back.ok_or_else(|| storage_message("the import's parsing thread did not hand its source back"))?;
    let produced = copied?;
    if !source.may_commit() {
        tx.rollback().await.map_err(db("rolling back an import"))?;
        return Ok((source, ImportApplied { inserted: 0, replaced: 0, committed: false }));
    }
    let staged = produced.rows - produced.direct;
    let merged: i64 = if staged == 0 {
        0
    } else {
        // After a switch, staged rows may name residents that went straight in.
        let duplicates = produced.duplicates || produced.direct > 0;
        let restated = restated_residents(&mut tx, duplicates).await?;
        let merged = sqlx::query(&merge_sql(duplicates))
            .bind(import_id)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get("inserted"))
            .map_err(db("merging the imported residents"))?;
        restate_counters(&mut tx, &restated).await?;
        merged
    };
    tx.commit().await.map_err(db("committing an import"))?;
    let inserted = (produced.direct + u64::try_from(merged).unwrap_or(0)).saturating_sub(produced.direct_again);
    Ok((source, ImportApplied { inserted, replaced: produced.rows.saturating_sub(inserted), committed: true }))
}

/// The stored residents the staged rows give another sex or birth date (the last row of a
/// resident named twice counts), each with its replacement's sex and birth date: their
/// doses move to other statistics groups.
async fn restated_residents(tx: &mut PgConnection, duplicates: bool) -> Result<Vec<(Resident, Resident)>> {
    let staged = if duplicates {
        "(SELECT DISTINCT ON (municipality, addressee_len, addressee) municipality, addressee_len, addressee, sex, birth_date \
         FROM vrs_staging ORDER BY municipality, addressee_len, addressee, ord DESC)"
    } else {
        "vrs_staging"
    };
    let sql = format!(
        "SELECT r.*, s.sex AS new_sex, s.birth_date AS new_birth_date FROM residents AS r JOIN {staged} AS s \
         ON r.municipality = s.municipality AND r.addressee_len = s.addressee_len AND r.addressee = s.addressee \
         WHERE r.sex <> s.sex OR r.birth_date <> s.birth_date"
    );
    let rows = sqlx::query(&sql).fetch_all(&mut *tx).await.map_err(db("finding residents whose sex or birth date changes"))?;
    rows.iter()
        .map(|row| {
            let old = codec::resident(row)?;
            let new =
                Resident { sex: codec::sex(codec::col(row, "new_sex")?)?, birth_date: codec::col(row, "new_birth_date")?, ..old.clone() };
            Ok((old, new))
        })
        .collect()
}

/// Moves the doses of `restated` residents to their new statistics groups, in the
/// import's transaction. The doses that count under a resident are those matched to the
/// person under the vouchers it named before the upload; doses waiting under a new voucher
/// are matched (and counted) after the import. The doses are read by one statement per
/// [`RESTATED_PER_READ`] residents, not one per voucher: an upload correcting the birth
/// dates of 100k matched residents would otherwise send 100k+ statements inside the import.
async fn restate_counters(tx: &mut PgConnection, restated: &[(Resident, Resident)]) -> Result<()> {
    let mut changes = Vec::new();
    for (chunk_at, chunk) in restated.chunks(RESTATED_PER_READ).enumerate() {
        let first = chunk_at * RESTATED_PER_READ;
        // Each voucher with the position of its resident in `restated`.
        let (mut municipalities, mut vouchers, mut owners) = (Vec::new(), Vec::new(), Vec::new());
        for (i, (old, _)) in chunk.iter().enumerate() {
            for v in vouchers_of(old) {
                municipalities.push(v.municipality.as_str().to_owned());
                vouchers.push(v.number.as_str().to_owned());
                owners.push(i64::try_from(first + i).map_err(|_| storage_message("too many restated residents"))?);
            }
        }
        let rows = sqlx::query(
            "SELECT v.owner, d.record, d.seq FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(municipality, voucher, owner) \
             JOIN doses AS d ON d.municipality = v.municipality AND d.voucher = v.voucher ORDER BY v.owner",
        )
        .bind(&municipalities)
        .bind(&vouchers)
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("reading the doses of residents whose sex or birth date changes"))?;
        let mut doses = Vec::new();
        let mut rows = rows.iter().peekable();
        for (i, (old, new)) in chunk.iter().enumerate() {
            let owner = i64::try_from(first + i).unwrap_or(i64::MAX);
            doses.clear();
            while let Some(row) = rows.next_if(|row| row.try_get::<i64, _>("owner").is_ok_and(|o| o == owner)) {
                doses.push(codec::dose(row)?);
            }
            changes.extend(restated_deltas(old, new, &doses));
        }
        if rows.next().is_some() {
            return Err(storage_message("the server answered doses for no restated resident"));
        }
    }
    apply::add_counters(tx, changes).await
}

/// Restated residents whose doses one statement reads: bounds the rows held at once.
const RESTATED_PER_READ: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorts_only_for_duplicates() {
        assert!(!merge_sql(false).contains("DISTINCT"));
        assert!(merge_sql(true).contains("DISTINCT ON"));
    }

    #[test]
    fn keys_differ_by_length_and_municipality() {
        let r = |m: &str, a: &str| {
            let mut r = vrs_core::testing::resident(m, a, "0000000001");
            r.person.addressee = vrs_core::ids::AddresseeNumber::parse(a).unwrap();
            r
        };
        assert_ne!(key(&r("131016", "1")), key(&r("131016", "01")));
        assert_ne!(key(&r("131016", "1")), key(&r("131024", "1")));
        assert_eq!(key(&r("131016", "000123456789012")), key(&r("131016", "000123456789012")));
    }
}
