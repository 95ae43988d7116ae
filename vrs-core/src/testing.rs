//! The store conformance suite (feature `testing`): written once here, run by every store
//! crate in one line. A store is correct when the whole suite passes.
//!
//! ```text
//! // vrs-store-xyz/tests/conformance.rs (needs tokio as a dev-dependency)
//! vrs_core::store_conformance_tests!(async { XyzStore::in_memory().unwrap() });
//! // or, when each case needs a store of its own name (a database or schema per case):
//! vrs_core::store_conformance_tests!(|case| async move { XyzStore::connect_fresh(case).await.unwrap() });
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case, each on a fresh, empty store. The
//! cases are the `pub async fn`s below (the store contract: what [`StoreBackend`](crate::store::StoreBackend)
//! promises) and those of [`crate::testing_service`] (the rules of DESIGN.md §3 run end to
//! end through the service). To add a case, write it as `pub async fn name(store: DynStore)`
//! in either module and add its name to the list in [`store_conformance_tests!`].
//!
//! Test data uses real municipality codes from the shipped list: 千代田区 131016, 中央区
//! 131024 (both Tokyo, prefecture 13), 札幌市 011002 and 大阪市 271004.

// A failing case panics: that is how a test reports, so unwrap and expect are fine here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::access::{Site, TabletAccount};
use crate::dose::{DoseDetails, DoseRecord, DoseVersion};
use crate::finding::{Finding, FindingKind, Severity};
use crate::ids::{
    AccountId, AddresseeNumber, DoseId, IdempotencyKey, MunicipalityCode, PersonRef, PersonalNumberHash, SiteId, VoucherNumber, VoucherRef,
};
use crate::import::ImportReport;
use crate::ledger::LedgerDoses;
use crate::resident::{PersonalText, Resident, ResidentStatus, Sex};
use crate::stats::{AgeBand, StatsKey, StatsQuery, StatsRow};
use crate::store::{
    Applied, AuditEvent, ChangeSet, DoseScan, DoseSlot, DynStore, MovedIn, PersonQuery, ResidentSource, StoreBackend, read_person_context,
};
use crate::vaccine::ProductCode;
use crate::{Error, Result};

/// Runs the whole conformance suite against a store: one `#[tokio::test]` per case, in a
/// module `store_conformance`, each case on the fresh, empty store the given future
/// yields. The caller needs `tokio` (features `macros` and `rt`) as a dev-dependency.
///
/// `store_conformance_tests!(async { MyStore::in_memory().unwrap() })`, or with the case's
/// name for stores that need one (a database per case):
/// `store_conformance_tests!(|case| async move { MyStore::fresh(case).await.unwrap() })`.
/// The future may yield a store (`S: StoreBackend + 'static`), an `Arc<S>` or a [`DynStore`].
#[macro_export]
macro_rules! store_conformance_tests {
    (|$name:ident| $make:expr) => {
        $crate::__store_conformance_emit! {
            [$name] [$make]
            // The store contract (vrs_core::testing).
            testing {
                residents_upsert_replace_and_indexes,
                voucher_given_up_stays_with_its_other_holder,
                import_in_any_order_and_reimport,
                import_not_committed_leaves_nothing,
                import_error_midway_leaves_nothing,
                new_dose_with_existing_id_conflicts_and_writes_nothing,
                revision_guard,
                slot_claims,
                seq_increases_and_changed_since_returns_each_change_once,
                applied_reports_each_dose_number,
                by_voucher_scan_order,
                unmatched_index_follows_matched,
                doses_by_site_use_the_jst_date,
                findings_open_and_closed,
                counters_sum_vanish_at_zero_and_range_by_prefecture,
                accounts_upsert_and_list_by_municipality,
                audit_in_order,
                visitor_error_stops_the_scan,
                values_round_trip_exactly,
                ledger_scan_is_the_by_voucher_scan_projected,
                column_scans_are_the_record_scans_as_columns,
                resident_columns_follow_every_import,
                column_reads_follow_every_write,
                doses_by_vouchers_answer_each_voucher_in_order,
                person_contexts_are_their_single_reads,
            }
            // The service run end to end on the store (vrs_core::testing_service).
            testing_service {
                matched_unmatched_then_matched,
                rejections_store_nothing,
                idempotent_retry,
                duplicates_and_intervals,
                racing_duplicates_both_kept,
                registrations_racing_their_upload_are_matched,
                correction_and_void_reach_everything_derived,
                doses_follow_moved_residents,
                access_is_enforced,
                refused_import_applies_nothing,
                batch_registration,
                batch_outcomes_carry_the_stored_seq,
                statistics_equal_a_recount,
                reupload_restating_residents_moves_their_statistics,
                tablet_secrets_sign_in_and_revocation,
                chained_change_logs_cover_every_write_once_under_concurrency,
            }
            // Tablet sync batches on the store (vrs_core::testing_sync).
            testing_sync {
                sync_batch_applied_twice_partly_and_out_of_order,
                sync_conflicts_go_to_the_review_queue,
                sync_conflicts_of_one_dose_all_stay_queued_and_replay_writes_nothing,
                expired_lot_is_a_finding,
            }
        }
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(|_case| $make);
    };
}

/// Expands [`store_conformance_tests!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_emit {
    ([$name:ident] [$make:expr] $($module:ident { $($case:ident),* $(,)? })*) => {
        mod store_conformance {
            $(
                mod $module {
                    #[allow(unused_imports)]
                    use super::super::*;
                    $(
                        #[::tokio::test]
                        async fn $case() {
                            #[allow(unused_variables)]
                            let $name: &'static str = ::core::stringify!($case);
                            let store = $crate::testing::IntoDynStore::into_dyn_store($make.await);
                            $crate::$module::$case(store).await;
                        }
                    )*
                }
            )*
        }
    };
}

/// What the future given to [`store_conformance_tests!`] may yield.
pub trait IntoDynStore {
    /// The store, type-erased.
    fn into_dyn_store(self) -> DynStore;
}

impl<S: StoreBackend + 'static> IntoDynStore for S {
    fn into_dyn_store(self) -> DynStore {
        Arc::new(self)
    }
}

impl<S: StoreBackend + 'static> IntoDynStore for Arc<S> {
    fn into_dyn_store(self) -> DynStore {
        self
    }
}

