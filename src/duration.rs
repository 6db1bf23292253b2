//! Parsing durations given as settings (`30s`, `500ms`, `2m`, or bare seconds).

use std::time::Duration;

/// Parses `500ms`, `30s`, `2m`, `1h`, Go-style compounds as Consul writes them (`1m30s`), or a
/// bare number of seconds (`30`, `0.5`).
pub fn parse(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. 30s or 500ms".into());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"));
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("{text:?} lacks a unit after its last number; use ms, s, m or h")
            })?;
        let unit_end = rest[num_end..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| num_end + i);
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s or 500ms"))?;
        let scale = match &rest[num_end..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use ms, s, m or h"
                ))
            }
        };
        total +=
            Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))?;
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// Formats a duration the way Consul writes TTLs (`30s`, `1.5s`).
pub fn consul(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m0s"), Ok(Duration::from_secs(60)));
        assert!(parse("").is_err());
        assert!(parse("10x").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("3 days").is_err());
        assert!(parse("-1s").is_err());
        assert_eq!(consul(Duration::from_secs(30)), "30s");
        assert_eq!(consul(Duration::from_millis(2500)), "2500ms");
    }
}
