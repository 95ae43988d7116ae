//! What the fault-injection test (`faults.rs`) and the soak test (`soak.rs`) share: the
//! traffic they drive through the service (residents uploads in blocks, registrations,
//! corrections, voids) and the agreement check they end with: the statistics counters
//! equal a recount of the stored doses, and the ledger export equals the ledger computed
//! from them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use chrono::{Duration, NaiveDate};
use vrs_core::access::{Actor, Site, StatsScope};
use vrs_core::clock::{ledger_timestamp, push_ledger_date};
use vrs_core::dose::{DoseCorrection, DoseRecord, DoseRegistration};
use vrs_core::generate::SplitMix64;
use vrs_core::ids::{AccountId, DoseId, IdempotencyKey, MunicipalityCode, OcrLine, PersonRef, SiteId, VoucherRef};
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::resident::{PersonalText, Resident, Sex};
use vrs_core::service::Registry;
use vrs_core::stats::{StatsKey, StatsQuery, key_for};
use vrs_core::store::DoseScan;
use vrs_core::testing::{CHIYODA, code, day, resident};
use vrs_core::testing_service::SHINJUKU;

/// The municipalities the traffic touches: each uploads its residents, and each has sites.
pub const MUNICIPALITIES: [&str; 2] = [CHIYODA, SHINJUKU];

/// Addressee numbers of block `b` start at `b * BLOCK_SPAN + 1`.
const BLOCK_SPAN: u64 = 1_000_000;

/// The voucher number of person `j` of block `b` (blocks below 9999; 9999 is never
/// uploaded: its vouchers stay unmatched).
pub fn block_voucher(b: u64, j: u64) -> String {
    format!("{b:04}{j:06}")
}

/// The block an addressee number belongs to.
pub fn block_of(addressee: &str) -> u64 {
    addressee.parse::<u64>().map(|a| (a - 1) / BLOCK_SPAN).unwrap_or(u64::MAX)
}

/// Person `j` of block `b` of municipality `m`, as written by upload `upload`: the upload
/// is the address (a marker telling which upload wrote the row last); the rest depends on
/// the person only, so a replacement never moves a dose to another statistics group.
pub fn block_resident(m: &str, b: u64, j: u64, upload: u64) -> Resident {
    let addressee = (b * BLOCK_SPAN + j + 1).to_string();
    let mut r = resident(m, &addressee, &block_voucher(b, j));
    r.birth_date = day("1940-01-15") + Duration::days(((b * 7919 + j * 104_729) % (60 * 365)) as i64);
    r.sex = if (b + j).is_multiple_of(2) { Sex::Female } else { Sex::Male };
    r.address = Some(PersonalText(format!("upload {upload}")));
    r
}

/// Upload `g` of a municipality: block `g` new (`n` people) and block `g - 1` replaced.
pub fn upload(m: &str, g: u64, n: u64) -> Vec<Resident> {
    let mut rows: Vec<Resident> = (0..n).map(|j| block_resident(m, g, j, g)).collect();
    if g > 0 {
        rows.extend((0..n).map(|j| block_resident(m, g - 1, j, g)));
    }
    rows
}

/// The upload that wrote a resident last (its marker), if it carries one.
pub fn upload_marker(r: &Resident) -> Option<u64> {
    r.address.as_ref()?.as_str().strip_prefix("upload ")?.parse().ok()
}

/// The staff of a municipality.
pub fn staff(m: MunicipalityCode) -> Actor {
    Actor::MunicipalStaff { municipality: m, user: "traffic".into() }
}

/// The tablet account of site `k` of municipality `m`.
pub fn site_account(m: &str, k: usize) -> String {
    format!("site-{m}-{k}")
}

/// Issues `per_municipality` tablet accounts in each municipality.
pub async fn issue_sites(registry: &Registry, per_municipality: usize) {
    for m in MUNICIPALITIES {
        for k in 0..per_municipality {
            let site = Site { id: SiteId::parse(&format!("{m}{k:04}")).unwrap(), name: format!("会場{k}"), municipality: code(m) };
            registry.issue_account(&staff(code(m)), site, AccountId::parse(&site_account(m, k)).unwrap()).await.unwrap();
        }
    }
}

