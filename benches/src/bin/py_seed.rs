//! Seeds a redb store for the Python benchmark (benches/python/bench_arrow.py): N
//! generated residents of one municipality and one matched dose each, written straight
//! through the store in bulk change sets (the seeding is not what is measured). The store
//! is opened for a bulk load: its commits skip the disk flush and one durable commit at
//! the end makes them all durable (10M rows would otherwise spend most of an hour in fsync).
//!
//! `py_seed STORE_FILE N [MUNICIPALITY]`
//!
//! `py_seed --scan STORE_FILE [MUNICIPALITY]` instead reads a seeded store's residents and
//! doses as columns three times each and prints wall and CPU seconds: the Rust side of
//! the Python reads alone, without the Arrow wrapping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};
use vrs_benches::seeded_dose;
use vrs_core::dose::DoseDetails;
use vrs_core::generate::{GenOptions, ResidentGenerator};
use vrs_core::ids::{IdempotencyKey, MunicipalityCode, SiteId};
use vrs_core::import::ImportReport;
use vrs_core::resident::Resident;
use vrs_core::stats::{key_for, merge_deltas};
use vrs_core::store::{ChangeSet, DynStore, ResidentSource};
use vrs_core::vaccine::ProductCode;
use vrs_store_redb::RedbStore;

/// The generated residents, pulled in batches by the store's import.
struct Generated {
    generator: ResidentGenerator,
    municipality: MunicipalityCode,
    next: u64,
    count: u64,
}

impl ResidentSource for Generated {
    fn next_batch(&mut self, max: usize) -> vrs_core::Result<Option<Vec<Resident>>> {
        if self.next >= self.count {
            return Ok(None);
        }
        let end = (self.next + max as u64).min(self.count);
        let batch =
            (self.next..end).map(|i| self.generator.row(i)?.to_resident(self.municipality, b"")).collect::<vrs_core::Result<_>>()?;
        self.next = end;
        Ok(Some(batch))
    }
    fn may_commit(&self) -> bool {
        true
    }
    fn into_report(self: Box<Self>) -> ImportReport {
        ImportReport { rows_read: self.count, rows_valid: self.count, ..ImportReport::default() }
    }
}

/// Doses per bulk change set (one commit each, made durable at the end).
const CHANGE_SET: usize = 200_000;

/// CPU seconds used by this process so far (all threads), from /proc/self/stat (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    ticks / 100.0
}

/// Reads the store's residents and doses as columns, three times each, printing the figures.
fn scan(path: &str, m: MunicipalityCode) {
    use vrs_core::store::{DoseScan, StoreBackend};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = RedbStore::open(path).unwrap();
    for _ in 0..3 {
        let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
        let mut rows = 0;
        rt.block_on(store.scan_resident_columns(m, 1 << 16, &mut |c| {
            rows += c.len();
            Ok(())
        }))
        .unwrap();
        println!("residents as columns: {rows} rows, wall {:.3} s, CPU {:.2} s", wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
        let mut rows = 0;
        rt.block_on(store.scan_dose_columns(m, DoseScan::ByVoucher, 1 << 16, &mut |c| {
            rows += c.len();
            Ok(())
        }))
        .unwrap();
        println!("doses as columns:     {rows} rows, wall {:.3} s, CPU {:.2} s", wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--scan") {
        let path = args.get(2).expect("usage: py_seed --scan STORE_FILE [MUNICIPALITY]");
        return scan(path, MunicipalityCode::parse(args.get(3).map(String::as_str).unwrap_or("131016")).unwrap());
    }
    let path = args.get(1).expect("usage: py_seed STORE_FILE N [MUNICIPALITY]");
    let count: u64 = args.get(2).and_then(|n| n.parse().ok()).expect("N");
    let m = MunicipalityCode::parse(args.get(3).map(String::as_str).unwrap_or("131016")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let redb = RedbStore::open_for_bulk_load(path).unwrap();
    let store: DynStore = Arc::new(redb.clone());
    let options = GenOptions::new(m, count, 1);
    let generator = ResidentGenerator::new(&options).unwrap();
    let source = Generated { generator: generator.clone(), municipality: m, next: 0, count };
    let (_, applied) = rt.block_on(store.import_residents(Box::new(source))).unwrap();
    assert!(applied.committed);
    let at = Utc.with_ymd_and_hms(2021, 6, 1, 0, 0, 0).unwrap();
    let site = SiteId::parse("venue-1").unwrap();
    // Doses are written in the order the store keeps them (voucher order) and dated in
    // that order too, so that each bulk change set fills neighbouring pages of the doses
    // and by-site tables instead of touching pages all over a file larger than the cache:
    // this is what makes 10M rows seed in minutes rather than half an hour.
    let mut order: Vec<(u64, u64)> = (0..count).map(|i| (generator.row(i).unwrap().voucher.as_str().parse::<u64>().unwrap(), i)).collect();
    order.sort_unstable();
    let mut cs = ChangeSet::default();
    let mut counters = Vec::new();
    let flush = |cs: &mut ChangeSet, counters: &mut Vec<_>| {
        cs.counters = merge_deltas(std::mem::take(counters));
        rt.block_on(store.apply(vec![std::mem::take(cs)])).unwrap();
    };
    for (rank, &(_, i)) in order.iter().enumerate() {
        let resident = generator.row(i).unwrap().to_resident(m, b"").unwrap();
        let key = IdempotencyKey::parse(&format!("seed-{i}")).unwrap();
        let details = DoseDetails {
            dose_number: 1,
            date_given: NaiveDate::from_ymd_opt(2021, 6, 1).unwrap() + chrono::Duration::days((rank as u64 * 60 / count) as i64),
            administering_municipality: m,
            site: site.clone(),
            site_name: "千代田区民会館".into(),
            doctor: format!("医師{:02}", i % 40),
            product: ProductCode::new("pfizer"),
            maker: "ファイザー".into(),
            lot: format!("FA{:04}", i % 10_000),
            lot_expiry: None,
        };
        let record = seeded_dose(&resident, key, at + chrono::Duration::seconds(i as i64), at, details, "bench");
        if let Some(k) = key_for(&record, Some(&resident)) {
            counters.push((k, 1));
        }
        cs.new_doses.push(record);
        if cs.new_doses.len() >= CHANGE_SET {
            flush(&mut cs, &mut counters);
        }
    }
    if !cs.new_doses.is_empty() {
        flush(&mut cs, &mut counters);
    }
    redb.persist().unwrap();
    println!("seeded {count} residents and {count} doses of {m} into {path}");
}
