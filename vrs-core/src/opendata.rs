//! Open data in the schema of VRS's public statistics: `prefecture.ndjson`, one object
//! a line (`{"date":"2021-04-12","prefecture":"01","gender":"F","age":"-64",
//! "medical_worker":false,"status":1,"count":113}`; gender F/M/U, age -64/65-/UNK,
//! status = dose number), and `summary_by_date.csv`. Both are derived from the
//! statistics counters, so they equal what the ledger shows.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::stats::StatsRow;
use crate::{Error, Result};

/// One line of `prefecture.ndjson`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpenDataRow {
    /// Date given, `YYYY-MM-DD`.
    pub date: NaiveDate,
    /// Prefecture, two digits.
    pub prefecture: String,
    /// `F`, `M` or `U`.
    pub gender: String,
    /// `-64`, `65-` or `UNK`.
    pub age: String,
    /// Always `false`: vrs does not record whether the person is a medical worker.
    pub medical_worker: bool,
    /// Dose number.
    pub status: u8,
    /// Doses.
    pub count: u64,
}

/// Aggregates statistics counters into open-data rows, dropping groups smaller than
/// `suppress_below` (small-cell suppression; `0` keeps everything). Returns the rows and
/// how many doses were suppressed.
pub fn aggregate(stats: &[StatsRow], suppress_below: u64) -> (Vec<OpenDataRow>, u64) {
    let mut groups: BTreeMap<(NaiveDate, String, &'static str, &'static str, u8), u64> = BTreeMap::new();
    for r in stats {
        let k = &r.key;
        *groups
            .entry((k.date, k.municipality.prefecture_code().to_owned(), k.sex.letter(), k.age_band.open_data_label(), k.dose_number))
            .or_default() += r.count;
    }
    let mut suppressed = 0;
    let rows = groups
        .into_iter()
        .filter_map(|((date, prefecture, gender, age, status), count)| {
            if count < suppress_below {
                suppressed += count;
                return None;
            }
            Some(OpenDataRow { date, prefecture, gender: gender.into(), age: age.into(), medical_worker: false, status, count })
        })
        .collect();
    (rows, suppressed)
}

fn write_error(e: impl std::fmt::Display) -> Error {
    Error::Storage { message: format!("writing open data: {e}"), source: None }
}

/// Writes `prefecture.ndjson`.
pub fn write_ndjson(rows: &[OpenDataRow], out: &mut dyn Write) -> Result<()> {
    for r in rows {
        let line = serde_json::to_string(r).map_err(write_error)?;
        writeln!(out, "{line}").map_err(write_error)?;
    }
    Ok(())
}

/// Writes `summary_by_date.csv`: per date, doses of each number for people under 65
/// (or of unknown age) and 65 and over, and the total.
pub fn write_summary_by_date(rows: &[OpenDataRow], out: &mut dyn Write) -> Result<()> {
    let max_dose = rows.iter().map(|r| r.status).max().unwrap_or(0);
    let mut by_date: BTreeMap<NaiveDate, Vec<u64>> = BTreeMap::new();
    for r in rows {
        let cols = by_date.entry(r.date).or_insert_with(|| vec![0; 2 * usize::from(max_dose)]);
        let k = usize::from(r.status.saturating_sub(1));
        let elderly = usize::from(r.age == "65-");
        cols[2 * k + elderly] += r.count;
    }
    let mut header = vec!["date".to_owned()];
    for k in 1..=max_dose {
        header.push(format!("count_shot{k}_general"));
        header.push(format!("count_shot{k}_elderly"));
    }
    header.push("count_total".into());
    writeln!(out, "{}", header.join(",")).map_err(write_error)?;
    for (date, cols) in by_date {
        let total: u64 = cols.iter().sum();
        let cells: Vec<String> = cols.iter().map(u64::to_string).collect();
        writeln!(out, "{date},{},{total}", cells.join(",")).map_err(write_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MunicipalityCode;
    use crate::resident::Sex;
    use crate::stats::{AgeBand, StatsKey};
    use crate::vaccine::ProductCode;
    use proptest::prelude::*;

    fn row(m: &str, day: i64, dose: u8, sex: Sex, band: AgeBand, count: u64) -> StatsRow {
        StatsRow {
            key: StatsKey {
                municipality: MunicipalityCode::parse(m).unwrap(),
                date: NaiveDate::from_ymd_opt(2021, 6, 1).unwrap() + chrono::Duration::days(day),
                dose_number: dose,
                sex,
                age_band: band,
                product: ProductCode::new("pfizer"),
            },
            count,
        }
    }

    #[test]
    fn the_published_shape() {
        let (rows, suppressed) = aggregate(&[row("011002", 0, 1, Sex::Female, AgeBand::Age30To39, 113)], 0);
        assert_eq!(suppressed, 0);
        let mut out = Vec::new();
        write_ndjson(&rows, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"date\":\"2021-06-01\",\"prefecture\":\"01\",\"gender\":\"F\",\"age\":\"-64\",\"medical_worker\":false,\"status\":1,\"count\":113}\n"
        );
    }

    proptest! {
        /// Open data counts equal a recount of the counters, per date × prefecture ×
        /// dose number and in total, and suppression removes exactly the small cells.
        #[test]
        fn counts_equal_a_recount(
            spec in proptest::collection::vec((0usize..4, 0i64..5, 1u8..4, 0usize..3, 0usize..13, 1u64..50), 0..60),
            k in 0u64..30,
        ) {
            let towns = ["011002", "131016", "131041", "271004"];
            let sexes = [Sex::Male, Sex::Female, Sex::Unknown];
            let bands = [AgeBand::Age0To4, AgeBand::Age5To11, AgeBand::Age12To19, AgeBand::Age20To29, AgeBand::Age30To39, AgeBand::Age40To49,
                AgeBand::Age50To59, AgeBand::Age60To64, AgeBand::Age65To69, AgeBand::Age70To79, AgeBand::Age80To89, AgeBand::Age90Plus, AgeBand::Unknown];
            let stats: Vec<StatsRow> = spec.iter().map(|(t, d, n, s, b, c)| row(towns[*t], *d, *n, sexes[*s], bands[*b], *c)).collect();
            let (rows, suppressed) = aggregate(&stats, 0);
            prop_assert_eq!(suppressed, 0);
            prop_assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), stats.iter().map(|r| r.count).sum::<u64>());
            let mut recount: BTreeMap<(NaiveDate, String, u8), u64> = BTreeMap::new();
            for s in &stats {
                *recount.entry((s.key.date, s.key.municipality.prefecture_code().to_owned(), s.key.dose_number)).or_default() += s.count;
            }
            let mut from_rows: BTreeMap<(NaiveDate, String, u8), u64> = BTreeMap::new();
            for r in &rows {
                *from_rows.entry((r.date, r.prefecture.clone(), r.status)).or_default() += r.count;
            }
            prop_assert_eq!(&recount, &from_rows);
            let (kept, dropped) = aggregate(&stats, k);
            prop_assert!(kept.iter().all(|r| r.count >= k));
            prop_assert_eq!(kept.iter().map(|r| r.count).sum::<u64>() + dropped, stats.iter().map(|r| r.count).sum::<u64>());
            let mut csv = Vec::new();
            write_summary_by_date(&rows, &mut csv).unwrap();
            let total: u64 = String::from_utf8(csv).unwrap().lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap()).sum();
            prop_assert_eq!(total, stats.iter().map(|r| r.count).sum::<u64>());
        }
    }
}
