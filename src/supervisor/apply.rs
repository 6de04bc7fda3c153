//! `grpm apply`: making the apps match an app file. The plan (what each app of the file
//! becomes: created, changed, started, unchanged; and which of the file's apps are pruned) is
//! computed from the apps as they are, under the registry's lock, and checked as a whole before
//! anything is touched; a dry run stops there. Then: new apps are created, pruned ones deleted
//! (dependents first), changed ones restarted with their new spec (with the running apps that
//! depend on them, as `restart` does), and new and stopped ones started, all in dependency
//! order.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    path::PathBuf,
    sync::Arc,
};

use super::{
    admit, deps,
    lifecycle::Cmd,
    order::{Act, Member, Table},
    Acted, AppView, Error, Reason, Supervisor,
};
use crate::model::{
    diff_env, diff_specs, AppSpec, Cause, Env, Plan, PlanAction, PlanEntry, Status,
};

/// What to apply.
pub struct ApplyRequest {
    /// The app file (canonical, absolute): its apps are the ones whose spec names it.
    pub file: PathBuf,
    /// The file's apps, in its order; each is stored with `file`.
    pub specs: Vec<AppSpec>,
    /// The captured environment of new apps (and, with `update_env`, of every app of the file).
    pub base_env: Env,
    pub update_env: bool,
    /// Delete the file's apps that it no longer lists.
    pub prune: bool,
    /// Compute the plan only.
    pub dry_run: bool,
}

/// What applying did: the plan, and the apps acted on (none for a dry run).
pub struct Applied {
    pub plan: Plan,
    pub acted: Vec<Acted>,
}

/// How a changed app takes its new spec.
///
/// The seam for the reload work: an app with `instances` or held sockets will be reloaded
/// (a new instance ready before the old one stops) instead of restarted. Until that lands,
/// every changed app is restarted: exactly stop + start with the new spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rollout {
    Restart,
}

/// Decides how `old` takes `new` (see [`Rollout`]).
pub(super) fn rollout(_old: &AppView, _new: &AppSpec) -> Rollout {
    Rollout::Restart
}

/// The plan and what it needs to be carried out.
struct Decided {
    plan: Plan,
    /// Changed apps, by name, with their new spec.
    changed: BTreeMap<String, AppSpec>,
    /// Unchanged apps that are down, to start.
    to_start: Vec<String>,
    /// New apps, in the file's order.
    new: Vec<AppSpec>,
    /// The file's apps it no longer lists (only with `prune`).
    pruned: Vec<String>,
}

/// An unchanged app that apply starts: stopped or errored, except a one-shot job (autorestart
/// off) whose last run exited 0, which has done its work.
fn wants_start(v: &AppView) -> bool {
    match v.status {
        Status::Errored { .. } => true,
        Status::Stopped => {
            let completed = !v.spec.autorestart && v.last_exit.is_some_and(|e| e.success());
            !completed
        }
        _ => false,
    }
}

/// Decides what applying `req` to the apps `views` does; refuses names that belong to no
/// file or another one, and dependency graphs that would break.
fn decide(req: &ApplyRequest, views: &[AppView]) -> Result<Decided, Error> {
    let by_name: BTreeMap<&str, &AppView> = views.iter().map(|v| (v.name(), v)).collect();
    let mut d = Decided {
        plan: Plan::default(),
        changed: BTreeMap::new(),
        to_start: Vec::new(),
        new: Vec::new(),
        pruned: Vec::new(),
    };
    for spec in &req.specs {
        let Some(v) = by_name.get(spec.name.as_str()) else {
            d.plan.entries.push(PlanEntry {
                name: spec.name.clone(),
                id: None,
                action: PlanAction::Create,
                changes: Vec::new(),
            });
            d.new.push(spec.clone());
            continue;
        };
        if v.spec.file.as_deref() != Some(req.file.as_path()) {
            return Err(Error::NotTheFiles {
                name: spec.name.clone(),
                id: v.id,
                file: req.file.clone(),
                owner: v.spec.file.clone(),
            });
        }
        let mut changes = diff_specs(&v.spec, spec);
        if req.update_env {
            changes.extend(diff_env("captured_env", &v.base_env, &req.base_env));
        }
        let action = if !changes.is_empty() {
            d.changed.insert(spec.name.clone(), spec.clone());
            PlanAction::Change
        } else if wants_start(v) {
            d.to_start.push(spec.name.clone());
            PlanAction::Start
        } else {
            PlanAction::Unchanged
        };
        d.plan.entries.push(PlanEntry {
            name: spec.name.clone(),
            id: Some(v.id),
            action,
            changes,
        });
    }
    let listed: HashSet<&str> = req.specs.iter().map(|s| s.name.as_str()).collect();
    if req.prune {
        for v in views {
            if v.spec.file.as_deref() == Some(req.file.as_path()) && !listed.contains(v.name()) {
                d.pruned.push(v.name().to_string());
                d.plan.entries.push(PlanEntry {
                    name: v.name().to_string(),
                    id: Some(v.id),
                    action: PlanAction::Delete,
                    changes: Vec::new(),
                });
            }
        }
    }
    // The graph as it will be: the file's specs replace the stored ones.
    let pruned: BTreeSet<String> = d.pruned.iter().cloned().collect();
    let after = |with_pruned: bool| {
        deps::Graph::new(
            views
                .iter()
                .filter(|v| !listed.contains(v.name()))
                .filter(|v| with_pruned || !pruned.contains(v.name()))
                .map(|v| (v.name().to_string(), v.spec.depends_on.clone()))
                .chain(
                    req.specs
                        .iter()
                        .map(|s| (s.name.clone(), s.depends_on.clone())),
                ),
        )
    };
    let refused: Vec<Error> = after(true)
        .still_needed(&pruned)
        .into_iter()
        .map(|(app, by)| Error::DependedOn { app, by })
        .collect();
    super::order::verdict((), refused)?;
    let names: Vec<&str> = req.specs.iter().map(|s| s.name.as_str()).collect();
    after(false).check(&names)?;
    Ok(d)
}

