//! Time as the domain needs it. The core never reads a clock: callers pass `now`.

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, Utc};

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
    at.with_timezone(&jst()).format("%Y%m%d%H%M%S").to_string()
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
