//! [`TabletSession`]: a site tablet working offline on its own embedded store.
//!
//! Two files in the session's data directory: `vrs.redb`, the embedded store the core's
//! [`Registry`] runs on (so a registration gets exactly the findings the core gives with the
//! data the tablet has), and `outbox.redb`, the sync entries not yet acknowledged by the
//! server (see the `outbox` module). Every change is written to the outbox first, then to the
//! store; on open, pending entries missing from the store are replayed into it. Nothing is
//! lost on a crash at any point, and nothing is doubled when a batch is sent twice, because
//! the server applies batches idempotently ([`Registry::apply_sync_batch`]).

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use vrs_core::access::{Actor, Site};
use vrs_core::dose::{DoseCorrection, DoseRecord, DoseRegistration};
use vrs_core::ids::{AccountId, DoseId, IdempotencyKey, MunicipalityCode, SiteId};
use vrs_core::service::{Clock, Registry};
use vrs_core::sync::{SyncBatch, SyncChange, SyncEntry, SyncReply};
use vrs_core::vaccine::Catalogue;
use vrs_store_redb::RedbStore;

use crate::error::VrsError;
use crate::outbox::Outbox;
use crate::types::{
    Acknowledgement, CorrectionInput, DoseSummary, EntryOutcome, EntryStatus, Finding, PendingBatch, RegistrationInput, RegistrationResult,
    SiteAccount, VaccineLabel, parse_date,
};

/// The device's clock.
#[derive(Debug)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A tablet's working session: one site account, one data directory. Every method that
/// touches storage is async (a Kotlin `suspend fun`, a Swift `async` method) and runs the
/// blocking work off the caller's thread.
#[derive(uniffi::Object)]
pub struct TabletSession {
    registry: Registry,
    actor: Actor,
    account: SiteAccount,
    outbox: Outbox,
    /// One change at a time: a correction's version is decided from what is stored.
    lock: async_lock::Mutex<()>,
}

impl std::fmt::Debug for TabletSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TabletSession").field("account", &self.account.account_id).finish_non_exhaustive()
    }
}

/// Opens (creating if needed) the session in `data_dir` for the site account the
/// municipality issued. `catalogue_json`, when given, replaces the builtin vaccine catalogue
/// (e.g. one listing the GTINs of the packs the site receives). Pending entries that a crash
/// left out of the local store are replayed into it. Fails with `Storage` when another
/// session holds the directory.
#[uniffi::export(default(catalogue_json = None))]
pub async fn open_tablet_session(
    data_dir: String,
    account: SiteAccount,
    catalogue_json: Option<String>,
) -> Result<Arc<TabletSession>, VrsError> {
    TabletSession::open(PathBuf::from(data_dir), account, catalogue_json, Arc::new(SystemClock)).await.map(Arc::new)
}

fn entry_key(e: &SyncEntry) -> &IdempotencyKey {
    e.dose_key()
}

impl TabletSession {
    /// Opens a session with the given clock (the FFI uses the device's).
    pub async fn open(
        dir: PathBuf,
        account: SiteAccount,
        catalogue_json: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<TabletSession, VrsError> {
        let account_id = AccountId::parse(&account.account_id)?;
        let site = Site {
            id: SiteId::parse(&account.site_id)?,
            name: account.site_name.trim().to_owned(),
            municipality: MunicipalityCode::parse(&account.municipality_code)?,
        };
        let catalogue = catalogue_json.as_deref().map(Catalogue::from_json).transpose()?;
        let now_micros = u64::try_from(clock.now().timestamp_micros()).unwrap_or(0);
        let (store, outbox) = blocking::unblock(move || -> Result<(RedbStore, Outbox), VrsError> {
            std::fs::create_dir_all(&dir).map_err(|e| VrsError::storage("creating the data directory", e))?;
            let store = RedbStore::open(dir.join("vrs.redb"))?;
            let outbox = Outbox::open(&dir.join("outbox.redb"), now_micros)?;
            Ok((store, outbox))
        })
        .await?;
        let mut registry = Registry::new(Arc::new(store), clock);
        if let Some(c) = catalogue {
            registry = registry.with_catalogue(c);
        }
        // The account as the municipality issued it, recorded in the tablet's own store so the
        // core's access rules apply offline exactly as on the server.
        match registry.store().account(&account_id).await? {
            Some(known) if known.site != site => {
                return Err(VrsError::invalid(
                    "account",
                    format!("this data directory belongs to account {} of site {}", known.id, known.site.id),
                ));
            }
            Some(_) => {}
            None => {
                let setup = Actor::MunicipalStaff { municipality: site.municipality, user: "tablet-setup".into() };
                registry.issue_account(&setup, site, account_id.clone()).await?;
            }
        }
        let session =
            TabletSession { registry, actor: Actor::Site { account: account_id }, account, outbox, lock: async_lock::Mutex::new(()) };
        session.recover().await?;
        Ok(session)
    }

    async fn outbox<T: Send + 'static>(&self, f: impl FnOnce(&Outbox) -> Result<T, VrsError> + Send + 'static) -> Result<T, VrsError> {
        let outbox = self.outbox.clone();
        blocking::unblock(move || f(&outbox)).await
    }

