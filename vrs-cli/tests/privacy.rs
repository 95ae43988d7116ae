//! Personal data never reaches Debug output, error messages or the command's error output
//! (issue 7). Residents with distinctive personal values (name, kana, birth date, address,
//! personal number) go through the `vrs` command and the registry, including failing
//! operations (bad CSV rows, permission denied, conflicts, rejected scans); every error's
//! text, the command's output of failures and the Debug of every domain value met are
//! collected and searched for those values.

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use vrs_core::access::{Actor, Site};
use vrs_core::dose::{DoseCorrection, DoseRegistration};
use vrs_core::ids::{AccountId, AddresseeNumber, IdempotencyKey, MunicipalityCode, PersonRef, PersonalNumber, SiteId};
use vrs_core::import::{ImportOptions, ResidentCsvSource};
use vrs_core::service::{FixedClock, Registry};
use vrs_core::store::{DynStore, PersonQuery};
use vrs_store_redb::RedbStore;

mod common;
use common::NOW;

const CHIYODA: &str = "131016";
const SHINJUKU: &str = "131041";
const SECRET: &str = "deployment-secret-for-the-test";

/// The personal values, each distinctive enough that finding one anywhere is a leak.
const NAME: &str = "漏洩検査太郎";
const KANA: &str = "ロウエイケンサタロウ";
const NAME_2: &str = "秘匿試験花子";
const KANA_2: &str = "ヒトクシケンハナコ";
const ADDRESS: &str = "東京都千代田区秘密町九丁目";
const PERSONAL_NUMBER: &str = "738291046524";
/// A personal number whose check digit is wrong: refused, and still never printed.
const BAD_PERSONAL_NUMBER: &str = "738291046525";
/// Birth dates in the forms a file or a message could carry them.
const BIRTH: [&str; 4] = ["1947-03-09", "19470309", "1947/03/09", "S22.3.9"];
const BAD_BIRTH: &str = "1947-13-09";

fn personal_values() -> Vec<&'static str> {
    let mut v = vec![NAME, KANA, NAME_2, KANA_2, ADDRESS, PERSONAL_NUMBER, BAD_PERSONAL_NUMBER, BAD_BIRTH, "秘密町", "漏洩", "秘匿"];
    v.extend(BIRTH);
    v
}

/// Everything collected, with where it came from.
#[derive(Default)]
struct Collected(Vec<(String, String)>);

impl Collected {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }
    fn debug(&mut self, what: &str, value: &impl std::fmt::Debug) {
        self.add(format!("Debug of {what}"), format!("{value:?}"));
        self.add(format!("pretty Debug of {what}"), format!("{value:#?}"));
    }
    fn error(&mut self, what: &str, e: &vrs_core::Error) {
        self.add(format!("error of {what}"), e.to_string());
        self.debug(&format!("error of {what}"), e);
    }
    fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, text) in &self.0 {
            for value in personal_values() {
                if text.contains(value) {
                    out.push(format!("{what} shows {value:?}: {text}"));
                }
            }
        }
        out
    }
}

/// `vrs` on the store in `dir`, keying personal numbers with the test's secret.
fn vrs(dir: &Path) -> Command {
    let mut c = common::vrs(dir);
    c.env("VRS_PERSONAL_NUMBER_SECRET", SECRET);
    c
}

/// Runs a command; returns its exit code and records its output when it failed.
fn run(c: &mut Command, seen: &mut Collected) -> (i32, String) {
    let out = c.output().expect("run vrs");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if code != 0 {
        seen.add(format!("stdout of failing {c:?}"), stdout.clone());
    }
    // Error output and progress go to stderr, whatever the outcome.
    seen.add(format!("stderr of {c:?}"), stderr.clone());
    (code, stdout)
}

const HEADER: &str = "municipality_code,addressee_number,voucher_number,name,name_kana,birth_date,sex,address,personal_number";

