//! Leaf value parsers shared by the command line, the config file and the
//! detectors' settings (no dependency on the rest of the crate).

use std::time::Duration;

/// Durations as `1s`, `250ms`, `5m`, `2h`, `1d`, a bare number of seconds, or
/// ISO 8601 (`PT7M`, `PT1H30M`, `P1D`), as the Azure module twin sends them.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Some(iso) = t.strip_prefix('P').or_else(|| t.strip_prefix('p')) {
        let secs = parse_iso(iso).ok_or_else(|| format!("invalid ISO 8601 duration {s:?}"))?;
        return in_range(secs, s);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 =
        num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 5m, PT7M"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}: use ms, s, m, h or d")),
    };
    in_range(secs, s)
}

/// Seconds as a Duration, up to 1e10 s (317 years): `from_secs_f64` panics
/// on what does not fit (a 400-digit number of seconds is infinite).
fn in_range(secs: f64, s: &str) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration that must be longer than zero: an interval a timer ticks at, a
/// window or a budget (tokio's `interval` panics on zero, and a zero window
/// or budget would silently do nothing).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero: an interval must be longer than 0"));
    }
    Ok(d)
}

fn parse_iso(rest: &str) -> Option<f64> {
    let mut secs = 0f64;
    let mut in_time = false;
    let mut num = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c {
            'T' | 't' => in_time = true,
            '0'..='9' | '.' | ',' => num.push(if c == ',' { '.' } else { c }),
            _ => {
                let v: f64 = num.parse().ok()?;
                num.clear();
                any = true;
                secs += v * match (c.to_ascii_uppercase(), in_time) {
                    ('W', false) => 604800.0,
                    ('D', false) => 86400.0,
                    ('H', true) => 3600.0,
                    ('M', true) => 60.0,
                    ('S', true) => 1.0,
                    _ => return None,
                };
            }
        }
    }
    (any && num.is_empty()).then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("PT7M"), Ok(Duration::from_secs(420)));
        assert_eq!(parse_duration("PT1H30M"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("P1DT1S"), Ok(Duration::from_secs(86401)));
        assert_eq!(parse_duration("PT0.5S"), Ok(Duration::from_millis(500)));
        // The ISO form is bounded too (found by the units fuzz target: a
        // 400-digit number of seconds made from_secs_f64 panic).
        let huge = format!("PT{}S", "9".repeat(400));
        for bad in ["", "x", "10q", "PT", "P1H", "PT5", "-1s", "1e400s", "pT018446744.5S07370955161m", &huge]
        {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn intervals_refuse_zero() {
        assert_eq!(parse_interval("20ms"), Ok(Duration::from_millis(20)));
        for zero in ["0", "0s", "0ms", "PT0S", "0.0000000001s"] {
            let e = parse_interval(zero).expect_err(zero);
            assert!(e.contains("longer than 0"), "{zero}: {e}");
        }
    }
}
