//! Sync-batch cases of the store conformance suite (feature `testing`): a tablet's batch
//! applied through [`Registry::apply_sync_batch`](crate::service::Registry::apply_sync_batch) on the store under test — twice, partly, out
//! of order — with nothing doubled or lost, and conflicting offline edits in the review queue.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};

use crate::Error;
use crate::dose::DoseCorrection;
use crate::finding::FindingKind;
use crate::ids::{AccountId, DoseId, IdempotencyKey};
use crate::service::Registry;
use crate::stats::StatsQuery;
use crate::store::DynStore;
use crate::sync::{EntryStatus, SyncBatch, SyncEntry, SyncReply};
use crate::testing::CHIYODA;
use crate::testing_service::{code, date, morning, registration, setup, site_actor, staff};

fn at() -> DateTime<Utc> {
    morning("2021-07-01")
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

fn batch(id: &str, entries: Vec<SyncEntry>) -> SyncBatch {
    SyncBatch::new(id, AccountId::parse("venue").unwrap(), at(), entries)
}

fn statuses(reply: &SyncReply) -> Vec<EntryStatus> {
    reply.entries.iter().map(|e| e.status).collect()
}

async fn total(registry: &Registry) -> u64 {
    registry.statistics(&staff(CHIYODA), StatsQuery::Municipality(code(CHIYODA))).await.unwrap().iter().map(|r| r.count).sum()
}

async fn open_kinds(registry: &Registry, key: &str) -> Vec<FindingKind> {
    let mut k: Vec<FindingKind> = registry
        .store()
        .findings_for_dose(DoseId::for_key(&self::key(key)))
        .await
        .unwrap()
        .iter()
        .filter(|f| f.open)
        .map(|f| f.kind)
        .collect();
    k.sort();
    k
}

fn lot_fix(lot: &str) -> DoseCorrection {
    DoseCorrection { lot: Some(lot.into()), ..DoseCorrection::default() }
}

/// A batch applied, applied again, partly and out of order: every dose once, every version once.
pub async fn sync_batch_applied_twice_partly_and_out_of_order(store: DynStore) {
    let (registry, _clock) = setup(store).await;
    let venue = site_actor("venue");
    let entries = vec![
        SyncEntry::register(registration("t.1", 1, CHIYODA, "0000000001", "2021-07-01", "pfizer", "FA5765"), at()),
        SyncEntry::register(registration("t.2", 1, CHIYODA, "0000099999", "2021-07-01", "pfizer", "FA5765"), at()),
        SyncEntry::register(registration("t.3", 1, CHIYODA, "0000000002", "2021-07-02", "pfizer", "FA5765"), at()),
        // Version 3 before version 2 in the batch: applied in version order.
        SyncEntry::void(key("t.2"), 3, "wrong voucher", at()),
        SyncEntry::correct(key("t.2"), 2, lot_fix("FA5766"), "lot misread", at()),
        SyncEntry::correct(key("t.1"), 2, lot_fix("FA5767"), "lot misread", at()),
        // Its registration was refused (a future date): so is the change.
        SyncEntry::correct(key("t.3"), 2, lot_fix("FA5768"), "lot misread", at()),
    ];
    let first = registry.apply_sync_batch(&venue, &batch("b1", entries.clone())).await.unwrap();
    use EntryStatus::*;
    assert_eq!(statuses(&first), vec![Applied, Applied, Rejected, Applied, Applied, Applied, Rejected], "{first:?}");
    assert_eq!(first.entries[2].rejected_as, Some(FindingKind::FutureDate));
    assert_eq!(first.entries[0].matched, Some(true));
    assert_eq!(first.entries[1].matched, Some(false));
    assert_eq!(first.entries.iter().map(|e| e.entry_id.as_str()).collect::<Vec<_>>()[5], "t.1@v2");
    let doses_after_first = registry.todays_doses(&venue).await.unwrap();
    assert_eq!(doses_after_first.len(), 2);
    assert_eq!(total(&registry).await, 1, "the voided dose is not counted");

    // The same batch again (the reply was lost): nothing new.
    let again = registry.apply_sync_batch(&venue, &batch("b1", entries.clone())).await.unwrap();
    assert_eq!(statuses(&again), vec![Replayed, Replayed, Rejected, Replayed, Replayed, Replayed, Rejected], "{again:?}");
    let doses = registry.todays_doses(&venue).await.unwrap();
    assert_eq!(doses, doses_after_first, "nothing doubled");
    let t1 = registry.dose(&venue, DoseId::for_key(&key("t.1"))).await.unwrap();
    assert_eq!((t1.versions.len(), t1.details().lot.as_str()), (2, "FA5767"));
    let t2 = registry.dose(&venue, DoseId::for_key(&key("t.2"))).await.unwrap();
    assert_eq!((t2.versions.len(), t2.is_voided()), (3, true));

    // Part of it, in another batch.
    let part = registry.apply_sync_batch(&venue, &batch("b2", entries[5..6].to_vec())).await.unwrap();
    assert_eq!(statuses(&part), vec![Replayed]);

    // A change whose registration has not arrived: retry; then both arrive.
    let early = vec![SyncEntry::correct(key("t.4"), 2, lot_fix("FA5769"), "lot misread", at())];
    let reply = registry.apply_sync_batch(&venue, &batch("b3", early.clone())).await.unwrap();
    assert_eq!(statuses(&reply), vec![Retry]);
    assert!(!reply.entries[0].status.is_final());
    let mut late = early;
    late.insert(0, SyncEntry::register(registration("t.4", 1, CHIYODA, "0000000003", "2021-07-01", "pfizer", "FA5765"), at()));
    let reply = registry.apply_sync_batch(&venue, &batch("b4", late)).await.unwrap();
    assert_eq!(statuses(&reply), vec![Applied, Applied]);
    // A later version before the one it follows: retry.
    let gap = vec![SyncEntry::correct(key("t.4"), 4, lot_fix("FA5770"), "again", at())];
    assert_eq!(statuses(&registry.apply_sync_batch(&venue, &batch("b5", gap)).await.unwrap()), vec![Retry]);

    // Replies and batches read back from JSON.
    assert_eq!(SyncReply::from_json(&reply.to_json()).unwrap(), reply);
}

/// Offline edits that cannot be applied as made go to the review queue, never over what
/// someone else wrote, and stay there when the person is re-assessed.
pub async fn sync_conflicts_go_to_the_review_queue(store: DynStore) {
    let (registry, clock) = setup(store).await;
    let venue = site_actor("venue");
    let reg = SyncEntry::register(registration("c.1", 1, CHIYODA, "0000000001", "2021-07-01", "pfizer", "FA5765"), at());
    registry.apply_sync_batch(&venue, &batch("b1", vec![reg])).await.unwrap();
    // Staff correct the dose first (version 2); the tablet's own version 2 arrives after.
    let id = DoseId::for_key(&key("c.1"));
    registry.correct(&staff(CHIYODA), id, &lot_fix("FA0001"), "checked the vial").await.unwrap();
    let tablet = vec![SyncEntry::correct(key("c.1"), 2, lot_fix("FA5766"), "lot misread", at())];
    let reply = registry.apply_sync_batch(&venue, &batch("b2", tablet.clone())).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict]);
    let dose = registry.dose(&staff(CHIYODA), id).await.unwrap();
    assert_eq!(dose.details().lot, "FA0001", "never last-write-wins");
    let queue = registry.findings(&staff(CHIYODA), code(CHIYODA), true).await.unwrap();
    let conflicts: Vec<_> = queue.iter().filter(|f| f.kind == FindingKind::SyncConflict).collect();
    assert_eq!(conflicts.len(), 1);
    assert!(conflicts[0].detail.contains("lot FA5766"), "{}", conflicts[0].detail);
    // Sent again: the same answer, one finding.
    let reply = registry.apply_sync_batch(&venue, &batch("b2", tablet)).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict]);
    assert_eq!(registry.findings(&staff(CHIYODA), code(CHIYODA), true).await.unwrap().len(), queue.len());
    // Re-assessing the person (another correction) keeps it open.
    registry.correct(&staff(CHIYODA), id, &lot_fix("FA0002"), "checked again").await.unwrap();
    assert!(open_kinds(&registry, "c.1").await.contains(&FindingKind::SyncConflict));

    // A change that arrives after the site's day is over is queued too, not dropped.
    let reg = SyncEntry::register(registration("c.2", 1, CHIYODA, "0000000002", "2021-07-01", "pfizer", "FA5765"), at());
    registry.apply_sync_batch(&venue, &batch("b3", vec![reg])).await.unwrap();
    clock.advance(Duration::days(1));
    let late = vec![SyncEntry::correct(key("c.2"), 2, lot_fix("FA5766"), "lot misread", at())];
    let reply = registry.apply_sync_batch(&venue, &batch("b4", late)).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict]);
    assert_eq!(open_kinds(&registry, "c.2").await, vec![FindingKind::SyncConflict]);

    // Only the batch's own account applies it.
    let err = registry.apply_sync_batch(&site_actor("clinic"), &batch("b5", vec![])).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    let err = registry.apply_sync_batch(&staff(CHIYODA), &batch("b5", vec![])).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err}");
    // A revoked account's batch is refused whole.
    let reg = SyncEntry::register(registration("c.3", 1, CHIYODA, "0000000003", "2021-07-02", "pfizer", "FA5765"), at());
    registry.revoke_account(&staff(CHIYODA), &AccountId::parse("venue").unwrap()).await.unwrap();
    assert!(matches!(registry.apply_sync_batch(&venue, &batch("b6", vec![reg])).await, Err(Error::PermissionDenied { .. })));
}

