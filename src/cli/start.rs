//! `grpm start`: a new app from flags (`--name N -- CMD`), the apps of an app file, or
//! existing apps by target. Flags and app files both become model drafts, checked by the
//! model's rules before anything is sent (the agent runs the same rules again).

use std::path::{Path, PathBuf};

use super::{
    action::{check_target, print_apps, report},
    appfile,
    args::StartArgs,
    checks,
    failure::{out, Failure},
    fleet::{self, prefix, Place},
};
use crate::{
    client::{Client, Code},
    model::{validate_name, AppDraft, AppInfo, Env, Field},
};

pub async fn start(place: &Place, args: StartArgs, json: bool) -> Result<(), Failure> {
    let remote = place.is_remote();
    let no_wait = args.no_wait;
    if !args.cmd.is_empty() {
        if let Some(what) = &args.what {
            return Err(Failure::Usage(format!(
                "give either a command after -- or {what:?}, not both"
            )));
        }
        let draft = draft_from_args(args, remote)?;
        // A remote agent gives its apps its own environment, never this shell's.
        let base_env = (!remote).then(caller_env);
        let outcomes = place
            .each(|mut c| {
                let (draft, base_env) = (draft.clone(), base_env.clone());
                async move {
                    c.set_no_wait(no_wait);
                    Ok(c.start(&[draft], base_env.as_ref()).await?)
                }
            })
            .await;
        return report(outcomes, json, "started");
    }
    let Some(what) = args.what.clone() else {
        return Err(Failure::Usage(
            "nothing to start: give `--name NAME -- CMD [ARG...]`, an app file, or a target".into(),
        ));
    };
    let is_file = what.ends_with(".toml") || Path::new(&what).is_file();
    if args.has_spec_flags() {
        return Err(Failure::Usage(format!(
            "options such as --name or --env describe a new app; put the command after -- (or, for {what:?}, drop them)"
        )));
    }
    if is_file {
        let drafts = appfile::load(Path::new(&what), remote).map_err(Failure::Usage)?;
        return start_file(place, drafts, no_wait, json).await;
    }
    check_target(&what)?;
    let outcomes = place
        .each(|mut c| {
            let target = what.clone();
            async move {
                c.set_no_wait(no_wait);
                Ok(c.start_target(&target).await?)
            }
        })
        .await;
    report(outcomes, json, "started")
}

/// The flag that sets each field, to say where a refused value came from.
fn flag(field: Field) -> Option<&'static str> {
    Some(match field {
        Field::Name => "--name",
        Field::Cmd => return None,
        Field::Cwd => "--cwd",
        Field::Env => "--env",
        Field::KillTimeout => "--kill-timeout",
        Field::StopSignal => "--stop-signal",
        Field::RestartDelay => "--restart-delay",
        Field::RestartDelayMax => "--restart-delay-max",
        Field::MaxRestarts => "--max-restarts",
        Field::RestartWindow => "--restart-window",
        Field::LogMaxSize => "--log-max-size",
        Field::LogKeep => "--log-keep",
        Field::Ready => "--ready-*",
        Field::Alive => "--alive-*",
        Field::DependsOn => "--depends-on",
        Field::RestartSchedule => "--restart-schedule",
        Field::Watch => "--watch",
        Field::RunAs => "--user",
        Field::MaxMemory => "--max-memory",
        Field::Instances => "--instances",
        Field::Sockets => "--socket",
        Field::ReloadGrace => "--reload-grace",
    })
}

/// The draft of `start --name ... -- CMD`, checked by the model's rules. Locally a relative or
/// missing --cwd is taken from this shell; on a remote agent --cwd must be absolute, and
/// without it the app runs in the agent's home directory.
fn draft_from_args(a: StartArgs, remote: bool) -> Result<AppDraft, Failure> {
    let name = match a.name {
        Some(n) => n,
        None => {
            let base = Path::new(&a.cmd[0])
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if validate_name(&base).is_err() {
                return Err(Failure::Usage(format!(
                    "cannot derive an app name from {:?}; give --name",
                    a.cmd[0]
                )));
            }
            base
        }
    };
    validate_name(&name).map_err(Failure::Usage)?;
    let here = || {
        std::env::current_dir()
            .map_err(|e| Failure::Failed(format!("cannot read the current directory: {e}")))
    };
    let cwd: Option<PathBuf> = match a.cwd {
        Some(p) if p.is_absolute() => Some(p),
        Some(p) if remote => {
            return Err(Failure::Usage(format!(
                "--cwd {}: give an absolute path on the remote host",
                p.display()
            )))
        }
        None if remote => None,
        Some(p) => Some(here()?.join(p)),
        None => Some(here()?),
    };
    let checks::Declared {
        ready,
        alive,
        depends_on,
    } = a.checks.into_model().map_err(Failure::Usage)?;
    let draft = AppDraft {
        name,
        cmd: a.cmd,
        cwd,
        env: a.env.into_iter().collect(),
        kill_timeout: a.kill_timeout,
        stop_signal: a.stop_signal,
        autorestart: a.no_autorestart.then_some(false),
        restart_delay: a.restart_delay,
        restart_delay_max: a.restart_delay_max,
        max_restarts: a.max_restarts,
        restart_window: a.restart_window,
        log_time: a.log_time,
        log_max_size: a.log_max_size,
        log_keep: a.log_keep,
        ready,
        alive,
        depends_on,
        restart_schedule: a.restart_schedule,
        watch: a.watch,
        watch_ignore: a.watch_ignore,
        watch_debounce: None,
        user: a.user,
        group: a.group,
        umask: a.umask,
        limits: a.limits.into_iter().collect(),
        max_memory: a.max_memory,
        memory_grace: None,
        instances: a.instances,
        sockets: a.sockets,
        reload_grace: a.reload_grace,
    };
    // The model's message as the agent would give it, after the flag it came from.
    draft.validate().map_err(|e| {
        Failure::Usage(match flag(e.field) {
            Some(f) => format!("{f}: {e}"),
            None => e.to_string(),
        })
    })?;
    Ok(draft)
}

