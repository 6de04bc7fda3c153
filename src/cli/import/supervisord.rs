//! supervisord configuration: `[program:x]` sections of a file and of the files its `[include]`
//! names, translated into grpm apps, with supervisord's `%(name)s` expansions.
//!
//! As supervisord does: `[include] files = ...` is a space-separated list of globs relative to
//! the including file's directory, each sorted, and only the main file's `[include]` is
//! followed; `%(here)s` is the directory of the file a value is written in; `%(ENV_X)s` is
//! taken from the environment (here: the importing shell's, at import time).
//!
//! `priority` becomes ordering: each program depends (condition `started`) on the programs of
//! the next lower priority, so grpm starts them in supervisord's order and stops them in reverse.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    ini::{self, Section},
    toml_out::{unique_name, OutApp, OutDep},
    Notes, Translation,
};
use crate::{
    cli::Failure,
    model::{parse_size, parse_umask, wildcard, Env, Signal},
};

/// supervisord's default `priority`.
const DEFAULT_PRIORITY: i64 = 999;

/// What the translation may look at besides the sections: the environment for `%(ENV_X)s` and
/// the host name for `%(host_node_name)s`.
pub struct Context {
    pub env: BTreeMap<String, String>,
    pub host: String,
}

/// Reads the file and the files it includes, and translates them.
pub fn import(file: &Path) -> Result<Translation, Failure> {
    let ctx = Context {
        env: std::env::vars().collect(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
    let mut notes = Notes::default();
    let sections = load(file, &ctx, &mut notes).map_err(Failure::Usage)?;
    let mut t = translate(&sections, &ctx);
    notes.0.append(&mut t.notes.0);
    t.notes = notes;
    Ok(t)
}

/// Reads one file's sections, with `%(here)s` replaced by its directory (as supervisord's
/// `expand_here` does right after reading a file).
fn read(file: &Path) -> Result<Vec<Section>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut sections = ini::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let here = file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    for s in &mut sections {
        for (_, v) in &mut s.entries {
            if v.contains("%(here)s") {
                *v = v.replace("%(here)s", &here.to_string_lossy());
            }
        }
    }
    Ok(sections)
}

/// The main file's sections, then those of each included file (a section seen again: its keys
/// are added to the first, later values winning, as ConfigParser merges them).
fn load(file: &Path, ctx: &Context, notes: &mut Notes) -> Result<Vec<Section>, String> {
    let mut sections = read(file)?;
    let Some(at) = sections.iter().position(|s| s.name == "include") else {
        return Ok(sections);
    };
    let include = sections.remove(at);
    let Some(files) = include.get("files") else {
        return Err(format!(
            "{}: [include] has no files = ... (supervisord refuses it too)",
            file.display()
        ));
    };
    let files = expand(files, &|n| common(n, ctx)).map_err(|e| format!("include.files: {e}"))?;
    let base = file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    for pattern in files.0.split_whitespace() {
        let full = base.join(pattern);
        let mut found = glob(&full);
        found.sort();
        if found.is_empty() {
            notes.note(
                None,
                "[include]",
                format!("no file matches {}", full.display()),
            );
        }
        for f in found {
            for s in read(&f)? {
                if s.name == "include" {
                    notes.skip(
                        None,
                        &format!("[include] in {}", f.display()),
                        "supervisord follows only the main file's [include]",
                    );
                    continue;
                }
                merge(&mut sections, s);
            }
        }
    }
    Ok(sections)
}

fn merge(sections: &mut Vec<Section>, s: Section) {
    match sections.iter_mut().find(|x| x.name == s.name) {
        Some(old) => {
            for (k, v) in s.entries {
                match old.entries.iter_mut().find(|(ok, _)| *ok == k) {
                    Some(e) => e.1 = v,
                    None => old.entries.push((k, v)),
                }
            }
        }
        None => sections.push(s),
    }
}

/// The existing files an absolute pattern names: `*` and `?` in any component (hidden entries
/// only for a pattern that starts with a dot, as Python's glob does).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for comp in pattern.components().skip(1) {
        let part = comp.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if part.contains(['*', '?']) {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if (!name.starts_with('.') || part.starts_with('.')) && wildcard(&part, &name) {
                        next.push(dir.join(name));
                    }
                }
            } else {
                next.push(dir.join(&*part));
            }
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}

