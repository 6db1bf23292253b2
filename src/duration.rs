//! Durations given as settings (`30s`, `500ms`, `2m`, `1m30s`, or a bare number of seconds),
//! parsed exactly, and printed back without float artefacts (`22.5s`, never `22.499999999s`).

use std::time::Duration;

/// Nanoseconds per unit, as the parser and Consul's TTLs spell them.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("min", 60_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// What [`parse`] accepts, for help texts and error messages.
pub const SYNTAX: &str = "a number with a unit (500ms, 30s, 2m, 1h, or compounds such as 1m30s), \
     or a bare number of seconds (30 is 30s)";

/// `digits[.digits]` times `unit_ns`, exactly (fractions below a nanosecond are dropped).
fn decimal(number: &str, unit_ns: u128, text: &str) -> Result<u128, String> {
    let bad = || format!("{text:?} is not a duration; write {SYNTAX}");
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let too_long = || format!("{text:?} is too long a duration");
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_long())?
    };
    let mut nanos = int.checked_mul(unit_ns).ok_or_else(too_long)?;
    let mut scale = unit_ns;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos += u128::from(digit - b'0') * scale;
    }
    Ok(nanos)
}

/// Parses `500ms`, `30s`, `2m`, `1h`, Go-style compounds as Consul writes them (`1m30s`), or a
/// bare number of seconds (`30`, `0.5`), the way systemd reads a bare time span. Decimal
/// fractions are exact: `0.3s` is 300 ms, not 299.999999 ms.
pub fn parse(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration; write {SYNTAX}"));
    }
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err(format!("{text:?} is not a duration; write {SYNTAX}"));
        }
        let unit_end = rest[num_end..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| num_end + i);
        let unit = &rest[num_end..unit_end];
        let unit_ns = if unit.is_empty() {
            if num_end != text.len() {
                return Err(format!(
                    "{text:?} lacks a unit after its last number; use ms, s, m or h"
                ));
            }
            1_000_000_000 // a bare number: seconds
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, ns)| *ns)
                .ok_or_else(|| format!("unknown unit {unit:?} in {text:?}; use ms, s, m or h"))?
        };
        nanos = nanos
            .checked_add(decimal(&rest[..num_end], unit_ns, text)?)
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = &rest[unit_end..];
    }
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("{text:?} is too long a duration"))?;
    // The remainder is below 10^9, so it fits.
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration the way Consul writes TTLs (`30s`, `2500ms`).
pub fn consul(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Formats a duration for people, to the millisecond (rounded to the nearest): `30s`,
/// `22.5s`, `3.333s`, `500ms`, `0s`. Below a millisecond: `250us`. `{:?}` would print the
/// nanoseconds a division left (`3.333333333s`, `4.999999999s`).
pub fn display(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000 {
        return format!("{}us", nanos.div_ceil(1_000));
    }
    let ms = (nanos + 500_000) / 1_000_000;
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (secs, frac) = (ms / 1_000, ms % 1_000);
    if frac == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

/// Like [`display`], rounded down to the millisecond: for limits ("at most 4s"), which must
/// still hold after rounding.
pub fn display_floor(d: Duration) -> String {
    display(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse(" 30 "), Ok(Duration::from_secs(30)));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert!(parse("").is_err());
        assert!(parse("10x").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("3 days").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("1.2.3s").is_err());
        assert!(parse(".s").is_err());
        assert!(
            parse("30s5").is_err(),
            "a trailing bare number is not seconds"
        );
        assert!(parse("99999999999999999999999h").is_err());
        assert_eq!(consul(Duration::from_secs(30)), "30s");
        assert_eq!(consul(Duration::from_millis(2500)), "2500ms");
    }

    #[test]
    fn decimal_fractions_are_exact() {
        // As f64 seconds these were 299.999999ms and 1.099999999s.
        assert_eq!(parse("0.3s"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("0.3"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("1.1s"), Ok(Duration::from_millis(1100)));
        assert_eq!(parse("0.1ms"), Ok(Duration::from_micros(100)));
        assert_eq!(parse("1.0000000001s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn display_has_no_float_artefacts() {
        assert_eq!(display(Duration::from_secs(30)), "30s");
        assert_eq!(display(Duration::from_millis(22_500)), "22.5s");
        assert_eq!(display(Duration::from_secs(10) / 3), "3.333s");
        let needed = Duration::from_secs(10) / 3 + Duration::from_secs(10) / 6;
        assert_eq!(format!("{needed:?}"), "4.999999999s");
        assert_eq!(display(needed), "5s");
        assert_eq!(display(Duration::from_nanos(499_999_999)), "500ms");
        assert_eq!(display(Duration::from_millis(1_050)), "1.05s");
        assert_eq!(display(Duration::ZERO), "0s");
        assert_eq!(display(Duration::from_micros(250)), "250us");
        assert_eq!(display_floor(Duration::from_nanos(4_000_000_001)), "4s");
        assert_eq!(display_floor(Duration::from_nanos(3_999_999_999)), "3.999s");
        for text in ["30s", "22.5s", "500ms", "1.05s"] {
            assert_eq!(display(parse(text).expect("parses")), text);
        }
    }
}
