//! Imports on PostgreSQL: bad input gives the same report as on redb (and never reaches
//! the server when it could not be stored), text that COPY must escape round-trips, and
//! a connection killed in the middle of an import leaves nothing half-imported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{database_url, fresh_store, schema_name};
use sqlx::Connection;
use vrs_core::Error;
use vrs_core::access::{Actor, Site};
use vrs_core::finding::FindingKind;
use vrs_core::ids::{AccountId, SiteId};
use vrs_core::import::{ImportOptions, ImportReport, ResidentCsvSource};
use vrs_core::resident::{PersonalText, Resident};
use vrs_core::service::{FixedClock, Registry};
use vrs_core::store::{DynStore, ImportApplied, ResidentSource};
use vrs_core::testing::{CHIYODA, TestSource, at, code, person, resident, scanned_residents, voucher};
use vrs_store_postgres::Layout;
use vrs_store_redb::RedbStore;

fn staff() -> Actor {
    Actor::MunicipalStaff { municipality: code(CHIYODA), user: "tester".into() }
}

fn registry(store: DynStore) -> Registry {
    Registry::new(store, Arc::new(FixedClock::new(at("2021-07-01T00:00:00Z"))))
}

async fn pg(test: &str) -> DynStore {
    Arc::new(fresh_store(&schema_name("vt_imp", test), Layout::Plain).await)
}

fn redb() -> DynStore {
    Arc::new(RedbStore::in_memory().unwrap())
}

/// Imports `csv` through the core's parser and the service, as a municipality would.
async fn import_csv(store: &DynStore, csv: &str, skip_invalid: bool) -> Result<ImportReport, Error> {
    let mut options = ImportOptions::new(code(CHIYODA));
    options.skip_invalid = skip_invalid;
    let source = ResidentCsvSource::new(std::io::Cursor::new(csv.as_bytes().to_vec()), options)?;
    registry(store.clone()).import_residents(&staff(), code(CHIYODA), Box::new(source)).await.map(|o| o.report)
}

const HEADER: &str = "addressee_number,voucher_number,name,name_kana,birth_date,sex,address,status\n";

/// An upload with every kind of bad row beside good ones.
fn bad_upload() -> String {
    let long_name = "長".repeat(65);
    let mut csv = HEADER.to_owned();
    csv.push_str("1,0000000001,接種 花子,セッシュ ハナコ,1960-04-01,2,東京都千代田区1-1,\n");
    csv.push_str("2,0000000002,接種 太郎,セッシュ タロウ,1961-05-02,1\n"); // too few columns
    csv.push_str(&format!("3,0000000003,{long_name},セッシュ,1962-06-03,1,,\n")); // name too long
    csv.push_str("4,0000000004,山本\0,ヤマモト,1963-07-04,2,,\n"); // NUL byte
    csv.push_str("5,0000000005,接種 次郎,セッシュ ジロウ,1964-13-01,1,,\n"); // no such date
    csv.push_str("6,000000000X,接種 三郎,セッシュ サブロウ,1965-01-01,1,,\n"); // bad voucher
    csv.push_str("7,0000000007,\"back\\slash \\N \\. and \"\"quotes\"\"\",バックスラッシュ,1966-02-02,9,\"C:\\temp\\new\",\n");
    csv
}

