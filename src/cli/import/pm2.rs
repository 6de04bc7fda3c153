//! PM2 ecosystem files: `.json`, `.yaml`/`.yml` (read here), or `.js`/`.cjs`/`.mjs` (evaluated
//! by `node`, as PM2 itself `require`s them), translated key by key into grpm apps.
//!
//! PM2's own rules are followed where they decide what runs: the interpreter from the script's
//! extension (`.js` → node, `.py` → python3, `.sh` → bash...), `interpreter: "none"` to run the
//! script itself, the name from the script's file name, `exp_backoff_restart_delay` over
//! `restart_delay`, and SIGINT as the stop signal.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Map, Value};

use super::{
    shown,
    toml_out::{self, unique_name, OutApp},
    Notes, Translation,
};
use crate::{cli::Failure, model::parse_size, model::Signal};

/// What the translation may look at besides the file's data.
pub struct Context {
    /// The ecosystem file's directory (scripts are looked for under it).
    pub dir: PathBuf,
    /// This machine's CPU count, for `instances: "max"`.
    pub cpus: u32,
}

/// Reads and translates an ecosystem file.
pub fn import(file: &Path) -> Result<Translation, Failure> {
    let doc = load(file)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    Ok(translate(
        &doc,
        &Context {
            dir: toml_out::dir_of(file),
            cpus,
        },
    ))
}

/// The file's data, whatever its format.
fn load(file: &Path) -> Result<Value, Failure> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let read = || {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))
    };
    match ext.as_str() {
        "json" => serde_json::from_str(&read()?).map_err(|e| {
            Failure::Usage(format!(
                "{}: not JSON: {e} (PM2 also reads JavaScript object syntax in .json files; \
                 rename such a file to .js to import it through node)",
                file.display()
            ))
        }),
        "yaml" | "yml" => {
            yaml(&read()?).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))
        }
        "js" | "cjs" | "mjs" => node(file),
        _ => Err(Failure::Usage(format!(
            "{}: an ecosystem file ends in .json, .yaml, .yml, .js, .cjs or .mjs",
            file.display()
        ))),
    }
}

/// Parses YAML (the first document) into the same data a JSON file gives.
pub fn yaml(text: &str) -> Result<Value, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    fn conv(y: &Yaml) -> Value {
        match y {
            Yaml::Real(s) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::String(s.clone()), Value::Number),
            Yaml::Integer(i) => Value::from(*i),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        let key = match k {
                            Yaml::String(s) | Yaml::Real(s) => s.clone(),
                            Yaml::Integer(i) => i.to_string(),
                            Yaml::Boolean(b) => b.to_string(),
                            _ => String::new(),
                        };
                        (key, conv(v))
                    })
                    .collect(),
            ),
            Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
        }
    }
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    Ok(docs.first().map_or(Value::Null, conv))
}

/// What node prints before the data, so that anything the file itself prints is skipped.
const MARK: &str = "\u{0}GRPM-ECOSYSTEM\u{0}";

/// Evaluates a JavaScript ecosystem file with node, as PM2 does (`require`; `import()` here, so
/// that ES modules load too), and reads back `JSON.stringify` of what it exports.
fn node(file: &Path) -> Result<Value, Failure> {
    let abs = file
        .canonicalize()
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let script = format!(
        "import(require('url').pathToFileURL(process.argv[1]).href).then((m) => {{\
           const c = m && m.default !== undefined ? m.default : m;\
           process.stdout.write({MARK:?} + JSON.stringify(c === undefined ? null : c));\
           process.exit(0);\
         }}, (e) => {{ process.stderr.write(String((e && e.stack) || e) + '\\n'); process.exit(1); }});"
    );
    let child = Command::new("node")
        .arg("-e")
        .arg(&script)
        .arg(&abs)
        .current_dir(abs.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::Failed(format!(
                "{}: a .js ecosystem file is a program: importing it needs node, which is not \
                 installed (not in PATH). Install Node.js, or import a .json or .yaml copy of it",
                file.display()
            )))
        }
        Err(e) => return Err(Failure::Failed(format!("cannot run node: {e}"))),
    };
    // Stderr on a thread, so that neither pipe can fill while the other is read.
    let mut stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child
        .wait()
        .map_err(|e| Failure::Failed(format!("node: {e}")))?;
    let errors = errors.join().unwrap_or_default();
    let data = out.rfind(MARK).map(|at| &out[at + MARK.len()..]);
    match (status.success(), data) {
        (true, Some(json)) => serde_json::from_str(json)
            .map_err(|e| Failure::Failed(format!("{}: node printed no JSON: {e}", file.display()))),
        _ => Err(Failure::Usage(format!(
            "{}: node could not load it ({status}): {}",
            file.display(),
            errors.trim()
        ))),
    }
}

