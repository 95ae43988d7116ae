//! Service-level cases of the conformance suite: the rules of DESIGN.md §3 run end to
//! end through [`Registry`](crate::service::Registry) on the store under test.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Barrier, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::access::{Actor, Site, StatsScope, TabletAccount};
use crate::dose::{DoseCorrection, DoseRecord, DoseRegistration};
use crate::finding::{Finding, FindingKind};
use crate::ids::{AccountId, AddresseeNumber, DoseId, IdempotencyKey, MunicipalityCode, PersonRef, SiteId, VoucherNumber, VoucherRef};
use crate::import::ImportReport;
use crate::ledger::{LedgerOptions, OutputEncoding};
use crate::resident::{PersonalText, Resident, ResidentStatus, Sex};
use crate::service::{FixedClock, RegistrationOutcome, Registry};
use crate::stats::{StatsQuery, StatsRow};
use crate::store::{Applied, AuditEvent, ChangeSet, DoseScan, DynStore, ImportApplied, MovedIn, ResidentSource, StoreBackend, Visit};
use crate::{Error, Result};

pub const CHIYODA: &str = "131016";
pub const SHINJUKU: &str = "131041";

pub fn code(s: &str) -> MunicipalityCode {
    MunicipalityCode::parse(s).unwrap()
}

pub fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// 09:00 JST on a day.
pub fn morning(s: &str) -> DateTime<Utc> {
    let d = date(s);
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
}

/// A resident source over residents in memory, for tests.
pub struct VecSource {
    residents: std::vec::IntoIter<Resident>,
    report: ImportReport,
    commit: bool,
}

impl VecSource {
    /// A source yielding `residents`; `commit` is what `may_commit` answers.
    pub fn new(residents: Vec<Resident>, commit: bool) -> Box<Self> {
        let previous_vouchers = residents.iter().filter_map(|r| r.previous).collect();
        let n = residents.len() as u64;
        Box::new(Self {
            residents: residents.into_iter(),
            report: ImportReport { rows_read: n, rows_valid: n, previous_vouchers, ..ImportReport::default() },
            commit,
        })
    }
}

impl ResidentSource for VecSource {
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Resident>>> {
        let batch: Vec<Resident> = self.residents.by_ref().take(max).collect();
        Ok(if batch.is_empty() { None } else { Some(batch) })
    }
    fn may_commit(&self) -> bool {
        self.commit
    }
    fn into_report(self: Box<Self>) -> ImportReport {
        self.report
    }
}

pub fn resident(m: &str, addressee: &str, voucher: &str, birth: &str) -> Resident {
    Resident {
        person: PersonRef { municipality: code(m), addressee: AddresseeNumber::parse(addressee).unwrap() },
        voucher: VoucherNumber::parse(voucher).unwrap(),
        name: PersonalText("接種太郎".into()),
        name_kana: PersonalText("セッシュタロウ".into()),
        birth_date: date(birth),
        sex: Sex::Female,
        address: Some(PersonalText("東京都千代田区1-1".into())),
        previous: None,
        personal_number_hash: None,
        status: ResidentStatus::Active,
        status_date: None,
    }
}

pub fn staff(m: &str) -> Actor {
    Actor::MunicipalStaff { municipality: code(m), user: "tester".into() }
}

pub fn site_actor(account: &str) -> Actor {
    Actor::Site { account: AccountId::parse(account).unwrap() }
}

/// A registry on `store` with a clock at 2021-07-01 09:00 JST, two sites with accounts
/// (`venue` in 千代田区, `clinic` in 新宿区) and a few residents of 千代田区.
pub async fn setup(store: DynStore) -> (Registry, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock::new(morning("2021-07-01")));
    let registry = Registry::new(store, clock.clone());
    let venue = Site { id: SiteId::parse("venue-1").unwrap(), name: "千代田区民会館".into(), municipality: code(CHIYODA) };
    let clinic = Site { id: SiteId::parse("1311234567").unwrap(), name: "新宿クリニック".into(), municipality: code(SHINJUKU) };
    registry.issue_account(&staff(CHIYODA), venue, AccountId::parse("venue").unwrap()).await.unwrap();
    registry.issue_account(&staff(SHINJUKU), clinic, AccountId::parse("clinic").unwrap()).await.unwrap();
    let residents = vec![
        resident(CHIYODA, "1", "0000000001", "1950-04-02"),
        resident(CHIYODA, "2", "0000000002", "1980-12-31"),
        resident(CHIYODA, "3", "0000000003", "2015-01-01"),
    ];
    registry.import_residents(&staff(CHIYODA), code(CHIYODA), VecSource::new(residents, true)).await.unwrap();
    (registry, clock)
}

pub fn ocr(dose: u8, m: &str, voucher: &str) -> String {
    format!("1{dose}{m}{voucher}")
}

pub fn registration(key: &str, dose: u8, m: &str, voucher: &str, given: &str, product: &str, lot: &str) -> DoseRegistration {
    DoseRegistration {
        ocr_line: ocr(dose, m, voucher),
        dose_number: None,
        date_given: date(given),
        product: product.into(),
        lot: lot.into(),
        doctor: "佐藤一郎".into(),
        idempotency_key: IdempotencyKey::parse(key).unwrap(),
        lot_expiry: None,
    }
}

fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
    let mut k: Vec<FindingKind> = findings.iter().filter(|f| f.open).map(|f| f.kind).collect();
    k.sort();
    k
}

async fn total(registry: &Registry, m: &str) -> u64 {
    registry.statistics(&staff(m), StatsQuery::Municipality(code(m))).await.unwrap().iter().map(|r| r.count).sum()
}

async fn ledger_csv(registry: &Registry, m: &str, since: Option<u64>) -> (String, u64) {
    let mut out = Vec::new();
    let export = registry
        .export_ledger(&staff(m), code(m), &LedgerOptions { encoding: OutputEncoding::Utf8, since, no_header: false }, &mut out)
        .await
        .unwrap();
    (String::from_utf8(out).unwrap(), export.cursor)
}

