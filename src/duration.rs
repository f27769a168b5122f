//! The one grammar of durations on Herald's command lines: a decimal number and a unit (`ms`, `s`, `m`, `h`), or a
//! bare number of seconds: `0`, `250ms`, `1.5s`, `30s`, `2m`.

use std::time::Duration;

/// Parses a command-line duration (see the module docs); the error says what is wrong and shows examples.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let examples = "examples: 500ms, 1.5s, 30s, 2m, 0";
    let value: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && number.trim().chars().all(|c| c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` is not a duration ({examples})"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h; {examples})"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn one_grammar_for_every_flag() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 7 "), Ok(Duration::from_secs(7)));
        for bad in ["fast", "s", "-1s", "+1s", "NaN", "inf", ""] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration") && e.contains("examples"), "{bad}: {e}");
        }
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit `d`"));
        assert!(parse_duration("1e300h").is_err());
        assert!(parse_duration("1e3s").is_err(), "no exponents");
    }
}
