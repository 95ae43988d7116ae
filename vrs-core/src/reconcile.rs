//! Reconciliation (突合) as pure functions: validating a registration at input, and
//! assessing a person's doses against each other, the resident and the rules.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::access::Site;
use crate::dose::{DoseDetails, DoseRecord, DoseRegistration, limits};
use crate::finding::{Assessment, Finding, FindingKind};
use crate::ids::{DoseId, MunicipalityCode, OcrLine, VoucherRef};
use crate::resident::{Resident, ResidentStatus};
use crate::text::to_halfwidth;
use crate::vaccine::{Catalogue, ProductCode};
use crate::{Error, Result};

/// Doses of the same product family given within this many days of each other are a
/// probable duplicate (the NIST/AIRA deduplication window).
pub const PROBABLE_DUPLICATE_DAYS: i64 = 23;

fn rejected(kind: FindingKind, detail: impl Into<String>) -> Error {
    Error::DoseRejected { kind, detail: detail.into() }
}

/// A registration that passed input validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidRegistration {
    /// The parsed OCR line.
    pub ocr: OcrLine,
    /// The details of the first version.
    pub details: DoseDetails,
}

/// Checks a field's length in characters (the ledger's limits count characters).
pub fn check_length(field: &'static str, value: &str, max: usize, required: bool) -> Result<()> {
    let n = value.chars().count();
    if required && value.trim().is_empty() {
        return Err(rejected(FindingKind::InvalidField, format!("{field} is required")));
    }
    if n > max {
        return Err(rejected(FindingKind::InvalidField, format!("{field} is {n} characters, the ledger allows at most {max}")));
    }
    if value.chars().any(char::is_control) {
        return Err(rejected(FindingKind::InvalidField, format!("{field} contains control characters")));
    }
    Ok(())
}

/// Input validation of a registration (nothing is stored when this fails): the OCR line,
/// the municipality's existence, the date, the product and the ledger's field limits.
pub fn validate_registration(reg: &DoseRegistration, site: &Site, catalogue: &Catalogue, today: NaiveDate) -> Result<ValidRegistration> {
    let ocr = parse_ocr(&reg.ocr_line)?;
    let dose_number = reg.dose_number.unwrap_or(ocr.dose_number);
    let details = validate_details(
        DoseDetails {
            dose_number,
            date_given: reg.date_given,
            administering_municipality: site.municipality,
            site: site.id.clone(),
            site_name: site.name.clone(),
            doctor: reg.doctor.trim().to_owned(),
            product: ProductCode::new(reg.product.trim()),
            maker: String::new(),
            lot: to_halfwidth(reg.lot.trim()).into_owned(),
        },
        catalogue,
        today,
    )?;
    Ok(ValidRegistration { ocr, details })
}

/// Parses an OCR line, classifying the failure as the finding kind it is.
pub fn parse_ocr(text: &str) -> Result<OcrLine> {
    match OcrLine::parse(text) {
        Ok(ocr) if ocr.voucher.municipality.is_known() => Ok(ocr),
        Ok(ocr) => Err(rejected(
            FindingKind::UnknownMunicipality,
            format!("municipality code {} is not a real municipality", ocr.voucher.municipality),
        )),
        Err(Error::Invalid { reason, .. }) if reason.contains("check digit") => Err(rejected(FindingKind::BadCheckDigit, reason)),
        Err(Error::Invalid { reason, .. }) => Err(rejected(FindingKind::MalformedOcr, reason)),
        Err(e) => Err(e),
    }
}

/// Validates dose details (for a registration or a correction) and fills in the maker
/// from the catalogue.
pub fn validate_details(mut d: DoseDetails, catalogue: &Catalogue, today: NaiveDate) -> Result<DoseDetails> {
    if d.date_given > today {
        return Err(rejected(FindingKind::FutureDate, format!("date given {} is after today {today}", d.date_given)));
    }
    let Some(product) = catalogue.product(d.product.as_str()) else {
        return Err(rejected(FindingKind::UnknownProduct, format!("product {:?} is not in the catalogue", d.product.as_str())));
    };
    if d.dose_number == 0 {
        return Err(rejected(FindingKind::InvalidField, "dose number must be 1 or more"));
    }
    d.maker = product.maker.clone();
    check_length("site_name", &d.site_name, limits::SITE_NAME, true)?;
    check_length("doctor", &d.doctor, limits::DOCTOR, true)?;
    check_length("maker", &d.maker, limits::MAKER, true)?;
    check_length("lot", &d.lot, limits::LOT, true)?;
    Ok(d)
}