impl IntoDynStore for DynStore {
    fn into_dyn_store(self) -> DynStore {
        self
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures

/// 千代田区, 東京都.
pub const CHIYODA: &str = "131016";
/// 中央区, 東京都.
pub const CHUO: &str = "131024";
/// 札幌市, 北海道.
pub const SAPPORO: &str = "011002";
/// 大阪市, 大阪府.
pub const OSAKA: &str = "271004";

/// A municipality code from the shipped list.
pub fn code(m: &str) -> MunicipalityCode {
    let c = MunicipalityCode::parse(m).unwrap();
    assert!(c.is_known(), "{m} is not in the shipped list");
    c
}

/// A voucher of a municipality.
pub fn voucher(m: &str, number: &str) -> VoucherRef {
    VoucherRef { municipality: code(m), number: VoucherNumber::parse(number).unwrap() }
}

/// A person of a municipality.
pub fn person(m: &str, addressee: &str) -> PersonRef {
    PersonRef { municipality: code(m), addressee: AddresseeNumber::parse(addressee).unwrap() }
}

/// A date, `YYYY-MM-DD`.
pub fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// An instant, RFC 3339.
pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A plain active resident (optional fields empty).
pub fn resident(m: &str, addressee: &str, voucher_number: &str) -> Resident {
    Resident {
        person: person(m, addressee),
        voucher: VoucherNumber::parse(voucher_number).unwrap(),
        name: PersonalText("接種 花子".into()),
        name_kana: PersonalText("セッシュ ハナコ".into()),
        birth_date: day("1960-04-01"),
        sex: Sex::Female,
        address: None,
        previous: None,
        personal_number_hash: None,
        status: ResidentStatus::Active,
        status_date: None,
    }
}

/// A resident who moved in from `previous`.
pub fn moved_in(m: &str, addressee: &str, voucher_number: &str, previous: VoucherRef) -> Resident {
    Resident { previous: Some(previous), ..resident(m, addressee, voucher_number) }
}

/// A resident source over residents in memory, handing out at most `per_batch` a call,
/// optionally failing at a given call, answering `may_commit` with `commit`.
pub struct TestSource {
    residents: VecDeque<Resident>,
    per_batch: usize,
    commit: bool,
    fail_at_call: Option<usize>,
    calls: usize,
    report: ImportReport,
}

impl TestSource {
    /// A source of `residents` in batches of at most `per_batch`.
    pub fn new(residents: Vec<Resident>, per_batch: usize, commit: bool) -> Box<Self> {
        let n = residents.len() as u64;
        Box::new(Self {
            residents: residents.into(),
            per_batch: per_batch.max(1),
            commit,
            fail_at_call: None,
            calls: 0,
            report: ImportReport { rows_read: n, rows_valid: n, ..ImportReport::default() },
        })
    }
    /// A source that fails with [`Error::Read`] on its `call`-th `next_batch` (1-based).
    pub fn failing_at(residents: Vec<Resident>, per_batch: usize, call: usize) -> Box<Self> {
        let mut s = Self::new(residents, per_batch, true);
        s.fail_at_call = Some(call);
        s
    }
}

impl ResidentSource for TestSource {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Resident>>> {
        self.calls += 1;
        if self.fail_at_call == Some(self.calls) {
            return Err(Error::Read { detail: "the test source fails here".into() });
        }
        let n = max.min(self.per_batch).min(self.residents.len());
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(self.residents.drain(..n).collect()))
    }
    fn may_commit(&self) -> bool {
        self.commit
    }
    fn into_report(self: Box<Self>) -> ImportReport {
        self.report
    }
}

/// Imports residents (in batches of 2, committed) and checks the counts.
pub async fn import(store: &DynStore, residents: Vec<Resident>, inserted: u64, replaced: u64) {
    let (_, applied) = store.import_residents(TestSource::new(residents, 2, true)).await.unwrap();
    assert!(applied.committed);
    assert_eq!((applied.inserted, applied.replaced), (inserted, replaced), "inserted, replaced");
}

/// The dose id of an idempotency key.
pub fn dose_id(key: &str) -> DoseId {
    DoseId::for_key(&IdempotencyKey::parse(key).unwrap())
}

/// A fresh unmatched registration: dose `dose_number` of `voucher`, registered at
/// `registered_at` by an account of `site`, revision 1.
pub fn dose(key: &str, voucher: VoucherRef, dose_number: u8, registered_at: &str, site: &str) -> DoseRecord {
    let registered_at = at(registered_at);
    DoseRecord {
        id: dose_id(key),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        voucher,
        ticket_kind: 1,
        registered_at,
        registered_by: AccountId::parse(&format!("{site}-tablet")).unwrap(),
        matched: None,
        versions: vec![DoseVersion {
            version: 1,
            details: DoseDetails {
                dose_number,
                date_given: registered_at.date_naive(),
                administering_municipality: voucher.municipality,
                site: SiteId::parse(site).unwrap(),
                site_name: "区民会館".into(),
                doctor: "佐藤一郎".into(),
                product: ProductCode::new("pfizer"),
                maker: "ファイザー".into(),
                lot: "FA5765".into(),
                lot_expiry: None,
            },
            voided: false,
            recorded_at: registered_at,
            recorded_by: format!("site {site}"),
            reason: None,
        }],
        revision: 1,
        seq: 0,
    }
}

/// The next revision of a stored record, changed by `change`.
pub fn next_revision(stored: &DoseRecord, change: impl FnOnce(&mut DoseRecord)) -> DoseRecord {
    let mut d = stored.clone();
    d.revision += 1;
    change(&mut d);
    d
}

/// A change set registering doses.
pub fn new_doses(doses: Vec<DoseRecord>) -> ChangeSet {
    ChangeSet { new_doses: doses, ..ChangeSet::default() }
}

/// A change set updating doses.
pub fn updated_doses(doses: Vec<DoseRecord>) -> ChangeSet {
    ChangeSet { updated_doses: doses, ..ChangeSet::default() }
}

/// A finding about a dose, in its owner's queue.
pub fn finding(dose: &DoseRecord, kind: FindingKind, open: bool) -> Finding {
    Finding {
        dose: dose.id,
        municipality: dose.owner(),
        kind,
        severity: kind.severity(),
        detail: format!("{kind} for the test"),
        related: None,
        open,
        raised_at: at("2021-06-02T00:00:00Z"),
        closed_at: if open { None } else { Some(at("2021-06-03T00:00:00Z")) },
    }
}

/// A tablet account of a site in `m`.
pub fn account(id: &str, site: &str, m: &str) -> TabletAccount {
    TabletAccount {
        id: AccountId::parse(id).unwrap(),
        site: Site { id: SiteId::parse(site).unwrap(), name: "集団接種会場".into(), municipality: code(m) },
        issued_by: format!("staff admin@{m}"),
        issued_at: at("2021-05-01T00:00:00Z"),
        revoked_at: None,
    }
}

/// A statistics group.
pub fn stats_key(m: &str, date: &str, dose_number: u8) -> StatsKey {
    StatsKey {
        municipality: code(m),
        date: day(date),
        dose_number,
        sex: Sex::Female,
        age_band: AgeBand::Age60To64,
        product: ProductCode::new("pfizer"),
    }
}

/// An audit event.
pub fn event(m: &str, action: &str, detail: &str) -> AuditEvent {
    AuditEvent {
        at: at("2021-06-01T00:00:00Z"),
        municipality: code(m),
        actor: format!("staff tester@{m}"),
        action: action.into(),
        dose: None,
        detail: detail.into(),
    }
}

/// Every resident of a municipality, by a full scan.
pub async fn scanned_residents(store: &DynStore, m: &str) -> Vec<Resident> {
    let mut out = Vec::new();
    store
        .scan_residents(code(m), &mut |r| {
            out.push(r);
            Ok(())
        })
        .await
        .unwrap();
    out
}

/// Every dose a scan yields, and the cursor it returns.
pub async fn scanned_doses(store: &DynStore, m: &str, scan: DoseScan) -> (Vec<DoseRecord>, u64) {
    let mut out = Vec::new();
    let cursor = store
        .scan_doses(code(m), scan, &mut |d| {
            out.push(d);
            Ok(())
        })
        .await
        .unwrap();
    (out, cursor)
}

/// Asserts a [`Error::Conflict`].
#[track_caller]
pub fn assert_conflict<T: Debug>(result: Result<T>) {
    match result {
        Err(Error::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn addressees(residents: &[Resident]) -> Vec<&str> {
    residents.iter().map(|r| r.addressee().as_str()).collect()
}

fn ids(doses: &[DoseRecord]) -> Vec<DoseId> {
    doses.iter().map(|d| d.id).collect()
}

fn sorted_rows(mut rows: Vec<StatsRow>) -> Vec<(StatsKey, u64)> {
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows.into_iter().map(|r| (r.key, r.count)).collect()
}

fn sorted_findings(mut f: Vec<Finding>) -> Vec<Finding> {
    f.sort_by_key(|x| (x.dose, x.kind));
    f
}

// ---------------------------------------------------------------------------------------
// Cases: the store contract

/// Residents are upserted per (municipality, addressee number); every index (voucher,
/// previous voucher, moved-in) follows a replacement, including one within the same
/// import; scans go in addressee order.
pub async fn residents_upsert_replace_and_indexes(store: DynStore) {
    let from_sapporo = voucher(SAPPORO, "0000000099");
    let r1 = resident(CHIYODA, "1", "0000000001");
    let r2 = resident(CHIYODA, "2", "0000000002");
    let r10 = moved_in(CHIYODA, "10", "0000000003", from_sapporo);
    // The same voucher number in another municipality is another voucher.
    let s5 = resident(SAPPORO, "5", "0000000001");
    import(&store, vec![r10.clone(), r1.clone(), s5.clone(), r2.clone()], 4, 0).await;

    assert_eq!(store.resident(&person(CHIYODA, "1")).await.unwrap(), Some(r1.clone()));
    assert_eq!(store.resident(&person(CHIYODA, "3")).await.unwrap(), None);
    assert_eq!(store.resident(&person(OSAKA, "1")).await.unwrap(), None);
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000001")).await.unwrap(), Some(r1.clone()));
    assert_eq!(store.resident_by_voucher(voucher(SAPPORO, "0000000001")).await.unwrap(), Some(s5.clone()));
    assert_eq!(store.resident_by_voucher(voucher(OSAKA, "0000000001")).await.unwrap(), None);
    assert_eq!(store.residents_by_previous_voucher(from_sapporo).await.unwrap(), vec![r10.clone()]);
    assert_eq!(store.moved_in_residents(code(CHIYODA)).await.unwrap(), vec![r10.clone()]);
    assert_eq!(store.moved_in_vouchers(code(CHIYODA)).await.unwrap(), vec![MovedIn::of(&r10)]);
    assert!(store.moved_in_residents(code(SAPPORO)).await.unwrap().is_empty());
    assert!(store.moved_in_vouchers(code(SAPPORO)).await.unwrap().is_empty());
    // Addressee order: 1, 2, 10 (numbers, not text).
    assert_eq!(addressees(&scanned_residents(&store, CHIYODA).await), vec!["1", "2", "10"]);
    assert_eq!(scanned_residents(&store, SAPPORO).await, vec![s5.clone()]);
    assert!(scanned_residents(&store, OSAKA).await.is_empty());

    // Replace: 1 gets a new voucher and moved in from 大阪市; 10 no longer names a previous
    // voucher; 2 appears twice in the upload, the last row wins.
    let from_osaka = voucher(OSAKA, "0000000777");
    let r1b = moved_in(CHIYODA, "1", "0000000005", from_osaka);
    let r10b = resident(CHIYODA, "10", "0000000003");
    let r2b = resident(CHIYODA, "2", "0000000006");
    let r2c = Resident { sex: Sex::Male, ..resident(CHIYODA, "2", "0000000007") };
    import(&store, vec![r1b.clone(), r2b, r10b.clone(), r2c.clone()], 0, 4).await;

    assert_eq!(store.resident(&person(CHIYODA, "1")).await.unwrap(), Some(r1b.clone()));
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000001")).await.unwrap(), None, "old voucher of 1");
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000005")).await.unwrap(), Some(r1b.clone()));
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000002")).await.unwrap(), None, "old voucher of 2");
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000006")).await.unwrap(), None, "voucher of 2 replaced in the same upload");
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000007")).await.unwrap(), Some(r2c.clone()));
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000003")).await.unwrap(), Some(r10b.clone()));
    assert_eq!(store.resident_by_voucher(voucher(SAPPORO, "0000000001")).await.unwrap(), Some(s5), "other municipality untouched");
    assert!(store.residents_by_previous_voucher(from_sapporo).await.unwrap().is_empty());
    assert_eq!(store.residents_by_previous_voucher(from_osaka).await.unwrap(), vec![r1b.clone()]);
    assert_eq!(store.moved_in_residents(code(CHIYODA)).await.unwrap(), vec![r1b.clone()]);
    assert_eq!(
        store.moved_in_vouchers(code(CHIYODA)).await.unwrap(),
        vec![MovedIn::of(&r1b)],
        "the index follows the new previous voucher"
    );
    assert_eq!(scanned_residents(&store, CHIYODA).await, vec![r1b, r2c, r10b]);

    // A voucher handed from one resident to another follows the new holder.
    let r20 = resident(CHIYODA, "20", "0000000003");
    let r10c = resident(CHIYODA, "10", "0000000008");
    import(&store, vec![r20.clone(), r10c.clone()], 1, 1).await;
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000003")).await.unwrap(), Some(r20));
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000008")).await.unwrap(), Some(r10c));
}

/// A voucher two residents hold (a later upload gave it to a second resident without
/// taking it from the first): the later holder answers for it; when that one gives it up,
/// the first, who still holds it, answers again (a voucher on record is never "unknown"
/// while someone holds it); when nobody holds it any more, nobody answers. The
/// registration context agrees.
pub async fn voucher_given_up_stays_with_its_other_holder(store: DynStore) {
    let shared = voucher(CHIYODA, "0000000001");
    let older = resident(CHIYODA, "1", "0000000001");
    import(&store, vec![older.clone()], 1, 0).await;
    let newer = resident(CHIYODA, "2", "0000000001");
    import(&store, vec![newer.clone()], 1, 0).await;
    assert_eq!(store.resident_by_voucher(shared).await.unwrap(), Some(newer), "the latest upload's holder");

    let newer_moved_on = resident(CHIYODA, "2", "0000000002");
    import(&store, vec![newer_moved_on.clone()], 0, 1).await;
    assert_eq!(store.resident_by_voucher(shared).await.unwrap(), Some(older.clone()), "the other holder still holds it");
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000002")).await.unwrap(), Some(newer_moved_on));
    let contexts = store.person_contexts(&[PersonQuery { voucher: shared, dose: None }]).await.unwrap();
    assert_eq!(contexts[0].resident.as_ref(), Some(&older));

    let older_moved_on = resident(CHIYODA, "1", "0000000003");
    import(&store, vec![older_moved_on.clone()], 0, 1).await;
    assert_eq!(store.resident_by_voucher(shared).await.unwrap(), None, "nobody holds it any more");
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000003")).await.unwrap(), Some(older_moved_on));
}

/// An upload in any order (ascending, descending, shuffled) and a re-upload replacing
/// everyone with new vouchers leave exactly one consistent entry per resident everywhere.
pub async fn import_in_any_order_and_reimport(store: DynStore) {
    const N: u64 = 3000;
    // A permutation of 1..=N (multiplying by a number prime to N).
    let shuffled = |salt: u64| (0..N).map(move |i| (i * 1231 + salt) % N + 1);
    let first: Vec<Resident> = shuffled(7).map(|i| resident(CHIYODA, &i.to_string(), &format!("{:010}", i * 3))).collect();
    import(&store, first, N, 0).await;
    let descending: Vec<Resident> = (1..=N / 2).rev().map(|i| resident(CHUO, &i.to_string(), &format!("{:010}", i))).collect();
    import(&store, descending, N / 2, 0).await;
    // Everyone gets a new voucher; every third names a previous voucher.
    let second: Vec<Resident> = shuffled(11)
        .map(|i| {
            let mut r = resident(CHIYODA, &i.to_string(), &format!("{:010}", i * 3 + 1));
            if i % 3 == 0 {
                r.previous = Some(voucher(SAPPORO, &format!("{i:010}")));
            }
            r
        })
        .collect();
    import(&store, second, 0, N).await;

    let scanned = scanned_residents(&store, CHIYODA).await;
    let expected: Vec<String> = (1..=N).map(|i| i.to_string()).collect();
    assert_eq!(addressees(&scanned), expected.iter().map(String::as_str).collect::<Vec<_>>(), "numeric addressee order");
    for r in &scanned {
        let i: u64 = r.addressee().as_str().parse().unwrap();
        assert_eq!(r.voucher.as_str(), format!("{:010}", i * 3 + 1));
    }
    for i in [1, 2, 3, 1500, 2999, N] {
        let r = store.resident_by_voucher(voucher(CHIYODA, &format!("{:010}", i * 3 + 1))).await.unwrap().unwrap();
        assert_eq!(r.addressee().as_str(), i.to_string());
        assert_eq!(store.resident_by_voucher(voucher(CHIYODA, &format!("{:010}", i * 3))).await.unwrap(), None, "old voucher of {i}");
    }
    let moved_in = store.moved_in_residents(code(CHIYODA)).await.unwrap();
    assert_eq!(moved_in.len() as u64, N / 3);
    assert_eq!(store.moved_in_vouchers(code(CHIYODA)).await.unwrap(), moved_in.iter().map(MovedIn::of).collect::<Vec<_>>());
    let moved = store.residents_by_previous_voucher(voucher(SAPPORO, &format!("{:010}", 300))).await.unwrap();
    assert_eq!(addressees(&moved), vec!["300"]);
    assert_eq!(scanned_residents(&store, CHUO).await.len() as u64, N / 2);
    assert_eq!(addressees(&scanned_residents(&store, CHUO).await)[..3], ["1", "2", "3"]);
}

/// An import whose source may not commit leaves the store as it was.
pub async fn import_not_committed_leaves_nothing(store: DynStore) {
    let kept = resident(CHIYODA, "1", "0000000001");
    import(&store, vec![kept.clone()], 1, 0).await;
    let refused = vec![
        moved_in(CHIYODA, "1", "0000000011", voucher(SAPPORO, "0000000099")),
        resident(CHIYODA, "2", "0000000002"),
        resident(OSAKA, "3", "0000000003"),
    ];
    let (source, applied) = store.import_residents(TestSource::new(refused, 1, false)).await.unwrap();
    assert!(!applied.committed);
    assert_eq!(source.into_report().rows_read, 3, "the source comes back");
    assert_eq!(store.resident(&person(CHIYODA, "1")).await.unwrap(), Some(kept.clone()));
    assert_eq!(store.resident(&person(CHIYODA, "2")).await.unwrap(), None);
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000001")).await.unwrap(), Some(kept.clone()));
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000011")).await.unwrap(), None);
    assert!(store.residents_by_previous_voucher(voucher(SAPPORO, "0000000099")).await.unwrap().is_empty());
    assert!(store.moved_in_residents(code(CHIYODA)).await.unwrap().is_empty());
    assert_eq!(scanned_residents(&store, CHIYODA).await, vec![kept]);
    assert!(scanned_residents(&store, OSAKA).await.is_empty());
}

/// An import whose source fails midway returns the error and leaves nothing.
pub async fn import_error_midway_leaves_nothing(store: DynStore) {
    let rows: Vec<Resident> = (1..=10).map(|i| resident(CHIYODA, &i.to_string(), &format!("{i:010}"))).collect();
    match store.import_residents(TestSource::failing_at(rows, 2, 3)).await {
        Err(Error::Read { .. }) => {}
        Err(other) => panic!("expected the source's error, got {other:?}"),
        Ok((_, applied)) => panic!("expected the source's error, got {applied:?}"),
    }
    assert!(scanned_residents(&store, CHIYODA).await.is_empty());
    assert_eq!(store.resident(&person(CHIYODA, "1")).await.unwrap(), None);
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000000001")).await.unwrap(), None);
    // The store still takes the next import.
    import(&store, vec![resident(CHIYODA, "1", "0000000001")], 1, 0).await;
}

/// A new dose whose id exists fails the whole `apply` call with a conflict: nothing of
/// that change set, nor of the other change sets of the same call, is written.
pub async fn new_dose_with_existing_id_conflicts_and_writes_nothing(store: DynStore) {
    let v1 = voucher(CHIYODA, "0000000001");
    let v2 = voucher(CHIYODA, "0000000002");
    let a = dose("a", v1, 1, "2021-06-01T01:00:00Z", "venue-1");
    let first = store.apply(vec![new_doses(vec![a.clone()])]).await.unwrap();
    let stored_a = store.dose(a.id).await.unwrap().unwrap();
    assert_eq!(stored_a.seq, first.seq);
    let audit_before = store.audit(code(CHIYODA)).await.unwrap();

    let b = dose("b", v2, 1, "2021-06-01T02:00:00Z", "venue-1");
    let everything_of_b = ChangeSet {
        new_doses: vec![b.clone()],
        claim_slots: vec![(DoseSlot { voucher: v2, dose_number: 1 }, b.id)],
        findings: vec![finding(&b, FindingKind::Unmatched, true)],
        counters: vec![(stats_key(CHIYODA, "2021-06-01", 1), 1)],
        accounts: vec![account("new-tablet", "venue-2", CHIYODA)],
        audit: vec![event(CHIYODA, "register", "b")],
        ..ChangeSet::default()
    };
    let mut a_again = a.clone();
    a_again.versions[0].details.lot = "FA0000".into();
    assert_conflict(store.apply(vec![everything_of_b.clone(), new_doses(vec![a_again])]).await);

    assert_eq!(store.dose(a.id).await.unwrap(), Some(stored_a.clone()), "the stored dose is untouched");
    assert_eq!(store.dose(b.id).await.unwrap(), None);
    assert!(store.doses_by_voucher(v2).await.unwrap().is_empty());
    assert_eq!(ids(&store.unmatched_doses(code(CHIYODA)).await.unwrap()), vec![a.id]);
    assert_eq!(ids(&store.doses_by_site(&SiteId::parse("venue-1").unwrap(), day("2021-06-01")).await.unwrap()), vec![a.id]);
    assert!(store.findings_for_dose(b.id).await.unwrap().is_empty());
    assert!(store.findings(code(CHIYODA), false).await.unwrap().is_empty());
    assert!(store.statistics(StatsQuery::National).await.unwrap().is_empty());
    assert_eq!(store.account(&AccountId::parse("new-tablet").unwrap()).await.unwrap(), None);
    assert!(store.accounts(code(CHIYODA)).await.unwrap().is_empty());
    assert_eq!(store.audit(code(CHIYODA)).await.unwrap(), audit_before);
    let (changed, cursor) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await;
    assert_eq!(changed, vec![stored_a.clone()]);
    assert_eq!(cursor, first.seq);

    // The same new id twice in one call conflicts too.
    let c = dose("c", v2, 1, "2021-06-01T03:00:00Z", "venue-1");
    assert_conflict(store.apply(vec![new_doses(vec![c.clone()]), new_doses(vec![c.clone()])]).await);
    assert_eq!(store.dose(c.id).await.unwrap(), None);

    // b's slot was not claimed: b's change set applies on its own now.
    store.apply(vec![everything_of_b]).await.unwrap();
    assert!(store.dose(b.id).await.unwrap().is_some());
    assert_eq!(store.findings_for_dose(b.id).await.unwrap().len(), 1);
}

/// An update must carry the stored revision plus one; anything else is a conflict and
/// writes nothing.
pub async fn revision_guard(store: DynStore) {
    let a = dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    store.apply(vec![new_doses(vec![a.clone()])]).await.unwrap();
    let stored = store.dose(a.id).await.unwrap().unwrap();

    let corrected = |revision: u32| {
        let mut d = stored.clone();
        d.revision = revision;
        d.versions.push(DoseVersion { version: 2, reason: Some("lot misread".into()), ..d.versions[0].clone() });
        d.versions[1].details.lot = "FA5766".into();
        d
    };
    for stale in [stored.revision, stored.revision + 2, 0] {
        let audit = ChangeSet { audit: vec![event(CHIYODA, "correct", "stale")], ..ChangeSet::default() };
        assert_conflict(store.apply(vec![audit, updated_doses(vec![corrected(stale)])]).await);
        assert_eq!(store.dose(a.id).await.unwrap(), Some(stored.clone()));
        assert!(store.audit(code(CHIYODA)).await.unwrap().is_empty());
    }
    let applied = store.apply(vec![updated_doses(vec![corrected(stored.revision + 1)])]).await.unwrap();
    let now = store.dose(a.id).await.unwrap().unwrap();
    assert_eq!(now.revision, stored.revision + 1);
    assert_eq!(now.versions.len(), 2);
    assert_eq!(now.details().lot, "FA5766");
    assert_eq!(now.seq, applied.seq);
    // The same update again is now stale.
    assert_conflict(store.apply(vec![updated_doses(vec![corrected(stored.revision + 1)])]).await);
    // Updating a dose that was never stored is a conflict too.
    let ghost = dose("ghost", voucher(CHIYODA, "0000000009"), 1, "2021-06-01T01:00:00Z", "venue-1");
    assert_conflict(store.apply(vec![updated_doses(vec![next_revision(&ghost, |_| {})])]).await);
    assert_eq!(store.dose(ghost.id).await.unwrap(), None);
}

/// A slot is free, or held by the dose claiming it again; another dose's claim is a
/// conflict until the holder releases it.
pub async fn slot_claims(store: DynStore) {
    let v = voucher(CHIYODA, "0000000001");
    let slot = DoseSlot { voucher: v, dose_number: 1 };
    let a = dose("a", v, 1, "2021-06-01T01:00:00Z", "venue-1");
    let b = dose("b", v, 1, "2021-06-01T02:00:00Z", "venue-1");
    store.apply(vec![ChangeSet { new_doses: vec![a.clone()], claim_slots: vec![(slot, a.id)], ..ChangeSet::default() }]).await.unwrap();
    // The holder may claim again (a retry, a re-decision).
    store.apply(vec![ChangeSet { claim_slots: vec![(slot, a.id)], ..ChangeSet::default() }]).await.unwrap();
    // Another dose may not; nothing of its change set is written.
    let b_claims = ChangeSet { new_doses: vec![b.clone()], claim_slots: vec![(slot, b.id)], ..ChangeSet::default() };
    assert_conflict(store.apply(vec![b_claims.clone()]).await);
    assert_eq!(store.dose(b.id).await.unwrap(), None);
    // The second dose slot is another slot.
    let slot2 = DoseSlot { voucher: v, dose_number: 2 };
    store.apply(vec![ChangeSet { claim_slots: vec![(slot2, b.id)], ..ChangeSet::default() }]).await.unwrap();
    // Releasing a slot one does not hold changes nothing.
    store.apply(vec![ChangeSet { release_slots: vec![(slot, b.id)], ..ChangeSet::default() }]).await.unwrap();
    assert_conflict(store.apply(vec![b_claims.clone()]).await);
    // Once the holder releases it, another dose may claim it (release and claim in one go).
    let a_releases = ChangeSet { release_slots: vec![(slot, a.id)], ..ChangeSet::default() };
    store.apply(vec![a_releases, b_claims]).await.unwrap();
    assert!(store.dose(b.id).await.unwrap().is_some());
    assert_conflict(store.apply(vec![ChangeSet { claim_slots: vec![(slot, a.id)], ..ChangeSet::default() }]).await);
}

/// Every written dose record gets a fresh, strictly increasing sequence number;
/// `ChangedSince` returns exactly the records written after the cursor, each once, in
/// their latest version, and the cursor for the next call.
pub async fn seq_increases_and_changed_since_returns_each_change_once(store: DynStore) {
    let a = dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    let b = dose("b", voucher(CHIYODA, "0000000002"), 1, "2021-06-01T02:00:00Z", "venue-1");
    let c = dose("c", voucher(CHIYODA, "0000000003"), 1, "2021-06-01T03:00:00Z", "venue-1");
    let elsewhere = dose("s", voucher(SAPPORO, "0000000001"), 1, "2021-06-01T03:00:00Z", "sapporo-1");
    let (nothing, cursor0) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await;
    assert!(nothing.is_empty());
    assert_eq!(cursor0, 0);

    let s1 = store.apply(vec![new_doses(vec![a.clone()])]).await.unwrap().seq;
    let s2 = store.apply(vec![new_doses(vec![b.clone()]), new_doses(vec![elsewhere.clone(), c.clone()])]).await.unwrap().seq;
    assert!(s1 > 0 && s2 > s1);
    let (a1, b1, c1) =
        (store.dose(a.id).await.unwrap().unwrap(), store.dose(b.id).await.unwrap().unwrap(), store.dose(c.id).await.unwrap().unwrap());
    let e1 = store.dose(elsewhere.id).await.unwrap().unwrap();
    assert_eq!(a1.seq, s1);
    assert!(s1 < b1.seq && b1.seq < e1.seq && e1.seq < c1.seq && c1.seq == s2, "one number per record, in order");

    let (all, cursor) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await;
    assert_eq!(all, vec![a1.clone(), b1.clone(), c1.clone()], "sequence order, this municipality only");
    assert_eq!(cursor, s2);
    let (after_a, cursor_a) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: s1 }).await;
    assert_eq!(after_a, vec![b1.clone(), c1.clone()]);
    assert_eq!(cursor_a, s2);

    // Change a twice (a correction, then a match) and c once.
    let a2 = next_revision(&a1, |d| d.versions[0].details.doctor = "鈴木二郎".into());
    let s3 = store.apply(vec![updated_doses(vec![a2])]).await.unwrap().seq;
    let a2 = store.dose(a.id).await.unwrap().unwrap();
    let a3 = next_revision(&a2, |d| d.matched = Some(person(CHIYODA, "1")));
    let c2 = next_revision(&c1, |d| d.matched = Some(person(CHIYODA, "3")));
    let s4 = store.apply(vec![updated_doses(vec![a3, c2])]).await.unwrap().seq;
    assert!(s3 > s2 && s4 > s3);
    let (a3, c2) = (store.dose(a.id).await.unwrap().unwrap(), store.dose(c.id).await.unwrap().unwrap());
    assert_eq!(a3.revision, 3);
    assert!(a3.seq < c2.seq && c2.seq == s4);

    let (delta, next) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: s2 }).await;
    assert_eq!(delta, vec![a3.clone(), c2.clone()], "each changed record once, latest version");
    assert_eq!(next, s4);
    let (all, _) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await;
    assert_eq!(all, vec![b1.clone(), a3.clone(), c2.clone()], "every record once");
    let (none, same) = scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: s4 }).await;
    assert!(none.is_empty());
    assert_eq!(same, s4, "nothing changed: the cursor stays");
    let (sapporo, sapporo_cursor) = scanned_doses(&store, SAPPORO, DoseScan::ChangedSince { after: 0 }).await;
    assert_eq!(sapporo, vec![e1.clone()]);
    assert_eq!(sapporo_cursor, e1.seq);

    // An apply without doses gives no new number; the next dose gets a higher one.
    store.apply(vec![ChangeSet { audit: vec![event(CHIYODA, "note", "")], ..ChangeSet::default() }]).await.unwrap();
    let d = dose("d", voucher(OSAKA, "0000000001"), 1, "2021-06-01T03:00:00Z", "osaka-1");
    let s5 = store.apply(vec![new_doses(vec![d])]).await.unwrap().seq;
    assert!(s5 > s4);
}

