//! App names and the targets that address apps.

use super::AppId;

/// Checks a name against `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`, and refuses `all` and all-digit
/// names, which would read as targets of another kind.
pub fn validate_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err("app name is empty".into());
    };
    if bytes.len() > 64 {
        return Err(format!(
            "app name is {} characters long; at most 64 are allowed",
            bytes.len()
        ));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "app name {name:?} must start with a letter or a digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "app name {name:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    if name == "all" {
        return Err("app name \"all\" is reserved (it addresses every app)".into());
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "app name {name:?} is all digits; it would read as an app id"
        ));
    }
    Ok(())
}

/// What a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Id(AppId),
    Name(String),
    /// One instance of an app (`api:1`, `7:0`): the app is an `Id` or a `Name`.
    Instance(Box<Target>, u32),
}

impl Target {
    /// Parses `all`, a numeric id, or a valid name, each of the last two optionally followed by
    /// `:N`, one of its instances.
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some((app, n)) = s.rsplit_once(':') {
            let instance = n
                .parse::<u32>()
                .ok()
                .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("target {s:?}: {n:?} is not an instance number (APP:N, N from 0)")
                })?;
            return match Target::parse_app(app)? {
                Target::All => Err(format!(
                    "target {s:?}: an instance belongs to one app, not to \"all\""
                )),
                app => Ok(Target::Instance(Box::new(app), instance)),
            };
        }
        Target::parse_app(s)
    }

    fn parse_app(s: &str) -> Result<Target, String> {
        if s.is_empty() {
            return Err("target is empty; give an app name, an id or \"all\"".into());
        }
        if s == "all" {
            return Ok(Target::All);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Target::Id)
                .map_err(|_| format!("app id {s:?} is out of range"));
        }
        validate_name(s).map(|()| Target::Name(s.to_string()))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Id(id) => write!(f, "{id}"),
            Target::Name(n) => f.write_str(n),
            Target::Instance(app, n) => write!(f, "{app}:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["web", "a", "A.b_c-d", "9lives", &"x".repeat(64)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a/b",
            "../x",
            "all",
            "123",
            "é",
            &"x".repeat(65),
            "a\0",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("all"), Ok(Target::All));
        assert_eq!(Target::parse("42"), Ok(Target::Id(42)));
        assert_eq!(Target::parse("web"), Ok(Target::Name("web".into())));
        assert!(Target::parse("").is_err());
        assert!(Target::parse("99999999999999999999999").is_err());
        assert!(Target::parse("a/b").is_err());
        assert_eq!(
            Target::parse("web:1"),
            Ok(Target::Instance(Box::new(Target::Name("web".into())), 1))
        );
        assert_eq!(
            Target::parse("7:0"),
            Ok(Target::Instance(Box::new(Target::Id(7)), 0))
        );
        assert_eq!(Target::parse("web:1").unwrap().to_string(), "web:1");
        for bad in ["web:", "web:x", "web:-1", "all:1", ":1", "web:+1"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
