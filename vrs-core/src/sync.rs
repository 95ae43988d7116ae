//! Tablet sync batches (DESIGN.md §4): what a site tablet recorded offline, sent as versioned
//! JSON, and the server's per-entry reply. Applying a batch is idempotent: a batch may arrive
//! twice, partly, or out of order, and nothing is doubled, lost or overwritten.
//!
//! # The batch (`"format": "vrs.sync.batch"`, `"version": 1`)
//!
//! ```json
//! {
//!   "format": "vrs.sync.batch", "version": 1,
//!   "batch_id": "tab-1.b7", "account": "tab-1", "produced_at": "2021-07-01T03:10:00Z",
//!   "entries": [
//!     { "entry_id": "tab-1.1625108400000000.1", "recorded_at": "2021-07-01T01:00:00Z",
//!       "kind": "register",
//!       "registration": { "ocr_line": "111310160000012345", "dose_number": null,
//!         "date_given": "2021-07-01", "product": "pfizer", "lot": "FA5765", "doctor": "佐藤一郎",
//!         "idempotency_key": "tab-1.1625108400000000.1", "lot_expiry": "2021-08-31" } },
//!     { "entry_id": "tab-1.1625108400000000.1@v2", "recorded_at": "2021-07-01T01:05:00Z",
//!       "kind": "correct", "dose_key": "tab-1.1625108400000000.1", "version": 2,
//!       "correction": { "lot": "FA5766" }, "reason": "lot misread" }
//!   ]
//! }
//! ```
//!
//! Entries are `register` (a [`DoseRegistration`], whose idempotency key names the dose),
//! `correct` (a [`DoseCorrection`] of the dose registered under `dose_key`, creating its version
//! `version`) and `void` (likewise, voiding it). Unknown fields are ignored, so a newer tablet
//! may add some; a batch of another `format` or a `version` this code does not know is refused.
//!
//! # Applying it ([`Registry::apply_sync_batch`])
//!
//! Registrations go through [`Registry::register_batch`], one durable commit for the whole batch
//! (up to 20,000 registrations): a key
//! already used replays the first result. A change names the version it creates: when the dose already has
//! that version, written by this account with the same reason, it is a replay; when it has the
//! version before, the change is applied through [`Registry::correct`] / [`Registry::void`];
//! when an earlier change has not arrived yet, the entry is to be retried. A change that cannot
//! be applied as the tablet made it (someone else wrote that version meanwhile, the day is
//! over for the site, the values are refused) is never last-write-wins and never dropped: it
//! becomes a [`FindingKind::SyncConflict`] finding in the owning municipality's review queue,
//! describing what the tablet wanted, and the entry's status is `conflict`.
//!
//! # The reply (`"format": "vrs.sync.reply"`)
//!
//! One [`EntryReply`] per entry, by `entry_id`: `applied`, `replayed` (nothing new stored),
//! `rejected` (refused at input: nothing stored; the tablet shows why), `conflict` (in the
//! review queue) or `retry` (send it again later). Every status but `retry` is final
//! ([`EntryStatus::is_final`]): the tablet may forget the entry once acknowledged.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{Actor, Operation, Principal};
use crate::dose::{DoseCorrection, DoseRegistration};
use crate::finding::{Finding, FindingKind};
use crate::ids::{AccountId, DoseId, IdempotencyKey};
use crate::service::Registry;
use crate::store::{AuditEvent, ChangeSet};
use crate::{Error, Result};

/// The `format` of a batch.
pub const BATCH_FORMAT: &str = "vrs.sync.batch";
/// The `format` of a reply.
pub const REPLY_FORMAT: &str = "vrs.sync.reply";
/// The version of both formats this code writes and reads.
pub const SYNC_VERSION: u32 = 1;

/// Registrations of a batch committed together. A tablet's batch is decided against one
/// read and written in one commit up to this size (each commit rewrites every page its
/// registrations touched, so fewer commits write far less); only a larger batch is split,
/// to bound the in-memory overlay of what it registered.
const REGISTRATION_CHUNK: usize = 20_000;

