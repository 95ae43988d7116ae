//! Doses (接種記録): never overwritten. A correction (補正) appends a version; a
//! deletion is a void with a reason. Every version is kept and exported.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, DoseId, IdempotencyKey, MunicipalityCode, PersonRef, SiteId, VoucherRef};
use crate::vaccine::ProductCode;

/// Ledger limits (予防接種台帳向け出力): a value longer than these is refused at registration.
pub mod limits {
    /// 接種会場名: at most 30 characters.
    pub const SITE_NAME: usize = 30;
    /// 接種医師名: at most 20 characters.
    pub const DOCTOR: usize = 20;
    /// ワクチンメーカー: at most 20 characters.
    pub const MAKER: usize = 20;
    /// ワクチンロット番号: at most 20 characters.
    pub const LOT: usize = 20;
}

/// What a dose record states about the vaccination; each version carries a full copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseDetails {
    /// Dose number (接種回数), cumulative: 1, 2, then boosters 3, 4, ...
    pub dose_number: u8,
    /// Date given (接種日).
    #[serde(with = "crate::clock::serde_date")]
    pub date_given: NaiveDate,
    /// Where the site is (接種自治体コード).
    pub administering_municipality: MunicipalityCode,
    /// The site (接種会場) id.
    pub site: SiteId,
    /// The site's name (接種会場名, ≤ 30 characters).
    pub site_name: String,
    /// The doctor (接種医師名, ≤ 20 characters).
    pub doctor: String,
    /// Vaccine product code from the catalogue.
    pub product: ProductCode,
    /// Maker as written in the ledger (ワクチンメーカー, ≤ 20 characters).
    pub maker: String,
    /// Lot number (ワクチンロット番号, ≤ 20 characters).
    pub lot: String,
    /// The lot's expiry date when it is known (read from the vial's GS1 label or the maker's
    /// sticker; FHIR `Immunization.expirationDate`, HL7 v2 RXA-16). A dose given after it
    /// carries the finding [`FindingKind::ExpiredLot`](crate::finding::FindingKind::ExpiredLot).
    #[serde(default, with = "crate::clock::serde_date::option")]
    pub lot_expiry: Option<NaiveDate>,
}

/// One version of a dose record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseVersion {
    /// 1 for the registration, then 2, 3, ... for each correction or void.
    pub version: u32,
    /// The details as of this version.
    pub details: DoseDetails,
    /// `true` when this version voids the dose (取消).
    pub voided: bool,
    /// When this version was written.
    #[serde(with = "crate::clock::serde_instant")]
    pub recorded_at: DateTime<Utc>,
    /// Who wrote it (an actor description, no personal data).
    pub recorded_by: String,
    /// Why (required for corrections and voids).
    pub reason: Option<String>,
}

/// A registered dose with all its versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseRecord {
    /// Id derived from the idempotency key.
    pub id: DoseId,
    /// The key the registration was made with.
    pub idempotency_key: IdempotencyKey,
    /// The voucher read at the site; its municipality owns the dose.
    pub voucher: VoucherRef,
    /// Ticket kind (券種) from the OCR line.
    pub ticket_kind: u8,
    /// When the dose was first registered (接種履歴登録日時).
    #[serde(with = "crate::clock::serde_instant")]
    pub registered_at: DateTime<Utc>,
    /// The tablet account that registered it.
    pub registered_by: AccountId,
    /// The resident the dose is matched to (突合済み), if any yet.
    pub matched: Option<PersonRef>,
    /// Every version, oldest first; never empty.
    pub versions: Vec<DoseVersion>,
    /// Bumped by every change (a version or a match), for optimistic concurrency.
    pub revision: u32,
    /// Change sequence number the store assigned at the last write (0 before the first).
    pub seq: u64,
}

impl DoseRecord {
    /// The newest version.
    pub fn current(&self) -> &DoseVersion {
        // `versions` is never empty: a record is created with its first version.
        &self.versions[self.versions.len() - 1]
    }
    /// The current details.
    pub fn details(&self) -> &DoseDetails {
        &self.current().details
    }
    /// Whether the newest version voids the dose.
    pub fn is_voided(&self) -> bool {
        self.current().voided
    }
    /// The municipality that owns the dose: the one that issued the voucher.
    pub fn owner(&self) -> MunicipalityCode {
        self.voucher.municipality
    }
    /// The date the dose was registered, in Japan (used for "today's records" of a site).
    pub fn registered_on_jst(&self) -> NaiveDate {
        crate::clock::jst_date(self.registered_at)
    }
}

/// A registration as a site submits it (from a tablet or the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseRegistration {
    /// The 18-digit OCR line as read (spaces and full-width digits tolerated).
    pub ocr_line: String,
    /// The dose number, when it differs from the one printed on the voucher.
    pub dose_number: Option<u8>,
    /// Date given.
    pub date_given: NaiveDate,
    /// Vaccine product code.
    pub product: String,
    /// Lot number.
    pub lot: String,
    /// Doctor's name.
    pub doctor: String,
    /// Idempotency key chosen by the client; a retry with the same key stores nothing new.
    pub idempotency_key: IdempotencyKey,
    /// The lot's expiry date, when the label read gave one.
    #[serde(default)]
    pub lot_expiry: Option<NaiveDate>,
}

/// A correction of a stored dose: the fields to change and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseCorrection {
    /// New dose number.
    pub dose_number: Option<u8>,
    /// New date given.
    pub date_given: Option<NaiveDate>,
    /// New product code.
    pub product: Option<String>,
    /// New lot number.
    pub lot: Option<String>,
    /// New doctor's name.
    pub doctor: Option<String>,
    /// New site name.
    pub site_name: Option<String>,
    /// New lot expiry date (a lot corrected from a new label read usually brings one).
    #[serde(default)]
    pub lot_expiry: Option<NaiveDate>,
}
