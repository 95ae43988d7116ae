//! The service: every operation of the registry, for every frontend. It resolves the
//! actor, checks access, reads through the store, decides with the pure functions of
//! [`crate::reconcile`] and hands the store one change set, retrying on conflicts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{Actor, Operation, Principal, Site, Subject, TabletAccount, authorize};
use crate::clock::jst_date;
use crate::dose::{DoseCorrection, DoseDetails, DoseRecord, DoseRegistration, DoseVersion};
use crate::finding::{Finding, FindingKind};
use crate::ids::{AccountId, DoseId, MunicipalityCode, OcrLine, PersonRef, VoucherRef};
use crate::import::ImportReport;
use crate::reconcile::{assess_person, diff_findings, validate_details, validate_read_registration};
use crate::resident::Resident;
use crate::stats::{StatsQuery, StatsRow, deltas, key_for, merge_deltas};
use crate::store::{
    AuditEvent, ChangeSet, DoseScan, DoseSlot, DynStore, PersonContext, PersonQuery, ResidentSource, Visit, person_vouchers,
};
use crate::vaccine::{Catalogue, ProductCode};
use crate::{Error, Result};

/// Vouchers matched per commit when an upload or a reconciliation meets waiting doses.
const MATCH_BATCH: usize = 500;

/// How many times an operation is re-decided after a store conflict before giving up.
const MAX_ATTEMPTS: usize = 16;

/// Where the service gets the time from; the core never reads a clock itself.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// A clock that says what it is told: for tests, demos and replays.
#[derive(Debug)]
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }
    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Ok(mut g) = self.0.lock() {
            *g = at;
        }
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut g) = self.0.lock() {
            *g += by;
        }
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|g| *g).unwrap_or_default()
    }
}

/// What registering a dose returns. A site sees this echo and nothing else of the resident.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationOutcome {
    /// The dose as stored (or as first stored, for a replay).
    pub dose: DoseRecord,
    /// Whether the voucher matched an uploaded resident.
    pub matched: bool,
    /// The open findings about this dose.
    pub findings: Vec<Finding>,
    /// `true` when the idempotency key had been used: nothing new was stored.
    pub replayed: bool,
}

/// What a correction or void returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOutcome {
    /// The dose with its new version.
    pub dose: DoseRecord,
    /// The open findings about it afterwards.
    pub findings: Vec<Finding>,
}

/// What a reconciliation pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Doses matched to a resident by this pass.
    pub matched: u64,
    /// The municipality's doses still unmatched afterwards.
    pub still_unmatched: u64,
}

/// What an import returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// Rows, bad lines and what was applied.
    pub report: ImportReport,
    /// Unmatched doses matched thanks to this upload.
    pub reconciled: ReconcileReport,
}

/// Whether a batch's reads look up the dose stored under each registration's
/// idempotency key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// Read the dose stored under each key: a replay returns the first result.
    Keys,
    /// Assume every key new and skip that read (a random descent of the id index per
    /// entry); only valid when a taken key is noticed afterwards (see
    /// [`Registry::register_batch`]).
    KeysAssumedNew,
}

/// What a batch decided so far: its change sets, and the doses and findings in them,
/// seen by the batch's later decisions. The records stay in the change sets (the batch
/// writes them as they are); the indexes say where.
#[derive(Default)]
struct Pending {
    sets: Vec<ChangeSet>,
    doses: HashMap<DoseId, DoseAt>,
    by_voucher: HashMap<VoucherRef, Vec<DoseId>>,
    /// Ordered by dose, so that one dose's findings are a range (a batch of thousands
    /// looks them up once per decision): (set, position in its findings).
    findings: BTreeMap<(DoseId, FindingKind), (usize, usize)>,
}

/// Where a dose of [`Pending`] is: its change set, and its position among that set's
/// new (or updated) doses.
#[derive(Clone, Copy)]
struct DoseAt {
    set: usize,
    updated: bool,
    index: usize,
}

impl Pending {
    /// Room for a batch of `n` registrations (a change set and a dose each), so that a
    /// large batch does not regrow its indexes as it is decided.
    fn with_capacity(n: usize) -> Self {
        Self {
            sets: Vec::with_capacity(n),
            doses: HashMap::with_capacity(n),
            by_voucher: HashMap::with_capacity(n),
            findings: BTreeMap::new(),
        }
    }

    fn push(&mut self, cs: ChangeSet) {
        let set = self.sets.len();
        let new = cs.new_doses.iter().enumerate().map(|(index, d)| (d, DoseAt { set, updated: false, index }));
        let updated = cs.updated_doses.iter().enumerate().map(|(index, d)| (d, DoseAt { set, updated: true, index }));
        for (d, at) in new.chain(updated) {
            let ids = self.by_voucher.entry(d.voucher).or_default();
            if !ids.contains(&d.id) {
                ids.push(d.id);
            }
            self.doses.insert(d.id, at);
        }
        for (i, f) in cs.findings.iter().enumerate() {
            self.findings.insert((f.dose, f.kind), (set, i));
        }
        self.sets.push(cs);
    }

    fn dose(&self, id: &DoseId) -> Option<&DoseRecord> {
        let at = self.doses.get(id)?;
        let cs = self.sets.get(at.set)?;
        if at.updated { cs.updated_doses.get(at.index) } else { cs.new_doses.get(at.index) }
    }

    fn finding(&self, (set, index): (usize, usize)) -> Option<&Finding> {
        self.sets.get(set)?.findings.get(index)
    }
}

/// A person's dose history as read for one decision.
struct PersonView {
    resident: Option<Resident>,
    doses: Vec<DoseRecord>,
    findings: Vec<Finding>,
}

/// The registry: one per process, shared by every caller.
#[derive(Clone)]
pub struct Registry {
    store: DynStore,
    catalogue: Arc<Catalogue>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry on `store` with the builtin vaccine catalogue and the given clock.
    pub fn new(store: DynStore, clock: Arc<dyn Clock>) -> Self {
        Self { store, catalogue: Arc::new(Catalogue::builtin().clone()), clock }
    }

