//! Every public operation of the service, checked against every kind of actor, for real
//! on a redb store (issue 7). The table below holds, for each public method of
//! `vrs_core::service::Registry` (wherever its `impl Registry` block lives), the access
//! operation it is checked as and whether each of seven actors may call it. The list of
//! methods is read from vrs-core's sources, so a new public method without a row here
//! fails the test; so does a row whose actors are not treated as the table says.

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use vrs_core::Error;
use vrs_core::access::{Actor, Operation, Site, StatsScope};
use vrs_core::dose::DoseCorrection;
use vrs_core::ids::{AccountId, AddresseeNumber, DoseId, PersonRef, SiteId};
use vrs_core::ledger::LedgerOptions;
use vrs_core::service::Registry;
use vrs_core::stats::StatsQuery;
use vrs_core::store::DynStore;
use vrs_core::sync::{SyncBatch, SyncEntry};
use vrs_core::testing_service::{CHIYODA, SHINJUKU, TestEntropy, VecSource, code, registration, resident, setup, site_actor, staff};
use vrs_store_redb::RedbStore;

/// The actors of every row, in this order.
const ACTORS: [&str; 7] =
    ["staff of 千代田区", "staff of 新宿区", "site in 千代田区", "revoked site", "national reader", "Tokyo reader", "Hokkaido reader"];

fn actor(i: usize) -> Actor {
    match i {
        0 => staff(CHIYODA),
        1 => staff(SHINJUKU),
        2 => site_actor("venue"),
        3 => site_actor("revoked"),
        4 => Actor::StatisticsReader { scope: StatsScope::National },
        5 => Actor::StatisticsReader { scope: StatsScope::Prefecture(13) },
        _ => Actor::StatisticsReader { scope: StatsScope::Prefecture(1) },
    }
}