/// A batch of what a tablet recorded, in the order it recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBatch {
    /// Always [`BATCH_FORMAT`].
    pub format: String,
    /// [`SYNC_VERSION`].
    pub version: u32,
    /// Chosen by the tablet; echoed in the reply.
    pub batch_id: String,
    /// The tablet account that recorded every entry.
    pub account: AccountId,
    /// When the tablet produced the batch (its clock; informational).
    pub produced_at: DateTime<Utc>,
    /// The entries, oldest first.
    pub entries: Vec<SyncEntry>,
}

/// One thing a tablet recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncEntry {
    /// Unique per account: the registration's idempotency key, or `KEY@vN` for a change.
    pub entry_id: String,
    /// When the tablet recorded it (its clock; informational: the server's clock stamps
    /// what it stores).
    pub recorded_at: DateTime<Utc>,
    /// What was recorded.
    #[serde(flatten)]
    pub change: SyncChange,
}

/// What a [`SyncEntry`] records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SyncChange {
    /// A dose registered.
    Register {
        /// The registration as the tablet made it.
        registration: DoseRegistration,
    },
    /// A correction (補正) of a dose the tablet registered.
    Correct {
        /// The idempotency key the dose was registered with.
        dose_key: IdempotencyKey,
        /// The version this correction creates (2 for the first correction).
        version: u32,
        /// The fields changed.
        correction: DoseCorrection,
        /// Why.
        reason: String,
    },
    /// A void of a dose the tablet registered.
    Void {
        /// The idempotency key the dose was registered with.
        dose_key: IdempotencyKey,
        /// The version the void creates.
        version: u32,
        /// Why.
        reason: String,
    },
}

impl SyncEntry {
    /// A registration entry (its id is the idempotency key).
    pub fn register(registration: DoseRegistration, recorded_at: DateTime<Utc>) -> Self {
        Self { entry_id: registration.idempotency_key.as_str().to_owned(), recorded_at, change: SyncChange::Register { registration } }
    }

    /// A correction entry creating version `version` of the dose registered under `dose_key`.
    pub fn correct(dose_key: IdempotencyKey, version: u32, correction: DoseCorrection, reason: &str, recorded_at: DateTime<Utc>) -> Self {
        Self {
            entry_id: format!("{}@v{version}", dose_key.as_str()),
            recorded_at,
            change: SyncChange::Correct { dose_key, version, correction, reason: reason.trim().to_owned() },
        }
    }

    /// A void entry creating version `version` of the dose registered under `dose_key`.
    pub fn void(dose_key: IdempotencyKey, version: u32, reason: &str, recorded_at: DateTime<Utc>) -> Self {
        Self {
            entry_id: format!("{}@v{version}", dose_key.as_str()),
            recorded_at,
            change: SyncChange::Void { dose_key, version, reason: reason.trim().to_owned() },
        }
    }

    /// The idempotency key of the dose the entry registers or changes.
    pub fn dose_key(&self) -> &IdempotencyKey {
        match &self.change {
            SyncChange::Register { registration } => &registration.idempotency_key,
            SyncChange::Correct { dose_key, .. } | SyncChange::Void { dose_key, .. } => dose_key,
        }
    }
}

impl SyncBatch {
    /// A batch of the current format.
    pub fn new(batch_id: impl Into<String>, account: AccountId, produced_at: DateTime<Utc>, entries: Vec<SyncEntry>) -> Self {
        Self { format: BATCH_FORMAT.to_owned(), version: SYNC_VERSION, batch_id: batch_id.into(), account, produced_at, entries }
    }

    /// Reads a batch, refusing another format or an unknown version ([`Error::Invalid`]).
    pub fn from_json(text: &str) -> Result<Self> {
        let batch: SyncBatch = serde_json::from_str(text).map_err(|e| invalid("sync_batch", e.to_string()))?;
        check_format("sync_batch", &batch.format, BATCH_FORMAT, batch.version)?;
        Ok(batch)
    }

    /// The batch as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Invalid { field, value: String::new(), reason: reason.into() }
}

fn check_format(field: &'static str, format: &str, expected: &str, version: u32) -> Result<()> {
    if format != expected {
        return Err(invalid(field, format!("format {format:?} is not {expected:?}")));
    }
    if version != SYNC_VERSION {
        return Err(invalid(field, format!("version {version} is not supported (this code reads version {SYNC_VERSION})")));
    }
    Ok(())
}

