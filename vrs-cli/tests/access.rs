//! Every `vrs` subcommand, checked against every actor it can act as (issue 7). The
//! subcommands are found by walking the command tree of `vrs --help`, so a new subcommand
//! without a row in the table below fails the test. Each cell runs the command for real on
//! a copy of one prepared store and compares the outcome with the table: allowed (exit 0),
//! denied (exit 1, `permission_denied`), or not nameable (the command has no option that
//! names that kind of actor, which the test checks in the command's help).

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{bin, vrs};

const CHIYODA: &str = "131016";

/// The actors of every row, in this order, and the options that name each.
const ACTORS: [(&str, &[&str]); 7] = [
    ("staff of 千代田区", &["--as", "staff:131016"]),
    ("staff of 新宿区", &["--as", "staff:131041"]),
    ("site in 千代田区", &["--account", "tab-1"]),
    ("revoked site", &["--account", "tab-r"]),
    ("national reader", &["--as", "national"]),
    ("Tokyo reader", &["--as", "prefecture:13"]),
    ("Hokkaido reader", &["--as", "prefecture:01"]),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cell {
    /// Runs (exit 0).
    Y,
    /// Refused: exit 1, `permission_denied`.
    N,
    /// The command cannot name this actor.
    X,
}
use Cell::*;

/// How a subcommand is guarded.
enum Guard {
    /// Run as each actor: `args` (with `{DIR}` and `{DOSE}` filled in), then the actor's
    /// options; the expected outcome per actor.
    Actor(&'static [&'static str], [Cell; 7]),
    /// An operator's tool on its own files or schema, with no actor.
    Operator(&'static str),
}

const STAFF_ONLY: [Cell; 7] = [Y, N, N, N, N, N, N];
const STAFF_ONLY_NO_SITE: [Cell; 7] = [Y, N, X, X, N, N, N];
const STAFF_OR_SITE: [Cell; 7] = [Y, N, Y, N, N, N, N];
const SITE_ONLY: [Cell; 7] = [X, X, Y, N, X, X, X];
const STATS: [Cell; 7] = [Y, N, X, X, Y, Y, N];

fn table() -> Vec<(&'static str, Guard)> {
    use Guard::*;
    vec![
        ("demo", Operator("runs the story on a fresh store of its own (--dir)")),
        ("gen residents", Operator("writes generated test data; reads no store")),
        ("check", Operator("redb's integrity check of the file the operator names")),
        ("migrate", Operator("applies schema migrations to the store the operator names")),
        ("import residents", Actor(&["import", "residents", "{DIR}/more.csv", "--municipality", CHIYODA], STAFF_ONLY_NO_SITE)),
        ("import fhir", Actor(&["import", "fhir", "{DIR}/bundle.json"], SITE_ONLY)),
        (
            "register",
            Actor(
                &[
                    "register",
                    "--ocr",
                    "111310160000000002",
                    "--date",
                    "2021-06-30",
                    "--product",
                    "pfizer",
                    "--lot",
                    "FA5765",
                    "--doctor",
                    "佐藤",
                ],
                SITE_ONLY,
            ),
        ),
        ("reconcile", Actor(&["reconcile", "--municipality", CHIYODA], STAFF_ONLY)),
        ("findings", Actor(&["findings", "--municipality", CHIYODA], STAFF_ONLY)),
        ("correct", Actor(&["correct", "{DOSE}", "--municipality", CHIYODA, "--lot", "FA5766", "--reason", "lot misread"], STAFF_OR_SITE)),
        ("void", Actor(&["void", "{DOSE}", "--municipality", CHIYODA, "--reason", "wrong person"], STAFF_OR_SITE)),
        ("doses", Actor(&["doses", "--municipality", CHIYODA, "--addressee", "1"], STAFF_ONLY)),
        (
            "accounts issue",
            Actor(
                &[
                    "accounts",
                    "issue",
                    "--municipality",
                    CHIYODA,
                    "--account",
                    "tab-new",
                    "--site-id",
                    "venue-2",
                    "--site-name",
                    "千代田区役所",
                ],
                STAFF_ONLY_NO_SITE,
            ),
        ),
        ("accounts revoke", Actor(&["accounts", "revoke", "--municipality", CHIYODA, "--account", "tab-1"], STAFF_ONLY_NO_SITE)),
        (
            "accounts renew-secret",
            Actor(&["accounts", "renew-secret", "--municipality", CHIYODA, "--account", "tab-1"], STAFF_ONLY_NO_SITE),
        ),
        ("accounts list", Actor(&["accounts", "list", "--municipality", CHIYODA], STAFF_ONLY_NO_SITE)),
        ("export ledger", Actor(&["export", "ledger", "--municipality", CHIYODA, "--out", "{DIR}/out.csv"], STAFF_ONLY)),
        ("export unmatched", Actor(&["export", "unmatched", "--municipality", CHIYODA, "--out", "{DIR}/out.csv"], STAFF_ONLY)),
        ("export stats", Actor(&["export", "stats", "--municipality", CHIYODA], STATS)),
        ("export fhir", Actor(&["export", "fhir", "--municipality", CHIYODA, "--out", "{DIR}/out.json"], STAFF_ONLY)),
        ("export hl7", Actor(&["export", "hl7", "--municipality", CHIYODA, "--out", "{DIR}/out.hl7"], STAFF_ONLY)),
        ("export opendata", Actor(&["export", "opendata", "--municipality", CHIYODA, "--out-dir", "{DIR}/open"], STATS)),
        ("export changes", Actor(&["export", "changes", "--municipality", CHIYODA, "--out", "{DIR}/out.csv"], STAFF_ONLY)),
        // The batch of the acting site's own account (see `batch_for`).
        ("sync apply", Actor(&["sync", "apply", "{DIR}/batch.json"], SITE_ONLY)),
    ]
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{c:?}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The leaf subcommands of `vrs`, from the help of each level.
fn subcommands(path: &[String]) -> Vec<String> {
    let help = ok(bin().args(path).arg("--help"));
    let mut children = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
        } else if inside && line.trim().is_empty() {
            break;
        } else if inside
            && let Some(name) = line.split_whitespace().next()
            && name != "help"
        {
            children.push(name.to_owned());
        }
    }
    if children.is_empty() {
        return vec![path.join(" ")];
    }
    children
        .into_iter()
        .flat_map(|c| {
            let mut p = path.to_vec();
            p.push(c);
            subcommands(&p)
        })
        .collect()
}

