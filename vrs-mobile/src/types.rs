//! The records and enums that cross the FFI, and their conversions from vrs-core's types.
//! Dates are `YYYY-MM-DD` strings and instants RFC 3339 strings (UTC), which every platform
//! parses; ids are strings.

use chrono::{DateTime, NaiveDate, Utc};
use vrs_core::dose::DoseRecord;
use vrs_core::scan::MunicipalityCandidate;
use vrs_core::scan::{label, voucher};

use crate::error::VrsError;

/// Parses a `YYYY-MM-DD` date given by the app.
pub(crate) fn parse_date(field: &str, text: &str) -> Result<NaiveDate, VrsError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| VrsError::invalid(field, format!("{text:?} is not a YYYY-MM-DD date")))
}

pub(crate) fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

pub(crate) fn instant_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A municipality (市区町村) from the shipped list.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Municipality {
    /// The 6-digit code (全国地方公共団体コード).
    pub code: String,
    /// Its name, e.g. 千代田区.
    pub name: String,
    /// Its prefecture, e.g. 東京都.
    pub prefecture: String,
}

impl From<&MunicipalityCandidate> for Municipality {
    fn from(c: &MunicipalityCandidate) -> Self {
        Municipality { code: c.code.as_str().to_owned(), name: c.name.to_owned(), prefecture: c.prefecture.to_owned() }
    }
}

/// How far the app may trust a voucher reading, worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Confidence {
    /// Two readings disagree: do not register; read both again.
    Contradicted,
    /// One reading that needed a fix, or whose municipality has a look-alike: show the
    /// municipality's name and digits to the operator, and confirm with a second reading.
    Doubtful,
    /// One clean reading; the voucher number (no check digit) is unconfirmed: confirm it with
    /// the barcode or QR code.
    Probable,
    /// Two independent readings agree and the municipality is certain: safe to register.
    Confirmed,
}

impl From<voucher::Confidence> for Confidence {
    fn from(c: voucher::Confidence) -> Self {
        match c {
            voucher::Confidence::Contradicted => Confidence::Contradicted,
            voucher::Confidence::Doubtful => Confidence::Doubtful,
            voucher::Confidence::Probable => Confidence::Probable,
            voucher::Confidence::Confirmed => Confidence::Confirmed,
        }
    }
}

/// A letter that OCR produced where the line has a digit.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LetterFix {
    /// Position in the 18 digits, 1-based.
    pub position: u8,
    /// The character read.
    pub read: String,
    /// The digit taken for it.
    pub digit: u8,
}

/// A municipality digit repaired with the check digit and the list of real codes.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct MunicipalityRepair {
    /// The code as read.
    pub read_code: String,
    /// Position in the 18 digits, 1-based (3 to 8).
    pub position: u8,
    /// The digit read.
    pub read: u8,
    /// The digit it was repaired to.
    pub repaired: u8,
}

/// A voucher (接種券) read from one source.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct VoucherReading {
    /// The 18 digits as understood, to register with.
    pub ocr_line: String,
    /// 券種.
    pub ticket_kind: u8,
    /// 回数: the dose number printed on the voucher.
    pub dose_number: u8,
    /// The issuing municipality.
    pub municipality: Municipality,
    /// 券番号: 10 digits.
    pub voucher_number: String,
    /// Letters taken for digits.
    pub letter_fixes: Vec<LetterFix>,
    /// The municipality digit repaired, if any.
    pub repair: Option<MunicipalityRepair>,
    /// Other real municipalities one misread digit away that also pass the check digit:
    /// confirm the municipality by name when not empty.
    pub alternatives: Vec<Municipality>,
    /// How far to trust it.
    pub confidence: Confidence,
}

