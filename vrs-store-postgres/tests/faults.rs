//! Fault injection: a child process drives mixed traffic (residents uploads, registration
//! bursts from several sites, corrections, voids, ledger exports and statistics) on a
//! store, printing each write on stdout once the service has acknowledged it; the parent
//! SIGKILLs it at a random moment, reopens the store and checks that
//!
//! - every acknowledged write is there (a registration's dose, a correction's version, a
//!   void, an upload's residents);
//! - nothing is half-applied: each upload is there whole or not at all (every resident it
//!   wrote carries its marker, or none does), each correction is a whole version, and
//!   the statistics counters and the ledger export agree exactly with the stored doses;
//! - the store is intact: redb's integrity check is clean (no repair needed), the
//!   PostgreSQL store's check is clean;
//!
//! then runs the municipalities' reconciliation (an upload killed between its commit and
//! its matching pass leaves doses for it to match) and starts the next child. On redb
//! and on PostgreSQL, a fixed number of kill points each.
//!
//! The child is this test binary itself, started with `VRS_FAULT_CHILD` set (the test has
//! no libtest harness, so `main` decides which part to play).
//!
//! Knobs: `VRS_FAULT_KILLS` (kill points per store, default 8), `VRS_FAULT_SEED` (default:
//! from the clock; printed either way, so a failure can be replayed), `VRS_FAULT_STORES`
//! (`redb,postgres` by default). PostgreSQL needs `DATABASE_URL`; without it the test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{database_url, fresh_store, options, schema_name};
use vrs_core::Error;
use vrs_core::access::{Actor, StatsScope};
use vrs_core::generate::SplitMix64;
use vrs_core::ids::{DoseId, MunicipalityCode};
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::resident::Resident;
use vrs_core::service::{FixedClock, Registry};
use vrs_core::stats::StatsQuery;
use vrs_core::store::{DoseScan, DynStore};
use vrs_core::testing::{TestSource, code};
use vrs_core::testing_service::morning;
use vrs_store_postgres::{Layout, PostgresStore};
use vrs_store_redb::RedbStore;

use traffic::{MUNICIPALITIES, block_of, issue_sites, random_correction, random_registration, site_account, staff, upload, upload_marker};

const CHILD_VAR: &str = "VRS_FAULT_CHILD";
const ROUND_VAR: &str = "VRS_FAULT_ROUND";
const SEED_VAR: &str = "VRS_FAULT_SEED";
const KILLS_VAR: &str = "VRS_FAULT_KILLS";
const STORES_VAR: &str = "VRS_FAULT_STORES";

/// People in a block; an upload writes two blocks (one new, one replaced).
const PEOPLE: u64 = 400;
/// Tablet accounts per municipality (one registering task each).
const SITES: usize = 2;
/// Upload numbers per round: each round's uploads write blocks of their own (block 9999
/// is never uploaded, so at most 499 rounds).
const ROUND_UPLOADS: u64 = 20;
/// Kill points per store by default.
const KILLS: usize = 8;

fn main() -> ExitCode {
    if let Ok(target) = std::env::var(CHILD_VAR) {
        return child::main(&target);
    }
    // Behave as libtest would towards cargo: one test named `faults`, listed on
    // `--list`, left out by a name filter that does not match it and by `--ignored`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("faults: test");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--ignored") || (!filters.is_empty() && !filters.iter().any(|f| "faults".contains(f.as_str()))) {
        println!("test result: ok. 0 passed; 1 filtered out");
        return ExitCode::SUCCESS;
    }
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let kills = std::env::var(KILLS_VAR).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(KILLS);
    assert!(kills < 500, "{KILLS_VAR}: at most 499 kill points per store (each round's uploads have blocks of their own)");
    let stores = std::env::var(STORES_VAR).unwrap_or_else(|_| "redb,postgres".into());
    println!("fault injection: seed {seed} ({SEED_VAR}={seed} replays it), {kills} kill points per store ({KILLS_VAR})");
    let tmp = tempfile::tempdir().unwrap();
    for store in stores.split(',').map(str::trim) {
        let target = match store {
            "redb" => Target::Redb(tmp.path().join("faults.redb")),
            "postgres" => Target::Postgres(schema_name("vt_fault", "kill_points")),
            other => panic!("{STORES_VAR}: unknown store {other:?} (redb, postgres)"),
        };
        let started = Instant::now();
        let figures = run(&target, kills, seed);
        println!("{store}: {figures} in {:.1} s", started.elapsed().as_secs_f64());
    }
    println!("test result: ok");
    ExitCode::SUCCESS
}

