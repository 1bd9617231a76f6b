//! Durations in flags and files (`30s`, `500ms`, `2m`, `1h 30m`, or a bare number of
//! seconds), parsed by `humantime` and printed so that they parse back.

use std::time::Duration;

use crate::error::RegistryError;

/// Parses a duration: humantime's syntax (`30s`, `500ms`, `2m`, `1h 30m`), or a bare
/// number (`1.5`) meaning seconds.
pub fn parse(text: &str) -> Result<Duration, RegistryError> {
    let t = text.trim();
    if let Ok(seconds) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| {
            RegistryError::Invalid(format!("`{text}` is not a duration: it is negative or too large"))
        });
    }
    humantime::parse_duration(t).map_err(|e| {
        RegistryError::Invalid(format!(
            "`{text}` is not a duration ({e}): use e.g. 30s, 500ms, 2m or 1h 30m"
        ))
    })
}

/// [`parse`] in whole milliseconds.
pub fn parse_ms(text: &str) -> Result<u64, RegistryError> {
    Ok(u64::try_from(parse(text)?.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds as humantime writes them: `30s`, `1s 500ms`, `250ms`, `2m`.
pub fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        assert_eq!(parse_ms("30s").unwrap(), 30_000);
        assert_eq!(parse_ms("500ms").unwrap(), 500);
        assert_eq!(parse_ms("2m").unwrap(), 120_000);
        assert_eq!(parse_ms("1h 30m").unwrap(), 5_400_000);
        assert_eq!(parse_ms("1.5").unwrap(), 1500);
        assert!(parse_ms("soon").is_err());
        assert!(parse_ms("-3").is_err());
        assert!(parse_ms("3 parsecs").is_err());
        for ms in [250, 30_000, 1500, 120_000, 5_400_000] {
            assert_eq!(parse_ms(&format_ms(ms)).unwrap(), ms, "{}", format_ms(ms));
        }
        assert_eq!(format_ms(30_000), "30s");
        assert_eq!(format_ms(1500), "1s 500ms");
        assert_eq!(format_ms(120_000), "2m");
    }
}
