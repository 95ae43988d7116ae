//! Column scans: doses and residents decoded from their stored bytes straight into
//! [`DoseColumns`] / [`ResidentColumns`], a batch of rows at a time, for columnar
//! frontends (the Python bindings' Arrow tables). No record struct, no `String` per row.

use std::collections::BTreeSet;

use redb::{Database, ReadableTable, WriteTransaction};
use vrs_core::Result;
use vrs_core::columns::{DoseColumns, ResidentColumns};
use vrs_core::ids::MunicipalityCode;
use vrs_core::store::DoseScan;

use super::{begin_read, each_stored_dose, open_read, open_write, prefixed, scan_dose_chunks, scan_floor, storage};
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

/// Sends a municipality's residents in addressee order, as columns of at most `rows`: its
/// `resident_columns` segments decoded on several threads from one read snapshot
/// ([`parallel`]), in key order; or, for a municipality without segments (one with no
/// residents), its rows decoded as [`scan_resident_rows`] does.
pub(crate) fn scan_resident_columns(
    db: &Database,
    m: &MunicipalityCode,
    rows: usize,
    out: &async_channel::Sender<Vec<ResidentColumns>>,
) -> Result<()> {
    let rows = rows.max(1);
    let txn = begin_read(db)?;
    let segments = open_read(&txn, RESIDENT_COLUMNS)?;
    let chunks = Chunks::by_key(&segments, &muni(m))?;
    if chunks.len() == 0 {
        return scan_resident_rows(&txn, m, rows, out);
    }
    scan_chunks(
        &segments,
        &chunks,
        parallel::workers(),
        |range| {
            let mut batches = Vec::new();
            for entry in range {
                let (_, v) = entry.map_err(storage("scanning resident column segments"))?;
                batches.extend(ResidentColumns::decode_segment(v.value())?.split(rows)?);
            }
            Ok(batches)
        },
        // `false` once the visitor stopped the scan.
        |batches| Ok(batches.is_empty() || out.send_blocking(batches).is_ok()),
    )
}

/// Sends a municipality's residents as columns decoded from their rows, chunks of the range
/// decoded on several threads from the snapshot of `txn`.
pub(super) fn scan_resident_rows(
    txn: &redb::ReadTransaction,
    m: &MunicipalityCode,
    rows: usize,
    out: &async_channel::Sender<Vec<ResidentColumns>>,
) -> Result<()> {
    let residents = open_read(txn, RESIDENTS)?;
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

/// Writes the `resident_columns` segments of each municipality of `municipalities` anew
/// from its rows in `residents` (key order, segments of [`RESIDENT_SEGMENT_ROWS`] or
/// [`RESIDENT_SEGMENT_BYTES`], whichever comes first), in
/// `txn`: called by an import once its rows are written, so that segments and rows commit
/// together. A municipality left with no resident is left with no segment.
pub(super) fn rebuild_resident_segments(txn: &WriteTransaction, municipalities: &BTreeSet<[u8; M]>) -> Result<()> {
    if municipalities.is_empty() {
        return Ok(());
    }
    let residents = open_write(txn, RESIDENTS)?;
    let mut segments = open_write(txn, RESIDENT_COLUMNS)?;
    let mut bytes = Vec::new();
    for m in municipalities {
        let old = prefixed(&segments, m)?
            .map(|e| e.map(|(k, _)| k.value().to_vec()).map_err(storage("reading resident column segments")))
            .collect::<Result<Vec<_>>>()?;
        for k in old {
            segments.remove(k.as_slice()).map_err(storage("removing a resident column segment"))?;
        }
        let mut n = 0u32;
        let mut columns = ResidentColumns::with_capacity(RESIDENT_SEGMENT_ROWS);
        let mut write = |columns: &ResidentColumns, n: &mut u32| -> Result<()> {
            bytes.clear();
            columns.encode_segment(&mut bytes)?;
            segments.insert(segment_key(m, *n).as_slice(), bytes.as_slice()).map_err(storage("writing a resident column segment"))?;
            *n += 1;
            Ok(())
        };
        for entry in prefixed(&residents, m)? {
            let (_, v) = entry.map_err(storage("scanning residents"))?;
            columns.push_stored(&mut postcard::Deserializer::from_bytes(v.value())).map_err(storage("decoding a resident"))?;
            // A resident is a few hundred bytes: checked every 16 residents, a segment
            // ends within a few KiB past the cut, still below 4 MiB.
            if columns.len() == RESIDENT_SEGMENT_ROWS
                || (columns.len().is_multiple_of(16) && columns.segment_len() >= RESIDENT_SEGMENT_BYTES)
            {
                write(&columns, &mut n)?;
                columns = columns.empty_like();
            }
        }
        if !columns.is_empty() {
            write(&columns, &mut n)?;
        }
    }
    Ok(())
}

/// Writes the segments of every municipality with residents (opening a file of the layout
/// before `resident_columns`).
pub(super) fn rebuild_all_resident_segments(txn: &WriteTransaction) -> Result<()> {
    let residents = open_write(txn, RESIDENTS)?;
    let mut municipalities = BTreeSet::new();
    // One lookup per municipality: from each municipality's first key to past its last.
    let mut from = Vec::new();
    loop {
        let first = residents.range::<&[u8]>(from.as_slice()..).map_err(storage("scanning residents"))?.next();
        let Some(entry) = first else { break };
        let key = entry.map_err(storage("scanning residents"))?.0.value().to_vec();
        let Some(m) = key.first_chunk::<M>().copied() else {
            // Not a resident's key (every one starts with a municipality): step past it.
            from = key;
            from.push(0);
            continue;
        };
        municipalities.insert(m);
        match prefix_end(&m) {
            Some(end) => from = end,
            None => break,
        }
    }
    drop(residents);
    rebuild_resident_segments(txn, &municipalities)
}