/// What became of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Stored now.
    Applied,
    /// Already stored by an earlier copy of the entry: nothing new stored.
    Replayed,
    /// Refused at input (nothing stored); the reply says why.
    Rejected,
    /// Not applied as made, and queued for the municipality's review (a
    /// [`FindingKind::SyncConflict`] finding), or a registration key already used for another
    /// voucher.
    Conflict,
    /// Not applied yet (an earlier entry it depends on has not arrived): send it again.
    Retry,
}

impl EntryStatus {
    /// Whether the server is done with the entry, so the tablet may stop sending it.
    pub fn is_final(self) -> bool {
        !matches!(self, EntryStatus::Retry)
    }

    /// The snake_case name used in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryStatus::Applied => "applied",
            EntryStatus::Replayed => "replayed",
            EntryStatus::Rejected => "rejected",
            EntryStatus::Conflict => "conflict",
            EntryStatus::Retry => "retry",
        }
    }
}

/// The server's answer about one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryReply {
    /// The entry's id.
    pub entry_id: String,
    /// What became of it.
    pub status: EntryStatus,
    /// The dose it registered or changed, when there is one.
    pub dose_id: Option<DoseId>,
    /// Whether the dose is matched to an uploaded resident (registrations).
    pub matched: Option<bool>,
    /// The dose's open findings on the server (with the server's data: residents, history).
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// For `rejected`, `conflict` and `retry`: why, in plain words.
    pub message: Option<String>,
    /// For `rejected`: the finding kind that refused it (e.g. `future_date`), when one did.
    pub rejected_as: Option<FindingKind>,
}

impl EntryReply {
    fn new(entry_id: &str, status: EntryStatus) -> Self {
        Self { entry_id: entry_id.to_owned(), status, dose_id: None, matched: None, findings: Vec::new(), message: None, rejected_as: None }
    }
}

/// The server's reply to a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReply {
    /// Always [`REPLY_FORMAT`].
    pub format: String,
    /// [`SYNC_VERSION`].
    pub version: u32,
    /// The batch answered.
    pub batch_id: String,
    /// The account that sent it.
    pub account: AccountId,
    /// When the server applied it.
    pub applied_at: DateTime<Utc>,
    /// One reply per entry of the batch, in the batch's order.
    pub entries: Vec<EntryReply>,
}

impl SyncReply {
    /// Reads a reply, refusing another format or an unknown version ([`Error::Invalid`]).
    pub fn from_json(text: &str) -> Result<Self> {
        let reply: SyncReply = serde_json::from_str(text).map_err(|e| invalid("sync_reply", e.to_string()))?;
        check_format("sync_reply", &reply.format, REPLY_FORMAT, reply.version)?;
        Ok(reply)
    }

    /// The reply as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// How many entries have `status`.
    pub fn count(&self, status: EntryStatus) -> usize {
        self.entries.iter().filter(|e| e.status == status).count()
    }
}

fn rejection(entry_id: &str, status: EntryStatus, error: &Error) -> EntryReply {
    let mut reply = EntryReply::new(entry_id, status);
    reply.message = Some(error.to_string());
    if let Error::DoseRejected { kind, .. } = error {
        reply.rejected_as = Some(*kind);
    }
    reply
}

fn describe_change(change: &SyncChange) -> String {
    match change {
        SyncChange::Correct { correction: c, reason, .. } => {
            let mut parts = Vec::new();
            if let Some(n) = c.dose_number {
                parts.push(format!("dose number {n}"));
            }
            if let Some(d) = c.date_given {
                parts.push(format!("date given {d}"));
            }
            if let Some(p) = &c.product {
                parts.push(format!("product {p}"));
            }
            if let Some(l) = &c.lot {
                parts.push(format!("lot {l}"));
            }
            if let Some(e) = c.lot_expiry {
                parts.push(format!("lot expiry {e}"));
            }
            if let Some(d) = &c.doctor {
                parts.push(format!("doctor {d}"));
            }
            if let Some(s) = &c.site_name {
                parts.push(format!("site name {s}"));
            }
            format!("correct {} (reason: {reason})", parts.join(", "))
        }
        SyncChange::Void { reason, .. } => format!("void (reason: {reason})"),
        SyncChange::Register { .. } => "register".to_owned(),
    }
}

