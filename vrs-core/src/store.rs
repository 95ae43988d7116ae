//! The storage traits. A store persists; it never decides. Each write is one
//! [`ChangeSet`] (or several, in one commit) applied all or nothing; a store reports
//! [`Error::Conflict`](crate::Error::Conflict) when a uniqueness it guards was taken
//! meanwhile, and the service re-reads and decides again.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::access::TabletAccount;
use crate::columns::{DoseColumns, ResidentColumns};
use crate::credentials::SecretHash;
use crate::dose::DoseRecord;
use crate::finding::Finding;
use crate::ids::{AccountId, DoseId, MunicipalityCode, PersonRef, SiteId, VoucherNumber, VoucherRef};
use crate::import::ImportReport;
use crate::ledger::{LedgerBatch, LedgerDoses, LedgerFormat, LedgerRows};
use crate::resident::Resident;
use crate::stats::{StatsKey, StatsQuery, StatsRow};

/// A (voucher, dose number) slot. The first clean registration of a slot claims it; a
/// racing second registration finds it taken, is re-decided and stored as a duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DoseSlot {
    /// The voucher.
    pub voucher: VoucherRef,
    /// The dose number.
    pub dose_number: u8,
}

/// A moved-in resident (転入) as a ledger export needs them: who they are here, the
/// voucher they hold here and the voucher they held before, without the rest of the
/// resident record ([`StoreBackend::moved_in_vouchers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedIn {
    /// The resident (municipality, addressee number).
    pub person: PersonRef,
    /// The voucher issued to them here.
    pub voucher: VoucherNumber,
    /// The voucher of the municipality they moved in from, when known.
    pub previous: Option<VoucherRef>,
}

impl MovedIn {
    /// What a ledger export needs of a resident.
    pub fn of(resident: &Resident) -> Self {
        Self { person: resident.person.clone(), voucher: resident.voucher, previous: resident.previous }
    }
}

/// An entry of the audit trail (who did what, when), without personal data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When.
    #[serde(with = "crate::clock::serde_instant")]
    pub at: DateTime<Utc>,
    /// The municipality whose data it touched (leading key for partitioning).
    pub municipality: MunicipalityCode,
    /// Who (an actor description).
    pub actor: String,
    /// What, e.g. `register`, `correct`, `void`, `match`, `issue_account`.
    pub action: String,
    /// The dose, when about one.
    pub dose: Option<DoseId>,
    /// Free text without personal data.
    pub detail: String,
}

/// One atomic write, computed by the service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// New dose records. Guard: the id must not exist yet (the idempotency key is unused).
    pub new_doses: Vec<DoseRecord>,
    /// Changed dose records (a new version, or a match). Guard: the stored record's
    /// `revision` must be the new one minus 1.
    pub updated_doses: Vec<DoseRecord>,
    /// Slots to claim for a dose. Guard: free, or already held by the same dose.
    pub claim_slots: Vec<(DoseSlot, DoseId)>,
    /// Slots to release (when the holding dose is voided or renumbered).
    pub release_slots: Vec<(DoseSlot, DoseId)>,
    /// Findings to insert or replace, identified by (dose, kind).
    pub findings: Vec<Finding>,
    /// Statistics counter changes.
    pub counters: Vec<(StatsKey, i64)>,
    /// Tablet accounts to insert or replace.
    pub accounts: Vec<TabletAccount>,
    /// Audit entries to append.
    pub audit: Vec<AuditEvent>,
    /// Tablet account secret hashes to insert or replace (one per account).
    pub account_secrets: Vec<SecretHash>,
}

impl ChangeSet {
    /// `true` when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.new_doses.is_empty()
            && self.updated_doses.is_empty()
            && self.claim_slots.is_empty()
            && self.release_slots.is_empty()
            && self.findings.is_empty()
            && self.counters.is_empty()
            && self.accounts.is_empty()
            && self.audit.is_empty()
            && self.account_secrets.is_empty()
    }
}