/// Expansions every value may use: `ENV_X`, `host_node_name`.
fn common(name: &str, ctx: &Context) -> Option<String> {
    match name {
        "host_node_name" => Some(ctx.host.clone()),
        _ => name
            .strip_prefix("ENV_")
            .and_then(|v| ctx.env.get(v).cloned()),
    }
}

/// Python's `value % expansions`: `%(name)s`, `%(name)d` (with flags and a width, as in
/// `%(process_num)02d`) and `%%`. Returns the text and the `ENV_` names it used.
fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut used = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let bad = || format!("{s:?} is badly formatted (use %(name)s, or %% for a %)");
        let r = rest.strip_prefix('(').ok_or_else(bad)?;
        let close = r.find(')').ok_or_else(bad)?;
        let name = &r[..close];
        let r = &r[close + 1..];
        let spec_len = r
            .find(|c: char| !(c.is_ascii_digit() || "-+ #.".contains(c)))
            .ok_or_else(bad)?;
        let (flags, conv) = (
            &r[..spec_len],
            r[spec_len..].chars().next().ok_or_else(bad)?,
        );
        rest = &r[spec_len + conv.len_utf8()..];
        let value = lookup(name).ok_or_else(|| {
            format!(
                "{s:?} names %({name}) which cannot be expanded (supervisord would refuse it too)"
            )
        })?;
        if name.starts_with("ENV_") && !used.iter().any(|u| u == name) {
            used.push(name.to_string());
        }
        let zero = flags.starts_with('0');
        let width: usize = flags
            .trim_start_matches(['0', '-', '+', ' ', '#'])
            .split('.')
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        let text = match conv {
            's' | 'r' => value,
            'd' | 'i' => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| format!("{s:?}: %({name}) is {value:?}, not a number"))?;
                n.to_string()
            }
            _ => return Err(bad()),
        };
        if text.len() < width {
            let pad = if zero && conv != 's' { '0' } else { ' ' };
            out.extend(std::iter::repeat_n(pad, width - text.len()));
        }
        out.push_str(&text);
    }
    out.push_str(rest);
    Ok((out, used))
}

/// `KEY="val",KEY2=val2` as supervisord reads `environment` (shlex tokens, quotes allowed around
/// values, pairs separated by commas).
fn key_value_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let word = |c: char| c.is_alphanumeric() || "_/.+-():".contains(c);
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            // shlex's comment: to the end of the line.
            while chars.next_if(|&c| c != '\n').is_some() {}
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut t = String::new();
            loop {
                match chars.next() {
                    Some(x) if x == c => break,
                    Some(x) => t.push(x),
                    None => return Err(format!("{s:?}: unbalanced quotes")),
                }
            }
            tokens.push(format!("{c}{t}{c}"));
        } else if word(c) {
            let mut t = String::new();
            while let Some(x) = chars.next_if(|&x| word(x)) {
                t.push(x);
            }
            tokens.push(t);
        } else {
            chars.next();
            tokens.push(c.to_string());
        }
    }
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2)) {
            (Some(k), Some(eq), Some(v)) if eq == "=" => {
                let value = v.trim_matches(['\'', '"']).to_string();
                pairs.push((k.trim_matches(['\'', '"']).to_string(), value));
            }
            _ => {
                return Err(format!(
                    "unexpected end of key/value pairs in {s:?} (expected KEY=\"value\",KEY2=...)"
                ))
            }
        }
        i += 4;
    }
    Ok(pairs)
}