impl Registry {
    /// Applies a tablet's sync batch (see the [module documentation](self)) as `actor`, which
    /// must be the batch's own tablet account. Returns one reply per entry; fails as a whole
    /// only when the batch is malformed, the account may not register (unknown, revoked), or
    /// the store fails — then the tablet sends it again, and what was already applied replays.
    pub async fn apply_sync_batch(&self, actor: &Actor, batch: &SyncBatch) -> Result<SyncReply> {
        check_format("sync_batch", &batch.format, BATCH_FORMAT, batch.version)?;
        match actor {
            Actor::Site { account } if *account == batch.account => {}
            other => {
                return Err(Error::PermissionDenied {
                    actor: other.to_string(),
                    operation: Operation::RegisterDose,
                    reason: format!("a sync batch is applied as the tablet account that made it ({})", batch.account),
                });
            }
        }
        let account = self.store().account(&batch.account).await?.ok_or_else(|| Error::PermissionDenied {
            actor: actor.to_string(),
            operation: Operation::RegisterDose,
            reason: "no such tablet account".into(),
        })?;
        let who = Principal::Site(account).describe();

        let mut replies: Vec<Option<EntryReply>> = vec![None; batch.entries.len()];
        // Registrations, in one commit; a key repeated within the batch is one registration.
        let mut regs: Vec<DoseRegistration> = Vec::new();
        let mut reg_of_entry: Vec<(usize, usize)> = Vec::new();
        let mut by_key: HashMap<&IdempotencyKey, usize> = HashMap::new();
        for (at, entry) in batch.entries.iter().enumerate() {
            if let SyncChange::Register { registration } = &entry.change {
                let index = *by_key.entry(&registration.idempotency_key).or_insert_with(|| {
                    regs.push(registration.clone());
                    regs.len() - 1
                });
                reg_of_entry.push((at, index));
            }
        }
        if !regs.is_empty() {
            // In chunks: each is one durable commit, and the batch's in-memory overlay of
            // what it registered stays small. A crash between chunks is harmless: the
            // tablet sends the batch again and what was committed replays.
            let mut results = Vec::with_capacity(regs.len());
            for chunk in regs.chunks(REGISTRATION_CHUNK) {
                results.extend(self.register_batch(actor, chunk).await?);
            }
            for (at, index) in reg_of_entry {
                let entry_id = &batch.entries[at].entry_id;
                replies[at] = Some(match results.get(index) {
                    Some(Ok(outcome)) => EntryReply {
                        dose_id: Some(outcome.dose.id),
                        matched: Some(outcome.matched),
                        findings: outcome.findings.clone(),
                        ..EntryReply::new(entry_id, if outcome.replayed { EntryStatus::Replayed } else { EntryStatus::Applied })
                    },
                    Some(Err(e @ Error::Conflict { .. })) => rejection(entry_id, EntryStatus::Conflict, e),
                    Some(Err(
                        e @ (Error::DoseRejected { .. } | Error::Invalid { .. } | Error::Unreadable(_) | Error::PermissionDenied { .. }),
                    )) => rejection(entry_id, EntryStatus::Rejected, e),
                    Some(Err(e)) => rejection(entry_id, EntryStatus::Retry, e),
                    None => EntryReply { message: Some("not registered".into()), ..EntryReply::new(entry_id, EntryStatus::Retry) },
                });
            }
        }

        // Changes, oldest version first for each dose.
        let mut changes: Vec<usize> = (0..batch.entries.len()).filter(|&i| replies[i].is_none()).collect();
        changes.sort_by_key(|&i| {
            let e = &batch.entries[i];
            let version = match &e.change {
                SyncChange::Correct { version, .. } | SyncChange::Void { version, .. } => *version,
                SyncChange::Register { .. } => 1,
            };
            (e.dose_key().clone(), version, i)
        });
        for at in changes {
            let entry = &batch.entries[at];
            let reply = self.apply_change(actor, &who, batch, entry, &replies).await?;
            replies[at] = Some(reply);
        }

        Ok(SyncReply {
            format: REPLY_FORMAT.to_owned(),
            version: SYNC_VERSION,
            batch_id: batch.batch_id.clone(),
            account: batch.account.clone(),
            applied_at: self.now(),
            entries: replies
                .into_iter()
                .zip(&batch.entries)
                .map(|(r, e)| r.unwrap_or_else(|| EntryReply::new(&e.entry_id, EntryStatus::Retry)))
                .collect(),
        })
    }

