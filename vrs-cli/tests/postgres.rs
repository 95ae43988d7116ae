//! The `vrs` binary on the PostgreSQL store (`--store postgres://...`): the demo tells
//! the same story as on the embedded store, and the everyday subcommands work on a shared
//! database. Needs `DATABASE_URL` (scripts/test starts a throwaway server); a missing
//! server fails the tests, it never skips them.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const NOW: &str = "2021-07-01T09:00:00+09:00";
const CHIYODA: &str = "131016";

fn database_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!("DATABASE_URL is not set: these tests need a PostgreSQL server (scripts/test starts a throwaway one)"),
    }
}

/// The URL of a schema of this test's own (dropped first by `vrs demo`, or by the test).
fn schema_url(schema: &str) -> String {
    let url = database_url();
    format!("{url}{}schema={schema}", if url.contains('?') { '&' } else { '?' })
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let Output { status, stdout, stderr } = cmd.stdin(Stdio::null()).output().expect("run vrs");
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

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", r.stdout, r.stderr))
}

fn vrs(store: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vrs"));
    c.arg("--store").arg(store).env("VRS_NOW", NOW);
    c
}

/// The demo's summary without what differs by store (paths, timing).
fn story(summary: &Value) -> Value {
    let mut s = summary.clone();
    let o = s.as_object_mut().expect("object");
    for k in ["seconds", "store", "dir", "files"] {
        o.remove(k);
    }
    for u in o.get_mut("uploads").and_then(Value::as_array_mut).expect("uploads") {
        u.as_object_mut().expect("upload").remove("file");
    }
    s
}

#[test]
fn demo_on_postgres_tells_the_same_story_as_on_redb() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pg = ok(vrs(&schema_url("vrs_cli_demo")).args(["--json", "demo", "--residents", "600", "--dir"]).arg(tmp.path().join("pg")));
    let redb = ok(vrs(&tmp.path().join("unused.redb").display().to_string())
        .args(["--json", "demo", "--residents", "600", "--dir"])
        .arg(tmp.path().join("redb")));
    let (pg, redb) = (json(&pg), json(&redb));
    assert!(pg["store"].as_str().expect("store").starts_with("postgres://"), "{}", pg["store"]);
    assert_eq!(story(&pg), story(&redb));
    for file in ["ledger-131016.utf8.csv", "ledger-131016.sjis.csv", "unmatched-131016.csv", "stats-national.csv"] {
        let a = std::fs::read(tmp.path().join("pg").join(file)).expect("pg file");
        let b = std::fs::read(tmp.path().join("redb").join(file)).expect("redb file");
        assert!(a == b, "{file} differs between the stores");
    }
    // The demo leaves a store the other subcommands read.
    let findings = json(&ok(vrs(&schema_url("vrs_cli_demo")).args(["--json", "findings", "--municipality", CHIYODA, "--all"])));
    assert!(!findings.as_array().expect("findings").is_empty());
    let check = json(&ok(vrs(&schema_url("vrs_cli_demo")).args(["--json", "check"])));
    assert_eq!(check["clean"], true, "{check}");
}

fn drop_schema(schema: &str) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(vrs_store_postgres::PostgresStore::drop_schema(&database_url(), schema)).expect("dropping a test schema");
}

#[test]
fn every_day_subcommands_on_a_shared_database() {
    let schema = "vrs_cli_daily";
    drop_schema(schema);
    let store = schema_url(schema);
    let tmp = tempfile::tempdir().expect("tempdir");
    let migrated = json(&ok(vrs(&store).args(["--json", "migrate", "--partitioned"])));
    assert_eq!(migrated["layout"], "partitioned");
    let file = tmp.path().join("chiyoda.csv");
    ok(vrs(&store).args(["gen", "residents", "--count", "200", "--municipality", CHIYODA, "--seed", "3", "--out"]).arg(&file));
    let imported = json(&ok(vrs(&store).args(["--json", "import", "residents"]).arg(&file).args(["--municipality", CHIYODA])));
    assert_eq!(imported["report"]["inserted"], 200, "{imported}");
    // Importing the same file again replaces everyone and adds no one.
    let again = json(&ok(vrs(&store).args(["--json", "import", "residents"]).arg(&file).args(["--municipality", CHIYODA])));
    assert_eq!((again["report"]["inserted"].as_u64(), again["report"]["replaced"].as_u64()), (Some(0), Some(200)), "{again}");

    let issued = json(&ok(vrs(&store)
        .args(["--json", "accounts", "issue", "--municipality", CHIYODA, "--account", "tablet-1", "--site-id", "venue-1"])
        .args(["--site-name", "千代田区民会館"])));
    let secret = issued["secret"].as_str().expect("secret").to_owned();
    let voucher = first_voucher(&file);
    let ocr = format!("11{CHIYODA}{voucher}");
    let register = |key: &str| {
        let mut c = vrs(&store);
        c.env("VRS_ACCOUNT_SECRET", &secret);
        c.args(["--json", "register", "--account", "tablet-1", "--ocr", &ocr, "--date", "2021-06-30", "--product", "pfizer"]).args([
            "--lot",
            "FA5765",
            "--doctor",
            "佐藤一郎",
            "--key",
            key,
        ]);
        c
    };
    let first = json(&ok(&mut register("k-1")));
    assert_eq!(first["matched"], true, "{first}");
    let retry = json(&ok(&mut register("k-1")));
    assert_eq!(retry["replayed"], true, "{retry}");
    let dup = json(&ok(&mut register("k-2")));
    let kinds: Vec<&str> = dup["findings"].as_array().expect("findings").iter().filter_map(|f| f["kind"].as_str()).collect();
    assert_eq!(kinds, ["duplicate"], "{dup}");

    let ledger_file = tmp.path().join("ledger.csv");
    ok(vrs(&store).args(["export", "ledger", "--municipality", CHIYODA, "--out"]).arg(&ledger_file));
    let ledger = std::fs::read_to_string(&ledger_file).expect("ledger");
    assert_eq!(ledger.lines().count(), 2, "a header and one person: {ledger}");
    let stats = json(&ok(vrs(&store).args(["--json", "export", "stats", "--as", "national"])));
    assert_eq!(stats.as_array().expect("rows").iter().map(|r| r["count"].as_u64().expect("count")).sum::<u64>(), 2);
    let check = json(&ok(vrs(&store).args(["--json", "check"])));
    assert_eq!((check["clean"].as_bool(), check["layout"].as_str()), (Some(true), Some("partitioned")), "{check}");
    // Without --partitioned, a migrated schema keeps its layout.
    let kept = json(&ok(vrs(&store).args(["--json", "migrate"])));
    assert_eq!(kept["layout"], "partitioned");
    drop_schema(schema);
    // Asking for the other layout of a migrated schema is refused, plainly.
    ok(vrs(&store).args(["migrate"]));
    let r = run(vrs(&store).args(["migrate", "--partitioned"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("the schema has the plain layout, not the partitioned one"), "{}", r.stderr);
    drop_schema(schema);
}

/// The voucher number of the first row of a generated file.
fn first_voucher(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("read");
    let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().expect("header").iter().map(|h| h.trim_start_matches('\u{feff}').to_owned()).collect();
    let col = header.iter().position(|h| h == "voucher_number" || h == "券番号").expect("voucher column");
    r.records().next().expect("a row").expect("record")[col].to_owned()
}