    /// Replaces the vaccine catalogue (e.g. one read with [`Catalogue::from_json`]).
    pub fn with_catalogue(mut self, catalogue: Catalogue) -> Self {
        self.catalogue = Arc::new(catalogue);
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The catalogue in use.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The current instant from the registry's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn today(&self) -> NaiveDate {
        jst_date(self.clock.now())
    }

    async fn principal(&self, actor: &Actor) -> Result<Principal> {
        Ok(match actor {
            Actor::MunicipalStaff { municipality, user } => Principal::Staff { municipality: *municipality, user: user.clone() },
            Actor::StatisticsReader { scope } => Principal::Statistics(*scope),
            Actor::Site { account } => Self::site_principal(actor, self.store.account(account).await?)?,
        })
    }

    /// The principal of a site actor whose stored account was read as `stored`.
    fn site_principal(actor: &Actor, stored: Option<TabletAccount>) -> Result<Principal> {
        match stored {
            Some(a) => Ok(Principal::Site(a)),
            None => Err(Error::PermissionDenied {
                actor: actor.to_string(),
                operation: Operation::RegisterDose,
                reason: "no such tablet account".into(),
            }),
        }
    }

    pub(crate) async fn check(&self, actor: &Actor, operation: Operation, subject: &Subject) -> Result<Principal> {
        let principal = self.principal(actor).await?;
        authorize(&principal, operation, subject, self.today())?;
        Ok(principal)
    }

    fn dose_subject(dose: &DoseRecord) -> Subject {
        Subject::Dose {
            owner: dose.owner(),
            resident_municipality: dose.matched.as_ref().map(|p| p.municipality),
            registered_by_site: dose.versions[0].details.site.clone(),
            registered_on: dose.registered_on_jst(),
        }
    }

    // ---- reads through the batch overlay -------------------------------------------

    /// A voucher's stored doses with the batch's own doses of that voucher over them.
    fn overlay_doses(pending: &Pending, voucher: VoucherRef, mut doses: Vec<DoseRecord>) -> Vec<DoseRecord> {
        if let Some(ids) = pending.by_voucher.get(&voucher) {
            for id in ids {
                if let Some(p) = pending.dose(id) {
                    match doses.iter_mut().find(|d| d.id == *id) {
                        Some(d) => *d = p.clone(),
                        None => doses.push(p.clone()),
                    }
                }
            }
        }
        doses
    }

    /// A dose's stored findings with the batch's own findings of that dose over them.
    fn overlay_findings(pending: &Pending, dose: DoseId, mut found: Vec<Finding>) -> Vec<Finding> {
        for f in found.iter_mut() {
            if let Some(p) = pending.findings.get(&(f.dose, f.kind)).and_then(|at| pending.finding(*at)) {
                *f = p.clone();
            }
        }
        let Some(first) = FindingKind::ALL.iter().copied().min() else { return found };
        for ((_, k), at) in pending.findings.range((dose, first)..).take_while(|((d, _), _)| *d == dose) {
            if let Some(f) = pending.finding(*at)
                && !found.iter().any(|x| x.kind == *k)
            {
                found.push(f.clone());
            }
        }
        found
    }

    async fn view_findings(&self, pending: &Pending, dose: DoseId) -> Result<Vec<Finding>> {
        Ok(Self::overlay_findings(pending, dose, self.store.findings_for_dose(dose).await?))
    }

    /// What deciding about one voucher needs, read in one call (see
    /// [`StoreBackend::person_contexts`](crate::store::StoreBackend::person_contexts)).
    async fn person_context(&self, voucher: VoucherRef, dose: Option<DoseId>) -> Result<PersonContext> {
        let mut contexts = self.store.person_contexts(&[PersonQuery { voucher, dose }]).await?;
        contexts.pop().ok_or_else(|| Error::Storage { message: "the store answered no person context".into(), source: None })
    }

    /// The view of a known resident (or of nobody) for `voucher`: the same reads as a
    /// context, the resident given rather than found.
    async fn known_person_view(&self, pending: &Pending, resident: Option<Resident>, voucher: VoucherRef) -> Result<PersonView> {
        let vouchers = person_vouchers(resident.as_ref(), voucher);
        let doses: Vec<(VoucherRef, Vec<DoseRecord>)> =
            vouchers.iter().copied().zip(self.store.doses_by_vouchers(&vouchers).await?).collect();
        let mut findings = Vec::new();
        for id in PersonContext::dose_ids(&doses) {
            findings.push((id, self.store.findings_for_dose(id).await?));
        }
        Ok(Self::person_view(pending, PersonContext { existing: None, resident, doses, findings }))
    }

    /// A person's view from a context read from the store, with the batch's own doses
    /// and findings over it.
    fn person_view(pending: &Pending, context: PersonContext) -> PersonView {
        let PersonContext { resident, doses: by_voucher, findings: stored, .. } = context;
        let mut doses: Vec<DoseRecord> = Vec::new();
        for (v, stored) in by_voucher {
            for d in Self::overlay_doses(pending, v, stored) {
                if !doses.iter().any(|x| x.id == d.id) {
                    doses.push(d);
                }
            }
        }
        let mut stored: HashMap<DoseId, Vec<Finding>> = stored.into_iter().collect();
        let mut findings = Vec::new();
        for d in &doses {
            findings.extend(Self::overlay_findings(pending, d.id, stored.remove(&d.id).unwrap_or_default()));
        }
        PersonView { resident, doses, findings }
    }

    /// Re-assesses a person's doses after `changed` replaced or joined them, producing
    /// the findings to write.
    /// `extra` is a dose joining the view (a new registration), passed apart so that it
    /// need not be copied into it.
    fn reassess(&self, view: &PersonView, extra: Option<&DoseRecord>, now: DateTime<Utc>) -> Vec<Finding> {
        let refs: Vec<&DoseRecord> = view.doses.iter().chain(extra).collect();
        let assessed = assess_person(view.resident.as_ref(), &refs, &self.catalogue);
        let owners: BTreeMap<DoseId, MunicipalityCode> = refs.iter().map(|d| (d.id, d.owner())).collect();
        diff_findings(&view.findings, &assessed, |id| owners.get(&id).copied(), now)
    }

