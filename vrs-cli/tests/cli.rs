//! End-to-end tests of the `vrs` binary: each test runs the built command in its own
//! temporary directory with its own `--store`.

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

mod common;
use common::vrs;

const CHIYODA: &str = "131016";
const SHINJUKU: &str = "131041";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

fn run(cmd: &mut Command) -> Run {
    let Output { status, stdout, stderr } = cmd.output().expect("run vrs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn ok(cmd: &mut Command) -> Run {
    let r = run(cmd);
    assert_eq!(r.code, 0, "command failed: {cmd:?}\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

fn gen_residents(dir: &Path, municipality: &str, count: u64, seed: u64, encoding: &str, out: &Path) {
    ok(vrs(dir)
        .args(["gen", "residents", "--municipality", municipality, "--encoding", encoding])
        .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
        .arg("--out")
        .arg(out));
}

/// A CSV file read into a header and rows (text already decoded).
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn parse(text: &str) -> Table {
        let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
        let header = r.headers().expect("header").iter().map(|s| s.trim_start_matches('\u{feff}').to_owned()).collect();
        let rows = r.records().map(|rec| rec.expect("record").iter().map(str::to_owned).collect()).collect();
        Table { header, rows }
    }

    fn column(&self, names: &[&str]) -> usize {
        self.header.iter().position(|h| names.contains(&h.as_str())).unwrap_or_else(|| panic!("no column {names:?} in {:?}", self.header))
    }

    fn to_csv(&self) -> String {
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
        w.write_record(&self.header).expect("write");
        for row in &self.rows {
            w.write_record(row).expect("write");
        }
        String::from_utf8(w.into_inner().expect("flush")).expect("utf-8")
    }
}

fn read_sjis(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file");
    let (text, _, had_errors) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!had_errors, "{} does not decode as Shift_JIS", path.display());
    text.into_owned()
}

fn write_sjis(path: &Path, text: &str) {
    let (bytes, _, unmappable) = encoding_rs::SHIFT_JIS.encode(text);
    assert!(!unmappable, "text not representable in Shift_JIS");
    std::fs::write(path, bytes).expect("write file");
}

const VOUCHER: &[&str] = &["voucher_number", "券番号", "接種券番号"];
const BIRTH: &[&str] = &["birth_date", "生年月日"];
const SEX: &[&str] = &["sex", "性別"];
const MUNICIPALITY: &[&str] = &["municipality_code", "自治体コード"];
const STATUS: &[&str] = &["status", "異動事由"];
const PREVIOUS: &[&str] = &["previous_voucher_number", "転入前券番号"];
const ADDRESSEE: &[&str] = &["addressee_number", "宛名番号", "個別宛名番号"];

/// Import counts from `vrs import residents --json`.
fn import_counts(v: &Value) -> (u64, u64, bool) {
    let r = &v["report"];
    (r["inserted"].as_u64().expect("inserted"), r["replaced"].as_u64().expect("replaced"), r["applied"].as_bool().expect("applied"))
}

// ---- 1. the demo ------------------------------------------------------------------------

#[test]
fn demo_tells_the_whole_story_and_writes_its_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("demo");
    let started = Instant::now();
    let r = ok(vrs(tmp.path()).env_remove("VRS_NOW").arg("demo").arg("--dir").arg(&dir));
    eprintln!("demo took {:?}\n{}", started.elapsed(), r.stdout);
    let out = r.stdout.to_lowercase();
    for case in ["matched", "unmatched-then-matched", "duplicate", "probable duplicate", "too early", "rejected", "correction", "void"] {
        assert!(out.contains(case), "the summary does not name {case:?}:\n{}", r.stdout);
    }
    for kind in ["bad check digit", "unknown municipality", "malformed", "future date", "unknown product"] {
        assert!(out.contains(kind), "the summary does not name the rejection {kind:?}:\n{}", r.stdout);
    }
    assert!(dir.join("vrs.redb").is_file());

    // Every file the summary names exists and is non-empty.
    let files: Vec<PathBuf> = r
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("file: "))
        .map(|p| PathBuf::from(p.split("  (").next().unwrap_or(p).trim()))
        .collect();
    assert!(files.len() >= 5, "the summary lists its export files:\n{}", r.stdout);
    for f in &files {
        let len = std::fs::metadata(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).len();
        assert!(len > 0, "{} is empty", f.display());
    }
    let ledger_utf8 =
        files.iter().find(|f| f.to_string_lossy().contains("ledger") && f.to_string_lossy().contains("utf8")).expect("UTF-8 ledger");
    let ledger_sjis =
        files.iter().find(|f| f.to_string_lossy().contains("ledger") && f.to_string_lossy().contains("sjis")).expect("Shift_JIS ledger");
    let utf8 = std::fs::read_to_string(ledger_utf8).expect("the UTF-8 ledger is UTF-8");
    let sjis_bytes = std::fs::read(ledger_sjis).expect("read");
    assert!(std::str::from_utf8(&sjis_bytes).is_err(), "the Shift_JIS ledger is not plain UTF-8");
    let sjis = read_sjis(ledger_sjis);
    assert!(sjis.starts_with("個別宛名番号,1回目接種履歴登録日時"), "ledger header: {}", &sjis[..sjis.len().min(80)]);
    assert_eq!(sjis, utf8, "both encodings carry the same ledger");
    assert!(files.iter().any(|f| f.to_string_lossy().contains("unmatched")));
    assert!(files.iter().any(|f| f.to_string_lossy().contains("stat")));
    // The interchange files: FHIR, HL7, open data, the change log.
    let named = |name: &str| files.iter().find(|f| f.file_name().is_some_and(|n| n == name)).unwrap_or_else(|| panic!("no {name}"));
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(named("fhir.json")).expect("read")).expect("fhir.json is JSON");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert!(std::fs::read_to_string(named("vxu.hl7")).expect("read").starts_with("MSH|^~\\&|"));
    let ndjson = std::fs::read_to_string(named("prefecture.ndjson")).expect("read");
    assert!(ndjson.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(std::fs::read_to_string(named("summary_by_date.csv")).expect("read").starts_with("date,"));
    assert!(files.iter().any(|f| f.to_string_lossy().contains("changes")));

    // The JSON summary parses and carries the same story; the store is clean afterwards.
    let dir2 = tmp.path().join("demo-json");
    let j = ok(vrs(tmp.path()).arg("--json").arg("demo").arg("--dir").arg(&dir2)).json();
    assert!(j["cases"]["matched"].as_u64().expect("matched count") > 1000, "{j:#}");
    assert_eq!(j["cases"]["unmatched_then_matched"].as_u64(), Some(1), "{j:#}");
    assert!(j["files"].as_array().expect("files").len() >= 5);
    ok(Command::new(env!("CARGO_BIN_EXE_vrs")).arg("--store").arg(dir2.join("vrs.redb")).arg("check"));
}