/// Found by fuzzing (fuzz/ sync_batch): two conflicting changes of one dose kept only the
/// last in the review queue (one finding per dose and kind, overwritten), and each time the
/// batch was sent again both were written anew, the audit trail growing. Now both stay
/// listed in the one finding, and sending the batch again writes nothing.
pub async fn sync_conflicts_of_one_dose_all_stay_queued_and_replay_writes_nothing(store: DynStore) {
    let (registry, _clock) = setup(store).await;
    let venue = site_actor("venue");
    let reg = SyncEntry::register(registration("m.1", 1, CHIYODA, "0000000001", "2021-07-01", "pfizer", "FA5765"), at());
    registry.apply_sync_batch(&venue, &batch("b1", vec![reg])).await.unwrap();
    let id = DoseId::for_key(&key("m.1"));
    registry.correct(&staff(CHIYODA), id, &lot_fix("FA0001"), "checked the vial").await.unwrap();
    let tablet = vec![
        SyncEntry::correct(key("m.1"), 2, lot_fix("FA5766"), "lot misread", at()),
        SyncEntry::correct(key("m.1"), 2, lot_fix("FA5767"), "lot misread again", at()),
    ];
    let reply = registry.apply_sync_batch(&venue, &batch("b2", tablet.clone())).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict, EntryStatus::Conflict]);
    let queued = |findings: Vec<crate::finding::Finding>| -> Vec<String> {
        findings.into_iter().filter(|f| f.kind == FindingKind::SyncConflict && f.open).map(|f| f.detail).collect()
    };
    let first = queued(registry.findings(&staff(CHIYODA), code(CHIYODA), true).await.unwrap());
    assert_eq!(first.len(), 1);
    assert!(first[0].contains("lot FA5766") && first[0].contains("lot FA5767"), "{}", first[0]);
    let audit = registry.audit(&staff(CHIYODA), code(CHIYODA)).await.unwrap();
    let reply = registry.apply_sync_batch(&venue, &batch("b2", tablet)).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict, EntryStatus::Conflict]);
    assert_eq!(queued(registry.findings(&staff(CHIYODA), code(CHIYODA), true).await.unwrap()), first);
    assert_eq!(registry.audit(&staff(CHIYODA), code(CHIYODA)).await.unwrap(), audit, "sent again, nothing written");

    // A change that conflicts for another reason when sent again (a later entry of its batch
    // wrote its version meanwhile) is the same change: nothing written. Likewise after a
    // void closed the finding.
    let reg = SyncEntry::register(registration("m.2", 1, CHIYODA, "0000000002", "2021-07-01", "pfizer", "FA5765"), at());
    registry.apply_sync_batch(&venue, &batch("b3", vec![reg])).await.unwrap();
    let tablet = vec![
        SyncEntry::correct(key("m.2"), 2, lot_fix(""), "first try", at()),
        SyncEntry::correct(key("m.2"), 2, lot_fix("FA5766"), "second try", at()),
    ];
    let reply = registry.apply_sync_batch(&venue, &batch("b4", tablet.clone())).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict, EntryStatus::Applied]);
    registry.void(&staff(CHIYODA), DoseId::for_key(&key("m.2")), "wrong person").await.unwrap();
    let findings = registry.findings(&staff(CHIYODA), code(CHIYODA), false).await.unwrap();
    let audit = registry.audit(&staff(CHIYODA), code(CHIYODA)).await.unwrap();
    let reply = registry.apply_sync_batch(&venue, &batch("b4", tablet)).await.unwrap();
    assert_eq!(statuses(&reply), vec![EntryStatus::Conflict, EntryStatus::Replayed]);
    assert_eq!(registry.findings(&staff(CHIYODA), code(CHIYODA), false).await.unwrap(), findings);
    assert_eq!(registry.audit(&staff(CHIYODA), code(CHIYODA)).await.unwrap(), audit, "sent again, nothing written");
}

/// A lot used after its known expiry is a must-fix finding; correcting the expiry closes it.
pub async fn expired_lot_is_a_finding(store: DynStore) {
    let (registry, _clock) = setup(store).await;
    let venue = site_actor("venue");
    let mut reg = registration("e.1", 1, CHIYODA, "0000000001", "2021-07-01", "pfizer", "FA5765");
    reg.lot_expiry = Some(date("2021-06-30"));
    let outcome = registry.register(&venue, &reg).await.unwrap();
    let kinds: Vec<FindingKind> = outcome.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, vec![FindingKind::ExpiredLot]);
    assert_eq!(outcome.dose.details().lot_expiry, Some(date("2021-06-30")));
    let fix = DoseCorrection { lot_expiry: Some(date("2021-09-30")), ..DoseCorrection::default() };
    let fixed = registry.correct(&venue, outcome.dose.id, &fix, "expiry extended by the maker").await.unwrap();
    assert!(fixed.findings.is_empty(), "{:?}", fixed.findings);
    // Not known: no finding.
    let reg = registration("e.2", 1, CHIYODA, "0000000002", "2021-07-01", "pfizer", "FA5765");
    assert!(registry.register(&venue, &reg).await.unwrap().findings.is_empty());
}
