//! Time as the domain needs it. The core never reads a clock: callers pass `now`.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Offset, Timelike, Utc};

/// Japan Standard Time, UTC+9 (no daylight saving).
pub fn jst() -> FixedOffset {
    // 9 hours is within ±24h, so this always succeeds; fall back to UTC to stay total.
    FixedOffset::east_opt(9 * 3600).unwrap_or(Utc.fix())
}

/// The calendar date in Japan at `at`.
pub fn jst_date(at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&jst()).date_naive()
}

/// `YYYYMMDDHHMMSS` in Japan time, as the ledger writes 接種履歴登録日時.
pub fn ledger_timestamp(at: DateTime<Utc>) -> String {
    let mut s = String::with_capacity(14);
    push_ledger_timestamp(&mut s, at);
    s
}

/// Appends [`ledger_timestamp`] to `out` without allocating: the same text as chrono's
/// `%Y%m%d%H%M%S`, written digit by digit (years outside 0–9999 and leap seconds, which
/// chrono writes its own way, take chrono's formatter).
pub fn push_ledger_timestamp(out: &mut String, at: DateTime<Utc>) {
    // Only the last instants chrono can represent have no Japan time; they keep UTC.
    let local = at.naive_utc().checked_add_offset(jst()).unwrap_or(at.naive_utc());
    let year = local.year();
    if !(0..=9999).contains(&year) || local.nanosecond() >= 1_000_000_000 {
        use std::fmt::Write as _;
        let _ = write!(out, "{}", local.format("%Y%m%d%H%M%S"));
        return;
    }
    let mut b = [0u8; 14];
    put_digits(&mut b[..4], year as u32);
    put_digits(&mut b[4..6], local.month());
    put_digits(&mut b[6..8], local.day());
    put_digits(&mut b[8..10], local.hour());
    put_digits(&mut b[10..12], local.minute());
    put_digits(&mut b[12..14], local.second());
    out.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// Appends `YYYYMMDD` (接種日 in the ledger) to `out`: the same text as chrono's `%Y%m%d`.
pub fn push_ledger_date(out: &mut String, date: NaiveDate) {
    let year = date.year();
    if !(0..=9999).contains(&year) {
        use std::fmt::Write as _;
        let _ = write!(out, "{}", date.format("%Y%m%d"));
        return;
    }
    let mut b = [0u8; 8];
    put_digits(&mut b[..4], year as u32);
    put_digits(&mut b[4..6], date.month());
    put_digits(&mut b[6..8], date.day());
    out.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// Writes `value` as ASCII digits filling `out`, zero-padded (its top digits are dropped
/// if it has more).
fn put_digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Serde for instants (`DateTime<Utc>`): chrono's RFC 3339 text in human-readable formats
/// (JSON stays readable), whole seconds and nanoseconds in binary ones (a store's
/// values), which cost neither text parsing nor formatting.
pub mod serde_instant {
    use chrono::{DateTime, Utc};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `at`.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { at.serialize(s) } else { (at.timestamp(), at.timestamp_subsec_nanos()).serialize(s) }
    }

    /// Deserializes what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        if d.is_human_readable() {
            DateTime::<Utc>::deserialize(d)
        } else {
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            DateTime::from_timestamp(secs, nanos).ok_or_else(|| D::Error::custom(format!("timestamp {secs}.{nanos:09} is out of range")))
        }
    }

    /// The same for `Option<DateTime<Utc>>`.
    pub mod option {
        use super::*;

        struct Out<'a>(&'a DateTime<Utc>);
        impl Serialize for Out<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }
        struct In(DateTime<Utc>);
        impl<'de> Deserialize<'de> for In {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(In)
            }
        }

        /// Serializes `at`.
        pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            at.as_ref().map(Out).serialize(s)
        }

        /// Deserializes what [`serialize`] wrote.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Ok(Option::<In>::deserialize(d)?.map(|i| i.0))
        }
    }
}