    async fn apply_change(
        &self,
        actor: &Actor,
        who: &str,
        batch: &SyncBatch,
        entry: &SyncEntry,
        replies: &[Option<EntryReply>],
    ) -> Result<EntryReply> {
        let (dose_key, version, reason, voiding) = match &entry.change {
            SyncChange::Correct { dose_key, version, reason, .. } => (dose_key, *version, reason, false),
            SyncChange::Void { dose_key, version, reason, .. } => (dose_key, *version, reason, true),
            SyncChange::Register { .. } => return Ok(EntryReply::new(&entry.entry_id, EntryStatus::Retry)),
        };
        let id = DoseId::for_key(dose_key);
        let reply = |status| EntryReply { dose_id: Some(id), ..EntryReply::new(&entry.entry_id, status) };
        if version < 2 {
            return Ok(EntryReply {
                message: Some(format!("version {version}: a change creates version 2 or later")),
                ..reply(EntryStatus::Rejected)
            });
        }
        let Some(dose) = self.store().dose(id).await? else {
            // Its registration was refused in this batch: so is the change. Else it has not arrived.
            let refused = batch.entries.iter().zip(replies).find_map(|(e, r)| match (&e.change, r) {
                (SyncChange::Register { registration }, Some(r)) if registration.idempotency_key == *dose_key && r.status.is_final() => {
                    Some(r.clone())
                }
                _ => None,
            });
            return Ok(match refused {
                Some(r) => EntryReply {
                    message: Some(format!("the dose it changes was not registered: {}", r.message.unwrap_or_default())),
                    ..EntryReply::new(&entry.entry_id, EntryStatus::Rejected)
                },
                None => EntryReply {
                    message: Some("the dose it changes is not registered yet: send its registration first".into()),
                    ..EntryReply::new(&entry.entry_id, EntryStatus::Retry)
                },
            });
        };
        let have = dose.versions.len() as u32;
        let open_findings = |found: Vec<Finding>| found.into_iter().filter(|f| f.open).collect::<Vec<_>>();
        if version <= have {
            let existing = &dose.versions[(version - 1) as usize];
            if existing.recorded_by == who && existing.reason.as_deref() == Some(reason.trim()) && existing.voided == voiding {
                let findings = open_findings(self.store().findings_for_dose(id).await?);
                return Ok(EntryReply { findings, ..reply(EntryStatus::Replayed) });
            }
            let why = format!("version {version} was already written by {} at {}", existing.recorded_by, existing.recorded_at.to_rfc3339());
            return self.queue_conflict(who, &dose, entry, &why).await;
        }
        if version > have + 1 {
            return Ok(EntryReply {
                message: Some(format!("the dose has version {have}: version {} has not arrived yet", have + 1)),
                ..reply(EntryStatus::Retry)
            });
        }
        let applied = match &entry.change {
            SyncChange::Correct { correction, .. } => self.correct(actor, id, correction, reason).await,
            _ => self.void(actor, id, reason).await,
        };
        match applied {
            Ok(outcome) => Ok(EntryReply { findings: outcome.findings, ..reply(EntryStatus::Applied) }),
            Err(e @ (Error::Storage { .. } | Error::Conflict { .. })) => {
                if let Error::Storage { .. } = e {
                    return Err(e);
                }
                Ok(EntryReply { message: Some(e.to_string()), ..reply(EntryStatus::Retry) })
            }
            Err(e) => self.queue_conflict(who, &dose, entry, &e.to_string()).await,
        }
    }

