//! `vrs export fhir|hl7|opendata|changes` and `vrs import fhir` through the binary, on a
//! small store with a correction, a void, an unmatched dose and a name holding every HL7
//! delimiter.

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

mod common;
use common::{issue_account, json, ok, run, vrs};

const CHIYODA: &str = "131016";
const TRICKY: &str = r"山田|太郎^&~\";

/// Residents (one with every HL7 delimiter in the name) and a tablet account.
fn setup(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let csv = dir.join("residents.csv");
    std::fs::write(
        &csv,
        format!(
            "宛名番号,券番号,氏名,氏名カナ,生年月日,性別\r\n\
             1,0000000001,{TRICKY},ヤマダタロウ,1950-04-01,1\r\n\
             2,0000000002,接種花子,セッシュハナコ,1980-05-03,2\r\n"
        ),
    )
    .unwrap();
    ok(vrs(dir).args(["import", "residents", "--municipality", CHIYODA]).arg(&csv));
    let (code, out) =
        issue_account(dir, &["--municipality", CHIYODA, "--account", "tab-1", "--site-id", "venue-1", "--site-name", "区民会館"]);
    assert_eq!(code, 0, "{out}");
}

fn register(dir: &Path, dose: u8, voucher: &str, date: &str, lot: &str) -> String {
    let v = json(vrs(dir).args(["register", "--account", "tab-1", "--ocr", &format!("1{dose}{CHIYODA}{voucher}"), "--date", date]).args([
        "--product",
        "pfizer",
        "--lot",
        lot,
        "--doctor",
        "佐藤一郎",
    ]));
    v["dose_id"].as_str().expect("dose id").to_owned()
}

/// The story: doses 1 and 2 of resident 1 (dose 2 corrected), a void for resident 2, an
/// unmatched voucher.
fn story(dir: &Path) {
    setup(dir);
    register(dir, 1, "0000000001", "2021-06-01", "FA5765");
    let second = register(dir, 2, "0000000001", "2021-06-10", "FA5766");
    ok(vrs(dir).args(["correct", &second, "--municipality", CHIYODA, "--date", "2021-06-22", "--reason", "date misread"]));
    let wrong = register(dir, 1, "0000000002", "2021-06-02", "EY0779");
    ok(vrs(dir).args(["void", &wrong, "--municipality", CHIYODA, "--reason", "wrong voucher"]));
    register(dir, 1, "0000000099", "2021-06-03", "FC3661");
}