/// The same bad upload gives the same report on both stores: refused whole by default,
/// the good rows applied with the flag; and the same residents end up stored.
#[tokio::test]
async fn bad_input_is_reported_exactly_as_on_redb() {
    let csv = bad_upload();
    let (pg, redb) = (pg("bad_input").await, redb());
    let refused_pg = import_csv(&pg, &csv, false).await;
    let refused_redb = import_csv(&redb, &csv, false).await;
    let (Err(Error::ImportRejected(a)), Err(Error::ImportRejected(b))) = (&refused_pg, &refused_redb) else {
        panic!("expected both refused: {refused_pg:?} / {refused_redb:?}");
    };
    assert_eq!(a, b);
    assert_eq!(a.rows_read, 7);
    assert_eq!(a.rows_invalid, 5, "{:?}", a.errors);
    let lines: Vec<u64> = a.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7], "{:?}", a.errors);
    let nul = a.errors.iter().find(|e| e.line == 5).unwrap();
    assert_eq!(nul.column, "name");
    assert!(nul.reason.contains("NUL"), "{nul:?}");
    let long = a.errors.iter().find(|e| e.line == 4).unwrap();
    assert_eq!(long.column, "name");
    assert!(scanned_residents(&pg, CHIYODA).await.is_empty(), "nothing applied");

    let applied_pg = import_csv(&pg, &csv, true).await.unwrap();
    let applied_redb = import_csv(&redb, &csv, true).await.unwrap();
    assert_eq!(applied_pg, applied_redb);
    assert_eq!((applied_pg.inserted, applied_pg.replaced), (2, 0));
    let (stored_pg, stored_redb) = (scanned_residents(&pg, CHIYODA).await, scanned_residents(&redb, CHIYODA).await);
    assert_eq!(stored_pg, stored_redb);
    let odd = stored_pg.iter().find(|r| r.addressee().as_str() == "7").unwrap();
    assert_eq!(odd.name.as_str(), "back\\slash \\N \\. and \"quotes\"", "COPY escapes survive");
    assert_eq!(odd.address.as_ref().map(PersonalText::as_str), Some("C:\\temp\\new"));
}

