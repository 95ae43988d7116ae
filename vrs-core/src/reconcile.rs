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
    validate_read_registration(reg, parse_ocr(&reg.ocr_line)?, site, catalogue, today)
}

/// [`validate_registration`] of a registration whose OCR line was already read into `ocr`
/// (with [`parse_ocr`]): a batch reads each line once.
pub(crate) fn validate_read_registration(
    reg: &DoseRegistration,
    ocr: OcrLine,
    site: &Site,
    catalogue: &Catalogue,
    today: NaiveDate,
) -> Result<ValidRegistration> {
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
            lot_expiry: reg.lot_expiry,
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
/// The rules: unmatched; lot plausibility; a lot used after its known expiry; minimum age; voucher moved out or deceased;
/// three-way duplicates (duplicate, probable duplicate within 23 days, distinct); dose
/// numbers that do not follow the history; a dose dated before the previous one; an
/// interval shorter than the rule in force. Of two doses that collide, the one
/// registered later carries the finding.
pub fn assess_person(resident: Option<&Resident>, doses: &[&DoseRecord], catalogue: &Catalogue) -> BTreeMap<DoseId, Vec<Assessment>> {
    let mut out: BTreeMap<DoseId, Vec<Assessment>> = BTreeMap::new();
    // Registration order decides which of two colliding doses is "the later one".
    let mut active: Vec<&DoseRecord> = doses.iter().copied().filter(|d| !d.is_voided()).collect();
    active.sort_by_key(|a| (a.registered_at, a.id));
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
                if let Some(since) = r.status_date.filter(|since| *since < det.date_given) {
                    match r.status {
                        ResidentStatus::MovedOut => {
                            push(FindingKind::VoucherMovedOut, format!("the voucher's holder moved out on {since}, before the dose"), None)
                        }
                        ResidentStatus::Deceased => {
                            push(FindingKind::VoucherDeceased, format!("the voucher's holder is recorded deceased on {since}"), None)
                        }
                        ResidentStatus::Active => {}
                    }
                }
            }
        }
        if !catalogue.lot_plausible(&det.product, &det.lot) {
            push(FindingKind::LotImplausible, format!("lot {:?} does not look like a lot of {}", det.lot, det.product), None);
        }
        if let Some(expiry) = det.lot_expiry.filter(|expiry| det.date_given > *expiry) {
            push(FindingKind::ExpiredLot, format!("lot {:?} expired on {expiry}, before the dose on {}", det.lot, det.date_given), None);
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
        }) && (det.date_given - o.details().date_given).num_days() > PROBABLE_DUPLICATE_DAYS
        {
            push(
                FindingKind::DoseOutOfSequence,
                format!("dose number {} was already given on {}; this looks like a later dose", det.dose_number, o.details().date_given),
                Some(o.id),
            );
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
/// same doses: new ones open, vanished ones close, unchanged ones are left alone. Kinds
/// that assessment does not decide ([`FindingKind::is_assessed`]) are never closed here.
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
        for f in stored.iter().filter(|f| f.dose == *dose && f.open && f.kind.is_assessed() && !wanted.iter().any(|a| a.kind == f.kind)) {
            out.push(Finding { open: false, closed_at: Some(now), ..f.clone() });
        }
    }
    out
}