/// Every section: programs become apps; the rest is reported.
pub fn translate(sections: &[Section], ctx: &Context) -> Translation {
    let mut t = Translation::default();
    let mut priorities: Vec<(String, i64)> = Vec::new();
    for s in sections {
        let header = format!("[{}]", s.name);
        let (kind, rest) = s.name.split_once(':').unwrap_or((s.name.as_str(), ""));
        let why = match kind {
            "program" => {
                let taken: Vec<String> = t.apps.iter().map(|a| a.name.clone()).collect();
                if let Some((app, priority)) = program(rest, s, ctx, &taken, &mut t.notes) {
                    priorities.push((app.name.clone(), priority));
                    t.apps.push(app);
                }
                continue;
            }
            "include" => continue,
            "group" => format!(
                "grpm has no groups: its programs ({}) are imported as apps of their own",
                s.get("programs").unwrap_or("")
            ),
            "eventlistener" => "grpm publishes events on its own stream (`grpm events`, the \
                                Subscribe RPC); supervisord's listener protocol is not spoken"
                .into(),
            "fcgi-program" => "grpm does not hold a FastCGI socket for a program".into(),
            "supervisord" => "the daemon's own settings: grpm's agent has its own \
                              (`grpm agent --help`)"
                .into(),
            "supervisorctl" => "the client's settings: grpm's CLI finds its agent through \
                                $GRPM_HOME/agent.sock (or --host)"
                .into(),
            "unix_http_server" | "inet_http_server" => "supervisord's XML-RPC listener: grpm's \
                agent serves gRPC on $GRPM_HOME/agent.sock (and TCP with TLS through \
                `grpm agent --listen`)"
                .into(),
            "rpcinterface" | "ctlplugin" => "a supervisord plugin".into(),
            _ => "not a supervisord section".into(),
        };
        t.notes.skip(None, &header, why);
    }
    order_by_priority(&mut t, &priorities);
    t
}

/// supervisord starts programs by ascending priority and stops them in reverse: each program
/// depends on every program of the next lower priority, condition `started`.
fn order_by_priority(t: &mut Translation, priorities: &[(String, i64)]) {
    let mut levels: Vec<i64> = priorities.iter().map(|(_, p)| *p).collect();
    levels.sort_unstable();
    levels.dedup();
    if levels.len() < 2 {
        return;
    }
    for app in &mut t.apps {
        let Some(&(_, p)) = priorities.iter().find(|(n, _)| *n == app.name) else {
            continue;
        };
        let level = levels.iter().position(|l| *l == p).unwrap_or(0);
        if level == 0 {
            continue;
        }
        let below = levels[level - 1];
        app.depends_on = priorities
            .iter()
            .filter(|(_, q)| *q == below)
            .map(|(n, _)| OutDep {
                app: n.clone(),
                condition: "started",
            })
            .collect();
        app.origin_of("depends_on", "priority");
    }
    t.notes.note(
        None,
        "priority",
        format!(
            "as depends_on (condition \"started\") on the programs of the next lower priority \
             ({} levels): grpm starts them in that order and stops them in reverse; unlike \
             supervisord, stopping a program also stops those that depend on it, and one that \
             cannot start holds them back",
            levels.len()
        ),
    );
}