/// Serde for dates (`NaiveDate`): `YYYY-MM-DD` in human-readable formats, the day number
/// (days since 0001-01-01 CE, counted from 1) in binary ones.
pub mod serde_date {
    use chrono::{Datelike, NaiveDate};
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `date`.
    pub fn serialize<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() { date.serialize(s) } else { s.serialize_i32(date.num_days_from_ce()) }
    }

    /// Deserializes what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        if d.is_human_readable() {
            NaiveDate::deserialize(d)
        } else {
            let days = i32::deserialize(d)?;
            NaiveDate::from_num_days_from_ce_opt(days).ok_or_else(|| D::Error::custom(format!("day number {days} is out of range")))
        }
    }

    /// The same for `Option<NaiveDate>`.
    pub mod option {
        use super::*;

        struct Out<'a>(&'a NaiveDate);
        impl Serialize for Out<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }
        struct In(NaiveDate);
        impl<'de> Deserialize<'de> for In {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(In)
            }
        }

        /// Serializes `date`.
        pub fn serialize<S: Serializer>(date: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
            date.as_ref().map(Out).serialize(s)
        }

        /// Deserializes what [`serialize`] wrote.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
            Ok(Option::<In>::deserialize(d)?.map(|i| i.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Times {
        #[serde(with = "super::serde_instant")]
        at: DateTime<Utc>,
        #[serde(default, with = "super::serde_instant::option")]
        closed: Option<DateTime<Utc>>,
        #[serde(with = "super::serde_date")]
        day: NaiveDate,
        #[serde(default, with = "super::serde_date::option")]
        since: Option<NaiveDate>,
    }

    /// The same fields with chrono's own serde.
    #[derive(Serialize)]
    struct Plain {
        at: DateTime<Utc>,
        closed: Option<DateTime<Utc>>,
        day: NaiveDate,
        since: Option<NaiveDate>,
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn samples() -> Vec<Times> {
        vec![
            Times { at: at("2021-06-01T16:00:00.123456789Z"), closed: None, day: day("2021-06-02"), since: None },
            Times {
                at: at("1969-12-31T23:59:59.5Z"),
                closed: Some(at("2021-12-31T23:59:59.999Z")),
                day: day("0001-01-01"),
                since: Some(day("1947-02-28")),
            },
            Times {
                at: DateTime::<Utc>::MIN_UTC,
                closed: Some(DateTime::<Utc>::MAX_UTC),
                day: NaiveDate::MIN,
                since: Some(NaiveDate::MAX),
            },
        ]
    }

    #[test]
    fn ledger_digits_are_chrono_strftime() {
        let mut cases: Vec<DateTime<Utc>> = vec![
            at("2021-06-01T14:59:59.999999999Z"),
            at("2021-06-01T15:00:00Z"),
            at("2021-12-31T15:00:00Z"),
            at("0000-01-01T00:00:00Z"),
            at("9999-12-31T14:59:59Z"),
            at("9999-12-31T15:00:00Z"),
            DateTime::<Utc>::MIN_UTC,
            // A leap second (chrono writes :60).
            NaiveDate::from_ymd_opt(2016, 12, 31).unwrap().and_hms_nano_opt(23, 59, 59, 1_500_000_000).unwrap().and_utc(),
        ];
        let mut x: i64 = 0x1234_5678;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(DateTime::from_timestamp(x.rem_euclid(400 * 366 * 86_400) - 200 * 366 * 86_400, 0).unwrap());
        }
        assert_eq!(super::ledger_timestamp(DateTime::<Utc>::MAX_UTC), "+2621421231235959", "no panic at the end of time");
        for t in cases {
            let local = t.with_timezone(&super::jst());
            assert_eq!(super::ledger_timestamp(t), local.format("%Y%m%d%H%M%S").to_string(), "{t:?}");
            let mut d = String::new();
            super::push_ledger_date(&mut d, local.date_naive());
            assert_eq!(d, local.date_naive().format("%Y%m%d").to_string(), "{t:?}");
        }
    }

    #[test]
    fn human_readable_formats_keep_chrono_text() {
        for t in samples() {
            let plain = Plain { at: t.at, closed: t.closed, day: t.day, since: t.since };
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, serde_json::to_string(&plain).unwrap());
            assert_eq!(serde_json::from_str::<Times>(&json).unwrap(), t);
        }
        let missing: Times = serde_json::from_str(r#"{"at":"2021-06-01T00:00:00Z","day":"2021-06-01"}"#).unwrap();
        assert_eq!((missing.closed, missing.since), (None, None));
    }

    #[test]
    fn binary_formats_round_trip_exactly_and_compactly() {
        for t in samples() {
            let bytes = postcard::to_stdvec(&t).unwrap();
            assert_eq!(postcard::from_bytes::<Times>(&bytes).unwrap(), t);
        }
        let t = &samples()[0];
        // Seconds and nanoseconds as varints, the day as a varint: no text.
        assert!(postcard::to_stdvec(t).unwrap().len() <= 16, "{:?}", postcard::to_stdvec(t).unwrap());
        // Out-of-range values are errors, not panics.
        let bad = postcard::to_stdvec(&(i64::MAX, 0u32, None::<()>, i32::MAX, None::<()>)).unwrap();
        assert!(postcard::from_bytes::<Times>(&bad).is_err());
    }
}
