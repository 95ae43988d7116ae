//! Tablet sync batches (versioned JSON). The first byte chooses: raw JSON text (the rest of
//! the input), or a batch built from structured input (registrations, corrections and voids
//! of a few doses, in any order, some refused) and sent as JSON.
//!
//! Properties: a batch that parses serializes and parses back equal; applied to a store
//! twice, the second time changes nothing (doses with every version, findings, counters,
//! audit) and applies no entry anew; replies read back from their JSON equal.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use chrono::{Days, NaiveDate, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use vrs_core::dose::{DoseCorrection, DoseRegistration};
use vrs_core::ids::{AccountId, IdempotencyKey, OcrLine};
use vrs_core::sync::{EntryStatus, SyncBatch, SyncChange, SyncEntry, SyncReply};
use vrs_core::testing_service::site_actor;
use vrs_fuzz::{block_on, fresh_registry, municipalities, snapshot};

const MUNICIPALITIES: [&str; 4] = ["131016", "131041", "011002", "131017"];
const VOUCHERS: [&str; 4] = ["0000000001", "0000000002", "0000000003", "0000099999"];
const PRODUCTS: [&str; 5] = ["pfizer", "moderna", "novavax", "pfizer-xbb", "unknown"];
const LOTS: [&str; 5] = ["FA5765", "3004734", "FB1234", "", "x"];
const REASONS: [&str; 3] = ["lot misread", "wrong voucher", ""];

#[derive(Debug, Arbitrary)]
enum Change {
    Register { key: u8, municipality: u8, voucher: u8, dose: u8, number: Option<u8>, day: u8, product: u8, lot: u8, expiry: Option<u8> },
    Correct { key: u8, version: u8, number: Option<u8>, day: Option<u8>, product: Option<u8>, lot: Option<u8>, reason: u8 },
    Void { key: u8, version: u8, reason: u8 },
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

/// Days around the store's clock (2021-07-01): some in the future, refused.
fn day(n: u8) -> NaiveDate {
    NaiveDate::from_ymd_opt(2021, 5, 1).unwrap() + Days::new(u64::from(n % 70))
}

fn key(k: u8) -> IdempotencyKey {
    IdempotencyKey::parse(&format!("t.{}", k % 6)).unwrap()
}

fn built(changes: Vec<Change>, clinic: bool) -> SyncBatch {
    let at = Utc.with_ymd_and_hms(2021, 7, 1, 1, 0, 0).unwrap();
    let entries = changes
        .into_iter()
        .map(|c| match c {
            Change::Register { key: k, municipality, voucher, dose, number, day: d, product, lot, expiry } => SyncEntry::register(
                DoseRegistration {
                    ocr_line: format!("1{}{}{}", dose % 10, pick(&MUNICIPALITIES, municipality), pick(&VOUCHERS, voucher)),
                    dose_number: number.map(|n| n % 10),
                    date_given: day(d),
                    product: pick(&PRODUCTS, product).into(),
                    lot: pick(&LOTS, lot).into(),
                    doctor: "佐藤一郎".into(),
                    idempotency_key: key(k),
                    lot_expiry: expiry.map(day),
                },
                at,
            ),
            Change::Correct { key: k, version, number, day: d, product, lot, reason } => {
                let correction = DoseCorrection {
                    dose_number: number.map(|n| n % 10),
                    date_given: d.map(day),
                    product: product.map(|p| pick(&PRODUCTS, p).into()),
                    lot: lot.map(|l| pick(&LOTS, l).into()),
                    ..DoseCorrection::default()
                };
                SyncEntry::correct(key(k), u32::from(version % 5), correction, pick(&REASONS, reason), at)
            }
            Change::Void { key: k, version, reason } => SyncEntry::void(key(k), u32::from(version % 5), pick(&REASONS, reason), at),
        })
        .collect();
    let account = if clinic { "clinic" } else { "venue" };
    SyncBatch::new("fuzz", AccountId::parse(account).unwrap(), at, entries)
}

fn check(batch: &SyncBatch) {
    let json = batch.to_json();
    let back = SyncBatch::from_json(&json).unwrap_or_else(|e| panic!("written, the batch does not read back: {e}\n{json}"));
    assert_eq!(&back, batch, "{json}");

    let registry = fresh_registry();
    let actor = site_actor(batch.account.as_str());
    let touched = batch.entries.iter().filter_map(|e| match &e.change {
        SyncChange::Register { registration } => OcrLine::parse(&registration.ocr_line).ok().map(|l| l.voucher.municipality),
        _ => None,
    });
    let areas = municipalities(touched);
    let first = block_on(registry.apply_sync_batch(&actor, &back));
    let after_first = snapshot(&registry, &areas);
    let second = block_on(registry.apply_sync_batch(&actor, &back));
    let after_second = snapshot(&registry, &areas);
    assert!(
        after_first == after_second,
        "the second application changed the store:\n{}\nreplies: {first:?}\n{second:?}",
        after_first.differences(&after_second)
    );
    match (first, second) {
        (Ok(first), Ok(second)) => {
            assert_eq!(first.entries.len(), batch.entries.len());
            assert_eq!(second.entries.len(), batch.entries.len());
            for (a, b) in first.entries.iter().zip(&second.entries) {
                assert_eq!(a.entry_id, b.entry_id);
                assert_ne!(b.status, EntryStatus::Applied, "applied again: {a:?} then {b:?}");
            }
            for reply in [first, second] {
                assert_eq!(SyncReply::from_json(&reply.to_json()).unwrap(), reply);
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("the same batch answered differently: {a:?} then {b:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        if let Ok(batch) = SyncBatch::from_json(&String::from_utf8_lossy(rest))
            && batch.entries.len() <= 64
        {
            check(&batch);
        }
    } else {
        let mut u = Unstructured::new(rest);
        let Ok(changes) = Vec::<Change>::arbitrary(&mut u) else { return };
        check(&built(changes.into_iter().take(24).collect(), mode % 4 == 3));
    }
});