/// The store under test, as the child is told it (`redb:PATH` or `postgres:SCHEMA`).
enum Target {
    Redb(std::path::PathBuf),
    Postgres(String),
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Redb(path) => format!("redb:{}", path.display()),
            Target::Postgres(schema) => format!("postgres:{schema}"),
        }
    }

    fn parse(text: &str) -> Target {
        match text.split_once(':') {
            Some(("redb", path)) => Target::Redb(path.into()),
            Some(("postgres", schema)) => Target::Postgres(schema.into()),
            _ => panic!("{CHILD_VAR}={text:?}: expected redb:PATH or postgres:SCHEMA"),
        }
    }

    /// Opens the store: redb after its integrity check (which must find it intact),
    /// PostgreSQL after its schema check (which must be clean).
    async fn open(&self, connections: u32) -> DynStore {
        match self {
            Target::Redb(path) => {
                let mut store = RedbStore::open(path).unwrap();
                assert!(store.check_integrity().unwrap(), "redb's integrity check had to repair {}", path.display());
                Arc::new(store)
            }
            Target::Postgres(schema) => {
                let store = PostgresStore::connect_with(&database_url(), options(schema, Layout::Plain, connections)).await.unwrap();
                let check = store.check().await.unwrap();
                assert!(check.is_clean(), "the PostgreSQL store's check: {check:?}");
                Arc::new(store)
            }
        }
    }
}

fn registry(store: DynStore, round: usize) -> Registry {
    let clock = FixedClock::new(morning("2021-07-01") + chrono::Duration::minutes(round as i64));
    Registry::new(store, Arc::new(clock))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The first upload number of a round.
fn first_upload(round: usize) -> u64 {
    1 + round as u64 * ROUND_UPLOADS
}

// ---- the parent ------------------------------------------------------------------------

/// An acknowledged write, as the child reported it.
#[derive(Debug)]
enum Ack {
    Registered { key: String, id: DoseId },
    Corrected { id: DoseId, version: usize, date: String, dose_number: u8, lot: String },
    Voided { id: DoseId, version: usize },
    Uploaded { m: MunicipalityCode, g: u64 },
}

#[derive(Default)]
struct Figures {
    kills: usize,
    registrations: usize,
    corrections: usize,
    voids: usize,
    uploads: usize,
    exports: usize,
    uploads_in_flight: usize,
    uploads_in_flight_applied: usize,
    stranded_reconciled: u64,
    last_doses: usize,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} kill points survived; acknowledged writes checked: {} registrations, {} corrections, {} voids, {} uploads \
             ({} exports read meanwhile); uploads cut by a kill: {} ({} of them committed whole, the rest absent whole); \
             doses matched by reconciliation after a kill: {}; {} doses stored at the end",
            self.kills,
            self.registrations,
            self.corrections,
            self.voids,
            self.uploads,
            self.exports,
            self.uploads_in_flight,
            self.uploads_in_flight_applied,
            self.stranded_reconciled,
            self.last_doses
        )
    }
}