impl From<voucher::VoucherReading> for VoucherReading {
    fn from(r: voucher::VoucherReading) -> Self {
        VoucherReading {
            ocr_line: r.digits(),
            ticket_kind: r.line.ticket_kind,
            dose_number: r.line.dose_number,
            municipality: Municipality {
                code: r.line.voucher.municipality.as_str().to_owned(),
                name: r.municipality_name.to_owned(),
                prefecture: r.prefecture_name.to_owned(),
            },
            voucher_number: r.line.voucher.number.as_str().to_owned(),
            letter_fixes: r
                .letter_fixes
                .iter()
                .map(|f| LetterFix { position: f.position, read: f.read.to_string(), digit: f.digit })
                .collect(),
            repair: r.repair.map(|p| MunicipalityRepair {
                read_code: p.read_code,
                position: p.position,
                read: p.read,
                repaired: p.repaired,
            }),
            alternatives: r.alternatives.iter().map(Municipality::from).collect(),
            confidence: r.confidence.into(),
        }
    }
}

/// Whether two readings of a voucher agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Agreement {
    /// Every digit both carry is the same.
    Agree,
    /// A digit differs: see `mismatches`; never register on this.
    Disagree,
    /// Only one usable reading.
    OnlyOneReading,
}

/// What the second reading was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SecondSource {
    /// The NW-7 barcode (10 digits).
    Barcode,
    /// The QR code (18 digits).
    QrCode,
}

/// The cross-check of two readings.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct VoucherConfirmation {
    /// Agree, disagree or only one reading.
    pub agreement: Agreement,
    /// How far to trust `reading`.
    pub confidence: Confidence,
    /// The voucher as read.
    pub reading: VoucherReading,
    /// The second reading's kind, when there was a usable one.
    pub second_source: Option<SecondSource>,
    /// Its digits.
    pub second_digits: Option<String>,
    /// Positions (1-based, in the 18-digit line) where the readings differ.
    pub mismatches: Vec<u32>,
}

impl From<voucher::VoucherConfirmation> for VoucherConfirmation {
    fn from(c: voucher::VoucherConfirmation) -> Self {
        VoucherConfirmation {
            agreement: match c.agreement {
                voucher::Agreement::Agree => Agreement::Agree,
                voucher::Agreement::Disagree => Agreement::Disagree,
                voucher::Agreement::OnlyOneReading => Agreement::OnlyOneReading,
            },
            confidence: c.confidence.into(),
            reading: c.reading.into(),
            second_source: c.second_source.map(|s| match s {
                voucher::SecondSource::Barcode => SecondSource::Barcode,
                voucher::SecondSource::QrCode => SecondSource::QrCode,
            }),
            second_digits: c.second_digits,
            mismatches: c.mismatches.into_iter().map(u32::from).collect(),
        }
    }
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Severity {
    /// Refused: nothing stored.
    Rejected,
    /// Stored; the municipality must fix it (要修正).
    MustFix,
    /// Stored; the municipality will check it (要確認).
    ToCheck,
}

impl From<vrs_core::finding::Severity> for Severity {
    fn from(s: vrs_core::finding::Severity) -> Self {
        match s {
            vrs_core::finding::Severity::Rejected => Severity::Rejected,
            vrs_core::finding::Severity::MustFix => Severity::MustFix,
            vrs_core::finding::Severity::ToCheck => Severity::ToCheck,
        }
    }
}

/// A finding of reconciliation about a dose (or what a label shows for the dose date).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Finding {
    /// The kind, snake_case (`unmatched`, `duplicate`, `expired_lot`, `lot_implausible`, ...).
    pub kind: String,
    /// Its severity.
    pub severity: Severity,
    /// Plain words.
    pub detail: String,
}

impl From<&vrs_core::finding::Finding> for Finding {
    fn from(f: &vrs_core::finding::Finding) -> Self {
        Finding { kind: f.kind.as_str().to_owned(), severity: f.severity.into(), detail: f.detail.clone() }
    }
}

/// Where a label reading came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum LabelSource {
    /// A GS1 DataMatrix / DataBar payload or its bracketed text.
    Gs1,
    /// The maker's sticker text.
    Text,
}