// ---- 2. a Shift_JIS upload with bad rows -------------------------------------------------

#[test]
fn shift_jis_upload_with_bad_rows_is_refused_whole_with_every_bad_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let good = dir.join("residents.sjis.csv");
    gen_residents(dir, CHIYODA, 200, 7, "sjis", &good);
    let text = read_sjis(&good);
    let mut table = Table::parse(&text);
    assert_eq!(table.rows.len(), 200);

    // Break four rows in known ways. Line numbers count the header as line 1.
    let broken: [(usize, &[&str], &str, &str); 4] = [
        (2, VOUCHER, "12345", "voucher_number"),
        (5, BIRTH, "2021-02-30", "birth_date"),
        (9, SEX, "X", "sex"),
        (14, MUNICIPALITY, SHINJUKU, "municipality_code"),
    ];
    for (row, names, value, _) in broken {
        let col = table.column(names);
        table.rows[row][col] = value.to_owned();
    }
    let bad = dir.join("residents-broken.sjis.csv");
    write_sjis(&bad, &table.to_csv());

    // Refused: exit 2, every bad line with its line and column, in text and JSON.
    let r = run(vrs(dir).args(["import", "residents", "--municipality", CHIYODA]).arg(&bad));
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    for (row, _, _, column) in broken {
        let line = row + 2;
        assert!(r.stdout.contains(&format!("line {line}, column {column}")), "line {line} ({column}) missing from:\n{}", r.stdout);
    }
    assert!(r.stderr.contains("nothing was applied"), "{}", r.stderr);
    let r = run(vrs(dir).args(["--json", "import", "residents", "--municipality", CHIYODA, "--encoding", "sjis"]).arg(&bad));
    assert_eq!(r.code, 2);
    let report = &r.json()["report"];
    assert_eq!(report["applied"], Value::Bool(false));
    let errors = report["errors"].as_array().expect("errors");
    for (row, _, _, column) in broken {
        let line = (row + 2) as u64;
        assert!(
            errors
                .iter()
                .any(|e| e["line"].as_u64() == Some(line) && e["column"] == column && !e["reason"].as_str().unwrap_or("").is_empty()),
            "no error for line {line} column {column}: {errors:?}"
        );
    }
    assert_eq!(errors.len(), 4, "only the broken lines are reported: {errors:?}");

    // Nothing was applied: the repaired file inserts every row and replaces none.
    let r = ok(vrs(dir).args(["--json", "import", "residents", "--municipality", CHIYODA]).arg(&good));
    assert_eq!(import_counts(&r.json()), (200, 0, true));

    // --skip-invalid applies the good rows and still reports the bad ones.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let r = ok(vrs(&other).args(["--json", "import", "residents", "--municipality", CHIYODA, "--skip-invalid"]).arg(&bad));
    let v = r.json();
    assert_eq!(import_counts(&v), (196, 0, true));
    assert_eq!(v["report"]["errors"].as_array().expect("errors").len(), 4);
    let r = ok(vrs(&other).args(["import", "residents", "--municipality", CHIYODA, "--skip-invalid"]).arg(&bad));
    assert!(r.stdout.contains(&format!("line {}, column sex", 9 + 2)), "{}", r.stdout);
}