fn run(target: &Target, kills: usize, seed: u64) -> Figures {
    let rt = runtime();
    rt.block_on(async {
        let store: DynStore = match target {
            Target::Redb(path) => Arc::new(RedbStore::open(path).unwrap()),
            Target::Postgres(schema) => Arc::new(fresh_store(schema, Layout::Plain).await),
        };
        let registry = registry(store, 0);
        issue_sites(&registry, SITES).await;
        for m in MUNICIPALITIES.map(code) {
            registry.import_residents(&staff(m), m, TestSource::new(upload(m.as_str(), 0, PEOPLE), 256, true)).await.unwrap();
        }
    });
    let mut rng = SplitMix64::new(seed);
    let mut acks: Vec<Ack> = Vec::new();
    let mut begun: Vec<(MunicipalityCode, u64)> = Vec::new();
    let mut figures = Figures::default();
    for round in 0..kills {
        let child_seed = rng.next_u64();
        // Every other kill aims at an upload (its transaction is a small part of the
        // traffic's time): a few milliseconds after the child's first upload begins.
        let when = if round % 2 == 1 {
            Kill::IntoUpload { delay: Duration::from_millis(rng.below(40)) }
        } else {
            Kill::After(Duration::from_millis(50 + rng.below(1500)))
        };
        let lines = kill_child(target, round, child_seed, &when);
        let mut acked_uploads = Vec::new();
        let mut begun_now = Vec::new();
        for line in &lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let id = |i: usize| DoseId::parse(words[i]).unwrap();
            match words.as_slice() {
                ["ready"] => {}
                ["ack", "reg", key, _] => acks.push(Ack::Registered { key: (*key).to_owned(), id: id(3) }),
                ["ack", "correct", _, version, date, dose_number, lot] => acks.push(Ack::Corrected {
                    id: id(2),
                    version: version.parse().unwrap(),
                    date: (*date).to_owned(),
                    dose_number: dose_number.parse().unwrap(),
                    lot: (*lot).to_owned(),
                }),
                ["ack", "void", _, version] => acks.push(Ack::Voided { id: id(2), version: version.parse().unwrap() }),
                ["begin", "upload", m, g] => begun_now.push((code(m), g.parse().unwrap())),
                ["ack", "upload", m, g] => acked_uploads.push((code(m), g.parse::<u64>().unwrap())),
                ["ack", "export", ..] => figures.exports += 1,
                _ => panic!("round {round}: the child said {line:?}"),
            }
        }
        let in_flight: Vec<(MunicipalityCode, u64)> = begun_now.iter().filter(|b| !acked_uploads.contains(b)).copied().collect();
        acks.extend(acked_uploads.iter().map(|&(m, g)| Ack::Uploaded { m, g }));
        begun.extend(begun_now);
        let (applied, stranded, doses) = rt.block_on(verify(target, round, &acks, &begun, &in_flight));
        figures.kills += 1;
        figures.uploads_in_flight += in_flight.len();
        figures.uploads_in_flight_applied += applied;
        figures.stranded_reconciled += stranded;
        figures.last_doses = doses;
        eprintln!(
            "round {round}: killed {when:?} with {} lines read; {} uploads cut ({applied} whole); {stranded} doses reconciled",
            lines.len(),
            in_flight.len()
        );
    }
    for ack in &acks {
        match ack {
            Ack::Registered { .. } => figures.registrations += 1,
            Ack::Corrected { .. } => figures.corrections += 1,
            Ack::Voided { .. } => figures.voids += 1,
            Ack::Uploaded { .. } => figures.uploads += 1,
        }
    }
    if let Target::Postgres(schema) = target {
        rt.block_on(PostgresStore::drop_schema(&database_url(), schema)).unwrap();
    }
    figures
}

/// When the parent kills a child, counted from the moment it is ready.
#[derive(Debug)]
enum Kill {
    /// After a delay.
    After(Duration),
    /// A delay after the child begins its first upload.
    IntoUpload { delay: Duration },
}