/// This process's environment, as the base of apps it creates. Entries that are not UTF-8
/// cannot cross the API; they are left out, and said so.
pub fn caller_env() -> Env {
    let mut vars = Env::new();
    for (k, v) in std::env::vars_os() {
        match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => {
                if !matches!(
                    k.as_str(),
                    "GRPM_APP_ID"
                        | "GRPM_AGENT_ID"
                        | "GRPM_APP_NAME"
                        | "GRPM_INSTANCE"
                        | "GRPM_SLOT"
                ) {
                    vars.insert(k, v);
                }
            }
            (k, _) => eprintln!(
                "grpm: warning: environment variable {:?} is not UTF-8; left out",
                k.unwrap_or_else(|os| os.to_string_lossy().into_owned())
            ),
        }
    }
    vars
}

/// What starting an app file did on one agent.
struct FileStart {
    /// Said before the table ("web already exists: ...").
    notes: Vec<String>,
    /// The file's apps, as the agent lists them afterwards.
    rows: Vec<AppInfo>,
    /// Apps that could not be started (they exist, errored).
    errors: Vec<Failure>,
}

/// Starts the apps of a file: the new ones in one request (ids follow the file's order; one
/// bad spec creates none), and existing ones by name, with their stored spec: applying an edited
/// file is a delete and a start, on purpose. Ends, like PM2, with the table of the file's apps
/// (of every host's, on a fleet).
async fn start_file(
    place: &Place,
    drafts: Vec<AppDraft>,
    no_wait: bool,
    json: bool,
) -> Result<(), Failure> {
    let remote = place.is_remote();
    let outcomes = place
        .each(|mut c| {
            c.set_no_wait(no_wait);
            start_file_on(c, drafts.clone(), remote)
        })
        .await;
    let (oks, failed) = fleet::split(outcomes)?;
    if !json {
        for (host, r) in &oks {
            for n in &r.notes {
                out(format_args!("{}{n}", prefix(host)))?;
            }
        }
    }
    let tables: Vec<(Option<String>, Vec<AppInfo>)> = oks
        .iter()
        .map(|(h, r)| (h.clone(), r.rows.clone()))
        .collect();
    print_apps(&tables, json)?;
    let mut worst = fleet::Worst::default();
    if let Some(f) = failed {
        worst.report("", f)?;
    }
    for (host, r) in oks {
        for e in r.errors {
            worst.report(&prefix(&host), e)?;
        }
    }
    worst.failure().map_or(Ok(()), Err)
}

async fn start_file_on(
    mut c: Client,
    drafts: Vec<AppDraft>,
    remote: bool,
) -> Result<FileStart, Failure> {
    let existing: Vec<String> = c.list().await?.into_iter().map(|a| a.name).collect();
    let names: Vec<String> = drafts.iter().map(|s| s.name.clone()).collect();
    let (old, new): (Vec<AppDraft>, Vec<AppDraft>) =
        drafts.into_iter().partition(|s| existing.contains(&s.name));
    let mut result = FileStart {
        notes: Vec::new(),
        rows: Vec::new(),
        errors: Vec::new(),
    };
    if !new.is_empty() {
        let base_env = (!remote).then(caller_env);
        match c.start(&new, base_env.as_ref()).await {
            // Apps outside the file that the file's apps depend on were started first.
            Ok(acted) => {
                for a in acted {
                    if let Some(by) = a.needed_by {
                        result
                            .notes
                            .push(format!("started {} (id {}) (needed by {by})", a.name, a.id));
                    }
                }
            }
            // Nothing was created: report as is.
            Err(e) if matches!(e.code(), Some(Code::InvalidArgument | Code::AlreadyExists)) => {
                return Err(e.into())
            }
            // Created, but some failed to start: show the table, then fail.
            Err(e) => result.errors.push(e.into()),
        }
    }
    for draft in old {
        result.notes.push(format!(
            "{} already exists: started with its stored spec if it was down",
            draft.name
        ));
        if let Err(e) = c.start_target(&draft.name).await {
            result.errors.push(e.into());
        }
    }
    result.rows = c
        .list()
        .await?
        .into_iter()
        .filter(|a| names.contains(&a.name))
        .collect();
    Ok(result)
}
