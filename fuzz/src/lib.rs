//! Helpers shared by the fuzz targets: a fresh registry on an in-memory redb store (the
//! conformance suite's setup: two sites, three residents of 千代田区) and a snapshot of
//! everything a store holds for a set of municipalities, to compare before and after.
//!
//! A fuzz target reports a broken property by panicking, so unwrap and expect are the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use vrs_core::dose::DoseRecord;
use vrs_core::finding::Finding;
use vrs_core::ids::MunicipalityCode;
use vrs_core::service::Registry;
use vrs_core::stats::{StatsQuery, StatsRow};
use vrs_core::store::{AuditEvent, DoseScan, DynStore};
use vrs_core::testing_service::{CHIYODA, SHINJUKU, code, setup, staff};
use vrs_store_redb::RedbStore;

pub use futures_executor::block_on;

/// A registry on a fresh in-memory redb store, set up as the conformance suite does.
pub fn fresh_registry() -> Registry {
    let store: DynStore = Arc::new(RedbStore::in_memory().expect("in-memory store"));
    block_on(setup(store)).0
}

/// Everything the store holds for some municipalities: doses with every version, findings,
/// counters and the audit trail.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// Per municipality, in order.
    pub per_municipality: Vec<(MunicipalityCode, MunicipalityState)>,
}

/// What one municipality's area holds.
#[derive(Debug, PartialEq)]
pub struct MunicipalityState {
    /// Doses owned by it, by voucher.
    pub doses: Vec<DoseRecord>,
    /// Its findings, open and closed.
    pub findings: Vec<Finding>,
    /// Its statistics counters.
    pub stats: Vec<StatsRow>,
    /// Its audit trail.
    pub audit: Vec<AuditEvent>,
}

/// The municipalities a snapshot covers: the setup's two plus `extra`.
pub fn municipalities(extra: impl IntoIterator<Item = MunicipalityCode>) -> BTreeSet<MunicipalityCode> {
    let mut all: BTreeSet<MunicipalityCode> = extra.into_iter().collect();
    all.insert(code(CHIYODA));
    all.insert(code(SHINJUKU));
    all
}

/// A snapshot of the registry's store for `municipalities`.
pub fn snapshot(registry: &Registry, municipalities: &BTreeSet<MunicipalityCode>) -> Snapshot {
    block_on(async {
        let store = registry.store();
        let mut per_municipality = Vec::new();
        for &m in municipalities {
            let mut doses = Vec::new();
            store
                .scan_doses(m, DoseScan::ByVoucher, &mut |d: DoseRecord| {
                    doses.push(d);
                    Ok(())
                })
                .await
                .unwrap();
            let findings = store.findings(m, false).await.unwrap();
            let stats = registry.statistics(&staff(m.as_str()), StatsQuery::Municipality(m)).await.unwrap();
            let audit = store.audit(m).await.unwrap();
            per_municipality.push((m, MunicipalityState { doses, findings, stats, audit }));
        }
        Snapshot { per_municipality }
    })
}

impl Snapshot {
    /// What differs from `other`, named by municipality and part (for a failure message).
    pub fn differences(&self, other: &Snapshot) -> String {
        let mut out = String::new();
        for ((m, a), (_, b)) in self.per_municipality.iter().zip(&other.per_municipality) {
            let parts = [
                ("doses", a.doses != b.doses, format!("{:#?}\n--- then ---\n{:#?}", a.doses, b.doses)),
                ("findings", a.findings != b.findings, format!("{:#?}\n--- then ---\n{:#?}", a.findings, b.findings)),
                ("stats", a.stats != b.stats, format!("{:?}\n--- then ---\n{:?}", a.stats, b.stats)),
                ("audit", a.audit != b.audit, format!("{:#?}\n--- then ---\n{:#?}", a.audit, b.audit)),
            ];
            for (name, differs, detail) in parts {
                if differs {
                    out.push_str(&format!("{m} {name} differ:\n{detail}\n"));
                }
            }
        }
        out
    }
}

/// Lossy text of fuzz bytes, and whether the bytes were UTF-8 as they were.
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}
