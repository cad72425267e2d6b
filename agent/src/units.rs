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
        return parse_iso(iso).ok_or_else(|| format!("invalid ISO 8601 duration {s:?}"));
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
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_iso(rest: &str) -> Option<Duration> {
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
    (any && num.is_empty()).then(|| Duration::from_secs_f64(secs))
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
        for bad in ["", "x", "10q", "PT", "P1H", "PT5", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }
}