fn good_rows() -> String {
    format!(
        "{CHIYODA},700001,0000700001,{NAME},{KANA},{},1,{ADDRESS},{PERSONAL_NUMBER}\n\
         {CHIYODA},700002,0000700002,{NAME_2},{KANA_2},S22.3.9,2,{ADDRESS},\n",
        BIRTH[0]
    )
}

/// Rows that are each wrong in one field, next to personal values.
fn bad_rows() -> String {
    format!(
        "{CHIYODA},700003,0000700003,{NAME},{KANA},{BAD_BIRTH},1,{ADDRESS},\n\
         {CHIYODA},700004,0000700004,{NAME},{KANA},{},X,{ADDRESS},\n\
         {CHIYODA},700005,0000700005,{NAME},{KANA},{},1,{ADDRESS},{BAD_PERSONAL_NUMBER}\n\
         {CHIYODA},700006,00007,{NAME_2},{KANA_2},{},2,{ADDRESS},\n\
         {CHIYODA},700007,0000700007,{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2}{NAME_2},{KANA_2},{},2,,\n\
         {SHINJUKU},700008,0000700008,{NAME_2},{KANA_2},{},2,{ADDRESS},\n\
         {CHIYODA},700001,0000700009,{NAME},{KANA},{},1,,\n\
         {CHIYODA},700010,0000700010,{NAME},{KANA},,1,{ADDRESS},\n",
        BIRTH[2], BIRTH[3], BIRTH[1], BIRTH[0], BIRTH[0], BIRTH[0]
    )
}

