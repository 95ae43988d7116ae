//! Many writers at once: 32 tasks, each with its own connection pool (as 32 processes
//! would), register doses for the same 100 people through the service. No dose is lost,
//! retries store nothing twice, and the duplicates are flagged exactly as on redb.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use common::{database_url, fresh_store, options, schema_name};
use vrs_core::access::{Actor, Site, StatsScope};
use vrs_core::finding::FindingKind;
use vrs_core::ids::{AccountId, DoseId, SiteId};
use vrs_core::resident::Resident;
use vrs_core::service::{FixedClock, Registry};
use vrs_core::stats::{StatsKey, StatsQuery};
use vrs_core::store::DynStore;
use vrs_core::testing::{CHIYODA, TestSource, code, voucher};
use vrs_core::testing_service::{morning, registration, resident, site_actor, staff};
use vrs_store_postgres::{Layout, PostgresStore};
use vrs_store_redb::RedbStore;

const TASKS: usize = 32;
const PEOPLE: usize = 100;
/// One task in this many registers a dose of its own for a given person.
const OWN_EVERY: usize = 4;
/// Doses registered for each person under keys of their own.
const OWN: usize = TASKS / OWN_EVERY;

fn voucher_number(p: usize) -> String {
    format!("{:010}", 1000 + p)
}

fn people() -> Vec<Resident> {
    (0..PEOPLE).map(|p| resident(CHIYODA, &(p + 1).to_string(), &voucher_number(p), "1960-01-01")).collect()
}

/// What the workload saw and stored.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Per person: (doses stored, doses with an open duplicate finding).
    per_person: Vec<(usize, usize)>,
    /// The statistics counters.
    stats: BTreeMap<StatsKey, u64>,
}

/// Runs the workload on `registries` (one per task; they may share a store) and checks
/// what must hold on any store; returns what to compare between stores.
async fn workload(registries: Vec<Registry>, check: &Registry) -> Outcome {
    let mut tasks = Vec::new();
    for (t, registry) in registries.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let tablet = site_actor("venue");
            let mut mine: Vec<(usize, DoseId)> = Vec::new();
            let mut shared: Vec<(usize, DoseId)> = Vec::new();
            for p in 0..PEOPLE {
                // A quarter of the tasks register dose 1 for each person with keys of their
                // own (8 racing registrations of the same dose per person; every task takes
                // part for 25 people)...
                if (t + p) % OWN_EVERY != 0 {
                    let same = registration(&format!("shared-p{p}"), 1, CHIYODA, &voucher_number(p), "2021-06-30", "pfizer", "FA5765");
                    shared.push((p, registry.register(&tablet, &same).await.unwrap().dose.id));
                    continue;
                }
                let reg = registration(&format!("t{t}-p{p}"), 1, CHIYODA, &voucher_number(p), "2021-06-30", "pfizer", "FA5765");
                let first = registry.register(&tablet, &reg).await.unwrap();
                assert!(!first.replayed, "task {t} person {p}: a fresh key");
                // ...retries it (a lost response): the first result, nothing new...
                let again = registry.register(&tablet, &reg).await.unwrap();
                assert!(again.replayed && again.dose.id == first.dose.id, "task {t} person {p}: the retry replays");
                mine.push((p, first.dose.id));
                // ...and every task sends the same registration under one key: exactly one
                // of the 32 is stored.
                let same = registration(&format!("shared-p{p}"), 1, CHIYODA, &voucher_number(p), "2021-06-30", "pfizer", "FA5765");
                shared.push((p, registry.register(&tablet, &same).await.unwrap().dose.id));
            }
            (mine, shared)
        }));
    }
    let mut mine = Vec::new();
    let mut shared: HashMap<usize, HashSet<DoseId>> = HashMap::new();
    for task in tasks {
        let (m, s) = task.await.unwrap();
        mine.extend(m);
        for (p, id) in s {
            shared.entry(p).or_default().insert(id);
        }
    }
    assert_eq!(mine.len(), OWN * PEOPLE);
    assert!(shared.values().all(|ids| ids.len() == 1), "one dose per shared key");

    let store = check.store();
    let mut per_person = Vec::new();
    for p in 0..PEOPLE {
        let doses = store.doses_by_voucher(voucher(CHIYODA, &voucher_number(p))).await.unwrap();
        let stored: HashSet<DoseId> = doses.iter().map(|d| d.id).collect();
        // No dose lost: every registration's dose, and the shared one, are there, once.
        assert_eq!(doses.len(), stored.len());
        for (q, id) in mine.iter().filter(|(q, _)| *q == p) {
            assert!(stored.contains(id), "person {q}: dose {id} lost");
        }
        assert!(stored.is_superset(&shared[&p]));
        let mut flagged = 0;
        for d in &doses {
            let findings = store.findings_for_dose(d.id).await.unwrap();
            if findings.iter().any(|f| f.open && f.kind == FindingKind::Duplicate) {
                flagged += 1;
            }
        }
        per_person.push((doses.len(), flagged));
    }
    let reader = Actor::StatisticsReader { scope: StatsScope::National };
    let stats = check.statistics(&reader, StatsQuery::National).await.unwrap().into_iter().map(|r| (r.key, r.count)).collect();
    Outcome { per_person, stats }
}

async fn set_up(store: DynStore, clock: Arc<FixedClock>) -> Registry {
    let registry = Registry::new(store, clock);
    let venue = Site { id: SiteId::parse("venue-1").unwrap(), name: "千代田区民会館".into(), municipality: code(CHIYODA) };
    registry.issue_account(&staff(CHIYODA), venue, AccountId::parse("venue").unwrap()).await.unwrap();
    let (_, applied) = registry.store().import_residents(TestSource::new(people(), 1000, true)).await.unwrap();
    assert_eq!(applied.inserted, PEOPLE as u64);
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_writers_on_the_same_hundred_people() {
    let clock = Arc::new(FixedClock::new(morning("2021-07-01")));

    // PostgreSQL: 32 pools of 2 connections each on one schema.
    let schema = schema_name("vt_conc", "same_hundred");
    let first: DynStore = Arc::new(fresh_store(&schema, Layout::Plain).await);
    let check = set_up(first, clock.clone()).await;
    let mut registries = Vec::new();
    for _ in 0..TASKS {
        let store = PostgresStore::connect_with(&database_url(), options(&schema, Layout::Plain, 2)).await.unwrap();
        registries.push(Registry::new(Arc::new(store), clock.clone()));
    }
    let started = std::time::Instant::now();
    let on_postgres = workload(registries, &check).await;
    eprintln!("postgres: {:.1} s", started.elapsed().as_secs_f64());

    // redb: the same workload, 32 tasks on one embedded store.
    let redb: DynStore = Arc::new(RedbStore::in_memory().unwrap());
    let check_redb = set_up(redb.clone(), clock.clone()).await;
    let registries = (0..TASKS).map(|_| Registry::new(redb.clone(), clock.clone())).collect();
    let started = std::time::Instant::now();
    let on_redb = workload(registries, &check_redb).await;
    eprintln!("redb: {:.1} s", started.elapsed().as_secs_f64());

    // 8 own keys and one shared key per person: 9 doses each, the first clean and every
    // other one flagged duplicate.
    let expected: Vec<(usize, usize)> = vec![(OWN + 1, OWN); PEOPLE];
    assert_eq!(on_postgres.per_person, expected);
    assert_eq!(on_postgres.stats.values().sum::<u64>(), ((OWN + 1) * PEOPLE) as u64);
    assert_eq!(on_postgres, on_redb);
}
