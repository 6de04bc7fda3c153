//! INI files as supervisord reads them (Python's `RawConfigParser`, with supervisor's
//! `inline_comment_prefixes = (';', '#')` and `strict = False`): `[section]` headers, `key = value`
//! or `key: value` (the first `=` or `:` splits; keys are lower-cased), whole-line comments
//! starting with `;` or `#`, inline comments after whitespace, and indented continuation lines
//! that add a line to the value above. A section or key seen twice: the later value wins.

/// One `[section]`, its entries in the order first seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub name: String,
    /// 1-based line of its (first) header.
    pub line: usize,
    pub entries: Vec<(String, String)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a value is being built: its section and entry, and the indentation of its key line.
struct Open {
    section: usize,
    entry: usize,
    indent: usize,
}

/// Parses `text`; an error names the line.
pub fn parse(text: &str) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    let mut open: Option<Open> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        let content = strip_inline_comment(raw);
        let value = content.trim();
        if value.is_empty() {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if let Some(o) = &open {
            if indent > o.indent {
                let entry = &mut sections[o.section].entries[o.entry].1;
                if !entry.is_empty() {
                    entry.push('\n');
                }
                entry.push_str(value);
                continue;
            }
        }
        if value.starts_with('[') {
            let Some(end) = value.rfind(']') else {
                return Err(format!(
                    "line {line_no}: {value:?}: a section header ends with ']'"
                ));
            };
            let name = value[1..end].to_string();
            if name.is_empty() {
                return Err(format!("line {line_no}: an empty section name"));
            }
            let at = match sections.iter().position(|s| s.name == name) {
                Some(at) => at,
                None => {
                    sections.push(Section {
                        name,
                        line: line_no,
                        entries: Vec::new(),
                    });
                    sections.len() - 1
                }
            };
            current = Some(at);
            open = None;
            continue;
        }
        let Some(section) = current else {
            return Err(format!(
                "line {line_no}: {value:?} comes before any [section] header"
            ));
        };
        let Some(split) = value.find(['=', ':']) else {
            return Err(format!(
                "line {line_no}: {value:?} is neither a [section], key = value nor a comment"
            ));
        };
        let key = value[..split].trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(format!("line {line_no}: {value:?} has no key"));
        }
        let val = value[split + 1..].trim().to_string();
        let entries = &mut sections[section].entries;
        let entry = match entries.iter().position(|(k, _)| *k == key) {
            Some(at) => {
                entries[at].1 = val;
                at
            }
            None => {
                entries.push((key, val));
                entries.len() - 1
            }
        };
        open = Some(Open {
            section,
            entry,
            indent,
        });
    }
    Ok(sections)
}

/// The line up to an inline comment: `;` or `#` after whitespace.
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b';' || b == b'#') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_configparser_reads() {
        let text = "\
; a comment
# another
[supervisord]
logfile=/tmp/supervisord.log ; main log file; default $CWD/supervisord.log
nodaemon = false

[program:web]
Command: python3 -m http.server 8080   # inline
environment=A=\"1\",
    B=\"2;3\"
url=http://x/#frag
[program:web]
priority=5
";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].get("logfile"), Some("/tmp/supervisord.log"));
        assert_eq!(s[0].get("nodaemon"), Some("false"));
        assert_eq!(s[1].name, "program:web");
        assert_eq!(s[1].line, 7);
        assert_eq!(s[1].get("command"), Some("python3 -m http.server 8080"));
        assert_eq!(s[1].get("environment"), Some("A=\"1\",\nB=\"2;3\""));
        assert_eq!(s[1].get("url"), Some("http://x/#frag"));
        assert_eq!(s[1].get("priority"), Some("5"));
    }

    #[test]
    fn errors_name_the_line() {
        assert!(parse("x=1").unwrap_err().starts_with("line 1:"));
        assert!(parse("[a]\nnot a pair\n")
            .unwrap_err()
            .starts_with("line 2:"));
        assert!(parse("[a\n").unwrap_err().starts_with("line 1:"));
    }
}