/// What a vaccine label says.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct VaccineLabel {
    /// GS1 or sticker text.
    pub source: LabelSource,
    /// The GTIN-14, for GS1.
    pub gtin: Option<String>,
    /// The catalogue product code when exactly one product fits (use it to register).
    pub product: Option<String>,
    /// The ledger's maker string (ワクチンメーカー), when known.
    pub maker: Option<String>,
    /// The products that fit when several do: ask the operator.
    pub candidates: Vec<String>,
    /// The lot number.
    pub lot: String,
    /// The expiry date, `YYYY-MM-DD`, when the label gives one.
    pub expiry: Option<String>,
    /// The serial number (GS1 AI 21).
    pub serial: Option<String>,
    /// Findings for the dose date: `expired_lot`, `lot_implausible`.
    pub findings: Vec<Finding>,
    /// How the reading was reached where it was not plain.
    pub notes: Vec<String>,
}

impl From<label::VaccineLabel> for VaccineLabel {
    fn from(l: label::VaccineLabel) -> Self {
        VaccineLabel {
            source: match l.source {
                label::LabelSource::Gs1 => LabelSource::Gs1,
                label::LabelSource::Text => LabelSource::Text,
            },
            gtin: l.gtin,
            product: l.product.map(|p| p.as_str().to_owned()),
            maker: l.maker,
            candidates: l.candidates.iter().map(|p| p.as_str().to_owned()).collect(),
            lot: l.lot,
            expiry: l.expiry.map(date_text),
            serial: l.serial,
            findings: l
                .findings
                .iter()
                .map(|f| Finding { kind: f.kind.as_str().to_owned(), severity: f.severity.into(), detail: f.detail.clone() })
                .collect(),
            notes: l.notes,
        }
    }
}

/// The site account a tablet works as, as the municipality issued it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SiteAccount {
    /// The tablet account id.
    pub account_id: String,
    /// The site's id: a venue code or a clinic's G-MIS ID.
    pub site_id: String,
    /// The site's name as printed in the ledger (≤ 30 characters).
    pub site_name: String,
    /// The municipality the site is in (6 digits).
    pub municipality_code: String,
}

/// A dose to register, as the operator confirmed it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct RegistrationInput {
    /// The 18-digit line (best: `VoucherReading.ocr_line` of a confirmed reading).
    pub ocr_line: String,
    /// The dose number when it differs from the voucher's 回数.
    pub dose_number: Option<u8>,
    /// Date given, `YYYY-MM-DD`; empty for today (Japan time).
    pub date_given: String,
    /// Catalogue product code (e.g. `pfizer`; `VaccineLabel.product`).
    pub product: String,
    /// Lot number.
    pub lot: String,
    /// The lot's expiry, `YYYY-MM-DD`, when the label gave one.
    pub lot_expiry: Option<String>,
    /// Doctor's name (接種医師名).
    pub doctor: String,
    /// An idempotency key of the app's own; when absent the session makes one. Registering
    /// again with the same key stores nothing new.
    pub idempotency_key: Option<String>,
}

/// Fields to correct (補正); absent fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct CorrectionInput {
    /// New dose number.
    pub dose_number: Option<u8>,
    /// New date given, `YYYY-MM-DD`.
    pub date_given: Option<String>,
    /// New product code.
    pub product: Option<String>,
    /// New lot number.
    pub lot: Option<String>,
    /// New lot expiry, `YYYY-MM-DD`.
    pub lot_expiry: Option<String>,
    /// New doctor's name.
    pub doctor: Option<String>,
    /// New site name.
    pub site_name: Option<String>,
}

