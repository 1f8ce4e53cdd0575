//! Printing objects: aligned tables (like kubectl), JSON or YAML.

use std::io::Write;
use std::time::SystemTime;

use clap::ValueEnum;
use serde_json::Value;

/// Writes to stdout. A closed pipe (`wasmctl get pods | head`) ends the program quietly
/// instead of panicking, as Unix tools do.
pub fn emit(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for command output; see [`emit`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::emit(format_args!($($arg)*)) };
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `rows` under `header`, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == n { c.to_string() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        crate::out!("{}", padded.join("   "));
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn structured(value: &Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => crate::out!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => crate::out!("{}", serde_norway::to_string(value)?.trim_end()),
        Format::Table => anyhow::bail!("not a structured format"),
    }
    Ok(())
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 timestamp.
pub fn age(timestamp: Option<&str>) -> String {
    let Some(then) = timestamp.and_then(|t| humantime::parse_rfc3339(t).ok()) else {
        return "<unknown>".into();
    };
    let secs = SystemTime::now().duration_since(then).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_like_kubectl() {
        let ten_min_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        let ts = humantime::format_rfc3339_seconds(ten_min_ago).to_string();
        assert_eq!(age(Some(&ts)), "10m");
        assert_eq!(age(None), "<unknown>");
    }
}
