//! The grpm app file an import writes. One [`OutApp`] per app, in the keys `grpm start FILE`
//! reads (see `cli::appfile`), emitted with the `toml` crate so that quoting is always right, and
//! checked by the model's own rules ([`AppDraft::validate`]) before it is printed: a value grpm
//! would refuse is left out and reported, never written into a file that then fails to load.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Serialize, Serializer};

use super::Notes;
use crate::model::{
    format_exact, validate_env, validate_name, AppDraft, Condition, Dependency, Env, Field, Signal,
};

/// One `[[app]]` table. Field order is the order of the keys in the file; tables (`env`,
/// `env_profiles`) come last, as TOML wants them after plain values.
#[derive(Serialize, Clone, Default, Debug, PartialEq)]
pub struct OutApp {
    pub name: String,
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Several instances of the app (the `instances` key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "dur")]
    pub kill_timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "signal")]
    pub stop_signal: Option<Signal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autorestart: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "dur")]
    pub restart_delay: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "dur")]
    pub restart_delay_max: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "size")]
    pub max_memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_schedule: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watch_ignore: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "dur")]
    pub watch_debounce: Option<Duration>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub log_time: bool,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "size")]
    pub log_max_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "umask")]
    pub umask: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<OutDep>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: Env,
    /// `[app.env_profiles.NAME]`: variables added by `--env-profile NAME`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_profiles: BTreeMap<String, Env>,
    /// The source's key behind each grpm key, for reports ("restart_schedule" ← "cron_restart").
    #[serde(skip)]
    pub origin: BTreeMap<&'static str, String>,
}

/// `{ app = "db", condition = "started" }`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct OutDep {
    pub app: String,
    pub condition: &'static str,
}

fn dur<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_exact(*d)),
        None => s.serialize_none(),
    }
}

fn signal<S: Serializer>(v: &Option<Signal>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.to_string()),
        None => s.serialize_none(),
    }
}

fn size<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&format_size(*v)),
        None => s.serialize_none(),
    }
}

fn umask<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&format!("{v:03o}")),
        None => s.serialize_none(),
    }
}