/// A NUL byte never reaches the server: the core's parser refuses it in every text column
/// of an upload and in every text field of a registration (so both stores answer alike),
/// and the store refuses one in a value built in code before sending anything.
#[tokio::test]
async fn nul_bytes_are_refused_before_the_server() {
    let pg = pg("nul_bytes").await;
    for column in ["name", "name_kana", "address"] {
        let row = match column {
            "name" => "1,0000000001,山\0本,ヤマモト,1960-01-01,1,,\n",
            "name_kana" => "1,0000000001,山本,ヤマ\0モト,1960-01-01,1,,\n",
            _ => "1,0000000001,山本,ヤマモト,1960-01-01,1,東京都\0千代田区,\n",
        };
        let csv = format!("{HEADER}{row}");
        let Err(Error::ImportRejected(report)) = import_csv(&pg, &csv, false).await else { panic!("{column}: not refused") };
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert_eq!(report.errors[0].column, column);
        assert!(report.errors[0].reason.contains("NUL"), "{report:?}");
    }

    // A resident built in code: the store's own check, before any row is sent.
    let mut r = resident(CHIYODA, "9", "0000000009");
    r.name = PersonalText("山\0本".into());
    let good = resident(CHIYODA, "8", "0000000008");
    match pg.import_residents(TestSource::new(vec![good, r], 1, true)).await {
        Err(Error::Invalid { field, value, reason }) => {
            assert_eq!(field, "name");
            assert_eq!(value, "(redacted)", "personal data stays out of the message");
            assert!(reason.contains("NUL"), "{reason}");
        }
        other => panic!("expected Invalid, got {:?}", other.map(|(_, a)| a)),
    }
    assert!(scanned_residents(&pg, CHIYODA).await.is_empty());

    // Registrations: the core refuses control characters in every text field, on both stores.
    let redb = redb();
    for store in [pg.clone(), redb] {
        let reg = registry(store.clone());
        let venue = Site { id: SiteId::parse("venue-1").unwrap(), name: "区民会館".into(), municipality: code(CHIYODA) };
        reg.issue_account(&staff(), venue, AccountId::parse("tablet").unwrap()).await.unwrap();
        let mut registration =
            vrs_core::testing_service::registration("nul-doctor", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765");
        registration.doctor = "佐藤\0一郎".into();
        match reg.register(&Actor::Site { account: AccountId::parse("tablet").unwrap() }, &registration).await {
            Err(Error::DoseRejected { kind: FindingKind::InvalidField, .. }) => {}
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

/// Text that the COPY format has to escape comes back exactly, and a name that looks like
/// COPY's NULL marker stays a name.
#[tokio::test]
async fn copy_escapes_round_trip() {
    let pg = pg("copy_escapes").await;
    let texts = ["\\N", "\\.", "a\tb", "line\nbreak", "cr\rlf\r\n", "back\\\\slash", "\\x00ff", "末尾\\"];
    let rows: Vec<Resident> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut r = resident(CHIYODA, &(i + 1).to_string(), &format!("{:010}", i + 1));
            r.name = PersonalText((*t).to_owned());
            r.name_kana = PersonalText(format!("{t}{t}"));
            r.address = Some(PersonalText((*t).to_owned()));
            r
        })
        .collect();
    let (_, applied) = pg.import_residents(TestSource::new(rows.clone(), 3, true)).await.unwrap();
    assert_eq!(applied.inserted, texts.len() as u64);
    assert_eq!(scanned_residents(&pg, CHIYODA).await, rows);
}

/// A source that hands out its residents in batches and, at batch `pause_at`, tells the
/// test it is there and waits until the test says go on.
struct PausingSource {
    inner: Box<TestSource>,
    calls: usize,
    pause_at: usize,
    at_pause: mpsc::Sender<()>,
    resume: Arc<Mutex<mpsc::Receiver<()>>>,
}

impl ResidentSource for PausingSource {
    fn next_batch(&mut self, max: usize) -> vrs_core::Result<Option<Vec<Resident>>> {
        self.calls += 1;
        if self.calls == self.pause_at {
            let _ = self.at_pause.send(());
            let _ = self.resume.lock().unwrap().recv_timeout(Duration::from_secs(60));
        }
        self.inner.next_batch(max)
    }
    fn may_commit(&self) -> bool {
        self.inner.may_commit()
    }
    fn into_report(self: Box<Self>) -> ImportReport {
        self.inner.into_report()
    }
}

fn many(from: usize, n: usize, salt: &str) -> Vec<Resident> {
    (from..from + n)
        .map(|i| {
            let mut r = resident(CHIYODA, &i.to_string(), &format!("{:010}", i));
            r.name = PersonalText(format!("{salt} {i}"));
            r
        })
        .collect()
}

/// Terminates the backends of `application_name` whose query starts with `prefix`;
/// returns how many.
async fn terminate(application_name: &str, prefix: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = $1 AND state <> 'idle' AND query LIKE $2 || '%' AND pid <> pg_backend_pid()",
    )
    .bind(application_name)
    .bind(prefix)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    n
}

/// Imports `upload` in batches of 1,000 and, when the fifth batch is asked for, terminates
/// the import's backend (exactly one) while it runs the statement starting with `query`:
/// the import must fail with a storage error.
async fn import_killed_during(store: &DynStore, app: &str, upload: Vec<Resident>, query: &str) {
    let (at_pause, paused) = mpsc::channel();
    let (go_on, resume) = mpsc::channel();
    let source =
        PausingSource { inner: TestSource::new(upload, 1000, true), calls: 0, pause_at: 5, at_pause, resume: Arc::new(Mutex::new(resume)) };
    let importing = {
        let store = store.clone();
        tokio::spawn(async move { store.import_residents(Box::new(source)).await.map(|(_, applied)| applied) })
    };
    tokio::task::spawn_blocking(move || paused.recv_timeout(Duration::from_secs(60)).unwrap()).await.unwrap();
    assert_eq!(terminate(app, query).await, 1, "the import's backend, in the middle of `{query}`");
    go_on.send(()).unwrap();
    match importing.await.unwrap() {
        Err(Error::Storage { .. }) => {}
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// Killed while the rows stream in (COPY): the store is as before, and the same import
/// run again succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_copy_leaves_nothing_and_the_rerun_succeeds() {
    let schema = schema_name("vt_imp", "killed_copy");
    let store = fresh_store(&schema, Layout::Plain).await;
    let app = format!("vrs-test-{schema}");
    let store: DynStore = Arc::new(store);
    let before = many(1, 500, "before");
    store.import_residents(TestSource::new(before.clone(), 1000, true)).await.unwrap();

    let upload: Vec<Resident> = many(300, 20_000, "after");
    import_killed_during(&store, &app, upload.clone(), "COPY").await;
    assert_eq!(scanned_residents(&store, CHIYODA).await, before, "as before");
    assert_eq!(store.resident(&person(CHIYODA, "10000")).await.unwrap(), None);

    let (_, applied) = store.import_residents(TestSource::new(upload.clone(), 1000, true)).await.unwrap();
    assert_eq!(applied, ImportApplied { inserted: 20_000 - 201, replaced: 201, committed: true });
    let after = scanned_residents(&store, CHIYODA).await;
    assert_eq!(after.len(), 20_299);
    assert_eq!(store.resident_by_voucher(voucher(CHIYODA, "0000010000")).await.unwrap().unwrap().name.as_str(), "after 10000");
}

/// Killed while the staging table is merged into `residents` (the municipality has
/// residents already, so the upload goes through staging): nothing half-imported (all or
/// nothing, whenever the kill lands), and the rerun succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_the_merge_leaves_nothing_half_imported() {
    let schema = schema_name("vt_imp", "killed_merge");
    let store = fresh_store(&schema, Layout::Plain).await;
    let app = format!("vrs-test-{schema}");
    let store: DynStore = Arc::new(store);
    let n = 200_000;
    let before = many(n + 1, 1, "before");
    store.import_residents(TestSource::new(before.clone(), 10, true)).await.unwrap();
    let upload = many(1, n, "merged");
    let importing = {
        let store = store.clone();
        let upload = upload.clone();
        tokio::spawn(async move { store.import_residents(TestSource::new(upload, 8192, true)).await.map(|(_, applied)| applied) })
    };
    let started = Instant::now();
    let mut killed = 0;
    while killed == 0 && !importing.is_finished() && started.elapsed() < Duration::from_secs(120) {
        killed = terminate(&app, "WITH up AS").await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let outcome = importing.await.unwrap();
    assert_eq!(killed, 1, "the merge was caught in flight (outcome {outcome:?})");
    let stored = scanned_residents(&store, CHIYODA).await;
    match outcome {
        Err(Error::Storage { .. }) => assert_eq!(stored, before, "a failed import leaves the store as before"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    let (_, applied) = store.import_residents(TestSource::new(upload, 8192, true)).await.unwrap();
    assert_eq!(applied, ImportApplied { inserted: n as u64, replaced: 0, committed: true });
    assert_eq!(scanned_residents(&store, CHIYODA).await.len(), n + 1);
}

/// A municipality's first upload streams straight into `residents`: killed in the middle
/// of that COPY, it leaves no resident, and the rerun succeeds (the same path again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_first_upload_leaves_nothing_and_the_rerun_succeeds() {
    let schema = schema_name("vt_imp", "killed_first");
    let store = fresh_store(&schema, Layout::Plain).await;
    let app = format!("vrs-test-{schema}");
    let store: DynStore = Arc::new(store);
    let upload: Vec<Resident> = many(1, 20_000, "first");
    import_killed_during(&store, &app, upload.clone(), "COPY residents").await;
    assert!(scanned_residents(&store, CHIYODA).await.is_empty(), "nothing imported");
    let (_, applied) = store.import_residents(TestSource::new(upload, 1000, true)).await.unwrap();
    assert_eq!(applied, ImportApplied { inserted: 20_000, replaced: 0, committed: true });
    assert_eq!(scanned_residents(&store, CHIYODA).await.len(), 20_000);
}