/// Assesses every active dose of one person (or of one unmatched voucher when
/// `resident` is `None`) and returns what each dose's findings should be now.
///
/// The rules: unmatched; lot plausibility; minimum age; voucher moved out or deceased;
/// three-way duplicates (duplicate, probable duplicate within 23 days, distinct); dose
/// numbers that do not follow the history; a dose dated before the previous one; an
/// interval shorter than the rule in force. Of two doses that collide, the one
/// registered later carries the finding.
pub fn assess_person(resident: Option<&Resident>, doses: &[&DoseRecord], catalogue: &Catalogue) -> BTreeMap<DoseId, Vec<Assessment>> {
    let mut out: BTreeMap<DoseId, Vec<Assessment>> = BTreeMap::new();
    // Registration order decides which of two colliding doses is "the later one".
    let mut active: Vec<&DoseRecord> = doses.iter().copied().filter(|d| !d.is_voided()).collect();
    active.sort_by(|a, b| (a.registered_at, a.id).cmp(&(b.registered_at, b.id)));
    for d in doses {
        out.entry(d.id).or_default();
    }
    let family = |p: &ProductCode| catalogue.product(p.as_str()).map(|x| x.family.clone()).unwrap_or_else(|| p.as_str().to_owned());

    for (i, d) in active.iter().enumerate() {
        let det = d.details();
        let mut found: Vec<Assessment> = Vec::new();
        let mut push = |kind, detail: String, related: Option<DoseId>| {
            if !found.iter().any(|a: &Assessment| a.kind == kind) {
                found.push(Assessment { kind, detail, related });
            }
        };

        match resident {
            None => push(FindingKind::Unmatched, format!("voucher {} has not been uploaded by its municipality", d.voucher), None),
            Some(r) => {
                if let Err(req) = catalogue.check_age(&det.product, r.birth_date, det.date_given) {
                    push(
                        FindingKind::BelowMinimumAge,
                        format!("below the minimum age for {} on {}: {req}", det.product, det.date_given),
                        None,
                    );
                }
                if let Some(since) = r.status_date {
                    if since < det.date_given {
                        match r.status {
                            ResidentStatus::MovedOut => push(
                                FindingKind::VoucherMovedOut,
                                format!("the voucher's holder moved out on {since}, before the dose"),
                                None,
                            ),
                            ResidentStatus::Deceased => {
                                push(FindingKind::VoucherDeceased, format!("the voucher's holder is recorded deceased on {since}"), None)
                            }
                            ResidentStatus::Active => {}
                        }
                    }
                }
            }
        }
        if !catalogue.lot_plausible(&det.product, &det.lot) {
            push(FindingKind::LotImplausible, format!("lot {:?} does not look like a lot of {}", det.lot, det.product), None);
        }

        // Duplicates against every dose registered before this one.
        for o in &active[..i] {
            let od = o.details();
            if family(&od.product) != family(&det.product) {
                continue;
            }
            let gap = (det.date_given - od.date_given).num_days().abs();
            if od.dose_number == det.dose_number && od.date_given == det.date_given {
                push(FindingKind::Duplicate, format!("same dose {} on the same day as dose {}", det.dose_number, o.id), Some(o.id));
            } else if gap <= PROBABLE_DUPLICATE_DAYS
                && !consecutive_and_allowed(o, d, catalogue)
                && !consecutive_and_allowed(d, o, catalogue)
            {
                push(FindingKind::ProbableDuplicate, format!("given {gap} days from dose {} of the same vaccine", o.id), Some(o.id));
            }
        }

        // History: same number given earlier on another day (a dose 2 recorded as 1).
        if let Some(o) = active.iter().find(|o| {
            o.id != d.id
                && o.details().dose_number == det.dose_number
                && o.details().date_given < det.date_given
                && family(&o.details().product) == family(&det.product)
        }) {
            if (det.date_given - o.details().date_given).num_days() > PROBABLE_DUPLICATE_DAYS {
                push(
                    FindingKind::DoseOutOfSequence,
                    format!(
                        "dose number {} was already given on {}; this looks like a later dose",
                        det.dose_number,
                        o.details().date_given
                    ),
                    Some(o.id),
                );
            }
        }
        if det.dose_number > 1 {
            let prev_number = det.dose_number - 1;
            let previous: Vec<&&DoseRecord> = active.iter().filter(|o| o.details().dose_number == prev_number).collect();
            if previous.is_empty() {
                push(FindingKind::DoseOutOfSequence, format!("dose {} recorded but no dose {prev_number}", det.dose_number), None);
            } else if let Some(later) = previous.iter().find(|o| o.details().date_given > det.date_given) {
                push(
                    FindingKind::DateBeforePrevious,
                    format!(
                        "dose {} on {} is dated before dose {prev_number} on {}",
                        det.dose_number,
                        det.date_given,
                        later.details().date_given
                    ),
                    Some(later.id),
                );
            } else if let Some(prev) = previous.iter().max_by_key(|o| o.details().date_given) {
                let pd = prev.details();
                match catalogue.earliest_next_dose(
                    &pd.product,
                    pd.dose_number,
                    pd.date_given,
                    &det.product,
                    det.dose_number,
                    det.date_given,
                ) {
                    Some(earliest) if det.date_given < earliest => push(
                        FindingKind::IntervalTooShort,
                        format!(
                            "dose {} on {} is before the earliest allowed date {earliest} after dose {prev_number} on {}",
                            det.dose_number, det.date_given, pd.date_given
                        ),
                        Some(prev.id),
                    ),
                    Some(_) => {}
                    None => push(
                        FindingKind::IntervalTooShort,
                        format!("no rule in force on {} allows dose {} of {}", det.date_given, det.dose_number, det.product),
                        Some(prev.id),
                    ),
                }
            }
        }
        out.insert(d.id, found);
    }
    out
}

