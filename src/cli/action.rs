//! What commands do to apps by target and what they print: one helper for the actions that
//! act on a target and answer with the apps they touched (stop, restart, delete, flush, and
//! start by target), the listing, and `describe`.

use super::{
    failure::{out, Failure},
    fleet::{self, prefix, Place},
    render,
};
use crate::{
    client::BaseEnv,
    model::{AppInfo, Target},
};

/// An action on the apps a target names.
#[derive(Debug, Clone)]
pub enum Action {
    Stop,
    Restart { env: BaseEnv, no_wait: bool },
    Delete { purge_logs: bool },
    Flush,
    Reload { parallel: u32 },
    Scale { instances: u32 },
}

impl Action {
    /// How the report says it: "stopped web (id 1)".
    fn verb(&self) -> &'static str {
        match self {
            Action::Stop => "stopped",
            Action::Restart { .. } => "restarted",
            Action::Delete { .. } => "deleted",
            Action::Flush => "flushed the logs of",
            Action::Reload { .. } => "reloaded",
            Action::Scale { .. } => "scaled",
        }
    }
}

/// Refuses a target that names nothing (before any agent is asked).
pub fn check_target(t: &str) -> Result<(), Failure> {
    Target::parse(t).map(|_| ()).map_err(Failure::Usage)
}

/// Runs `action` on `target` on every agent of `place` and reports what it did.
pub async fn act(place: &Place, target: String, action: Action, json: bool) -> Result<(), Failure> {
    check_target(&target)?;
    let outcomes = place
        .each(|mut c| {
            let (target, action) = (target.clone(), action.clone());
            async move {
                Ok(match action {
                    Action::Stop => c.stop(&target).await?,
                    Action::Restart { env, no_wait } => {
                        c.set_no_wait(no_wait);
                        c.restart(&target, env).await?
                    }
                    Action::Delete { purge_logs } => c.delete(&target, purge_logs).await?,
                    Action::Flush => c.flush(&target).await?,
                    Action::Reload { parallel } => c.reload(&target, parallel).await?,
                    Action::Scale { instances } => c.scale(&target, instances).await?,
                })
            }
        })
        .await;
    report(outcomes, json, action.verb())
}

/// Prints what an action did, per agent ("box1: restarted api (id 3), pid 4242" on a fleet),
/// after the failed hosts were named on stderr; fails if any host failed.
pub fn report(
    outcomes: Vec<fleet::Outcome<Vec<AppInfo>>>,
    json: bool,
    verb: &str,
) -> Result<(), Failure> {
    let (oks, failed) = fleet::split(outcomes)?;
    if json {
        print_apps(&oks, true)?;
        return failed.map_or(Ok(()), Err);
    }
    for (host, apps) in &oks {
        let p = prefix(host);
        if apps.is_empty() {
            out(format_args!("{p}no apps"))?;
        }
        for a in apps {
            let pid = a.pid.map_or_else(String::new, |pid| format!(", pid {pid}"));
            // Acted on for a dependency: "stopped web (id 2) (depends on db)".
            let why = match (&a.needed_by, &a.dependent_of) {
                (Some(app), _) => format!(" (needed by {app})"),
                (None, Some(app)) => format!(" (depends on {app})"),
                (None, None) => String::new(),
            };
            out(format_args!(
                "{p}{verb} {} (id {}){pid}{why}",
                a.label(),
                a.id
            ))?;
        }
    }
    failed.map_or(Ok(()), Err)
}

/// `grpm list`.
pub async fn list(place: &Place, json: bool) -> Result<(), Failure> {
    let outcomes = place.each(|mut c| async move { Ok(c.list().await?) }).await;
    let (oks, failed) = fleet::split(outcomes)?;
    print_apps(&oks, json)?;
    failed.map_or(Ok(()), Err)
}

/// `grpm describe TARGET`.
pub async fn describe(place: &Place, target: String, json: bool) -> Result<(), Failure> {
    check_target(&target)?;
    let outcomes = place
        .each(|mut c| {
            let target = target.clone();
            async move { Ok(c.describe(&target).await?) }
        })
        .await;
    let (oks, failed) = fleet::split(outcomes)?;
    if json {
        let all: Vec<serde_json::Value> = oks
            .iter()
            .flat_map(|(host, apps)| {
                apps.iter()
                    .map(move |d| render::detail_json(d, host.as_deref()))
            })
            .collect();
        out(render::json(&all))?;
    } else {
        let mut texts: Vec<String> = Vec::new();
        for (host, apps) in &oks {
            for d in apps {
                let text = render::detail(d);
                texts.push(match host {
                    Some(h) => format!("{:<14}{h}\n{text}", "host"),
                    None => text,
                });
            }
        }
        out(texts.join("\n").trim_end())?;
    }
    failed.map_or(Ok(()), Err)
}

/// Prints the apps of one agent (the plain table) or of several (with a HOST column).
pub fn print_apps(oks: &[(Option<String>, Vec<AppInfo>)], json: bool) -> Result<(), Failure> {
    if oks.is_empty() {
        // Every host failed (and said why on stderr): no table, an empty array for scripts.
        return if json { out("[]") } else { Ok(()) };
    }
    if let [(None, apps)] = oks {
        if json {
            out(render::json(&render::rows(apps)))?;
        } else {
            out(render::table(apps, render::Look::stdout()).trim_end())?;
        }
        return Ok(());
    }
    let rows: Vec<(&str, &AppInfo)> = oks
        .iter()
        .flat_map(|(h, apps)| apps.iter().map(move |a| (h.as_deref().unwrap_or(""), a)))
        .collect();
    if json {
        out(render::json(&render::host_rows(&rows)))?;
    } else {
        out(render::host_table(&rows, render::Look::stdout()).trim_end())?;
    }
    Ok(())
}