    /// Replays pending entries that are not in the local store (a crash between the outbox
    /// write and the store write); drops those the local rules refuse.
    async fn recover(&self) -> Result<(), VrsError> {
        let _guard = self.lock.lock().await;
        let pending = self.outbox(|o| o.pending(0)).await?;
        for (seq, entry) in pending {
            let id = DoseId::for_key(entry_key(&entry));
            let stored = self.registry.store().dose(id).await?;
            let outcome = match (&entry.change, &stored) {
                (SyncChange::Register { registration }, None) => self.registry.register(&self.actor, registration).await.map(|_| ()),
                (SyncChange::Correct { version, correction, reason, .. }, Some(d)) if d.versions.len() as u32 + 1 == *version => {
                    self.registry.correct(&self.actor, id, correction, reason).await.map(|_| ())
                }
                (SyncChange::Void { version, reason, .. }, Some(d)) if d.versions.len() as u32 + 1 == *version => {
                    self.registry.void(&self.actor, id, reason).await.map(|_| ())
                }
                _ => Ok(()),
            };
            match outcome {
                Ok(()) => {}
                Err(e @ vrs_core::Error::Storage { .. }) => return Err(e.into()),
                // A registration the local rules refuse would be refused by the server too.
                Err(_) if matches!(entry.change, SyncChange::Register { .. }) => {
                    let entry_id = entry.entry_id.clone();
                    self.outbox(move |o| o.remove(seq, &entry_id)).await?;
                }
                // A change the local store can no longer take (e.g. the day is over) still goes
                // to the server, which applies it or queues it for review.
                Err(_) => {}
            }
        }
        Ok(())
    }

    async fn summary(&self, dose: &DoseRecord) -> Result<DoseSummary, VrsError> {
        let findings: Vec<Finding> =
            self.registry.store().findings_for_dose(dose.id).await?.iter().filter(|f| f.open).map(Finding::from).collect();
        let key = dose.idempotency_key.as_str().to_owned();
        let pending = self.outbox(|o| o.pending_doses()).await?;
        Ok(DoseSummary::of(dose, findings, !pending.contains(&key)))
    }

    fn today_text(&self) -> String {
        vrs_core::clock::jst_date(self.registry.now()).format("%Y-%m-%d").to_string()
    }
}

fn correction_of(c: &CorrectionInput) -> Result<DoseCorrection, VrsError> {
    Ok(DoseCorrection {
        dose_number: c.dose_number,
        date_given: c.date_given.as_deref().map(|d| parse_date("date_given", d)).transpose()?,
        product: c.product.clone(),
        lot: c.lot.clone(),
        lot_expiry: c.lot_expiry.as_deref().map(|d| parse_date("lot_expiry", d)).transpose()?,
        doctor: c.doctor.clone(),
        site_name: c.site_name.clone(),
    })
}

#[uniffi::export]
impl TabletSession {
    /// The account the session works as.
    pub fn account(&self) -> SiteAccount {
        self.account.clone()
    }