/// What a store reports after applying change sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The highest change sequence number the call gave (the highest given before, when
    /// it wrote no dose record).
    pub seq: u64,
    /// Each dose record the call wrote (new or updated) with the number it is stored
    /// under, in no promised order: a store may draw its numbers in any order (PostgreSQL
    /// draws them per row of one statement), so a dose's number says nothing of its place
    /// in the call. A dose written more than once by the call may appear once per write;
    /// the greatest of its numbers is the one stored.
    pub doses: Vec<(DoseId, u64)>,
}

impl Applied {
    /// The number `id` is stored under after the call, when the call wrote it.
    pub fn seq_of(&self, id: DoseId) -> Option<u64> {
        self.doses.iter().filter(|(d, _)| *d == id).map(|&(_, seq)| seq).max()
    }

    /// [`doses`](Self::doses) by dose (the stored number of each), for looking up many.
    pub fn seqs_by_dose(&self) -> HashMap<DoseId, u64> {
        let mut by_dose = HashMap::with_capacity(self.doses.len());
        for &(id, seq) in &self.doses {
            let stored = by_dose.entry(id).or_insert(seq);
            *stored = (*stored).max(seq);
        }
        by_dose
    }
}

/// A stream of residents for an import, produced by the core's parser. The store pulls
/// batches inside one write transaction, then asks whether it may commit: the core
/// decides (all-or-nothing by default), the store only obeys.
pub trait ResidentSource: Send {
    /// The next residents (at most `max`); `None` once the input is exhausted. Bad rows
    /// are recorded inside the source, not returned.
    fn next_batch(&mut self, max: usize) -> Result<Option<Vec<Resident>>>;
    /// Asked once the input is exhausted: `true` to commit, `false` to roll back.
    fn may_commit(&self) -> bool;
    /// The report of what was read (the store fills in what it applied afterwards).
    fn into_report(self: Box<Self>) -> ImportReport;
}

/// Counts from applying an import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportApplied {
    /// Residents that were new.
    pub inserted: u64,
    /// Residents that replaced an earlier upload of the same addressee number.
    pub replaced: u64,
    /// Whether the import was committed.
    pub committed: bool,
}

/// Doses a [`StoreBackend::scan_ledger_doses`] default hands over at a time.
const LEDGER_BATCH: usize = 1024;

/// A visitor for scans, called once per record in key order; an error stops the scan.
pub type Visit<'a, T> = &'a mut (dyn FnMut(T) -> Result<()> + Send);

/// Order and range of a dose scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoseScan {
    /// Every dose the municipality owns, ordered by voucher number (then id).
    ByVoucher,
    /// Doses written after change sequence number `after`, in sequence order.
    ChangedSince {
        /// The cursor returned by a previous scan (0 for everything).
        after: u64,
    },
}

/// What [`StoreBackend::person_contexts`] is asked: a voucher, and a dose id whose dose,
/// when stored, is all that is wanted (a registration's replay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersonQuery {
    /// The voucher read.
    pub voucher: VoucherRef,
    /// The id a registration would store its dose under, whose stored dose is wanted;
    /// `None` asks for the voucher's person alone (a batch's first decision assumes its
    /// keys new: [`Registry::register_batch`](crate::service::Registry::register_batch)).
    pub dose: Option<DoseId>,
}

/// What a registration (or a match) is decided against, read at once: the stored dose
/// of the query's id, or else the voucher's resident and that person's doses and
/// findings. The core decides from it; a store only reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersonContext {
    /// The dose stored under the query's id, with its findings. When set, nothing else
    /// is read.
    pub existing: Option<(DoseRecord, Vec<Finding>)>,
    /// The resident the voucher belongs to ([`voucher_resident`]).
    pub resident: Option<Resident>,
    /// The doses of each of the person's vouchers ([`person_vouchers`]), voucher by
    /// voucher, each list as [`StoreBackend::doses_by_voucher`] returns it.
    pub doses: Vec<(VoucherRef, Vec<DoseRecord>)>,
    /// The findings of each of those doses ([`PersonContext::dose_ids`]), dose by dose.
    pub findings: Vec<(DoseId, Vec<Finding>)>,
}