// ---- 3. crash safety ---------------------------------------------------------------------

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn an_import_killed_midway_leaves_nothing_and_can_be_rerun() {
    const ROWS: u64 = 400_000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("residents.csv");
    gen_residents(tmp.path(), SHINJUKU, ROWS, 11, "utf8", &file);

    // Measure a full import on a store of its own.
    let measure = tmp.path().join("measure");
    std::fs::create_dir_all(&measure).expect("mkdir");
    let started = Instant::now();
    let r = ok(vrs(&measure).args(["--json", "import", "residents", "--municipality", SHINJUKU]).arg(&file));
    let full = started.elapsed();
    assert_eq!(import_counts(&r.json()), (ROWS, 0, true));
    eprintln!("a full import of {ROWS} rows took {full:?}");

    // Start it again on a fresh store and SIGKILL it at about 40% of that time.
    let crash = tmp.path().join("crash");
    std::fs::create_dir_all(&crash).expect("mkdir");
    let store = crash.join("vrs.redb");
    let mut child = vrs(&crash)
        .args(["import", "residents", "--municipality", SHINJUKU])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(full.mul_f64(0.4));
    assert!(child.try_wait().expect("try_wait").is_none(), "the import ended before it could be killed");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    eprintln!("killed at {:?}; store file is {} bytes", full.mul_f64(0.4), file_len(&store));

    // Reopened: the integrity check is clean and none of the import is there.
    let r = ok(vrs(&crash).arg("check"));
    assert!(r.stdout.contains("clean"), "{}", r.stdout);
    let started = Instant::now();
    let r = ok(vrs(&crash).args(["--json", "import", "residents", "--municipality", SHINJUKU]).arg(&file));
    assert_eq!(import_counts(&r.json()), (ROWS, 0, true), "every row is new: the killed import left nothing behind");
    eprintln!("the rerun took {:?}", started.elapsed());
    ok(vrs(&crash).arg("check"));
}

// ---- 4. register, correct, findings ------------------------------------------------------

