//! Column scans: doses and residents decoded from their stored bytes straight into
//! [`DoseColumns`] / [`ResidentColumns`], a batch of rows at a time, for columnar
//! frontends (the Python bindings' Arrow tables). No record struct, no `String` per row.

use redb::Database;
use vrs_core::Result;
use vrs_core::columns::{DoseColumns, ResidentColumns};
use vrs_core::ids::MunicipalityCode;
use vrs_core::store::DoseScan;

use super::{begin_read, each_stored_dose, open_read, scan_dose_chunks, scan_floor, storage};
use crate::parallel::{self, Chunks, scan_chunks};
use crate::schema::*;

/// Rows a chunk's columns start with room for: chunks hold a few thousand doses of a
/// municipality of a million, so room for a whole batch would be mostly waste.
const CHUNK_ROOM: usize = 1 << 13;

/// Sends a municipality's doses in the order `scan` asks for, as columns of at most `rows`
/// doses; returns the highest sequence number sent (or `after`, or 0), as
/// [`scan_doses`](super::scan_doses) does. A scan in voucher order decodes chunks of the
/// range on several threads from one read snapshot ([`parallel`]), each chunk into
/// columns of its own, sent in key order.
pub(crate) fn scan_dose_columns(
    db: &Database,
    m: &MunicipalityCode,
    scan: DoseScan,
    rows: usize,
    out: &async_channel::Sender<Vec<DoseColumns>>,
) -> Result<u64> {
    let rows = rows.max(1);
    let mut high = scan_floor(scan);
    if let DoseScan::ChangedSince { .. } = scan {
        // A delta reads through the sequence index, one lookup per dose: sequential.
        let mut columns = DoseColumns::with_capacity(rows.min(CHUNK_ROOM));
        // Sends full columns; `false` once the visitor stopped the scan.
        let send = |columns: &mut DoseColumns, high: &mut u64| -> bool {
            *high = (*high).max(columns.high_seq());
            let next = columns.empty_like();
            out.send_blocking(vec![std::mem::replace(columns, next)]).is_ok()
        };
        each_stored_dose(db, m, scan, |bytes| {
            columns.push_stored(&mut postcard::Deserializer::from_bytes(bytes)).map_err(storage("decoding a dose"))?;
            Ok(columns.len() < rows || send(&mut columns, &mut high))
        })?;
        if !columns.is_empty() {
            send(&mut columns, &mut high);
        }
        return Ok(high);
    }
    scan_dose_chunks(
        db,
        m,
        |records| {
            let mut batches = Vec::new();
            let mut columns = DoseColumns::with_capacity(rows.min(CHUNK_ROOM));
            for record in records {
                columns.push_stored(&mut postcard::Deserializer::from_bytes(record?.value())).map_err(storage("decoding a dose"))?;
                if columns.len() >= rows {
                    let next = columns.empty_like();
                    batches.push(std::mem::replace(&mut columns, next));
                }
            }
            if !columns.is_empty() {
                batches.push(columns);
            }
            Ok(batches)
        },
        |batches| {
            high = batches.iter().fold(high, |h, c| h.max(c.high_seq()));
            // `false` once the visitor stopped the scan.
            Ok(batches.is_empty() || out.send_blocking(batches).is_ok())
        },
    )?;
    Ok(high)
}

/// Sends a municipality's residents in addressee order, as columns of at most `rows`,
/// chunks of the range decoded on several threads from one read snapshot ([`parallel`]).
pub(crate) fn scan_resident_columns(
    db: &Database,
    m: &MunicipalityCode,
    rows: usize,
    out: &async_channel::Sender<Vec<ResidentColumns>>,
) -> Result<()> {
    let rows = rows.max(1);
    let txn = begin_read(db)?;
    let residents = open_read(&txn, RESIDENTS)?;
    let chunks = Chunks::by_addressee(&residents, &muni(m), parallel::CHUNKS)?;
    scan_chunks(
        &residents,
        &chunks,
        parallel::workers(),
        |range| {
            let mut batches = Vec::new();
            let mut columns = ResidentColumns::with_capacity(rows.min(CHUNK_ROOM));
            for entry in range {
                let (_, v) = entry.map_err(storage("scanning residents"))?;
                columns.push_stored(&mut postcard::Deserializer::from_bytes(v.value())).map_err(storage("decoding a resident"))?;
                if columns.len() >= rows {
                    let next = columns.empty_like();
                    batches.push(std::mem::replace(&mut columns, next));
                }
            }
            if !columns.is_empty() {
                batches.push(columns);
            }
            Ok(batches)
        },
        // `false` once the visitor stopped the scan.
        |batches| Ok(batches.is_empty() || out.send_blocking(batches).is_ok()),
    )
}