impl PersonContext {
    /// The ids of [`doses`](Self::doses), each once, in order: whose findings are read.
    pub fn dose_ids(doses: &[(VoucherRef, Vec<DoseRecord>)]) -> Vec<DoseId> {
        let mut ids: Vec<DoseId> = Vec::new();
        for d in doses.iter().flat_map(|(_, ds)| ds) {
            if !ids.contains(&d.id) {
                ids.push(d.id);
            }
        }
        ids
    }
}

/// The resident a voucher belongs to: its holder in the issuing municipality, else the
/// first resident (of any municipality) who names it as previous voucher (転入).
pub fn voucher_resident(holder: Option<Resident>, naming_it: Vec<Resident>) -> Option<Resident> {
    holder.or_else(|| naming_it.into_iter().next())
}

/// The vouchers whose doses are a person's: the resident's own and previous voucher, and
/// the voucher read when it is neither (or when the voucher has no resident).
pub fn person_vouchers(resident: Option<&Resident>, voucher: VoucherRef) -> Vec<VoucherRef> {
    let mut vouchers = resident.map(crate::reconcile::vouchers_of).unwrap_or_default();
    if !vouchers.contains(&voucher) {
        vouchers.push(voucher);
    }
    vouchers
}

/// [`StoreBackend::person_contexts`] for one query, composed of the store's single reads:
/// the trait's default, and what a store's own answer must equal.
pub async fn read_person_context<S: StoreBackend + ?Sized>(store: &S, query: PersonQuery) -> Result<PersonContext> {
    if let Some(id) = query.dose
        && let Some(dose) = store.dose(id).await?
    {
        let findings = store.findings_for_dose(id).await?;
        return Ok(PersonContext { existing: Some((dose, findings)), ..PersonContext::default() });
    }
    let holder = store.resident_by_voucher(query.voucher).await?;
    let naming_it = if holder.is_some() { Vec::new() } else { store.residents_by_previous_voucher(query.voucher).await? };
    let resident = voucher_resident(holder, naming_it);
    let mut doses = Vec::new();
    for v in person_vouchers(resident.as_ref(), query.voucher) {
        doses.push((v, store.doses_by_voucher(v).await?));
    }
    let mut findings = Vec::new();
    for id in PersonContext::dose_ids(&doses) {
        findings.push((id, store.findings_for_dose(id).await?));
    }
    Ok(PersonContext { existing: None, resident, doses, findings })
}