#[test]
fn personal_data_stays_out_of_debug_errors_and_command_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut seen = Collected::default();

    // ---- the command ----------------------------------------------------------------------
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, format!("{HEADER}\n{}{}", good_rows(), bad_rows())).unwrap();
    for json in [false, true] {
        let mut c = vrs(dir);
        if json {
            c.arg("--json");
        }
        let (code, out) = run(c.args(["import", "residents", "--municipality", CHIYODA]).arg(&bad), &mut seen);
        assert_eq!(code, 2, "{out}");
    }
    // Every bad line is reported with its line and column, without the value.
    let (_, out) = run(vrs(dir).args(["--json", "import", "residents", "--municipality", CHIYODA]).arg(&bad), &mut seen);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let errors = report["report"]["errors"].as_array().or_else(|| report["error"]["detail"]["errors"].as_array()).cloned();
    let errors = errors.unwrap_or_else(|| panic!("no bad lines in {out}"));
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    for line in 4..=11 {
        assert!(lines.contains(&line), "line {line} not reported: {out}");
    }
    assert!(errors.iter().all(|e| !e["column"].as_str().unwrap_or_default().is_empty() || e["reason"].as_str().is_some()), "{out}");
    // The good rows, with the bad ones skipped.
    for json in [false, true] {
        let mut c = vrs(dir);
        if json {
            c.arg("--json");
        }
        let (code, out) = run(c.args(["import", "residents", "--municipality", CHIYODA, "--skip-invalid"]).arg(&bad), &mut seen);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("700") || out.contains("line"), "the bad lines are reported: {out}");
        seen.add("the report of an import with skipped rows", out);
    }
    let good = dir.join("good.csv");
    std::fs::write(&good, format!("{HEADER}\n{}", good_rows())).unwrap();
    let (code, out) = run(vrs(dir).args(["--json", "import", "residents", "--municipality", CHIYODA]).arg(&good), &mut seen);
    assert_eq!(code, 0, "{out}");
    // Another municipality's staff, and a site, asking for the residents' doses: denied.
    for who in [&["--as", "staff:131041"][..], &["--account", "tab-1"][..]] {
        let (code, _) = run(vrs(dir).args(["doses", "--municipality", CHIYODA, "--addressee", "700001"]).args(who), &mut seen);
        assert_eq!(code, 1);
        let (code, _) =
            run(vrs(dir).args(["--json", "export", "fhir", "--municipality", CHIYODA, "--out"]).arg(dir.join("x")).args(who), &mut seen);
        assert_eq!(code, 1);
    }
    // An unknown addressee.
    let (code, _) = run(vrs(dir).args(["doses", "--municipality", CHIYODA, "--addressee", "799999"]), &mut seen);
    assert_eq!(code, 1);

    // ---- the registry, in process ---------------------------------------------------------
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store: DynStore = Arc::new(RedbStore::open(dir.join("vrs.redb")).unwrap());
        let clock = Arc::new(FixedClock::new(vrs_cli_now()));
        let registry = Registry::new(store.clone(), clock);
        let chiyoda = MunicipalityCode::parse(CHIYODA).unwrap();
        let staff = Actor::MunicipalStaff { municipality: chiyoda, user: "tester".into() };
        let other = Actor::MunicipalStaff { municipality: MunicipalityCode::parse(SHINJUKU).unwrap(), user: "other".into() };
        let person = PersonRef { municipality: chiyoda, addressee: AddresseeNumber::parse("700001").unwrap() };

        // The same bad file through the core's reader: the report and its error.
        let mut options = ImportOptions::new(chiyoda);
        options.personal_number_secret = SECRET.as_bytes().to_vec();
        seen.debug("import options", &options);
        let source =
            ResidentCsvSource::new(std::io::Cursor::new(format!("{HEADER}\n{}{}", good_rows(), bad_rows()).into_bytes()), options).unwrap();
        seen.debug("a resident CSV source", &source);
        match registry.import_residents(&staff, chiyoda, Box::new(source)).await {
            Err(e) => {
                seen.error("a refused import", &e);
                if let vrs_core::Error::ImportRejected(report) = &e {
                    for row in &report.errors {
                        seen.add("a bad row's reason", row.reason.clone());
                    }
                    seen.debug("an import report", report);
                }
            }
            Ok(o) => panic!("a file with bad rows was applied: {o:?}"),
        }

        let resident = registry.resident(&staff, &person).await.unwrap();
        assert_eq!(resident.name.0, NAME, "the resident was imported");
        seen.debug("a resident", &resident);
        seen.debug("a personal number", &PersonalNumber::parse(PERSONAL_NUMBER).unwrap());
        seen.error("a bad personal number", &PersonalNumber::parse(BAD_PERSONAL_NUMBER).unwrap_err());
        seen.error("another municipality reading a resident", &registry.resident(&other, &person).await.unwrap_err());
        seen.error("another municipality's doses", &registry.doses_of_resident(&other, &person).await.unwrap_err());

        // A site registers doses: matched, a duplicate, a rejected scan, a reused key.
        let site = Site { id: SiteId::parse("venue-1").unwrap(), name: "千代田区民会館".into(), municipality: chiyoda };
        let account = registry.issue_account(&staff, site, AccountId::parse("tab-1").unwrap()).await.unwrap();
        seen.debug("a tablet account", &account);
        let tablet = Actor::Site { account: account.id.clone() };
        let reg = |key: &str, ocr: &str| DoseRegistration {
            ocr_line: ocr.into(),
            dose_number: None,
            date_given: chrono::NaiveDate::from_ymd_opt(2021, 6, 30).unwrap(),
            product: "pfizer".into(),
            lot: "FA5765".into(),
            doctor: "佐藤一郎".into(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            lot_expiry: None,
        };
        let first = registry.register(&tablet, &reg("p-1", "111310160000700001")).await.unwrap();
        seen.debug("a registration outcome", &first);
        let dup = registry.register(&tablet, &reg("p-2", "111310160000700001")).await.unwrap();
        seen.debug("a duplicate's outcome", &dup);
        for f in &dup.findings {
            seen.add("a finding's detail", f.detail.clone());
        }
        seen.error("a reused key", &registry.register(&tablet, &reg("p-1", "111310160000700002")).await.unwrap_err());
        seen.error("a bad check digit", &registry.register(&tablet, &reg("p-3", "111310170000700001")).await.unwrap_err());
        seen.error("a site reading a resident", &registry.resident(&tablet, &person).await.unwrap_err());
        seen.error("a site reading findings", &registry.findings(&tablet, chiyoda, false).await.unwrap_err());
        // Staff correct and void; a correction that changes nothing; a voided dose corrected.
        let id = first.dose.id;
        let changed =
            registry.correct(&staff, id, &DoseCorrection { lot: Some("FA5766".into()), ..Default::default() }, "lot").await.unwrap();
        seen.debug("a correction", &changed);
        seen.error(
            "an empty correction",
            &registry.correct(&staff, id, &DoseCorrection { lot: Some("FA5766".into()), ..Default::default() }, "again").await.unwrap_err(),
        );
        seen.error("another municipality correcting", &registry.void(&other, id, "no").await.unwrap_err());
        registry.void(&staff, id, "wrong person").await.unwrap();
        seen.error("a voided dose corrected", &registry.void(&staff, id, "again").await.unwrap_err());

        // A FHIR Bundle (whose Patient carries the name and birth date) with broken
        // Immunizations, imported by the site: what it is told about each refusal.
        let mut bundle = registry.export_fhir(&staff, chiyoda, Some(&person)).await.unwrap();
        assert!(bundle.to_string().contains(NAME), "the export carries the name, as it should");
        for e in bundle["entry"].as_array_mut().unwrap() {
            if e["resource"]["resourceType"] == "Immunization" {
                e["resource"].as_object_mut().unwrap().remove("occurrenceDateTime");
            }
        }
        match registry.import_fhir(&tablet, &bundle.to_string()).await {
            Ok(report) => {
                for (_, why) in &report.rejected {
                    seen.add("a FHIR entry's refusal", why.clone());
                }
                seen.debug("a FHIR import report", &report);
            }
            Err(e) => seen.error("a broken FHIR Bundle", &e),
        }
        bundle["entry"][0]["resource"]["birthDate"] = serde_json::json!(BAD_BIRTH);
        bundle["type"] = serde_json::json!(NAME);
        if let Err(e) = registry.import_fhir(&tablet, &bundle.to_string()).await {
            seen.error("a FHIR Bundle of the wrong type", &e);
        }
        if let Err(e) = registry.import_fhir(&tablet, &format!("{{\"resourceType\": \"{NAME}\"}}")).await {
            seen.error("a FHIR resource of an unknown type", &e);
        }

        // Everything the registry shows the resident's municipality, as Debug.
        seen.debug("the doses of a resident", &registry.doses_of_resident(&staff, &person).await.unwrap());
        seen.debug("the findings", &registry.findings(&staff, chiyoda, false).await.unwrap());
        let audit = registry.audit(&staff, chiyoda).await.unwrap();
        for e in &audit {
            seen.add("an audit event's detail", e.detail.clone());
        }
        seen.debug("the audit trail", &audit);
        let contexts = store.person_contexts(&[PersonQuery { voucher: resident.voucher_ref(), dose: None }]).await.unwrap();
        seen.debug("a person context", &contexts);
        let mut residents = Vec::new();
        registry
            .scan_residents(&staff, chiyoda, &mut |r| {
                residents.push(r);
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(residents.len(), 2);
        seen.debug("every resident", &residents);
    });

    // The search itself finds what it looks for.
    let mut control = Collected::default();
    control.add("a control text", format!("{NAME} born {}", BIRTH[1]));
    // The name, its fragment 漏洩 and the birth date: three values found.
    let found = control.leaks();
    assert_eq!(found.len(), 3, "{found:?}");
    for value in [NAME, "漏洩", BIRTH[1]] {
        assert!(found.iter().any(|l| l.contains(&format!("shows {value:?}"))), "{value} not found in {found:?}");
    }

    let leaks = seen.leaks();
    assert!(leaks.is_empty(), "{} leaks of personal data in {} texts:\n{}", leaks.len(), seen.0.len(), leaks.join("\n\n"));
    println!(
        "privacy: {} texts (Debug, errors, command output) searched for {} personal values: none found",
        seen.0.len(),
        personal_values().len()
    );
}

/// The instant `VRS_NOW` names.
fn vrs_cli_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(NOW).unwrap().with_timezone(&chrono::Utc)
}
