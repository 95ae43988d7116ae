//! Resident upload (CSV) import.

use serde::{Deserialize, Serialize};

/// One bad row of an upload: where and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1 when present).
    pub line: u64,
    /// The column (English name of the field), or empty when the whole row is bad.
    pub column: String,
    /// Why the value is refused (without personal data).
    pub reason: String,
}

/// The outcome of an upload: rows read, rows valid, every bad line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Data rows read (header excluded).
    pub rows_read: u64,
    /// Rows that passed validation.
    pub rows_valid: u64,
    /// Every bad row.
    pub errors: Vec<RowError>,
    /// Whether the good rows were applied.
    pub applied: bool,
    /// New residents.
    pub inserted: u64,
    /// Residents replaced.
    pub replaced: u64,
    /// Previous vouchers (転入前) named by the upload, so that doses registered under
    /// them can be matched to the moved-in residents afterwards.
    pub previous_vouchers: Vec<crate::ids::VoucherRef>,
}

impl ImportReport {
    /// One line: counts and whether anything was applied.
    pub fn summary(&self) -> String {
        format!(
            "{} rows read, {} valid, {} bad; {}",
            self.rows_read,
            self.rows_valid,
            self.errors.len(),
            if self.applied { "applied" } else { "nothing applied" }
        )
    }
}
