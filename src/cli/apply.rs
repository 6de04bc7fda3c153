//! `grpm apply FILE` and `grpm diff FILE`: the app file states what should exist; the agent
//! computes the plan (the `Apply` RPC, as a dry run for `diff` and `--dry-run`), so what the
//! CLI prints is what the API answers. Printed: the plan (what happens to each app, with the
//! settings that change, `env` values masked), then, for a real apply, the file's apps.

use super::{
    action::print_apps,
    appfile,
    args::{ApplyArgs, DiffArgs},
    caller_env::caller_env,
    failure::{out, Failure, EXIT_CHANGES},
    fleet::{self, prefix, Place},
    render,
};
use crate::{
    client::{ApplyCall, Client},
    model::{AppInfo, Plan, PlanAction},
};

/// `grpm apply FILE`.
pub async fn apply(place: &Place, args: ApplyArgs, json: bool) -> Result<(), Failure> {
    run(place, args.diff, args.dry_run, args.no_wait, json).await
}

/// `grpm diff FILE`: `apply --dry-run`.
pub async fn diff(place: &Place, args: DiffArgs, json: bool) -> Result<(), Failure> {
    run(place, args, true, false, json).await
}

/// What one agent answered.
struct Answer {
    plan: Plan,
    /// The file's apps afterwards (none for a dry run).
    rows: Vec<AppInfo>,
}

async fn run(
    place: &Place,
    args: DiffArgs,
    dry_run: bool,
    no_wait: bool,
    json: bool,
) -> Result<(), Failure> {
    let remote = place.is_remote();
    let drafts =
        appfile::load(&args.file, remote, args.env_profile.as_deref()).map_err(Failure::Usage)?;
    let file = drafts
        .first()
        .and_then(|d| d.file.clone())
        .ok_or_else(|| Failure::Usage(format!("{}: no apps", args.file.display())))?;
    if args.update_env && remote {
        eprintln!(
            "grpm: note: --update-env on a remote host takes the remote agent's own \
             environment, never this shell's"
        );
    }
    let call = ApplyCall {
        file: file.clone(),
        drafts,
        // A remote agent gives its apps its own environment, never this shell's.
        base_env: (!remote).then(caller_env),
        update_env: args.update_env,
        prune: args.prune,
        dry_run,
    };
    let outcomes = place
        .each(|mut c| {
            c.set_no_wait(no_wait);
            apply_on(c, call.clone())
        })
        .await;
    let (oks, failed) = fleet::split(outcomes)?;
    let file_text = file.display().to_string();
    if json {
        let each: Vec<serde_json::Value> = oks
            .iter()
            .map(|(host, a)| {
                let mut v = serde_json::json!({
                    "file": file_text,
                    "dry_run": dry_run,
                    "has_work": a.plan.has_work(),
                    "plan": a.plan.entries,
                });
                if !dry_run {
                    v["apps"] = serde_json::to_value(render::rows(&a.rows)).unwrap_or_default();
                }
                if let Some(h) = host {
                    v["host"] = h.clone().into();
                }
                v
            })
            .collect();
        match (place.is_remote(), each.as_slice()) {
            (false, [one]) => out(render::json(one))?,
            _ => out(render::json(&each))?,
        }
    } else {
        for (host, a) in &oks {
            for line in plan_lines(&a.plan, dry_run) {
                out(format_args!("{}{line}", prefix(host)))?;
            }
        }
        if !dry_run {
            let tables: Vec<(Option<String>, Vec<AppInfo>)> = oks
                .iter()
                .map(|(h, a)| (h.clone(), a.rows.clone()))
                .collect();
            print_apps(&tables, false)?;
        }
    }
    if let Some(f) = failed {
        return Err(f);
    }
    if dry_run && oks.iter().any(|(_, a)| a.plan.has_work()) {
        return Err(Failure::Reported(EXIT_CHANGES));
    }
    Ok(())
}

async fn apply_on(mut c: Client, call: ApplyCall) -> Result<Answer, Failure> {
    let names: Vec<String> = call.drafts.iter().map(|d| d.name.clone()).collect();
    let (plan, _acted) = c.apply(&call).await?;
    let rows = if call.dry_run {
        Vec::new()
    } else {
        c.list()
            .await?
            .into_iter()
            .filter(|a| names.contains(&a.name))
            .collect()
    };
    Ok(Answer { plan, rows })
}

/// The plan for people: one line per app (`change     web (id 1)`), the settings that change
/// indented below it, then a summary.
pub fn plan_lines(plan: &Plan, dry_run: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for e in &plan.entries {
        let id = e.id.map_or_else(String::new, |i| format!(" (id {i})"));
        lines.push(format!("{:<10} {}{id}", e.action.word(), e.name));
        for c in &e.changes {
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
            lines.push(format!(
                "             {}: {} -> {}",
                c.field,
                show(&c.from),
                show(&c.to)
            ));
        }
    }
    let count = |a: PlanAction| plan.entries.iter().filter(|e| e.action == a).count();
    let summary = format!(
        "{}: {} to create, {} to change, {} to start, {} unchanged, {} to delete{}",
        if dry_run { "plan" } else { "applied" },
        count(PlanAction::Create),
        count(PlanAction::Change),
        count(PlanAction::Start),
        count(PlanAction::Unchanged),
        count(PlanAction::Delete),
        if dry_run && plan.has_work() {
            " (dry run: nothing was touched)"
        } else {
            ""
        }
    );
    lines.push(summary);
    lines
}
