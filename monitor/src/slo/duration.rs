//! Durations as kiln.toml and PromQL write them (`"50ms"`, `"2.5s"`, `"30d"`): parsing.
//! Formatting in the largest exact unit is in `common`, which the error messages use too.

use super::common::{DAY, HOUR};
use super::error::SloError;
use std::time::Duration;

/// Parses a duration written as a number and one unit: `ms`, `s`, `m`, `h` or `d`
/// (`"50ms"`, `"2.5s"`, `"30d"`).
pub fn parse_duration(text: &str) -> Result<Duration, SloError> {
    let error = |reason| SloError::Duration {
        input: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(error(if trimmed.is_empty() {
            "it is empty"
        } else {
            "it does not start with a non-negative number"
        }));
    }
    // f64's parser also takes "1e3", "inf" and "nan"; the split above already kept
    // only digits and dots, so `number` is plain decimal here.
    let value: f64 = number
        .parse()
        .map_err(|_| error("the number is not a decimal number"))?;
    let seconds = match unit.trim() {
        // Division rather than multiplication by 0.001: exact for whole milliseconds, so
        // "50ms" is the same float as the bucket bound 0.05.
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * HOUR as f64,
        "d" => value * DAY as f64,
        "" => return Err(error("it has no unit")),
        _ => return Err(error("the unit is not one of ms, s, m, h, d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| error("it is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::common::format_duration;
    use crate::slo::objective::tests::DAYS_30;

    fn duration_error(text: &str) -> String {
        match parse_duration(text) {
            Ok(d) => panic!("{text:?} parsed as {d:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        // The float a user's "50ms" becomes is the bucket bound itself.
        assert_eq!(parse_duration("50ms").map(|d| d.as_secs_f64()), Ok(0.05));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 30d "), Ok(DAYS_30));
        assert_eq!(parse_duration("50 ms"), Ok(Duration::from_millis(50)));
    }

    #[test]
    fn bad_durations_say_what_is_wrong_and_how_to_write_one() {
        assert!(duration_error("").contains("it is empty"));
        assert!(duration_error("50").contains("it has no unit"));
        assert!(duration_error("50us").contains("not one of ms, s, m, h, d"));
        assert!(duration_error("1e3s").contains("not one of ms, s, m, h, d"));
        assert!(duration_error("-5s").contains("does not start with a non-negative number"));
        assert!(duration_error("ms").contains("does not start with a non-negative number"));
        assert!(duration_error("1.2.3s").contains("not a decimal number"));
        assert!(duration_error("99999999999999999999999d").contains("too long"));
        assert!(duration_error("50").contains("e.g. \"50ms\""));
    }

    #[test]
    fn durations_format_in_the_largest_exact_unit_and_parse_back() {
        for (d, text) in [
            (DAYS_30, "30d"),
            (Duration::from_secs(36 * HOUR), "36h"),
            (Duration::from_secs(90 * 60), "90m"),
            (Duration::from_secs(61), "61s"),
            (Duration::from_millis(50), "50ms"),
            (Duration::from_micros(2500), "2.5ms"),
            (Duration::from_micros(50), "0.05ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }
}