/// Starts a child for `round`, waits for it to be ready, lets it run until `when`, then
/// SIGKILLs it; returns every line it printed.
fn kill_child(target: &Target, round: usize, seed: u64, when: &Kill) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_VAR, target.describe())
        .env(ROUND_VAR, round.to_string())
        .env(SEED_VAR, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The reader tells the parent when the child is ready and when an upload begins.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line == "ready" || line.starts_with("begin upload") {
                let _ = tx.send(line == "ready");
            }
            lines.push(line);
        }
        lines
    });
    let ready = rx.recv_timeout(Duration::from_secs(60)) == Ok(true);
    if ready {
        match when {
            Kill::After(delay) => std::thread::sleep(*delay),
            Kill::IntoUpload { delay } => {
                if rx.recv_timeout(Duration::from_secs(60)).is_ok() {
                    std::thread::sleep(*delay);
                }
            }
        }
    }
    let exited = child.try_wait().unwrap();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    if !ready || exited.is_some() {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        panic!(
            "round {round}: the child ended before it was killed ({status:?}; ready: {ready})\nstdout:\n{}\nstderr:\n{err}",
            lines.join("\n")
        );
    }
    lines
}

/// Checks the store after a kill (see the module documentation). Returns how many of the
/// uploads cut by the kill were committed whole, how many doses the reconciliation then
/// matched, and the doses stored.
async fn verify(
    target: &Target,
    round: usize,
    acks: &[Ack],
    begun: &[(MunicipalityCode, u64)],
    in_flight: &[(MunicipalityCode, u64)],
) -> (usize, u64, usize) {
    let registry = registry(target.open(4).await, round);
    let (doses, _) = traffic::check(&registry).await;
    for ack in acks {
        match ack {
            Ack::Registered { key, id } => {
                let d = doses.get(id).unwrap_or_else(|| panic!("round {round}: acknowledged registration {key} lost"));
                assert_eq!(d.idempotency_key.as_str(), key);
            }
            Ack::Corrected { id, version, date, dose_number, lot } => {
                let d = &doses[id];
                let v = d.versions.get(version - 1).unwrap_or_else(|| panic!("round {round}: correction {version} of {id} lost"));
                let x = &v.details;
                assert_eq!((x.date_given.to_string(), x.dose_number, &x.lot), (date.clone(), *dose_number, lot), "{id} v{version}");
                assert!(!v.voided && v.reason.is_some());
            }
            Ack::Voided { id, version } => {
                let d = &doses[id];
                assert!(d.versions.get(version - 1).is_some_and(|v| v.voided), "round {round}: void {version} of {id} lost");
            }
            Ack::Uploaded { .. } => {}
        }
    }

    // Uploads: every block they wrote is there whole with one marker, or absent whole.
    let mut blocks: HashMap<(MunicipalityCode, u64), Vec<u64>> = HashMap::new();
    for m in MUNICIPALITIES.map(code) {
        let mut residents: Vec<Resident> = Vec::new();
        registry
            .scan_residents(&staff(m), m, &mut |r| {
                residents.push(r);
                Ok(())
            })
            .await
            .unwrap();
        for r in residents {
            let marker = upload_marker(&r).expect("every resident carries its upload's marker");
            blocks.entry((m, block_of(r.person.addressee.as_str()))).or_default().push(marker);
        }
    }
    let marker = |m: MunicipalityCode, b: u64| -> Option<u64> {
        let markers = blocks.get(&(m, b))?;
        assert_eq!(markers.len() as u64, PEOPLE, "round {round}: block {b} of {m} is partly there");
        assert!(markers.iter().all(|x| *x == markers[0]), "round {round}: block {b} of {m} mixes uploads: {markers:?}");
        Some(markers[0])
    };
    for &(m, g) in begun {
        // Upload g writes block g (new) and block g - 1; only upload g + 1 writes block g again.
        let own = marker(m, g);
        let previous = marker(m, g - 1);
        let applied = previous == Some(g);
        assert!(own.is_none() || own == Some(g) || own == Some(g + 1), "round {round}: block {g} of {m} marked {own:?}");
        if !applied {
            assert_eq!(own, None, "round {round}: upload {g} of {m} wrote its new block but not the replaced one");
        }
    }
    for ack in acks {
        if let Ack::Uploaded { m, g } = ack {
            assert_eq!(marker(*m, g - 1), Some(*g), "round {round}: acknowledged upload {g} of {m} lost");
            assert!(matches!(marker(*m, *g), Some(x) if x == *g || x == g + 1), "round {round}: acknowledged upload {g} of {m} lost");
        }
    }
    let applied = in_flight.iter().filter(|(m, g)| marker(*m, g - 1) == Some(*g)).count();

    // An upload killed after its commit, before its matching pass, leaves doses for the
    // municipality's reconciliation; afterwards none is left and everything still agrees.
    let mut reconciled = 0;
    for m in MUNICIPALITIES.map(code) {
        reconciled += registry.reconcile(&staff(m), m).await.unwrap().matched;
    }
    let (doses, agreement) = traffic::check(&registry).await;
    assert_eq!(agreement.stranded, 0, "round {round}: doses left unmatched after reconciliation");
    // Let go of the store: the next child needs the redb file to itself.
    drop(registry);
    (applied, reconciled, doses.len())
}