/// `200M`, `1G`, `512K`, or bytes: what `parse_size` reads back to the same number.
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n % (1u64 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Turns a name from another tool into one grpm accepts (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`,
/// not `all`, not all digits): other characters become `-`.
pub fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    s.truncate(64);
    if s.is_empty() {
        s = "app".into();
    }
    if validate_name(&s).is_err() {
        s = format!("app-{s}");
        s.truncate(64);
    }
    s
}

/// A name grpm accepts and not yet `taken`, noting any change.
pub fn unique_name(raw: &str, taken: &[String], notes: &mut Notes) -> String {
    let base = sanitize_name(raw);
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{}-{n}", &base[..base.len().min(60)]);
        n += 1;
    }
    let mut why = Vec::new();
    if base != raw {
        why.push("grpm names are letters, digits, '.', '_' and '-'");
    }
    if name != base {
        why.push("another app has that name (grpm names are unique)");
    }
    if !why.is_empty() {
        notes.note(
            Some(&name),
            "name",
            format!("{raw:?} renamed {name:?}: {}", why.join("; ")),
        );
    }
    name
}

impl OutApp {
    /// The draft this app declares, for the model's checks; a relative cwd is taken from `dir`
    /// (where the app file will be read from).
    pub fn draft(&self, dir: &Path) -> AppDraft {
        AppDraft {
            name: self.name.clone(),
            cmd: self.cmd.clone(),
            cwd: Some(match &self.cwd {
                Some(c) => dir.join(c),
                None => dir.to_path_buf(),
            }),
            env: self.env.clone(),
            kill_timeout: self.kill_timeout,
            stop_signal: self.stop_signal,
            autorestart: self.autorestart,
            restart_delay: self.restart_delay,
            restart_delay_max: self.restart_delay_max,
            max_restarts: self.max_restarts,
            restart_window: None,
            log_time: self.log_time,
            log_max_size: self.log_max_size,
            log_keep: self.log_keep,
            ready: None,
            alive: None,
            depends_on: self
                .depends_on
                .iter()
                .map(|d| Dependency {
                    app: d.app.clone(),
                    condition: Condition::parse(d.condition).unwrap_or(Condition::Ready),
                })
                .collect(),
            restart_schedule: self.restart_schedule.clone(),
            watch: self.watch.clone(),
            watch_ignore: self.watch_ignore.clone(),
            watch_debounce: self.watch_debounce,
            user: self.user.clone(),
            group: self.group.clone(),
            umask: self.umask,
            limits: BTreeMap::new(),
            max_memory: self.max_memory,
            memory_grace: None,
            // Profiles are checked on their own (`bad_env`); the file is known when it is read.
            profile: None,
            file: None,
            instances: self.instances,
            sockets: Vec::new(),
            reload_grace: None,
        }
    }

    /// How a grpm key is named in reports: with the source's key when it had another name.
    fn key(&self, grpm: &'static str) -> String {
        match self.origin.get(grpm) {
            Some(src) if src != grpm => format!("{src} (as {grpm})"),
            _ => grpm.to_string(),
        }
    }

    /// Records that grpm key `grpm` came from the source's `src`.
    pub fn origin_of(&mut self, grpm: &'static str, src: &str) {
        self.origin.insert(grpm, src.to_string());
    }

    /// The app as grpm would accept it: every value the model refuses is left out and reported
    /// (an environment entry at a time; other settings by the field the model names). `None`
    /// (reported) when the name or the command itself is refused.
    pub fn checked(mut self, dir: &Path, notes: &mut Notes) -> Option<OutApp> {
        let name = self.name.clone();
        let bad_env = |env: &mut Env, notes: &mut Notes, key: &str| {
            env.retain(|k, v| {
                let one = Env::from([(k.clone(), v.clone())]);
                match validate_env(&one) {
                    Ok(()) => true,
                    Err(e) => {
                        notes.skip(Some(&name), &format!("{key}.{k}"), e);
                        false
                    }
                }
            });
        };
        bad_env(&mut self.env, notes, "env");
        for (profile, env) in &mut self.env_profiles {
            bad_env(env, notes, &format!("env_profiles.{profile}"));
        }
        // Each round removes at least one setting, so this ends.
        for _ in 0..32 {
            let Err(bad) = self.draft(dir).validate() else {
                return Some(self);
            };
            let (keys, problem) = (self.drop_field(bad.field), bad.problem);
            match keys {
                Some(keys) => notes.skip(
                    Some(&name),
                    &keys.join(", "),
                    format!("{problem} (grpm refuses it)"),
                ),
                None => {
                    notes.skip(
                        Some(&name),
                        bad.field.key(),
                        format!("{problem}: the app is left out"),
                    );
                    return None;
                }
            }
        }
        None
    }

    /// Leaves out the settings behind `field`; their report names, or `None` when the app
    /// cannot go without them (its name, its command).
    fn drop_field(&mut self, field: Field) -> Option<Vec<String>> {
        let mut gone = Vec::new();
        let mut take = |this: &mut OutApp, key: &'static str, present: bool| {
            if present {
                gone.push(this.key(key));
            }
        };
        match field {
            Field::Name | Field::Cmd => return None,
            Field::Cwd => {
                take(self, "cwd", self.cwd.is_some());
                self.cwd = None;
            }
            Field::Env => {
                take(self, "env", true);
                self.env.clear();
            }
            Field::KillTimeout => {
                take(self, "kill_timeout", true);
                self.kill_timeout = None;
            }
            Field::StopSignal => {
                take(self, "stop_signal", true);
                self.stop_signal = None;
            }
            Field::RestartDelay | Field::RestartDelayMax | Field::RestartWindow => {
                take(self, "restart_delay", self.restart_delay.is_some());
                take(self, "restart_delay_max", self.restart_delay_max.is_some());
                self.restart_delay = None;
                self.restart_delay_max = None;
            }
            Field::MaxRestarts => {
                take(self, "max_restarts", true);
                self.max_restarts = None;
            }
            Field::LogMaxSize => {
                take(self, "log_max_size", true);
                self.log_max_size = None;
            }
            Field::LogKeep => {
                take(self, "log_keep", true);
                self.log_keep = None;
            }
            Field::Ready | Field::Alive => {}
            Field::DependsOn => {
                take(self, "depends_on", true);
                self.depends_on.clear();
            }
            Field::RestartSchedule => {
                take(self, "restart_schedule", true);
                self.restart_schedule = None;
            }
            Field::Watch => {
                take(self, "watch", !self.watch.is_empty());
                take(self, "watch_ignore", !self.watch_ignore.is_empty());
                take(self, "watch_debounce", self.watch_debounce.is_some());
                self.watch.clear();
                self.watch_ignore.clear();
                self.watch_debounce = None;
            }
            Field::RunAs => {
                take(self, "user", self.user.is_some());
                take(self, "group", self.group.is_some());
                take(self, "umask", self.umask.is_some());
                self.user = None;
                self.group = None;
                self.umask = None;
            }
            Field::MaxMemory => {
                take(self, "max_memory", true);
                self.max_memory = None;
            }
            Field::EnvProfile => {
                take(self, "env_profiles", !self.env_profiles.is_empty());
                self.env_profiles.clear();
            }
            Field::File | Field::Sockets | Field::ReloadGrace => {}
            Field::Instances => {
                take(self, "instances", self.instances.is_some());
                self.instances = None;
            }
        }
        Some(gone)
    }
}

#[derive(Serialize)]
struct Doc<'a> {
    app: &'a [OutApp],
}

/// The app file: `header` (each line becomes a `#` comment), then the apps.
pub fn render(header: &str, apps: &[OutApp]) -> Result<String, String> {
    let body = toml::to_string(&Doc { app: apps })
        .map_err(|e| format!("cannot write the app file: {e}"))?;
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&body);
    Ok(out)
}

/// The directory an imported file's relative paths are taken from.
pub fn dir_of(file: &Path) -> PathBuf {
    file.canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::appfile;

    fn app(name: &str) -> OutApp {
        OutApp {
            name: name.into(),
            cmd: vec!["sleep".into(), "it's \"10\"".into()],
            ..Default::default()
        }
    }

    #[test]
    fn renders_what_the_app_file_reader_reads() {
        let mut a = app("web");
        a.cwd = Some("www".into());
        a.kill_timeout = Some(Duration::from_millis(1600));
        a.stop_signal = Some(Signal::parse("INT").unwrap());
        a.restart_delay = Some(Duration::from_secs(4));
        a.restart_delay_max = Some(Duration::from_secs(4));
        a.max_memory = Some(200 << 20);
        a.log_max_size = Some(50 << 20);
        a.umask = Some(0o22);
        a.env.insert("QUOTE".into(), "a \"b\" \\ 'c'\nd".into());
        let mut b = app("db");
        b.depends_on = vec![];
        a.depends_on = vec![OutDep {
            app: "db".into(),
            condition: "started",
        }];
        let text = render("from a test", &[b, a]).unwrap();
        assert!(text.starts_with("# from a test\n"), "{text}");
        assert!(text.contains("max_memory = \"200M\""), "{text}");
        assert!(text.contains("umask = \"022\""), "{text}");
        let drafts = appfile::parse(&text, "out.toml", Some(Path::new("/srv")), None).unwrap();
        assert_eq!(drafts.len(), 2);
        let web = &drafts[1];
        assert_eq!(web.cmd, ["sleep", "it's \"10\""]);
        assert_eq!(web.cwd, Some("/srv/www".into()));
        assert_eq!(web.kill_timeout, Some(Duration::from_millis(1600)));
        assert_eq!(web.env["QUOTE"], "a \"b\" \\ 'c'\nd");
        assert_eq!(web.max_memory, Some(200 << 20));
        assert_eq!(web.depends_on[0].condition, Condition::Started);
        assert_eq!(web.umask, Some(0o22));
    }

    #[test]
    fn names_are_made_acceptable_and_unique() {
        let mut notes = Notes::default();
        assert_eq!(sanitize_name("Express JS PM2"), "Express-JS-PM2");
        assert_eq!(sanitize_name("all"), "app-all");
        assert_eq!(sanitize_name("42"), "app-42");
        assert_eq!(sanitize_name("__x"), "x");
        assert_eq!(sanitize_name("!!!"), "app");
        let taken = vec!["web".to_string()];
        assert_eq!(unique_name("web", &taken, &mut notes), "web-2");
        assert_eq!(notes.lines().len(), 1);
    }

    #[test]
    fn refused_values_are_left_out_and_reported() {
        let mut notes = Notes::default();
        let mut a = app("w");
        a.restart_schedule = Some("61 * * * *".into());
        a.origin_of("restart_schedule", "cron_restart");
        a.max_memory = Some(1000);
        a.env.insert("A=B".into(), "1".into());
        a.env.insert("OK".into(), "1".into());
        let a = a.checked(Path::new("/"), &mut notes).unwrap();
        assert_eq!(a.restart_schedule, None);
        assert_eq!(a.max_memory, None);
        assert_eq!(a.env.len(), 1);
        let text = notes.lines().join("\n");
        assert!(
            text.contains("not translated: w: cron_restart (as restart_schedule): \"61"),
            "{text}"
        );
        assert!(text.contains("max_memory"), "{text}");
        assert!(text.contains("env.A=B"), "{text}");

        let mut bad = app("w");
        bad.cmd = vec![String::new()];
        assert!(bad.checked(Path::new("/"), &mut notes).is_none());
    }
}
