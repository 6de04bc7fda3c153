//! What `grpm start WHAT` means when WHAT is not a flag-described app, as PM2 users expect: an
//! app file (`.toml`), a script to run (`app.py`: with the interpreter its `#!` line or its
//! extension names, named after the file's stem), a command line in one argument
//! (`"python3 -m http.server 8099"`, split like a shell), or the target of existing apps.
//! Also the default name of `start -- CMD...`: the script it runs, else the program.

use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use crate::model::validate_name;

/// What the one argument of `grpm start WHAT` is.
#[derive(Debug, PartialEq, Eq)]
pub enum What {
    /// An app file (`.toml`).
    AppFile,
    /// A file to run.
    Script(PathBuf),
    /// A command line: the words of a one-argument command, split like a shell.
    CommandLine(Vec<String>),
    /// A name, an id or "all".
    Target,
}

/// App-file formats grpm does not read (yet): refused rather than run as a script.
const OTHER_APP_FILES: [&str; 3] = ["json", "yaml", "yml"];

/// Decides what `what` is: a `.toml` name is an app file (existing or not, so that a typo says
/// "not found"); another existing file is a script (a `.json`/`.yaml` one is refused); one
/// argument with whitespace is a command line (no name or id has any); anything else a target.
pub fn classify(what: &str) -> Result<What, String> {
    if what.ends_with(".toml") {
        return Ok(What::AppFile);
    }
    let path = Path::new(what);
    if path.is_file() {
        let ext = extension(path);
        if OTHER_APP_FILES.contains(&ext.as_str()) {
            return Err(format!(
                "{what}: app files are TOML (.toml); .{ext} app files are not read"
            ));
        }
        return Ok(What::Script(path.to_path_buf()));
    }
    if what.chars().any(char::is_whitespace) {
        let words = shlex::split(what)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| format!("{what:?}: unbalanced quotes in the command line"))?;
        return Ok(What::CommandLine(words));
    }
    Ok(What::Target)
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// How a script is run.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    /// The interpreter and its arguments, then the script's absolute path.
    pub argv: Vec<String>,
    /// What to tell the user, e.g. "app.py: run with python3 (its extension .py)".
    pub said: String,
}

/// The interpreter of each known extension.
fn by_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "py" => "python3",
        "js" | "mjs" | "cjs" => "node",
        "sh" => "bash",
        "rb" => "ruby",
        "pl" => "perl",
        "php" => "php",
        _ => return None,
    })
}

/// How to run `path`: the interpreter its `#!` line names, else the one of its extension, else
/// the file itself when it is executable. `path_var` is the PATH to look interpreters up in.
pub fn how_to_run(path: &Path, path_var: Option<&str>) -> Result<Run, String> {
    let shown = path.display().to_string();
    let abs = std::path::absolute(path).map_err(|e| format!("{shown}: {e}"))?;
    let script = abs.to_string_lossy().into_owned();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    let executable = meta.permissions().mode() & 0o111 != 0;
    if let Some(words) = shebang(path).map_err(|e| format!("{shown}: {e}"))? {
        let program = words[0].clone();
        let found = if program.contains('/') {
            is_executable(Path::new(&program))
        } else {
            lookup(&program, path_var).is_some()
        };
        if !found {
            return Err(format!(
                "{shown}: its #! line names {program}, which is not {}; install it, or give \
                 the command after --",
                if program.contains('/') {
                    "an executable file"
                } else {
                    "on PATH"
                }
            ));
        }
        let said = format!("{shown}: run with {} (its #! line)", words.join(" "));
        let mut argv = words;
        argv.push(script);
        return Ok(Run { argv, said });
    }
    let ext = extension(path);
    if let Some(program) = by_extension(&ext) {
        if lookup(program, path_var).is_none() {
            return Err(format!(
                "{shown}: .{ext} files run with {program}, which is not on PATH; install it, or \
                 give the command after --"
            ));
        }
        return Ok(Run {
            argv: vec![program.to_string(), script],
            said: format!("{shown}: run with {program} (its extension .{ext})"),
        });
    }
    if matches!(ext.as_str(), "ts" | "mts" | "cts") {
        let stem = stem_name(path).unwrap_or_else(|| "NAME".into());
        return Err(format!(
            "{shown}: TypeScript needs a runner; give it after --, e.g. `grpm start --name {stem} \
             -- npx tsx {shown}` (or `-- node {shown}` with Node 23.6+, `-- deno run {shown}`, \
             `-- bun {shown}`), or add a #! line"
        ));
    }
    if executable {
        return Ok(Run {
            argv: vec![script],
            said: format!("{shown}: run directly (an executable without a #! line)"),
        });
    }
    Err(format!(
        "{shown}: not an app file (.toml), and nothing says how to run it (no #! line, no known \
         extension, not executable); give the command after --, e.g. `grpm start -- \
         INTERPRETER {shown}`"
    ))
}