    fn open_findings_of(findings_written: &[Finding], stored: &[Finding], dose: DoseId) -> Vec<Finding> {
        let mut by_kind: BTreeMap<FindingKind, Finding> = BTreeMap::new();
        for f in stored.iter().chain(findings_written).filter(|f| f.dose == dose) {
            by_kind.insert(f.kind, f.clone());
        }
        by_kind.into_values().filter(|f| f.open).collect()
    }

    // ---- registration ----------------------------------------------------------------

    /// The queries whose contexts decide `regs`, each with the OCR line it was parsed from
    /// and the dose id of its key (none for an unreadable OCR line, which is refused before
    /// anything is read). With [`Lookup::KeysAssumedNew`] the queries do not ask for the
    /// dose stored under the id.
    fn registration_queries(regs: &[DoseRegistration], lookup: Lookup) -> Vec<Option<(OcrLine, DoseId, PersonQuery)>> {
        regs.iter()
            .map(|r| {
                crate::reconcile::parse_ocr(&r.ocr_line).ok().map(|ocr| {
                    let id = DoseId::for_key(&r.idempotency_key);
                    let dose = match lookup {
                        Lookup::Keys => Some(id),
                        Lookup::KeysAssumedNew => None,
                    };
                    (ocr, id, PersonQuery { voucher: ocr.voucher, dose })
                })
            })
            .collect()
    }

    /// Decides a registration against `context`, the store's answer to its query with the
    /// OCR line and dose id the query was made of (read before any of the batch was
    /// decided; read here when not given), with the batch's earlier decisions over it.
    async fn decide_registration(
        &self,
        pending: &Pending,
        account: &TabletAccount,
        who: &str,
        reg: &DoseRegistration,
        context: Option<(OcrLine, DoseId, PersonContext)>,
    ) -> Result<(Option<ChangeSet>, RegistrationOutcome)> {
        let now = self.clock.now();
        // The id hashes the key and the OCR line was parsed for the query: not again.
        // An unreadable OCR line is refused whether or not the key was used (as validation
        // would refuse it first).
        let (ocr, id, context) = match context {
            Some(given) => given,
            None => {
                let ocr = crate::reconcile::parse_ocr(&reg.ocr_line)?;
                let id = DoseId::for_key(&reg.idempotency_key);
                (ocr, id, self.person_context(ocr.voucher, Some(id)).await?)
            }
        };
        // The same key earlier in this batch, or already stored: the first result again.
        let replay = match pending.dose(&id) {
            Some(first) => Some((first.clone(), self.view_findings(pending, id).await?)),
            None => context.existing.clone().map(|(d, f)| (d, Self::overlay_findings(pending, id, f))),
        };
        if let Some((first, findings)) = replay {
            if first.voucher != ocr.voucher {
                return Err(Error::Conflict { what: format!("idempotency key {} was used for another voucher", reg.idempotency_key) });
            }
            // Another account's key: replaying would echo that account's dose to this one.
            if first.registered_by != account.id {
                return Err(Error::Conflict {
                    what: format!("idempotency key {} was used by another tablet account", reg.idempotency_key),
                });
            }
            let findings = findings.into_iter().filter(|f| f.open).collect();
            return Ok((None, RegistrationOutcome { matched: first.matched.is_some(), dose: first, findings, replayed: true }));
        }
        let valid = validate_read_registration(reg, ocr, &account.site, &self.catalogue, jst_date(now))?;
        let voucher = valid.ocr.voucher;
        let view = Self::person_view(pending, context);
        // Registration order decides which of two colliding doses carries the finding, so
        // a new dose is always registered after every dose it was decided against, even
        // when the clock has not moved (a batch, a fixed clock, coarse time).
        let registered_at = view.doses.iter().map(|d| d.registered_at + chrono::Duration::microseconds(1)).fold(now, DateTime::max);
        let record = DoseRecord {
            id,
            idempotency_key: reg.idempotency_key.clone(),
            voucher,
            ticket_kind: valid.ocr.ticket_kind,
            registered_at,
            registered_by: account.id.clone(),
            matched: view.resident.as_ref().map(|r| r.person.clone()),
            versions: vec![DoseVersion {
                version: 1,
                details: valid.details,
                voided: false,
                recorded_at: now,
                recorded_by: who.to_owned(),
                reason: None,
            }],
            revision: 1,
            seq: 0,
        };
        let findings = self.reassess(&view, Some(&record), now);
        let own = Self::open_findings_of(&findings, &view.findings, id);
        let mut cs = ChangeSet::default();
        // The slot guards racing registrations of the same dose number; when another active
        // dose of this voucher already has the number (a duplicate, or the same number on
        // another day), the slot is taken and this dose is stored beside it with its finding.
        let number = record.details().dose_number;
        let slot_taken =
            view.doses.iter().any(|d| d.id != id && d.voucher == voucher && !d.is_voided() && d.details().dose_number == number);
        if !slot_taken && !own.iter().any(|f| f.kind == FindingKind::Duplicate) {
            cs.claim_slots.push((DoseSlot { voucher, dose_number: number }, id));
        }
        cs.counters = deltas(None, key_for(&record, view.resident.as_ref()));
        cs.audit.push(AuditEvent {
            at: now,
            municipality: record.owner(),
            actor: who.to_owned(),
            action: "register".into(),
            dose: Some(id),
            detail: format!("dose {} of voucher {}", record.details().dose_number, voucher),
        });
        cs.findings = findings;
        cs.new_doses.push(record.clone());
        let outcome = RegistrationOutcome { matched: record.matched.is_some(), dose: record, findings: own, replayed: false };
        Ok((Some(cs), outcome))
    }

    async fn site_account(&self, actor: &Actor) -> Result<(TabletAccount, String)> {
        let principal = self.check(actor, Operation::RegisterDose, &Subject::NewDose).await?;
        Self::registering_site(principal)
    }

    /// The account and its description when `principal` may register doses (already
    /// authorized for [`Operation::RegisterDose`]).
    fn registering_site(principal: Principal) -> Result<(TabletAccount, String)> {
        match principal {
            Principal::Site(a) => {
                let who = principal_describe(&a);
                Ok((a, who))
            }
            // `authorize` lets only sites register; this arm is unreachable in practice.
            other => Err(Error::PermissionDenied {
                actor: other.describe(),
                operation: Operation::RegisterDose,
                reason: "only sites register doses".into(),
            }),
        }
    }

