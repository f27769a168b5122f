//! Go's `time.Duration` text (`90s`, `1m30s`, `500ms`), as MetalLB and OpenELB write timers.

/// Whole seconds of a Go duration; a bare number is seconds. Fractions of a second are refused (BGP timers are whole
/// seconds), as are negative values.
pub(super) fn seconds(text: &str) -> Result<u32, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u32>() {
        return Ok(n);
    }
    let bad = || format!("'{text}' is not a duration such as 90s or 1m30s");
    let mut rest = text;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: f64 = match unit {
            "h" => 3600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return Err(bad()),
        };
        let value: f64 = number.parse().map_err(|_| bad())?;
        let part = value * scale;
        if !part.is_finite() || part > 1e30 {
            return Err(format!("'{text}' is too long"));
        }
        nanos = nanos
            .checked_add(part.round() as u128)
            .ok_or_else(|| format!("'{text}' is too long"))?;
        rest = tail;
    }
    if !nanos.is_multiple_of(1_000_000_000) {
        return Err(format!("'{text}' is not a whole number of seconds"));
    }
    u32::try_from(nanos / 1_000_000_000).map_err(|_| format!("'{text}' is too long"))
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn go_durations() {
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("1m30s"), Ok(90));
        assert_eq!(seconds("3m"), Ok(180));
        assert_eq!(seconds("1h"), Ok(3600));
        assert_eq!(seconds("2000ms"), Ok(2));
        assert_eq!(seconds("30"), Ok(30));
        assert!(seconds("1.5s").unwrap_err().contains("whole number"));
        assert!(seconds("fish").unwrap_err().contains("not a duration"));
        assert!(seconds("").is_err());
        assert!(seconds("10d").is_err());
        assert!(
            seconds("100000000000000000000000000000h1h")
                .unwrap_err()
                .contains("too long")
        );
    }
}