/// The storage a [`Registry`](crate::service::Registry) runs on. Implemented by
/// vrs-store-redb and vrs-store-postgres; both must pass the conformance suite of `vrs_core::testing` (feature `testing`).
#[async_trait]
pub trait StoreBackend: Send + Sync {
    /// One resident by (municipality, addressee number).
    async fn resident(&self, person: &PersonRef) -> Result<Option<Resident>>;
    /// The resident who holds this voucher in its issuing municipality.
    async fn resident_by_voucher(&self, voucher: VoucherRef) -> Result<Option<Resident>>;
    /// Residents (of any municipality) who name this voucher as their previous one (転入前).
    async fn residents_by_previous_voucher(&self, voucher: VoucherRef) -> Result<Vec<Resident>>;
    /// Residents of a municipality who moved in from elsewhere (have a previous voucher).
    async fn moved_in_residents(&self, municipality: MunicipalityCode) -> Result<Vec<Resident>>;
    /// [`moved_in_residents`](Self::moved_in_residents) as [`MovedIn`], in the same order:
    /// what a ledger export needs of them. The default reads the residents; a store may
    /// keep these few fields where it finds the moved-in residents, so that an export
    /// need not read and decode each resident record.
    async fn moved_in_vouchers(&self, municipality: MunicipalityCode) -> Result<Vec<MovedIn>> {
        Ok(self.moved_in_residents(municipality).await?.iter().map(MovedIn::of).collect())
    }
    /// Every resident of a municipality, in addressee order.
    async fn scan_residents(&self, municipality: MunicipalityCode, visit: Visit<'_, Resident>) -> Result<()>;
    /// Applies an import atomically: every batch of `source` in one transaction,
    /// committed only if `source.may_commit()`. Returns the source (holding its report).
    async fn import_residents(&self, source: Box<dyn ResidentSource>) -> Result<(Box<dyn ResidentSource>, ImportApplied)>;

    /// One dose by id.
    async fn dose(&self, id: DoseId) -> Result<Option<DoseRecord>>;
    /// Every dose registered with this voucher.
    async fn doses_by_voucher(&self, voucher: VoucherRef) -> Result<Vec<DoseRecord>>;
    /// The doses registered with each of `vouchers`: one list per voucher, in the order
    /// given, each as [`doses_by_voucher`](Self::doses_by_voucher) returns it. The default
    /// asks for each voucher in turn; a store may read them all at once.
    async fn doses_by_vouchers(&self, vouchers: &[VoucherRef]) -> Result<Vec<Vec<DoseRecord>>> {
        let mut out = Vec::with_capacity(vouchers.len());
        for v in vouchers {
            out.push(self.doses_by_voucher(*v).await?);
        }
        Ok(out)
    }
    /// Doses of a municipality not matched to any resident yet.
    async fn unmatched_doses(&self, municipality: MunicipalityCode) -> Result<Vec<DoseRecord>>;
    /// Doses registered by a site's accounts on a day (JST).
    async fn doses_by_site(&self, site: &SiteId, day: NaiveDate) -> Result<Vec<DoseRecord>>;
    /// Scans a municipality's doses; returns the highest change sequence number seen
    /// (or `after` when nothing changed), the cursor for the next delta.
    async fn scan_doses(&self, municipality: MunicipalityCode, scan: DoseScan, visit: Visit<'_, DoseRecord>) -> Result<u64>;
    /// Scans a municipality's doses in voucher order, as [`DoseScan::ByVoucher`] does, as
    /// the ledger export reads them, in batches ([`LedgerDoses`]); returns the highest
    /// change sequence number seen. The default projects [`scan_doses`](Self::scan_doses);
    /// a store may decode the batches straight from its stored records instead
    /// ([`LedgerBatch::push`] reads a [`DoseRecord`]'s serde representation), which skips
    /// most of a record's decoding.
    async fn scan_ledger_doses(&self, municipality: MunicipalityCode, visit: Visit<'_, LedgerDoses>) -> Result<u64> {
        let mut batch = LedgerBatch::default();
        let high = self
            .scan_doses(municipality, DoseScan::ByVoucher, &mut |d: DoseRecord| {
                batch.push_record(&d);
                if batch.len() >= LEDGER_BATCH { visit(batch.take()?) } else { Ok(()) }
            })
            .await?;
        if !batch.is_empty() {
            visit(batch.take()?)?;
        }
        Ok(high)
    }

    /// Formats a municipality's full ledger export, every dose of each voucher in one
    /// piece: hands `visit` the rows `format` makes of the doses of
    /// [`scan_ledger_doses`](Self::scan_ledger_doses), in voucher order; returns the highest
    /// change sequence number seen. The default formats the batches one after another as
    /// they arrive ([`LedgerFormat::builder`]); a store may cut the scan into chunks of whole
    /// vouchers and format them on several threads ([`LedgerFormat::rows`]), as long as
    /// every chunk comes from one read snapshot and the rows reach `visit` in order.
    async fn scan_ledger_rows(
        &self,
        municipality: MunicipalityCode,
        format: Arc<LedgerFormat>,
        visit: Visit<'_, LedgerRows>,
    ) -> Result<u64> {
        let mut rows = format.builder();
        let high = self
            .scan_ledger_doses(municipality, &mut |batch: LedgerDoses| match rows.batch(&batch)? {
                Some(r) => visit(r),
                None => Ok(()),
            })
            .await?;
        visit(rows.finish()?)?;
        Ok(high)
    }

    /// Scans a municipality's doses as [`scan_doses`](Self::scan_doses) does (same order,
    /// same cursor returned), handing them to `visit` as columns of at most `rows` doses
    /// each ([`DoseColumns`]), for columnar frontends. The default fills the columns from
    /// [`scan_doses`](Self::scan_doses); a store may decode its stored records straight
    /// into them ([`DoseColumns::push_stored`]).
    async fn scan_dose_columns(
        &self,
        municipality: MunicipalityCode,
        scan: DoseScan,
        rows: usize,
        visit: Visit<'_, DoseColumns>,
    ) -> Result<u64> {
        let rows = rows.max(1);
        let mut columns = DoseColumns::with_capacity(rows);
        let high = self
            .scan_doses(municipality, scan, &mut |d: DoseRecord| {
                columns.push_record(&d)?;
                if columns.len() >= rows { visit(std::mem::replace(&mut columns, DoseColumns::with_capacity(rows))) } else { Ok(()) }
            })
            .await?;
        if !columns.is_empty() {
            visit(columns)?;
        }
        Ok(high)
    }

    /// Scans a municipality's residents as [`scan_residents`](Self::scan_residents) does,
    /// handing them to `visit` as columns of at most `rows` residents each
    /// ([`ResidentColumns`]). The default fills the columns from
    /// [`scan_residents`](Self::scan_residents); a store may decode its stored residents
    /// straight into them ([`ResidentColumns::push_stored`]).
    async fn scan_resident_columns(&self, municipality: MunicipalityCode, rows: usize, visit: Visit<'_, ResidentColumns>) -> Result<()> {
        let rows = rows.max(1);
        let mut columns = ResidentColumns::with_capacity(rows);
        self.scan_residents(municipality, &mut |r: Resident| {
            columns.push_resident(&r)?;
            if columns.len() >= rows { visit(std::mem::replace(&mut columns, ResidentColumns::with_capacity(rows))) } else { Ok(()) }
        })
        .await?;
        if !columns.is_empty() {
            visit(columns)?;
        }
        Ok(())
    }

    /// What each query's registration would be decided against ([`PersonContext`]), in
    /// the order asked. The default reads each with [`read_person_context`]; a store may
    /// answer them all in one read transaction instead (it must answer the same).
    async fn person_contexts(&self, queries: &[PersonQuery]) -> Result<Vec<PersonContext>> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            out.push(read_person_context(self, *q).await?);
        }
        Ok(out)
    }