    /// Registers one dose read at a site: validates the input (rejections store
    /// nothing), matches the voucher, stores the dose with its findings, counters and
    /// audit entry in one change set. The same idempotency key returns the first result.
    pub async fn register(&self, actor: &Actor, reg: &DoseRegistration) -> Result<RegistrationOutcome> {
        // A site with a readable OCR line: the store may read the account and the person
        // together. The account is checked exactly as `site_account` checks it before the
        // context is used; an unreadable line takes the plain path (the account's refusal
        // comes first there).
        if let Actor::Site { account } = actor
            && let Ok(ocr) = crate::reconcile::parse_ocr(&reg.ocr_line)
        {
            let id = DoseId::for_key(&reg.idempotency_key);
            let (stored, context) =
                self.store.account_with_person_context(account, PersonQuery { voucher: ocr.voucher, dose: Some(id) }).await?;
            let principal = Self::site_principal(actor, stored)?;
            authorize(&principal, Operation::RegisterDose, &Subject::NewDose, self.today())?;
            let (account, who) = Self::registering_site(principal)?;
            return self.register_one(&account, &who, reg, context.map(|c| (ocr, id, c))).await;
        }
        let (account, who) = self.site_account(actor).await?;
        self.register_one(&account, &who, reg, None).await
    }