    /// Registers a dose offline. The outcome carries the findings the core gives with the
    /// data on the tablet (every voucher is `unmatched` until the server, which has the
    /// residents, matches it). Refused registrations (`Rejected`, `InvalidInput`,
    /// `PermissionDenied`) store nothing and send nothing. The same idempotency key again
    /// returns the first result with `replayed`.
    pub async fn register(&self, input: RegistrationInput) -> Result<RegistrationResult, VrsError> {
        let _guard = self.lock.lock().await;
        let date_text = if input.date_given.trim().is_empty() { self.today_text() } else { input.date_given.clone() };
        let key = match &input.idempotency_key {
            Some(k) => IdempotencyKey::parse(k)?,
            None => {
                let account = self.account.account_id.clone();
                IdempotencyKey::parse(&self.outbox(move |o| o.next_key(&account)).await?)?
            }
        };
        let registration = DoseRegistration {
            ocr_line: input.ocr_line.clone(),
            dose_number: input.dose_number,
            date_given: parse_date("date_given", &date_text)?,
            product: input.product.clone(),
            lot: input.lot.clone(),
            doctor: input.doctor.clone(),
            idempotency_key: key.clone(),
            lot_expiry: input.lot_expiry.as_deref().map(|d| parse_date("lot_expiry", d)).transpose()?,
        };
        let entry = SyncEntry::register(registration.clone(), self.registry.now());
        let entry_id = entry.entry_id.clone();
        let known = {
            let id = entry_id.clone();
            self.outbox(move |o| o.known(&id)).await?
        };
        // Outbox first: from here on a crash cannot lose the registration.
        let seq = if known { None } else { Some(self.outbox(move |o| o.append(&entry)).await?) };
        match self.registry.register(&self.actor, &registration).await {
            Ok(outcome) => Ok(RegistrationResult { dose: self.summary(&outcome.dose).await?, replayed: outcome.replayed }),
            Err(e) => {
                if let Some(seq) = seq {
                    self.outbox(move |o| o.remove(seq, &entry_id)).await?;
                }
                Err(e.into())
            }
        }
    }

    /// The doses this site registered today (Japan time), with their findings and whether
    /// the server has acknowledged them.
    pub async fn today(&self) -> Result<Vec<DoseSummary>, VrsError> {
        let doses = self.registry.todays_doses(&self.actor).await?;
        let pending = self.outbox(|o| o.pending_doses()).await?;
        let mut out = Vec::with_capacity(doses.len());
        for d in &doses {
            let findings: Vec<Finding> =
                self.registry.store().findings_for_dose(d.id).await?.iter().filter(|f| f.open).map(Finding::from).collect();
            out.push(DoseSummary::of(d, findings, !pending.contains(d.idempotency_key.as_str())));
        }
        Ok(out)
    }

    /// Corrects (補正) one of today's own doses with a reason: a new version, synced like a
    /// registration. Other doses are `PermissionDenied`.
    pub async fn correct(&self, dose_id: String, correction: CorrectionInput, reason: String) -> Result<DoseSummary, VrsError> {
        let correction = correction_of(&correction)?;
        self.change(dose_id, reason, Some(correction)).await
    }

    /// Voids one of today's own doses with a reason (a new version marking it void).
    pub async fn void(&self, dose_id: String, reason: String) -> Result<DoseSummary, VrsError> {
        self.change(dose_id, reason, None).await
    }

    /// The next batch to send: up to `max` pending entries (all when 0), oldest first, as the
    /// versioned sync JSON; `None` when nothing is pending. Entries stay pending until
    /// `acknowledge` gets a final answer for them, so a batch that was lost, or whose reply
    /// was, is simply produced again.
    pub async fn pending_batch(&self, max: u32) -> Result<Option<PendingBatch>, VrsError> {
        let entries = self.outbox(move |o| o.pending(max)).await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let seqs: Vec<u64> = entries.iter().map(|(s, _)| *s).collect();
        let account = self.account.account_id.clone();
        let batch_id = self.outbox(move |o| o.record_batch(&account, &seqs)).await?;
        let account = AccountId::parse(&self.account.account_id)?;
        let count = entries.len() as u32;
        let batch = SyncBatch::new(batch_id.clone(), account, self.registry.now(), entries.into_iter().map(|(_, e)| e).collect());
        Ok(Some(PendingBatch { batch_id, json: batch.to_json(), entries: count }))
    }