    /// Puts a change that could not be applied as made into the owner's review queue.
    async fn queue_conflict(&self, who: &str, dose: &crate::dose::DoseRecord, entry: &SyncEntry, why: &str) -> Result<EntryReply> {
        let now = self.now();
        let detail = format!(
            "tablet change {} recorded at {} by {who} was not applied ({why}); it wanted: {}",
            entry.entry_id,
            entry.recorded_at.to_rfc3339(),
            describe_change(&entry.change)
        );
        // A dose has one finding per kind: a further conflicting change is added to its
        // detail, a line each, so that no change drops out of the review queue (a closed
        // finding, after a void, is reopened with its lines kept). A change listed already,
        // whatever the reason it conflicted then, is not written again: a batch sent again
        // writes nothing.
        let line = |text: String| text.replace(['\n', '\r'], " ");
        let head =
            line(format!("tablet change {} recorded at {} by {who} was not applied (", entry.entry_id, entry.recorded_at.to_rfc3339()));
        let tail = line(format!("); it wanted: {}", describe_change(&entry.change)));
        let existing = self.store().findings_for_dose(dose.id).await?;
        let queued = existing.iter().find(|f| f.kind == FindingKind::SyncConflict);
        let already = queued.is_some_and(|f| f.detail.lines().any(|l| l.starts_with(&head) && l.ends_with(&tail)));
        if !already {
            let finding = Finding {
                dose: dose.id,
                municipality: dose.owner(),
                kind: FindingKind::SyncConflict,
                severity: FindingKind::SyncConflict.severity(),
                detail: match queued {
                    Some(f) => format!("{}\n{}", f.detail, line(detail.clone())),
                    None => line(detail.clone()),
                },
                related: None,
                open: true,
                raised_at: queued.filter(|f| f.open).map_or(now, |f| f.raised_at),
                closed_at: None,
            };
            let audit = AuditEvent {
                at: now,
                municipality: dose.owner(),
                actor: who.to_owned(),
                action: "sync_conflict".into(),
                dose: Some(dose.id),
                detail: format!("tablet change {} queued for review", entry.entry_id),
            };
            self.store().apply(vec![ChangeSet { findings: vec![finding], audit: vec![audit], ..ChangeSet::default() }]).await?;
        }
        Ok(EntryReply { dose_id: Some(dose.id), message: Some(detail), ..EntryReply::new(&entry.entry_id, EntryStatus::Conflict) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn reg(key: &str) -> DoseRegistration {
        DoseRegistration {
            ocr_line: "111310160000012345".into(),
            dose_number: None,
            date_given: NaiveDate::from_ymd_opt(2021, 7, 1).unwrap(),
            product: "pfizer".into(),
            lot: "FA5765".into(),
            doctor: "佐藤一郎".into(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            lot_expiry: NaiveDate::from_ymd_opt(2021, 8, 31),
        }
    }

    #[test]
    fn batch_json_round_trips_and_checks_its_format() {
        let at = DateTime::parse_from_rfc3339("2021-07-01T01:00:00Z").unwrap().with_timezone(&Utc);
        let key = IdempotencyKey::parse("tab-1.1").unwrap();
        let batch = SyncBatch::new(
            "tab-1.b1",
            AccountId::parse("tab-1").unwrap(),
            at,
            vec![
                SyncEntry::register(reg("tab-1.1"), at),
                SyncEntry::correct(key.clone(), 2, DoseCorrection { lot: Some("FA5766".into()), ..Default::default() }, " misread ", at),
                SyncEntry::void(key, 3, "wrong person", at),
            ],
        );
        let json = batch.to_json();
        assert!(json.contains(r#""kind":"correct""#) && json.contains(r#""entry_id":"tab-1.1@v2""#), "{json}");
        assert_eq!(SyncBatch::from_json(&json).unwrap(), batch);
        // Unknown fields are ignored; other formats and versions are refused.
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["from_the_future"] = serde_json::json!(true);
        assert!(SyncBatch::from_json(&value.to_string()).is_ok());
        value["version"] = serde_json::json!(2);
        assert!(matches!(SyncBatch::from_json(&value.to_string()), Err(Error::Invalid { field: "sync_batch", .. })));
        value["version"] = serde_json::json!(1);
        value["format"] = serde_json::json!("vrs.sync.reply");
        assert!(SyncBatch::from_json(&value.to_string()).is_err());
        assert!(SyncBatch::from_json("{").is_err());
    }

    #[test]
    fn only_retry_is_not_final() {
        for s in [EntryStatus::Applied, EntryStatus::Replayed, EntryStatus::Rejected, EntryStatus::Conflict] {
            assert!(s.is_final(), "{}", s.as_str());
        }
        assert!(!EntryStatus::Retry.is_final());
    }
}