/// The prepared store: residents of 千代田区, a tablet account `tab-1` with one dose
/// registered today, a revoked account `tab-r`, a FHIR Bundle and a second upload file.
/// Returns the dose id and the two accounts' secrets.
fn prepare(dir: &Path) -> (String, String, String) {
    let csv = dir.join("residents.csv");
    std::fs::write(&csv, "宛名番号,券番号,氏名,氏名カナ,生年月日,性別\n1,0000000001,接種太郎,セッシュタロウ,1950-04-01,1\n2,0000000002,接種花子,セッシュハナコ,1980-05-03,2\n")
        .unwrap();
    std::fs::write(
        dir.join("more.csv"),
        "宛名番号,券番号,氏名,氏名カナ,生年月日,性別\n3,0000000003,接種次郎,セッシュジロウ,1960-01-01,1\n",
    )
    .unwrap();
    ok(vrs(dir).args(["import", "residents", "--municipality", CHIYODA]).arg(&csv));
    let issue = |id: &str| -> String {
        let v: Value = serde_json::from_str(&ok(vrs(dir)
            .args(["--json", "accounts", "issue", "--municipality", CHIYODA, "--account", id])
            .args(["--site-id", "venue-1", "--site-name", "千代田区民会館"])))
        .unwrap();
        v["secret"].as_str().unwrap().to_owned()
    };
    let (secret, revoked) = (issue("tab-1"), issue("tab-r"));
    ok(vrs(dir).args(["accounts", "revoke", "--municipality", CHIYODA, "--account", "tab-r"]));
    let out = ok(vrs(dir)
        .env("VRS_ACCOUNT_SECRET", &secret)
        .args(["--json", "register", "--account", "tab-1", "--ocr", "111310160000000001", "--date", "2021-06-30"])
        .args(["--product", "pfizer", "--lot", "FA5765", "--doctor", "佐藤"]));
    let dose = serde_json::from_str::<Value>(&out).unwrap()["dose_id"].as_str().unwrap().to_owned();
    ok(vrs(dir).args(["export", "fhir", "--municipality", CHIYODA, "--out"]).arg(dir.join("bundle.json")));
    (dose, secret, revoked)
}