/// A matched dose, an unmatched one, and the unmatched one matched when its resident's
/// upload arrives: its finding closes and the statistics learn sex and age.
pub async fn matched_unmatched_then_matched(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    let ok = registry.register(&venue, &registration("k1", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765")).await.unwrap();
    assert!(ok.matched && !ok.replayed);
    assert!(ok.findings.is_empty(), "{:?}", ok.findings);
    let waiting = registry.register(&venue, &registration("k2", 1, CHIYODA, "0000000099", "2021-06-30", "pfizer", "FA5765")).await.unwrap();
    assert!(!waiting.matched);
    assert_eq!(kinds(&waiting.findings), vec![FindingKind::Unmatched]);
    assert_eq!(registry.unmatched(&staff(CHIYODA), code(CHIYODA)).await.unwrap().len(), 1);
    let outcome = registry
        .import_residents(&staff(CHIYODA), code(CHIYODA), VecSource::new(vec![resident(CHIYODA, "99", "0000000099", "1970-01-01")], true))
        .await
        .unwrap();
    assert_eq!(outcome.reconciled.matched, 1);
    assert_eq!(outcome.reconciled.still_unmatched, 0);
    let dose = registry.dose(&staff(CHIYODA), waiting.dose.id).await.unwrap();
    assert_eq!(dose.matched.as_ref().map(|p| p.addressee.as_str()), Some("99"));
    let open = registry.findings(&staff(CHIYODA), code(CHIYODA), true).await.unwrap();
    assert!(!open.iter().any(|f| f.kind == FindingKind::Unmatched), "{open:?}");
    let stats = registry.statistics(&staff(CHIYODA), StatsQuery::Municipality(code(CHIYODA))).await.unwrap();
    assert_eq!(stats.iter().map(|r| r.count).sum::<u64>(), 2);
    assert!(stats.iter().all(|r| r.key.sex == Sex::Female), "{stats:?}");
}

/// Rejections at input store nothing: no dose, no counter, no finding.
pub async fn rejections_store_nothing(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    let cases = [
        (registration("r1", 1, "131017", "0000000001", "2021-06-30", "pfizer", "FA5765"), FindingKind::BadCheckDigit),
        (registration("r2", 1, CHIYODA, "000000001", "2021-06-30", "pfizer", "FA5765"), FindingKind::MalformedOcr),
        (registration("r3", 1, CHIYODA, "0000000001", "2021-07-02", "pfizer", "FA5765"), FindingKind::FutureDate),
        (registration("r4", 1, CHIYODA, "0000000001", "2021-06-30", "sputnik-v", "FA5765"), FindingKind::UnknownProduct),
    ];
    for (reg, expected) in cases {
        match registry.register(&venue, &reg).await {
            Err(Error::DoseRejected { kind, .. }) => assert_eq!(kind, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    assert_eq!(total(&registry, CHIYODA).await, 0);
    assert!(registry.findings(&staff(CHIYODA), code(CHIYODA), false).await.unwrap().is_empty());
    assert!(
        registry
            .store()
            .doses_by_voucher(VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse("0000000001").unwrap() })
            .await
            .unwrap()
            .is_empty()
    );
}

/// The same idempotency key twice returns the first result and stores nothing new.
pub async fn idempotent_retry(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    let reg = registration("same-key", 1, CHIYODA, "0000000002", "2021-06-30", "pfizer", "FA5765");
    let first = registry.register(&venue, &reg).await.unwrap();
    let again = registry.register(&venue, &reg).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.dose.id, first.dose.id);
    assert_eq!(again.dose.versions, first.dose.versions);
    assert_eq!(total(&registry, CHIYODA).await, 1);
    let voucher = VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse("0000000002").unwrap() };
    assert_eq!(registry.store().doses_by_voucher(voucher).await.unwrap().len(), 1);
    // The same key for another voucher is a conflict, not a silent replay.
    let other = registration("same-key", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765");
    assert!(matches!(registry.register(&venue, &other).await, Err(Error::Conflict { .. })));
}

/// Duplicate, probable duplicate and too-early doses are stored with their findings;
/// the first registration stays clean.
pub async fn duplicates_and_intervals(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    let first = registry.register(&venue, &registration("d1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    let dup = registry.register(&venue, &registration("d2", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    assert_eq!(kinds(&dup.findings), vec![FindingKind::Duplicate]);
    let early = registry.register(&venue, &registration("d3", 2, CHIYODA, "0000000001", "2021-06-15", "pfizer", "FA5766")).await.unwrap();
    let k = kinds(&early.findings);
    assert!(k.contains(&FindingKind::IntervalTooShort) && k.contains(&FindingKind::ProbableDuplicate), "{k:?}");
    let first_now = registry.store().findings_for_dose(first.dose.id).await.unwrap();
    assert!(kinds(&first_now).is_empty(), "{first_now:?}");
    // All three are kept and counted.
    assert_eq!(total(&registry, CHIYODA).await, 3);
    // Age below the minimum: resident 3 was born 2015.
    let child = registry.register(&venue, &registration("d4", 1, CHIYODA, "0000000003", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    assert_eq!(kinds(&child.findings), vec![FindingKind::BelowMinimumAge]);
}

/// What [`BeforeApply`] runs before handing change sets to the store.
type ApplyHook = Box<dyn Fn(&[ChangeSet]) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// A store wrapper that runs a hook before each `apply`, to force an interleaving of
/// concurrent operations: the races DESIGN.md §3 describes.
struct BeforeApply {
    inner: DynStore,
    hook: ApplyHook,
}

/// Holds the first two `apply` calls until both have arrived, so two registrations
/// decide on the same snapshot.
fn race_gate() -> ApplyHook {
    let gate = Arc::new(Barrier::new(2));
    let gated = Arc::new(Mutex::new(0u32));
    Box::new(move |_| {
        let wait = {
            let mut n = gated.lock().unwrap();
            *n += 1;
            *n <= 2
        };
        let gate = gate.clone();
        Box::pin(async move {
            if wait {
                // Wait on a plain thread so the caller's executor is not blocked.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    gate.wait();
                    let _ = tx.send(());
                });
                while rx.try_recv().is_err() {
                    yield_now().await;
                }
            }
        })
    })
}

#[async_trait]
impl StoreBackend for BeforeApply {
    async fn resident(&self, person: &PersonRef) -> Result<Option<Resident>> {
        self.inner.resident(person).await
    }
    async fn resident_by_voucher(&self, voucher: VoucherRef) -> Result<Option<Resident>> {
        self.inner.resident_by_voucher(voucher).await
    }
    async fn residents_by_previous_voucher(&self, voucher: VoucherRef) -> Result<Vec<Resident>> {
        self.inner.residents_by_previous_voucher(voucher).await
    }
    async fn moved_in_residents(&self, municipality: MunicipalityCode) -> Result<Vec<Resident>> {
        self.inner.moved_in_residents(municipality).await
    }
    async fn moved_in_vouchers(&self, municipality: MunicipalityCode) -> Result<Vec<MovedIn>> {
        self.inner.moved_in_vouchers(municipality).await
    }
    async fn scan_residents(&self, municipality: MunicipalityCode, visit: Visit<'_, Resident>) -> Result<()> {
        self.inner.scan_residents(municipality, visit).await
    }
    async fn import_residents(&self, source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)> {
        self.inner.import_residents(source).await
    }
    async fn dose(&self, id: DoseId) -> Result<Option<DoseRecord>> {
        self.inner.dose(id).await
    }
    async fn doses_by_voucher(&self, voucher: VoucherRef) -> Result<Vec<DoseRecord>> {
        self.inner.doses_by_voucher(voucher).await
    }
    async fn unmatched_doses(&self, municipality: MunicipalityCode) -> Result<Vec<DoseRecord>> {
        self.inner.unmatched_doses(municipality).await
    }
    async fn doses_by_site(&self, site: &SiteId, day: NaiveDate) -> Result<Vec<DoseRecord>> {
        self.inner.doses_by_site(site, day).await
    }
    async fn scan_doses(&self, municipality: MunicipalityCode, scan: DoseScan, visit: Visit<'_, DoseRecord>) -> Result<u64> {
        self.inner.scan_doses(municipality, scan, visit).await
    }
    async fn findings(&self, municipality: MunicipalityCode, open_only: bool) -> Result<Vec<Finding>> {
        self.inner.findings(municipality, open_only).await
    }
    async fn findings_for_dose(&self, dose: DoseId) -> Result<Vec<Finding>> {
        self.inner.findings_for_dose(dose).await
    }
    async fn account(&self, id: &AccountId) -> Result<Option<TabletAccount>> {
        self.inner.account(id).await
    }
    async fn accounts(&self, municipality: MunicipalityCode) -> Result<Vec<TabletAccount>> {
        self.inner.accounts(municipality).await
    }
    async fn account_secret(&self, id: &AccountId) -> Result<Option<crate::credentials::SecretHash>> {
        self.inner.account_secret(id).await
    }
    async fn statistics(&self, query: StatsQuery) -> Result<Vec<StatsRow>> {
        self.inner.statistics(query).await
    }
    async fn audit(&self, municipality: MunicipalityCode) -> Result<Vec<AuditEvent>> {
        self.inner.audit(municipality).await
    }
    async fn apply(&self, changes: Vec<ChangeSet>) -> Result<Applied> {
        (self.hook)(&changes).await;
        self.inner.apply(changes).await
    }
}

/// Yields once to the executor (runtime-agnostic).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Two registrations of the same person's dose number racing each other: both are
/// kept, exactly one is flagged duplicate, and neither is lost.
pub async fn racing_duplicates_both_kept(store: DynStore) {
    let (setup_registry, clock) = setup(store.clone()).await;
    drop(setup_registry);
    let gated: DynStore = Arc::new(BeforeApply { inner: store, hook: race_gate() });
    let registry = Registry::new(gated, clock);
    let venue = site_actor("venue");
    let a = registration("race-a", 1, CHIYODA, "0000000002", "2021-06-30", "pfizer", "FA5765");
    let b = registration("race-b", 1, CHIYODA, "0000000002", "2021-06-30", "pfizer", "FA5765");
    let (ra, rb) = join(registry.register(&venue, &a), registry.register(&venue, &b)).await;
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let flagged = [&ra, &rb].iter().filter(|o| o.findings.iter().any(|f| f.kind == FindingKind::Duplicate)).count();
    assert_eq!(flagged, 1, "a: {:?} b: {:?}", ra.findings, rb.findings);
    let voucher = VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse("0000000002").unwrap() };
    assert_eq!(registry.store().doses_by_voucher(voucher).await.unwrap().len(), 2);
    assert_eq!(total(&registry, CHIYODA).await, 2);
}

/// Registrations racing the upload that holds their voucher: decided unmatched before the
/// upload commits, stored after the upload's matching pass has read the unmatched doses.
/// They are matched all the same, alone or in a batch, as if they had come first.
pub async fn registrations_racing_their_upload_are_matched(store: DynStore) {
    let (uploader, clock) = setup(store.clone()).await;
    // Before each registration's commit, the next upload runs whole on the store beneath.
    let uploads = Arc::new(Mutex::new(vec![
        resident(CHIYODA, "78", "0000000078", "1970-01-01"),
        resident(CHIYODA, "77", "0000000077", "1970-01-01"),
    ]));
    let queued = uploads.clone();
    let hook: ApplyHook = Box::new(move |changes| {
        let next = if changes.iter().any(|c| !c.new_doses.is_empty()) { queued.lock().unwrap().pop() } else { None };
        let uploader = uploader.clone();
        Box::pin(async move {
            if let Some(r) = next {
                uploader.import_residents(&staff(CHIYODA), code(CHIYODA), VecSource::new(vec![r], true)).await.unwrap();
            }
        })
    });
    let registry = Registry::new(Arc::new(BeforeApply { inner: store, hook }), clock);
    let venue = site_actor("venue");
    let single =
        registry.register(&venue, &registration("late-1", 1, CHIYODA, "0000000077", "2021-06-30", "pfizer", "FA5765")).await.unwrap();
    assert!(single.matched, "{:?}", single.findings);
    let batch = registry
        .register_batch(
            &venue,
            &[
                registration("late-2", 1, CHIYODA, "0000000078", "2021-06-01", "pfizer", "FA5765"),
                registration("late-3", 2, CHIYODA, "0000000078", "2021-06-30", "pfizer", "FA5765"),
                // The first entry again (a tablet sending it twice): its replay answers what
                // the first entry finally answers, matched by the racing upload.
                registration("late-2", 1, CHIYODA, "0000000078", "2021-06-01", "pfizer", "FA5765"),
            ],
        )
        .await
        .unwrap();
    assert!(uploads.lock().unwrap().is_empty(), "both uploads ran between a decision and its commit");
    let replay = batch[2].as_ref().unwrap();
    assert!(replay.replayed, "{replay:?}");
    assert_eq!(replay.dose, batch[0].as_ref().unwrap().dose);
    for (out, addressee) in [(&single, "77"), (batch[0].as_ref().unwrap(), "78"), (batch[1].as_ref().unwrap(), "78"), (replay, "78")] {
        assert!(out.matched, "{addressee}: {:?}", out.findings);
        assert!(!kinds(&out.findings).contains(&FindingKind::Unmatched), "{:?}", out.findings);
        let dose = registry.dose(&staff(CHIYODA), out.dose.id).await.unwrap();
        assert_eq!(dose.matched.as_ref().map(|p| p.addressee.as_str()), Some(addressee));
        assert_eq!(out.dose.seq, dose.seq, "{addressee}: the number of the match, which wrote the dose last");
    }
    assert!(registry.unmatched(&staff(CHIYODA), code(CHIYODA)).await.unwrap().is_empty());
    let open = registry.findings(&staff(CHIYODA), code(CHIYODA), true).await.unwrap();
    assert!(!open.iter().any(|f| f.kind == FindingKind::Unmatched), "{open:?}");
    let stats = registry.statistics(&staff(CHIYODA), StatsQuery::Municipality(code(CHIYODA))).await.unwrap();
    assert_eq!(stats.iter().map(|r| r.count).sum::<u64>(), 3);
    assert!(stats.iter().all(|r| r.key.sex == Sex::Female), "the counters know the residents: {stats:?}");
}

/// Polls two futures to completion on the current task (no runtime needed).
pub async fn join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let std::task::Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let std::task::Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    (ra.unwrap(), rb.unwrap())
}

/// A correction appends a version; the finding it fixes closes; statistics and the
/// ledger follow. A void keeps the history and leaves the counts and the ledger.
pub async fn correction_and_void_reach_everything_derived(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    registry.register(&venue, &registration("c1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    let early = registry.register(&venue, &registration("c2", 2, CHIYODA, "0000000001", "2021-06-10", "pfizer", "FA5766")).await.unwrap();
    assert!(kinds(&early.findings).contains(&FindingKind::IntervalTooShort));
    let (_, cursor) = ledger_csv(&registry, CHIYODA, None).await;
    let fix = DoseCorrection { date_given: Some(date("2021-06-22")), ..DoseCorrection::default() };
    let corrected = registry.correct(&staff(CHIYODA), early.dose.id, &fix, "date misread at the venue").await.unwrap();
    assert_eq!(corrected.dose.versions.len(), 2);
    assert_eq!(corrected.dose.versions[0].details.date_given, date("2021-06-10"), "history kept");
    assert!(corrected.findings.is_empty(), "{:?}", corrected.findings);
    let stats = registry.statistics(&staff(CHIYODA), StatsQuery::Municipality(code(CHIYODA))).await.unwrap();
    assert!(stats.iter().any(|r| r.key.date == date("2021-06-22") && r.count == 1));
    assert!(!stats.iter().any(|r| r.key.date == date("2021-06-10")));
    let (delta, cursor2) = ledger_csv(&registry, CHIYODA, Some(cursor)).await;
    assert!(delta.contains("20210622"), "{delta}");
    assert!(cursor2 > cursor);
    let (none, cursor3) = ledger_csv(&registry, CHIYODA, Some(cursor2)).await;
    assert_eq!(none.lines().count(), 1, "only the header: nothing changed since");
    assert_eq!(cursor3, cursor2);
    // Void.
    let voided = registry.void(&staff(CHIYODA), early.dose.id, "registered on the wrong voucher").await.unwrap();
    assert!(voided.dose.is_voided());
    assert_eq!(voided.dose.versions.len(), 3);
    assert_eq!(total(&registry, CHIYODA).await, 1);
    let (full, _) = ledger_csv(&registry, CHIYODA, None).await;
    assert!(!full.contains("20210622"), "{full}");
    assert!(matches!(registry.correct(&staff(CHIYODA), early.dose.id, &fix, "again").await, Err(Error::Invalid { .. })));
}

/// Doses follow the person: a resident who moved from 千代田区 to 新宿区 is seen by
/// 新宿区 with the doses registered under 千代田区's voucher, and an unmatched dose
/// is matched when the moved-in resident names its voucher.
pub async fn doses_follow_moved_residents(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    // Dose under 千代田区's voucher 0000000077, never uploaded by 千代田区.
    let d = registry.register(&venue, &registration("m1", 1, CHIYODA, "0000000077", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    assert!(!d.matched);
    let mut moved = resident(SHINJUKU, "500", "0000000500", "1960-01-01");
    moved.previous = Some(VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse("0000000077").unwrap() });
    let outcome = registry.import_residents(&staff(SHINJUKU), code(SHINJUKU), VecSource::new(vec![moved.clone()], true)).await.unwrap();
    assert_eq!(outcome.reconciled.matched, 1);
    let person = moved.person.clone();
    let history = registry.doses_of_resident(&staff(SHINJUKU), &person).await.unwrap();
    assert_eq!(history.len(), 1);
    // Dose 2 under the new voucher: interval checked against dose 1 under the old one.
    let clinic = site_actor("clinic");
    let d2 = registry.register(&clinic, &registration("m2", 2, SHINJUKU, "0000000500", "2021-06-22", "pfizer", "FA5766")).await.unwrap();
    assert!(d2.findings.is_empty(), "{:?}", d2.findings);
    assert_eq!(registry.doses_of_resident(&staff(SHINJUKU), &person).await.unwrap().len(), 2);
    // 新宿区 may read the dose issued by 千代田区 for its resident; 大阪市 may not.
    registry.dose(&staff(SHINJUKU), d.dose.id).await.unwrap();
    assert!(matches!(registry.dose(&staff("271004"), d.dose.id).await, Err(Error::PermissionDenied { .. })));
    // 新宿区's ledger row carries both doses, with each dose's own voucher.
    let (csv, _) = ledger_csv(&registry, SHINJUKU, None).await;
    let row = csv.lines().find(|l| l.starts_with("500,")).unwrap_or_else(|| panic!("{csv}"));
    assert!(row.contains("0000000077") && row.contains("0000000500"), "{row}");
    assert_eq!(row.split(',').count(), 1 + 8 * 2);

    // A resident 千代田区 did upload (and whose dose is matched there) moves to 新宿区:
    // 新宿区's ledger and history carry the dose, and 千代田区 keeps it too.
    registry.register(&venue, &registration("m3", 1, CHIYODA, "0000000002", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    let mut moved2 = resident(SHINJUKU, "501", "0000000501", "1980-12-31");
    moved2.previous = Some(VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse("0000000002").unwrap() });
    registry.import_residents(&staff(SHINJUKU), code(SHINJUKU), VecSource::new(vec![moved2.clone()], true)).await.unwrap();
    assert_eq!(registry.doses_of_resident(&staff(SHINJUKU), &moved2.person).await.unwrap().len(), 1);
    let (csv, _) = ledger_csv(&registry, SHINJUKU, None).await;
    assert!(csv.lines().any(|l| l.starts_with("501,") && l.contains("0000000002")), "{csv}");
    let (csv, _) = ledger_csv(&registry, CHIYODA, None).await;
    assert!(csv.lines().any(|l| l.starts_with("2,") && l.contains("0000000002")), "{csv}");
}

/// Denials are their own error, for every kind of actor overreaching.
pub async fn access_is_enforced(store: DynStore) {
    let (registry, clock) = setup(store).await;
    let venue = site_actor("venue");
    let d = registry.register(&venue, &registration("a1", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765")).await.unwrap();
    let denied = |r: Result<_>| matches!(r, Err(Error::PermissionDenied { .. }));
    assert!(denied(registry.findings(&venue, code(CHIYODA), true).await.map(|_| ())));
    assert!(denied(registry.resident(&venue, &d.dose.matched.clone().unwrap()).await.map(|_| ())));
    assert!(denied(registry.findings(&staff(SHINJUKU), code(CHIYODA), true).await.map(|_| ())));
    assert!(denied(registry.dose(&site_actor("clinic"), d.dose.id).await.map(|_| ())));
    // Bulk reads (the Python bindings' tables) belong to the municipality's staff alone.
    assert!(denied(registry.scan_residents(&venue, code(CHIYODA), &mut |_| Ok(())).await));
    assert!(denied(registry.scan_residents(&staff(SHINJUKU), code(CHIYODA), &mut |_| Ok(())).await));
    assert!(denied(registry.scan_doses(&venue, code(CHIYODA), None, &mut |_| Ok(())).await.map(|_| ())));
    assert!(denied(registry.scan_doses(&staff(SHINJUKU), code(CHIYODA), Some(0), &mut |_| Ok(())).await.map(|_| ())));
    let mut owned = 0;
    registry
        .scan_doses(&staff(CHIYODA), code(CHIYODA), None, &mut |_| {
            owned += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(owned, 1);
    let reader = Actor::StatisticsReader { scope: StatsScope::Prefecture(13) };
    assert!(denied(registry.resident(&reader, &d.dose.matched.clone().unwrap()).await.map(|_| ())));
    assert!(denied(registry.statistics(&reader, StatsQuery::Prefecture(1)).await.map(|_| ())));
    assert_eq!(registry.statistics(&reader, StatsQuery::Prefecture(13)).await.unwrap().iter().map(|r| r.count).sum::<u64>(), 1);
    assert!(denied(
        registry
            .register(&site_actor("nobody"), &registration("a2", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765"))
            .await
            .map(|_| ())
    ));
    // The site sees its dose today, not tomorrow.
    assert_eq!(registry.todays_doses(&venue).await.unwrap().len(), 1);
    registry.dose(&venue, d.dose.id).await.unwrap();
    clock.advance(chrono::Duration::days(1));
    assert!(denied(registry.dose(&venue, d.dose.id).await.map(|_| ())));
    assert!(registry.todays_doses(&venue).await.unwrap().is_empty());
    // Revocation is effective immediately.
    registry.revoke_account(&staff(CHIYODA), &AccountId::parse("venue").unwrap()).await.unwrap();
    assert!(denied(
        registry.register(&venue, &registration("a3", 2, CHIYODA, "0000000001", "2021-07-01", "pfizer", "FA5765")).await.map(|_| ())
    ));
    // 新宿区 staff cannot revoke 千代田区's accounts.
    assert!(denied(registry.revoke_account(&staff(SHINJUKU), &AccountId::parse("venue").unwrap()).await.map(|_| ())));
}

/// Deterministic entropy for tests: a counter from a seed (never for real secrets).
pub struct TestEntropy(pub u8);

impl crate::credentials::Entropy for TestEntropy {
    fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        for b in out {
            self.0 = self.0.wrapping_mul(5).wrapping_add(77);
            *b = self.0;
        }
        Ok(())
    }
}

/// Tablet accounts sign in with a secret shown once, of which the store keeps only the
/// Argon2id hash; a wrong, stale or revoked secret is refused, and revocation stops an
/// actor already signed in at its next call.
pub async fn tablet_secrets_sign_in_and_revocation(store: DynStore) {
    let (registry, clock) = setup(store.clone()).await;
    let denied = |r: &Result<Actor>| matches!(r, Err(Error::PermissionDenied { .. }));
    let site = Site { id: SiteId::parse("venue-9").unwrap(), name: "千代田区役所".into(), municipality: code(CHIYODA) };
    let id = AccountId::parse("tab-9").unwrap();
    // Only the site's municipality's staff issue it.
    for actor in [staff(SHINJUKU), site_actor("venue"), Actor::StatisticsReader { scope: StatsScope::National }] {
        let r = registry.issue_account_with_secret(&actor, site.clone(), id.clone(), &mut TestEntropy(1)).await;
        assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{actor}: {r:?}");
    }
    let issued = registry.issue_account_with_secret(&staff(CHIYODA), site.clone(), id.clone(), &mut TestEntropy(1)).await.unwrap();
    let secret = issued.secret.reveal().to_owned();
    assert_eq!(secret.len(), 32);
    // The store holds the hash, never the secret.
    let hash = store.account_secret(&id).await.unwrap().unwrap();
    assert!(hash.phc.starts_with("$argon2id$"), "{}", hash.phc);
    assert!(!hash.phc.contains(&secret));
    assert!(!format!("{issued:?}").contains(&secret));
    // Signing in.
    let actor = registry.authenticate(&id, &secret).await.unwrap();
    assert_eq!(actor, site_actor("tab-9"));
    let wrong = registry.authenticate(&id, "00000000000000000000000000000000").await;
    let unknown = registry.authenticate(&AccountId::parse("nobody").unwrap(), &secret).await;
    assert!(denied(&wrong) && denied(&unknown));
    // The same answer whether the account exists or not.
    assert_eq!(wrong.unwrap_err().to_string().replace("tab-9", "X"), unknown.unwrap_err().to_string().replace("nobody", "X"));
    // An account issued without a secret cannot sign in.
    assert!(denied(&registry.authenticate(&AccountId::parse("venue").unwrap(), &secret).await));
    // The signed-in actor registers; staff revoke; its next call fails, and so does signing in.
    registry.register(&actor, &registration("s1", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765")).await.unwrap();
    // Another tablet sending the same key (a forged or misrouted replay) is not shown that dose.
    let forged =
        registry.register(&site_actor("clinic"), &registration("s1", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765")).await;
    assert!(matches!(forged, Err(Error::Conflict { .. })), "{forged:?}");
    clock.advance(chrono::Duration::minutes(1));
    registry.revoke_account(&staff(CHIYODA), &id).await.unwrap();
    let after = registry.register(&actor, &registration("s2", 1, CHIYODA, "0000000002", "2021-06-30", "pfizer", "FA5765")).await;
    assert!(matches!(after, Err(Error::PermissionDenied { .. })), "{after:?}");
    assert!(matches!(registry.todays_doses(&actor).await, Err(Error::PermissionDenied { .. })));
    let revoked = registry.authenticate(&id, &secret).await;
    assert!(denied(&revoked), "{revoked:?}");
    assert!(revoked.unwrap_err().to_string().contains("revoked"));
    // Re-issuing the revoked id without a secret never brings the old secret back.
    clock.advance(chrono::Duration::minutes(1));
    registry.issue_account(&staff(CHIYODA), site.clone(), id.clone()).await.unwrap();
    assert!(denied(&registry.authenticate(&id, &secret).await));
    // A renewed secret works; the one before it no longer does.
    assert!(matches!(registry.renew_account_secret(&staff(SHINJUKU), &id, &mut TestEntropy(2)).await, Err(Error::PermissionDenied { .. })));
    let renewed = registry.renew_account_secret(&staff(CHIYODA), &id, &mut TestEntropy(2)).await.unwrap();
    assert_ne!(renewed.reveal(), secret);
    assert_eq!(registry.authenticate(&id, renewed.reveal()).await.unwrap(), actor);
    assert!(denied(&registry.authenticate(&id, &secret).await));
    // The audit trail says what happened, without the secret.
    let audit = registry.audit(&staff(CHIYODA), code(CHIYODA)).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "renew_account_secret"));
    assert!(!format!("{audit:?}").contains(renewed.reveal()));
}

/// An import that may not commit leaves nothing, and the service reports it.
pub async fn refused_import_applies_nothing(store: DynStore) {
    let (registry, _) = setup(store).await;
    let before = registry
        .store()
        .resident(&PersonRef { municipality: code(CHIYODA), addressee: AddresseeNumber::parse("1").unwrap() })
        .await
        .unwrap();
    let mut changed = resident(CHIYODA, "1", "0000000001", "1950-04-02");
    changed.sex = Sex::Male;
    let refused = registry
        .import_residents(
            &staff(CHIYODA),
            code(CHIYODA),
            VecSource::new(vec![changed, resident(CHIYODA, "50", "0000000050", "1990-01-01")], false),
        )
        .await;
    assert!(matches!(refused, Err(Error::ImportRejected(_))));
    assert_eq!(
        registry
            .store()
            .resident(&PersonRef { municipality: code(CHIYODA), addressee: AddresseeNumber::parse("1").unwrap() })
            .await
            .unwrap(),
        before
    );
    assert!(
        registry
            .store()
            .resident(&PersonRef { municipality: code(CHIYODA), addressee: AddresseeNumber::parse("50").unwrap() })
            .await
            .unwrap()
            .is_none()
    );
    // Another municipality's staff cannot upload here.
    assert!(matches!(
        registry.import_residents(&staff(SHINJUKU), code(CHIYODA), VecSource::new(vec![], true)).await,
        Err(Error::PermissionDenied { .. })
    ));
}

/// A batch in one commit gives the same outcomes as one-by-one registration, including
/// a series and a duplicate inside the same batch.
pub async fn batch_registration(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    let regs = vec![
        registration("b1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765"),
        registration("b2", 2, CHIYODA, "0000000001", "2021-06-22", "pfizer", "FA5766"),
        registration("b3", 1, CHIYODA, "0000000002", "2021-06-01", "pfizer", "FA5765"),
        registration("b4", 1, CHIYODA, "0000000002", "2021-06-01", "pfizer", "FA5765"),
        registration("b5", 1, "131017", "0000000002", "2021-06-01", "pfizer", "FA5765"),
        registration("b1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765"),
    ];
    let results = registry.register_batch(&venue, &regs).await.unwrap();
    assert_eq!(results.len(), 6);
    assert!(results[0].as_ref().unwrap().findings.is_empty());
    assert!(results[1].as_ref().unwrap().findings.is_empty(), "{:?}", results[1]);
    assert!(results[2].as_ref().unwrap().findings.is_empty());
    assert_eq!(kinds(&results[3].as_ref().unwrap().findings), vec![FindingKind::Duplicate]);
    assert!(matches!(results[4], Err(Error::DoseRejected { kind: FindingKind::BadCheckDigit, .. })));
    assert!(results[5].as_ref().unwrap().replayed);
    assert_eq!(total(&registry, CHIYODA).await, 4);
    // Applying the same batch again stores nothing new.
    let again = registry.register_batch(&venue, &regs).await.unwrap();
    assert!(again.iter().filter_map(|r| r.as_ref().ok()).all(|o| o.replayed));
    assert_eq!(total(&registry, CHIYODA).await, 4);
    // Stored keys among new entries: a replay returns the first result even when its
    // entry would now be refused (an unknown product), a key stored for another voucher is
    // a conflict, and the new entries beside them are stored. (Apart, so that the conflict
    // of one does not send the other to be decided again.)
    let with_replay = vec![
        registration("b7", 1, CHIYODA, "0000000042", "2021-06-01", "pfizer", "FA5765"),
        registration("b3", 1, CHIYODA, "0000000002", "2021-06-01", "no-such-product", "FA5765"),
    ];
    let with_replay = registry.register_batch(&venue, &with_replay).await.unwrap();
    let replay = with_replay[1].as_ref().unwrap();
    assert!(replay.replayed, "{replay:?}");
    assert_eq!(replay.dose.id, results[2].as_ref().unwrap().dose.id);
    let with_conflict = vec![
        registration("b8", 1, CHIYODA, "0000000043", "2021-06-01", "pfizer", "FA5765"),
        registration("b1", 1, CHIYODA, "0000000003", "2021-06-01", "pfizer", "FA5765"),
    ];
    let with_conflict = registry.register_batch(&venue, &with_conflict).await.unwrap();
    assert!(matches!(with_conflict[1], Err(Error::Conflict { .. })), "{:?}", with_conflict[1]);
    for new in [&with_replay[0], &with_conflict[0]] {
        let new = new.as_ref().unwrap();
        assert!(!new.replayed);
        assert!(registry.store().dose(new.dose.id).await.unwrap().is_some());
    }
    let voucher = |n: &str| VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse(n).unwrap() };
    assert_eq!(registry.store().doses_by_voucher(voucher("0000000002")).await.unwrap().len(), 2);
    assert!(registry.store().doses_by_voucher(voucher("0000000003")).await.unwrap().is_empty());
}

/// Every outcome of a batch carries the change sequence number its dose is stored under,
/// as a single registration's does: new doses (on the path that assumes new keys and on
/// the one that looks them up), a key repeated within the batch, and a stored key replayed.
/// Clients keep these numbers as export cursors and to order a tablet's sync replies.
pub async fn batch_outcomes_carry_the_stored_seq(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    let stored_seq = |id: DoseId| {
        let store = registry.store().clone();
        async move { store.dose(id).await.unwrap().unwrap().seq }
    };
    let single = registry.register(&venue, &registration("q0", 1, CHIYODA, "0000000044", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    let before = single.dose.seq;
    assert!(before > 0);
    assert_eq!(before, stored_seq(single.dose.id).await);

    // New keys only (the first decision commits), with a key repeated within the batch, an
    // unmatched dose and a refused entry.
    let first = vec![
        registration("q1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765"),
        registration("q2", 1, CHIYODA, "0000000002", "2021-06-01", "pfizer", "FA5765"),
        registration("q3", 1, CHIYODA, "0000000099", "2021-06-01", "pfizer", "FA5765"),
        registration("q4", 1, "131017", "0000000002", "2021-06-01", "pfizer", "FA5765"),
        registration("q1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765"),
        registration("q5", 2, CHIYODA, "0000000001", "2021-06-22", "pfizer", "FA5766"),
    ];
    let first = registry.register_batch(&venue, &first).await.unwrap();
    assert!(matches!(first[3], Err(Error::DoseRejected { .. })), "{:?}", first[3]);
    let mut seen = vec![before];
    for (i, outcome) in first.iter().enumerate().filter(|(i, _)| *i != 3) {
        let outcome = outcome.as_ref().unwrap();
        assert_eq!(outcome.replayed, i == 4, "{outcome:?}");
        assert_eq!(outcome.dose.seq, stored_seq(outcome.dose.id).await, "entry {i}: {outcome:?}");
        if !outcome.replayed {
            assert!(outcome.dose.seq > before, "entry {i}: {} after {before}", outcome.dose.seq);
            seen.push(outcome.dose.seq);
        }
    }
    assert_eq!(first[4].as_ref().unwrap().dose.seq, first[0].as_ref().unwrap().dose.seq);
    let high = *seen.iter().max().unwrap();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 5, "numbers given twice: {first:?}");

    // A stored key among new ones (the batch is decided again with its keys looked up).
    let second = vec![
        registration("q6", 1, CHIYODA, "0000000042", "2021-06-01", "pfizer", "FA5765"),
        registration("q2", 1, CHIYODA, "0000000002", "2021-06-01", "pfizer", "FA5765"),
        registration("q0", 1, CHIYODA, "0000000044", "2021-06-01", "no-such-product", "FA5765"),
        registration("q7", 1, CHIYODA, "0000000043", "2021-06-01", "pfizer", "FA5765"),
    ];
    let second = registry.register_batch(&venue, &second).await.unwrap();
    let outcomes: Vec<&RegistrationOutcome> = second.iter().map(|r| r.as_ref().unwrap()).collect();
    assert!(outcomes[1].replayed && outcomes[2].replayed, "{outcomes:?}");
    assert_eq!(outcomes[1].dose.seq, first[1].as_ref().unwrap().dose.seq);
    assert_eq!(outcomes[2].dose.seq, before);
    for o in [outcomes[0], outcomes[3]] {
        assert!(!o.replayed);
        assert!(o.dose.seq > high, "{} after {high}", o.dose.seq);
        assert_eq!(o.dose.seq, stored_seq(o.dose.id).await, "{o:?}");
    }
    assert_ne!(outcomes[0].dose.seq, outcomes[3].dose.seq);

    // A correction reports the number of its write too.
    let fix = DoseCorrection { lot: Some("FA9999".into()), ..DoseCorrection::default() };
    let corrected = registry.correct(&staff(CHIYODA), outcomes[0].dose.id, &fix, "lot misread").await.unwrap();
    assert!(corrected.dose.seq > outcomes[3].dose.seq.max(outcomes[0].dose.seq));
    assert_eq!(corrected.dose.seq, stored_seq(corrected.dose.id).await);
}

/// The statistics counters equal a recount from the stored doses.
pub async fn statistics_equal_a_recount(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    for (i, (v, n, day)) in
        [("0000000001", 1, "2021-06-01"), ("0000000001", 2, "2021-06-25"), ("0000000002", 1, "2021-06-01"), ("0000000042", 1, "2021-06-02")]
            .iter()
            .enumerate()
    {
        registry.register(&venue, &registration(&format!("s{i}"), *n, CHIYODA, v, day, "pfizer", "FA5765")).await.unwrap();
    }
    let doses = assert_counters_equal_a_recount(&registry, CHIYODA).await;
    assert_eq!(doses.len(), 4);
}

/// Recounts a municipality's stored doses from scratch (each in the group its resident of
/// today puts it in) and asserts the statistics counters say the same; returns the doses.
/// The municipality must hold every stored dose (the counters compared are national).
async fn assert_counters_equal_a_recount(registry: &Registry, m: &str) -> Vec<DoseRecord> {
    assert_counters_equal_a_recount_of(registry, &[m]).await
}

/// [`assert_counters_equal_a_recount`] for doses stored under several municipalities.
async fn assert_counters_equal_a_recount_of(registry: &Registry, municipalities: &[&str]) -> Vec<DoseRecord> {
    let mut recount: std::collections::BTreeMap<crate::stats::StatsKey, u64> = Default::default();
    let mut doses = Vec::new();
    for m in municipalities {
        registry
            .store()
            .scan_doses(code(m), DoseScan::ByVoucher, &mut |d: DoseRecord| {
                doses.push(d);
                Ok(())
            })
            .await
            .unwrap();
    }
    for d in &doses {
        let r = match &d.matched {
            Some(p) => registry.store().resident(p).await.unwrap(),
            None => None,
        };
        if let Some(k) = crate::stats::key_for(d, r.as_ref()) {
            *recount.entry(k).or_default() += 1;
        }
    }
    let counters: std::collections::BTreeMap<_, _> = registry
        .statistics(&Actor::StatisticsReader { scope: StatsScope::National }, StatsQuery::National)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.count))
        .collect();
    assert_eq!(counters, recount, "statistics counters against a recount of the stored doses");
    doses
}

/// Sex, age band and count of each statistics group of 千代田区.
async fn groups(registry: &Registry) -> Vec<(Sex, crate::stats::AgeBand, u64)> {
    let rows = registry.statistics(&staff(CHIYODA), StatsQuery::Municipality(code(CHIYODA))).await.unwrap();
    rows.into_iter().map(|row| (row.key.sex, row.key.age_band, row.count)).collect()
}

/// A re-upload that corrects a resident's birth date or sex moves the resident's doses to
/// their new statistics groups in the same import (the counters equal a recount), while
/// an unchanged resident, a voided dose and another resident's doses stay where they were.
pub async fn reupload_restating_residents_moves_their_statistics(store: DynStore) {
    let (registry, _) = setup(store).await;
    let venue = site_actor("venue");
    registry.register(&venue, &registration("r1", 1, CHIYODA, "0000000001", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    registry.register(&venue, &registration("r2", 2, CHIYODA, "0000000001", "2021-06-25", "pfizer", "FA5766")).await.unwrap();
    let second = registry.register(&venue, &registration("r3", 1, CHIYODA, "0000000002", "2021-06-02", "pfizer", "FA5765")).await.unwrap();
    registry.register(&venue, &registration("r4", 2, CHIYODA, "0000000002", "2021-06-28", "pfizer", "FA5765")).await.unwrap();
    registry.void(&staff(CHIYODA), second.dose.id, "registered twice").await.unwrap();
    registry.register(&venue, &registration("r5", 1, CHIYODA, "0000000003", "2021-06-03", "pfizer", "FA5765")).await.unwrap();
    let before = assert_counters_equal_a_recount(&registry, CHIYODA).await;
    let old_groups = groups(&registry).await;
    // 1's birth date was a typo (1950 → 1990), 2's sex was wrong; 3 comes again unchanged.
    let first = resident(CHIYODA, "1", "0000000001", "1990-04-02");
    let mut other = resident(CHIYODA, "2", "0000000002", "1980-12-31");
    other.sex = Sex::Male;
    let same = resident(CHIYODA, "3", "0000000003", "2015-01-01");
    let outcome = registry.import_residents(&staff(CHIYODA), code(CHIYODA), VecSource::new(vec![first, other, same], true)).await.unwrap();
    assert_eq!(outcome.report.replaced, 3);
    let after = assert_counters_equal_a_recount(&registry, CHIYODA).await;
    assert_eq!(after.len(), before.len(), "an upload registers nothing");
    assert_eq!(total(&registry, CHIYODA).await, 4, "the voided dose still counts nowhere");
    let new_groups = groups(&registry).await;
    assert_ne!(old_groups, new_groups, "the groups moved");
    assert!(new_groups.iter().any(|(sex, _, _)| *sex == Sex::Male), "{new_groups:?}");
    // Uploading the corrected residents once more moves nothing.
    let again = vec![resident(CHIYODA, "1", "0000000001", "1990-04-02"), {
        let mut r = resident(CHIYODA, "2", "0000000002", "1980-12-31");
        r.sex = Sex::Male;
        r
    }];
    registry.import_residents(&staff(CHIYODA), code(CHIYODA), VecSource::new(again, true)).await.unwrap();
    assert_counters_equal_a_recount(&registry, CHIYODA).await;
    assert_eq!(groups(&registry).await, new_groups);

    // Two residents of 新宿区 restated by one upload, one of whom moved in (a dose under
    // 千代田区's voucher, one under 新宿区's): each one's doses move with it, whichever
    // voucher they were registered under, and no dose moves with the other.
    let clinic = site_actor("clinic");
    registry.register(&venue, &registration("r6", 1, CHIYODA, "0000000077", "2021-06-01", "pfizer", "FA5765")).await.unwrap();
    let mut moved = resident(SHINJUKU, "500", "0000000500", "1960-01-01");
    moved.previous = Some(VoucherRef { municipality: code(CHIYODA), number: VoucherNumber::parse("0000000077").unwrap() });
    let mut neighbour = resident(SHINJUKU, "501", "0000000501", "1945-01-01");
    let both = vec![moved.clone(), neighbour.clone()];
    registry.import_residents(&staff(SHINJUKU), code(SHINJUKU), VecSource::new(both, true)).await.unwrap();
    registry.register(&clinic, &registration("r7", 2, SHINJUKU, "0000000500", "2021-06-22", "pfizer", "FA5766")).await.unwrap();
    registry.register(&clinic, &registration("r8", 1, SHINJUKU, "0000000501", "2021-06-22", "pfizer", "FA5766")).await.unwrap();
    let before = assert_counters_equal_a_recount_of(&registry, &[CHIYODA, SHINJUKU]).await;
    assert_eq!(before.iter().filter(|d| d.matched.as_ref().is_some_and(|p| p.municipality == code(SHINJUKU))).count(), 3);
    moved.birth_date = date("2000-01-01");
    moved.sex = Sex::Male;
    neighbour.birth_date = date("1975-05-05");
    registry.import_residents(&staff(SHINJUKU), code(SHINJUKU), VecSource::new(vec![moved, neighbour], true)).await.unwrap();
    let after = assert_counters_equal_a_recount_of(&registry, &[CHIYODA, SHINJUKU]).await;
    assert_eq!(after.len(), before.len());
}

/// Change-log exports chained by their cursors while registrations, corrections and voids
/// run at the same time (the store serves both from separate calls in flight at once):
/// every dose's final state is in an export after its last write, no export repeats a
/// (dose, version, kind), and voids appear as voids.
pub async fn chained_change_logs_cover_every_write_once_under_concurrency(store: DynStore) {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (reg, _) = setup(store.clone()).await;
    let finished = AtomicBool::new(false);
    let writer = async {
        let venue = site_actor("venue");
        for i in 0..60u32 {
            let voucher = format!("{:010}", 1000 + i);
            let d = reg
                .register(&venue, &registration(&format!("cc{i}"), 1, CHIYODA, &voucher, "2021-06-01", "pfizer", "FA5765"))
                .await
                .unwrap();
            if i % 7 == 0 {
                reg.void(&staff(CHIYODA), d.dose.id, "test void").await.unwrap();
            } else if i % 5 == 0 {
                reg.correct(&staff(CHIYODA), d.dose.id, &DoseCorrection { lot: Some("FA9999".into()), ..Default::default() }, "lot")
                    .await
                    .unwrap();
            }
            yield_now().await;
        }
        finished.store(true, Ordering::SeqCst);
    };
    let exporter = async {
        let mut cursor = 0;
        let mut seen: Vec<(String, String, String)> = Vec::new();
        let options = LedgerOptions { no_header: true, ..LedgerOptions::default() };
        loop {
            // Read before the export: an export that starts after the last write sees it.
            let done = finished.load(Ordering::SeqCst);
            let mut out = Vec::new();
            let export = reg.export_ledger_changes(&staff(CHIYODA), code(CHIYODA), cursor, &options, &mut out).await.unwrap();
            assert!(export.cursor >= cursor);
            cursor = export.cursor;
            for line in String::from_utf8(out).unwrap().lines() {
                let f: Vec<&str> = line.split(',').collect();
                seen.push((f[0].to_owned(), f[1].to_owned(), f[2].to_owned()));
            }
            if done {
                break;
            }
            yield_now().await;
        }
        seen
    };
    let ((), seen) = join(writer, exporter).await;
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no (dose, version, kind) exported twice");
    // The last line of each dose is its final state.
    let mut last: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (id, v, k) in &seen {
        last.insert(id.clone(), (v.clone(), k.clone()));
    }
    let mut finals = Vec::new();
    store
        .scan_doses(code(CHIYODA), DoseScan::ByVoucher, &mut |d: DoseRecord| {
            finals.push(d);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(finals.len(), 60);
    for d in finals {
        let (v, k) = last.get(&d.id.to_string()).unwrap_or_else(|| panic!("dose {} never exported", d.id));
        assert_eq!(v, &d.current().version.to_string());
        assert_eq!(k, crate::changelog::ChangeKind::of(&d).label());
    }
    assert_eq!(last.values().filter(|(_, k)| k == "取消").count(), 9);
}