/// One `[program:NAME]`: the app and its priority.
fn program(
    raw_name: &str,
    s: &Section,
    ctx: &Context,
    taken: &[String],
    notes: &mut Notes,
) -> Option<(OutApp, i64)> {
    let raw_name = if raw_name.is_empty() {
        "program"
    } else {
        raw_name
    };
    let Some(command) = s.get("command") else {
        notes.skip(
            Some(raw_name),
            "command",
            "missing (supervisord needs one too): the program is left out",
        );
        return None;
    };
    let name = unique_name(raw_name, taken, notes);
    let int = |k: &str| s.get(k).map(|v| v.trim().parse::<i64>());
    let numprocs = match int("numprocs") {
        Some(Ok(n)) if n >= 1 => n,
        None => 1,
        Some(_) => {
            notes.skip(
                Some(&name),
                "numprocs",
                "not a count of 1 or more: one process",
            );
            1
        }
    };
    let start = match int("numprocs_start") {
        Some(Ok(n)) => n,
        _ => 0,
    };
    // The program's own environment entries join the expansions (as ENV_KEY), as in
    // supervisord.
    let mut own_env: Env = Env::new();
    let lookup = |n: &str, own: &Env| -> Option<String> {
        match n {
            "program_name" | "group_name" => Some(raw_name.to_string()),
            "process_num" => Some(start.to_string()),
            "numprocs" => Some(numprocs.to_string()),
            _ => n
                .strip_prefix("ENV_")
                .and_then(|v| own.get(v).cloned())
                .or_else(|| common(n, ctx)),
        }
    };
    let mut out = OutApp {
        name: name.clone(),
        ..Default::default()
    };
    let ex = |key: &str, v: &str, own: &Env, notes: &mut Notes| -> Option<String> {
        match expand(v, &|n| lookup(n, own)) {
            Ok((text, used)) => {
                for e in used {
                    notes.note(
                        Some(&name),
                        key,
                        format!("%({e})s expanded with this shell's value at import"),
                    );
                }
                if numprocs > 1 && v.contains("%(process_num)") {
                    notes.note(
                        Some(&name),
                        key,
                        format!(
                            "%(process_num) is {start} in every instance: grpm instances share \
                             one spec"
                        ),
                    );
                }
                Some(text)
            }
            Err(e) => {
                notes.skip(Some(&name), key, e);
                None
            }
        }
    };
    if let Some(v) = s.get("environment") {
        if let Some(text) = ex("environment", v, &own_env, notes) {
            match key_value_pairs(&text) {
                Ok(pairs) => own_env.extend(pairs),
                Err(e) => notes.skip(Some(&name), "environment", e),
            }
        }
    }
    out.env = own_env.clone();
    let Some(cmd) = ex("command", command, &own_env, notes) else {
        notes.skip(
            Some(&name),
            "command",
            "cannot be read: the program is left out",
        );
        return None;
    };
    let Some(cmd) = shlex::split(&cmd) else {
        notes.skip(
            Some(&name),
            "command",
            "unbalanced quotes: the program is left out",
        );
        return None;
    };
    out.cmd = cmd;
    let mut priority = DEFAULT_PRIORITY;
    let mut log_size: Option<u64> = None;
    let mut log_keep: Option<u32> = None;
    for (k, v) in &s.entries {
        let kv = format!("{k} = {v}");
        let skip = |notes: &mut Notes, why: &str| notes.skip(Some(&name), &kv, why);
        let secs = || v.trim().parse::<u64>().ok();
        match k.as_str() {
            "command" | "environment" | "numprocs_start" => {}
            "numprocs" => {
                if numprocs > 1 {
                    out.instances = Some(numprocs as u32);
                    out.origin_of("instances", "numprocs");
                }
                if start != 0 {
                    notes.skip(
                        Some(&name),
                        &format!("numprocs_start = {start}"),
                        "grpm numbers instances itself",
                    );
                }
            }
            "process_name" if v == "%(program_name)s" => {}
            "process_name" => skip(
                notes,
                "grpm names an app's instances itself (the app's name and their numbers)",
            ),
            "priority" => match v.trim().parse() {
                Ok(p) => priority = p,
                Err(_) => skip(notes, "not a number"),
            },
            "autostart" if is_true(v) => {}
            "autostart" => skip(
                notes,
                "grpm start FILE starts every app of the file: leave this program out of it, or \
                 `grpm stop` it afterwards",
            ),
            "startsecs" => skip(
                notes,
                "grpm counts an app online once spawned (or when its [app.ready] check passes), \
                 and a crash loop by max_restarts within restart_window (60s)",
            ),
            "startretries" => match v.trim().parse::<i64>() {
                Ok(n) => {
                    let kept = n.clamp(1, 100_000) as u32;
                    out.max_restarts = Some(kept);
                    out.origin_of("max_restarts", "startretries");
                    notes.note(
                        Some(&name),
                        k,
                        format!(
                            "as max_restarts = {kept}: supervisord counts failed starts in a row \
                             (exits within startsecs); grpm counts restarts within \
                             restart_window (60s), after any exit"
                        ),
                    );
                }
                Err(_) => skip(notes, "not a number"),
            },
            "autorestart" => match v.trim().to_ascii_lowercase().as_str() {
                "true" => out.autorestart = Some(true),
                "false" => out.autorestart = Some(false),
                "unexpected" => {
                    out.autorestart = Some(true);
                    notes.note(
                        Some(&name),
                        &kv,
                        "as autorestart = true: grpm restarts after any exit it did not ask \
                         for, an expected exit code (exitcodes) too",
                    );
                }
                _ => skip(notes, "not true, false or unexpected"),
            },
            "exitcodes" => skip(
                notes,
                "grpm has no expected exit codes: it restarts after any exit it did not ask for \
                 (autorestart = false suits a one-shot job)",
            ),
            "stopsignal" => match Signal::parse(v) {
                Ok(sig) => {
                    out.stop_signal = Some(sig);
                    out.origin_of("stop_signal", k);
                }
                Err(e) => skip(notes, &e),
            },
            "stopwaitsecs" => match secs() {
                Some(n) if n > 0 => {
                    out.kill_timeout = Some(Duration::from_secs(n));
                    out.origin_of("kill_timeout", k);
                }
                _ => skip(notes, "not a number of seconds above 0"),
            },
            "stopasgroup" | "killasgroup" if is_true(v) => {}
            "stopasgroup" | "killasgroup" => notes.note(
                Some(&name),
                &kv,
                "grpm always signals the app's whole tree (its process group and every \
                 descendant)",
            ),
            "user" => {
                out.user = Some(v.clone());
            }
            "umask" => match parse_umask(v) {
                Ok(m) => out.umask = Some(m),
                Err(e) => skip(notes, &e),
            },
            "directory" => {
                if let Some(d) = ex("directory", v, &own_env, notes) {
                    out.cwd = Some(d);
                    out.origin_of("cwd", k);
                }
            }
            "redirect_stderr" if !is_true(v) => {}
            "redirect_stderr" => skip(
                notes,
                &format!(
                    "grpm keeps stdout and stderr apart; `grpm logs {name}` shows both, merged"
                ),
            ),
            "stdout_logfile" | "stderr_logfile" => skip(
                notes,
                &format!(
                    "grpm owns its log paths: $GRPM_HOME/logs/<id>-{name}.out.log and .err.log \
                     (`grpm logs {name}`; describe shows them)"
                ),
            ),
            "stdout_logfile_maxbytes" | "stderr_logfile_maxbytes" => match parse_size(v) {
                Ok(0) => skip(
                    notes,
                    "0 (never rotate): grpm always rotates; its largest size is 1T",
                ),
                Ok(n) => {
                    log_size = Some(log_size.map_or(n, |o| o.max(n)));
                }
                Err(e) => skip(notes, &e),
            },
            "stdout_logfile_backups" | "stderr_logfile_backups" => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => {
                    log_keep = Some(log_keep.map_or(n, |o| o.max(n)));
                }
                _ => skip(notes, "grpm keeps 1 to 100 rotated files"),
            },
            "stdout_capture_maxbytes"
            | "stderr_capture_maxbytes"
            | "stdout_events_enabled"
            | "stderr_events_enabled" => skip(
                notes,
                "supervisord's event protocol; grpm's events and `grpm logs --follow` stream \
                 output instead",
            ),
            "stdout_syslog" | "stderr_syslog" => skip(notes, "grpm writes logs to files only"),
            "serverurl" => skip(
                notes,
                "supervisord's XML-RPC URL for the program; grpm's agent is at \
                 $GRPM_HOME/agent.sock",
            ),
            _ => skip(notes, "not a program key grpm knows"),
        }
    }
    if let Some(n) = log_size {
        out.log_max_size = Some(n);
        out.origin_of("log_max_size", "stdout_logfile_maxbytes");
        notes.note(
            Some(&name),
            "stdout_logfile_maxbytes",
            "as log_max_size, for both streams (the larger, where stdout and stderr differ)",
        );
    }
    if let Some(n) = log_keep {
        out.log_keep = Some(n);
        out.origin_of("log_keep", "stdout_logfile_backups");
    }
    Some((out, priority))
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "on" | "1"
    )
}

#[cfg(test)]
#[path = "supervisord_tests.rs"]
mod tests;
