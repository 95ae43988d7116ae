//! The vrs store conformance suite on redb, plus what only a file store can show.

use std::sync::Arc;

use vrs_core::Error;
use vrs_core::finding::FindingKind;
use vrs_core::stats::StatsQuery;
use vrs_core::store::{ChangeSet, DoseScan, DoseSlot, DynStore};
use vrs_core::testing::*;
use vrs_store_redb::RedbStore;

vrs_core::store_conformance_tests!(async { RedbStore::in_memory().unwrap() });

/// Everything written to a file store is there after closing and reopening it, and the
/// file passes redb's integrity check.
#[tokio::test]
async fn reopened_file_store_sees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vrs.redb");
    let r = moved_in(CHIYODA, "1", "0000000001", voucher(SAPPORO, "0000000099"));
    let d = dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T16:00:00Z", "venue-1");
    let f = finding(&d, FindingKind::LotImplausible, true);
    let acc = account("tablet-1", "venue-1", CHIYODA);
    let key = stats_key(CHIYODA, "2021-06-02", 1);
    let ev = event(CHIYODA, "register", "a");
    let seq = {
        let store: DynStore = Arc::new(RedbStore::open(&path).unwrap());
        import(&store, vec![r.clone()], 1, 0).await;
        let change = ChangeSet {
            new_doses: vec![d.clone()],
            claim_slots: vec![(DoseSlot { voucher: d.voucher, dose_number: 1 }, d.id)],
            findings: vec![f.clone()],
            counters: vec![(key.clone(), 1)],
            accounts: vec![acc.clone()],
            audit: vec![ev.clone()],
            ..ChangeSet::default()
        };
        store.apply(vec![change]).await.unwrap().seq
    };

    let mut reopened = RedbStore::open(&path).unwrap();
    assert!(reopened.check_integrity().unwrap(), "the file is intact");
    let store: DynStore = Arc::new(reopened);
    assert_eq!(store.resident(&r.person).await.unwrap(), Some(r.clone()));
    assert_eq!(store.resident_by_voucher(r.voucher_ref()).await.unwrap(), Some(r.clone()));
    assert_eq!(store.residents_by_previous_voucher(voucher(SAPPORO, "0000000099")).await.unwrap(), vec![r.clone()]);
    assert_eq!(store.moved_in_residents(code(CHIYODA)).await.unwrap(), vec![r]);
    let stored = store.dose(d.id).await.unwrap().unwrap();
    assert_eq!(stored.seq, seq);
    assert_eq!(stored, vrs_core::dose::DoseRecord { seq, ..d.clone() });
    assert_eq!(store.unmatched_doses(code(CHIYODA)).await.unwrap(), vec![stored.clone()]);
    assert_eq!(store.doses_by_site(&stored.details().site, day("2021-06-02")).await.unwrap(), vec![stored.clone()]);
    assert_eq!(scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await, (vec![stored.clone()], seq));
    assert_eq!(store.findings(code(CHIYODA), true).await.unwrap(), vec![f]);
    assert_eq!(store.accounts(code(CHIYODA)).await.unwrap(), vec![acc]);
    assert_eq!(store.statistics(StatsQuery::National).await.unwrap().len(), 1);
    assert_eq!(store.audit(code(CHIYODA)).await.unwrap(), vec![ev]);
    // The slot and the sequence survive too.
    let other = dose("b", voucher(CHIYODA, "0000000001"), 1, "2021-06-02T01:00:00Z", "venue-1");
    assert_conflict(
        store
            .apply(vec![ChangeSet {
                new_doses: vec![other.clone()],
                claim_slots: vec![(DoseSlot { voucher: d.voucher, dose_number: 1 }, other.id)],
                ..ChangeSet::default()
            }])
            .await,
    );
    assert!(store.apply(vec![new_doses(vec![other])]).await.unwrap().seq > seq);
}