    /// Registers with up to `MAX_ATTEMPTS` decisions; the first may be given its context
    /// already read (every retry reads afresh).
    async fn register_one(
        &self,
        account: &TabletAccount,
        who: &str,
        reg: &DoseRegistration,
        mut context: Option<(OcrLine, DoseId, PersonContext)>,
    ) -> Result<RegistrationOutcome> {
        let empty = Pending::default();
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let (cs, outcome) = self.decide_registration(&empty, account, who, reg, context.take()).await?;
            let Some(cs) = cs else { return Ok(outcome) };
            match self.store.apply(vec![cs]).await {
                Ok(applied) => {
                    let mut outcome = outcome;
                    // The call wrote this one dose: the call's highest number is its number.
                    outcome.dose.seq = applied.seq_of(outcome.dose.id).unwrap_or(applied.seq);
                    return self.match_if_uploaded_meanwhile(account, outcome).await;
                }
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Conflict { what: "registration kept conflicting".into() }))
    }

    /// Registers many doses in one durable commit (a tablet's sync batch, a bulk load).
    /// Each entry gets its own result; a rejected entry does not stop the others. If
    /// the commit meets a conflict (another writer touched one of the batch's persons in
    /// between), the batch is read and decided again; only if it keeps conflicting are its
    /// entries registered one by one.
    ///
    /// The first decision assumes every idempotency key is new (a batch's keys almost
    /// always are) and does not read the doses stored under them. A key already used is
    /// then noticed by the store, whose commit refuses a new dose under a taken id (a
    /// conflict), or, for an entry refused, by reading its id; either way the batch is
    /// read and decided again with its keys looked up, and gives what that full read gives.
    pub async fn register_batch(&self, actor: &Actor, regs: &[DoseRegistration]) -> Result<Vec<Result<RegistrationOutcome>>> {
        let (account, who) = self.site_account(actor).await?;
        // One attempt assuming new keys, then up to MAX_ATTEMPTS with the keys looked up.
        let attempts = std::iter::once(Lookup::KeysAssumedNew).chain(std::iter::repeat_n(Lookup::Keys, MAX_ATTEMPTS));
        for lookup in attempts {
            let queries = Self::registration_queries(regs, lookup);
            let (pending, results) = self.decide_batch(&account, &who, regs, &queries).await?;
            if lookup == Lookup::KeysAssumedNew && self.refused_a_stored_key(&queries, &results).await? {
                // A refused entry may be the replay of a dose stored earlier, which returns
                // the first result instead: decided again with the keys looked up.
                continue;
            }
            if pending.sets.is_empty() {
                return Ok(results);
            }
            match self.store.apply(pending.sets).await {
                Ok(applied) => {
                    // Decided before the commit, the batch's doses (and the replays of a key
                    // repeated within it) learn their numbers from it; a stored key's
                    // replay already carries its stored number.
                    let seqs = applied.seqs_by_dose();
                    let mut out: Vec<Result<RegistrationOutcome>> = Vec::with_capacity(results.len());
                    for result in results {
                        let next = match result {
                            Ok(mut outcome) => {
                                if let Some(&seq) = seqs.get(&outcome.dose.id) {
                                    outcome.dose.seq = seq;
                                }
                                if outcome.replayed {
                                    Ok(Self::replay_of_earlier_entry(&out, outcome))
                                } else {
                                    self.match_if_uploaded_meanwhile(&account, outcome).await
                                }
                            }
                            Err(e) => Err(e),
                        };
                        out.push(next);
                    }
                    return Ok(out);
                }
                // Re-deciding costs one read and the decisions; falling back to one commit
                // per entry at once would cost a durable commit per entry of a large batch.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::with_capacity(regs.len());
        for reg in regs {
            out.push(self.register_one(&account, &who, reg, None).await);
        }
        Ok(out)
    }

    /// Decides every entry of a batch against one read of the persons involved (the
    /// entries' [`registration_queries`](Self::registration_queries)): nothing is written
    /// before the batch's one commit, so each entry sees what it would have read on its
    /// own, and the entries before it through the pending change sets.
    async fn decide_batch(
        &self,
        account: &TabletAccount,
        who: &str,
        regs: &[DoseRegistration],
        queries: &[Option<(OcrLine, DoseId, PersonQuery)>],
    ) -> Result<(Pending, Vec<Result<RegistrationOutcome>>)> {
        let asked: Vec<PersonQuery> = queries.iter().flatten().map(|(_, _, q)| *q).collect();
        let mut answers = self.store.person_contexts(&asked).await?.into_iter();
        if answers.len() != asked.len() {
            return Err(Error::Storage { message: "the store answered a different number of person contexts".into(), source: None });
        }
        let mut pending = Pending::with_capacity(regs.len());
        let mut results: Vec<Result<RegistrationOutcome>> = Vec::with_capacity(regs.len());
        for (reg, query) in regs.iter().zip(queries) {
            let context = match query {
                // Every query took an answer, in order.
                Some((ocr, id, _)) => answers.next().map(|c| (*ocr, *id, c)),
                None => None,
            };
            match self.decide_registration(&pending, account, who, reg, context).await {
                Ok((Some(cs), outcome)) => {
                    pending.push(cs);
                    results.push(Ok(outcome));
                }
                Ok((None, outcome)) => results.push(Ok(outcome)),
                Err(e @ Error::Storage { .. }) => return Err(e),
                Err(e) => results.push(Err(e)),
            }
        }
        Ok((pending, results))
    }

    /// Whether an entry refused after a decision that assumed new keys (an unreadable OCR
    /// line aside, which is refused whatever its key: it has no query) has its key's dose
    /// stored: a replay, whose answer is the first result, not the refusal.
    async fn refused_a_stored_key(
        &self,
        queries: &[Option<(OcrLine, DoseId, PersonQuery)>],
        results: &[Result<RegistrationOutcome>],
    ) -> Result<bool> {
        for (query, result) in queries.iter().zip(results) {
            if let (Some((_, id, _)), Err(_)) = (query, result)
                && self.store.dose(*id).await?.is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The replay of a key first registered earlier in the same batch answers what that
    /// entry finally answered: a racing upload may have matched its dose after the batch
    /// was decided. A replay of a key stored before the batch is left as read.
    fn replay_of_earlier_entry(earlier: &[Result<RegistrationOutcome>], replay: RegistrationOutcome) -> RegistrationOutcome {
        // Rare (a tablet sending one entry twice in a batch): a scan beats keeping an index.
        let first = earlier.iter().filter_map(|r| r.as_ref().ok()).find(|o| !o.replayed && o.dose.id == replay.dose.id);
        match first {
            Some(first) => RegistrationOutcome { replayed: true, ..first.clone() },
            None => replay,
        }
    }

    /// A dose just stored unmatched may have raced the upload holding its voucher:
    /// decided before the upload committed, stored after the upload's matching pass read
    /// the unmatched doses, it would wait for the next reconciliation. Reading the
    /// voucher's resident again after the commit closes that gap: either this read sees
    /// the upload, or the upload's pass saw the dose. Costs reads for unmatched doses only.
    async fn match_if_uploaded_meanwhile(&self, account: &TabletAccount, outcome: RegistrationOutcome) -> Result<RegistrationOutcome> {
        if outcome.matched || outcome.replayed {
            return Ok(outcome);
        }
        self.match_voucher(&Principal::Site(account.clone()), outcome.dose.voucher).await?;
        match self.store.dose(outcome.dose.id).await? {
            Some(dose) if dose.matched.is_some() => {
                let findings = self.store.findings_for_dose(dose.id).await?.into_iter().filter(|f| f.open).collect();
                Ok(RegistrationOutcome { matched: true, dose, findings, replayed: false })
            }
            _ => Ok(outcome),
        }
    }

    // ---- corrections -----------------------------------------------------------------

    async fn change_dose(
        &self,
        actor: &Actor,
        id: DoseId,
        operation: Operation,
        reason: &str,
        edit: impl Fn(&DoseDetails) -> Result<Option<DoseDetails>>,
    ) -> Result<ChangeOutcome> {
        if reason.trim().is_empty() {
            return Err(Error::Invalid { field: "reason", value: String::new(), reason: "a correction or void needs a reason".into() });
        }
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let Some(dose) = self.store.dose(id).await? else {
                return Err(Error::NotFound { what: format!("dose {id}") });
            };
            let principal = self.check(actor, operation, &Self::dose_subject(&dose)).await?;
            if dose.is_voided() {
                return Err(Error::Invalid {
                    field: "dose",
                    value: id.to_string(),
                    reason: "the dose is voided; register it anew instead".into(),
                });
            }
            let now = self.clock.now();
            let old = dose.details().clone();
            let (details, voided) = match edit(&old)? {
                Some(d) => (validate_details(d, &self.catalogue, jst_date(now))?, false),
                None => (old.clone(), true),
            };
            if !voided && details == old {
                return Err(Error::Invalid { field: "correction", value: String::new(), reason: "nothing would change".into() });
            }
            let mut record = dose.clone();
            let version = record.versions.len() as u32 + 1;
            record.versions.push(DoseVersion {
                version,
                details,
                voided,
                recorded_at: now,
                recorded_by: principal.describe(),
                reason: Some(reason.trim().to_owned()),
            });
            record.revision += 1;
            let resident = match &dose.matched {
                Some(p) => self.store.resident(p).await?,
                None => None,
            };
            let pending = Pending::default();
            let mut view = self.known_person_view(&pending, resident, dose.voucher).await?;
            for d in view.doses.iter_mut().filter(|d| d.id == id) {
                *d = record.clone();
            }
            let mut cs = ChangeSet { findings: self.reassess(&view, None, now), ..ChangeSet::default() };
            if voided {
                // A voided dose keeps no open finding.
                for f in view.findings.iter().filter(|f| f.dose == id && f.open) {
                    if !cs.findings.iter().any(|x| x.dose == id && x.kind == f.kind) {
                        cs.findings.push(Finding { open: false, closed_at: Some(now), ..f.clone() });
                    }
                }
            }
            if voided || record.details().dose_number != old.dose_number {
                cs.release_slots.push((DoseSlot { voucher: dose.voucher, dose_number: old.dose_number }, id));
            }
            cs.counters = deltas(key_for(&dose, view.resident.as_ref()), key_for(&record, view.resident.as_ref()));
            cs.audit.push(AuditEvent {
                at: now,
                municipality: dose.owner(),
                actor: principal.describe(),
                action: if voided { "void".into() } else { "correct".into() },
                dose: Some(id),
                detail: format!("version {version}: {}", reason.trim()),
            });
            cs.updated_doses.push(record.clone());
            let findings = Self::open_findings_of(&cs.findings, &view.findings, id);
            match self.store.apply(vec![cs]).await {
                Ok(applied) => {
                    record.seq = applied.seq_of(id).unwrap_or(applied.seq);
                    return Ok(ChangeOutcome { dose: record, findings });
                }
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Conflict { what: format!("dose {id} kept changing") }))
    }

    /// Corrects a dose (補正): appends a version with who, when and why; findings,
    /// statistics and exports follow in the same change set.
    pub async fn correct(&self, actor: &Actor, id: DoseId, correction: &DoseCorrection, reason: &str) -> Result<ChangeOutcome> {
        self.change_dose(actor, id, Operation::CorrectDose, reason, |old| {
            let mut d = old.clone();
            if let Some(n) = correction.dose_number {
                d.dose_number = n;
            }
            if let Some(x) = correction.date_given {
                d.date_given = x;
            }
            if let Some(p) = &correction.product {
                d.product = ProductCode::new(p.trim());
            }
            if let Some(l) = &correction.lot {
                d.lot = crate::text::to_halfwidth(l.trim()).into_owned();
            }
            if let Some(doc) = &correction.doctor {
                d.doctor = doc.trim().to_owned();
            }
            if let Some(s) = &correction.site_name {
                d.site_name = s.trim().to_owned();
            }
            if let Some(expiry) = correction.lot_expiry {
                d.lot_expiry = Some(expiry);
            }
            Ok(Some(d))
        })
        .await
    }

    /// Voids a dose with a reason: a new version marks it void; nothing is erased.
    pub async fn void(&self, actor: &Actor, id: DoseId, reason: &str) -> Result<ChangeOutcome> {
        self.change_dose(actor, id, Operation::VoidDose, reason, |_| Ok(None)).await
    }

    // ---- residents and matching ------------------------------------------------------

    /// Imports a residents upload for `municipality` atomically, then matches the doses
    /// waiting for the uploaded vouchers. A file with bad rows is refused whole
    /// ([`Error::ImportRejected`], with every bad line) unless the source skips them.
    pub async fn import_residents(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        source: Box<dyn ResidentSource>,
    ) -> Result<ImportOutcome> {
        let principal = self.check(actor, Operation::UploadResidents, &Subject::Municipality(municipality)).await?;
        let (source, applied) = self.store.import_residents(source).await?;
        let mut report = source.into_report();
        report.applied = applied.committed;
        report.inserted = applied.inserted;
        report.replaced = applied.replaced;
        if !applied.committed {
            return Err(Error::ImportRejected(Box::new(report)));
        }
        let now = self.clock.now();
        let audit = AuditEvent {
            at: now,
            municipality,
            actor: principal.describe(),
            action: "import_residents".into(),
            dose: None,
            detail: report.summary(),
        };
        self.store.apply(vec![ChangeSet { audit: vec![audit], ..ChangeSet::default() }]).await?;
        let mut reconciled = self.match_vouchers(&principal, municipality, &report.previous_vouchers).await?;
        reconciled.still_unmatched = self.store.unmatched_doses(municipality).await?.len() as u64;
        Ok(ImportOutcome { report, reconciled })
    }

    /// Matches a municipality's unmatched doses to residents uploaded since they were
    /// registered (VRS's 登録待ちリスト emptying as uploads arrive).
    pub async fn reconcile(&self, actor: &Actor, municipality: MunicipalityCode) -> Result<ReconcileReport> {
        let principal = self.check(actor, Operation::Reconcile, &Subject::Municipality(municipality)).await?;
        let mut report = self.match_vouchers(&principal, municipality, &[]).await?;
        report.still_unmatched = self.store.unmatched_doses(municipality).await?.len() as u64;
        Ok(report)
    }

    async fn match_vouchers(&self, principal: &Principal, municipality: MunicipalityCode, extra: &[VoucherRef]) -> Result<ReconcileReport> {
        let mut vouchers: Vec<VoucherRef> = self.store.unmatched_doses(municipality).await?.iter().map(|d| d.voucher).collect();
        vouchers.extend_from_slice(extra);
        vouchers.sort();
        vouchers.dedup();
        let mut report = ReconcileReport::default();
        for chunk in vouchers.chunks(MATCH_BATCH) {
            report.matched += self.match_voucher_batch(principal, chunk).await?;
        }
        Ok(report)
    }

    /// Matches the unmatched doses of many vouchers decided against one read and written
    /// in one commit: an upload that meets thousands of waiting doses would otherwise
    /// spend a durable commit on each voucher. A voucher whose person another voucher of
    /// the batch already reached waits for its own pass (its view must include the
    /// other's matches); a conflict sends the batch one voucher at a time, each re-read.
    async fn match_voucher_batch(&self, principal: &Principal, vouchers: &[VoucherRef]) -> Result<u64> {
        let queries: Vec<PersonQuery> = vouchers.iter().map(|&voucher| PersonQuery { voucher, dose: None }).collect();
        let contexts = self.store.person_contexts(&queries).await?;
        if contexts.len() != queries.len() {
            return Err(Error::Storage { message: "the store answered a different number of person contexts".into(), source: None });
        }
        let now = self.clock.now();
        let mut persons = std::collections::HashSet::new();
        let mut later = Vec::new();
        let mut sets = Vec::new();
        let mut matched = 0;
        for (&voucher, context) in vouchers.iter().zip(contexts) {
            let Some(resident) = context.resident.clone() else { continue };
            if !persons.insert(resident.person.clone()) {
                later.push(voucher);
                continue;
            }
            if let Some(cs) = self.match_change_set(principal, &resident, context, now) {
                matched += cs.updated_doses.len() as u64;
                sets.push(cs);
            }
        }
        if !sets.is_empty() {
            match self.store.apply(sets).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {
                    let mut matched = 0;
                    for &voucher in vouchers {
                        matched += self.match_voucher(principal, voucher).await?;
                    }
                    return Ok(matched);
                }
                Err(e) => return Err(e),
            }
        }
        for voucher in later {
            matched += self.match_voucher(principal, voucher).await?;
        }
        Ok(matched)
    }

    /// Matches the unmatched doses of one voucher, if a resident now holds or names it.
    async fn match_voucher(&self, principal: &Principal, voucher: VoucherRef) -> Result<u64> {
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let context = self.person_context(voucher, None).await?;
            let Some(resident) = context.resident.clone() else { return Ok(0) };
            let Some(cs) = self.match_change_set(principal, &resident, context, self.clock.now()) else { return Ok(0) };
            let n = cs.updated_doses.len() as u64;
            match self.store.apply(vec![cs]).await {
                Ok(_) => return Ok(n),
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::Conflict { what: format!("voucher {voucher} kept changing") }))
    }

    /// The change set matching a context's unmatched doses to `resident` (counters moved to
    /// the resident's sex and age, findings reassessed, one audit entry per dose), or
    /// `None` when nothing is left to match.
    fn match_change_set(
        &self,
        principal: &Principal,
        resident: &Resident,
        context: PersonContext,
        now: DateTime<Utc>,
    ) -> Option<ChangeSet> {
        let mut view = Self::person_view(&Pending::default(), context);
        let mut cs = ChangeSet::default();
        let mut counters = Vec::new();
        for d in view.doses.iter_mut().filter(|d| d.matched.is_none()) {
            let before = key_for(d, None);
            d.matched = Some(resident.person.clone());
            d.revision += 1;
            counters.extend(deltas(before, key_for(d, Some(resident))));
            cs.audit.push(AuditEvent {
                at: now,
                municipality: d.owner(),
                actor: principal.describe(),
                action: "match".into(),
                dose: Some(d.id),
                detail: format!("voucher {} matched to {}", d.voucher, resident.person),
            });
            cs.updated_doses.push(d.clone());
        }
        if cs.updated_doses.is_empty() {
            return None;
        }
        cs.counters = merge_deltas(counters);
        cs.findings = self.reassess(&view, None, now);
        Some(cs)
    }

    /// Streams every resident a municipality uploaded to `visit`, in addressee order, for
    /// the municipality's staff (bulk reads for data teams: the Python bindings' Arrow
    /// tables). Nothing is held in memory beyond what the visitor keeps.
    pub async fn scan_residents(&self, actor: &Actor, municipality: MunicipalityCode, visit: Visit<'_, Resident>) -> Result<()> {
        self.check(actor, Operation::ReadResidents, &Subject::Municipality(municipality)).await?;
        self.store.scan_residents(municipality, visit).await
    }

    /// Streams every dose a municipality owns (registered under its vouchers, matched or
    /// not, voided ones included) to `visit`, for the municipality's staff: in voucher
    /// order, or with `since` only the doses written after that cursor, in change order.
    /// Returns the cursor for the next call. The access is the ledger export's
    /// ([`Operation::ExportLedger`]): the same data, one record per dose.
    pub async fn scan_doses(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        since: Option<u64>,
        visit: Visit<'_, DoseRecord>,
    ) -> Result<u64> {
        self.check(actor, Operation::ExportLedger, &Subject::Municipality(municipality)).await?;
        let scan = match since {
            Some(after) => DoseScan::ChangedSince { after },
            None => DoseScan::ByVoucher,
        };
        self.store.scan_doses(municipality, scan, visit).await
    }

    /// [`scan_residents`](Self::scan_residents) as columns of at most `rows` residents
    /// ([`ResidentColumns`](crate::columns::ResidentColumns)), for columnar frontends.
    pub async fn scan_resident_columns(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        rows: usize,
        visit: Visit<'_, crate::columns::ResidentColumns>,
    ) -> Result<()> {
        self.check(actor, Operation::ReadResidents, &Subject::Municipality(municipality)).await?;
        self.store.scan_resident_columns(municipality, rows, visit).await
    }

    /// [`scan_doses`](Self::scan_doses) as columns of at most `rows` doses
    /// ([`DoseColumns`](crate::columns::DoseColumns)), for columnar frontends; returns the
    /// same cursor.
    pub async fn scan_dose_columns(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        since: Option<u64>,
        rows: usize,
        visit: Visit<'_, crate::columns::DoseColumns>,
    ) -> Result<u64> {
        self.check(actor, Operation::ExportLedger, &Subject::Municipality(municipality)).await?;
        let scan = match since {
            Some(after) => DoseScan::ChangedSince { after },
            None => DoseScan::ByVoucher,
        };
        self.store.scan_dose_columns(municipality, scan, rows, visit).await
    }

    /// One resident, for the staff of its municipality.
    pub async fn resident(&self, actor: &Actor, person: &PersonRef) -> Result<Resident> {
        self.check(actor, Operation::ReadResidents, &Subject::Municipality(person.municipality)).await?;
        self.store.resident(person).await?.ok_or_else(|| Error::NotFound { what: format!("resident {person}") })
    }

    /// Every dose of a resident, wherever given and under whichever voucher: a resident
    /// who moved in is seen with the doses registered under the previous municipality's
    /// voucher (転入者の接種記録照会).
    pub async fn doses_of_resident(&self, actor: &Actor, person: &PersonRef) -> Result<Vec<DoseRecord>> {
        let resident = self.resident(actor, person).await?;
        if resident.previous.is_some() {
            self.check(actor, Operation::LookupMovedIn, &Subject::Municipality(person.municipality)).await?;
        }
        let pending = Pending::default();
        let mut view = self.known_person_view(&pending, Some(resident.clone()), resident.voucher_ref()).await?;
        view.doses.sort_by(|a, b| {
            (a.details().dose_number, a.details().date_given, a.registered_at).cmp(&(
                b.details().dose_number,
                b.details().date_given,
                b.registered_at,
            ))
        });
        Ok(view.doses)
    }

    /// One dose, for whoever may see it.
    pub async fn dose(&self, actor: &Actor, id: DoseId) -> Result<DoseRecord> {
        let Some(dose) = self.store.dose(id).await? else {
            return Err(Error::NotFound { what: format!("dose {id}") });
        };
        self.check(actor, Operation::ReadDose, &Self::dose_subject(&dose)).await?;
        Ok(dose)
    }

    /// The doses a site registered today (JST), for its tablets.
    pub async fn todays_doses(&self, actor: &Actor) -> Result<Vec<DoseRecord>> {
        let principal = self.principal(actor).await?;
        let Principal::Site(account) = &principal else {
            return Err(Error::PermissionDenied {
                actor: principal.describe(),
                operation: Operation::ReadDose,
                reason: "only sites have a list of today's registrations".into(),
            });
        };
        let today = self.today();
        let doses = self.store.doses_by_site(&account.site.id, today).await?;
        for d in &doses {
            authorize(&principal, Operation::ReadDose, &Self::dose_subject(d), today)?;
        }
        Ok(doses)
    }

    /// A municipality's review queue (要修正 / 要確認).
    pub async fn findings(&self, actor: &Actor, municipality: MunicipalityCode, open_only: bool) -> Result<Vec<Finding>> {
        self.check(actor, Operation::ReadFindings, &Subject::Municipality(municipality)).await?;
        self.store.findings(municipality, open_only).await
    }

    /// Doses of a municipality waiting for their resident (登録待ちリスト).
    pub async fn unmatched(&self, actor: &Actor, municipality: MunicipalityCode) -> Result<Vec<DoseRecord>> {
        self.check(actor, Operation::ExportUnmatched, &Subject::Municipality(municipality)).await?;
        self.store.unmatched_doses(municipality).await
    }

    // ---- accounts ------------------------------------------------------------------

    /// Issues a tablet account to a site in the staff's municipality. It has no secret, so
    /// it cannot sign in ([`Registry::authenticate`]) until one is given with
    /// [`Registry::renew_account_secret`]; frontends issue accounts with
    /// [`Registry::issue_account_with_secret`].
    pub async fn issue_account(&self, actor: &Actor, site: Site, id: AccountId) -> Result<TabletAccount> {
        let (account, cs) = self.account_issue(actor, site, id).await?;
        self.store.apply(vec![cs]).await?;
        Ok(account)
    }

    /// Decides issuing an account: the account and the change set that stores it.
    pub(crate) async fn account_issue(&self, actor: &Actor, site: Site, id: AccountId) -> Result<(TabletAccount, ChangeSet)> {
        let principal = self.check(actor, Operation::IssueAccount, &Subject::Site { municipality: site.municipality }).await?;
        crate::reconcile::check_length("site_name", &site.name, crate::dose::limits::SITE_NAME, true)?;
        if let Some(existing) = self.store.account(&id).await?
            && existing.revoked_at.is_none()
        {
            return Err(Error::Conflict { what: format!("account {id} already exists") });
        }
        let now = self.clock.now();
        let account = TabletAccount { id: id.clone(), site, issued_by: principal.describe(), issued_at: now, revoked_at: None };
        let audit = AuditEvent {
            at: now,
            municipality: account.site.municipality,
            actor: principal.describe(),
            action: "issue_account".into(),
            dose: None,
            detail: format!("account {id} for site {}", account.site.id),
        };
        let cs = ChangeSet { accounts: vec![account.clone()], audit: vec![audit], ..ChangeSet::default() };
        Ok((account, cs))
    }

    /// Revokes a tablet account; it can do nothing from then on.
    pub async fn revoke_account(&self, actor: &Actor, id: &AccountId) -> Result<TabletAccount> {
        let Some(mut account) = self.store.account(id).await? else {
            return Err(Error::NotFound { what: format!("account {id}") });
        };
        let principal = self.check(actor, Operation::RevokeAccount, &Subject::Site { municipality: account.site.municipality }).await?;
        if account.revoked_at.is_some() {
            return Ok(account);
        }
        let now = self.clock.now();
        account.revoked_at = Some(now);
        let audit = AuditEvent {
            at: now,
            municipality: account.site.municipality,
            actor: principal.describe(),
            action: "revoke_account".into(),
            dose: None,
            detail: format!("account {id}"),
        };
        self.store.apply(vec![ChangeSet { accounts: vec![account.clone()], audit: vec![audit], ..ChangeSet::default() }]).await?;
        Ok(account)
    }

    /// The tablet accounts of a municipality's sites.
    pub async fn accounts(&self, actor: &Actor, municipality: MunicipalityCode) -> Result<Vec<TabletAccount>> {
        self.check(actor, Operation::ReadAccounts, &Subject::Site { municipality }).await?;
        self.store.accounts(municipality).await
    }

    // ---- statistics and exports ----------------------------------------------------

    /// Aggregate counts, read from counters kept up to date with every change.
    pub async fn statistics(&self, actor: &Actor, query: StatsQuery) -> Result<Vec<StatsRow>> {
        let subject = match query {
            StatsQuery::National => Subject::Statistics { prefecture: None, municipality: None },
            StatsQuery::Prefecture(p) => Subject::Statistics { prefecture: Some(p), municipality: None },
            StatsQuery::Municipality(m) => Subject::Statistics { prefecture: Some(m.prefecture()), municipality: Some(m) },
        };
        self.check(actor, Operation::ReadStatistics, &subject).await?;
        self.store.statistics(query).await
    }

    /// The audit trail of a municipality (staff only).
    pub async fn audit(&self, actor: &Actor, municipality: MunicipalityCode) -> Result<Vec<AuditEvent>> {
        self.check(actor, Operation::ReadFindings, &Subject::Municipality(municipality)).await?;
        self.store.audit(municipality).await
    }

    /// Exports a municipality's ledger (予防接種台帳向け出力): see [`crate::ledger`].
    pub async fn export_ledger(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        options: &crate::ledger::LedgerOptions,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<crate::ledger::LedgerExport> {
        self.check(actor, Operation::ExportLedger, &Subject::Municipality(municipality)).await?;
        crate::ledger::export(self.store.as_ref(), municipality, options, out).await
    }

    /// Exports the unmatched list (登録待ちリスト) of a municipality as CSV.
    pub async fn export_unmatched(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        options: &crate::ledger::LedgerOptions,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64> {
        let doses = self.unmatched(actor, municipality).await?;
        crate::ledger::write_unmatched(&doses, options, out)
    }
}

fn principal_describe(a: &TabletAccount) -> String {
    Principal::Site(a.clone()).describe()
}