#[test]
fn register_correct_and_findings_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let file = dir.join("residents.csv");
    gen_residents(dir, CHIYODA, 30, 3, "utf8", &file);
    let table = Table::parse(&std::fs::read_to_string(&file).expect("read"));
    let (birth, status, previous) = (table.column(BIRTH), table.column(STATUS), table.column(PREVIOUS));
    // An active adult who did not move in, so that no other rule gets in the way of the story.
    let row = table.rows.iter().find(|r| r[birth].starts_with("19") && r[status].is_empty() && r[previous].is_empty()).expect("an adult");
    let voucher = row[table.column(VOUCHER)].clone();
    let addressee = row[table.column(ADDRESSEE)].clone();
    ok(vrs(dir).args(["import", "residents", "--municipality", CHIYODA]).arg(&file));

    let r = ok(vrs(dir).args(["--json", "accounts", "issue", "--municipality", CHIYODA, "--account", "tab-1"]).args([
        "--site-id",
        "1310100021",
        "--site-name",
        "神田クリニック",
    ]));
    let issued = r.json();
    assert_eq!(issued["account"]["id"], "tab-1");
    // The secret is shown once; the tablet signs in with it (VRS_ACCOUNT_SECRET).
    let secret = issued["secret"].as_str().expect("secret").to_owned();
    assert_eq!(secret.len(), 32);

    let ocr1 = format!("11{CHIYODA}{voucher}");
    let ocr2 = format!("12{CHIYODA}{voucher}");
    let register = |ocr: &str, date: &str| {
        let mut c = vrs(dir);
        c.env("VRS_ACCOUNT_SECRET", &secret);
        c.args(["--json", "register", "--account", "tab-1", "--ocr", ocr, "--date", date]).args([
            "--product",
            "pfizer",
            "--lot",
            "FA5765",
            "--doctor",
            "佐藤一郎",
        ]);
        c
    };
    let first = ok(&mut register(&ocr1, "2021-06-01")).json();
    assert_eq!(first["matched"], true);
    assert_eq!(first["replayed"], false);
    assert_eq!(first["findings"].as_array().map(Vec::len), Some(0), "{first:#}");

    // Dose 2 only 9 days later: stored, with an interval finding.
    let second = ok(&mut register(&ocr2, "2021-06-10")).json();
    let dose2 = second["dose_id"].as_str().expect("dose id").to_owned();
    let kinds =
        |v: &Value| -> Vec<String> { v.as_array().expect("array").iter().map(|f| f["kind"].as_str().expect("kind").to_owned()).collect() };
    assert!(kinds(&second["findings"]).contains(&"interval_too_short".to_owned()), "{second:#}");

    // The same command again: the derived key makes it a replay, nothing new stored.
    let again = ok(&mut register(&ocr2, "2021-06-10")).json();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["dose_id"], dose2.as_str());

    // The review queue has it.
    let queue = ok(vrs(dir).args(["--json", "findings", "--municipality", CHIYODA])).json();
    assert!(queue.as_array().expect("array").iter().any(|f| f["kind"] == "interval_too_short" && f["dose"] == dose2.as_str()), "{queue:#}");
    let text = ok(vrs(dir).args(["findings", "--municipality", CHIYODA])).stdout;
    assert!(text.contains("interval_too_short") && text.contains(&dose2), "{text}");

    // Correct the date: the finding closes, and the history keeps both versions.
    let corrected = ok(vrs(dir)
        .args(["--json", "correct", &dose2, "--municipality", CHIYODA, "--date", "2021-06-22"])
        .args(["--reason", "date misread at the site"]))
    .json();
    assert_eq!(corrected["dose"]["versions"].as_array().map(Vec::len), Some(2));
    assert!(!kinds(&corrected["findings"]).contains(&"interval_too_short".to_owned()), "{corrected:#}");
    let queue = ok(vrs(dir).args(["--json", "findings", "--municipality", CHIYODA])).json();
    assert!(!queue.as_array().expect("array").iter().any(|f| f["dose"] == dose2.as_str()), "{queue:#}");
    let all = ok(vrs(dir).args(["--json", "findings", "--municipality", CHIYODA, "--all"])).json();
    assert!(all.as_array().expect("array").iter().any(|f| f["dose"] == dose2.as_str() && f["open"] == false), "{all:#}");

    let doses = ok(vrs(dir).args(["--json", "doses", "--municipality", CHIYODA, "--addressee", &addressee])).json();
    assert_eq!(doses["doses"].as_array().map(Vec::len), Some(2), "{doses:#}");

    // A site account reading another municipality's findings: permission denied, exit 1.
    let r = run(vrs(dir).env("VRS_ACCOUNT_SECRET", &secret).args(["findings", "--municipality", SHINJUKU, "--account", "tab-1"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    let r = run(vrs(dir).env("VRS_ACCOUNT_SECRET", &secret).args(["--json", "findings", "--municipality", SHINJUKU, "--account", "tab-1"]));
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["error"]["kind"], "permission_denied");
    // Acting as the account without its secret, or with a wrong one: refused, exit 1.
    for wrong in [None, Some("0123456789abcdef0123456789abcdef")] {
        let mut c = register(&ocr1, "2021-06-01");
        c.env_remove("VRS_ACCOUNT_SECRET");
        if let Some(w) = wrong {
            c.env("VRS_ACCOUNT_SECRET", w);
        }
        let r = run(&mut c);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(r.json()["error"]["kind"], "permission_denied", "{}", r.stdout);
        assert!(!r.stdout.contains(&secret) && !r.stderr.contains(&secret));
    }

    // A rejected scan stores nothing and exits 2.
    let bad_check = format!("11131017{voucher}");
    let r = run(&mut register(&bad_check, "2021-06-01"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.json()["error"]["detail"]["finding"], "bad_check_digit");

    // A renewed secret replaces the old one; a revoked account's secret no longer works.
    let renewed = ok(vrs(dir).args(["--json", "accounts", "renew-secret", "--municipality", CHIYODA, "--account", "tab-1"])).json();
    let renewed = renewed["secret"].as_str().expect("secret").to_owned();
    assert_ne!(renewed, secret);
    assert_eq!(run(&mut register(&ocr1, "2021-06-01")).code, 1, "the old secret is refused");
    let mut c = register(&ocr1, "2021-06-01");
    c.env("VRS_ACCOUNT_SECRET", &renewed);
    assert_eq!(ok(&mut c).json()["replayed"], true);
    ok(vrs(dir).args(["accounts", "revoke", "--municipality", CHIYODA, "--account", "tab-1"]));
    let mut c = register(&ocr1, "2021-06-01");
    c.env("VRS_ACCOUNT_SECRET", &renewed);
    let r = run(&mut c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("revoked"), "{}", r.stdout);

    // Statistics through the binary, as JSON and CSV.
    let stats = ok(vrs(dir).args(["--json", "export", "stats", "--as", "national"])).json();
    let total: u64 = stats.as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).sum();
    assert_eq!(total, 2);
    let csv = ok(vrs(dir).args(["export", "stats", "--as", "prefecture:13", "--prefecture", "13"])).stdout;
    assert!(csv.starts_with("date,municipality,prefecture,dose_number,sex,age_band,product,count"), "{csv}");
}

#[test]
fn an_unreachable_postgres_store_fails_plainly() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let r = run(Command::new(env!("CARGO_BIN_EXE_vrs"))
        .args(["--store", "postgres://vrs:secret@127.0.0.1:1/vrs", "findings", "--municipality", CHIYODA])
        .stdin(Stdio::null()));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("connecting to PostgreSQL at postgres://vrs:***@127.0.0.1:1/vrs"), "{}", r.stderr);
    assert!(!r.stderr.contains("secret"), "the password is never printed: {}", r.stderr);
}

#[test]
fn gen_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = ok(vrs(tmp.path()).args(["gen", "residents", "--count", "50", "--municipality", CHIYODA, "--seed", "5"])).stdout;
    let b = ok(vrs(tmp.path()).args(["gen", "residents", "--count", "50", "--municipality", CHIYODA, "--seed", "5"])).stdout;
    let c = ok(vrs(tmp.path()).args(["gen", "residents", "--count", "50", "--municipality", CHIYODA, "--seed", "6"])).stdout;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(Table::parse(&a).rows.len(), 50);
}
