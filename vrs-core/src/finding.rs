//! Findings of reconciliation (突合): why a dose was refused, or what about a stored dose
//! the issuing municipality must review (要修正 must-fix, 要確認 to-check).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DoseId, MunicipalityCode};

/// How serious a finding is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Severity {
    /// Refused at input: nothing stored.
    Rejected,
    /// Stored, must be fixed by the municipality (要修正).
    MustFix,
    /// Stored, to be checked by the municipality (要確認).
    ToCheck,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Rejected => "rejected",
            Severity::MustFix => "must-fix (要修正)",
            Severity::ToCheck => "to-check (要確認)",
        })
    }
}

/// What a finding is about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The OCR line is not 18 digits of the right shape.
    MalformedOcr,
    /// The municipality code's check digit is wrong.
    BadCheckDigit,
    /// The municipality code is not a real municipality.
    UnknownMunicipality,
    /// The date given is after today.
    FutureDate,
    /// The product is not in the catalogue.
    UnknownProduct,
    /// A field is longer than the ledger allows, or otherwise malformed.
    InvalidField,
    /// The voucher has not (yet) been uploaded (接種対象者登録待ち).
    Unmatched,
    /// Dose k is dated before dose k−1.
    DateBeforePrevious,
    /// Same person, dose number, product family and date as another dose.
    Duplicate,
    /// Same person and product family within 23 days of another dose.
    ProbableDuplicate,
    /// Shorter interval than the rule in force allows.
    IntervalTooShort,
    /// The dose number does not follow the person's history.
    DoseOutOfSequence,
    /// Younger than the product's minimum age on the day.
    BelowMinimumAge,
    /// The voucher's holder had moved out (転出) before the date given.
    VoucherMovedOut,
    /// The voucher's holder had died (死亡) before the date given.
    VoucherDeceased,
    /// The lot number does not look like one of the product's lots.
    LotImplausible,
    /// The dose was given after its lot's expiry date (when the expiry is known, e.g. read
    /// from the vial's GS1 label): a wrong vaccination (間違い接種) to follow up.
    ExpiredLot,
    /// A tablet's offline edit arrived after someone else had already changed the record at
    /// the same version: the edit was not applied (sync is never last-write-wins) and waits
    /// here, with what it wanted to change, for the municipality to review.
    SyncConflict,
}

impl FindingKind {
    /// Every kind, in order.
    pub const ALL: [FindingKind; 18] = [
        FindingKind::MalformedOcr,
        FindingKind::BadCheckDigit,
        FindingKind::UnknownMunicipality,
        FindingKind::FutureDate,
        FindingKind::UnknownProduct,
        FindingKind::InvalidField,
        FindingKind::Unmatched,
        FindingKind::DateBeforePrevious,
        FindingKind::Duplicate,
        FindingKind::ProbableDuplicate,
        FindingKind::IntervalTooShort,
        FindingKind::DoseOutOfSequence,
        FindingKind::BelowMinimumAge,
        FindingKind::VoucherMovedOut,
        FindingKind::VoucherDeceased,
        FindingKind::LotImplausible,
        FindingKind::ExpiredLot,
        FindingKind::SyncConflict,
    ];

    /// The severity this kind always has.
    pub fn severity(self) -> Severity {
        use FindingKind::*;
        match self {
            MalformedOcr | BadCheckDigit | UnknownMunicipality | FutureDate | UnknownProduct | InvalidField => Severity::Rejected,
            DateBeforePrevious | Duplicate | DoseOutOfSequence | BelowMinimumAge | ExpiredLot => Severity::MustFix,
            Unmatched | ProbableDuplicate | IntervalTooShort | VoucherMovedOut | VoucherDeceased | LotImplausible | SyncConflict => {
                Severity::ToCheck
            }
        }
    }

    /// Whether reconciliation ([`crate::reconcile::assess_person`]) decides this kind, so that
    /// re-assessing a person opens and closes it. [`FindingKind::SyncConflict`] is raised by
    /// sync instead, and stays open until the municipality resolves it (or the dose is voided).
    pub fn is_assessed(self) -> bool {
        !matches!(self, FindingKind::SyncConflict)
    }

    /// The snake_case name used in files and the CLI.
    pub fn as_str(self) -> &'static str {
        use FindingKind::*;
        match self {
            MalformedOcr => "malformed_ocr",
            BadCheckDigit => "bad_check_digit",
            UnknownMunicipality => "unknown_municipality",
            FutureDate => "future_date",
            UnknownProduct => "unknown_product",
            InvalidField => "invalid_field",
            Unmatched => "unmatched",
            DateBeforePrevious => "date_before_previous",
            Duplicate => "duplicate",
            ProbableDuplicate => "probable_duplicate",
            IntervalTooShort => "interval_too_short",
            DoseOutOfSequence => "dose_out_of_sequence",
            BelowMinimumAge => "below_minimum_age",
            VoucherMovedOut => "voucher_moved_out",
            VoucherDeceased => "voucher_deceased",
            LotImplausible => "lot_implausible",
            ExpiredLot => "expired_lot",
            SyncConflict => "sync_conflict",
        }
    }

    /// Parses [`FindingKind::as_str`].
    pub fn parse(text: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A finding about a stored dose, queued for the issuing municipality's review.
/// Identified by (dose, kind): re-evaluating a dose updates its findings in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The dose it is about.
    pub dose: DoseId,
    /// The municipality whose review queue holds it (the dose's owner).
    pub municipality: MunicipalityCode,
    /// What it is.
    pub kind: FindingKind,
    /// How serious (from the kind).
    pub severity: Severity,
    /// Plain words explaining it, without personal data.
    pub detail: String,
    /// The other dose involved, for duplicates and intervals.
    pub related: Option<DoseId>,
    /// Still open, or closed because the cause went away (e.g. the upload arrived).
    pub open: bool,
    /// When first raised.
    #[serde(with = "crate::clock::serde_instant")]
    pub raised_at: DateTime<Utc>,
    /// When closed.
    #[serde(default, with = "crate::clock::serde_instant::option")]
    pub closed_at: Option<DateTime<Utc>>,
}

/// A finding as decided by the rules, before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// What it is.
    pub kind: FindingKind,
    /// Plain words.
    pub detail: String,
    /// The other dose involved.
    pub related: Option<DoseId>,
}
