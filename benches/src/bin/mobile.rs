//! Benchmarks of the tablet side, each beside a baseline measured in the same run:
//! `parse_voucher` on noisy camera text (lines/s) against the strict `OcrLine::parse` of the
//! same lines written cleanly, and a sync batch of doses applied to redb
//! (`Registry::apply_sync_batch`, doses/s) against the same registrations through
//! `register_batch` in chunks of 500 on a twin store.
//!
//! `VRS_BENCH_SCALE=smoke` runs in seconds (the test script does); the default `full` uses the
//! issue's sizes: 1,000,000 noisy lines and a batch of 10,000 doses. Targets (issue 5):
//! parsing at least 1,000,000 lines/s, batch apply at least 50,000 doses/s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use vrs_benches::{Scale, note, report, report_absolute, timed, timed_cpu};
use vrs_core::access::{Actor, Site};
use vrs_core::dose::DoseRegistration;
use vrs_core::generate::{GenOptions, HeaderLanguage, ResidentGenerator, write_residents_csv};
use vrs_core::ids::{AccountId, IdempotencyKey, MunicipalityCode, OcrLine, SiteId};
use vrs_core::import::{ImportOptions, ResidentCsvSource};
use vrs_core::ledger::OutputEncoding;
use vrs_core::scan::voucher::parse_voucher;
use vrs_core::service::{FixedClock, Registry};
use vrs_core::store::{DynStore, StoreBackend};
use vrs_core::sync::{EntryStatus, SyncBatch, SyncEntry};
use vrs_store_redb::RedbStore;

const MUNICIPALITY: &str = "131016";

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn fullwidth(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_digit() { char::from_u32(c as u32 + 0xFEE0).unwrap_or(c) } else { c }).collect()
}

/// `n` noisy readings (as camera OCR and scanners give them) and the clean line of each.
fn noisy_lines(n: usize) -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = vrs_core::municipalities::all().iter().map(|m| m.code.as_str().to_owned()).collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut noisy = Vec::with_capacity(n);
    let mut clean = Vec::with_capacity(n);
    for i in 0..n {
        let code = &codes[rng.below(codes.len())];
        let voucher = format!("{:010}", rng.next() % 10_000_000_000);
        let line = format!("1{}{code}{voucher}", 1 + rng.below(4));
        let text = match i % 10 {
            0 => line.clone(),
            1 => format!("{} {} {} {}", &line[..1], &line[1..2], &line[2..8], &line[8..]),
            2 => fullwidth(&line),
            3 => line.replacen('0', "O", 1),
            4 => format!("接種券番号 {} {}", &line[..8], &line[8..]),
            5 => {
                // One municipality digit misread.
                let mut b = line.clone().into_bytes();
                let at = 2 + rng.below(6);
                b[at] = b'0' + ((b[at] - b'0') + 1 + rng.below(9) as u8) % 10;
                String::from_utf8(b).unwrap()
            }
            6 => format!("{}\n{}", &line[..9], &line[9..]),
            7 => voucher.clone(),
            8 => line[..17].to_owned(),
            _ => format!("{} - {}", &line[..8], &line[8..]).replacen('1', "l", 1),
        };
        noisy.push(text);
        clean.push(line);
    }
    (noisy, clean)
}

fn site() -> Site {
    Site {
        id: SiteId::parse("venue-1").unwrap(),
        name: "千代田区民会館".into(),
        municipality: MunicipalityCode::parse(MUNICIPALITY).unwrap(),
    }
}

/// A server store with `count` residents of 千代田区 and the tablet's account.
fn server(rt: &tokio::runtime::Runtime, dir: &Path, name: &str, csv: &Path) -> Registry {
    let store = RedbStore::open(dir.join(name)).unwrap();
    let m = MunicipalityCode::parse(MUNICIPALITY).unwrap();
    rt.block_on(async {
        let source = ResidentCsvSource::new(BufReader::new(File::open(csv).unwrap()), ImportOptions::new(m)).unwrap();
        let (_, applied) = store.import_residents(Box::new(source)).await.unwrap();
        assert!(applied.committed);
    });
    let store: DynStore = Arc::new(store);
    let registry = Registry::new(store, Arc::new(FixedClock::new(Utc.with_ymd_and_hms(2021, 7, 1, 0, 0, 0).unwrap())));
    let staff = Actor::MunicipalStaff { municipality: m, user: "bench".into() };
    rt.block_on(registry.issue_account(&staff, site(), AccountId::parse("tab-1").unwrap())).unwrap();
    registry
}

