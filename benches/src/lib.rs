//! Shared helpers of the vrs benchmarks: scale, timing, memory and the printed table.
//! Every figure is printed beside a baseline measured in the same run, with the ratio
//! and the target, because the machines are shared and absolute times drift.

use std::time::{Duration, Instant};

/// How big a run is: `smoke` (seconds, for the test script) or `full` (the sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// A quick run proving the benchmarks work.
    Smoke,
    /// The sizes the targets are stated for.
    Full,
}

impl Scale {
    /// From `VRS_BENCH_SCALE` (`smoke` or `full`, default `full`).
    pub fn from_env() -> Scale {
        match std::env::var("VRS_BENCH_SCALE").as_deref() {
            Ok("smoke") => Scale::Smoke,
            _ => Scale::Full,
        }
    }
    /// Picks the smoke or full value.
    pub fn pick<T>(self, smoke: T, full: T) -> T {
        match self {
            Scale::Smoke => smoke,
            Scale::Full => full,
        }
    }
}

/// Runs `f` and returns its result with the elapsed time.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// A field of /proc/self/status in KiB (VmRSS, VmHWM), 0 where unavailable.
pub fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Bytes this process has handed to write calls so far, all threads together (`wchar` of
/// /proc/self/io); zero where unavailable. A redb commit writes each page it dirtied once,
/// so the bytes a phase writes count its dirty pages, whatever else runs on the machine.
pub fn written_bytes() -> u64 {
    proc_io("wchar:")
}

/// Bytes this process has taken from read calls so far, all threads together (`rchar` of
/// /proc/self/io); zero where unavailable. redb reads a page from the file only when its
/// page cache misses, so the bytes a phase reads count its misses.
pub fn read_bytes() -> u64 {
    proc_io("rchar:")
}

/// One counter of /proc/self/io, named with its colon; zero where unavailable.
fn proc_io(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix(field)).and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

/// CPU time this process has used so far, all threads (live or ended) together, from
/// /proc/self/stat (10 ms resolution); zero where unavailable. On a shared machine the
/// wall-clock figures depend on how much CPU the other tenants leave; the CPU time of a
/// phase does not, so the benchmarks print it beside them.
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime 14 and stime 15, in clock ticks (USER_HZ, 100 on Linux).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return Duration::ZERO };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(14) + ticks(15)) * 10)
}

/// Runs `f` and returns its result with the elapsed wall-clock time and the CPU time the
/// process used meanwhile ([`cpu_time`]).
pub fn timed_cpu<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let cpu = cpu_time();
    let (out, wall) = timed(f);
    (out, wall, cpu_time().saturating_sub(cpu))
}

/// Resets the peak-RSS counter (VmHWM) so the next phase's peak can be read alone.
pub fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0); ignored elsewhere.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// One line of the report: a figure, its baseline, the ratio and whether the target holds.
pub fn report(name: &str, figure: f64, unit: &str, baseline_name: &str, baseline: f64, target_ratio: f64) -> bool {
    let ratio = if baseline > 0.0 { figure / baseline } else { 0.0 };
    let ok = ratio >= target_ratio;
    println!(
        "{name:<44} {figure:>14.0} {unit:<8} | {baseline_name:<34} {baseline:>14.0} {unit:<8} | ratio {ratio:>5.2} (target ≥ {target_ratio:.2}) {}",
        if ok { "ok" } else { "BELOW TARGET" }
    );
    ok
}

/// A figure against an absolute target.
pub fn report_absolute(name: &str, figure: f64, unit: &str, target: f64) -> bool {
    let ok = figure >= target;
    println!("{name:<44} {figure:>14.0} {unit:<8} | target ≥ {target:.0} {unit} {}", if ok { "ok" } else { "BELOW TARGET" });
    ok
}

/// Prints a plain figure.
pub fn note(name: &str, value: impl std::fmt::Display) {
    println!("{name:<44} {value}");
}

/// A dose seeded straight into a store by a benchmark (the seeding is not what is
/// measured, so it skips the service): registered by account `tablet-1`, its voucher the
/// resident's, matched to that resident, in its first version.
#[allow(clippy::expect_used)] // only the literal account id is parsed
pub fn seeded_dose(
    resident: &vrs_core::resident::Resident,
    key: vrs_core::ids::IdempotencyKey,
    registered_at: chrono::DateTime<chrono::Utc>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    details: vrs_core::dose::DoseDetails,
    recorded_by: &str,
) -> vrs_core::dose::DoseRecord {
    use vrs_core::ids::{AccountId, DoseId, VoucherRef};
    vrs_core::dose::DoseRecord {
        id: DoseId::for_key(&key),
        idempotency_key: key,
        voucher: VoucherRef { municipality: resident.person.municipality, number: resident.voucher },
        ticket_kind: 1,
        registered_at,
        registered_by: AccountId::parse("tablet-1").expect("a valid literal account id"),
        matched: Some(resident.person.clone()),
        versions: vec![vrs_core::dose::DoseVersion {
            version: 1,
            details,
            voided: false,
            recorded_at,
            recorded_by: recorded_by.into(),
            reason: None,
        }],
        revision: 1,
        seq: 0,
    }
}
