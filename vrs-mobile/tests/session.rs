//! The tablet session through its Rust API (the same calls Kotlin and Swift make): offline
//! registration, today's list, corrections, batches applied to a server store,
//! acknowledgements, and crashes at the worst moments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_executor::block_on;
use vrs_core::access::{Actor, Site};
use vrs_core::ids::{AccountId, IdempotencyKey, MunicipalityCode, SiteId};
use vrs_core::service::{FixedClock, Registry};
use vrs_core::sync::{SyncBatch, SyncEntry};
use vrs_mobile::{CorrectionInput, EntryStatus, RegistrationInput, SiteAccount, TabletSession, VrsError};
use vrs_store_redb::RedbStore;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2021-07-01T09:00:00+09:00").unwrap().with_timezone(&Utc)
}

fn account() -> SiteAccount {
    SiteAccount {
        account_id: "tab-1".into(), site_id: "venue-1".into(), site_name: "区民会館".into(), municipality_code: "131016".into()
    }
}

fn open(dir: &Path) -> TabletSession {
    block_on(TabletSession::open(dir.to_owned(), account(), None, Arc::new(FixedClock::new(now())))).unwrap()
}

fn input(voucher: &str) -> RegistrationInput {
    RegistrationInput {
        ocr_line: format!("11131016{voucher}"),
        dose_number: None,
        date_given: String::new(),
        product: "pfizer".into(),
        lot: "FA5765".into(),
        lot_expiry: Some("2021-08-31".into()),
        doctor: "佐藤一郎".into(),
        idempotency_key: None,
    }
}

/// The server: its own store with the account issued by the municipality.
fn server() -> Registry {
    let registry = Registry::new(Arc::new(RedbStore::in_memory().unwrap()), Arc::new(FixedClock::new(now())));
    let staff = Actor::MunicipalStaff { municipality: MunicipalityCode::parse("131016").unwrap(), user: "admin".into() };
    let site =
        Site {
            id: SiteId::parse("venue-1").unwrap(), name: "区民会館".into(), municipality: MunicipalityCode::parse("131016").unwrap()
        };
    block_on(registry.issue_account(&staff, site, AccountId::parse("tab-1").unwrap())).unwrap();
    registry
}

fn apply(server: &Registry, json: &str) -> String {
    let batch = SyncBatch::from_json(json).unwrap();
    let actor = Actor::Site { account: batch.account.clone() };
    block_on(server.apply_sync_batch(&actor, &batch)).unwrap().to_json()
}

#[test]
fn offline_day_synced_twice_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = server();
    let (first_id, batch_json) = {
        let s = open(dir.path());
        let a = block_on(s.register(input("0000000001"))).unwrap();
        assert!(!a.replayed);
        assert_eq!(a.dose.findings.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(), ["unmatched"]);
        assert_eq!(a.dose.date_given, "2021-07-01");
        assert!(!a.dose.synced);
        block_on(s.register(input("0000000002"))).unwrap();
        // The same key again: replayed, nothing new to send.
        let again = RegistrationInput { idempotency_key: Some(a.dose.idempotency_key.clone()), ..input("0000000001") };
        assert!(block_on(s.register(again)).unwrap().replayed);
        let fixed = block_on(s.correct(
            a.dose.dose_id.clone(),
            CorrectionInput { lot: Some("FA5766".into()), ..CorrectionInput::default() },
            "lot misread".into(),
        ))
        .unwrap();
        assert_eq!((fixed.version, fixed.lot.as_str()), (2, "FA5766"));
        let today = block_on(s.today()).unwrap();
        assert_eq!(today.len(), 2);
        assert_eq!(block_on(s.pending_count()).unwrap(), 3);
        let batch = block_on(s.pending_batch(100)).unwrap().unwrap();
        assert_eq!(batch.entries, 3);
        (a.dose.dose_id, batch.json)
        // Dropped here without acknowledging: the reply never arrived.
    };
    let reply = apply(&server, &batch_json);
    let s = open(dir.path());
    let again = block_on(s.pending_batch(100)).unwrap().unwrap();
    let ids = |json: &str| SyncBatch::from_json(json).unwrap().entries.iter().map(|e| e.entry_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again.json), ids(&batch_json), "the same entries again, nothing lost");
    let second_reply = apply(&server, &again.json);
    let ack = block_on(s.acknowledge(again.batch_id.clone(), second_reply)).unwrap();
    assert_eq!((ack.replayed, ack.applied, ack.still_pending), (3, 0, 0), "{ack:?}");
    assert!(ack.entries.iter().all(|e| e.status == EntryStatus::Replayed));
    // The late reply to the first batch changes nothing; a reply to another batch is refused.
    let first_batch_id = SyncBatch::from_json(&batch_json).unwrap().batch_id;
    assert_eq!(block_on(s.acknowledge(first_batch_id.clone(), reply.clone())).unwrap().still_pending, 0);
    assert!(matches!(block_on(s.acknowledge("other".into(), reply)), Err(VrsError::InvalidInput { .. })));
    assert!(block_on(s.pending_batch(100)).unwrap().is_none());
    assert!(block_on(s.today()).unwrap().iter().all(|d| d.synced));
    // The server has each dose once, with its correction.
    let doses = block_on(server.todays_doses(&Actor::Site { account: AccountId::parse("tab-1").unwrap() })).unwrap();
    assert_eq!(doses.len(), 2);
    let first = doses.iter().find(|d| d.id.to_string() == first_id).unwrap();
    assert_eq!((first.versions.len(), first.details().lot.as_str()), (2, "FA5766"));
}