// ---- the child -------------------------------------------------------------------------

mod child {
    use super::*;

    fn say(line: String) {
        // stdout is line-buffered: each line reaches the parent as soon as it is printed.
        println!("{line}");
    }

    fn fail(what: &str, e: &Error) -> ! {
        eprintln!("child: {what}: {e:?}");
        std::process::exit(3);
    }

    pub fn main(target: &str) -> ExitCode {
        let target = Target::parse(target);
        let round: usize = std::env::var(ROUND_VAR).unwrap().parse().unwrap();
        let seed: u64 = std::env::var(SEED_VAR).unwrap().parse().unwrap();
        runtime().block_on(async move {
            let store: DynStore = match &target {
                Target::Redb(path) => Arc::new(RedbStore::open(path).unwrap()),
                Target::Postgres(schema) => {
                    Arc::new(PostgresStore::connect_with(&database_url(), options(schema, Layout::Plain, 8)).await.unwrap())
                }
            };
            let registry = registry(store, round);
            // Doses to correct: those stored before, and those this child registers.
            let mut known = Vec::new();
            for m in MUNICIPALITIES.map(code) {
                registry
                    .store()
                    .scan_doses(m, DoseScan::ByVoucher, &mut |d| {
                        known.push(d.id);
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
            let known = Arc::new(Mutex::new(known));
            let first = first_upload(round);
            say("ready".into());
            let mut tasks = Vec::new();
            for (t, m) in MUNICIPALITIES.iter().flat_map(|m| (0..SITES).map(move |k| site_account(m, k))).enumerate() {
                let (registry, known) = (registry.clone(), known.clone());
                let mut rng = SplitMix64::new(seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9));
                tasks.push(tokio::spawn(async move { sites(registry, known, rng_take(&mut rng), m, round, t, first).await }));
            }
            {
                let (registry, known) = (registry.clone(), known.clone());
                let rng = SplitMix64::new(seed ^ 0xC0FFEE);
                tasks.push(tokio::spawn(async move { corrections(registry, known, rng).await }));
            }
            {
                let registry = registry.clone();
                let rng = SplitMix64::new(seed ^ 0xF11E);
                tasks.push(tokio::spawn(async move { uploads(registry, first, rng).await }));
            }
            tasks.push(tokio::spawn(async move { exports(registry).await }));
            for task in tasks {
                task.await.unwrap();
            }
        });
        // The tasks never end; the parent kills the child long before this.
        eprintln!("child: the traffic ended");
        ExitCode::from(3)
    }

    fn rng_take(rng: &mut SplitMix64) -> SplitMix64 {
        SplitMix64::new(rng.next_u64())
    }

    /// A site's tablet: single registrations, and every fourth time a burst of eight in
    /// one batch.
    async fn sites(
        registry: Registry,
        known: Arc<Mutex<Vec<DoseId>>>,
        mut rng: SplitMix64,
        account: String,
        round: usize,
        t: usize,
        first: u64,
    ) {
        let tablet = Actor::Site { account: vrs_core::ids::AccountId::parse(&account).unwrap() };
        // Vouchers of uploads done, under way and still to come (unmatched until then).
        let blocks = first + 4;
        for i in 0.. {
            let burst = if i % 4 == 3 { 8 } else { 1 };
            let regs: Vec<_> =
                (0..burst).map(|k| random_registration(&mut rng, &format!("r{round}-t{t}-{i}-{k}"), blocks, PEOPLE)).collect();
            let results = if burst == 1 {
                vec![registry.register(&tablet, &regs[0]).await]
            } else {
                registry.register_batch(&tablet, &regs).await.unwrap_or_else(|e| fail("a registration burst", &e))
            };
            for (reg, result) in regs.iter().zip(results) {
                let outcome = result.unwrap_or_else(|e| fail("a registration", &e));
                known.lock().unwrap().push(outcome.dose.id);
                say(format!("ack reg {} {}", reg.idempotency_key.as_str(), outcome.dose.id));
            }
        }
    }

    /// Municipal staff correcting and voiding doses (one in six a void).
    async fn corrections(registry: Registry, known: Arc<Mutex<Vec<DoseId>>>, mut rng: SplitMix64) {
        loop {
            let id = {
                let known = known.lock().unwrap();
                if known.is_empty() { None } else { Some(known[rng.below(known.len() as u64) as usize]) }
            };
            let Some(id) = id else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let Some(dose) = registry.store().dose(id).await.unwrap_or_else(|e| fail("reading a dose", &e)) else {
                fail("reading a dose", &Error::NotFound { what: format!("dose {id}") })
            };
            let who = staff(dose.owner());
            let result = if rng.below(6) == 0 {
                registry.void(&who, id, "fault test: void").await
            } else {
                registry.correct(&who, id, &random_correction(&mut rng, &dose), "fault test: correction").await
            };
            match result {
                Ok(out) => {
                    let v = out.dose.current();
                    if v.voided {
                        say(format!("ack void {id} {}", v.version));
                    } else {
                        let x = &v.details;
                        say(format!("ack correct {id} {} {} {} {}", v.version, x.date_given, x.dose_number, x.lot));
                    }
                }
                // Already voided, or the correction changed nothing.
                Err(Error::Invalid { .. }) => {}
                Err(e) => fail("a correction", &e),
            }
        }
    }

    /// Each municipality's uploads in turn: upload g adds block g and replaces block g - 1;
    /// a pause before each, so that other traffic runs before and between them.
    async fn uploads(registry: Registry, first: u64, mut rng: SplitMix64) {
        // The last number is left for the next round's first upload to replace.
        for g in first..first + ROUND_UPLOADS - 1 {
            for m in MUNICIPALITIES.map(code) {
                tokio::time::sleep(Duration::from_millis(100 + rng.below(300))).await;
                say(format!("begin upload {m} {g}"));
                let source = TestSource::new(upload(m.as_str(), g, PEOPLE), 256, true);
                registry.import_residents(&staff(m), m, source).await.unwrap_or_else(|e| fail("an upload", &e));
                say(format!("ack upload {m} {g}"));
            }
        }
        std::future::pending::<()>().await;
    }

    /// Ledger exports and statistics, read while the rest writes.
    async fn exports(registry: Registry) {
        let national = Actor::StatisticsReader { scope: StatsScope::National };
        loop {
            for m in MUNICIPALITIES.map(code) {
                let mut out = Vec::new();
                let options = LedgerOptions { encoding: OutputEncoding::ShiftJis, since: None, no_header: false };
                let export = registry.export_ledger(&staff(m), m, &options, &mut out).await.unwrap_or_else(|e| fail("an export", &e));
                let stats = registry.statistics(&national, StatsQuery::National).await.unwrap_or_else(|e| fail("statistics", &e));
                let counted: BTreeMap<_, _> = stats.into_iter().map(|r| (r.key, r.count)).collect();
                say(format!("ack export {m} {} {}", export.rows, counted.values().sum::<u64>()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
