//! The registry's interchange operations: FHIR R4 and HL7 v2 exports, FHIR import and
//! open data. The formats are in [`crate::fhir`], [`crate::hl7`] and [`crate::opendata`];
//! this module reads what they need, with the same access rules as the ledger.

use std::collections::HashMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::access::{Actor, Operation, Subject};
use crate::dose::DoseRecord;
use crate::ids::{MunicipalityCode, PersonRef, VoucherRef};
use crate::opendata::{OpenDataRow, aggregate};
use crate::reconcile::vouchers_of;
use crate::resident::Resident;
use crate::service::Registry;
use crate::stats::StatsQuery;
use crate::store::DoseScan;
use crate::{Error, Result};

/// A person (or an unmatched voucher, with no resident) and the doses to export.
pub type PersonDoses = (Option<Resident>, Vec<DoseRecord>);

/// What importing a FHIR Bundle did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FhirImportReport {
    /// Immunizations registered as new doses.
    pub registered: u64,
    /// Immunizations already registered (same resource id): nothing new stored.
    pub replayed: u64,
    /// `entered-in-error` Immunizations voided after registration.
    pub voided: u64,
    /// Immunizations refused, with the resource id and the reason.
    pub rejected: Vec<(String, String)>,
}

impl Registry {
    /// The persons of a municipality with their doses (including voided ones and those
    /// under a previous municipality's voucher), and unmatched vouchers with theirs; or
    /// one person when `person` is given.
    pub async fn persons_with_doses(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        person: Option<&PersonRef>,
    ) -> Result<Vec<PersonDoses>> {
        self.check(actor, Operation::ExportLedger, &Subject::Municipality(municipality)).await?;
        let store = self.store();
        if let Some(p) = person {
            if p.municipality != municipality {
                return Err(Error::Invalid { field: "person", value: p.to_string(), reason: format!("not a resident of {municipality}") });
            }
            let r = store.resident(p).await?.ok_or_else(|| Error::NotFound { what: format!("resident {p}") })?;
            let mut doses = Vec::new();
            for v in vouchers_of(&r) {
                doses.extend(store.doses_by_voucher(v).await?);
            }
            return Ok(vec![(Some(r), doses)]);
        }
        let mut by_voucher: Vec<(VoucherRef, Vec<DoseRecord>)> = Vec::new();
        store
            .scan_doses(municipality, DoseScan::ByVoucher, &mut |d: DoseRecord| {
                match by_voucher.last_mut() {
                    Some((v, ds)) if *v == d.voucher => ds.push(d),
                    _ => by_voucher.push((d.voucher, vec![d])),
                }
                Ok(())
            })
            .await?;
        let mut out: Vec<PersonDoses> = Vec::new();
        let mut index: HashMap<PersonRef, usize> = HashMap::new();
        for (_, doses) in by_voucher {
            let matched = doses.iter().find_map(|d| d.matched.clone());
            match matched {
                Some(p) if p.municipality == municipality => {
                    let r = store.resident(&p).await?;
                    index.insert(p, out.len());
                    out.push((r, doses));
                }
                // Matched to a resident elsewhere (moved out): that municipality exports it.
                Some(_) => {}
                None => out.push((None, doses)),
            }
        }
        for r in store.moved_in_residents(municipality).await? {
            let mut extra = Vec::new();
            for v in vouchers_of(&r).into_iter().filter(|v| v.municipality != municipality) {
                extra.extend(store.doses_by_voucher(v).await?);
            }
            if extra.is_empty() {
                continue;
            }
            match index.get(&r.person) {
                Some(i) => out[*i].1.extend(extra),
                None => out.push((Some(r), extra)),
            }
        }
        Ok(out)
    }

    /// A FHIR R4 collection Bundle of a municipality's (or one resident's) Patients and
    /// Immunizations.
    pub async fn export_fhir(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        person: Option<&PersonRef>,
    ) -> Result<serde_json::Value> {
        let persons = self.persons_with_doses(actor, municipality, person).await?;
        let refs: Vec<(Option<&Resident>, Vec<&DoseRecord>)> = persons.iter().map(|(r, ds)| (r.as_ref(), ds.iter().collect())).collect();
        Ok(crate::fhir::bundle(&refs, self.catalogue()))
    }

    /// HL7 v2.5.1 VXU^V04 messages, one per dose, each segment ending in `\r` and each
    /// message followed by a line break. Returns the number of messages.
    pub async fn export_hl7(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        person: Option<&PersonRef>,
        out: &mut (dyn Write + Send),
    ) -> Result<u64> {
        let persons = self.persons_with_doses(actor, municipality, person).await?;
        let now = self.now();
        let mut n = 0;
        for (r, doses) in &persons {
            for d in doses {
                let msg = crate::hl7::vxu(d, r.as_ref(), self.catalogue(), now);
                out.write_all(msg.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| Error::Storage { message: format!("writing HL7: {e}"), source: None })?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The ledger change log since a cursor (see [`crate::changelog`]): corrections and
    /// voids appear as such; chain the returned cursor into the next call.
    pub async fn export_ledger_changes(
        &self,
        actor: &Actor,
        municipality: MunicipalityCode,
        after: u64,
        options: &crate::ledger::LedgerOptions,
        out: &mut (dyn Write + Send),
    ) -> Result<crate::changelog::ChangeLogExport> {
        self.check(actor, Operation::ExportLedger, &Subject::Municipality(municipality)).await?;
        crate::changelog::export(self.store().as_ref(), municipality, after, options, out).await
    }

    /// Open data rows (VRS's public schema) from the statistics counters the actor may read.
    pub async fn export_opendata(&self, actor: &Actor, query: StatsQuery, suppress_below: u64) -> Result<(Vec<OpenDataRow>, u64)> {
        let stats = self.statistics(actor, query).await?;
        Ok(aggregate(&stats, suppress_below))
    }

    /// Registers a FHIR Bundle's Immunizations as doses from the calling site, in one
    /// batch; `entered-in-error` ones are voided after registration. Re-importing the same
    /// Bundle stores nothing new.
    pub async fn import_fhir(&self, actor: &Actor, bundle: &str) -> Result<FhirImportReport> {
        let items = crate::fhir::read_bundle(bundle, self.catalogue())?;
        let regs: Vec<_> = items.iter().map(|i| i.registration.clone()).collect();
        let results = self.register_batch(actor, &regs).await?;
        let mut report = FhirImportReport::default();
        for (item, result) in items.iter().zip(results) {
            match result {
                Ok(outcome) => {
                    if outcome.replayed {
                        report.replayed += 1;
                    } else {
                        report.registered += 1;
                    }
                    if item.voided && !outcome.dose.is_voided() {
                        self.void(actor, outcome.dose.id, "entered-in-error in the imported FHIR Bundle").await?;
                        report.voided += 1;
                    }
                }
                Err(e) => report.rejected.push((item.resource_id.clone(), e.to_string())),
            }
        }
        Ok(report)
    }
}
