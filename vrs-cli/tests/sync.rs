//! `vrs sync apply`: a tablet's batch applied to the redb store, twice, with nothing doubled.

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::{Value, json};

mod common;
use common::{issue_account, run, vrs};

fn entry(key: &str, voucher: &str, date: &str) -> Value {
    json!({
        "entry_id": key, "recorded_at": "2021-07-01T00:30:00Z", "kind": "register",
        "registration": { "ocr_line": format!("11131016{voucher}"), "dose_number": null, "date_given": date,
            "product": "pfizer", "lot": "FA5765", "doctor": "佐藤一郎", "idempotency_key": key, "lot_expiry": "2021-06-30" }
    })
}

#[test]
fn a_batch_applied_twice_stores_each_dose_once() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) =
        issue_account(dir.path(), &["--municipality", "131016", "--account", "tab-1", "--site-id", "venue-1", "--site-name", "区民会館"]);
    assert_eq!(code, 0, "{err}");
    let batch = json!({
        "format": "vrs.sync.batch", "version": 1, "batch_id": "tab-1.b1", "account": "tab-1",
        "produced_at": "2021-07-01T01:00:00Z",
        "entries": [
            entry("tab-1.1", "0000000001", "2021-07-01"),
            entry("tab-1.2", "0000000002", "2021-07-02"),
            { "entry_id": "tab-1.1@v2", "recorded_at": "2021-07-01T00:40:00Z", "kind": "correct", "dose_key": "tab-1.1",
              "version": 2, "correction": { "lot": "FA5766", "lot_expiry": "2021-09-30" }, "reason": "lot misread" }
        ]
    });
    let file = dir.path().join("batch.json");
    std::fs::write(&file, batch.to_string()).unwrap();
    let reply_file = dir.path().join("reply.json");
    let statuses = |stdout: &str| -> Vec<String> {
        let reply: Value = serde_json::from_str(stdout).unwrap();
        assert_eq!(reply["format"], "vrs.sync.reply");
        reply["entries"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap().to_owned()).collect()
    };
    let (code, out, err) = run(vrs(dir.path()).args(["--json", "sync", "apply"]).arg(&file).arg("--reply").arg(&reply_file));
    assert_eq!(code, 0, "{err}");
    assert_eq!(statuses(&out), ["applied", "rejected", "applied"]);
    let reply: Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = reply["entries"][0]["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["unmatched", "expired_lot"], "{out}");
    assert_eq!(reply["entries"][1]["rejected_as"], "future_date");
    assert!(std::fs::read_to_string(&reply_file).unwrap().contains("tab-1.b1"));
    // Sent twice: replayed, nothing doubled.
    let (code, out, err) = run(vrs(dir.path()).args(["--json", "sync", "apply"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_eq!(statuses(&out), ["replayed", "rejected", "replayed"]);
    let (code, out, _) = run(vrs(dir.path()).args(["sync", "apply"]).arg(&file));
    assert_eq!(code, 0);
    assert!(out.contains("replayed  2") && out.contains("rejected tab-1.2"), "{out}");
    let unmatched = dir.path().join("unmatched.csv");
    let (code, _, err) = run(vrs(dir.path()).args(["export", "unmatched", "--municipality", "131016", "--out"]).arg(&unmatched));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&unmatched).unwrap().lines().count(), 2, "a header and the one dose");
    // A malformed batch is bad input (exit 2); an unknown account is refused (exit 1).
    std::fs::write(&file, "{\"format\": \"vrs.sync.batch\", \"version\": 9}").unwrap();
    assert_eq!(run(vrs(dir.path()).args(["sync", "apply"]).arg(&file)).0, 2);
    let mut other = batch.clone();
    other["account"] = json!("tab-9");
    std::fs::write(&file, other.to_string()).unwrap();
    assert_eq!(run(vrs(dir.path()).args(["sync", "apply"]).arg(&file)).0, 1);
}