/// The apps of an ecosystem document: `{ apps: [...] }`, an array of apps, or one app.
pub fn translate(doc: &Value, ctx: &Context) -> Translation {
    let mut t = Translation::default();
    let apps: Vec<&Value> = match doc {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("apps") => {
            for (k, v) in o {
                match k.as_str() {
                    "apps" => {}
                    "deploy" => t.notes.skip(
                        None,
                        "deploy",
                        "deployment (ssh, git, post-deploy hooks) is not grpm's job: keep `pm2 \
                         deploy` or your CI for it",
                    ),
                    _ => t.notes.skip(
                        None,
                        &format!("{k} = {}", shown(v)),
                        "not an ecosystem key grpm knows",
                    ),
                }
            }
            match &o["apps"] {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            }
        }
        Value::Object(_) => vec![doc],
        other => {
            t.notes.skip(
                None,
                &shown(other),
                "an ecosystem file holds { apps: [...] }",
            );
            Vec::new()
        }
    };
    let mut names = Vec::new();
    for (i, a) in apps.into_iter().enumerate() {
        let Some(obj) = a.as_object() else {
            t.notes.skip(
                None,
                &format!("apps[{i}] = {}", shown(a)),
                "an app is an object",
            );
            continue;
        };
        if let Some(out) = app(obj, i, ctx, &names, &mut t.notes) {
            names.push(out.name.clone());
            t.apps.push(out);
        }
    }
    if !t.apps.is_empty() {
        t.notes.note(
            None,
            "stop_signal",
            "every app stops with SIGINT, as under PM2 (grpm's default is SIGTERM)",
        );
    }
    t
}

/// A script's interpreter as PM2 picks it from the extension.
fn interpreter_for(script: &str) -> Option<&'static str> {
    let ext = Path::new(script.trim_end_matches('/'))
        .extension()?
        .to_str()?;
    Some(match ext {
        "js" | "cjs" | "mjs" => "node",
        "py" => "python3",
        "sh" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        "ts" | "tsx" => "bun",
        "coffee" => "coffee",
        "ls" => "lsc",
        _ => return None,
    })
}

/// Arguments as PM2 takes them: an array, or one string split like a shell would.
fn argv(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => shlex::split(s),
        Value::Array(a) => a.iter().map(text).collect(),
        _ => None,
    }
}