/// `true` when `b` is the dose after `a` (numbers k, k+1) at an interval the rules allow:
/// such a pair is a series, not a probable duplicate, however close.
fn consecutive_and_allowed(a: &DoseRecord, b: &DoseRecord, catalogue: &Catalogue) -> bool {
    let (ad, bd) = (a.details(), b.details());
    if bd.dose_number != ad.dose_number + 1 || bd.date_given < ad.date_given {
        return false;
    }
    catalogue
        .earliest_next_dose(&ad.product, ad.dose_number, ad.date_given, &bd.product, bd.dose_number, bd.date_given)
        .is_some_and(|earliest| bd.date_given >= earliest)
}

/// Turns assessments into the findings to write, given the findings stored for the
/// same doses: new ones open, vanished ones close, unchanged ones are left alone.
pub fn diff_findings(
    stored: &[Finding],
    assessed: &BTreeMap<DoseId, Vec<Assessment>>,
    owner: impl Fn(DoseId) -> Option<MunicipalityCode>,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (dose, wanted) in assessed {
        let Some(municipality) = owner(*dose) else { continue };
        for a in wanted {
            let existing = stored.iter().find(|f| f.dose == *dose && f.kind == a.kind);
            match existing {
                Some(f) if f.open && f.detail == a.detail && f.related == a.related => {}
                _ => out.push(Finding {
                    dose: *dose,
                    municipality,
                    kind: a.kind,
                    severity: a.kind.severity(),
                    detail: a.detail.clone(),
                    related: a.related,
                    open: true,
                    raised_at: existing.filter(|f| f.open).map_or(now, |f| f.raised_at),
                    closed_at: None,
                }),
            }
        }
        for f in stored.iter().filter(|f| f.dose == *dose && f.open && !wanted.iter().any(|a| a.kind == f.kind)) {
            out.push(Finding { open: false, closed_at: Some(now), ..f.clone() });
        }
    }
    out
}

/// The vouchers whose doses make up a resident's history: their own and the chain of
/// previous vouchers (転入前), so that doses follow the person.
pub fn vouchers_of(resident: &Resident) -> Vec<VoucherRef> {
    let mut v = vec![resident.voucher_ref()];
    if let Some(p) = resident.previous {
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v
}
