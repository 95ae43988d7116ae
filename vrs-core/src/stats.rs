//! Statistics kept up to date as doses are stored: one counter per group, so a query
//! costs in the number of groups, not doses.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::dose::DoseRecord;
use crate::ids::MunicipalityCode;
use crate::resident::{Resident, Sex};
use crate::vaccine::{ProductCode, age_in_years};

/// Age bands of the statistics; 60–64 and 65–69 are split so the open data's
/// `-64` / `65-` can be derived.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum AgeBand {
    /// 0–4 years.
    Age0To4,
    /// 5–11.
    Age5To11,
    /// 12–19.
    Age12To19,
    /// 20–29.
    Age20To29,
    /// 30–39.
    Age30To39,
    /// 40–49.
    Age40To49,
    /// 50–59.
    Age50To59,
    /// 60–64.
    Age60To64,
    /// 65–69.
    Age65To69,
    /// 70–79.
    Age70To79,
    /// 80–89.
    Age80To89,
    /// 90 and over.
    Age90Plus,
    /// Not known (the dose is not matched to a resident yet).
    Unknown,
}

impl AgeBand {
    /// The band of an age in years.
    pub fn of_age(years: u32) -> AgeBand {
        match years {
            0..=4 => AgeBand::Age0To4,
            5..=11 => AgeBand::Age5To11,
            12..=19 => AgeBand::Age12To19,
            20..=29 => AgeBand::Age20To29,
            30..=39 => AgeBand::Age30To39,
            40..=49 => AgeBand::Age40To49,
            50..=59 => AgeBand::Age50To59,
            60..=64 => AgeBand::Age60To64,
            65..=69 => AgeBand::Age65To69,
            70..=79 => AgeBand::Age70To79,
            80..=89 => AgeBand::Age80To89,
            _ => AgeBand::Age90Plus,
        }
    }
    /// A label such as `"20-29"`, `"90-"` or `"UNK"`.
    pub fn label(self) -> &'static str {
        match self {
            AgeBand::Age0To4 => "0-4",
            AgeBand::Age5To11 => "5-11",
            AgeBand::Age12To19 => "12-19",
            AgeBand::Age20To29 => "20-29",
            AgeBand::Age30To39 => "30-39",
            AgeBand::Age40To49 => "40-49",
            AgeBand::Age50To59 => "50-59",
            AgeBand::Age60To64 => "60-64",
            AgeBand::Age65To69 => "65-69",
            AgeBand::Age70To79 => "70-79",
            AgeBand::Age80To89 => "80-89",
            AgeBand::Age90Plus => "90-",
            AgeBand::Unknown => "UNK",
        }
    }
    /// The open data's coarse band: `-64`, `65-` or `UNK`.
    pub fn open_data_label(self) -> &'static str {
        match self {
            AgeBand::Unknown => "UNK",
            AgeBand::Age65To69 | AgeBand::Age70To79 | AgeBand::Age80To89 | AgeBand::Age90Plus => "65-",
            _ => "-64",
        }
    }
}

/// One statistics group. The issuing municipality leads, so a store can keep counters
/// partitioned by it and answer a prefecture with a range scan.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct StatsKey {
    /// Issuing municipality (the resident's).
    pub municipality: MunicipalityCode,
    /// Date given.
    #[serde(with = "crate::clock::serde_date")]
    pub date: NaiveDate,
    /// Dose number.
    pub dose_number: u8,
    /// Sex (unknown while unmatched).
    pub sex: Sex,
    /// Age band on the day (unknown while unmatched).
    pub age_band: AgeBand,
    /// Product.
    pub product: ProductCode,
}

/// The group a dose counts in, or `None` for a voided dose.
pub fn key_for(dose: &DoseRecord, resident: Option<&Resident>) -> Option<StatsKey> {
    if dose.is_voided() {
        return None;
    }
    let d = dose.details();
    let (sex, age_band) = match resident {
        Some(r) => (r.sex, AgeBand::of_age(age_in_years(r.birth_date, d.date_given))),
        None => (Sex::Unknown, AgeBand::Unknown),
    };
    Some(StatsKey { municipality: dose.owner(), date: d.date_given, dose_number: d.dose_number, sex, age_band, product: d.product.clone() })
}

/// Counter changes moving a dose from group `before` to group `after`.
pub fn deltas(before: Option<StatsKey>, after: Option<StatsKey>) -> Vec<(StatsKey, i64)> {
    match (before, after) {
        (Some(b), Some(a)) if a == b => Vec::new(),
        (b, a) => b.map(|k| (k, -1)).into_iter().chain(a.map(|k| (k, 1))).collect(),
    }
}

/// Whether replacing `old` by `new` (a re-upload of the same addressee number) moves the
/// resident's doses to other statistics groups: sex and birth date (age band) are the
/// only resident fields a [`StatsKey`] reads.
pub fn restates_statistics(old: &Resident, new: &Resident) -> bool {
    old.sex != new.sex || old.birth_date != new.birth_date
}

/// Counter changes when an upload replaces `old` by `new`: each of `doses` matched to the
/// person leaves the group it counted in under `old` for its group under `new`. `doses`
/// may hold any doses read for the person's vouchers; those matched to someone else (or
/// to nobody) are left alone, since their groups do not read this resident.
pub fn restated(old: &Resident, new: &Resident, doses: &[DoseRecord]) -> Vec<(StatsKey, i64)> {
    merge_deltas(
        doses.iter().filter(|d| d.matched.as_ref() == Some(&new.person)).flat_map(|d| deltas(key_for(d, Some(old)), key_for(d, Some(new)))),
    )
}

/// Merges counter changes so each group appears once (and zero changes vanish).
pub fn merge_deltas(deltas: impl IntoIterator<Item = (StatsKey, i64)>) -> Vec<(StatsKey, i64)> {
    let mut m: BTreeMap<StatsKey, i64> = BTreeMap::new();
    for (k, d) in deltas {
        *m.entry(k).or_default() += d;
    }
    m.into_iter().filter(|(_, d)| *d != 0).collect()
}

/// Which counters a statistics query reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsQuery {
    /// Every municipality.
    National,
    /// One prefecture (1–47).
    Prefecture(u8),
    /// One municipality.
    Municipality(MunicipalityCode),
}

/// A counter as read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRow {
    /// The group.
    pub key: StatsKey,
    /// Doses in it.
    pub count: u64,
}
