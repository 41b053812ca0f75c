//! China Standard Time, in which users, editors and reports count days:
//! a day in the turn log, a listing's year and a report's week are China
//! days, whatever the server's time zone.

use time::{Date, OffsetDateTime, UtcOffset};

/// China Standard Time (UTC+8, no daylight saving).
pub const CHINA: UtcOffset = time::macros::offset!(+8);

/// Today in China.
pub fn today() -> Date {
    OffsetDateTime::now_utc().to_offset(CHINA).date()
}

/// A date as `YYYY-MM-DD`, the form the turn log and reports use.
pub fn date_text(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The China day of a moment, as `YYYY-MM-DD`.
pub fn day(at: OffsetDateTime) -> String {
    date_text(at.to_offset(CHINA).date())
}

/// The China day of a Unix time, as `YYYY-MM-DD`; empty when the time is
/// out of range.
pub fn day_of(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .map(day)
        .unwrap_or_default()
}

/// A moment as editors read it: `2026-12-02 10:16`, China time.
pub fn minute(at: OffsetDateTime) -> String {
    let at = at.to_offset(CHINA);
    format!(
        "{} {:02}:{:02}",
        date_text(at.date()),
        at.hour(),
        at.minute()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_turn_at_midnight_in_china_not_utc() {
        // 2026-11-15 16:30 UTC is 2026-11-16 00:30 in China.
        let at = time::macros::datetime!(2026-11-15 16:30 UTC);
        assert_eq!(day(at), "2026-11-16");
        assert_eq!(minute(at), "2026-11-16 00:30");
        assert_eq!(day_of(at.unix_timestamp()), "2026-11-16");
    }
}
