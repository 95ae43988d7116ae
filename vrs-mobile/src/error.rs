//! The one error type of the bindings: vrs-core's error and scan problems, flattened into
//! stable variants a tablet app can switch on. Each variant says what to ask the operator
//! (or what the app should do); `description` is the plain-English sentence to log or show
//! when the app has no text of its own.

use vrs_core::scan::{MunicipalityCandidate, ScanProblem};

use crate::types::Municipality;

/// Everything that can go wrong, for Kotlin (`VrsException`) and Swift (`VrsError`).
///
/// Variants are stable: new ones may be added, none renamed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum VrsError {
    /// No voucher digits were read: point the camera at the 18-digit line and read again.
    #[error("{description}")]
    NothingRead {
        /// Plain words.
        description: String,
    },
    /// Only the 10-digit NW-7 barcode was read: it has no municipality code or dose number.
    /// Read the 18-digit OCR line (or the QR code).
    #[error("{description}")]
    BarcodeOnly {
        /// The barcode's digits.
        voucher_number: String,
        /// Plain words.
        description: String,
    },
    /// A run of the wrong number of digits (one missed or doubled, the line cut off): read again.
    #[error("{description}")]
    WrongDigitCount {
        /// Digits read.
        found: u32,
        /// Plain words.
        description: String,
    },
    /// Several different voucher lines were in view: frame one voucher.
    #[error("{description}")]
    SeveralVouchers {
        /// How many.
        count: u32,
        /// Plain words.
        description: String,
    },
    /// The municipality code fails its check digit and cannot be repaired to exactly one
    /// real municipality: read again, or ask the operator which of `candidates` it is.
    #[error("{description}")]
    BadMunicipalityCode {
        /// The six digits read.
        read: String,
        /// Real municipalities one digit away.
        candidates: Vec<Municipality>,
        /// Plain words.
        description: String,
    },
    /// The municipality code is not a real municipality: read again, or ask which of
    /// `candidates` it is.
    #[error("{description}")]
    UnknownMunicipality {
        /// The six digits read.
        code: String,
        /// Real municipalities one digit away.
        candidates: Vec<Municipality>,
        /// Plain words.
        description: String,
    },
    /// The label gave no lot number: read it again or type the lot.
    #[error("{description}")]
    NoLot {
        /// Plain words.
        description: String,
    },
    /// The label's GTIN has a wrong check digit: read it again.
    #[error("{description}")]
    BadGtin {
        /// The digits read.
        gtin: String,
        /// Plain words.
        description: String,
    },
    /// The label's GS1 data does not parse: read it again.
    #[error("{description}")]
    MalformedLabel {
        /// Plain words.
        description: String,
    },
    /// The label's expiry is not a date: read again or type it.
    #[error("{description}")]
    BadExpiry {
        /// The text read.
        text: String,
        /// Plain words.
        description: String,
    },
    /// A value given to the library is malformed (a date that is not `YYYY-MM-DD`, an
    /// unknown dose id, an unusable server reply): a bug in the app or its input.
    #[error("{description}")]
    InvalidInput {
        /// Which field.
        field: String,
        /// Why.
        reason: String,
        /// Plain words.
        description: String,
    },
    /// The registration or correction was refused by the rules (nothing stored): show
    /// `detail`; `finding` is the kind (`future_date`, `unknown_product`,
    /// `unknown_municipality`, `invalid_field`, ...).
    #[error("{description}")]
    Rejected {
        /// The finding kind that refused it.
        finding: String,
        /// Plain words.
        detail: String,
        /// Plain words, with the kind.
        description: String,
    },
    /// The account may not do this (e.g. correct a dose registered on another day, or
    /// by another site; a revoked account).
    #[error("{description}")]
    PermissionDenied {
        /// Why.
        reason: String,
        /// Plain words.
        description: String,
    },
    /// The dose (or other thing) asked for does not exist on this tablet.
    #[error("{description}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// Plain words.
        description: String,
    },
    /// Something changed meanwhile, or an idempotency key was reused for another voucher:
    /// read again and retry.
    #[error("{description}")]
    Conflict {
        /// Plain words.
        description: String,
    },
    /// The tablet's storage failed (disk full, file damaged, the data directory held by
    /// another session).
    #[error("{description}")]
    Storage {
        /// Plain words.
        description: String,
    },
}

fn municipalities(candidates: &[MunicipalityCandidate]) -> Vec<Municipality> {
    candidates.iter().map(Municipality::from).collect()
}

impl From<ScanProblem> for VrsError {
    fn from(p: ScanProblem) -> Self {
        let description = p.to_string();
        match p {
            ScanProblem::NothingRead => VrsError::NothingRead { description },
            ScanProblem::BarcodeOnly { voucher_number } => VrsError::BarcodeOnly { voucher_number, description },
            ScanProblem::WrongDigitCount { found } => VrsError::WrongDigitCount { found: found as u32, description },
            ScanProblem::SeveralVouchers { count } => VrsError::SeveralVouchers { count: count as u32, description },
            ScanProblem::BadMunicipalityCode { read, candidates } => {
                VrsError::BadMunicipalityCode { read, candidates: municipalities(&candidates), description }
            }
            ScanProblem::UnknownMunicipality { code, candidates } => {
                VrsError::UnknownMunicipality { code, candidates: municipalities(&candidates), description }
            }
            ScanProblem::NoLot => VrsError::NoLot { description },
            ScanProblem::BadGtin { gtin } => VrsError::BadGtin { gtin, description },
            ScanProblem::MalformedGs1 { .. } => VrsError::MalformedLabel { description },
            ScanProblem::BadExpiry { text } => VrsError::BadExpiry { text, description },
            _ => VrsError::MalformedLabel { description },
        }
    }
}

impl From<vrs_core::Error> for VrsError {
    fn from(e: vrs_core::Error) -> Self {
        use vrs_core::Error as E;
        let description = e.to_string();
        match e {
            E::Unreadable(p) => p.into(),
            E::Invalid { field, reason, .. } => VrsError::InvalidInput { field: field.to_owned(), reason, description },
            E::DoseRejected { kind, detail } => VrsError::Rejected { finding: kind.as_str().to_owned(), detail, description },
            E::PermissionDenied { reason, .. } => VrsError::PermissionDenied { reason, description },
            E::NotFound { what } => VrsError::NotFound { what, description },
            E::Conflict { .. } => VrsError::Conflict { description },
            E::Catalogue { detail } => VrsError::InvalidInput { field: "catalogue_json".into(), reason: detail, description },
            E::ImportRejected(_) | E::Read { .. } => {
                VrsError::InvalidInput { field: "input".into(), reason: description.clone(), description }
            }
            _ => VrsError::Storage { description },
        }
    }
}

impl VrsError {
    /// An [`VrsError::InvalidInput`] about `field`.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        VrsError::InvalidInput { field: field.to_owned(), description: format!("invalid {field}: {reason}"), reason }
    }

    /// A [`VrsError::Storage`] error.
    pub fn storage(what: &str, e: impl std::fmt::Display) -> Self {
        VrsError::Storage { description: format!("{what}: {e}") }
    }
}
