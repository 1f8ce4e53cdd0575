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

/// The largest CPU quantity accepted, in millicores (as many cores as any node has).
pub const MAX_CPU_MILLIS: u64 = 1_000_000;

/// Parses a CPU quantity (`500m`, `1`, `0.25`, `2`) into millicores: more than 0, at most
/// `MAX_CPU_MILLIS`, and no finer than a millicore.
pub fn parse_cpu(q: &str) -> Result<u64, String> {
    let bad = || format!("{q:?} is not a CPU quantity (examples: 250m, 0.5, 2)");
    let millis = match q.strip_suffix('m') {
        Some(m) => m.parse::<u64>().map_err(|_| bad())?,
        None => {
            let (whole, fraction) = q.split_once('.').unwrap_or((q, ""));
            if fraction.len() > 3
                || !fraction.bytes().all(|b| b.is_ascii_digit())
                || (whole.is_empty() && fraction.is_empty())
            {
                return Err(bad());
            }
            let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
            let fraction: u64 =
                if fraction.is_empty() { 0 } else { format!("{fraction:0<3}").parse().map_err(|_| bad())? };
            whole.checked_mul(1000).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)?
        }
    };
    match millis {
        0 => Err(format!("{q:?} is no CPU at all: at least 1m")),
        m if m > MAX_CPU_MILLIS => {
            Err(format!("{q:?} is too large: at most {} cores", MAX_CPU_MILLIS / 1000))
        }
        m => Ok(m),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_cpu, parse_memory};

    #[test]
    fn parses_cpu_in_cores_and_millicores() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("1"), Ok(1000));
        assert_eq!(parse_cpu("0.25"), Ok(250));
        assert_eq!(parse_cpu(".5"), Ok(500));
        assert_eq!(parse_cpu("2.5"), Ok(2500));
        // 1001 cores: more than any node.
        for bad in ["0", "0m", "0.0001", "-1", "1.2.3", "lots", "", "m", ".", "1001", "1e3"] {
            assert!(parse_cpu(bad).is_err(), "{bad:?}");
        }
    }

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
