//! Who an app runs as and with which limits: `user`, `group`, `umask` and resource limits
//! (`setrlimit` in the child, before exec). The rules that need no system (names, ranges) are
//! here; whether the user exists and the agent may switch to it is the supervisor's to check.

use std::collections::BTreeMap;

use super::parse_size;

/// The limits an app may set: name, and whether its value is a size in bytes (else a count, or
/// seconds for `cpu`).
pub const LIMITS_KNOWN: [(&str, bool); 9] = [
    ("nofile", false),
    ("nproc", false),
    ("core", true),
    ("memlock", true),
    ("stack", true),
    ("as", true),
    ("data", true),
    ("fsize", true),
    ("cpu", false),
];

/// `unlimited` as a value.
pub const UNLIMITED: u64 = u64::MAX;

/// A limit's value: "unlimited", a number, or (for sizes) "64M"-style.
pub fn parse_limit(name: &str, value: &str) -> Result<u64, String> {
    let Some((_, is_size)) = LIMITS_KNOWN.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "unknown limit {name:?}: use {}",
            LIMITS_KNOWN.map(|(n, _)| n).join(", ")
        ));
    };
    let v = value.trim();
    if v == "unlimited" || v == "infinity" {
        return Ok(UNLIMITED);
    }
    if *is_size {
        parse_size(v).map_err(|e| format!("{name}: {e}"))
    } else {
        v.parse::<u64>()
            .map_err(|_| format!("{name}: {value:?} is not a number or \"unlimited\""))
    }
}

/// Checks what needs no system: names well formed, the umask a mode, limits known.
pub fn check_run_as(
    user: Option<&str>,
    group: Option<&str>,
    umask: Option<u32>,
    limits: &BTreeMap<String, u64>,
) -> Result<(), String> {
    for (what, name) in [("user", user), ("group", group)] {
        if let Some(n) = name {
            let ok = !n.is_empty()
                && n.len() <= 32
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !n.starts_with('-');
            if !ok {
                return Err(format!("{what} {n:?} is not a user or group name"));
            }
        }
    }
    if let Some(m) = umask {
        if m > 0o777 {
            return Err(format!("umask {m:o} is not a mode (at most 777)"));
        }
    }
    for name in limits.keys() {
        if !LIMITS_KNOWN.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "unknown limit {name:?}: use {}",
                LIMITS_KNOWN.map(|(n, _)| n).join(", ")
            ));
        }
    }
    Ok(())
}

/// A umask as written: octal digits ("022", "0o027") or a number.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_start_matches("0o");
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|&m| m <= 0o777)
        .ok_or_else(|| format!("umask {s:?} is not an octal mode such as 022"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_modes() {
        assert_eq!(parse_limit("nofile", "65536"), Ok(65536));
        assert_eq!(parse_limit("memlock", "64M"), Ok(64 << 20));
        assert_eq!(parse_limit("stack", "unlimited"), Ok(UNLIMITED));
        assert!(parse_limit("nofile", "64M").is_err());
        assert!(parse_limit("fds", "1")
            .unwrap_err()
            .contains("unknown limit"));
        assert_eq!(parse_umask("022"), Ok(0o22));
        assert_eq!(parse_umask("0o027"), Ok(0o27));
        assert!(parse_umask("999").is_err());
        assert!(check_run_as(
            Some("nobody"),
            Some("nogroup"),
            Some(0o22),
            &BTreeMap::new()
        )
        .is_ok());
        assert!(check_run_as(Some("../x"), None, None, &BTreeMap::new()).is_err());
        assert!(check_run_as(None, None, Some(0o1777), &BTreeMap::new()).is_err());
    }
}