/// How a public method is guarded.
enum Guard {
    /// Checked against the actor as `Operation`; `[bool; 7]` says who may (see [`ACTORS`]).
    Actor(Operation, [bool; 7]),
    /// Takes no actor: checked against the account's secret instead.
    Secret,
    /// Touches no resident or dose data (construction, configuration, the clock).
    NoData(&'static str),
    /// Gives data without an actor check: the embedding process's own handle.
    Unchecked(&'static str),
}

const Y: bool = true;
const N: bool = false;
const STAFF_ONLY: [bool; 7] = [Y, N, N, N, N, N, N];
const SITE_ONLY: [bool; 7] = [N, N, Y, N, N, N, N];
const STAFF_OR_SITE: [bool; 7] = [Y, N, Y, N, N, N, N];
const STATS: [bool; 7] = [Y, N, N, N, Y, Y, N];

/// The table: every public method of `Registry`.
fn table() -> Vec<(&'static str, Guard)> {
    use Guard::*;
    use Operation::*;
    vec![
        ("new", NoData("builds a registry on a store the caller already holds")),
        ("with_catalogue", NoData("replaces the vaccine catalogue")),
        ("catalogue", NoData("the vaccine catalogue")),
        ("now", NoData("the registry's clock")),
        (
            "store",
            Unchecked(
                "the store handle, for the process embedding the registry (which opened that store and holds it anyway); \
                 frontends never hand it to an actor",
            ),
        ),
        ("register", Actor(RegisterDose, SITE_ONLY)),
        ("register_batch", Actor(RegisterDose, SITE_ONLY)),
        ("correct", Actor(CorrectDose, STAFF_OR_SITE)),
        ("void", Actor(VoidDose, STAFF_OR_SITE)),
        ("import_residents", Actor(UploadResidents, STAFF_ONLY)),
        ("reconcile", Actor(Reconcile, STAFF_ONLY)),
        ("scan_residents", Actor(ReadResidents, STAFF_ONLY)),
        ("scan_doses", Actor(ExportLedger, STAFF_ONLY)),
        ("scan_resident_columns", Actor(ReadResidents, STAFF_ONLY)),
        ("scan_dose_columns", Actor(ExportLedger, STAFF_ONLY)),
        ("resident", Actor(ReadResidents, STAFF_ONLY)),
        ("doses_of_resident", Actor(ReadResidents, STAFF_ONLY)),
        ("dose", Actor(ReadDose, STAFF_OR_SITE)),
        ("todays_doses", Actor(ReadDose, SITE_ONLY)),
        ("findings", Actor(ReadFindings, STAFF_ONLY)),
        ("unmatched", Actor(ExportUnmatched, STAFF_ONLY)),
        ("issue_account", Actor(IssueAccount, STAFF_ONLY)),
        ("issue_account_with_secret", Actor(IssueAccount, STAFF_ONLY)),
        ("renew_account_secret", Actor(IssueAccount, STAFF_ONLY)),
        ("revoke_account", Actor(RevokeAccount, STAFF_ONLY)),
        ("accounts", Actor(ReadAccounts, STAFF_ONLY)),
        ("statistics", Actor(ReadStatistics, STATS)),
        ("audit", Actor(ReadFindings, STAFF_ONLY)),
        ("export_ledger", Actor(ExportLedger, STAFF_ONLY)),
        ("export_unmatched", Actor(ExportUnmatched, STAFF_ONLY)),
        ("persons_with_doses", Actor(ExportLedger, STAFF_ONLY)),
        ("export_fhir", Actor(ExportLedger, STAFF_ONLY)),
        ("export_hl7", Actor(ExportLedger, STAFF_ONLY)),
        ("export_ledger_changes", Actor(ExportLedger, STAFF_ONLY)),
        ("export_opendata", Actor(ReadStatistics, STATS)),
        ("import_fhir", Actor(RegisterDose, SITE_ONLY)),
        ("apply_sync_batch", Actor(RegisterDose, SITE_ONLY)),
        ("authenticate", Secret),
    ]
}

/// The public methods of every `impl Registry` block in vrs-core's sources.
fn public_methods() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vrs-core/src");
    let mut files = vec![src.clone()];
    let mut names = BTreeSet::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("impl Registry") {
                inside = true;
            } else if inside && line.starts_with('}') {
                inside = false;
            } else if inside {
                let l = line.trim_start();
                let indent = line.len() - l.len();
                for prefix in ["pub async fn ", "pub fn "] {
                    if indent == 4
                        && let Some(rest) = l.strip_prefix(prefix)
                    {
                        names.insert(rest.split(['(', '<']).next().unwrap().to_owned());
                    }
                }
            }
        }
    }
    assert!(names.len() > 20, "the parser found only {names:?}");
    names
}

/// A registry with two sites' accounts (`venue` in 千代田区, `clinic` in 新宿区), a revoked
/// account `revoked` of the same venue, residents of 千代田区 and one dose registered by
/// `venue` today; returns the dose id.
async fn fixture() -> (Registry, DoseId) {
    let store: DynStore = std::sync::Arc::new(RedbStore::in_memory().unwrap());
    let (registry, _clock) = setup(store).await;
    let venue = Site { id: SiteId::parse("venue-1").unwrap(), name: "千代田区民会館".into(), municipality: code(CHIYODA) };
    let revoked = AccountId::parse("revoked").unwrap();
    registry.issue_account(&staff(CHIYODA), venue, revoked.clone()).await.unwrap();
    registry.revoke_account(&staff(CHIYODA), &revoked).await.unwrap();
    let dose = registry
        .register(&site_actor("venue"), &registration("fixture-1", 1, CHIYODA, "0000000001", "2021-06-30", "pfizer", "FA5765"))
        .await;
    (registry, dose.unwrap().dose.id)
}

