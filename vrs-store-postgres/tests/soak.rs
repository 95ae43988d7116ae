//! Soak: mixed traffic for a bounded time on each store — residents uploads from two
//! municipalities, registrations (single and in bursts) from eight sites at once with
//! retries, corrections and voids by each municipality's staff, ledger exports (full and
//! since a cursor), unmatched lists, statistics and resident lookups — then the end
//! check: every acknowledged registration stored once and nothing else, every dose
//! carrying exactly the acknowledged corrections, the statistics counters equal to a
//! recount of the doses, and the ledger export equal to the ledger the doses make.
//!
//! `VRS_SOAK_SECS` sets the traffic's duration per store (default 15 s). PostgreSQL
//! needs `DATABASE_URL`; without it the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod traffic;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{database_url, options, schema_name};
use vrs_core::access::{Actor, StatsScope};
use vrs_core::dose::{DoseRecord, DoseRegistration};
use vrs_core::generate::SplitMix64;
use vrs_core::ids::{AccountId, DoseId, MunicipalityCode, PersonRef};
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::service::{FixedClock, Registry};
use vrs_core::stats::StatsQuery;
use vrs_core::store::DynStore;
use vrs_core::testing::{TestSource, code};
use vrs_core::testing_service::morning;
use vrs_store_postgres::{Layout, PostgresStore};
use vrs_store_redb::RedbStore;

use traffic::{MUNICIPALITIES, issue_sites, random_correction, random_registration, site_account, staff, upload};

/// People in an upload's block.
const PEOPLE: u64 = 300;
/// Tablet accounts (one registering task each) per municipality.
const SITES: usize = 4;