/// A sync batch of `account` registering one dose.
fn batch_for(account: &str) -> String {
    serde_json::json!({
        "format": "vrs.sync.batch", "version": 1, "batch_id": format!("{account}.b1"), "account": account,
        "produced_at": "2021-07-01T00:50:00Z",
        "entries": [{ "entry_id": format!("{account}.9"), "recorded_at": "2021-07-01T00:30:00Z", "kind": "register",
            "registration": { "ocr_line": "111310160000000002", "dose_number": null, "date_given": "2021-06-30",
                "product": "pfizer", "lot": "FA5765", "doctor": "佐藤", "idempotency_key": format!("{account}.9"), "lot_expiry": null } }]
    })
    .to_string()
}

#[test]
fn every_subcommand_is_checked_against_the_actor() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    let (dose, secret, revoked_secret) = prepare(&base);

    let table = table();
    let rows: BTreeSet<String> = table.iter().map(|(c, _)| (*c).to_owned()).collect();
    assert_eq!(rows.len(), table.len(), "a subcommand is in the table twice");
    let commands: BTreeSet<String> = subcommands(&[]).into_iter().collect();
    let missing: Vec<&String> = commands.difference(&rows).collect();
    let stale: Vec<&String> = rows.difference(&commands).collect();
    assert!(missing.is_empty(), "vrs subcommands without a row in the access table: {missing:?}");
    assert!(stale.is_empty(), "rows for subcommands that no longer exist: {stale:?}");

    let mut failures = Vec::new();
    let mut cells = 0;
    for (name, guard) in &table {
        let Guard::Actor(args, expected) = guard else { continue };
        let help = ok(bin().args(name.split(' ')).arg("--help"));
        for (who, ((actor_name, actor_args), expected)) in ACTORS.iter().zip(expected).enumerate() {
            cells += 1;
            let site = actor_args[0] == "--account";
            let is_sync = *name == "sync apply";
            // `accounts ...` take `--account` for the account administered, not as the actor.
            let nameable = if is_sync {
                site
            } else if site && name.starts_with("accounts ") {
                false
            } else {
                help.contains(&format!("{} <", actor_args[0]))
            };
            if *expected == X {
                if nameable {
                    failures.push(format!("{name} as {actor_name}: the table says it cannot be named, but the command can"));
                }
                continue;
            }
            if !nameable {
                failures.push(format!("{name} as {actor_name}: the command has no {} option", actor_args[0]));
                continue;
            }
            // A fresh copy of the prepared store for every cell.
            let dir: PathBuf = tmp.path().join(format!("cell-{cells}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["vrs.redb", "bundle.json", "more.csv"] {
                std::fs::copy(base.join(f), dir.join(f)).unwrap();
            }
            let mut c = vrs(&dir);
            c.arg("--json");
            let filled: Vec<String> = args.iter().map(|a| a.replace("{DIR}", &dir.to_string_lossy()).replace("{DOSE}", &dose)).collect();
            c.args(&filled);
            if site {
                c.env("VRS_ACCOUNT_SECRET", if who == 3 { &revoked_secret } else { &secret });
            }
            if is_sync {
                std::fs::write(dir.join("batch.json"), batch_for(actor_args[1])).unwrap();
            } else {
                // `--account` of `accounts ...` names the account administered, so staff and
                // readers are named with `--as` there; the table's site cells are X.
                c.args(*actor_args);
            }
            let out = c.output().unwrap();
            let code = out.status.code().unwrap_or(-1);
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let kind = serde_json::from_str::<Value>(&stdout).ok().and_then(|v| v["error"]["kind"].as_str().map(str::to_owned));
            let got = match (code, kind.as_deref()) {
                (0, _) => Y,
                (1, Some("permission_denied")) => N,
                _ => {
                    failures.push(format!("{name} as {actor_name}: exit {code}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
                    continue;
                }
            };
            if got != *expected {
                failures.push(format!("{name} as {actor_name}: expected {expected:?}, got {got:?}: {stdout}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cells} cells wrong:\n{}", failures.len(), failures.join("\n"));
    let operators = table.iter().filter(|(_, g)| matches!(g, Guard::Operator(_))).count();
    for (name, guard) in &table {
        if let Guard::Operator(why) = guard {
            println!("  {name}: no actor ({why})");
        }
    }
    println!(
        "access table: {} vrs subcommands, {} checked against the actor ({cells} cells), {operators} operator tools",
        table.len(),
        table.len() - operators
    );
}