/// Calls `method` as `who` with the arguments the table's row assumes; `Ok` when the call
/// went through, the error when not.
async fn call(method: &str, who: usize) -> Result<(), Error> {
    let (r, dose) = fixture().await;
    let a = actor(who);
    let chiyoda = code(CHIYODA);
    let person = PersonRef { municipality: chiyoda, addressee: AddresseeNumber::parse("1").unwrap() };
    let options = LedgerOptions::default();
    let mut sink: Vec<u8> = Vec::new();
    let new_site = || Site { id: SiteId::parse("venue-2").unwrap(), name: "千代田区役所".into(), municipality: chiyoda };
    // A site's own account, or the venue's for actors that have none.
    let own_account = match &a {
        Actor::Site { account } => account.clone(),
        _ => AccountId::parse("venue").unwrap(),
    };
    let reg = || registration("call-1", 1, CHIYODA, "0000000002", "2021-06-30", "pfizer", "FA5765");
    match method {
        "register" => r.register(&a, &reg()).await.map(drop),
        "register_batch" => r.register_batch(&a, &[reg()]).await.map(drop),
        "correct" => {
            r.correct(&a, dose, &DoseCorrection { lot: Some("FA5766".into()), ..Default::default() }, "lot misread").await.map(drop)
        }
        "void" => r.void(&a, dose, "wrong person").await.map(drop),
        "import_residents" => {
            r.import_residents(&a, chiyoda, VecSource::new(vec![resident(CHIYODA, "9", "0000000009", "1960-01-01")], true)).await.map(drop)
        }
        "reconcile" => r.reconcile(&a, chiyoda).await.map(drop),
        "scan_residents" => r.scan_residents(&a, chiyoda, &mut |_| Ok(())).await,
        "scan_doses" => r.scan_doses(&a, chiyoda, None, &mut |_| Ok(())).await.map(drop),
        "scan_resident_columns" => r.scan_resident_columns(&a, chiyoda, 1024, &mut |_| Ok(())).await,
        "scan_dose_columns" => r.scan_dose_columns(&a, chiyoda, None, 1024, &mut |_| Ok(())).await.map(drop),
        "resident" => r.resident(&a, &person).await.map(drop),
        "doses_of_resident" => r.doses_of_resident(&a, &person).await.map(drop),
        "dose" => r.dose(&a, dose).await.map(drop),
        "todays_doses" => r.todays_doses(&a).await.map(drop),
        "findings" => r.findings(&a, chiyoda, false).await.map(drop),
        "unmatched" => r.unmatched(&a, chiyoda).await.map(drop),
        "issue_account" => r.issue_account(&a, new_site(), AccountId::parse("tab-new").unwrap()).await.map(drop),
        "issue_account_with_secret" => {
            r.issue_account_with_secret(&a, new_site(), AccountId::parse("tab-new").unwrap(), &mut TestEntropy(3)).await.map(drop)
        }
        "renew_account_secret" => r.renew_account_secret(&a, &AccountId::parse("venue").unwrap(), &mut TestEntropy(4)).await.map(drop),
        "revoke_account" => r.revoke_account(&a, &AccountId::parse("venue").unwrap()).await.map(drop),
        "accounts" => r.accounts(&a, chiyoda).await.map(drop),
        "statistics" => r.statistics(&a, StatsQuery::Municipality(chiyoda)).await.map(drop),
        "audit" => r.audit(&a, chiyoda).await.map(drop),
        "export_ledger" => r.export_ledger(&a, chiyoda, &options, &mut sink).await.map(drop),
        "export_unmatched" => r.export_unmatched(&a, chiyoda, &options, &mut sink).await.map(drop),
        "persons_with_doses" => r.persons_with_doses(&a, chiyoda, None).await.map(drop),
        "export_fhir" => r.export_fhir(&a, chiyoda, Some(&person)).await.map(drop),
        "export_hl7" => r.export_hl7(&a, chiyoda, None, &mut sink).await.map(drop),
        "export_ledger_changes" => r.export_ledger_changes(&a, chiyoda, 0, &options, &mut sink).await.map(drop),
        "export_opendata" => r.export_opendata(&a, StatsQuery::Municipality(chiyoda), 0).await.map(drop),
        "import_fhir" => {
            // A Bundle of the fixture's dose, as staff exported it.
            let bundle = r.export_fhir(&staff(CHIYODA), chiyoda, Some(&person)).await.unwrap().to_string();
            let report = r.import_fhir(&a, &bundle).await?;
            match report.rejected.first() {
                // The Bundle's entries were refused one by one: the error is the refusal.
                Some((_, why)) if why.contains("permission denied") => {
                    Err(Error::PermissionDenied { actor: a.to_string(), operation: Operation::RegisterDose, reason: why.clone() })
                }
                _ => Ok(()),
            }
        }
        "apply_sync_batch" => {
            let at = r.now();
            let batch = SyncBatch::new("b-1", own_account, at, vec![SyncEntry::register(reg(), at)]);
            r.apply_sync_batch(&a, &batch).await.map(drop)
        }
        other => panic!("no call for {other}: add one with the arguments of its row"),
    }
}