/// What an Immunization states, without its ids.
fn essence(bundle: &Value) -> Vec<(String, u64, String, String, String)> {
    let mut v: Vec<_> = bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Immunization")
        .map(|r| {
            (
                r["identifier"][1]["value"].as_str().unwrap().to_owned(),
                r["protocolApplied"][0]["doseNumberPositiveInt"].as_u64().unwrap(),
                r["occurrenceDateTime"].as_str().unwrap().to_owned(),
                r["lotNumber"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn fhir_export_and_import_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    story(&a);
    let out = a.join("fhir.json");
    let w = json(vrs(&a).args(["export", "fhir", "--municipality", CHIYODA, "--out"]).arg(&out));
    assert_eq!((w["patients"].as_u64(), w["immunizations"].as_u64(), w["entered_in_error"].as_u64()), (Some(2), Some(4), Some(1)), "{w:#}");
    let bundle: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!((bundle["resourceType"].as_str(), bundle["type"].as_str()), (Some("Bundle"), Some("collection")));
    assert!(std::fs::read_to_string(&out).unwrap().contains(r#""text": "山田|太郎^&~\\""#), "the name as written");

    // One resident only.
    let one = a.join("one.json");
    let text = ok(vrs(&a).args(["export", "fhir", "--municipality", CHIYODA, "--addressee", "1", "--out"]).arg(&one));
    assert!(text.contains("1 Patients, 2 Immunizations (0 entered-in-error)"), "{text}");

    // Into a fresh store with the same residents: the same doses; again: nothing new.
    let b = tmp.path().join("b");
    setup(&b);
    let r = json(vrs(&b).args(["import", "fhir"]).arg(&out).args(["--account", "tab-1"]));
    assert_eq!(
        (r["registered"].as_u64(), r["voided"].as_u64(), r["rejected"].as_array().map(Vec::len)),
        (Some(4), Some(1), Some(0)),
        "{r:#}"
    );
    let again = ok(vrs(&b).args(["import", "fhir"]).arg(&out).args(["--account", "tab-1"]));
    assert!(again.contains("0 Immunizations registered, 4 already registered"), "{again}");
    let out_b = b.join("fhir.json");
    ok(vrs(&b).args(["export", "fhir", "--municipality", CHIYODA, "--out"]).arg(&out_b));
    let bundle_b: Value = serde_json::from_str(&std::fs::read_to_string(&out_b).unwrap()).unwrap();
    assert_eq!(essence(&bundle), essence(&bundle_b));

    // A broken Bundle: bad input, exit 2, nothing stored.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Immunization","id":"x","status":"completed"}}]}"#).unwrap();
    let (code, _, err) = run(vrs(&b).args(["import", "fhir"]).arg(&bad).args(["--account", "tab-1"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("identifier"), "{err}");
    // Only a site registers doses.
    let (code, _, err) = run(vrs(&b).args(["import", "fhir"]).arg(&out).args(["--account", "nobody"]));
    assert_eq!(code, 1, "{err}");
}

#[test]
fn hl7_messages_are_escaped_and_mark_corrections_and_voids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    story(dir);
    let out = dir.join("vxu.hl7");
    let r = json(vrs(dir).args(["export", "hl7", "--municipality", CHIYODA, "--out"]).arg(&out));
    assert_eq!(r["messages"].as_u64(), Some(4));
    let text = std::fs::read_to_string(&out).unwrap();
    let messages: Vec<&str> = text.lines().collect();
    assert_eq!(messages.len(), 4);
    let mut actions = BTreeMap::new();
    for m in &messages {
        let segments: Vec<&str> = m.split('\r').filter(|s| !s.is_empty()).collect();
        assert!(segments[0].starts_with("MSH|^~\\&|") && segments[0].contains("|VXU^V04^VXU_V04|"), "{m:?}");
        let rxa: Vec<&str> = segments.iter().find(|s| s.starts_with("RXA|")).unwrap().split('|').collect();
        *actions.entry(rxa[21].to_owned()).or_insert(0) += 1;
        assert!(!segments[1].contains(TRICKY), "a raw delimiter in PID: {}", segments[1]);
    }
    assert_eq!(actions, BTreeMap::from([("A".to_owned(), 2), ("D".to_owned(), 1), ("U".to_owned(), 1)]));
    assert!(text.contains(r"山田\F\太郎\S\\T\\R\\E\^^^^^^L^I"), "{text}");
    // One resident.
    let one = dir.join("one.hl7");
    let t = ok(vrs(dir).args(["export", "hl7", "--municipality", CHIYODA, "--addressee", "2", "--out"]).arg(&one));
    assert!(t.contains(": 1 messages"), "{t}");
}

#[test]
fn open_data_counts_equal_the_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    story(dir);
    let out = dir.join("open");
    let w = json(vrs(dir).args(["export", "opendata", "--as", "national", "--out-dir"]).arg(&out));
    let ndjson = std::fs::read_to_string(out.join("prefecture.ndjson")).unwrap();
    let lines: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let total: u64 = lines.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    let stats = json(vrs(dir).args(["export", "stats", "--as", "national"]));
    let recount: u64 = stats.as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, recount);
    assert_eq!(total, 3, "three doses stand (one voided)");
    assert_eq!(w["doses"].as_u64(), Some(3));
    for l in &lines {
        assert_eq!(l["prefecture"], "13");
        assert_eq!(l["medical_worker"], false);
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 7, "{l}");
    }
    let summary = std::fs::read_to_string(out.join("summary_by_date.csv")).unwrap();
    assert!(
        summary.starts_with("date,count_shot1_general,count_shot1_elderly,count_shot2_general,count_shot2_elderly,count_total\n"),
        "{summary}"
    );
    let csv_total: u64 = summary.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(csv_total, 3);

    // Small-cell suppression, a prefecture's reader, and a reader outside its scope.
    let t = ok(vrs(dir).args(["export", "opendata", "--prefecture", "13", "--suppress-below", "2", "--out-dir"]).arg(dir.join("p13")));
    assert!(t.contains("3 doses in groups under 2 left out"), "{t}");
    let (code, _, err) =
        run(vrs(dir).args(["export", "opendata", "--as", "prefecture:27", "--prefecture", "13", "--out-dir"]).arg(dir.join("x")));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("permission denied"), "{err}");
}

#[test]
fn change_logs_chain_by_cursor_with_voids() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    story(dir);
    let first = dir.join("changes-1.csv");
    let r = json(vrs(dir).args(["export", "changes", "--municipality", CHIYODA, "--out"]).arg(&first));
    assert_eq!((r["export"]["changes"].as_u64(), r["export"]["voids"].as_u64()), (Some(4), Some(1)), "{r:#}");
    let cursor = r["cursor"].as_u64().unwrap();
    let text = std::fs::read_to_string(&first).unwrap();
    assert!(text.starts_with("記録ID,版,区分,"), "{text}");
    let kinds: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').nth(2).unwrap()).collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(sorted, ["取消", "登録", "登録", "補正"]);

    // Nothing new: an empty log, the same cursor.
    let t = ok(vrs(dir)
        .args(["export", "changes", "--municipality", CHIYODA, "--since", &cursor.to_string(), "--out"])
        .arg(dir.join("empty.csv")));
    assert!(t.contains(&format!("0 changes (0 voids)\nnext: --since {cursor}")), "{t}");

    // One more dose: only it, in Shift_JIS.
    register(dir, 1, "0000000003", "2021-06-30", "FF2782");
    let second = dir.join("changes-2.csv");
    let r = json(
        vrs(dir)
            .args(["export", "changes", "--municipality", CHIYODA, "--encoding", "sjis", "--since", &cursor.to_string(), "--out"])
            .arg(&second),
    );
    assert_eq!(r["export"]["changes"].as_u64(), Some(1));
    assert!(r["cursor"].as_u64().unwrap() > cursor);
    let bytes = std::fs::read(&second).unwrap();
    let (decoded, _, bad) = encoding_rs::SHIFT_JIS.decode(&bytes);
    assert!(!bad);
    let lines: Vec<&str> = decoded.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains(",登録,") && lines[1].contains("0000000003"), "{}", lines[1]);
}