fn main() {
    let scale = Scale::from_env();
    let lines = scale.pick(20_000, 1_000_000);
    let doses = scale.pick(1_000u64, 10_000);
    let mut all_ok = true;
    println!("vrs tablet-side benchmarks ({scale:?}: {lines} noisy lines, a batch of {doses} doses)");
    println!();

    // 1. parse_voucher on noisy text, against the strict parser on the clean lines.
    let (noisy, clean) = noisy_lines(lines);
    let _ = parse_voucher(&noisy[0]); // the municipality index, built once
    let ((ok, err), t_parse) = timed(|| {
        let (mut ok, mut err) = (0usize, 0usize);
        for text in &noisy {
            match parse_voucher(text) {
                Ok(r) => ok += r.line.voucher.number.as_str().len(),
                Err(_) => err += 1,
            }
        }
        (ok / 10, err)
    });
    let (strict_ok, t_strict) = timed(|| clean.iter().filter(|l| OcrLine::parse(l).is_ok()).count());
    assert_eq!(strict_ok, lines);
    let rate = lines as f64 / t_parse.as_secs_f64();
    note("parse_voucher: read / refused", format!("{ok} / {err} (refused: barcode alone, 17 digits, unrepairable)"));
    all_ok &= report(
        "parse_voucher, noisy (lines/s)",
        rate,
        "lines/s",
        "OcrLine::parse, clean lines",
        lines as f64 / t_strict.as_secs_f64(),
        // The strict parser checks 18 clean digits; parse_voucher also scans noisy text,
        // fixes letters, repairs municipality digits and names the municipality.
        0.15,
    );
    all_ok &= report_absolute("parse_voucher absolute", rate, "lines/s", 1_000_000.0);

    // 2. A sync batch applied to redb, against register_batch of the same doses.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = MunicipalityCode::parse(MUNICIPALITY).unwrap();
    let csv = dir.path().join("residents.csv");
    write_residents_csv(
        BufWriter::new(File::create(&csv).unwrap()),
        &GenOptions::new(m, doses, 7),
        OutputEncoding::Utf8,
        HeaderLanguage::Japanese,
    )
    .unwrap();
    let g = ResidentGenerator::new(&GenOptions::new(m, doses, 7)).unwrap();
    let at = Utc.with_ymd_and_hms(2021, 6, 1, 1, 0, 0).unwrap();
    let regs: Vec<DoseRegistration> = (0..doses)
        .map(|i| DoseRegistration {
            ocr_line: format!("11{m}{}", g.row(i).unwrap().to_resident(m, b"").unwrap().voucher),
            dose_number: None,
            date_given: NaiveDate::from_ymd_opt(2021, 6, 1).unwrap(),
            product: "pfizer".into(),
            lot: "FA5765".into(),
            doctor: "佐藤一郎".into(),
            idempotency_key: IdempotencyKey::parse(&format!("tab-1.{i}")).unwrap(),
            lot_expiry: NaiveDate::from_ymd_opt(2021, 8, 31),
        })
        .collect();
    let batch = SyncBatch::new(
        "tab-1.b1",
        AccountId::parse("tab-1").unwrap(),
        at,
        regs.iter().map(|r| SyncEntry::register(r.clone(), at)).collect(),
    );
    let json = batch.to_json();
    let (parsed, t_json) = timed(|| SyncBatch::from_json(&json).unwrap());
    note("batch JSON", format!("{} KiB, read in {:.1} ms", json.len() / 1024, t_json.as_secs_f64() * 1000.0));
    let tablet = Actor::Site { account: AccountId::parse("tab-1").unwrap() };

    // The batch first, then its baseline (the same work) on a twin store.
    let registry = server(&rt, dir.path(), "server.redb", &csv);
    let (reply, t_apply, cpu_apply) = timed_cpu(|| rt.block_on(registry.apply_sync_batch(&tablet, &parsed)).unwrap());
    let twin = server(&rt, dir.path(), "twin.redb", &csv);
    let ((), t_register) = timed(|| {
        rt.block_on(async {
            for chunk in regs.chunks(500) {
                for r in twin.register_batch(&tablet, chunk).await.unwrap() {
                    r.unwrap();
                }
            }
        })
    });
    assert_eq!(reply.count(EntryStatus::Applied), doses as usize, "{:?}", reply.entries.iter().find(|e| e.status != EntryStatus::Applied));
    let apply_rate = doses as f64 / t_apply.as_secs_f64();
    all_ok &= report(
        "sync batch apply to redb (doses/s)",
        apply_rate,
        "doses/s",
        "register_batch, chunks of 500",
        doses as f64 / t_register.as_secs_f64(),
        0.8,
    );
    all_ok &= report_absolute("sync batch apply absolute", apply_rate, "doses/s", 50_000.0);
    note(
        "sync batch apply, CPU time (all threads)",
        format!(
            "{:.0} ms wall, {:.0} ms CPU: {:.0} doses per CPU-second",
            t_apply.as_secs_f64() * 1000.0,
            cpu_apply.as_secs_f64() * 1000.0,
            doses as f64 / cpu_apply.as_secs_f64().max(0.001)
        ),
    );
    let (again, t_again) = timed(|| rt.block_on(registry.apply_sync_batch(&tablet, &parsed)).unwrap());
    assert_eq!(again.count(EntryStatus::Replayed), doses as usize);
    note("the same batch again (all replayed)", format!("{:.0} doses/s", doses as f64 / t_again.as_secs_f64()));

    println!();
    println!("{}", if all_ok { "all targets met" } else { "some targets NOT met (see BELOW TARGET)" });
}
