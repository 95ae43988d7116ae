//! The ledger export's bytes, pinned: a generated municipality (corrections, voids,
//! duplicates, unmatched doses, residents who moved in with doses registered elsewhere,
//! texts that need quoting) exported in full and as a delta, UTF-8 and Shift_JIS, must
//! equal the files in `tests/data/` that the export wrote before its rewrite for speed
//! (issue 2). `VRS_BLESS=1` rewrites them, for a deliberate change of the format only.

// A test crate: helpers outside `#[test]` functions may panic too.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use vrs_core::dose::DoseRecord;
use vrs_core::ledger::{LedgerOptions, OutputEncoding};
use vrs_core::resident::Resident;
use vrs_core::service::{FixedClock, Registry};
use vrs_core::stats::{key_for, merge_deltas};
use vrs_core::store::{ChangeSet, DynStore};
use vrs_core::testing::{code, dose, import, moved_in, next_revision, resident, voucher};
use vrs_core::testing_service::staff;
use vrs_store_redb::RedbStore;

const HERE: &str = "131016"; // 千代田区: the exporting municipality
const BEFORE: &str = "131041"; // 新宿区: where some residents lived before
const OTHER: &str = "271004"; // 大阪市: administers some doses

/// A small deterministic generator (xorshift), so the data are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const SITES: [&str; 5] = ["千代田区民会館", "新宿クリニック, 本院", "\"中央\"接種会場", "会場\n二階", "Venue A"];
const DOCTORS: [&str; 4] = ["佐藤一郎", "鈴木 花子", "高橋,次郎", "Dr. \"Smith\""];
const MAKERS: [&str; 3] = ["ファイザー", "武田/モデルナ", "アストラゼネカ"];

/// A dose of `v` with generated details, matched to `matched` (or waiting).
fn generated(rng: &mut Rng, key: &str, v: vrs_core::ids::VoucherRef, dose_number: u8, matched: Option<&Resident>) -> DoseRecord {
    let base = Utc.with_ymd_and_hms(2021, 4, 12, 0, 0, 0).unwrap();
    // Any second of three years, some with a fraction of a second; 15:00 UTC and later
    // is the next day in Japan.
    let registered: DateTime<Utc> =
        base + Duration::seconds(rng.below(3 * 365 * 86_400) as i64) + Duration::milliseconds(rng.below(2) as i64 * 250);
    let mut d = dose(key, v, dose_number, "2021-04-12T00:00:00Z", "venue-1");
    d.registered_at = registered;
    d.matched = matched.map(|r| r.person.clone());
    let det = &mut d.versions[0].details;
    det.date_given = registered.date_naive() - Duration::days(rng.below(3) as i64);
    det.administering_municipality = code(if rng.below(4) == 0 { OTHER } else { HERE });
    det.site_name = rng.pick(&SITES).into();
    det.doctor = rng.pick(&DOCTORS).into();
    det.maker = rng.pick(&MAKERS).into();
    det.lot = format!("FA{:04}", rng.below(10_000));
    d
}

/// A correction (new version) or a void of a stored dose.
fn changed(rng: &mut Rng, stored: &DoseRecord) -> DoseRecord {
    let void = rng.below(3) == 0;
    let lot = format!("EY{:04}", rng.below(10_000));
    let renumber = rng.below(4) == 0;
    next_revision(stored, |d| {
        let mut v = d.current().clone();
        v.version += 1;
        v.reason = Some("誤記, \"訂正\"".into());
        if void {
            v.voided = true;
        } else {
            v.details.lot = lot;
            if renumber {
                v.details.dose_number = v.details.dose_number % 5 + 1;
            }
        }
        d.versions.push(v);
    })
}

/// Stores `doses` with the statistics counters their active versions make.
async fn store_doses(store: &DynStore, doses: Vec<DoseRecord>, residents: &[Resident]) {
    let resident_of = |d: &DoseRecord| d.matched.as_ref().and_then(|p| residents.iter().find(|r| &r.person == p));
    let counters = merge_deltas(doses.iter().filter(|d| !d.is_voided()).filter_map(|d| key_for(d, resident_of(d))).map(|k| (k, 1)));
    store.apply(vec![ChangeSet { new_doses: doses, counters, ..ChangeSet::default() }]).await.unwrap();
}

struct Scenario {
    store: DynStore,
    registry: Registry,
    /// Doses stored, to correct for the delta.
    doses: Vec<DoseRecord>,
    residents: Vec<Resident>,
}

