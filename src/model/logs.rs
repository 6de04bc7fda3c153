//! How an app's output is kept: per-line timestamps, and size-based rotation (on by default).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One of an app's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogStream {
    Out,
    Err,
}

impl LogStream {
    /// The word in file names and in CLI output: `out` or `err`.
    pub fn word(self) -> &'static str {
        match self {
            LogStream::Out => "out",
            LogStream::Err => "err",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// What the agent does with an app's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    /// Prefix each line with the RFC 3339 time (UTC, milliseconds) at which the agent read it.
    #[serde(default)]
    pub time: bool,
    /// A log file is rotated before it would grow past this many bytes.
    pub max_size: u64,
    /// Rotated files kept (`X.log.1` is the newest); older ones are removed.
    pub keep: u32,
}

impl LogPolicy {
    pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
    pub const DEFAULT_KEEP: u32 = 5;
    pub const MIN_MAX_SIZE: u64 = 1024;
    pub const MAX_MAX_SIZE: u64 = 1 << 40;
    pub const MAX_KEEP: u32 = 100;

    /// Checks the bounds; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(Self::MIN_MAX_SIZE..=Self::MAX_MAX_SIZE).contains(&self.max_size) {
            return Err(format!(
                "log_max_size {} is out of range: between 1K and 1T (1024 to {} bytes)",
                self.max_size,
                Self::MAX_MAX_SIZE
            ));
        }
        if !(1..=Self::MAX_KEEP).contains(&self.keep) {
            return Err(format!(
                "log_keep {} is out of range: between 1 and {}",
                self.keep,
                Self::MAX_KEEP
            ));
        }
        Ok(())
    }
}

impl Default for LogPolicy {
    fn default() -> Self {
        LogPolicy {
            time: false,
            max_size: Self::DEFAULT_MAX_SIZE,
            keep: Self::DEFAULT_KEEP,
        }
    }
}

/// Parses a size: bytes (`1048576`), or a number with a binary unit `K`, `M`, `G`, `T`
/// (`512K`, `10M`, `1G`; `KB`, `KiB`, `MB`... are read the same way, as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size {s:?}: expected bytes or e.g. 512K, 10M, 1G");
    let value: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("10M"), Ok(10 << 20));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size(" 3 MB "), Ok(3 << 20));
        for bad in [
            "",
            "M",
            "-1M",
            "1.5M",
            "10X",
            "1e9",
            "99999999999999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_size("20000000T").unwrap_err().contains("too large"));
    }

    #[test]
    fn validates_bounds() {
        assert_eq!(LogPolicy::default().validate(), Ok(()));
        let p = |max_size, keep| LogPolicy {
            time: false,
            max_size,
            keep,
        };
        assert!(p(1023, 5).validate().unwrap_err().contains("log_max_size"));
        assert!(p(1 << 41, 5).validate().is_err());
        assert!(p(1024, 0).validate().unwrap_err().contains("log_keep"));
        assert!(p(1024, 101).validate().is_err());
        assert_eq!(p(1024, 1).validate(), Ok(()));
    }
}
