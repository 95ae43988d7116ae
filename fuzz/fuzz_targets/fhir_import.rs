//! FHIR R4 Bundles of Immunizations to import. The first byte chooses: raw JSON text (the
//! rest of the input), or a Bundle built from structured input (ids, statuses, vouchers,
//! dose numbers, dates, product codes or CVX codes, lots, doctors).
//!
//! Properties: every Immunization read is registered, replayed or rejected; importing the
//! Bundle again stores nothing new; and import → export → import into a fresh store gives
//! the same doses (voucher, dose number, date, product, lot, doctor, voided).
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use vrs_core::dose::DoseRecord;
use vrs_core::fhir::read_bundle;
use vrs_core::ids::{MunicipalityCode, OcrLine, VoucherRef};
use vrs_core::service::Registry;
use vrs_core::store::DoseScan;
use vrs_core::testing_service::{site_actor, staff};
use vrs_core::vaccine::Catalogue;
use vrs_fuzz::{block_on, fresh_registry, municipalities, snapshot};

const MUNICIPALITIES: [&str; 4] = ["131016", "131041", "011002", "131017"];
const VOUCHERS: [&str; 4] = ["0000000001", "0000000002", "0000000003", "0000099999"];
const PRODUCTS: [&str; 5] = ["pfizer", "moderna", "novavax", "pfizer-xbb", "unknown"];
const CVX: [&str; 4] = ["208", "207", "211", "999"];

#[derive(Debug, Arbitrary)]
struct Immunization {
    id: u8,
    voided: bool,
    municipality: u8,
    voucher: u8,
    dose: u8,
    /// Days from 2021-02-01 (the store's clock is 2021-07-01).
    day: u8,
    /// A product code, else a CVX code.
    product: Result<u8, u8>,
    lot: String,
    doctor: String,
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

fn built(items: &[Immunization]) -> String {
    let entries: Vec<Value> = items
        .iter()
        .map(|i| {
            let m = pick(&MUNICIPALITIES, i.municipality);
            let coding = match i.product {
                Ok(p) => json!({"system": "urn:jp:vrs:vaccine-product", "code": pick(&PRODUCTS, p)}),
                Err(c) => json!({"system": "http://hl7.org/fhir/sid/cvx", "code": pick(&CVX, c)}),
            };
            let date = chrono::NaiveDate::from_ymd_opt(2021, 2, 1).unwrap() + chrono::Days::new(u64::from(i.day % 160));
            json!({"resource": {
                "resourceType": "Immunization",
                "id": format!("imm-{}", i.id % 8),
                "identifier": [{"system": format!("urn:jp:vrs:{m}:voucher-number"), "value": pick(&VOUCHERS, i.voucher)}],
                "status": if i.voided { "entered-in-error" } else { "completed" },
                "vaccineCode": {"coding": [coding]},
                "occurrenceDateTime": date.format("%Y-%m-%d").to_string(),
                "lotNumber": i.lot,
                "performer": [{"actor": {"display": i.doctor}}],
                "protocolApplied": [{"doseNumberPositiveInt": i.dose % 11}],
            }})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "collection", "entry": entries}).to_string()
}

type Essence = (VoucherRef, u8, chrono::NaiveDate, String, String, String, bool);

fn doses(registry: &Registry, areas: &BTreeSet<MunicipalityCode>) -> Vec<Essence> {
    let mut out = Vec::new();
    for &m in areas {
        block_on(registry.store().scan_doses(m, DoseScan::ByVoucher, &mut |d: DoseRecord| {
            let x = d.details();
            out.push((d.voucher, x.dose_number, x.date_given, x.product.to_string(), x.lot.clone(), x.doctor.clone(), d.is_voided()));
            Ok(())
        }))
        .unwrap();
    }
    out.sort();
    out
}

fn check(text: &str) {
    let Ok(items) = read_bundle(text, Catalogue::builtin()) else { return };
    if items.len() > 32 {
        return;
    }
    let areas = municipalities(items.iter().filter_map(|i| OcrLine::parse(&i.registration.ocr_line).ok()).map(|l| l.voucher.municipality));
    let venue = site_actor("venue");
    let a = fresh_registry();
    let first = block_on(a.import_fhir(&venue, text)).unwrap_or_else(|e| panic!("a Bundle that reads does not import: {e}"));
    assert_eq!(first.registered + first.replayed + first.rejected.len() as u64, items.len() as u64, "{first:?}");
    assert!(first.voided <= first.registered);
    let before = snapshot(&a, &areas);
    let again = block_on(a.import_fhir(&venue, text)).unwrap_or_else(|e| panic!("imported again: {e}"));
    assert_eq!(again.registered, 0, "{again:?}");
    assert_eq!(again.voided, 0, "{again:?}");
    // Every key used is replayed; an entry refused the first time is replayed when a later
    // entry of the Bundle registered its id (as registering them one by one would).
    assert!(again.replayed >= first.registered + first.replayed, "{first:?} then {again:?}");
    // (Why may differ: an id now registered is checked against its voucher first.)
    assert!(again.rejected.iter().all(|(id, _)| first.rejected.iter().any(|(was, _)| was == id)), "{first:?} then {again:?}");
    let after = snapshot(&a, &areas);
    assert!(after == before, "importing the Bundle again changed the store:\n{}", before.differences(&after));

    // Export each municipality's doses, import the exports into a fresh store: same doses.
    let b = fresh_registry();
    for &m in &areas {
        let bundle = block_on(a.export_fhir(&staff(m.as_str()), m, None)).unwrap();
        let exported = bundle.to_string();
        let report = block_on(b.import_fhir(&venue, &exported)).unwrap_or_else(|e| panic!("the export does not import: {e}\n{exported}"));
        assert!(report.rejected.is_empty(), "exported doses refused: {report:?}\n{exported}");
    }
    assert_eq!(doses(&a, &areas), doses(&b, &areas));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        check(&String::from_utf8_lossy(rest));
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(items) = Vec::<Immunization>::arbitrary(&mut u) else { return };
        check(&built(&items[..items.len().min(12)]));
    }
});