fn duration() -> Duration {
    let secs = std::env::var("VRS_SOAK_SECS").ok().and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(15.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    let seed = std::env::var("VRS_SOAK_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    eprintln!("soak seed {seed} (VRS_SOAK_SEED={seed} replays the same choices)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_on_redb() {
    let tmp = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(RedbStore::open(tmp.path().join("soak.redb")).unwrap());
    soak("redb", store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_on_postgres() {
    let schema = schema_name("vt_soak", "mixed");
    let store = PostgresStore::connect_fresh(&database_url(), options(&schema, Layout::Plain, 16)).await.unwrap();
    soak("postgres", Arc::new(store.clone())).await;
    store.close().await;
    PostgresStore::drop_schema(&database_url(), &schema).await.unwrap();
}

/// Operation counts.
#[derive(Default)]
struct Counts {
    registrations: AtomicU64,
    bursts: AtomicU64,
    retries: AtomicU64,
    corrections: AtomicU64,
    voids: AtomicU64,
    uploads: AtomicU64,
    upload_ms: AtomicU64,
    upload_matched: AtomicU64,
    exports: AtomicU64,
    reads: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What a staff task acknowledged for one dose: its changes in order (version numbers).
type Changes = HashMap<DoseId, Vec<DoseRecord>>;

async fn soak(name: &str, store: DynStore) {
    let registry = Registry::new(store, Arc::new(FixedClock::new(morning("2021-07-01"))));
    issue_sites(&registry, SITES).await;
    for m in MUNICIPALITIES.map(code) {
        registry.import_residents(&staff(m), m, TestSource::new(upload(m.as_str(), 0, PEOPLE), 256, true)).await.unwrap();
    }
    let seed = seed();
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + duration();
    // The uploads done so far per municipality; registrations read vouchers of a few
    // blocks beyond (unmatched until their upload comes).
    let uploaded = Arc::new(AtomicU64::new(0));
    // Doses registered, per owning municipality, for its staff to correct.
    let registered: Arc<std::sync::Mutex<HashMap<MunicipalityCode, Vec<DoseId>>>> = Arc::default();

    let mut sites = Vec::new();
    for (t, account) in MUNICIPALITIES.iter().flat_map(|m| (0..SITES).map(move |k| site_account(m, k))).enumerate() {
        let (registry, counts, uploaded, registered) = (registry.clone(), counts.clone(), uploaded.clone(), registered.clone());
        let mut rng = SplitMix64::new(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        sites.push(tokio::spawn(async move {
            let tablet = Actor::Site { account: AccountId::parse(&account).unwrap() };
            let mut acked: Vec<(DoseRegistration, DoseId)> = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let blocks = uploaded.load(Ordering::Relaxed) + 3;
                // Now and then a lost response: the tablet sends an earlier one again.
                if i.is_multiple_of(13) && !acked.is_empty() {
                    let (again, id) = &acked[rng.below(acked.len() as u64) as usize];
                    let out = registry.register(&tablet, again).await.unwrap();
                    assert!(out.replayed && out.dose.id == *id, "a retry of {} replays its first result", again.idempotency_key.as_str());
                    add(&counts.retries, 1);
                    continue;
                }
                let burst = if i.is_multiple_of(5) { 10 } else { 1 };
                let regs: Vec<_> = (0..burst).map(|k| random_registration(&mut rng, &format!("s{t}-{i}-{k}"), blocks, PEOPLE)).collect();
                let results = if burst == 1 {
                    vec![registry.register(&tablet, &regs[0]).await]
                } else {
                    add(&counts.bursts, 1);
                    registry.register_batch(&tablet, &regs).await.unwrap()
                };
                for (reg, result) in regs.iter().zip(results) {
                    let out = result.unwrap_or_else(|e| panic!("registration {}: {e}", reg.idempotency_key.as_str()));
                    assert!(!out.replayed);
                    acked.push((reg.clone(), out.dose.id));
                    registered.lock().unwrap().entry(out.dose.owner()).or_default().push(out.dose.id);
                    add(&counts.registrations, 1);
                }
            }
            acked.into_iter().map(|(reg, id)| (reg.idempotency_key.as_str().to_owned(), id)).collect::<Vec<_>>()
        }));
    }

    // Each municipality's staff corrects and voids its own doses (one task each, so the
    // acknowledged changes of a dose are in order).
    let mut staffs = Vec::new();
    for (s, m) in MUNICIPALITIES.map(code).into_iter().enumerate() {
        let (registry, counts, registered) = (registry.clone(), counts.clone(), registered.clone());
        let mut rng = SplitMix64::new(seed ^ (0xABCD + s as u64));
        staffs.push(tokio::spawn(async move {
            let mut changes: Changes = HashMap::new();
            while Instant::now() < deadline {
                let id = {
                    let registered = registered.lock().unwrap();
                    registered.get(&m).filter(|ids| !ids.is_empty()).map(|ids| ids[rng.below(ids.len() as u64) as usize])
                };
                let Some(id) = id else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                let dose = registry.dose(&staff(m), id).await.unwrap();
                let result = if rng.below(8) == 0 {
                    registry.void(&staff(m), id, "soak: void").await
                } else {
                    registry.correct(&staff(m), id, &random_correction(&mut rng, &dose), "soak: correction").await
                };
                match result {
                    Ok(out) => {
                        add(if out.dose.is_voided() { &counts.voids } else { &counts.corrections }, 1);
                        changes.entry(id).or_default().push(out.dose);
                    }
                    Err(vrs_core::Error::Invalid { .. }) => {}
                    Err(e) => panic!("correcting {id}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            changes
        }));
    }

    // Uploads: each municipality in turn adds a block and replaces the one before.
    let uploader = {
        let (registry, counts, uploaded) = (registry.clone(), counts.clone(), uploaded.clone());
        tokio::spawn(async move {
            let mut g = 0;
            while Instant::now() < deadline {
                g += 1;
                for m in MUNICIPALITIES.map(code) {
                    let out =
                        registry.import_residents(&staff(m), m, TestSource::new(upload(m.as_str(), g, PEOPLE), 256, true)).await.unwrap();
                    assert_eq!((out.report.inserted, out.report.replaced), (PEOPLE, PEOPLE));
                    add(&counts.uploads, 1);
                    add(&counts.upload_ms, started.elapsed().as_millis() as u64);
                    add(&counts.upload_matched, out.reconciled.matched);
                }
                uploaded.store(g, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Readers: ledger exports (full and since the last cursor), unmatched lists,
    // statistics, residents' doses.
    let reader = {
        let (registry, counts) = (registry.clone(), counts.clone());
        let mut rng = SplitMix64::new(seed ^ 0x5EED);
        tokio::spawn(async move {
            let national = Actor::StatisticsReader { scope: StatsScope::National };
            let mut cursors: HashMap<MunicipalityCode, u64> = HashMap::new();
            while Instant::now() < deadline {
                for m in MUNICIPALITIES.map(code) {
                    let since = cursors.get(&m).copied();
                    for since in [None, since] {
                        let options = LedgerOptions { encoding: OutputEncoding::ShiftJis, since, no_header: false };
                        let export = registry.export_ledger(&staff(m), m, &options, &mut std::io::sink()).await.unwrap();
                        cursors.insert(m, export.cursor);
                        add(&counts.exports, 1);
                    }
                    registry.export_unmatched(&staff(m), m, &LedgerOptions::default(), &mut std::io::sink()).await.unwrap();
                    registry.statistics(&national, StatsQuery::National).await.unwrap();
                    registry.statistics(&staff(m), StatsQuery::Municipality(m)).await.unwrap();
                    let person = PersonRef {
                        municipality: m,
                        addressee: vrs_core::ids::AddresseeNumber::parse(&(1 + rng.below(PEOPLE)).to_string()).unwrap(),
                    };
                    registry.doses_of_resident(&staff(m), &person).await.unwrap();
                    add(&counts.reads, 4);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let mut acked = Vec::new();
    for task in sites {
        acked.extend(task.await.unwrap());
    }
    let mut changes = Changes::new();
    for task in staffs {
        changes.extend(task.await.unwrap());
    }
    uploader.await.unwrap();
    reader.await.unwrap();
    let traffic_secs = started.elapsed().as_secs_f64();

    // Every dose whose voucher was uploaded is matched: with no crash, none waits for a
    // reconciliation, even one registered while its upload was committing.
    let checking = Instant::now();
    let (doses, agreement) = traffic::check(&registry).await;
    assert_eq!(agreement.stranded, 0, "doses left unmatched although their voucher was uploaded");

    // Every acknowledged registration is stored once, and nothing else is.
    let mut keys: HashMap<DoseId, &str> = HashMap::new();
    for (key, id) in &acked {
        assert!(keys.insert(*id, key).is_none(), "{key}: acknowledged twice");
        let d = doses.get(id).unwrap_or_else(|| panic!("acknowledged registration {key} lost"));
        assert_eq!(d.idempotency_key.as_str(), *key);
    }
    assert_eq!(doses.len(), acked.len(), "doses stored that no registration acknowledged");
    // Every dose carries exactly its acknowledged corrections and voids, in order.
    for (id, d) in &doses {
        let acknowledged = changes.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(d.versions.len(), 1 + acknowledged.len(), "dose {id}: versions");
        for (v, out) in d.versions.iter().skip(1).zip(acknowledged) {
            assert_eq!(v, out.current(), "dose {id}: a version differs from the one acknowledged");
        }
    }
    let c = &counts;
    let n = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let writes = n(&c.registrations) + n(&c.corrections) + n(&c.voids) + n(&c.uploads);
    eprintln!(
        "soak on {name}: {traffic_secs:.1} s of traffic: {} registrations ({} in {} bursts of 10), {} retries replayed, \
         {} corrections, {} voids, {} uploads of {} rows ({} ms each on average, matching pass included; {} waiting doses matched by them), {} ledger exports, {} other reads; {:.0} writes/s. \
         Agreement ({:.1} s to check): {} doses ({} active, {} changed), counters = recount, ledger = doses \
         ({} rows, {} dose blocks), none left unmatched",
        n(&c.registrations),
        n(&c.bursts) * 10,
        n(&c.bursts),
        n(&c.retries),
        n(&c.corrections),
        n(&c.voids),
        n(&c.uploads),
        2 * PEOPLE,
        n(&c.upload_ms) / n(&c.uploads).max(1),
        n(&c.upload_matched),
        n(&c.exports),
        n(&c.reads),
        writes as f64 / traffic_secs,
        checking.elapsed().as_secs_f64(),
        agreement.doses,
        agreement.active,
        agreement.changed,
        agreement.ledger_rows,
        agreement.ledger_doses,
    );
}
