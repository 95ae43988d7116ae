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
