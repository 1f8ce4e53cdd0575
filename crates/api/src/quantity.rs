//! Kubernetes memory quantities (`64Mi`, `1G`, `1048576`).

/// Parses a memory quantity into bytes.
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
    n.checked_mul(factor).ok_or_else(|| format!("{q:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("2G"), Ok(2_000_000_000));
        assert_eq!(parse_memory("4096"), Ok(4096));
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-1Mi").is_err());
        assert!(parse_memory("99999999999Ti").is_err());
    }
}
