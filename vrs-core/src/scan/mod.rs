//! Reading what a site tablet's camera or scanner sees: the voucher (接種券) and the vaccine
//! vial's label. Pure functions of text, so that the tablet bindings (vrs-mobile), the CLI and
//! Python all read the same way; the tablet only hands over what its OCR or barcode library
//! produced.
//!
//! - [`voucher::parse_voucher`] reads the 18-digit OCR line (or the QR code holding the same
//!   digits) from noisy text and says how sure it is; [`voucher::confirm_voucher`] cross-checks it
//!   with a second, independent reading (the NW-7 barcode's 10 digits, or the QR code's 18),
//!   because the voucher number has no check digit.
//! - [`label::parse_vaccine_label`] reads a GS1 element string (DataMatrix / DataBar: GTIN,
//!   expiry, lot, serial) or the maker's sticker text, and names the product from the catalogue.
//!
//! When a reading cannot be trusted the answer is [`crate::Error::Unreadable`] with a
//! [`ScanProblem`] that says what to ask the operator.

pub mod label;
pub mod voucher;

use serde::Serialize;

use crate::ids::MunicipalityCode;

/// A real municipality a misread code might have been, to show the operator by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MunicipalityCandidate {
    /// The code (6 digits, check digit valid, in the shipped list).
    pub code: MunicipalityCode,
    /// Its name (団体名), e.g. 千代田区.
    pub name: &'static str,
    /// Its prefecture's name (都道府県名).
    pub prefecture: &'static str,
}

impl MunicipalityCandidate {
    /// The candidate for a code in the shipped list.
    pub fn of(code: MunicipalityCode) -> Option<Self> {
        crate::municipalities::lookup(code).map(|m| Self { code, name: m.name, prefecture: m.prefecture })
    }
}

fn list(candidates: &[MunicipalityCandidate]) -> String {
    if candidates.is_empty() {
        return "no real municipality is one digit away".to_owned();
    }
    let names: Vec<String> = candidates.iter().map(|c| format!("{} {}{}", c.code, c.prefecture, c.name)).collect();
    format!("it may be {}", names.join(" or "))
}

/// Why a scan cannot be used as it is, in terms of what to ask the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScanProblem {
    /// No digits at all: point the camera at the voucher's OCR line and read again.
    #[error("no voucher digits were read: point the camera at the 18-digit line and read again")]
    NothingRead,
    /// Only the 10-digit NW-7 barcode was read. It carries the voucher number alone, without
    /// the municipality or the dose number, so it is not enough to register: read the 18-digit
    /// OCR line (or the QR code) too.
    #[error(
        "only the 10-digit barcode ({voucher_number}) was read: it has no municipality code or dose number; read the 18-digit line or the QR code"
    )]
    BarcodeOnly {
        /// The barcode's digits.
        voucher_number: String,
    },
    /// A run of digits of the wrong length (a digit missed or doubled, or part of the line cut
    /// off): read again.
    #[error("{found} digits were read where the voucher line has 18: read it again")]
    WrongDigitCount {
        /// How many digits the longest run had.
        found: usize,
    },
    /// Several different voucher lines were in view: frame one voucher.
    #[error("{count} different voucher lines were read at once: frame one voucher and read again")]
    SeveralVouchers {
        /// How many different lines.
        count: usize,
    },
    /// The municipality code fails its check digit (or names no prefecture) and no single
    /// digit repair gives exactly one real municipality: read again, or ask which one it is.
    #[error("municipality code {read} is misread (check digit): {}", list(.candidates))]
    BadMunicipalityCode {
        /// The six digits as read.
        read: String,
        /// Real municipalities one digit away (none, or several).
        candidates: Vec<MunicipalityCandidate>,
    },
    /// The municipality code passes its check digit but is not a real municipality, and no
    /// single digit repair gives exactly one that is: read again, or ask which one it is.
    #[error("municipality code {code} is not a real municipality: {}", list(.candidates))]
    UnknownMunicipality {
        /// The six digits as read.
        code: String,
        /// Real municipalities one digit away (none, or several).
        candidates: Vec<MunicipalityCandidate>,
    },
    /// A label gave no lot number: type it in, or read the label again.
    #[error("no lot number was found on the label: read it again or type the lot number")]
    NoLot,
    /// A GS1 GTIN (AI 01) whose check digit is wrong: read the label again.
    #[error("GTIN {gtin} has a wrong check digit: read the label again")]
    BadGtin {
        /// The digits read.
        gtin: String,
    },
    /// A GS1 element string that does not parse: read the label again.
    #[error("the label's GS1 data does not parse ({detail}): read it again")]
    MalformedGs1 {
        /// What is wrong, and where.
        detail: String,
    },
    /// An expiry date that is not a date: read again, or type it in.
    #[error("expiry {text:?} is not a date: read the label again or type the expiry date")]
    BadExpiry {
        /// The text read.
        text: String,
    },
}

impl From<ScanProblem> for crate::Error {
    fn from(problem: ScanProblem) -> Self {
        crate::Error::Unreadable(problem)
    }
}
