//! Resident imports: the core's parser runs on a blocking thread and its residents stream
//! as COPY text into a temporary staging table; one set-based `INSERT .. ON CONFLICT`
//! then merges them into `residents`. All in one transaction: an import that fails, is
//! refused by its source, or loses its connection leaves nothing, and can simply be run
//! again.

use std::collections::HashSet;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};
use tokio::sync::mpsc;
use vrs_core::resident::Resident;
use vrs_core::store::{ImportApplied, ResidentSource};
use vrs_core::{Error, Result};

use crate::codec::{STAGING_COLUMNS, copy_resident, municipality_number};
use crate::conn::{Conns, leaves_connection_usable};
use crate::error::{db, map, storage_message};

/// Residents asked from the source at a time.
const BATCH: usize = 8192;
/// Bytes of COPY text sent in one message.
const CHUNK: usize = 256 * 1024;
/// Chunks that may wait between the parser and the connection.
const CHANNEL: usize = 4;

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

/// What the parsing thread produced.
struct Produced {
    rows: u64,
    duplicates: bool,
}

/// A resident's key as one number: municipality, addressee length, addressee digits.
fn key(r: &Resident) -> u128 {
    let a = r.person.addressee.as_str();
    let digits: u128 = a.parse().unwrap_or(0);
    (u128::from(municipality_number(&r.person.municipality).unsigned_abs()) << 64) | ((a.len() as u128) << 56) | digits
}

/// The parsing thread: pulls batches from the source, encodes them as COPY text and
/// hands full chunks over. Stops when the receiver is gone (the COPY failed).
fn produce(source: &mut dyn ResidentSource, out: &mpsc::Sender<Vec<u8>>) -> Result<Produced> {
    let mut seen: HashSet<u128> = HashSet::new();
    let mut duplicates = false;
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut ord = 0i64;
    while let Some(batch) = source.next_batch(BATCH)? {
        for r in &batch {
            ord += 1;
            if !seen.insert(key(r)) {
                duplicates = true;
            }
            copy_resident(&mut buf, ord, r)?;
            if buf.len() >= CHUNK && out.blocking_send(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 4096))).is_err() {
                return Err(storage_message("the import's connection went away while sending rows"));
            }
        }
    }
    if !buf.is_empty() && out.blocking_send(buf).is_err() {
        return Err(storage_message("the import's connection went away while sending rows"));
    }
    Ok(Produced { rows: u64::try_from(ord).unwrap_or(0), duplicates })
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

async fn import_on(conn: &mut PgConnection, mut source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
    let mut tx = conn.begin().await.map_err(db("starting an import"))?;
    sqlx::query(CREATE_STAGING).execute(&mut *tx).await.map_err(db("creating the import's staging table"))?;
    let import_id: i64 = sqlx::query("SELECT nextval('import_seq') AS id")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("id"))
        .map_err(db("numbering the import"))?;

    let (chunks, mut received) = mpsc::channel::<Vec<u8>>(CHANNEL);
    let parser = tokio::task::spawn_blocking(move || {
        let produced = produce(source.as_mut(), &chunks);
        (source, produced)
    });
    let copy_sql = format!("COPY vrs_staging ({STAGING_COLUMNS}) FROM STDIN");
    let copied: Result<Produced> = match tx.copy_in_raw(&copy_sql).await {
        Ok(mut copy) => {
            let mut sent: Result<()> = Ok(());
            while let Some(chunk) = received.recv().await {
                if let Err(e) = copy.send(chunk).await {
                    sent = Err(map("sending residents to the server", e));
                    break;
                }
            }
            // Stop the parser if the server went away, then learn how it ended.
            received.close();
            let (returned, produced) = parser.await.map_err(|e| storage_message(format!("the import's parsing thread failed: {e}")))?;
            source = returned;
            match (sent, produced) {
                (Err(e), _) => Err(e),
                (Ok(()), Err(e)) => {
                    // The source's own error (a failed read, a refused value) is the one to report.
                    let _ = copy.abort("the import's source failed").await;
                    Err(e)
                }
                (Ok(()), Ok(p)) => copy.finish().await.map(|_| p).map_err(db("finishing the COPY of residents")),
            }
        }
        Err(e) => {
            received.close();
            let _ = parser.await;
            return Err(map("starting the COPY of residents", e));
        }
    };
    let produced = copied?;
    if !source.may_commit() {
        tx.rollback().await.map_err(db("rolling back an import"))?;
        return Ok((source, ImportApplied { inserted: 0, replaced: 0, committed: false }));
    }
    let inserted: i64 = sqlx::query(&merge_sql(produced.duplicates))
        .bind(import_id)
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get("inserted"))
        .map_err(db("merging the imported residents"))?;
    tx.commit().await.map_err(db("committing an import"))?;
    let inserted = u64::try_from(inserted).unwrap_or(0);
    Ok((source, ImportApplied { inserted, replaced: produced.rows.saturating_sub(inserted), committed: true }))
}

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