#[test]
fn a_crash_between_the_outbox_and_the_store_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path());
        let reg = vrs_core::dose::DoseRegistration {
            ocr_line: "111310160000000003".into(),
            dose_number: None,
            date_given: now().date_naive(),
            product: "pfizer".into(),
            lot: "FA5765".into(),
            doctor: "佐藤一郎".into(),
            idempotency_key: IdempotencyKey::parse("tab-1.crash.1").unwrap(),
            lot_expiry: None,
        };
        block_on(s.append_only_for_tests(SyncEntry::register(reg, now()))).unwrap();
        assert!(block_on(s.today()).unwrap().is_empty(), "not in the store yet");
    }
    let s = open(dir.path());
    let today = block_on(s.today()).unwrap();
    assert_eq!(today.len(), 1, "replayed into the store on open");
    assert_eq!(today[0].idempotency_key, "tab-1.crash.1");
    assert_eq!(block_on(s.pending_count()).unwrap(), 1);
}

#[test]
fn refusals_store_and_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let future = RegistrationInput { date_given: "2021-07-02".into(), ..input("0000000001") };
    assert!(matches!(block_on(s.register(future)), Err(VrsError::Rejected { finding, .. }) if finding == "future_date"));
    let bad = RegistrationInput { ocr_line: "11999999000000001".into(), ..input("0000000001") };
    assert!(block_on(s.register(bad)).is_err());
    let bad_date = RegistrationInput { date_given: "July 1st".into(), ..input("0000000001") };
    assert!(matches!(block_on(s.register(bad_date)), Err(VrsError::InvalidInput { .. })));
    assert_eq!(block_on(s.pending_count()).unwrap(), 0);
    assert!(block_on(s.today()).unwrap().is_empty());
    // Correcting what is not there, or with nothing to change.
    assert!(matches!(block_on(s.correct("00".repeat(16), CorrectionInput::default(), "x".into())), Err(VrsError::NotFound { .. })));
    let a = block_on(s.register(input("0000000001"))).unwrap();
    assert!(matches!(block_on(s.correct(a.dose.dose_id, CorrectionInput::default(), "x".into())), Err(VrsError::InvalidInput { .. })));
    assert_eq!(block_on(s.pending_count()).unwrap(), 1);
    // Another account on the same data directory is refused.
    drop(s);
    let other = SiteAccount { site_id: "venue-2".into(), ..account() };
    let err = block_on(TabletSession::open(dir.path().to_owned(), other, None, Arc::new(FixedClock::new(now())))).unwrap_err();
    assert!(matches!(err, VrsError::InvalidInput { .. }), "{err}");
}

#[test]
fn labels_and_vouchers_through_the_bindings() {
    let r = vrs_mobile::parse_voucher("１１ 13１8１6 OOOOO12345".replace("OOOOO", "0000O")).unwrap();
    assert_eq!(r.ocr_line, "111310160000012345");
    assert_eq!(r.municipality.name, "千代田区");
    assert!(r.repair.is_some());
    assert!(matches!(vrs_mobile::parse_voucher("0000012345".into()), Err(VrsError::BarcodeOnly { .. })));
    let c = vrs_mobile::confirm_voucher("111310160000012345".into(), "0000012345".into()).unwrap();
    assert_eq!((c.agreement, c.confidence), (vrs_mobile::Agreement::Agree, vrs_mobile::Confidence::Confirmed));
    let l = vrs_mobile::parse_vaccine_label("コミナティ筋注 ロット FA5765 有効期限 2021.06.30".into(), Some("2021-07-01".into())).unwrap();
    assert_eq!(l.product.as_deref(), Some("pfizer"));
    assert_eq!(l.findings[0].kind, "expired_lot");
    assert!(matches!(vrs_mobile::parse_vaccine_label("コミナティ筋注".into(), None), Err(VrsError::NoLot { .. })));
}
