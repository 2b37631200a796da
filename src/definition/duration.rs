//! Durations as Consul reads them: Go's `time.ParseDuration` grammar, the one
//! grammar for configuration files, flags and the HTTP API alike, so a value
//! that works in one works in all three and in Consul.

use std::time::Duration;

/// Parses a Go duration string: an optional `+`, then one or more decimal
/// numbers (with optional fraction) each followed by a unit (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`); "0" alone (or signed) is zero. Negative durations are refused,
/// and so are forms Go refuses (`3d`, `2 hours`, `10`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    // As Go: a signed zero is zero.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if negative {
        return Err(format!("negative duration {s:?}"));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    let mut rest = rest;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {s:?}")),
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * nanos_per;
        rest = tail;
    }
    // Go's durations are i64 nanoseconds; anything beyond is an overflow there too.
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(bad());
    }
    // Finite, non-negative and below i64::MAX, so the conversion is exact
    // up to rounding.
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2us"), Duration::from_micros(2));
        assert_eq!(ok("2µs"), Duration::from_micros(2));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0"), Duration::ZERO);
        assert_eq!(ok("+0"), Duration::ZERO);
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        for bad in [
            "",
            "10",
            "s",
            "1x",
            "-5s",
            "1..5s",
            ".s",
            "1e3s",
            "9999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn forms_go_refuses_are_refused_naming_the_unit() {
        for (bad, says) in [
            ("3d", "unknown unit \"d\""),
            ("2 hours", "unknown unit \" hours\""),
            ("1m 30s", "unknown unit \"m \""),
            ("10sec", "unknown unit \"sec\""),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_duration_strings_never_panic(s in "\\PC{0,16}") {
            let _ = parse_duration(&s);
        }
    }
}