/// A dose as the tablet sees it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct DoseSummary {
    /// The dose id (32 hex digits), for `correct`.
    pub dose_id: String,
    /// The idempotency key it was registered with.
    pub idempotency_key: String,
    /// The issuing municipality.
    pub municipality_code: String,
    /// The voucher number.
    pub voucher_number: String,
    /// Dose number.
    pub dose_number: u8,
    /// Date given, `YYYY-MM-DD`.
    pub date_given: String,
    /// Product code.
    pub product: String,
    /// Maker (ワクチンメーカー).
    pub maker: String,
    /// Lot number.
    pub lot: String,
    /// Lot expiry, `YYYY-MM-DD`, when known.
    pub lot_expiry: Option<String>,
    /// Doctor's name.
    pub doctor: String,
    /// Site name.
    pub site_name: String,
    /// The current version (1, then one more per correction).
    pub version: u32,
    /// Voided.
    pub voided: bool,
    /// When registered on this tablet (RFC 3339, UTC).
    pub registered_at: String,
    /// Open findings with the data this tablet has (offline, every voucher is `unmatched`
    /// until the server matches it).
    pub findings: Vec<Finding>,
    /// `true` when the server has acknowledged every change of this dose.
    pub synced: bool,
}

impl DoseSummary {
    pub(crate) fn of(d: &DoseRecord, findings: Vec<Finding>, synced: bool) -> Self {
        let det = d.details();
        DoseSummary {
            dose_id: d.id.to_string(),
            idempotency_key: d.idempotency_key.as_str().to_owned(),
            municipality_code: d.voucher.municipality.as_str().to_owned(),
            voucher_number: d.voucher.number.as_str().to_owned(),
            dose_number: det.dose_number,
            date_given: date_text(det.date_given),
            product: det.product.as_str().to_owned(),
            maker: det.maker.clone(),
            lot: det.lot.clone(),
            lot_expiry: det.lot_expiry.map(date_text),
            doctor: det.doctor.clone(),
            site_name: det.site_name.clone(),
            version: d.current().version,
            voided: d.is_voided(),
            registered_at: instant_text(d.registered_at),
            findings,
            synced,
        }
    }
}

/// What registering a dose gave.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct RegistrationResult {
    /// The dose as stored on the tablet.
    pub dose: DoseSummary,
    /// `true` when the idempotency key had been used: nothing new was stored.
    pub replayed: bool,
}

/// A sync batch to send to the server.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PendingBatch {
    /// Its id, for `acknowledge`.
    pub batch_id: String,
    /// The versioned batch JSON (`vrs.sync.batch` version 1), to send as it is.
    pub json: String,
    /// How many entries it holds.
    pub entries: u32,
}

/// What the server did with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum EntryStatus {
    /// Stored.
    Applied,
    /// Already stored: nothing new.
    Replayed,
    /// Refused at input on the server; see `detail`.
    Rejected,
    /// Not applied as made; in the municipality's review queue.
    Conflict,
    /// Not applied yet: it stays pending and goes in a later batch.
    Retry,
}

impl From<vrs_core::sync::EntryStatus> for EntryStatus {
    fn from(s: vrs_core::sync::EntryStatus) -> Self {
        use vrs_core::sync::EntryStatus as S;
        match s {
            S::Applied => EntryStatus::Applied,
            S::Replayed => EntryStatus::Replayed,
            S::Rejected => EntryStatus::Rejected,
            S::Conflict => EntryStatus::Conflict,
            S::Retry => EntryStatus::Retry,
        }
    }
}

/// The server's answer about one entry.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct EntryOutcome {
    /// The entry.
    pub entry_id: String,
    /// What became of it.
    pub status: EntryStatus,
    /// The dose, when there is one.
    pub dose_id: Option<String>,
    /// Why, for rejected, conflict and retry.
    pub detail: Option<String>,
    /// The dose's findings on the server (with the uploaded residents).
    pub findings: Vec<Finding>,
}

/// What acknowledging a server reply did.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Acknowledgement {
    /// The batch acknowledged.
    pub batch_id: String,
    /// Entries the server stored now.
    pub applied: u32,
    /// Entries it already had.
    pub replayed: u32,
    /// Entries it refused.
    pub rejected: u32,
    /// Entries it queued for review.
    pub conflicts: u32,
    /// Entries to send again.
    pub retry: u32,
    /// Entries still pending on the tablet after this acknowledgement.
    pub still_pending: u64,
    /// Every entry's outcome.
    pub entries: Vec<EntryOutcome>,
}
