//! lb's two clocks: process-relative milliseconds for state that only this process reads
//! (slow start, ejections, latency windows), and Unix milliseconds for what is shown to people.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the process started, from a monotonic clock. Never 0 once running, so 0
/// can mean "unset" in atomics that hold these values.
pub fn process_ms() -> u64 {
    process_ms_at(Instant::now())
}

/// [`process_ms`] of an instant already read (saves a clock read on the request path).
pub fn process_ms_at(t: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(|| Instant::now() - Duration::from_millis(1));
    t.saturating_duration_since(start).as_millis() as u64
}

/// Wall-clock Unix time in milliseconds (for `/status`, events and logs).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// The UTC calendar date of a Unix time, as `YYYY-MM-DD` (for messages about certificates).
pub fn utc_date(unix_secs: i64) -> String {
    let (year, month, day) = civil_date(unix_secs.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// (year, month, day) of a count of days since 1970-01-01, proleptic Gregorian calendar (Howard
/// Hinnant's days-to-civil algorithm: no date library needed).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a (year, month, day) in the proleptic Gregorian calendar: the
/// inverse of [`civil_date`] (Hinnant's days-from-civil).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_inverts_civil_date() {
        for days in [-800_000, -1, 0, 59, 11_016, 20_454, 2_932_896] {
            let (y, m, d) = civil_date(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_767_225_599), "2025-12-31");
        assert_eq!(utc_date(1_767_225_600), "2026-01-01");
        assert_eq!(utc_date(-86_400), "1969-12-31");
    }
}