    /// A tablet account and, optionally, the [`PersonContext`] of a registration it is
    /// about to make, read together (a networked store answers both in one round trip).
    /// The context is only a prefetch: the service checks the account before using it and
    /// reads it with [`person_contexts`](Self::person_contexts) when `None` comes back.
    /// The default reads the account alone and answers `None`.
    async fn account_with_person_context(
        &self,
        id: &AccountId,
        _query: PersonQuery,
    ) -> Result<(Option<TabletAccount>, Option<PersonContext>)> {
        Ok((self.account(id).await?, None))
    }

    /// Findings in a municipality's review queue (open only, or all).
    async fn findings(&self, municipality: MunicipalityCode, open_only: bool) -> Result<Vec<Finding>>;
    /// Findings about one dose.
    async fn findings_for_dose(&self, dose: DoseId) -> Result<Vec<Finding>>;

    /// One tablet account.
    async fn account(&self, id: &AccountId) -> Result<Option<TabletAccount>>;
    /// Tablet accounts of sites in a municipality.
    async fn accounts(&self, municipality: MunicipalityCode) -> Result<Vec<TabletAccount>>;
    /// The hash of a tablet account's secret. The default refuses: a store that keeps no
    /// secrets lets no tablet sign in (a wrapper store must pass this call on).
    async fn account_secret(&self, id: &AccountId) -> Result<Option<SecretHash>> {
        Err(crate::Error::Storage { message: format!("this store keeps no tablet secrets (account {id})"), source: None })
    }

    /// Statistics counters (non-zero only).
    async fn statistics(&self, query: StatsQuery) -> Result<Vec<StatsRow>>;
    /// The audit trail of a municipality, oldest first.
    async fn audit(&self, municipality: MunicipalityCode) -> Result<Vec<AuditEvent>>;

    /// Applies change sets all or nothing, in one durable commit. Any guard failing
    /// fails the whole call with [`Error::Conflict`](crate::Error::Conflict).
    async fn apply(&self, changes: Vec<ChangeSet>) -> Result<Applied>;
}

/// Any store, type-erased, the way the frontends hold it.
pub type DynStore = Arc<dyn StoreBackend>;
