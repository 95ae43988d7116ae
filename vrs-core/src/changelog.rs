//! The ledger change log (台帳差分): one line per dose written since a cursor, in its
//! newest version, saying whether it is a registration (登録), a correction (補正) or a
//! void (取消) — so a receiving ledger can apply deletions too. Chained with the cursor
//! each export returns, the logs cover every write once: a dose written between two
//! exports appears in the second, in its newest version.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::clock::ledger_timestamp;
use crate::dose::DoseRecord;
use crate::ids::MunicipalityCode;
use crate::ledger::{LedgerOptions, OutputEncoding};
use crate::store::{DoseScan, StoreBackend};
use crate::{Error, Result};

/// What the newest version of a dose is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// 登録: first version.
    Registered,
    /// 補正: a later version.
    Corrected,
    /// 取消: voided.
    Voided,
    /// 突合: matched to its resident since it was registered (no new version).
    Matched,
}

impl ChangeKind {
    /// The kind of a record as written.
    pub fn of(d: &DoseRecord) -> ChangeKind {
        if d.is_voided() {
            ChangeKind::Voided
        } else if d.versions.len() > 1 {
            ChangeKind::Corrected
        } else if d.revision > 1 {
            ChangeKind::Matched
        } else {
            ChangeKind::Registered
        }
    }
    /// The Japanese label written in the file.
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Registered => "登録",
            ChangeKind::Corrected => "補正",
            ChangeKind::Voided => "取消",
            ChangeKind::Matched => "突合",
        }
    }
}

/// What a change-log export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeLogExport {
    /// Lines written (one per dose).
    pub changes: u64,
    /// Of which voids.
    pub voids: u64,
    /// The cursor for the next export.
    pub cursor: u64,
}

/// The header row.
pub const HEADER: [&str; 16] = [
    "記録ID",
    "版",
    "区分",
    "個別宛名番号",
    "発行自治体コード",
    "券番号",
    "接種回数",
    "接種日",
    "接種自治体コード",
    "接種会場名",
    "接種医師名",
    "ワクチンメーカー",
    "ワクチンロット番号",
    "接種履歴登録日時",
    "補正日時",
    "補正理由",
];

fn csv_error(e: impl std::fmt::Display) -> Error {
    Error::Storage { message: format!("writing the change log: {e}"), source: None }
}

/// Writes the change log of `municipality` since `after` (0: everything). Access is
/// checked by the service.
pub async fn export(
    store: &dyn StoreBackend,
    municipality: MunicipalityCode,
    after: u64,
    options: &LedgerOptions,
    out: &mut (dyn Write + Send),
) -> Result<ChangeLogExport> {
    let mut buf = csv::WriterBuilder::new().from_writer(Vec::new());
    if !options.no_header {
        buf.write_record(HEADER).map_err(csv_error)?;
    }
    let mut report = ChangeLogExport::default();
    let cursor = store
        .scan_doses(municipality, DoseScan::ChangedSince { after }, &mut |d: DoseRecord| {
            let kind = ChangeKind::of(&d);
            let v = d.current();
            let det = &v.details;
            buf.write_record([
                d.id.to_string().as_str(),
                &v.version.to_string(),
                kind.label(),
                d.matched.as_ref().map_or("", |p| p.addressee.as_str()),
                d.voucher.municipality.as_str(),
                d.voucher.number.as_str(),
                &det.dose_number.to_string(),
                &det.date_given.format("%Y%m%d").to_string(),
                det.administering_municipality.as_str(),
                &det.site_name,
                &det.doctor,
                &det.maker,
                &det.lot,
                &ledger_timestamp(d.registered_at),
                &if v.version > 1 { ledger_timestamp(v.recorded_at) } else { String::new() },
                v.reason.as_deref().unwrap_or(""),
            ])
            .map_err(csv_error)?;
            report.changes += 1;
            if kind == ChangeKind::Voided {
                report.voids += 1;
            }
            Ok(())
        })
        .await?;
    report.cursor = cursor.max(after);
    let bytes = buf.into_inner().map_err(|e| csv_error(e.error()))?;
    match options.encoding {
        OutputEncoding::Utf8 => out.write_all(&bytes).map_err(csv_error)?,
        OutputEncoding::ShiftJis => {
            let text = String::from_utf8(bytes).map_err(csv_error)?;
            let (encoded, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&text);
            if unmappable {
                return Err(Error::Invalid {
                    field: "export",
                    value: String::new(),
                    reason: "a value cannot be written in Shift_JIS".into(),
                });
            }
            out.write_all(&encoded).map_err(csv_error)?;
        }
    }
    Ok(report)
}
