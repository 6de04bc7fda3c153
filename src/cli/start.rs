//! `grpm start`: a new app from flags (`--name N -- CMD`), the apps of an app file, or
//! existing apps by target. Flags and app files both become model drafts, checked by the
//! model's rules before anything is sent (the agent runs the same rules again).

use std::path::{Path, PathBuf};

use super::{
    action::{check_target, print_apps, report},
    appfile,
    args::StartArgs,
    caller_env::caller_env,
    checks,
    failure::{out, Failure},
    fleet::{self, prefix, Place},
    script::{self, What},
};
use crate::{
    client::{Client, Code},
    model::{validate_name, AppDraft, AppInfo, Field},
};

pub async fn start(place: &Place, mut args: StartArgs, json: bool) -> Result<(), Failure> {
    let remote = place.is_remote();
    let no_wait = args.no_wait;
    let Some(what) = args.what.clone() else {
        if args.cmd.is_empty() {
            return Err(Failure::Usage(
                "nothing to start: give `--name NAME -- CMD [ARG...]`, a script, an app file, \
                 or a target"
                    .into(),
            ));
        }
        let cmd = std::mem::take(&mut args.cmd);
        return start_new(place, args, cmd, None, json).await;
    };
    let mut what_kind = script::classify(&what).map_err(Failure::Usage)?;
    if matches!(what_kind, What::Script(_)) && names_a_target(place, &what).await {
        what_kind = What::Target;
    }
    match what_kind {
        What::Script(path) => {
            if remote {
                return Err(Failure::Usage(format!(
                    "{what} is a file on this machine, not on the remote hosts: give the command \
                     after -- (e.g. `-- python3 /srv/app.py`)"
                )));
            }
            let path_var = std::env::var("PATH").ok();
            let run = script::how_to_run(&path, path_var.as_deref()).map_err(Failure::Usage)?;
            eprintln!("grpm: {}", run.said);
            let name = script::stem_name(&path);
            if name.is_none() && args.name.is_none() {
                return Err(Failure::Usage(format!(
                    "cannot derive an app name from {what:?}; give --name"
                )));
            }
            // Arguments after -- go to the script.
            let mut cmd = run.argv;
            cmd.append(&mut args.cmd);
            return start_new(place, args, cmd, name, json).await;
        }
        What::CommandLine(words) => {
            if !args.cmd.is_empty() {
                return Err(Failure::Usage(format!(
                    "give the command either as one argument ({what:?}) or after --, not both"
                )));
            }
            return start_new(place, args, words, None, json).await;
        }
        What::AppFile | What::Target if !args.cmd.is_empty() => {
            return Err(Failure::Usage(format!(
                "give either a command after -- or {what:?}, not both"
            )));
        }
        What::AppFile | What::Target => {}
    }
    if args.has_spec_flags() {
        return Err(Failure::Usage(format!(
            "options such as --name or --env describe a new app; put the command after -- (or, for {what:?}, drop them)"
        )));
    }
    if what_kind == What::AppFile {
        let drafts = appfile::load(Path::new(&what), remote, args.env_profile.as_deref())
            .map_err(Failure::Usage)?;
        return start_file(place, drafts, no_wait, json).await;
    }
    if args.env_profile.is_some() {
        return Err(Failure::Usage(format!(
            "--env-profile picks a profile of an app file; {what:?} is not one"
        )));
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

/// Whether `what`, a bare word that is also a file here, names apps the user more likely
/// means: "all", an id, or the name of an app of the agent(s). `grpm start api` in the
/// directory that holds the `api` binary starts the app `api` again; `./api` is the file.
async fn names_a_target(place: &Place, what: &str) -> bool {
    if what.contains('/') {
        return false;
    }
    if what == "all" || what.parse::<u64>().is_ok() {
        return true;
    }
    place
        .each(|mut c| {
            let what = what.to_string();
            async move { Ok(c.list().await?.iter().any(|a| a.name == what)) }
        })
        .await
        .into_iter()
        .any(|o| matches!(o.result, Ok(true)))
}

/// Starts one new app running `cmd`, described by the flags of `args`; `name` is its default
/// name (a script's stem) when --name is not given.
async fn start_new(
    place: &Place,
    args: StartArgs,
    cmd: Vec<String>,
    name: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let remote = place.is_remote();
    let no_wait = args.no_wait;
    if args.env_profile.is_some() {
        return Err(Failure::Usage(
            "--env-profile picks a profile of an app file: grpm start FILE --env-profile NAME"
                .into(),
        ));
    }
    let draft = draft_from_args(args, cmd, name, remote)?;
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
        Field::EnvProfile => "--env-profile",
        Field::File => return None,
        Field::Instances => "--instances",
        Field::Sockets => "--socket",
        Field::ReloadGrace => "--reload-grace",
    })
}

/// The draft of `start --name ... -- CMD`, checked by the model's rules. Locally a relative or
/// missing --cwd is taken from this shell; on a remote agent --cwd must be absolute, and
/// without it the app runs in the agent's home directory.
fn draft_from_args(
    a: StartArgs,
    cmd: Vec<String>,
    default: Option<String>,
    remote: bool,
) -> Result<AppDraft, Failure> {
    let name = match (a.name, default) {
        (Some(n), _) | (None, Some(n)) => n,
        // Locally, the script the command runs names it (`python3 app.py` is `app`).
        (None, None) => {
            let here = PathBuf::from(".");
            let dir = (!remote).then(|| a.cwd.as_deref().unwrap_or(&here));
            script::default_name(&cmd, dir).ok_or_else(|| {
                Failure::Usage(format!(
                    "cannot derive an app name from {:?}; give --name",
                    cmd[0]
                ))
            })?
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
        cmd,
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
        profile: None,
        file: None,
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
