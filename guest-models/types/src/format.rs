//! Sizes and timestamps for people and for records: one formatter of each, used by the
//! CLI, the registry, the servers and the edges alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes in binary units: `512 B`, `1.5 KiB`, `22.1 MiB`, `3.2 GiB`.
pub fn human_size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1 << 10 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", b / KIB)
    } else if bytes < 1 << 30 {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    }
}

/// Seconds since the Unix epoch, now (0 on a clock set before 1970).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The current time as RFC 3339 UTC with microseconds (see [`rfc3339`]).
pub fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// RFC 3339 UTC with microseconds (`2026-11-27T16:00:00.250000Z`) from Unix seconds.
/// Needs no clock or time zone database, so it runs the same natively, in a Spin
/// component, a Worker and a browser.
pub fn rfc3339(unix_seconds: f64) -> String {
    let micros_total = (unix_seconds.max(0.0) * 1e6).round() as u64;
    let (secs, micros) = (micros_total / 1_000_000, micros_total % 1_000_000);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(22 * 1024 * 1024 + 100 * 1024), "22.1 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_795_795_200.25), "2026-11-27T16:00:00.250000Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000000Z");
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && now.len() == 27, "{now}");
    }
}