/// A scalar as text (env values, arguments); `None` for objects, arrays and null.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number of milliseconds, as a number or numeric text.
fn millis(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One path or several.
fn paths(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|p| p.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

fn app(
    obj: &Map<String, Value>,
    index: usize,
    ctx: &Context,
    taken: &[String],
    notes: &mut Notes,
) -> Option<OutApp> {
    let script = obj
        .get("script")
        .or_else(|| obj.get("exec"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let raw_name = match (obj.get("name").and_then(Value::as_str), script) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        // PM2's default: the script's file name without its extension.
        (_, Some(s)) => {
            let p = Path::new(s.trim_end_matches('/'));
            p.file_stem()
                .map_or_else(|| "app".into(), |n| n.to_string_lossy().into_owned())
        }
        _ => format!("app-{}", index + 1),
    };
    let Some(script) = script else {
        notes.skip(
            Some(&raw_name),
            "script",
            "missing (PM2 needs one too): the app is left out",
        );
        return None;
    };
    let name = unique_name(&raw_name, taken, notes);
    let mut out = OutApp {
        name: name.clone(),
        stop_signal: Some(Signal::parse("SIGINT").expect("a known signal")),
        ..Default::default()
    };
    let skip = |notes: &mut Notes, k: &str, v: &Value, why: &str| {
        notes.skip(Some(&name), &format!("{k} = {}", shown(v)), why);
    };
    let mut ignore_watch = None;
    for (k, v) in obj {
        match k.as_str() {
            "name"
            | "script"
            | "exec"
            | "args"
            | "interpreter"
            | "exec_interpreter"
            | "interpreter_args"
            | "node_args"
            | "interpreterArgs"
            | "restart_delay"
            | "exp_backoff_restart_delay" => {}
            "cwd" => match v.as_str() {
                Some(c) if !c.is_empty() => out.cwd = Some(c.to_string()),
                _ => skip(notes, k, v, "not a directory"),
            },
            "env" => env(v, &mut out.env, &name, k, notes),
            _ if k.starts_with("env_") && k.len() > 4 => {
                let profile = &k[4..];
                let mut vars = Default::default();
                env(v, &mut vars, &name, k, notes);
                if v.is_object() {
                    out.env_profiles.insert(profile.to_string(), vars);
                }
            }
            "port" => match text(v) {
                Some(p) => {
                    out.env.insert("PORT".into(), p);
                }
                None => skip(notes, k, v, "not a port number"),
            },
            "instances" => instances(v, ctx, &mut out, notes),
            "exec_mode" => match v.as_str() {
                Some("fork" | "fork_mode") => {}
                Some("cluster" | "cluster_mode") => skip(
                    notes,
                    k,
                    v,
                    "grpm has no Node cluster mode: each instance is a process of its own, as in \
                     PM2's fork mode, and instances share no listening port through a master",
                ),
                _ => skip(notes, k, v, "PM2 knows fork and cluster only"),
            },
            "autorestart" => match v.as_bool() {
                Some(b) => out.autorestart = Some(b),
                None => skip(notes, k, v, "not true or false"),
            },
            "max_restarts" => match v.as_i64() {
                Some(n) => {
                    let kept = n.clamp(1, 100_000) as u32;
                    out.max_restarts = Some(kept);
                    let bound = if i64::from(kept) != n {
                        format!(" (written as {kept}: grpm's bounds are 1 to 100000)")
                    } else {
                        String::new()
                    };
                    notes.note(
                        Some(&name),
                        k,
                        format!(
                            "PM2 counts restarts that came sooner than min_uptime after a start; \
                             grpm counts restarts within restart_window (60s){bound}"
                        ),
                    );
                }
                None => skip(notes, k, v, "not a whole number"),
            },
            "min_uptime" => skip(
                notes,
                k,
                v,
                "grpm decides a crash loop by max_restarts within restart_window (60s), not by \
                 how long each run lasted",
            ),
            "kill_timeout" => match millis(v) {
                Some(0) | None => skip(notes, k, v, "not a positive number of milliseconds"),
                Some(ms) => out.kill_timeout = Some(Duration::from_millis(ms)),
            },
            "max_memory_restart" => {
                let bytes = match v {
                    Value::Number(n) => n.as_u64().ok_or_else(|| "not a size".to_string()),
                    Value::String(s) => parse_size(s),
                    _ => Err("not a size".into()),
                };
                match bytes {
                    Ok(b) => {
                        out.max_memory = Some(b);
                        out.origin_of("max_memory", k);
                        notes.note(
                            Some(&name),
                            k,
                            "as max_memory: grpm measures the app's whole tree every sample \
                             interval (2s) and restarts after 2 samples over it; PM2 checks the \
                             main process every 30s",
                        );
                    }
                    Err(e) => skip(notes, k, v, &e),
                }
            }
            "cron_restart" | "cron" => match v {
                Value::String(s) if s.trim() != "0" && !s.trim().is_empty() => {
                    out.restart_schedule = Some(s.clone());
                    out.origin_of("restart_schedule", k);
                }
                // PM2's way of saying "no schedule".
                Value::Number(n) if n.as_i64() == Some(0) => {}
                Value::String(_) => {}
                _ => skip(notes, k, v, "not a cron expression"),
            },
            "watch" => match v {
                Value::Bool(true) => out.watch = vec![".".into()],
                Value::Bool(false) => {}
                _ => match paths(v) {
                    Some(p) => out.watch = p,
                    None => skip(notes, k, v, "not true, a path or a list of paths"),
                },
            },
            "ignore_watch" => ignore_watch = Some(v),
            "watch_delay" => match millis(v) {
                Some(ms) if ms > 0 => {
                    out.watch_debounce = Some(Duration::from_millis(ms));
                    out.origin_of("watch_debounce", k);
                }
                _ => skip(notes, k, v, "not a positive number of milliseconds"),
            },
            "time" => match v.as_bool() {
                Some(b) => {
                    out.log_time = out.log_time || b;
                    out.origin_of("log_time", k);
                }
                None => skip(notes, k, v, "not true or false"),
            },
            "log_date_format" => {
                out.log_time = true;
                notes.note(
                    Some(&name),
                    k,
                    "as log_time = true: grpm stamps each line in its own format (RFC 3339, UTC, \
                     milliseconds)",
                );
            }
            "out_file" | "out" | "output" | "out_log" | "error_file" | "error" | "err"
            | "err_file" | "err_log" => skip(
                notes,
                k,
                v,
                &format!(
                    "grpm owns its log paths: $GRPM_HOME/logs/<id>-{name}.out.log and .err.log \
                     (`grpm logs {name}`; describe shows them)"
                ),
            ),
            "log_file" | "log" => skip(
                notes,
                k,
                v,
                &format!(
                    "grpm keeps stdout and stderr in files of its own; `grpm logs {name}` shows \
                     both, merged"
                ),
            ),
            "pid_file" | "pid" => skip(
                notes,
                k,
                v,
                "grpm keeps pids itself (`grpm list --json`, `describe`)",
            ),
            "merge_logs" | "combine_logs" => skip(
                notes,
                k,
                v,
                "grpm keeps one log per app and stream, for all its instances",
            ),
            "disable_logs" => skip(notes, k, v, "grpm always keeps an app's output"),
            "uid" | "user" => match v.as_str() {
                Some(u) => {
                    out.user = Some(u.to_string());
                    out.origin_of("user", k);
                }
                None => skip(notes, k, v, "grpm takes a user name"),
            },
            "gid" => match v.as_str() {
                Some(g) => {
                    out.group = Some(g.to_string());
                    out.origin_of("group", k);
                }
                None => skip(notes, k, v, "grpm takes a group name"),
            },
            "autostart" if v.as_bool() == Some(true) => {}
            "autostart" => skip(
                notes,
                k,
                v,
                "grpm start FILE starts every app of the file: leave this app out of it, or \
                 `grpm stop` it afterwards",
            ),
            "treekill" if v.as_bool() == Some(true) => {}
            "treekill" => skip(notes, k, v, "grpm always ends an app's whole process tree"),
            "wait_ready" if v.as_bool() == Some(false) => {}
            "wait_ready" => skip(
                notes,
                k,
                v,
                "grpm has no process.send('ready'): declare an [app.ready] check (http, tcp, \
                 log or notify) instead",
            ),
            "listen_timeout" => skip(
                notes,
                k,
                v,
                "goes with wait_ready; an [app.ready] check's start_timeout says the same",
            ),
            "shutdown_with_message" if v.as_bool() == Some(false) => {}
            "shutdown_with_message" => skip(
                notes,
                k,
                v,
                "grpm stops apps with a signal (stop_signal), not a message",
            ),
            "stop_exit_codes" => skip(
                notes,
                k,
                v,
                "grpm restarts after any unexpected exit, whatever its code; autorestart = \
                 false suits a one-shot job",
            ),
            "namespace" => skip(
                notes,
                k,
                v,
                "grpm has no namespaces: app names are unique per agent",
            ),
            "instance_var" | "increment_var" => {
                skip(notes, k, v, "grpm sets its own variables in each instance")
            }
            "filter_env" => skip(
                notes,
                k,
                v,
                "grpm captures the creating shell's environment whole (declared env wins)",
            ),
            "force" => skip(notes, k, v, "grpm never runs an app twice"),
            "append_env_to_name" => skip(notes, k, v, "app names do not change with profiles"),
            "vizion"
            | "pmx"
            | "automation"
            | "source_map_support"
            | "disable_source_map_support"
            | "trace"
            | "disable_trace"
            | "v8"
            | "event_loop_inspector"
            | "deep_monitoring"
            | "io"
            | "post_update"
            | "install_url"
            | "name_prefix"
            | "execute_command"
            | "windowsHide"
            | "kill_retry_time"
            | "log_type"
            | "username"
            | "write"
            | "watch_options" => skip(
                notes,
                k,
                v,
                "a setting of PM2 itself (its Node runtime, Keymetrics or chokidar) with no grpm \
                 counterpart",
            ),
            _ => skip(notes, k, v, "not a PM2 app key grpm knows"),
        }
    }
    out.cmd = command(obj, script, ctx, &out, notes);
    restart_delays(obj, &mut out, notes);
    if let Some(v) = ignore_watch {
        match paths(v) {
            Some(_) if out.watch.is_empty() => skip(notes, "ignore_watch", v, "nothing is watched"),
            Some(p) => {
                out.watch_ignore = p;
                out.origin_of("watch_ignore", "ignore_watch");
                notes.note(
                    Some(&name),
                    "ignore_watch",
                    "as watch_ignore: grpm matches `*` and `?` globs against path components \
                     (PM2 also takes regular expressions); .git, node_modules, __pycache__, \
                     target and *.log are always ignored",
                );
            }
            None => skip(notes, "ignore_watch", v, "not a path or a list of paths"),
        }
    }
    Some(out)
}

/// `env` or `env_<profile>`: an object of scalars.
fn env(v: &Value, into: &mut crate::model::Env, app: &str, key: &str, notes: &mut Notes) {
    let Some(map) = v.as_object() else {
        notes.skip(
            Some(app),
            &format!("{key} = {}", shown(v)),
            "not an object of variables",
        );
        return;
    };
    for (name, value) in map {
        match text(value) {
            Some(t) => {
                into.insert(name.clone(), t);
            }
            None => notes.skip(
                Some(app),
                &format!("{key}.{name} = {}", shown(value)),
                "a variable's value is text, a number or true/false",
            ),
        }
    }
}

/// The command: interpreter, its arguments, the script, the script's arguments.
fn command(
    obj: &Map<String, Value>,
    script: &str,
    ctx: &Context,
    out: &OutApp,
    notes: &mut Notes,
) -> Vec<String> {
    let name = out.name.as_str();
    let list = |notes: &mut Notes, key: &str| -> Vec<String> {
        let Some(v) = obj.get(key) else {
            return Vec::new();
        };
        argv(v).unwrap_or_else(|| {
            notes.skip(
                Some(name),
                &format!("{key} = {}", shown(v)),
                "not a list of arguments (or a string with balanced quotes)",
            );
            Vec::new()
        })
    };
    let args = list(notes, "args");
    let interp_key = ["interpreter_args", "node_args", "interpreterArgs"]
        .into_iter()
        .find(|k| obj.contains_key(*k));
    let interp_args = interp_key.map_or_else(Vec::new, |k| list(notes, k));
    let declared = obj
        .get("interpreter")
        .or_else(|| obj.get("exec_interpreter"))
        .and_then(Value::as_str);
    let interpreter = match declared {
        Some("none" | "") => None,
        Some(i) => Some(i.to_string()),
        None => interpreter_for(script).map(str::to_string),
    };
    let dir = ctx.dir.join(out.cwd.as_deref().unwrap_or("."));
    let mut cmd = Vec::new();
    match interpreter {
        Some(i) => {
            cmd.push(i);
            cmd.extend(interp_args);
            cmd.push(script.to_string());
        }
        None => {
            if let Some(k) = interp_key {
                notes.skip(
                    Some(name),
                    k,
                    "the script runs by itself, with no interpreter to pass them to",
                );
            }
            let path = dir.join(script);
            if script.ends_with('/') || path.is_dir() {
                // PM2 runs what is not a binary with node: a directory is a Node package.
                cmd.push("node".to_string());
                cmd.push(script.to_string());
            } else if !script.contains('/') && path.is_file() {
                // grpm looks a bare name up in PATH; PM2 finds it in the cwd first.
                cmd.push(format!("./{script}"));
            } else {
                cmd.push(script.to_string());
            }
        }
    }
    cmd.extend(args);
    cmd
}

/// `restart_delay` (a fixed delay) and `exp_backoff_restart_delay` (a growing one, which PM2
/// prefers when both are set) as grpm's doubling delay between two bounds.
fn restart_delays(obj: &Map<String, Value>, out: &mut OutApp, notes: &mut Notes) {
    let name = out.name.clone();
    let fixed = obj.get("restart_delay");
    let grow = obj.get("exp_backoff_restart_delay");
    let bad = |notes: &mut Notes, k: &str, v: &Value| {
        notes.skip(
            Some(&name),
            &format!("{k} = {}", shown(v)),
            "not a number of milliseconds",
        )
    };
    if let Some(v) = grow {
        match millis(v) {
            Some(ms) if ms > 0 => {
                out.restart_delay = Some(Duration::from_millis(ms));
                out.restart_delay_max = Some(Duration::from_millis(ms.max(15_000)));
                out.origin_of("restart_delay", "exp_backoff_restart_delay");
                notes.note(
                    Some(&name),
                    "exp_backoff_restart_delay",
                    format!(
                        "as restart_delay = {ms}ms doubling up to restart_delay_max = {}: PM2 \
                         grows the delay by 1.5 up to 15s; both start over after 30s up",
                        crate::model::format_exact(Duration::from_millis(ms.max(15_000)))
                    ),
                );
                if let Some(f) = fixed {
                    notes.skip(
                        Some(&name),
                        &format!("restart_delay = {}", shown(f)),
                        "exp_backoff_restart_delay takes its place, as in PM2",
                    );
                }
                return;
            }
            Some(_) => {}
            None => bad(notes, "exp_backoff_restart_delay", v),
        }
    }
    if let Some(v) = fixed {
        match millis(v) {
            Some(0) => notes.note(
                Some(&name),
                "restart_delay",
                "0: PM2 restarts at once; grpm keeps its backoff (100ms doubling up to 3s), \
                 which a crash loop needs",
            ),
            Some(ms) => {
                out.restart_delay = Some(Duration::from_millis(ms));
                out.restart_delay_max = Some(Duration::from_millis(ms));
                notes.note(
                    Some(&name),
                    "restart_delay",
                    "a fixed delay: restart_delay_max is set to the same value (grpm's delay \
                     otherwise doubles after each restart)",
                );
            }
            None => bad(notes, "restart_delay", v),
        }
    }
}

/// `instances`: a count, or `max`/0 (every CPU), or -N (every CPU but N).
fn instances(v: &Value, ctx: &Context, out: &mut OutApp, notes: &mut Notes) {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if s.trim() == "max" => Some(0),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let Some(n) = n else {
        notes.skip(
            Some(&out.name),
            &format!("instances = {}", shown(v)),
            "not a count or \"max\"",
        );
        return;
    };
    let cpus = i64::from(ctx.cpus);
    let count = if n > 0 { n } else { (cpus + n).max(1) };
    if n <= 0 {
        notes.note(
            Some(&out.name),
            &format!("instances = {}", shown(v)),
            format!(
                "written as {count}, from this machine's {cpus} CPUs: edit it for the machine \
                 that will run it"
            ),
        );
    }
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    if count > 1 {
        out.instances = Some(count);
    }
}

#[cfg(test)]
#[path = "pm2_tests.rs"]
mod tests;