/// The words of a `#!` line, with `env` (and `env -S`) resolved to the program it runs:
/// `#!/usr/bin/env python3 -u` → `python3 -u`; `#!/bin/bash` → `/bin/bash`.
fn shebang(path: &Path) -> std::io::Result<Option<Vec<String>>> {
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    let Some(line) = head.strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    if words.is_empty() {
        return Ok(None);
    }
    if Path::new(&words[0]).file_name().is_some_and(|n| n == "env") {
        // env's own options (-S splits the rest, which split_whitespace did already) and
        // NAME=VALUE assignments come before the program.
        let program_at = words[1..]
            .iter()
            .position(|w| !w.starts_with('-') && !w.contains('='))
            .map(|i| i + 1);
        match program_at {
            Some(i) => words.drain(..i),
            None => return Ok(None),
        };
    }
    Ok(Some(words))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program` on `path_var` (a PATH value), as the app's exec will find it.
fn lookup(program: &str, path_var: Option<&str>) -> Option<PathBuf> {
    path_var?
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_executable(p))
}

/// The file's stem as an app name (`app.py` → `app`), if it is a valid one.
pub fn stem_name(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    validate_name(&stem).is_ok().then_some(stem)
}

/// The default name of `start -- CMD...`, as PM2 picks it: after the script it runs (the first
/// argument after the program that is an existing file, relative to `cwd`: `python3 -u
/// app.py` → `app`), else the program's file name (`python3`). `cwd` is where the app runs
/// on this machine (`None` on a remote host: no file here tells). `None` when neither is a
/// valid name.
pub fn default_name(cmd: &[String], cwd: Option<&Path>) -> Option<String> {
    let script = cwd.and_then(|dir| {
        cmd.iter()
            .skip(1)
            .find(|a| !a.starts_with('-') && dir.join(a.as_str()).is_file())
    });
    if let Some(name) = script.and_then(|s| stem_name(Path::new(s))) {
        return Some(name);
    }
    let base = Path::new(cmd.first()?)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    validate_name(&base).is_ok().then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn file(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// A PATH holding fake python3, node and bash.
    fn bin(dir: &Path) -> String {
        let b = dir.join("bin");
        fs::create_dir(&b).unwrap();
        for p in ["python3", "node", "bash"] {
            file(&b, p, "", 0o755);
        }
        b.to_string_lossy().into_owned()
    }

    #[test]
    fn the_shebang_wins_then_the_extension_then_the_executable_bit() {
        let d = tempfile::tempdir().unwrap();
        let path = bin(d.path());
        let p = Some(path.as_str());
        let abs = |f: &Path| f.to_string_lossy().into_owned();
        let f = file(
            d.path(),
            "a.js",
            "#!/usr/bin/env python3\nprint(1)\n",
            0o644,
        );
        let run = how_to_run(&f, p).unwrap();
        assert_eq!(run.argv, ["python3".to_string(), abs(&f)]);
        assert!(run.said.contains("python3 (its #! line)"), "{}", run.said);
        let f = file(d.path(), "s", "#!/usr/bin/env -S python3 -u\n", 0o644);
        assert_eq!(how_to_run(&f, p).unwrap().argv, ["python3", "-u", &abs(&f)]);
        let f = file(d.path(), "t", "#!/bin/sh -e\n", 0o644);
        assert_eq!(how_to_run(&f, p).unwrap().argv, ["/bin/sh", "-e", &abs(&f)]);
        let f = file(d.path(), "app.py", "print(1)\n", 0o644);
        let run = how_to_run(&f, p).unwrap();
        assert_eq!(run.argv, ["python3".to_string(), abs(&f)]);
        assert!(run.said.contains("(its extension .py)"), "{}", run.said);
        for (name, program) in [("x.mjs", "node"), ("x.cjs", "node"), ("x.sh", "bash")] {
            let f = file(d.path(), name, "", 0o644);
            assert_eq!(how_to_run(&f, p).unwrap().argv[0], program, "{name}");
        }
        let f = file(d.path(), "tool", "\x7fELF", 0o755);
        assert_eq!(how_to_run(&f, p).unwrap().argv, [abs(&f)]);
    }

    #[test]
    fn what_cannot_run_says_why_and_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let path = bin(d.path());
        let p = Some(path.as_str());
        let f = file(d.path(), "app.rb", "puts 1\n", 0o644);
        let e = how_to_run(&f, p).unwrap_err();
        assert!(e.contains("ruby, which is not on PATH"), "{e}");
        let f = file(d.path(), "a", "#!/usr/bin/env nosuchinterp\n", 0o755);
        let e = how_to_run(&f, p).unwrap_err();
        assert!(e.contains("nosuchinterp, which is not on PATH"), "{e}");
        let f = file(d.path(), "b", "#!/no/such/sh\n", 0o755);
        assert!(how_to_run(&f, p).unwrap_err().contains("/no/such/sh"));
        let f = file(d.path(), "app.ts", "", 0o644);
        let e = how_to_run(&f, p).unwrap_err();
        assert!(e.contains("npx tsx") && e.contains("--name app"), "{e}");
        let f = file(d.path(), "notes.txt", "hello\n", 0o644);
        assert!(how_to_run(&f, p)
            .unwrap_err()
            .contains("give the command after --"));
    }

    #[test]
    fn classify_tells_files_command_lines_and_targets_apart() {
        let d = tempfile::tempdir().unwrap();
        let f = file(d.path(), "app.py", "", 0o644);
        let j = file(d.path(), "apps.json", "{}", 0o644);
        let s = |p: &Path| p.to_string_lossy().into_owned();
        assert_eq!(classify("apps.toml"), Ok(What::AppFile));
        assert_eq!(classify(&s(&f)), Ok(What::Script(f.clone())));
        assert!(classify(&s(&j)).unwrap_err().contains("TOML"));
        assert_eq!(
            classify("python3 -m 'http.server' 8099"),
            Ok(What::CommandLine(vec![
                "python3".into(),
                "-m".into(),
                "http.server".into(),
                "8099".into()
            ]))
        );
        assert!(classify("sh -c 'unbalanced").is_err());
        // No such file: a target (names may hold dots).
        for t in ["web", "7", "all", "app.py", "apps.json"] {
            assert_eq!(classify(t), Ok(What::Target), "{t}");
        }
    }

    #[test]
    fn default_names_follow_the_script() {
        let d = tempfile::tempdir().unwrap();
        file(d.path(), "app.py", "", 0o644);
        let cmd = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let here = Some(d.path());
        assert_eq!(
            default_name(&cmd("python3 app.py"), here).as_deref(),
            Some("app")
        );
        assert_eq!(
            default_name(&cmd("python3 -u app.py x"), here).as_deref(),
            Some("app")
        );
        assert_eq!(
            default_name(&cmd("python3 -m http.server"), here).as_deref(),
            Some("python3")
        );
        assert_eq!(
            default_name(&cmd("/usr/bin/sleep 1"), here).as_deref(),
            Some("sleep")
        );
        assert_eq!(
            default_name(&cmd("python3 app.py"), Some(Path::new("/"))).as_deref(),
            Some("python3")
        );
    }
}