/// `apply` reports the number each dose record it wrote is stored under: many new doses
/// at once, a dose written twice in one call (the greatest of its numbers is the stored
/// one), slot operations that take a store's slower path, a single write, and no write.
pub async fn applied_reports_each_dose_number(store: DynStore) {
    let before =
        store.apply(vec![new_doses(vec![dose("x", voucher(CHUO, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1")])]).await.unwrap();
    assert_eq!(before.doses, vec![(dose_id("x"), before.seq)]);
    let stored = |id: DoseId| {
        let store = store.clone();
        async move { store.dose(id).await.unwrap().unwrap().seq }
    };
    let reported = async |applied: &Applied, ids: &[DoseId]| {
        let mut listed: Vec<DoseId> = applied.doses.iter().map(|(id, _)| *id).collect();
        listed.sort();
        listed.dedup();
        let mut expected = ids.to_vec();
        expected.sort();
        assert_eq!(listed, expected, "{applied:?}");
        let by_dose = applied.seqs_by_dose();
        for &id in ids {
            let seq = stored(id).await;
            assert_eq!(applied.seq_of(id), Some(seq), "{applied:?}");
            assert_eq!(by_dose.get(&id), Some(&seq));
        }
        assert_eq!(applied.doses.iter().map(|&(_, seq)| seq).max(), Some(applied.seq));
    };

    // Many new doses, with a slot claimed, released and claimed again in the call.
    let doses: Vec<DoseRecord> =
        (1..=5).map(|i| dose(&format!("n{i}"), voucher(CHIYODA, &format!("000000000{i}")), 1, "2021-06-01T01:00:00Z", "venue-1")).collect();
    let ids: Vec<DoseId> = doses.iter().map(|d| d.id).collect();
    let slot = DoseSlot { voucher: doses[0].voucher, dose_number: 1 };
    let many = store
        .apply(vec![
            ChangeSet { new_doses: doses[..3].to_vec(), claim_slots: vec![(slot, ids[0])], ..ChangeSet::default() },
            ChangeSet { release_slots: vec![(slot, ids[0])], ..ChangeSet::default() },
            ChangeSet { new_doses: doses[3..].to_vec(), claim_slots: vec![(slot, ids[1])], ..ChangeSet::default() },
        ])
        .await
        .unwrap();
    reported(&many, &ids).await;
    let mut numbers: Vec<u64> = many.doses.iter().map(|&(_, seq)| seq).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 5, "one number per dose: {many:?}");
    assert!(numbers.iter().all(|&n| n > before.seq), "{many:?}");

    // A new dose beside one updated twice in the call.
    let n1 = store.dose(ids[0]).await.unwrap().unwrap();
    let once = next_revision(&n1, |d| d.versions[0].details.doctor = "鈴木二郎".into());
    let twice = next_revision(&once, |d| d.matched = Some(person(CHIYODA, "1")));
    let late = dose("late", voucher(CHIYODA, "0000000009"), 1, "2021-06-01T02:00:00Z", "venue-1");
    let mixed = store.apply(vec![updated_doses(vec![once]), new_doses(vec![late.clone()]), updated_doses(vec![twice])]).await.unwrap();
    reported(&mixed, &[ids[0], late.id]).await;
    assert!(mixed.doses.iter().all(|&(_, seq)| seq > many.seq), "{mixed:?}");
    assert_eq!(store.dose(ids[0]).await.unwrap().unwrap().revision, 3);

    // One write; then none.
    let n2 = store.dose(ids[1]).await.unwrap().unwrap();
    let one = store.apply(vec![updated_doses(vec![next_revision(&n2, |d| d.matched = Some(person(CHIYODA, "2")))])]).await.unwrap();
    reported(&one, &[ids[1]]).await;
    assert!(one.seq > mixed.seq);
    let none = store.apply(vec![ChangeSet { audit: vec![event(CHIYODA, "note", "")], ..ChangeSet::default() }]).await.unwrap();
    assert_eq!(none, Applied { seq: one.seq, doses: Vec::new() });
}

/// `ByVoucher` yields a municipality's doses ordered by voucher number, then id, and
/// returns the highest sequence number seen.
pub async fn by_voucher_scan_order(store: DynStore) {
    let mut doses = Vec::new();
    for (key, number) in [("k1", "0000000300"), ("k2", "0000000100"), ("k3", "0000000200"), ("k4", "0000000100"), ("k5", "0000000300")] {
        doses.push(dose(key, voucher(CHIYODA, number), 1, "2021-06-01T01:00:00Z", "venue-1"));
    }
    let other = dose("k6", voucher(CHUO, "0000000150"), 1, "2021-06-01T01:00:00Z", "venue-1");
    store.apply(vec![new_doses(doses.clone())]).await.unwrap();
    let last = store.apply(vec![new_doses(vec![other])]).await.unwrap().seq;
    let (scanned, cursor) = scanned_doses(&store, CHIYODA, DoseScan::ByVoucher).await;
    let mut expected: Vec<(VoucherNumber, DoseId)> = doses.iter().map(|d| (d.voucher.number, d.id)).collect();
    expected.sort();
    assert_eq!(scanned.iter().map(|d| (d.voucher.number, d.id)).collect::<Vec<_>>(), expected);
    assert_eq!(cursor, scanned.iter().map(|d| d.seq).max().unwrap());
    assert!(cursor < last);
    // doses_by_voucher: that voucher's doses only.
    let mut of_100: Vec<DoseId> = ids(&store.doses_by_voucher(voucher(CHIYODA, "0000000100")).await.unwrap());
    of_100.sort();
    let mut expected_100 = vec![dose_id("k2"), dose_id("k4")];
    expected_100.sort();
    assert_eq!(of_100, expected_100);
    assert!(store.doses_by_voucher(voucher(CHIYODA, "0000000150")).await.unwrap().is_empty());
    assert!(scanned_doses(&store, OSAKA, DoseScan::ByVoucher).await.0.is_empty());
}

/// The unmatched index holds exactly the doses whose `matched` is `None`.
pub async fn unmatched_index_follows_matched(store: DynStore) {
    let a = dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    let b = DoseRecord {
        matched: Some(person(CHIYODA, "2")),
        ..dose("b", voucher(CHIYODA, "0000000002"), 1, "2021-06-01T01:00:00Z", "venue-1")
    };
    let s = dose("s", voucher(SAPPORO, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    store.apply(vec![new_doses(vec![a.clone(), b.clone(), s.clone()])]).await.unwrap();
    assert_eq!(ids(&store.unmatched_doses(code(CHIYODA)).await.unwrap()), vec![a.id]);
    assert_eq!(ids(&store.unmatched_doses(code(SAPPORO)).await.unwrap()), vec![s.id]);

    let a1 = store.dose(a.id).await.unwrap().unwrap();
    store.apply(vec![updated_doses(vec![next_revision(&a1, |d| d.matched = Some(person(CHIYODA, "1")))])]).await.unwrap();
    assert!(store.unmatched_doses(code(CHIYODA)).await.unwrap().is_empty());

    let a2 = store.dose(a.id).await.unwrap().unwrap();
    store.apply(vec![updated_doses(vec![next_revision(&a2, |d| d.matched = None)])]).await.unwrap();
    let unmatched = store.unmatched_doses(code(CHIYODA)).await.unwrap();
    assert_eq!(unmatched, vec![store.dose(a.id).await.unwrap().unwrap()], "the latest version, once");
}

/// A site's doses of a day are those registered on that date in Japan (UTC+9).
pub async fn doses_by_site_use_the_jst_date(store: DynStore) {
    let venue = SiteId::parse("venue-1").unwrap();
    let venue10 = SiteId::parse("venue-10").unwrap();
    // 16:00Z is 01:00 the next day in Japan; 14:59Z is still 23:59 the same day.
    let late = dose("late", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T16:00:00Z", "venue-1");
    let evening = dose("evening", voucher(CHIYODA, "0000000002"), 1, "2021-06-01T14:59:59Z", "venue-1");
    let other_site = dose("other", voucher(CHIYODA, "0000000003"), 1, "2021-06-01T16:00:00Z", "venue-10");
    let other_owner = dose("sapporo", voucher(SAPPORO, "0000000003"), 1, "2021-06-01T20:00:00Z", "venue-1");
    store.apply(vec![new_doses(vec![late.clone(), evening.clone(), other_site.clone(), other_owner.clone()])]).await.unwrap();

    let mut on_2nd = ids(&store.doses_by_site(&venue, day("2021-06-02")).await.unwrap());
    on_2nd.sort();
    let mut expected = vec![late.id, other_owner.id];
    expected.sort();
    assert_eq!(on_2nd, expected, "every municipality's doses a site registered");
    assert_eq!(ids(&store.doses_by_site(&venue, day("2021-06-01")).await.unwrap()), vec![evening.id]);
    assert_eq!(ids(&store.doses_by_site(&venue10, day("2021-06-02")).await.unwrap()), vec![other_site.id]);
    assert!(store.doses_by_site(&venue10, day("2021-06-01")).await.unwrap().is_empty());
    assert!(store.doses_by_site(&venue, day("2021-06-03")).await.unwrap().is_empty());

    // An update keeps the dose listed once, in its latest version.
    let stored = store.dose(late.id).await.unwrap().unwrap();
    store.apply(vec![updated_doses(vec![next_revision(&stored, |d| d.versions[0].details.lot = "FA5766".into())])]).await.unwrap();
    let listed = store.doses_by_site(&venue, day("2021-06-02")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|d| d.id == late.id && d.details().lot == "FA5766"));
}

/// Findings are upserted per (dose, kind); the queue lists open ones, or all.
pub async fn findings_open_and_closed(store: DynStore) {
    let a = dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    let b = dose("b", voucher(CHIYODA, "0000000002"), 2, "2021-06-01T01:00:00Z", "venue-1");
    let s = dose("s", voucher(SAPPORO, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    let fa1 = finding(&a, FindingKind::Unmatched, true);
    let fa2 = finding(&a, FindingKind::LotImplausible, true);
    let fb = Finding { related: Some(a.id), ..finding(&b, FindingKind::Duplicate, true) };
    let fs = finding(&s, FindingKind::Unmatched, true);
    store
        .apply(vec![ChangeSet {
            new_doses: vec![a.clone(), b.clone(), s.clone()],
            findings: vec![fa1.clone(), fa2.clone(), fb.clone(), fs.clone()],
            ..ChangeSet::default()
        }])
        .await
        .unwrap();
    assert_eq!(
        sorted_findings(store.findings(code(CHIYODA), true).await.unwrap()),
        sorted_findings(vec![fa1.clone(), fa2.clone(), fb.clone()])
    );
    assert_eq!(store.findings(code(SAPPORO), false).await.unwrap(), vec![fs]);
    assert!(store.findings(code(OSAKA), false).await.unwrap().is_empty());
    assert_eq!(sorted_findings(store.findings_for_dose(a.id).await.unwrap()), sorted_findings(vec![fa1.clone(), fa2.clone()]));

    // Close one (the upload arrived): it leaves the open queue, stays in the full list once.
    let fa1_closed = Finding { open: false, closed_at: Some(at("2021-06-05T00:00:00Z")), ..fa1.clone() };
    store.apply(vec![ChangeSet { findings: vec![fa1_closed.clone()], ..ChangeSet::default() }]).await.unwrap();
    assert_eq!(sorted_findings(store.findings(code(CHIYODA), true).await.unwrap()), sorted_findings(vec![fa2.clone(), fb.clone()]));
    assert_eq!(
        sorted_findings(store.findings(code(CHIYODA), false).await.unwrap()),
        sorted_findings(vec![fa1_closed.clone(), fa2.clone(), fb.clone()])
    );
    assert_eq!(sorted_findings(store.findings_for_dose(a.id).await.unwrap()), sorted_findings(vec![fa1_closed, fa2.clone()]));
    // Reopen with new words: still one finding per (dose, kind).
    let fa1_again = Finding { detail: "raised again".into(), ..fa1 };
    store.apply(vec![ChangeSet { findings: vec![fa1_again.clone()], ..ChangeSet::default() }]).await.unwrap();
    assert_eq!(
        sorted_findings(store.findings(code(CHIYODA), true).await.unwrap()),
        sorted_findings(vec![fa1_again.clone(), fa2.clone(), fb.clone()])
    );
    assert_eq!(store.findings(code(CHIYODA), false).await.unwrap().len(), 3);
    assert!(store.findings_for_dose(dose_id("nothing")).await.unwrap().is_empty());
}

/// Counter deltas add up per group, a counter that reaches zero vanishes, and the
/// National / Prefecture / Municipality queries read the right ranges.
pub async fn counters_sum_vanish_at_zero_and_range_by_prefecture(store: DynStore) {
    let chiyoda = stats_key(CHIYODA, "2021-06-01", 1);
    let chiyoda2 = stats_key(CHIYODA, "2021-06-01", 2);
    let chuo = stats_key(CHUO, "2021-06-01", 1);
    let sapporo = StatsKey { sex: Sex::Unknown, age_band: AgeBand::Unknown, ..stats_key(SAPPORO, "2021-06-02", 1) };
    let counters = |c: Vec<(StatsKey, i64)>| ChangeSet { counters: c, ..ChangeSet::default() };
    store.apply(vec![counters(vec![(chiyoda.clone(), 1), (chuo.clone(), 1)])]).await.unwrap();
    store
        .apply(vec![
            counters(vec![(chiyoda.clone(), 1), (sapporo.clone(), 3), (chiyoda2.clone(), 1)]),
            counters(vec![(chiyoda2.clone(), -1)]),
        ])
        .await
        .unwrap();

    let national = sorted_rows(store.statistics(StatsQuery::National).await.unwrap());
    let mut expected = vec![(chiyoda.clone(), 2), (chuo.clone(), 1), (sapporo.clone(), 3)];
    expected.sort();
    assert_eq!(national, expected, "zero counters are not listed");
    let mut tokyo = vec![(chiyoda.clone(), 2), (chuo.clone(), 1)];
    tokyo.sort();
    assert_eq!(sorted_rows(store.statistics(StatsQuery::Prefecture(13)).await.unwrap()), tokyo);
    assert_eq!(sorted_rows(store.statistics(StatsQuery::Prefecture(1)).await.unwrap()), vec![(sapporo.clone(), 3)]);
    assert!(store.statistics(StatsQuery::Prefecture(27)).await.unwrap().is_empty());
    assert!(store.statistics(StatsQuery::Prefecture(47)).await.unwrap().is_empty());
    assert_eq!(sorted_rows(store.statistics(StatsQuery::Municipality(code(CHIYODA))).await.unwrap()), vec![(chiyoda.clone(), 2)]);
    assert!(store.statistics(StatsQuery::Municipality(code(OSAKA))).await.unwrap().is_empty());

    store.apply(vec![counters(vec![(chiyoda.clone(), -2), (sapporo.clone(), -1)])]).await.unwrap();
    assert!(store.statistics(StatsQuery::Municipality(code(CHIYODA))).await.unwrap().is_empty(), "vanished at zero");
    assert_eq!(sorted_rows(store.statistics(StatsQuery::Prefecture(13)).await.unwrap()), vec![(chuo, 1)]);
    assert_eq!(sorted_rows(store.statistics(StatsQuery::Prefecture(1)).await.unwrap()), vec![(sapporo, 2)]);
    // Back up from zero.
    store.apply(vec![counters(vec![(chiyoda.clone(), 1)])]).await.unwrap();
    assert_eq!(sorted_rows(store.statistics(StatsQuery::Municipality(code(CHIYODA))).await.unwrap()), vec![(chiyoda, 1)]);
}

/// Accounts are upserted by id and listed by their site's municipality.
pub async fn accounts_upsert_and_list_by_municipality(store: DynStore) {
    let t1 = account("tablet-1", "venue-1", CHIYODA);
    let t2 = account("tablet-2", "clinic-9", CHIYODA);
    let t3 = account("tablet-3", "sapporo-1", SAPPORO);
    store.apply(vec![ChangeSet { accounts: vec![t2.clone(), t1.clone(), t3.clone()], ..ChangeSet::default() }]).await.unwrap();
    let by_id = |mut v: Vec<TabletAccount>| {
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    assert_eq!(by_id(store.accounts(code(CHIYODA)).await.unwrap()), vec![t1.clone(), t2.clone()]);
    assert_eq!(store.accounts(code(SAPPORO)).await.unwrap(), vec![t3.clone()]);
    assert!(store.accounts(code(OSAKA)).await.unwrap().is_empty());
    assert_eq!(store.account(&t1.id).await.unwrap(), Some(t1.clone()));
    assert_eq!(store.account(&AccountId::parse("nobody").unwrap()).await.unwrap(), None);

    // Revoke one: replaced, still listed once.
    let t1_revoked = TabletAccount { revoked_at: Some(at("2021-07-01T00:00:00Z")), ..t1 };
    store.apply(vec![ChangeSet { accounts: vec![t1_revoked.clone()], ..ChangeSet::default() }]).await.unwrap();
    assert_eq!(store.account(&t1_revoked.id).await.unwrap(), Some(t1_revoked.clone()));
    assert_eq!(by_id(store.accounts(code(CHIYODA)).await.unwrap()), vec![t1_revoked.clone(), t2.clone()]);
    // An account re-issued to a site in another municipality moves lists.
    let t2_moved = account("tablet-2", "osaka-1", OSAKA);
    store.apply(vec![ChangeSet { accounts: vec![t2_moved.clone()], ..ChangeSet::default() }]).await.unwrap();
    assert_eq!(store.accounts(code(CHIYODA)).await.unwrap(), vec![t1_revoked]);
    assert_eq!(store.accounts(code(OSAKA)).await.unwrap(), vec![t2_moved]);
}

/// The audit trail of a municipality lists its events oldest first.
pub async fn audit_in_order(store: DynStore) {
    let e = |m: &str, n: u32| event(m, "register", &format!("event {n}"));
    store.apply(vec![ChangeSet { audit: vec![e(CHIYODA, 1), e(SAPPORO, 1), e(CHIYODA, 2)], ..ChangeSet::default() }]).await.unwrap();
    store
        .apply(vec![
            ChangeSet { audit: vec![e(CHIYODA, 3)], ..ChangeSet::default() },
            ChangeSet { audit: vec![e(CHIYODA, 4)], ..ChangeSet::default() },
        ])
        .await
        .unwrap();
    let d = dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1");
    let with_dose = AuditEvent { dose: Some(d.id), ..e(CHIYODA, 5) };
    store.apply(vec![ChangeSet { new_doses: vec![d], audit: vec![with_dose.clone()], ..ChangeSet::default() }]).await.unwrap();
    assert_eq!(store.audit(code(CHIYODA)).await.unwrap(), vec![e(CHIYODA, 1), e(CHIYODA, 2), e(CHIYODA, 3), e(CHIYODA, 4), with_dose]);
    assert_eq!(store.audit(code(SAPPORO)).await.unwrap(), vec![e(SAPPORO, 1)]);
    assert!(store.audit(code(OSAKA)).await.unwrap().is_empty());
}

/// A visitor's error stops a scan (of residents or doses) and is returned as it was.
pub async fn visitor_error_stops_the_scan(store: DynStore) {
    // More residents than any sensible chunk, so the scan is stopped mid-stream.
    let many: Vec<Resident> = (1..=2500).map(|i| resident(CHIYODA, &i.to_string(), &format!("{i:010}"))).collect();
    let (_, applied) = store.import_residents(TestSource::new(many, 1000, true)).await.unwrap();
    assert_eq!(applied.inserted, 2500);
    let stop = |seen: usize| Error::NotFound { what: format!("stopped after {seen}") };

    let mut seen = 0usize;
    let result = store
        .scan_residents(code(CHIYODA), &mut |_| {
            seen += 1;
            if seen == 5 { Err(stop(seen)) } else { Ok(()) }
        })
        .await;
    match result {
        Err(Error::NotFound { what }) => assert_eq!(what, "stopped after 5"),
        other => panic!("expected the visitor's error, got {other:?}"),
    }
    assert_eq!(seen, 5, "no record after the error");

    let doses: Vec<DoseRecord> =
        (1..=3).map(|i| dose(&format!("d{i}"), voucher(CHIYODA, &format!("{i:010}")), 1, "2021-06-01T01:00:00Z", "venue-1")).collect();
    store.apply(vec![new_doses(doses)]).await.unwrap();
    for scan in [DoseScan::ByVoucher, DoseScan::ChangedSince { after: 0 }] {
        let mut seen = 0usize;
        let result = store
            .scan_doses(code(CHIYODA), scan, &mut |_| {
                seen += 1;
                Err(stop(seen))
            })
            .await;
        assert!(matches!(result, Err(Error::NotFound { .. })), "{scan:?}: {result:?}");
        assert_eq!(seen, 1, "{scan:?}");
    }
    // The store is still whole.
    assert_eq!(scanned_residents(&store, CHIYODA).await.len(), 2500);
    assert_eq!(scanned_doses(&store, CHIYODA, DoseScan::ByVoucher).await.0.len(), 3);
}

/// Values with every field set come back exactly as written, through every read.
pub async fn values_round_trip_exactly(store: DynStore) {
    let from = voucher(SAPPORO, "0000012345");
    let r = Resident {
        person: person(CHIYODA, "000123456789012"),
        voucher: VoucherNumber::parse("0123456789").unwrap(),
        name: PersonalText("髙橋 𠮷子".into()),
        name_kana: PersonalText("タカハシ ヨシコ".into()),
        birth_date: day("1947-02-28"),
        sex: Sex::Unknown,
        address: Some(PersonalText("東京都千代田区千代田1-1 (\"quoted\", 改行\nあり)".into())),
        previous: Some(from),
        personal_number_hash: Some(PersonalNumberHash([0xa5; 32])),
        status: ResidentStatus::Deceased,
        status_date: Some(day("2021-08-31")),
    };
    import(&store, vec![r.clone()], 1, 0).await;
    assert_eq!(store.resident(&r.person).await.unwrap(), Some(r.clone()));
    assert_eq!(store.resident_by_voucher(r.voucher_ref()).await.unwrap(), Some(r.clone()));
    assert_eq!(store.residents_by_previous_voucher(from).await.unwrap(), vec![r.clone()]);
    assert_eq!(store.moved_in_residents(code(CHIYODA)).await.unwrap(), vec![r.clone()]);
    assert_eq!(scanned_residents(&store, CHIYODA).await, vec![r.clone()]);

    let registered_at = at("2021-06-01T16:00:00.123456789Z");
    let details = DoseDetails {
        dose_number: 3,
        date_given: day("2021-06-02"),
        administering_municipality: code(OSAKA),
        site: SiteId::parse("G-MIS:1311234567").unwrap(),
        site_name: "大阪市立 集団接種会場（第１）".into(),
        doctor: "山田 太郎".into(),
        product: ProductCode::new("moderna"),
        maker: "武田/モデルナ".into(),
        lot: "3004734".into(),
        lot_expiry: None,
    };
    let d = DoseRecord {
        id: dose_id("every-field"),
        idempotency_key: IdempotencyKey::parse("every-field").unwrap(),
        voucher: r.voucher_ref(),
        ticket_kind: 9,
        registered_at,
        registered_by: AccountId::parse("osaka.venue-1_tablet:7").unwrap(),
        matched: Some(r.person.clone()),
        versions: vec![
            DoseVersion {
                version: 1,
                details: details.clone(),
                voided: false,
                recorded_at: registered_at,
                recorded_by: "site osaka".into(),
                reason: None,
            },
            DoseVersion {
                version: 2,
                details: DoseDetails { lot: "3004735".into(), ..details.clone() },
                voided: false,
                recorded_at: at("2021-06-02T01:02:03Z"),
                recorded_by: format!("staff tester@{CHIYODA}"),
                reason: Some("ロット番号の誤記".into()),
            },
            DoseVersion {
                version: 3,
                details: DoseDetails { lot: "3004735".into(), ..details },
                voided: true,
                recorded_at: at("2021-06-03T01:02:03Z"),
                recorded_by: format!("staff tester@{CHIYODA}"),
                reason: Some("二重登録".into()),
            },
        ],
        revision: 7,
        seq: 0,
    };
    let f = Finding {
        dose: d.id,
        municipality: code(CHIYODA),
        kind: FindingKind::VoucherDeceased,
        severity: Severity::ToCheck,
        detail: "the holder died on 2021-08-31 — \"quoted\"".into(),
        related: Some(dose_id("other")),
        open: false,
        raised_at: at("2021-06-01T16:00:00.5Z"),
        closed_at: Some(at("2021-06-04T00:00:00Z")),
    };
    let acc = TabletAccount {
        id: AccountId::parse("osaka.venue-1_tablet:7").unwrap(),
        site: Site {
            id: SiteId::parse("G-MIS:1311234567").unwrap(),
            name: "大阪市立 集団接種会場（第１）".into(),
            municipality: code(OSAKA),
        },
        issued_by: "staff admin@271004".into(),
        issued_at: at("2021-05-01T09:00:00+09:00"),
        revoked_at: Some(at("2021-12-31T23:59:59.999Z")),
    };
    let key = StatsKey {
        municipality: code(CHIYODA),
        date: day("2021-06-02"),
        dose_number: 3,
        sex: Sex::Male,
        age_band: AgeBand::Age90Plus,
        product: ProductCode::new("moderna"),
    };
    let ev = AuditEvent {
        at: registered_at,
        municipality: code(CHIYODA),
        actor: "site G-MIS:1311234567 account osaka.venue-1_tablet:7".into(),
        action: "void".into(),
        dose: Some(d.id),
        detail: "三回目 取消".into(),
    };
    let applied = store
        .apply(vec![ChangeSet {
            new_doses: vec![d.clone()],
            findings: vec![f.clone()],
            counters: vec![(key.clone(), 5)],
            accounts: vec![acc.clone()],
            audit: vec![ev.clone()],
            ..ChangeSet::default()
        }])
        .await
        .unwrap();
    let expected = DoseRecord { seq: applied.seq, ..d };
    assert_eq!(store.dose(expected.id).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.doses_by_voucher(r.voucher_ref()).await.unwrap(), vec![expected.clone()]);
    assert_eq!(store.doses_by_site(&expected.details().site, day("2021-06-02")).await.unwrap(), vec![expected.clone()]);
    assert!(store.unmatched_doses(code(CHIYODA)).await.unwrap().is_empty());
    assert_eq!(scanned_doses(&store, CHIYODA, DoseScan::ByVoucher).await, (vec![expected.clone()], applied.seq));
    assert_eq!(scanned_doses(&store, CHIYODA, DoseScan::ChangedSince { after: 0 }).await, (vec![expected.clone()], applied.seq));
    assert!(scanned_doses(&store, OSAKA, DoseScan::ByVoucher).await.0.is_empty(), "a dose belongs to the issuing municipality");
    assert_eq!(store.findings(code(CHIYODA), false).await.unwrap(), vec![f.clone()]);
    assert_eq!(store.findings_for_dose(expected.id).await.unwrap(), vec![f]);
    assert_eq!(store.account(&acc.id).await.unwrap(), Some(acc.clone()));
    assert_eq!(store.accounts(code(OSAKA)).await.unwrap(), vec![acc]);
    assert_eq!(store.statistics(StatsQuery::Municipality(code(CHIYODA))).await.unwrap(), vec![StatsRow { key, count: 5 }]);
    assert_eq!(store.audit(code(CHIYODA)).await.unwrap(), vec![ev]);
}

/// [`StoreBackend::scan_ledger_doses`] yields what a `ByVoucher` scan does, each dose as
/// [`LedgerDoses::from_records`] projects it (newest version, voids and matches
/// included), and the same cursor; a visitor's error stops it.
pub async fn ledger_scan_is_the_by_voucher_scan_projected(store: DynStore) {
    let matched = DoseRecord {
        matched: Some(person(CHIYODA, "000042")),
        ..dose("m", voucher(CHIYODA, "0000000200"), 1, "2021-06-01T16:00:00.25Z", "venue-1")
    };
    let unmatched = dose("u", voucher(CHIYODA, "0000000100"), 2, "2021-06-02T01:00:00Z", "venue-2");
    let corrected = dose("c", voucher(CHIYODA, "0000000100"), 1, "2021-06-03T01:00:00Z", "venue-1");
    let voided = dose("v", voucher(CHIYODA, "0000000300"), 1, "2021-06-04T01:00:00Z", "venue-1");
    let elsewhere = dose("e", voucher(CHUO, "0000000100"), 1, "2021-06-04T01:00:00Z", "venue-1");
    store.apply(vec![new_doses(vec![matched, unmatched, corrected.clone(), voided.clone(), elsewhere])]).await.unwrap();
    let fix = |d: &DoseRecord, change: fn(&mut DoseVersion)| {
        next_revision(d, |d| {
            let mut v = d.current().clone();
            v.version += 1;
            v.reason = Some("テスト, \"訂正\"".into());
            change(&mut v);
            d.versions.push(v);
        })
    };
    let corrected = fix(&store.dose(corrected.id).await.unwrap().unwrap(), |v| {
        v.details.lot = "EY0779".into();
        v.details.dose_number = 3;
    });
    let voided = fix(&store.dose(voided.id).await.unwrap().unwrap(), |v| v.voided = true);
    store.apply(vec![updated_doses(vec![corrected, voided])]).await.unwrap();

    let (records, cursor) = scanned_doses(&store, CHIYODA, DoseScan::ByVoucher).await;
    assert_eq!(records.len(), 4);
    let mut batches = Vec::new();
    let ledger_cursor = store
        .scan_ledger_doses(code(CHIYODA), &mut |d| {
            batches.push(d);
            Ok(())
        })
        .await
        .unwrap();
    let projected: Vec<_> = batches.iter().flat_map(|b| b.iter()).collect();
    assert_eq!(projected, LedgerDoses::from_records(&records).iter().collect::<Vec<_>>());
    assert_eq!(ledger_cursor, cursor);
    assert!(projected.iter().any(|d| d.voided()) && projected.iter().any(|d| d.lot() == "EY0779" && d.dose_number() == 3));
    assert_eq!(projected.iter().filter_map(|d| d.matched()).collect::<Vec<_>>(), vec![(code(CHIYODA), "000042")]);

    let mut none = 0;
    let empty = store
        .scan_ledger_doses(code(OSAKA), &mut |_| {
            none += 1;
            Ok(())
        })
        .await;
    assert_eq!((empty.unwrap(), none), (0, 0));
    let mut seen = 0;
    let stopped = store
        .scan_ledger_doses(code(CHIYODA), &mut |_| {
            seen += 1;
            Err(Error::NotFound { what: "stop".into() })
        })
        .await;
    assert!(matches!(stopped, Err(Error::NotFound { .. })), "{stopped:?}");
    assert_eq!(seen, 1);
}

/// `items` cut into consecutive runs of the given sizes (together, all of them).
fn split_like<'a, T>(items: &'a [T], sizes: &'a [usize]) -> impl Iterator<Item = &'a [T]> {
    assert_eq!(sizes.iter().sum::<usize>(), items.len(), "every item in exactly one batch");
    sizes.iter().scan(0, move |start, &n| {
        let run = &items[*start..*start + n];
        *start += n;
        Some(run)
    })
}

/// [`StoreBackend::scan_dose_columns`] and [`StoreBackend::scan_resident_columns`] hand
/// over, batch by batch, what the record scans yield, as columns (newest versions,
/// voided and unmatched doses, both dose scans, the same cursors).
pub async fn column_scans_are_the_record_scans_as_columns(store: DynStore) {
    let mut a = resident(CHIYODA, "000042", "0000000200");
    a.address = Some(PersonalText("東京都千代田区千代田1-1".into()));
    a.previous = Some(voucher(CHUO, "0000000999"));
    let residents = vec![a, resident(CHIYODA, "7", "0000000100"), resident(CHIYODA, "0000000000123", "0000000300")];
    import(&store, residents, 3, 0).await;
    let matched = DoseRecord {
        matched: Some(person(CHIYODA, "000042")),
        ..dose("m", voucher(CHIYODA, "0000000200"), 1, "2021-06-01T16:00:00.25Z", "venue-1")
    };
    let unmatched = dose("u", voucher(CHIYODA, "0000000100"), 2, "2021-06-02T01:00:00Z", "venue-2");
    let voided = dose("v", voucher(CHIYODA, "0000000300"), 1, "2021-06-04T01:00:00Z", "venue-1");
    let elsewhere = dose("e", voucher(CHUO, "0000000100"), 1, "2021-06-04T01:00:00Z", "venue-1");
    store.apply(vec![new_doses(vec![matched, unmatched, voided.clone(), elsewhere])]).await.unwrap();
    let voided = next_revision(&store.dose(voided.id).await.unwrap().unwrap(), |d| {
        let mut v = d.current().clone();
        v.version += 1;
        v.voided = true;
        v.details.lot = "EY0779".into();
        d.versions.push(v);
    });
    store.apply(vec![updated_doses(vec![voided])]).await.unwrap();

    for scan in [DoseScan::ByVoucher, DoseScan::ChangedSince { after: 0 }, DoseScan::ChangedSince { after: 2 }] {
        let (records, cursor) = scanned_doses(&store, CHIYODA, scan).await;
        let mut batches = Vec::new();
        let columns_cursor = store
            .scan_dose_columns(code(CHIYODA), scan, 2, &mut |c| {
                batches.push(c);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(columns_cursor, cursor, "{scan:?}");
        // Batches of at most `rows`, in order; a store may end one early (a parallel scan
        // ends one at each chunk of its range).
        let sizes: Vec<usize> = batches.iter().map(crate::columns::DoseColumns::len).collect();
        assert!(sizes.iter().all(|&n| (1..=2).contains(&n)), "{scan:?}: {sizes:?}");
        let expected: Vec<_> = split_like(&records, &sizes)
            .map(|chunk| {
                let mut c = crate::columns::DoseColumns::with_capacity(2);
                chunk.iter().for_each(|d| c.push_record(d).unwrap());
                c
            })
            .collect();
        assert_eq!(batches, expected, "{scan:?}");
    }
    let (all, _) = scanned_doses(&store, CHIYODA, DoseScan::ByVoucher).await;
    assert_eq!(all.len(), 3);

    let records = scanned_residents(&store, CHIYODA).await;
    let mut batches = Vec::new();
    store
        .scan_resident_columns(code(CHIYODA), 2, &mut |c| {
            batches.push(c);
            Ok(())
        })
        .await
        .unwrap();
    let sizes: Vec<usize> = batches.iter().map(crate::columns::ResidentColumns::len).collect();
    assert!(sizes.iter().all(|&n| (1..=2).contains(&n)), "{sizes:?}");
    let expected: Vec<_> = split_like(&records, &sizes)
        .map(|chunk| {
            let mut c = crate::columns::ResidentColumns::with_capacity(2);
            chunk.iter().for_each(|r| c.push_resident(r).unwrap());
            c
        })
        .collect();
    assert_eq!(batches, expected);
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 3);

    let mut seen = 0;
    let stopped = store
        .scan_dose_columns(code(CHIYODA), DoseScan::ByVoucher, 1, &mut |_| {
            seen += 1;
            Err(Error::NotFound { what: "stop".into() })
        })
        .await;
    assert!(matches!(stopped, Err(Error::NotFound { .. })), "{stopped:?}");
    assert_eq!(seen, 1);
}

/// The resident columns a store hands out equal those the trait's default builds from
/// [`StoreBackend::scan_residents`], every column, batch by batch, in `m`.
async fn resident_columns_are_the_default(store: &DynStore, m: &str, step: &str) {
    let records = scanned_residents(store, m).await;
    for rows in [2, 1 << 16] {
        let mut batches = Vec::new();
        store
            .scan_resident_columns(code(m), rows, &mut |c| {
                batches.push(c);
                Ok(())
            })
            .await
            .unwrap();
        let sizes: Vec<usize> = batches.iter().map(crate::columns::ResidentColumns::len).collect();
        assert!(sizes.iter().all(|&n| (1..=rows).contains(&n)), "{step}, {m}: {sizes:?}");
        let expected: Vec<_> = split_like(&records, &sizes)
            .map(|chunk| {
                let mut c = crate::columns::ResidentColumns::with_capacity(rows);
                chunk.iter().for_each(|r| c.push_resident(r).unwrap());
                c
            })
            .collect();
        assert_eq!(batches.len(), expected.len(), "{step}, {m}");
        for (b, e) in batches.iter().zip(&expected) {
            assert_eq!(b.municipality, e.municipality, "{step}, {m}: municipality");
            assert_eq!(b.addressee_number, e.addressee_number, "{step}, {m}: addressee_number");
            assert_eq!(b.voucher_number, e.voucher_number, "{step}, {m}: voucher_number");
            assert_eq!(b.name, e.name, "{step}, {m}: name");
            assert_eq!(b.name_kana, e.name_kana, "{step}, {m}: name_kana");
            assert_eq!(b.birth_date, e.birth_date, "{step}, {m}: birth_date");
            assert_eq!(b.sex, e.sex, "{step}, {m}: sex");
            assert_eq!(b.address, e.address, "{step}, {m}: address");
            assert_eq!(b.previous_municipality, e.previous_municipality, "{step}, {m}: previous_municipality");
            assert_eq!(b.previous_voucher_number, e.previous_voucher_number, "{step}, {m}: previous_voucher_number");
            assert_eq!(b.status, e.status, "{step}, {m}: status");
            assert_eq!(b.status_date, e.status_date, "{step}, {m}: status_date");
        }
        assert_eq!(batches, expected, "{step}, {m}");
    }
}

/// A resident CSV upload of `m`, all or nothing unless `skip_invalid`.
fn csv_upload(m: &str, text: &str, skip_invalid: bool) -> Box<dyn ResidentSource> {
    let options = crate::import::ImportOptions { skip_invalid, ..crate::import::ImportOptions::new(code(m)) };
    Box::new(crate::import::ResidentCsvSource::new(std::io::Cursor::new(text.as_bytes().to_vec()), options).unwrap())
}

/// [`StoreBackend::scan_resident_columns`] follows every import (a store may keep the
/// columns apart from the rows, e.g. as a projection its imports maintain): first uploads,
/// re-uploads restating and moving out residents, moved-in residents, an all-or-nothing
/// upload refused for bad rows, an upload applied with its bad rows skipped, an import
/// whose source fails midway. Checked in every municipality touched, with batches of 2
/// and of a whole Arrow batch.
pub async fn resident_columns_follow_every_import(store: DynStore) {
    let check = |step: &'static str| {
        let store = store.clone();
        async move {
            for m in [CHIYODA, CHUO, SAPPORO] {
                resident_columns_are_the_default(&store, m, step).await;
            }
        }
    };
    check("empty").await;
    let mut first: Vec<Resident> = (1..=40).map(|i| resident(CHIYODA, &i.to_string(), &format!("{i:010}"))).collect();
    for (i, r) in first.iter_mut().enumerate() {
        if i % 3 == 0 {
            r.address = Some(PersonalText(format!("東京都千代田区千代田{i}-1")));
        }
        if i % 5 == 0 {
            r.previous = Some(voucher(SAPPORO, &format!("{:010}", 900 + i)));
        }
        r.name = PersonalText(format!("接種 花子{}", "子".repeat(i % 7)));
    }
    import(&store, first.clone(), 40, 0).await;
    import(
        &store,
        (1..=5).map(|i| moved_in(CHUO, &format!("{i:06}"), &format!("{i:010}"), voucher(CHIYODA, "0000000001"))).collect(),
        5,
        0,
    )
    .await;
    check("first uploads").await;

    // A re-upload restating some residents (name, sex, birth date, address dropped) and
    // moving others out or marking them deceased, adding a few.
    let mut second = first.clone();
    for (i, r) in second.iter_mut().enumerate() {
        match i % 4 {
            0 => {
                r.name = PersonalText("訂正 太郎".into());
                r.sex = Sex::Male;
                r.birth_date = day("1961-05-02");
                r.address = None;
            }
            1 => {
                r.status = ResidentStatus::MovedOut;
                r.status_date = Some(day("2022-04-01"));
            }
            2 => {
                r.status = ResidentStatus::Deceased;
                r.status_date = Some(day("2022-05-01"));
                r.previous = None;
            }
            _ => r.voucher = VoucherNumber::parse(&format!("{:010}", 5000 + i)).unwrap(),
        }
    }
    second.extend((41..=45).map(|i| resident(CHIYODA, &i.to_string(), &format!("{i:010}"))));
    import(&store, second, 5, 40).await;
    check("re-upload").await;

    // Refused: an all-or-nothing upload with a bad row, by a source and by a CSV file.
    let refused = vec![resident(CHIYODA, "1", "0000000777"), resident(CHIYODA, "99", "0000000099")];
    let (_, applied) = store.import_residents(TestSource::new(refused, 1, false)).await.unwrap();
    assert!(!applied.committed);
    let csv = "宛名番号,券番号,氏名,生年月日,性別\n1,0000000888,差替 一郎,2000-01-01,1\n2,0000000002,壊れ,1999-02-30,1\n100,0000000100,新規,2000-01-01,2\n";
    let (_, applied) = store.import_residents(csv_upload(CHIYODA, csv, false)).await.unwrap();
    assert!(!applied.committed);
    check("refused uploads").await;

    // The same file with its bad row skipped: the good rows apply.
    let (_, applied) = store.import_residents(csv_upload(CHIYODA, csv, true)).await.unwrap();
    assert!(applied.committed);
    assert_eq!((applied.inserted, applied.replaced), (1, 1));
    check("bad rows skipped").await;

    // A source failing midway leaves what was there.
    let rows: Vec<Resident> = (200..=210).map(|i| resident(CHUO, &i.to_string(), &format!("{i:010}"))).collect();
    assert!(store.import_residents(TestSource::failing_at(rows, 2, 3)).await.is_err());
    check("failed import").await;
}

/// Every dose of `batches`, one row each (a dose's row is the same whatever batch it came in).
fn column_rows(batches: &[crate::columns::DoseColumns]) -> Vec<crate::columns::DoseColumns> {
    batches.iter().flat_map(|b| (0..b.len()).map(move |i| b.rows(i..i + 1).unwrap())).collect()
}

/// Reads `m`'s dose columns in voucher order three times (a store may build a read-side
/// copy on the first read after writes and read it on the next) and checks each against
/// the trait's default: the columns of [`scan_doses`](StoreBackend::scan_doses)' records.
async fn columns_are_the_records(store: &DynStore, m: &str, what: &str) {
    let (records, cursor) = scanned_doses(store, m, DoseScan::ByVoucher).await;
    let expected: Vec<_> = records
        .iter()
        .map(|d| {
            let mut c = crate::columns::DoseColumns::with_capacity(1);
            c.push_record(d).unwrap();
            c
        })
        .collect();
    for (read, rows) in [(1, 1 << 16), (2, 1 << 16), (3, 2)] {
        let mut batches = Vec::new();
        let high = store
            .scan_dose_columns(code(m), DoseScan::ByVoucher, rows, &mut |c| {
                batches.push(c);
                Ok(())
            })
            .await
            .unwrap();
        assert!(batches.iter().all(|b| (1..=rows).contains(&b.len())), "{what}, {m}, read {read}");
        let got = column_rows(&batches);
        assert_eq!(got.len(), expected.len(), "doses {what}, {m}, read {read}");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != expected[i]) {
            assert_eq!(got[i], expected[i], "dose {i} {what}, {m}, read {read}");
        }
        assert_eq!(high, cursor, "{what}, {m}, read {read}");
    }
}

/// Voucher-order column reads give the doses as they stand after every kind of write
/// between two reads: registrations, corrections, voids, duplicates, matching on upload,
/// moved-in residents, a re-upload, a dose moved to another voucher, and a registration
/// racing a read (a store that keeps a read-side copy of the columns must notice each).
pub async fn column_reads_follow_every_write(store: DynStore) {
    // Vouchers spread over the number space, so that a store cutting the range by voucher
    // digits cuts it in many places.
    let number = |i: u64| format!("{:010}", i * 163_000_001 % 10_000_000_000);
    let mut first = Vec::new();
    for i in 0..60u64 {
        first.push(dose(&format!("c{i}"), voucher(CHIYODA, &number(i)), 1, "2021-06-01T01:00:00Z", "venue-1"));
    }
    first.push(dose("chuo-1", voucher(CHUO, "0000000100"), 1, "2021-06-01T01:00:00Z", "venue-2"));
    store.apply(vec![new_doses(first)]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "registered").await;
    columns_are_the_records(&store, CHUO, "registered").await;
    let empty: &str = SAPPORO;
    columns_are_the_records(&store, empty, "no dose").await;

    // New doses at the start, the middle and the end of the range.
    let more = vec![
        dose("n1", voucher(CHIYODA, "0000000000"), 1, "2021-06-02T01:00:00Z", "venue-1"),
        dose("n2", voucher(CHIYODA, &number(31)), 2, "2021-06-22T01:00:00Z", "venue-1"),
        dose("n3", voucher(CHIYODA, "9999999999"), 1, "2021-06-02T01:00:00Z", "venue-1"),
    ];
    store.apply(vec![new_doses(more)]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "more registered").await;

    // A correction and a void: new versions of stored doses.
    let corrected = next_revision(&store.dose(dose_id("c7")).await.unwrap().unwrap(), |d| {
        let mut v = d.current().clone();
        v.version += 1;
        v.details.lot = "EY0779".into();
        v.details.doctor = "訂正 医師".into();
        d.versions.push(v);
    });
    store.apply(vec![updated_doses(vec![corrected])]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "corrected").await;
    let voided = next_revision(&store.dose(dose_id("c44")).await.unwrap().unwrap(), |d| {
        let mut v = d.current().clone();
        v.version += 1;
        v.voided = true;
        d.versions.push(v);
    });
    store.apply(vec![updated_doses(vec![voided])]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "voided").await;

    // A duplicate: the same voucher's dose 1 again.
    store.apply(vec![new_doses(vec![dose("dup", voucher(CHIYODA, &number(12)), 1, "2021-06-03T01:00:00Z", "venue-2")])]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "duplicate").await;

    // An upload, then its doses matched (as the service does after an import); a moved-in
    // resident whose previous voucher's dose (stored under 中央区) follows them.
    let residents = vec![
        resident(CHIYODA, "1", &number(3)),
        resident(CHIYODA, "22", &number(50)),
        moved_in(CHIYODA, "333", &number(59), voucher(CHUO, "0000000100")),
    ];
    import(&store, residents, 3, 0).await;
    columns_are_the_records(&store, CHIYODA, "uploaded").await;
    let mut matched = Vec::new();
    for (key, who) in [("c3", "1"), ("c50", "22"), ("c59", "333")] {
        matched.push(next_revision(&store.dose(dose_id(key)).await.unwrap().unwrap(), |d| d.matched = Some(person(CHIYODA, who))));
    }
    matched.push(next_revision(&store.dose(dose_id("chuo-1")).await.unwrap().unwrap(), |d| d.matched = Some(person(CHIYODA, "333"))));
    store.apply(vec![updated_doses(matched)]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "matched").await;
    columns_are_the_records(&store, CHUO, "matched").await;

    // A re-upload changing a resident (the doses are unchanged until matched again).
    let mut again = resident(CHIYODA, "22", &number(50));
    again.name = PersonalText("再登録 花子".into());
    import(&store, vec![again], 0, 1).await;
    columns_are_the_records(&store, CHIYODA, "re-uploaded").await;

    // A dose moved to another municipality's voucher leaves this one's range; one moved
    // within the municipality changes its place.
    let away = next_revision(&store.dose(dose_id("c20")).await.unwrap().unwrap(), |d| d.voucher = voucher(CHUO, "0000000200"));
    store.apply(vec![updated_doses(vec![away])]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "moved away").await;
    columns_are_the_records(&store, CHUO, "moved in").await;
    let within = next_revision(&store.dose(dose_id("c21")).await.unwrap().unwrap(), |d| d.voucher = voucher(CHIYODA, "0000000001"));
    store.apply(vec![updated_doses(vec![within])]).await.unwrap();
    columns_are_the_records(&store, CHIYODA, "moved within").await;

    // A read racing registrations: whatever it saw, the reads after see every dose.
    for round in 0..4 {
        let racing = dose(&format!("race{round}"), voucher(CHIYODA, &number(10 + round)), 2, "2021-06-23T01:00:00Z", "venue-1");
        let read = async {
            let mut n = 0;
            store
                .scan_dose_columns(code(CHIYODA), DoseScan::ByVoucher, 1 << 16, &mut |c| {
                    n += c.len();
                    Ok(())
                })
                .await
                .unwrap();
            n
        };
        let (n, applied) = crate::testing_service::join(read, store.apply(vec![new_doses(vec![racing])])).await;
        applied.unwrap();
        let total = scanned_doses(&store, CHIYODA, DoseScan::ByVoucher).await.0.len();
        assert!(n == total || n + 1 == total, "round {round}: read {n} of {total}");
        columns_are_the_records(&store, CHIYODA, &format!("raced, round {round}")).await;
    }
}

/// [`StoreBackend::doses_by_vouchers`] answers each voucher as
/// [`StoreBackend::doses_by_voucher`] does, in the order asked (repeats and vouchers without
/// doses included).
pub async fn doses_by_vouchers_answer_each_voucher_in_order(store: DynStore) {
    let doses = vec![
        dose("a", voucher(CHIYODA, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1"),
        dose("b", voucher(CHIYODA, "0000000001"), 2, "2021-06-22T01:00:00Z", "venue-1"),
        dose("c", voucher(SAPPORO, "0000000001"), 1, "2021-06-01T01:00:00Z", "venue-1"),
        dose("d", voucher(CHIYODA, "0000000002"), 1, "2021-06-01T01:00:00Z", "venue-1"),
    ];
    store.apply(vec![new_doses(doses)]).await.unwrap();
    // Vouchers without doses before, between and after those with doses: a store that
    // reads them in key order and skips ahead must still answer each one.
    let asked = [
        voucher(SAPPORO, "0000000001"),
        voucher(CHIYODA, "0000000009"),
        voucher(CHIYODA, "0000000000"),
        voucher(CHIYODA, "0000000001"),
        voucher(SAPPORO, "0000000000"),
        voucher(SAPPORO, "0000000001"),
        voucher(CHIYODA, "0000000002"),
    ];
    let mut expected = Vec::new();
    for v in asked {
        expected.push(store.doses_by_voucher(v).await.unwrap());
    }
    assert_eq!(expected.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 0, 0, 2, 0, 1, 1]);
    assert_eq!(store.doses_by_vouchers(&asked).await.unwrap(), expected);
    assert!(store.doses_by_vouchers(&[]).await.unwrap().is_empty());
}

/// [`StoreBackend::person_contexts`] answers each query as [`read_person_context`] does
/// with the store's single reads: a stored dose (a replay) with its findings; else the
/// voucher's holder, or the resident who names it as previous voucher, with the doses of
/// all the person's vouchers and their findings; a voucher nobody holds on its own.
pub async fn person_contexts_are_their_single_reads(store: DynStore) {
    let from = voucher(SAPPORO, "0000000077");
    let holder = resident(CHIYODA, "1", "0000000001");
    let newcomer = moved_in(CHIYODA, "2", "0000000002", from);
    import(&store, vec![holder.clone(), newcomer.clone()], 2, 0).await;
    let first =
        DoseRecord { matched: Some(holder.person.clone()), ..dose("h1", holder.voucher_ref(), 1, "2021-06-01T01:00:00Z", "venue-1") };
    let second =
        DoseRecord { matched: Some(holder.person.clone()), ..dose("h2", holder.voucher_ref(), 2, "2021-06-10T01:00:00Z", "venue-1") };
    let before_move = dose("p1", from, 1, "2021-06-01T01:00:00Z", "venue-1");
    let after_move =
        DoseRecord { matched: Some(newcomer.person.clone()), ..dose("n2", newcomer.voucher_ref(), 2, "2021-06-25T01:00:00Z", "venue-1") };
    let stray = dose("s1", voucher(CHIYODA, "0000000099"), 1, "2021-06-01T01:00:00Z", "venue-1");
    let findings = vec![
        finding(&second, FindingKind::IntervalTooShort, true),
        finding(&before_move, FindingKind::Unmatched, false),
        finding(&stray, FindingKind::Unmatched, true),
    ];
    store
        .apply(vec![ChangeSet {
            new_doses: vec![first.clone(), second.clone(), before_move.clone(), after_move.clone(), stray.clone()],
            findings,
            ..ChangeSet::default()
        }])
        .await
        .unwrap();
    let queries = vec![
        PersonQuery { voucher: holder.voucher_ref(), dose: Some(dose_id("new")) },
        PersonQuery { voucher: holder.voucher_ref(), dose: Some(second.id) },
        PersonQuery { voucher: from, dose: None },
        PersonQuery { voucher: newcomer.voucher_ref(), dose: Some(dose_id("new")) },
        PersonQuery { voucher: stray.voucher, dose: None },
        PersonQuery { voucher: voucher(OSAKA, "0000000001"), dose: Some(stray.id) },
        PersonQuery { voucher: voucher(OSAKA, "0000000001"), dose: None },
    ];
    let mut expected = Vec::new();
    for q in &queries {
        expected.push(read_person_context(&*store, *q).await.unwrap());
    }
    assert_eq!(store.person_contexts(&queries).await.unwrap(), expected);
    assert!(store.person_contexts(&[]).await.unwrap().is_empty());
    // A batch's worth of queries at once, in no repeating order (a store may split a large
    // batch, between threads for one): the same answers, in the order asked.
    let order: Vec<usize> = (0..150).map(|i| (i * 5 + i / 7) % queries.len()).collect();
    let many: Vec<PersonQuery> = order.iter().map(|&i| queries[i]).collect();
    let answers = store.person_contexts(&many).await.unwrap();
    assert!(answers == order.iter().map(|&i| expected[i].clone()).collect::<Vec<_>>(), "a large batch answered differently");

    // What the composition reads, spelled out.
    let ids = |doses: &[(VoucherRef, Vec<DoseRecord>)]| doses.iter().map(|(v, ds)| (*v, ds.len())).collect::<Vec<_>>();
    assert_eq!(expected[0].resident.as_ref().map(|r| &r.person), Some(&holder.person));
    assert_eq!(ids(&expected[0].doses), vec![(holder.voucher_ref(), 2)]);
    assert_eq!(expected[0].findings.iter().map(|(_, f)| f.len()).sum::<usize>(), 1);
    let (replayed, its_findings) = expected[1].existing.clone().unwrap();
    assert_eq!((replayed.id, its_findings.len()), (second.id, 1));
    assert!(expected[1].resident.is_none() && expected[1].doses.is_empty(), "a replay reads nothing else");
    for c in [&expected[2], &expected[3]] {
        assert_eq!(c.resident.as_ref().map(|r| &r.person), Some(&newcomer.person), "the previous voucher names the newcomer");
        assert_eq!(ids(&c.doses), vec![(newcomer.voucher_ref(), 1), (from, 1)]);
    }
    assert!(expected[4].resident.is_none());
    assert_eq!((ids(&expected[4].doses), expected[4].findings.len()), (vec![(stray.voucher, 1)], 1));
    assert!(expected[5].existing.is_some(), "a stored id is a replay, whatever the voucher");
    assert_eq!(ids(&expected[6].doses), vec![(voucher(OSAKA, "0000000001"), 0)]);
}
