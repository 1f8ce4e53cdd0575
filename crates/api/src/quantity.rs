//! Kubernetes memory quantities (`64Mi`, `1G`, `1048576`).

/// The largest memory quantity accepted: far beyond any node, far below where sums of many
/// pods' requests could overflow.
pub const MAX_MEMORY: u64 = 1 << 50;

/// Parses a memory quantity into bytes (at most `MAX_MEMORY`, 1 PiB).
pub fn parse_memory(q: &str) -> Result<u64, String> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, factor) =
        SUFFIXES.iter().find_map(|(s, f)| q.strip_suffix(s).map(|d| (d, *f))).unwrap_or((q, 1));
    let n: u64 =
        digits.parse().map_err(|_| format!("{q:?} is not a memory quantity (examples: 64Mi, 1Gi, 500M)"))?;
    n.checked_mul(factor)
        .filter(|bytes| *bytes <= MAX_MEMORY)
        .ok_or_else(|| format!("{q:?} is too large: at most 1Pi (1125899906842624 bytes)"))
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("2G"), Ok(2_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert_eq!(parse_memory("1024Ti"), Ok(super::MAX_MEMORY));
        assert!(parse_memory("1025Ti").is_err(), "beyond 1 PiB");
        assert!(parse_memory("16000000Ti").is_err(), "beyond u64");
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-1Mi").is_err());
        assert!(parse_memory("99999999999Ti").is_err());
    }
}