#[tokio::test]
async fn every_public_operation_of_the_service_is_checked_against_the_actor() {
    let table = table();
    let rows: BTreeSet<String> = table.iter().map(|(m, _)| (*m).to_owned()).collect();
    assert_eq!(rows.len(), table.len(), "a method is in the table twice");
    let methods = public_methods();
    let missing: Vec<&String> = methods.difference(&rows).collect();
    let stale: Vec<&String> = rows.difference(&methods).collect();
    assert!(missing.is_empty(), "public Registry methods without a row in the access table: {missing:?}");
    assert!(stale.is_empty(), "rows for methods that no longer exist: {stale:?}");
    // Every access operation guards at least one method (SignIn guards `authenticate`;
    // LookupMovedIn is the second check of `doses_of_resident`, for a moved-in resident).
    assert!(rows.contains("doses_of_resident") && rows.contains("authenticate"));
    for op in Operation::ALL {
        let used = table.iter().any(|(_, g)| matches!(g, Guard::Actor(o, _) if *o == op))
            || matches!(op, Operation::SignIn | Operation::LookupMovedIn);
        assert!(used, "{op:?} guards no public method");
    }

    let mut failures = Vec::new();
    let mut cells = 0;
    for (method, guard) in &table {
        let Guard::Actor(op, allowed) = guard else { continue };
        for (who, allowed) in allowed.iter().enumerate() {
            cells += 1;
            let got = call(method, who).await;
            let ok = match (allowed, &got) {
                (true, Ok(())) => true,
                (false, Err(Error::PermissionDenied { operation, .. })) => {
                    // The refusal names an operation; a registration-shaped call may be refused
                    // as the account's sign-in or registration before it reaches its own.
                    *operation == *op || matches!(operation, Operation::RegisterDose | Operation::SignIn)
                }
                _ => false,
            };
            if !ok {
                failures.push(format!("{method} as {}: expected allowed={allowed}, got {got:?}", ACTORS[who]));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {cells} cells wrong:\n{}", failures.len(), failures.join("\n"));

    // Sign-in: the secret decides, for an existing, unknown or revoked account alike.
    let (r, _) = fixture().await;
    let site = Site { id: SiteId::parse("venue-3").unwrap(), name: "千代田区民会館".into(), municipality: code(CHIYODA) };
    let issued = r.issue_account_with_secret(&staff(CHIYODA), site, AccountId::parse("tab-s").unwrap(), &mut TestEntropy(9)).await.unwrap();
    assert_eq!(r.authenticate(&issued.account.id, issued.secret.reveal()).await.unwrap(), site_actor("tab-s"));
    for (id, secret) in [("tab-s", "0"), ("venue", issued.secret.reveal()), ("revoked", issued.secret.reveal()), ("none", "0")] {
        let got = r.authenticate(&AccountId::parse(id).unwrap(), secret).await;
        assert!(matches!(got, Err(Error::PermissionDenied { operation: Operation::SignIn, .. })), "{id}: {got:?}");
    }
    let actor_rows = table.iter().filter(|(_, g)| matches!(g, Guard::Actor(..))).count();
    for (method, guard) in &table {
        match guard {
            Guard::NoData(why) => println!("  {method}: no data ({why})"),
            Guard::Unchecked(why) => println!("  {method}: NOT checked ({why})"),
            _ => {}
        }
    }
    println!(
        "access table: {} public Registry methods, {actor_rows} checked against the actor ({cells} actor x method cells run), \
         1 against a secret, {} without data, {} unchecked",
        table.len(),
        table.iter().filter(|(_, g)| matches!(g, Guard::NoData(_))).count(),
        table.iter().filter(|(_, g)| matches!(g, Guard::Unchecked(_))).count()
    );
}