/// A random registration under `key`: a voucher of blocks `0..blocks` of either
/// municipality (one in twenty never uploaded), dose 1 to 3, a date in April–June 2021,
/// Pfizer or Moderna with a plausible lot.
pub fn random_registration(rng: &mut SplitMix64, key: &str, blocks: u64, people: u64) -> DoseRegistration {
    let m = MUNICIPALITIES[rng.below(2) as usize];
    let b = if rng.below(20) == 0 { 9999 } else { rng.below(blocks.max(1)) };
    let voucher = block_voucher(b, rng.below(people.max(1)));
    let dose = 1 + rng.below(3) as u8;
    let date = random_date(rng);
    let (product, lot) = random_product(rng);
    DoseRegistration {
        ocr_line: format!("1{dose}{m}{voucher}"),
        dose_number: None,
        date_given: date,
        product,
        lot,
        doctor: "接種医師".into(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        lot_expiry: None,
    }
}

fn random_date(rng: &mut SplitMix64) -> NaiveDate {
    day("2021-04-01") + Duration::days(rng.below(91) as i64)
}

fn random_product(rng: &mut SplitMix64) -> (String, String) {
    if rng.below(2) == 0 {
        ("pfizer".into(), format!("FA{:04}", rng.below(10_000)))
    } else {
        ("moderna".into(), format!("{:07}", rng.below(10_000_000)))
    }
}

/// A random correction: a new lot, date or dose number (one of them, or all three).
pub fn random_correction(rng: &mut SplitMix64, current: &DoseRecord) -> DoseCorrection {
    let mut c = DoseCorrection::default();
    let what = rng.below(4);
    if what == 0 || what == 3 {
        c.lot = Some(if current.details().product.as_str() == "pfizer" {
            format!("FB{:04}", rng.below(10_000))
        } else {
            format!("{:07}", rng.below(10_000_000))
        });
    }
    if what == 1 || what == 3 {
        c.date_given = Some(random_date(rng));
    }
    if what == 2 || what == 3 {
        c.dose_number = Some(1 + rng.below(3) as u8);
    }
    c
}

/// What the agreement check found (it panics on any disagreement).
#[derive(Debug, Default)]
pub struct Agreement {
    /// Doses stored (voided ones included).
    pub doses: usize,
    /// Doses not voided: each counted once in the statistics.
    pub active: u64,
    /// Doses with more than one version (corrected or voided).
    pub changed: usize,
    /// Persons in the ledger exports.
    pub ledger_rows: u64,
    /// Dose blocks filled in the ledger exports.
    pub ledger_doses: u64,
    /// Unmatched doses whose voucher has an uploaded resident (left for `reconcile`).
    pub stranded: usize,
}

/// Reads every dose of the traffic's municipalities and checks that the statistics
/// counters equal a recount of them and that each ledger export equals the ledger
/// computed from them. Returns the doses by id.
pub async fn check(registry: &Registry) -> (HashMap<DoseId, DoseRecord>, Agreement) {
    let store = registry.store();
    let mut all = HashMap::new();
    let mut recount: BTreeMap<StatsKey, u64> = BTreeMap::new();
    let mut agreement = Agreement::default();
    for m in MUNICIPALITIES.map(code) {
        let mut doses: Vec<DoseRecord> = Vec::new();
        store
            .scan_doses(m, DoseScan::ByVoucher, &mut |d| {
                doses.push(d);
                Ok(())
            })
            .await
            .unwrap();
        let mut residents: HashMap<PersonRef, Resident> = HashMap::new();
        store
            .scan_residents(m, &mut |r| {
                residents.insert(r.person.clone(), r);
                Ok(())
            })
            .await
            .unwrap();
        for d in &doses {
            let resident = d.matched.as_ref().map(|p| residents.get(p).unwrap_or_else(|| panic!("dose {} matched to a missing {p}", d.id)));
            if let Some(k) = key_for(d, resident) {
                *recount.entry(k).or_default() += 1;
                agreement.active += 1;
            }
            if d.matched.is_none() && store.resident_by_voucher(d.voucher).await.unwrap().is_some() {
                agreement.stranded += 1;
            }
            agreement.changed += usize::from(d.versions.len() > 1);
        }
        let (rows, blocks) = expected_ledger(&doses, m);
        let mut out = Vec::new();
        let options = LedgerOptions { encoding: OutputEncoding::Utf8, since: None, no_header: false };
        let export = registry.export_ledger(&staff(m), m, &options, &mut out).await.unwrap();
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(out.as_slice());
        assert_eq!(reader.headers().unwrap().len(), 1 + 8 * blocks, "{m}: the ledger has a block for every dose number");
        let mut exported: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
        exported.sort();
        assert_eq!(exported.len(), rows.len(), "{m}: ledger rows");
        for (got, want) in exported.iter().zip(&rows) {
            assert_eq!(got, want, "{m}: a ledger row differs from the doses");
        }
        assert_eq!(export.rows, rows.len() as u64);
        agreement.ledger_rows += export.rows;
        agreement.ledger_doses += export.doses;
        agreement.doses += doses.len();
        all.extend(doses.into_iter().map(|d| (d.id, d)));
    }
    let reader = Actor::StatisticsReader { scope: StatsScope::National };
    let counters: BTreeMap<StatsKey, u64> =
        registry.statistics(&reader, StatsQuery::National).await.unwrap().into_iter().map(|r| (r.key, r.count)).collect();
    if counters != recount {
        let differ: Vec<_> = recount
            .keys()
            .chain(counters.keys())
            .filter(|k| counters.get(*k) != recount.get(*k))
            .map(|k| (k.clone(), counters.get(k).copied(), recount.get(k).copied()))
            .collect();
        panic!("the statistics counters disagree with a recount of the doses (key, counter, recount): {differ:#?}");
    }
    (all, agreement)
}

/// The ledger rows (sorted) and dose blocks a municipality's doses make, by the rule of
/// DESIGN §4: a row per resident with an active dose, block k holding the earliest
/// registered active dose number k.
fn expected_ledger(doses: &[DoseRecord], m: MunicipalityCode) -> (Vec<Vec<String>>, usize) {
    let active = || doses.iter().filter(|d| !d.is_voided());
    let blocks = usize::from(active().map(|d| d.details().dose_number).max().unwrap_or(0));
    let mut persons: BTreeMap<&str, Vec<&DoseRecord>> = BTreeMap::new();
    for d in active() {
        if let Some(p) = d.matched.as_ref().filter(|p| p.municipality == m) {
            persons.entry(p.addressee.as_str()).or_default().push(d);
        }
    }
    let mut rows: Vec<Vec<String>> = persons
        .into_iter()
        .map(|(addressee, mut ds)| {
            ds.sort_by_key(|d| (d.registered_at, d.id));
            let mut row = vec![addressee.to_owned()];
            for k in 1..=blocks {
                match ds.iter().find(|d| usize::from(d.details().dose_number) == k) {
                    Some(d) => row.extend(ledger_block(d)),
                    None => row.extend(std::iter::repeat_n(String::new(), 8)),
                }
            }
            row
        })
        .collect();
    rows.sort();
    (rows, blocks)
}

fn ledger_block(d: &DoseRecord) -> [String; 8] {
    let x = d.details();
    let mut date = String::new();
    push_ledger_date(&mut date, x.date_given);
    [
        ledger_timestamp(d.registered_at),
        date,
        d.voucher.number.as_str().to_owned(),
        x.administering_municipality.as_str().to_owned(),
        x.site_name.clone(),
        x.doctor.clone(),
        x.maker.clone(),
        x.lot.clone(),
    ]
}

/// The voucher of a registration's OCR line (as the traffic writes them).
pub fn voucher_of(reg: &DoseRegistration) -> VoucherRef {
    OcrLine::parse(&reg.ocr_line).unwrap().voucher
}
