//! Signals an app may be asked to stop with, by Linux number.

use serde::{Deserialize, Serialize};

/// A signal, by its Linux number. Only signals that make sense as a stop signal are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Signal(i32);

const TABLE: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("WINCH", 28),
];

impl Signal {
    pub const TERM: Signal = Signal(15);
    pub const KILL: Signal = Signal(9);

    /// Parses `SIGTERM`, `TERM`, `term` or `15`.
    pub fn parse(s: &str) -> Result<Signal, String> {
        let up = s.trim().to_ascii_uppercase();
        let bare = up.strip_prefix("SIG").unwrap_or(&up);
        if let Ok(n) = bare.parse::<i32>() {
            return TABLE
                .iter()
                .find(|(_, num)| *num == n)
                .map(|_| Signal(n))
                .ok_or_else(|| format!("signal {n} is not usable as a stop signal"));
        }
        TABLE
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, n)| Signal(*n))
            .ok_or_else(|| {
                format!(
                    "unknown signal {s:?}; use one of {}",
                    TABLE
                        .iter()
                        .map(|(n, _)| format!("SIG{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    pub fn number(self) -> i32 {
        self.0
    }

    /// `SIGTERM`-style name of any signal number (not only stop signals), for exit reports.
    pub fn name_of(n: i32) -> Option<&'static str> {
        const ALL: &[(&str, i32)] = &[
            ("SIGHUP", 1),
            ("SIGINT", 2),
            ("SIGQUIT", 3),
            ("SIGILL", 4),
            ("SIGTRAP", 5),
            ("SIGABRT", 6),
            ("SIGBUS", 7),
            ("SIGFPE", 8),
            ("SIGKILL", 9),
            ("SIGUSR1", 10),
            ("SIGSEGV", 11),
            ("SIGUSR2", 12),
            ("SIGPIPE", 13),
            ("SIGALRM", 14),
            ("SIGTERM", 15),
            ("SIGXCPU", 24),
            ("SIGXFSZ", 25),
            ("SIGWINCH", 28),
            ("SIGSYS", 31),
        ];
        ALL.iter().find(|(_, num)| *num == n).map(|(name, _)| *name)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Signal::name_of(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl TryFrom<String> for Signal {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Signal::parse(&s)
    }
}

impl From<Signal> for String {
    fn from(s: Signal) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(Signal::parse("SIGTERM"), Ok(Signal::TERM));
        assert_eq!(Signal::parse("term"), Ok(Signal::TERM));
        assert_eq!(Signal::parse("15"), Ok(Signal::TERM));
        assert_eq!(Signal::parse("SIGINT").unwrap().number(), 2);
        assert!(Signal::parse("SIGSEGV").is_err());
        assert!(Signal::parse("0").is_err());
        assert!(Signal::parse("bogus").is_err());
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
    }
}