/// 120 residents here (some moved in from 新宿区, whose residents there got doses), 0–4
/// doses each, duplicates, out-of-range dose numbers, doses waiting for their resident,
/// corrections and voids.
async fn scenario() -> Scenario {
    let store: DynStore = Arc::new(RedbStore::in_memory().unwrap());
    let mut rng = Rng(0x5EED_1234_ABCD_0042);
    let mut here = Vec::new();
    let mut before = Vec::new();
    for i in 0..120u64 {
        // Addressee numbers of 1 to 15 digits, some with leading zeros.
        let addressee = match i % 4 {
            0 => format!("{}", i + 1),
            1 => format!("{:06}", i * 7),
            2 => format!("{:015}", i * 1_000_003),
            _ => format!("8{i}"),
        };
        let number = format!("{:010}", 1_000 + rng.below(9_000_000));
        if i % 6 == 0 {
            let prev = format!("{:010}", 5_000_000_000 + i);
            before.push(resident(BEFORE, &format!("{}", 700 + i), &prev));
            here.push(moved_in(HERE, &addressee, &number, voucher(BEFORE, &prev)));
        } else {
            here.push(resident(HERE, &addressee, &number));
        }
    }
    // Voucher numbers are random: drop the rare repeat.
    here.sort_by_key(|r| r.voucher);
    here.dedup_by(|a, b| a.voucher == b.voucher);
    import(&store, here.clone(), here.len() as u64, 0).await;
    import(&store, before.clone(), before.len() as u64, 0).await;
    let residents: Vec<Resident> = here.iter().chain(&before).cloned().collect();

    let mut doses = Vec::new();
    let mut key = 0;
    let mut next_key = || {
        key += 1;
        format!("gen-{key}")
    };
    for r in &here {
        for _ in 0..rng.below(5) {
            let n = rng.below(6) as u8; // 0..=5: 0 has no block
            doses.push(generated(&mut rng, &next_key(), voucher(HERE, r.voucher.as_str()), n, Some(r)));
        }
    }
    for r in &before {
        // Doses registered at 新宿区 before the move; one moved person with none there.
        for n in 1..=rng.below(3) as u8 {
            doses.push(generated(&mut rng, &next_key(), voucher(BEFORE, r.voucher.as_str()), n, Some(r)));
        }
    }
    for i in 0..8u64 {
        // Waiting for their resident (never in the ledger).
        doses.push(generated(&mut rng, &next_key(), voucher(HERE, &format!("{:010}", 9_900_000_000 + i)), 1, None));
    }
    // Corrections and voids of about a fifth of the doses.
    let mut stored = Vec::new();
    for d in doses {
        stored.push(if rng.below(5) == 0 { changed(&mut rng, &d) } else { d });
    }
    store_doses(&store, stored.clone(), &residents).await;
    let clock = Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap()));
    let registry = Registry::new(store.clone(), clock);
    Scenario { store, registry, doses: stored, residents }
}

async fn export(s: &Scenario, m: &str, encoding: OutputEncoding, since: Option<u64>, no_header: bool) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    let e = s.registry.export_ledger(&staff(m), code(m), &LedgerOptions { encoding, since, no_header }, &mut out).await.unwrap();
    (out, e.cursor)
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// Compares `bytes` with the pinned file `name` (or rewrites it under `VRS_BLESS=1`).
fn pinned(name: &str, bytes: &[u8]) {
    let path = data(name);
    if std::env::var_os("VRS_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if bytes != expected.as_slice() {
        let first = bytes.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(bytes.len().min(expected.len()));
        let line = expected[..first].iter().filter(|b| **b == b'\n').count() + 1;
        panic!(
            "{name}: the export differs from the pinned bytes from line {line} (byte {first}; {} vs {} bytes)",
            bytes.len(),
            expected.len()
        );
    }
}

#[tokio::test]
async fn ledger_exports_equal_the_pinned_bytes() {
    let s = scenario().await;
    let (full, cursor) = export(&s, HERE, OutputEncoding::Utf8, None, false).await;
    let text = String::from_utf8(full.clone()).unwrap();
    // The scenario reaches what it is for: quoted texts, moved-in rows, several blocks.
    assert!(text.contains("\"新宿クリニック, 本院\"") && text.contains("\"\"\"中央\"\"接種会場\"") && text.contains("会場\n二階"));
    assert!(text.contains(",5000000000,") || text.contains(",5000000006,"), "a dose registered before the move");
    assert!(text.lines().next().unwrap().contains("5回目ワクチンロット番号"));
    pinned("ledger-full.csv", &full);
    pinned("ledger-full.sjis.csv", &export(&s, HERE, OutputEncoding::ShiftJis, None, false).await.0);
    pinned("ledger-full-no-header.csv", &export(&s, HERE, OutputEncoding::Utf8, None, true).await.0);
    pinned("ledger-before.csv", &export(&s, BEFORE, OutputEncoding::Utf8, None, false).await.0);

    // A delta: corrections of some stored doses (here and before the move) and new doses.
    let mut rng = Rng(0xDE17A);
    let mut updated = Vec::new();
    for d in &s.doses {
        if rng.below(9) == 0 {
            updated.push(changed(&mut rng, d));
        }
    }
    assert!(updated.iter().any(|d| d.voucher.municipality == code(BEFORE)));
    s.store.apply(vec![ChangeSet { updated_doses: updated, ..ChangeSet::default() }]).await.unwrap();
    let moved = s.residents.iter().find(|r| r.previous.is_some()).unwrap();
    let fresh = vec![generated(&mut rng, "delta-1", voucher(HERE, moved.voucher.as_str()), 2, Some(moved))];
    store_doses(&s.store, fresh, &s.residents).await;
    let (delta, _) = export(&s, HERE, OutputEncoding::Utf8, Some(cursor), false).await;
    pinned("ledger-delta.csv", &delta);
    pinned("ledger-delta.sjis.csv", &export(&s, HERE, OutputEncoding::ShiftJis, Some(cursor), false).await.0);
    pinned("ledger-after-delta.csv", &export(&s, HERE, OutputEncoding::Utf8, None, false).await.0);
}