/// The vouchers whose doses make up a resident's history: their own and the chain of
/// previous vouchers (転入前), so that doses follow the person.
pub fn vouchers_of(resident: &Resident) -> Vec<VoucherRef> {
    let mut v = vec![resident.voucher_ref()];
    if let Some(p) = resident.previous
        && !v.contains(&p)
    {
        v.push(p);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dose::{DoseRegistration, DoseVersion};
    use crate::ids::{AccountId, AddresseeNumber, IdempotencyKey, PersonRef, SiteId, VoucherNumber};
    use crate::resident::{PersonalText, Sex};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn code(s: &str) -> MunicipalityCode {
        MunicipalityCode::parse(s).unwrap()
    }
    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }
    fn voucher() -> VoucherRef {
        VoucherRef { municipality: code("131016"), number: VoucherNumber::parse("0000012345").unwrap() }
    }
    fn resident(birth: &str) -> Resident {
        Resident {
            person: PersonRef { municipality: code("131016"), addressee: AddresseeNumber::parse("1001").unwrap() },
            voucher: voucher().number,
            name: PersonalText("山田太郎".into()),
            name_kana: PersonalText("ヤマダタロウ".into()),
            birth_date: date(birth),
            sex: Sex::Male,
            address: None,
            previous: None,
            personal_number_hash: None,
            status: ResidentStatus::Active,
            status_date: None,
        }
    }
    fn dose(key: &str, number: u8, given: &str, product: &str, lot: &str, registered_minute: u32) -> DoseRecord {
        let details = DoseDetails {
            dose_number: number,
            date_given: date(given),
            administering_municipality: code("131016"),
            site: SiteId::parse("venue-1").unwrap(),
            site_name: "区民会館".into(),
            doctor: "佐藤医師".into(),
            product: ProductCode::new(product),
            maker: "ファイザー".into(),
            lot: lot.into(),
            lot_expiry: None,
        };
        let at = Utc.with_ymd_and_hms(2021, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(registered_minute.into());
        let key = IdempotencyKey::parse(key).unwrap();
        DoseRecord {
            id: DoseId::for_key(&key),
            idempotency_key: key,
            voucher: voucher(),
            ticket_kind: 1,
            registered_at: at,
            registered_by: AccountId::parse("tab-1").unwrap(),
            matched: None,
            versions: vec![DoseVersion { version: 1, details, voided: false, recorded_at: at, recorded_by: "t".into(), reason: None }],
            revision: 1,
            seq: 0,
        }
    }
    fn kinds(r: Option<&Resident>, doses: &[&DoseRecord], of: &DoseRecord) -> Vec<FindingKind> {
        let out = assess_person(r, doses, Catalogue::builtin());
        out[&of.id].iter().map(|a| a.kind).collect()
    }

    #[test]
    fn clean_series_has_no_findings() {
        let r = resident("1960-05-05");
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        let d2 = dose("b", 2, "2021-06-22", "pfizer", "FA5766", 1);
        assert!(kinds(Some(&r), &[&d1, &d2], &d1).is_empty());
        assert!(kinds(Some(&r), &[&d1, &d2], &d2).is_empty());
    }

    #[test]
    fn unmatched_voucher_is_a_finding() {
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        assert_eq!(kinds(None, &[&d1], &d1), vec![FindingKind::Unmatched]);
    }

    #[test]
    fn exact_duplicate_flags_the_later_registration_only() {
        let r = resident("1960-05-05");
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        let d1b = dose("b", 1, "2021-06-01", "pfizer", "FA5765", 5);
        assert!(kinds(Some(&r), &[&d1, &d1b], &d1).is_empty());
        assert_eq!(kinds(Some(&r), &[&d1, &d1b], &d1b), vec![FindingKind::Duplicate]);
    }

    #[test]
    fn probable_duplicate_within_23_days_whatever_the_number() {
        let r = resident("1960-05-05");
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        let d1b = dose("b", 1, "2021-06-10", "pfizer", "FA5765", 5);
        assert!(kinds(Some(&r), &[&d1, &d1b], &d1b).contains(&FindingKind::ProbableDuplicate));
        // A dose 2 nine days after dose 1 is too early and a probable duplicate.
        let d2 = dose("c", 2, "2021-06-10", "pfizer", "FA5765", 5);
        let k = kinds(Some(&r), &[&d1, &d2], &d2);
        assert!(k.contains(&FindingKind::ProbableDuplicate) && k.contains(&FindingKind::IntervalTooShort), "{k:?}");
        // A series at the allowed interval is no duplicate even within 23 days.
        let d2ok = dose("d", 2, "2021-06-20", "pfizer", "FA5765", 5);
        assert!(kinds(Some(&r), &[&d1, &d2ok], &d2ok).is_empty());
    }

    #[test]
    fn interval_too_short_uses_clear_days() {
        let r = resident("1960-05-05");
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        // 18 clear days for Pfizer: the earliest dose 2 is day +19.
        let early = dose("b", 2, "2021-06-19", "pfizer", "FA5766", 1);
        let ok = dose("c", 2, "2021-06-20", "pfizer", "FA5766", 1);
        assert!(kinds(Some(&r), &[&d1, &early], &early).contains(&FindingKind::IntervalTooShort));
        assert!(!kinds(Some(&r), &[&d1, &ok], &ok).contains(&FindingKind::IntervalTooShort));
    }

    #[test]
    fn date_before_previous_and_out_of_sequence() {
        let r = resident("1960-05-05");
        let d1 = dose("a", 1, "2021-07-01", "pfizer", "FA5765", 0);
        let d2 = dose("b", 2, "2021-06-01", "pfizer", "FA5766", 1);
        assert!(kinds(Some(&r), &[&d1, &d2], &d2).contains(&FindingKind::DateBeforePrevious));
        let lone2 = dose("c", 2, "2021-06-01", "pfizer", "FA5766", 1);
        assert!(kinds(Some(&r), &[&lone2], &lone2).contains(&FindingKind::DoseOutOfSequence));
        // Dose 2 recorded as dose 1, six weeks later.
        let again1 = dose("d", 1, "2021-08-15", "pfizer", "FA5767", 2);
        assert!(kinds(Some(&r), &[&d1, &again1], &again1).contains(&FindingKind::DoseOutOfSequence));
    }

    #[test]
    fn age_status_and_lot_findings() {
        let child = resident("2012-01-01");
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        assert!(kinds(Some(&child), &[&d1], &d1).contains(&FindingKind::BelowMinimumAge));
        let mut moved = resident("1960-05-05");
        moved.status = ResidentStatus::MovedOut;
        moved.status_date = Some(date("2021-05-01"));
        assert!(kinds(Some(&moved), &[&d1], &d1).contains(&FindingKind::VoucherMovedOut));
        let mut dead = resident("1960-05-05");
        dead.status = ResidentStatus::Deceased;
        dead.status_date = Some(date("2021-05-01"));
        assert!(kinds(Some(&dead), &[&d1], &d1).contains(&FindingKind::VoucherDeceased));
        let badlot = dose("b", 1, "2021-06-01", "pfizer", "12345", 0);
        assert!(kinds(Some(&resident("1960-05-05")), &[&badlot], &badlot).contains(&FindingKind::LotImplausible));
    }

    #[test]
    fn voided_doses_do_not_count() {
        let r = resident("1960-05-05");
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        let mut d1b = dose("b", 1, "2021-06-01", "pfizer", "FA5765", 5);
        let mut v = d1b.versions[0].clone();
        v.version = 2;
        v.voided = true;
        d1b.versions.push(v);
        assert!(kinds(Some(&r), &[&d1, &d1b], &d1).is_empty());
        assert!(kinds(Some(&r), &[&d1, &d1b], &d1b).is_empty());
    }

    fn site() -> Site {
        Site { id: SiteId::parse("venue-1").unwrap(), name: "区民会館".into(), municipality: code("131016") }
    }
    fn reg(ocr: &str, given: &str, product: &str) -> DoseRegistration {
        DoseRegistration {
            ocr_line: ocr.into(),
            dose_number: None,
            date_given: date(given),
            product: product.into(),
            lot: "FA5765".into(),
            doctor: "佐藤".into(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            lot_expiry: None,
        }
    }

    #[test]
    fn input_rejections_by_kind() {
        let c = Catalogue::builtin();
        let today = date("2021-07-01");
        let kind = |r: &DoseRegistration| match validate_registration(r, &site(), c, today) {
            Err(Error::DoseRejected { kind, .. }) => Some(kind),
            Ok(_) => None,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(kind(&reg("111310160000012345", "2021-06-01", "pfizer")), None);
        assert_eq!(kind(&reg("11131016000001234", "2021-06-01", "pfizer")), Some(FindingKind::MalformedOcr));
        assert_eq!(kind(&reg("111310170000012345", "2021-06-01", "pfizer")), Some(FindingKind::BadCheckDigit));
        // 131008 passes the check digit but is no municipality.
        let unknown = (0..10).map(|d| format!("13100{d}")).find(|c| MunicipalityCode::parse(c).is_ok_and(|m| !m.is_known())).unwrap();
        assert_eq!(kind(&reg(&format!("11{unknown}0000012345"), "2021-06-01", "pfizer")), Some(FindingKind::UnknownMunicipality));
        assert_eq!(kind(&reg("111310160000012345", "2021-07-02", "pfizer")), Some(FindingKind::FutureDate));
        assert_eq!(kind(&reg("111310160000012345", "2021-06-01", "sputnik")), Some(FindingKind::UnknownProduct));
        let mut long = reg("111310160000012345", "2021-06-01", "pfizer");
        long.doctor = "あ".repeat(21);
        assert_eq!(kind(&long), Some(FindingKind::InvalidField));
        let v = validate_registration(&reg("121310160000012345", "2021-06-01", "pfizer"), &site(), c, today).unwrap();
        assert_eq!(v.details.dose_number, 2, "dose number comes from the OCR line");
        assert_eq!(v.details.maker, "ファイザー", "maker comes from the catalogue");
    }

    #[test]
    fn diff_opens_and_closes() {
        let now = Utc.with_ymd_and_hms(2021, 7, 1, 0, 0, 0).unwrap();
        let d1 = dose("a", 1, "2021-06-01", "pfizer", "FA5765", 0);
        let owner = |_| Some(code("131016"));
        let mut assessed = BTreeMap::new();
        assessed.insert(d1.id, vec![Assessment { kind: FindingKind::Unmatched, detail: "x".into(), related: None }]);
        let opened = diff_findings(&[], &assessed, owner, now);
        assert_eq!(opened.len(), 1);
        assert!(opened[0].open);
        assert!(diff_findings(&opened, &assessed, owner, now).is_empty(), "unchanged findings are not rewritten");
        assessed.insert(d1.id, vec![]);
        let closed = diff_findings(&opened, &assessed, owner, now);
        assert_eq!(closed.len(), 1);
        assert!(!closed[0].open && closed[0].closed_at == Some(now));
    }

    proptest! {
        /// Whatever the history, a dose has at most one finding of each kind, only the
        /// later of two identical registrations is a duplicate, and nothing panics.
        #[test]
        fn assessment_is_total_and_duplicates_are_one_sided(
            spec in proptest::collection::vec((1u8..5, 0i64..400, 0usize..3), 1..8)
        ) {
            let r = resident("1970-01-01");
            let products = ["pfizer", "moderna", "astrazeneca"];
            let doses: Vec<DoseRecord> = spec.iter().enumerate().map(|(i, (n, day, p))| {
                let given = date("2021-06-01") + chrono::Duration::days(*day);
                dose(&format!("k{i}"), *n, &given.to_string(), products[*p], "FA5765", i as u32)
            }).collect();
            let refs: Vec<&DoseRecord> = doses.iter().collect();
            let out = assess_person(Some(&r), &refs, Catalogue::builtin());
            for d in &doses {
                let ks: Vec<FindingKind> = out[&d.id].iter().map(|a| a.kind).collect();
                let mut dedup = ks.clone();
                dedup.sort();
                dedup.dedup();
                prop_assert_eq!(ks.len(), dedup.len());
                for a in &out[&d.id] {
                    if a.kind == FindingKind::Duplicate {
                        let other = doses.iter().find(|o| Some(o.id) == a.related).unwrap();
                        prop_assert!(other.registered_at < d.registered_at);
                        prop_assert!(!out[&other.id].iter().any(|x| x.kind == FindingKind::Duplicate && x.related == Some(d.id)));
                    }
                }
            }
        }
    }
}