    /// Takes the server's reply to a batch (`vrs.sync.reply` JSON): entries with a final
    /// status leave the outbox, `retry` ones stay for the next batch. Acknowledging the
    /// same reply twice changes nothing the second time.
    pub async fn acknowledge(&self, batch_id: String, server_reply: String) -> Result<Acknowledgement, VrsError> {
        let reply = SyncReply::from_json(&server_reply)?;
        if reply.batch_id != batch_id {
            return Err(VrsError::invalid("server_reply", format!("it answers batch {}, not {batch_id}", reply.batch_id)));
        }
        if reply.account.as_str() != self.account.account_id {
            return Err(VrsError::invalid("server_reply", format!("it is for account {}", reply.account)));
        }
        let for_outbox = reply.clone();
        let acked = self.outbox(move |o| o.acknowledge(&for_outbox)).await?;
        let count = |s: vrs_core::sync::EntryStatus| reply.count(s) as u32;
        use vrs_core::sync::EntryStatus as S;
        Ok(Acknowledgement {
            batch_id,
            applied: count(S::Applied),
            replayed: count(S::Replayed),
            rejected: count(S::Rejected),
            conflicts: count(S::Conflict),
            retry: count(S::Retry),
            still_pending: acked.pending,
            entries: reply
                .entries
                .iter()
                .map(|e| EntryOutcome {
                    entry_id: e.entry_id.clone(),
                    status: EntryStatus::from(e.status),
                    dose_id: e.dose_id.map(|d| d.to_string()),
                    detail: e.message.clone(),
                    findings: e.findings.iter().map(Finding::from).collect(),
                })
                .collect(),
        })
    }

    /// How many entries wait for the server.
    pub async fn pending_count(&self) -> Result<u64, VrsError> {
        self.outbox(|o| o.pending_count()).await
    }

    /// Reads a vaccine label with this session's catalogue; `dose_date` (`YYYY-MM-DD`,
    /// default today) decides whether the lot has expired.
    #[uniffi::method(default(dose_date = None))]
    pub fn parse_vaccine_label(&self, text: String, dose_date: Option<String>) -> Result<VaccineLabel, VrsError> {
        let day = parse_date("dose_date", &dose_date.unwrap_or_else(|| self.today_text()))?;
        Ok(vrs_core::scan::label::parse_vaccine_label(&text, self.registry.catalogue(), Some(day))?.into())
    }
}

impl TabletSession {
    async fn change(&self, dose_id: String, reason: String, correction: Option<DoseCorrection>) -> Result<DoseSummary, VrsError> {
        let _guard = self.lock.lock().await;
        let id = DoseId::parse(&dose_id)?;
        let dose = self.registry.dose(&self.actor, id).await?;
        let version = dose.versions.len() as u32 + 1;
        let now = self.registry.now();
        let entry = match &correction {
            Some(c) => SyncEntry::correct(dose.idempotency_key.clone(), version, c.clone(), &reason, now),
            None => SyncEntry::void(dose.idempotency_key.clone(), version, &reason, now),
        };
        let entry_id = entry.entry_id.clone();
        let seq = self.outbox(move |o| o.append(&entry)).await?;
        let changed = match &correction {
            Some(c) => self.registry.correct(&self.actor, id, c, &reason).await,
            None => self.registry.void(&self.actor, id, &reason).await,
        };
        match changed {
            Ok(outcome) => self.summary(&outcome.dose).await,
            Err(e) => {
                self.outbox(move |o| o.remove(seq, &entry_id)).await?;
                Err(e.into())
            }
        }
    }

    /// Test hook: appends an entry to the outbox without storing it, as a crash between the
    /// two writes would leave it.
    #[doc(hidden)]
    pub async fn append_only_for_tests(&self, entry: SyncEntry) -> Result<(), VrsError> {
        self.outbox(move |o| o.append(&entry)).await.map(|_| ())
    }
}
