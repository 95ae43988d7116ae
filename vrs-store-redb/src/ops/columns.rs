//! Column scans: doses and residents decoded from their stored bytes straight into
//! [`DoseColumns`] / [`ResidentColumns`], a batch of rows at a time, for columnar
//! frontends (the Python bindings' Arrow tables). No record struct, no `String` per row.

use redb::Database;
use vrs_core::Result;
use vrs_core::columns::{DoseColumns, ResidentColumns};
use vrs_core::ids::MunicipalityCode;
use vrs_core::store::DoseScan;

use super::{begin_read, each_stored_dose, open_read, prefixed, scan_floor, storage};
use crate::schema::*;

/// Sends a municipality's doses in the order `scan` asks for, as columns of at most `rows`
/// doses; returns the highest sequence number sent (or `after`, or 0), as
/// [`scan_doses`](super::scan_doses) does.
pub(crate) fn scan_dose_columns(
    db: &Database,
    m: &MunicipalityCode,
    scan: DoseScan,
    rows: usize,
    out: &async_channel::Sender<Vec<DoseColumns>>,
) -> Result<u64> {
    let rows = rows.max(1);
    let mut columns = DoseColumns::with_capacity(rows);
    let mut high = scan_floor(scan);
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
    Ok(high)
}

/// Sends a municipality's residents in addressee order, as columns of at most `rows`.
pub(crate) fn scan_resident_columns(
    db: &Database,
    m: &MunicipalityCode,
    rows: usize,
    out: &async_channel::Sender<Vec<ResidentColumns>>,
) -> Result<()> {
    let rows = rows.max(1);
    let txn = begin_read(db)?;
    let residents = open_read(&txn, RESIDENTS)?;
    let mut columns = ResidentColumns::with_capacity(rows);
    for entry in prefixed(&residents, &muni(m))? {
        let (_, v) = entry.map_err(storage("scanning residents"))?;
        columns.push_stored(&mut postcard::Deserializer::from_bytes(v.value())).map_err(storage("decoding a resident"))?;
        if columns.len() == rows
            && out
                .send_blocking(vec![{
                    let next = columns.empty_like();
                    std::mem::replace(&mut columns, next)
                }])
                .is_err()
        {
            // The visitor stopped the scan.
            return Ok(());
        }
    }
    if !columns.is_empty() {
        let _ = out.send_blocking(vec![columns]);
    }
    Ok(())
}
