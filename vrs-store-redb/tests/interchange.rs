//! FHIR R4 and HL7 v2 exports on the embedded store: a round trip through a FHIR Bundle
//! into a fresh store gives the same doses; VXU messages carry every dose with escaping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use vrs_core::dose::{DoseCorrection, DoseRecord};
use vrs_core::ids::{AddresseeNumber, PersonRef, VoucherNumber, VoucherRef};
use vrs_core::resident::PersonalText;
use vrs_core::store::{DoseScan, DynStore};
use vrs_core::testing_service::{CHIYODA, SHINJUKU, VecSource, code, date, registration, resident, setup, site_actor, staff};
use vrs_store_redb::RedbStore;

fn store() -> DynStore {
    Arc::new(RedbStore::in_memory().unwrap())
}

/// What a dose states, without where it was registered from.
fn essence(d: &DoseRecord) -> (VoucherRef, u8, chrono::NaiveDate, String, String, String, bool) {
    let x = d.details();
    (d.voucher, x.dose_number, x.date_given, x.product.to_string(), x.lot.clone(), x.doctor.clone(), d.is_voided())
}

async fn doses(store: &DynStore, m: &str) -> Vec<(VoucherRef, u8, chrono::NaiveDate, String, String, String, bool)> {
    let mut v = Vec::new();
    store
        .scan_doses(code(m), DoseScan::ByVoucher, &mut |d: DoseRecord| {
            v.push(essence(&d));
            Ok(())
        })
        .await
        .unwrap();
    v.sort();
    v
}

#[tokio::test]
async fn fhir_round_trip_gives_the_same_doses() {
    let (a, _) = setup(store()).await;
    let venue = site_actor("venue");
    a.register(&venue, &registration("f1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    let early = a.register(&venue, &registration("f2", 2, CHIYODA, "0000000001", "2021-06-10", "pfizer", "FA5766")).await.unwrap();
    a.correct(&staff(CHIYODA), early.dose.id, &DoseCorrection { date_given: Some(date("2021-06-22")), ..Default::default() }, "misread")
        .await
        .unwrap();
    let wrong = a.register(&venue, &registration("f3", 1, CHIYODA, "0000000002", "2021-06-01", "moderna", "3004734")).await.unwrap();
    a.void(&staff(CHIYODA), wrong.dose.id, "wrong voucher").await.unwrap();
    a.register(&venue, &registration("f4", 1, CHIYODA, "0000000088", "2021-06-03", "pfizer", "FB1234")).await.unwrap();

    let bundle = a.export_fhir(&staff(CHIYODA), code(CHIYODA), None).await.unwrap();
    let text = serde_json::to_string(&bundle).unwrap();
    let kinds: Vec<&str> = bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"]["resourceType"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Immunization").count(), 4);
    assert_eq!(kinds.iter().filter(|k| **k == "Patient").count(), 2);

    let b_store = store();
    let (b, _) = setup(b_store.clone()).await;
    let report = b.import_fhir(&venue, &text).await.unwrap();
    assert_eq!((report.registered, report.voided), (4, 1), "{report:?}");
    assert!(report.rejected.is_empty());
    assert_eq!(doses(a.store(), CHIYODA).await, doses(&b_store, CHIYODA).await);
    // Importing again stores nothing new.
    let again = b.import_fhir(&venue, &text).await.unwrap();
    assert_eq!((again.registered, again.replayed), (0, 4));
    assert_eq!(doses(a.store(), CHIYODA).await, doses(&b_store, CHIYODA).await);
}

#[tokio::test]
async fn hl7_messages_escape_delimiters_and_mark_voids() {
    let s = store();
    let (reg, _) = setup(s.clone()).await;
    let mut tricky = resident(SHINJUKU, "700", "0000000700", "1960-01-01");
    tricky.name = PersonalText("山田|太郎^&~\\".into());
    reg.import_residents(&staff(SHINJUKU), code(SHINJUKU), VecSource::new(vec![tricky], true)).await.unwrap();
    let clinic = site_actor("clinic");
    let d = reg.register(&clinic, &registration("h1", 1, SHINJUKU, "0000000700", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    reg.void(&staff(SHINJUKU), d.dose.id, "test").await.unwrap();
    reg.register(&clinic, &registration("h2", 1, SHINJUKU, "0000000700", "2021-06-02", "moderna", "3004734")).await.unwrap();
    let mut out = Vec::new();
    let n = reg
        .export_hl7(
            &staff(SHINJUKU),
            code(SHINJUKU),
            Some(&PersonRef { municipality: code(SHINJUKU), addressee: AddresseeNumber::parse("700").unwrap() }),
            &mut out,
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let text = String::from_utf8(out).unwrap();
    let messages: Vec<&str> = text.lines().collect();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        let segments: Vec<&str> = m.split('\r').filter(|s| !s.is_empty()).collect();
        let names: Vec<&str> = segments.iter().map(|s| &s[..3]).collect();
        assert_eq!(names, ["MSH", "PID", "ORC", "RXA", "RXR"]);
        assert!(segments[1].contains("山田\\F\\太郎\\S\\\\T\\\\R\\\\E\\"), "{}", segments[1]);
        let rxa: Vec<&str> = segments[3].split('|').collect();
        assert_eq!(rxa.len(), 22, "RXA-1..21");
    }
    let actions: BTreeMap<&str, &str> = messages
        .iter()
        .map(|m| {
            let rxa = m.split('\r').find(|s| s.starts_with("RXA")).unwrap();
            let f: Vec<&str> = rxa.split('|').collect();
            (f[5], f[21])
        })
        .collect();
    assert_eq!(actions.get("208^コミナティ筋注^CVX"), Some(&"D"));
    assert!(actions.values().any(|a| *a == "A"));
    // Voucher numbers stay 10 digits with their zeros.
    assert!(text.contains("0000000700^^^VRS131041^VN"));
    let _ = VoucherNumber::parse("0000000700").unwrap();
}