/// A store opened for a bulk load shows its (non-durable) commits to readers at once, and
/// after `persist` a fresh open of the file finds every one of them, intact.
#[tokio::test]
async fn bulk_load_commits_are_durable_after_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vrs.redb");
    let r = resident(CHIYODA, "1", "0000000001");
    let doses: Vec<_> =
        (0..3).map(|i| dose(&format!("d{i}"), voucher(CHIYODA, "0000000001"), 1, "2021-06-01T16:00:00Z", "venue-1")).collect();
    {
        let bulk = RedbStore::open_for_bulk_load(&path).unwrap();
        let store: DynStore = Arc::new(bulk.clone());
        import(&store, vec![r.clone()], 1, 0).await;
        for d in &doses {
            store.apply(vec![new_doses(vec![d.clone()])]).await.unwrap();
        }
        assert_eq!(store.resident(&r.person).await.unwrap(), Some(r.clone()), "visible before persist");
        assert_eq!(store.doses_by_voucher(r.voucher_ref()).await.unwrap().len(), 3);
        bulk.persist().unwrap();
    }
    let mut reopened = RedbStore::open(&path).unwrap();
    assert!(reopened.check_integrity().unwrap(), "the file is intact");
    let store: DynStore = Arc::new(reopened);
    assert_eq!(store.resident(&r.person).await.unwrap(), Some(r.clone()));
    let mut ids: Vec<_> = store.doses_by_voucher(r.voucher_ref()).await.unwrap().into_iter().map(|d| d.id).collect();
    let mut expected: Vec<_> = doses.iter().map(|d| d.id).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
}

/// The integrity check needs the only handle; a second open of the same file is refused;
/// a file that is not a store is refused.
#[tokio::test]
async fn integrity_check_and_exclusive_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vrs.redb");
    let mut store = RedbStore::open(&path).unwrap();
    assert!(store.check_integrity().unwrap());
    let clone = store.clone();
    assert!(matches!(store.check_integrity(), Err(Error::Storage { .. })), "a clone is alive");
    drop(clone);
    assert!(store.check_integrity().unwrap());
    assert!(matches!(RedbStore::open(&path), Err(Error::Storage { .. })), "already open");
    let mut memory = RedbStore::in_memory().unwrap();
    assert!(memory.check_integrity().unwrap());

    let junk = dir.path().join("junk.redb");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    assert!(matches!(RedbStore::open(&junk), Err(Error::Storage { .. })));
}

/// The store holds a call's slot claims, index entries and audit events back and writes
/// them in key order at the end: the change sets of one call still act in their order.
/// Two doses claiming one slot in one call conflict and write nothing; a holder releasing
/// its slot lets a later change set of the same call claim it.
#[tokio::test]
async fn claims_held_back_keep_the_order_of_the_change_sets() {
    let store: DynStore = Arc::new(RedbStore::in_memory().unwrap());
    let v = voucher(CHIYODA, "0000000001");
    let slot = DoseSlot { voucher: v, dose_number: 1 };
    let a = dose("a", v, 1, "2021-06-01T01:00:00Z", "venue-1");
    let b = dose("b", v, 1, "2021-06-01T02:00:00Z", "venue-1");
    let claims = |d: &vrs_core::dose::DoseRecord| ChangeSet {
        new_doses: vec![d.clone()],
        claim_slots: vec![(slot, d.id)],
        audit: vec![event(CHIYODA, "register", "x")],
        ..ChangeSet::default()
    };
    assert!(matches!(store.apply(vec![claims(&a), claims(&b)]).await, Err(Error::Conflict { .. })));
    assert_eq!(store.dose(a.id).await.unwrap(), None);
    assert!(store.audit(code(CHIYODA)).await.unwrap().is_empty());

    let a_releases = ChangeSet { release_slots: vec![(slot, a.id)], ..ChangeSet::default() };
    store.apply(vec![claims(&a), a_releases, claims(&b)]).await.unwrap();
    // b holds the slot now: a may not claim it back.
    assert!(matches!(
        store.apply(vec![ChangeSet { claim_slots: vec![(slot, a.id)], ..ChangeSet::default() }]).await,
        Err(Error::Conflict { .. })
    ));
    store.apply(vec![ChangeSet { claim_slots: vec![(slot, b.id)], ..ChangeSet::default() }]).await.unwrap();
    let (doses, seq) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await;
    assert_eq!(doses.iter().map(|d| d.id).collect::<Vec<_>>(), vec![a.id, b.id], "in sequence order");
    assert_eq!(store.audit(code(CHIYODA)).await.unwrap().len(), 2);
    assert!(seq > 0);
}