impl Supervisor {
    /// Makes the apps match an app file (see the module's doc). With `req.dry_run`, only the
    /// plan. All or nothing up to the first action: an invalid spec, a name another file's
    /// (or no file's) app has, a broken dependency, or a pruned app still needed changes
    /// nothing. Failures to start are returned after every app was acted on, as `start` does.
    pub async fn apply(
        &self,
        mut req: ApplyRequest,
        cause: Cause,
        wait: bool,
    ) -> Result<Applied, Error> {
        crate::model::validate_env(&req.base_env).map_err(|problem| Error::InvalidEnv {
            what: "base environment",
            problem,
        })?;
        for s in &mut req.specs {
            s.file = Some(req.file.clone());
        }
        admit(&req.specs)?;
        let base_env = Arc::new(std::mem::take(&mut req.base_env));
        req.base_env = (*base_env).clone();
        let (decided, views, table) = {
            let mut reg = self.lock();
            if reg.closed {
                return Err(Error::ShuttingDown);
            }
            let views: Vec<AppView> = reg.apps.values().map(|h| h.view.borrow().clone()).collect();
            let mut decided = decide(&req, &views)?;
            if req.dry_run {
                return Ok(Applied {
                    plan: decided.plan,
                    acted: Vec::new(),
                });
            }
            let new = std::mem::take(&mut decided.new);
            self.register(&mut reg, new, &base_env, &cause);
            (decided, views, Table::of(reg.apps.values()))
        };
        let Decided {
            plan,
            changed,
            to_start,
            pruned,
            ..
        } = decided;
        let mut errors = Vec::new();
        // Pruned first, dependents first: what a new app takes over (a port) is free.
        if !pruned.is_empty() {
            let members = pruned.into_iter().map(|n| (n, Reason::Named)).collect();
            let deleted = self
                .in_reverse(&table, members, |reply| Cmd::Delete {
                    purge_logs: false,
                    cause: cause.clone(),
                    reply,
                })
                .await;
            self.forget_deleted();
            if let Err(e) = deleted {
                errors.push(e);
            }
        }
        // Changed apps and the running apps that depend on them: the dependents stopped first
        // (deepest first), then all started again in dependency order.
        let table = self.table()?;
        let names: Vec<String> = changed.keys().cloned().collect();
        let restarting = table.with_dependents(&names);
        let set: BTreeSet<String> = restarting.keys().cloned().collect();
        let first: BTreeMap<String, Reason> = restarting
            .iter()
            .filter(|(n, _)| table.graph.depends_on_any(n, &set))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        if !first.is_empty() {
            if let Err(e) = self
                .in_reverse(&table, first, |reply| Cmd::Stop {
                    cause: cause.clone(),
                    reply,
                })
                .await
            {
                errors.push(e);
            }
        }
        let old: BTreeMap<&str, &AppView> = views.iter().map(|v| (v.name(), v)).collect();
        let mut members: BTreeMap<String, Member> = BTreeMap::new();
        for (name, reason) in restarting {
            let act = match (changed.get(&name), old.get(name.as_str())) {
                (Some(spec), Some(v)) => match rollout(v, spec) {
                    Rollout::Restart => Act::Restart {
                        base_env: req.update_env.then(|| req.base_env.clone()),
                        spec: Some(Box::new(spec.clone())),
                    },
                },
                _ => Act::Restart {
                    base_env: None,
                    spec: None,
                },
            };
            members.insert(name, Member { act, reason });
        }
        let created = plan
            .entries
            .iter()
            .filter(|e| e.action == PlanAction::Create)
            .map(|e| e.name.clone());
        for name in created.chain(to_start) {
            members.insert(
                name,
                Member {
                    act: Act::Start,
                    reason: Reason::Named,
                },
            );
        }
        let mut acted = Vec::new();
        if !members.is_empty() {
            // Ordered by the dependencies as they will be (the new specs').
            let mut table = self.table()?;
            let overrides: BTreeMap<&str, &AppSpec> =
                changed.iter().map(|(n, s)| (n.as_str(), s)).collect();
            table.graph = deps::Graph::new(table.apps.iter().map(|(n, h)| {
                let deps = match overrides.get(n.as_str()) {
                    Some(s) => s.depends_on.clone(),
                    None => h.view.borrow().spec.depends_on.clone(),
                };
                (n.clone(), deps)
            }));
            match self.start_in_order(table, members, cause, wait).await {
                Ok(a) => acted = a,
                Err(Error::Several(all)) => errors.extend(all),
                Err(e) => errors.push(e),
            }
        }
        super::order::verdict(Applied { plan, acted }, errors)
    }
}
